"""Vocabulary: words <-> ids, built from training captions only, stored as JSON.

Ids 0..3 are fixed: ``<pad>`` = 0 (so masking can use ``mask_zero``), ``<unk>`` = 1,
``startseq`` = 2, ``endseq`` = 3. Other words follow by descending count, ties broken
alphabetically, so the same captions always give the same ids.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from captioning.data.text import END, PAD, START, UNK, CleaningConfig, clean_caption
from captioning.errors import ConfigError
from captioning.serialization import from_dict, to_dict

RESERVED = (PAD, UNK, START, END)
FORMAT = "captioning.vocabulary/1"


@dataclass(frozen=True)
class Vocabulary:
    words: tuple[str, ...]  # index in this tuple is the id
    counts: Mapping[str, int]  # training-caption counts of every kept word
    min_count: int
    cleaning: CleaningConfig = CleaningConfig()
    dropped_words: int = 0  # distinct training words below min_count (mapped to <unk>)
    _index: Mapping[str, int] = field(default=None, compare=False, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if tuple(self.words[: len(RESERVED)]) != RESERVED:
            raise ValueError(f"vocabulary must start with {RESERVED}, got {self.words[:4]}")
        object.__setattr__(self, "_index", {w: i for i, w in enumerate(self.words)})

    @property
    def size(self) -> int:
        return len(self.words)

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        return 1

    @property
    def start_id(self) -> int:
        return 2

    @property
    def end_id(self) -> int:
        return 3

    def id_of(self, word: str) -> int:
        return self._index.get(word, self.unk_id)

    def tokenize(self, text: str) -> list[str]:
        return clean_caption(text, self.cleaning)

    def encode_tokens(self, tokens: Sequence[str], max_length: int) -> list[int]:
        """``startseq w1 .. wn endseq`` as ids, truncated and padded to ``max_length``.

        A caption longer than ``max_length - 2`` words keeps its first words and still ends
        with ``endseq``, so every training sequence teaches the model to stop.
        """
        if max_length < 3:
            raise ValueError(f"max_length must be at least 3 (start, one word, end), got {max_length}")
        body = [self.id_of(t) for t in tokens[: max_length - 2]]
        ids = [self.start_id, *body, self.end_id]
        return ids + [self.pad_id] * (max_length - len(ids))

    def encode(self, text: str, max_length: int) -> list[int]:
        return self.encode_tokens(self.tokenize(text), max_length)

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Words of a generated id sequence: stops at ``endseq``, skips start and padding."""
        words = []
        for i in ids:
            i = int(i)
            if i == self.end_id:
                break
            if i in (self.pad_id, self.start_id):
                continue
            words.append(self.words[i] if 0 <= i < len(self.words) else UNK)
        return words

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "min_count": self.min_count,
                "cleaning": to_dict(self.cleaning),
                "dropped_words": self.dropped_words,
                "words": list(self.words),
                "counts": {w: int(self.counts[w]) for w in self.words[len(RESERVED):]},
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str, source: str = "vocabulary") -> "Vocabulary":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{source}: not JSON ({error}); expected a vocab.json written by prepare-captions") from error
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ConfigError(f"{source}: not a vocabulary file (format {data.get('format') if isinstance(data, dict) else None!r}, expected {FORMAT!r})")
        return cls(
            words=tuple(data["words"]),
            counts=dict(data["counts"]),
            min_count=int(data["min_count"]),
            cleaning=from_dict(CleaningConfig, data["cleaning"], f"{source}: cleaning"),
            dropped_words=int(data.get("dropped_words", 0)),
        )


def vocabulary_from_counts(counts: Mapping[str, int], min_count: int, cleaning: CleaningConfig = CleaningConfig()) -> Vocabulary:
    """Keep words seen at least ``min_count`` times; order by count then alphabetically."""
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    kept = sorted((w for w, c in counts.items() if c >= min_count and w not in RESERVED), key=lambda w: (-counts[w], w))
    return Vocabulary(
        words=RESERVED + tuple(kept),
        counts={w: int(counts[w]) for w in kept},
        min_count=min_count,
        cleaning=cleaning,
        dropped_words=sum(1 for w, c in counts.items() if c < min_count and w not in RESERVED),
    )


def build_vocabulary(token_lists: Iterable[Sequence[str]], min_count: int = 10, cleaning: CleaningConfig = CleaningConfig()) -> Vocabulary:
    """Vocabulary from already-cleaned training captions (pure Python counterpart of the Spark count)."""
    counts: Counter[str] = Counter()
    for tokens in token_lists:
        counts.update(tokens)
    return vocabulary_from_counts(counts, min_count, cleaning)
