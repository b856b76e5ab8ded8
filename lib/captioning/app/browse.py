"""Browsing a caption-images output: every object's latest answer, searchable by caption words, in pages.

Each bulk run writes a gallery of its own objects only; a person looking for "the photos
of a dog on a beach" wants the whole bucket, whatever run captioned each object. The
output's committed rows are read once (:func:`captioning.store.bulk_output.latest_answers`,
a few columns of Parquet, no Spark), kept in memory and searched there: 100,000 objects
are a few megabytes, and a word filter over them (an index of the caption words, built
on the first search) takes milliseconds. Only the objects of
the page shown are read from storage, for their thumbnails, a few at a time in threads
and cached, so opening a large output costs one read of its rows.
"""
from __future__ import annotations

import functools
import math
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Sequence

from captioning.report.gallery import thumbnail
from captioning.store import storage
from captioning.store.bulk_output import BulkOutput, latest_answers

_WORD = re.compile(r"[^\W_]+")


@dataclass(frozen=True)
class BrowseConfig:
    output_uri: str
    page_size: int = 24  # cards per page: what one screen holds, and 24 thumbnails to read
    thumbnail_side: int = 240  # pixels; the card shows it at most this large
    io_threads: int = 8  # concurrent thumbnail reads (object-store latency hides behind them)

    def __post_init__(self) -> None:
        if self.page_size < 1 or self.thumbnail_side < 16 or self.io_threads < 1:
            raise ValueError("page_size and io_threads must be positive and thumbnail_side at least 16")


def query_words(query: str) -> list[str]:
    """The lower-case words of a search box entry: "Dog, beach!" -> ["dog", "beach"]."""
    return _WORD.findall(query.lower())


@dataclass(frozen=True)
class Page:
    rows: list[dict]  # the answers shown, in order
    number: int  # 1-based
    pages: int  # at least 1
    total: int  # rows matching the filter


@dataclass(frozen=True)
class Selection:
    """The rows a filter kept, cut into pages of ``page_size``."""

    frame: Any  # pandas DataFrame
    page_size: int

    @property
    def total(self) -> int:
        return len(self.frame)

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.page_size))

    def page(self, number: int) -> Page:
        """Page ``number`` (clamped to 1..pages)."""
        number = min(max(1, int(number)), self.pages)
        chunk = self.frame.iloc[(number - 1) * self.page_size : number * self.page_size]
        return Page(rows=_records(chunk), number=number, pages=self.pages, total=self.total)


class AnswerIndex:
    """The latest answer of every object of one output, read once, then filtered and paged."""

    def __init__(self, config: BrowseConfig):
        started = time.perf_counter()
        self.config = config
        answers = latest_answers(BulkOutput(config.output_uri))
        self.objects = len(answers)
        self.counts = {str(k): int(v) for k, v in answers["status"].value_counts().items()}
        self.runs = int(answers["run_id"].nunique())
        self.latest_run = str(answers["run_id"].max()) if self.objects else None
        self.models = sorted(str(m) for m in answers["model_id"].dropna().unique())
        ok = answers["status"] == "ok"
        self.captioned = answers[ok].reset_index(drop=True)
        self.problems = answers[~ok].reset_index(drop=True)
        self._text = self.captioned["caption"].fillna("").str.lower()  # what the word filter searches
        self.reasons = {str(k): int(v) for k, v in self.problems["error"].fillna("unknown").value_counts().items()}
        self.load_seconds = time.perf_counter() - started

    def search(self, query: str) -> Selection:
        """The captioned objects whose caption has every word of ``query`` (all of them for no word)."""
        import numpy as np

        words = query_words(query)
        if not words:
            return Selection(self.captioned, self.config.page_size)
        postings = self._postings
        keep = functools.reduce(np.intersect1d, (postings.get(word, np.empty(0, np.int64)) for word in words))
        return Selection(self.captioned.iloc[keep], self.config.page_size)

    @functools.cached_property
    def _postings(self) -> dict:
        """{word: sorted row positions of the captions holding it}, built on the first search.

        A caption's words are its runs of letters and digits, as :func:`query_words` splits a
        query, so a search is a few array intersections instead of a scan of every caption.
        """
        import numpy as np

        tokens = self._text.str.findall(_WORD.pattern).explode().dropna()  # index: the caption's row position
        if not len(tokens):
            return {}
        rows = tokens.index.to_numpy()
        return {word: np.unique(rows[at]) for word, at in tokens.groupby(tokens.to_numpy(), sort=False).indices.items()}

    def errors(self, reason: str | None = None) -> Selection:
        """The objects that got no caption (errors and skipped), optionally only those of one reason."""
        rows = self.problems
        if reason:
            rows = rows[rows["error"].fillna("unknown") == reason]
        return Selection(rows, self.config.page_size)

    def thumbnails(self, rows: Sequence[dict]) -> dict[str, bytes | None]:
        """A small JPEG per row's object (None when it cannot be read or decoded any more)."""
        keys = [(row["uri"], row.get("version"), self.config.thumbnail_side) for row in rows]
        with ThreadPoolExecutor(max_workers=self.config.io_threads) as pool:
            return dict(zip((row["uri"] for row in rows), pool.map(lambda key: _thumbnail(*key), keys)))


def _records(frame) -> list[dict]:
    """Rows as plain dicts, missing values as None, times as ISO text."""
    out = []
    for row in frame.to_dict("records"):
        clean = {}
        for key, value in row.items():
            if value is None or (isinstance(value, float) and math.isnan(value)):
                clean[key] = None
            elif hasattr(value, "isoformat"):
                clean[key] = None if str(value) == "NaT" else value.isoformat()
            else:
                clean[key] = value
        out.append(clean)
    return out


@functools.lru_cache(maxsize=4096)
def _thumbnail(uri: str, version: str | None, side: int) -> bytes | None:
    """Cached by object version: a changed object gets a new thumbnail."""
    try:
        return thumbnail(storage.read_bytes(uri), max_side=side)
    except storage.StorageError:
        return None
