"""The prepared-captions folder written by prepare-captions, and its only owner::

    <prepared>/captions/      Parquet, one row per caption: image_id, split, caption_index, raw,
                              source, tokens, token_ids (padded to max_length), length, truncated
    <prepared>/vocab.json     the vocabulary with counts and the cleaning rules that made it
    <prepared>/summary.json   images and captions per split, every dropped or odd item by
                              reason, the fingerprint of inputs and options; written last

A folder without summary.json is incomplete (a run died, or one is in progress).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from captioning.data.vocab import Vocabulary
from captioning.errors import UserError
from captioning.store import storage

SUMMARY_FORMAT = "captioning.prepare-summary/1"


class PreparedCaptionsError(UserError, ValueError):
    pass


@dataclass(frozen=True)
class PreparedCaptions:
    uri: str

    @property
    def captions(self) -> str:
        return storage.join(self.uri, "captions")

    @property
    def vocab(self) -> str:
        return storage.join(self.uri, "vocab.json")

    @property
    def summary(self) -> str:
        return storage.join(self.uri, "summary.json")

    def read_summary(self) -> dict[str, Any] | None:
        """The summary of a completed run, or None (none yet, or unreadable)."""
        if not storage.exists(self.summary):
            return None
        try:
            return json.loads(storage.read_text(self.summary))
        except (ValueError, storage.StorageError):
            return None

    def require(self) -> tuple[dict[str, Any], Vocabulary]:
        """(summary, vocabulary) of a completed run; a clear error otherwise."""
        summary = self.read_summary()
        if summary is None:
            raise PreparedCaptionsError(f"{self.uri}: no summary.json (prepare-captions has not completed there); run prepare-captions first")
        return summary, Vocabulary.from_json(storage.read_text(self.vocab), source=self.vocab)

    def write_vocabulary(self, vocabulary: Vocabulary) -> None:
        storage.write_text(self.vocab, vocabulary.to_json())

    def write_summary(self, summary: dict[str, Any]) -> None:
        storage.write_text(self.summary, json.dumps({"format": SUMMARY_FORMAT, **summary}, indent=1))
