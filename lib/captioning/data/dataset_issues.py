"""Dataset issues: every line that is dropped or repaired, named by file and line.

The real Flickr8k files carry an id with a stray ``.1`` suffix (``2258277193_586949ec62.jpg.1``,
whose five captions repeat the numbers of the plain id), captions for images that are
not in the folder, images without captions, and copies of the text files that picked
up CRLF line ends, a UTF-8 byte-order mark or stray spaces on their way through other
tools. A training run must not crash on these, and must not quietly lose data either:
every input line ends either as a record or as a :class:`DatasetIssue` that names the
file and line, so a count of what was dropped, and why, is always available. Only
problems that make the dataset unusable, such as a wrong path, a missing caption file or
a binary file where text was expected, raise :class:`~captioning.data.layout.DatasetError`.

Issue reason codes. *Dropped* means the line, entry or file was left out; *normalised*
means it was kept after a repair; *noted* is information about the kept data.

==========================  ==========  ====================================================
reason                      kind        meaning
==========================  ==========  ====================================================
blank_line                  dropped     an empty (or all-whitespace) line in a text file
malformed_line              dropped     a line that is not a caption or an image name
empty_caption               dropped     a caption line whose caption text is empty
duplicate_caption           dropped     a second caption with the same (image, number);
                                        the first one read is kept
caption_for_missing_image   dropped     a caption for an image not in the image folder,
                                        or under ``x.jpg.1`` when ``x.jpg`` has captions
                                        under its exact name
split_image_missing         dropped     a split-list entry for an image not in the folder
duplicate_split_entry       dropped     an image listed twice in the same split list
image_in_several_splits     dropped     an image listed in more than one split list; it
                                        stays in the first of train, dev, test and the
                                        later entry is dropped (no train/test leakage)
non_image_file              dropped     a file in the image folder that is not an image
                                        (by its extension) directly in the folder
id_suffix_normalised        normalised  ``x.jpg.1`` read as ``x.jpg`` (in a caption file:
                                        only when no caption names ``x.jpg`` itself)
whitespace_stripped         normalised  spaces or tabs around a field removed
space_separator             normalised  a token line with spaces instead of the tab
byte_order_mark             normalised  a UTF-8 BOM at the start of a file, ignored
crlf_line_endings           normalised  CR LF (or CR) line ends; one issue per file
image_without_captions      noted       an image in the folder that no caption names
image_in_no_split           noted       an image in the folder that no split list names
splits_derived              noted       there were no split lists; splits were derived
                                        from a hash of the image id
==========================  ==========  ====================================================

Accounting: in a caption file, records + dropped issues = lines (for the Kaggle CSV,
minus its header line); in a split list, kept entries + dropped issues = lines.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Iterable

from captioning.data.layout import DatasetError
from captioning.store import storage

DROPPED = "dropped"
NORMALISED = "normalised"
NOTED = "noted"

ISSUE_KINDS = MappingProxyType(
    {
        "blank_line": DROPPED,
        "malformed_line": DROPPED,
        "empty_caption": DROPPED,
        "duplicate_caption": DROPPED,
        "caption_for_missing_image": DROPPED,
        "split_image_missing": DROPPED,
        "duplicate_split_entry": DROPPED,
        "image_in_several_splits": DROPPED,
        "non_image_file": DROPPED,
        "id_suffix_normalised": NORMALISED,
        "whitespace_stripped": NORMALISED,
        "space_separator": NORMALISED,
        "byte_order_mark": NORMALISED,
        "crlf_line_endings": NORMALISED,
        "image_without_captions": NOTED,
        "image_in_no_split": NOTED,
        "splits_derived": NOTED,
    }
)

_LINE_BREAK = re.compile(r"\r\n|\n|\r")


@dataclass(frozen=True)
class DatasetIssue:
    reason: str  # one of ISSUE_KINDS
    uri: str  # the file (or folder) concerned
    line: int | None  # 1-based line, None for whole-file or folder issues
    detail: str  # what was found, in words

    @property
    def kind(self) -> str:
        """``dropped``, ``normalised`` or ``noted``."""
        return ISSUE_KINDS[self.reason]

    @property
    def dropped(self) -> bool:
        return self.kind == DROPPED

    def __str__(self) -> str:
        where = self.uri if self.line is None else f"{self.uri}:{self.line}"
        return f"{where}: {self.reason}: {self.detail}"


def issue(reason: str, uri: str, line: int | None, detail: str) -> DatasetIssue:
    return DatasetIssue(reason=reason, uri=uri, line=line, detail=detail)


def clip(text: str, limit: int = 80) -> str:
    """A quotable excerpt of a line for a message."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def read_text_file(uri: str, role: str) -> str:
    """The whole file as text; a binary or non-UTF-8 file is a :class:`DatasetError`."""
    try:
        data = storage.read_bytes(uri)
    except storage.MissingInputError as error:
        raise DatasetError(f"{uri}: {role} not found") from error
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DatasetError(
            f"{uri}: {role} is not a text file (invalid UTF-8 at byte {error.start}); expected UTF-8 text"
        ) from error
    if "\x00" in text:
        raise DatasetError(f"{uri}: {role} is not a text file (it contains NUL bytes); expected UTF-8 text")
    return text


def split_lines(uri: str, text: str) -> tuple[list[tuple[int, str]], list[DatasetIssue]]:
    """(line number, line) pairs without line ends, plus BOM / CRLF issues."""
    issues = []
    if text.startswith("\ufeff"):
        text = text[1:]
        issues.append(issue("byte_order_mark", uri, 1, "UTF-8 byte-order mark at the start of the file ignored"))
    lines: list[tuple[int, str]] = []
    start = 0
    other_ends: list[int] = []
    for number, match in enumerate(_LINE_BREAK.finditer(text), start=1):
        lines.append((number, text[start : match.start()]))
        if match.group() != "\n":
            other_ends.append(number)
        start = match.end()
    if start < len(text):
        lines.append((len(lines) + 1, text[start:]))
    if other_ends:
        issues.append(
            issue(
                "crlf_line_endings",
                uri,
                other_ends[0],
                f"{len(other_ends)} of {len(lines)} lines end in CR LF or CR; read as plain line ends",
            )
        )
    return lines, issues


def read_lines(uri: str, role: str) -> tuple[list[tuple[int, str]], list[DatasetIssue]]:
    return split_lines(uri, read_text_file(uri, role))


def strip_fields(fields: Iterable[str]) -> tuple[list[str], bool]:
    """Fields without outer whitespace, and whether any had some."""
    raw = list(fields)
    stripped = [value.strip() for value in raw]
    return stripped, stripped != raw

