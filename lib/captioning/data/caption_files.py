"""Caption files: ``Flickr8k.token.txt`` and the Kaggle ``captions.txt``, line by line.

Every line ends as a :class:`CaptionRecord` or as a :class:`DatasetIssue` naming the file
and line (see :mod:`captioning.data.dataset_issues` for the reasons).

Ids with a ``.N`` suffix (``x.jpg.1``): an image file has one name, so such a line
belongs to ``x.jpg`` only when the file holds no caption under the exact name ``x.jpg``;
then it is read as ``x.jpg`` (``id_suffix_normalised``). When ``x.jpg`` has captions of
its own they win wherever they stand in the file, and the variant's lines are captions
of an image that is not in the folder. (The real token file has both for one image:
8,092 ids for 8,091 pictures.)
"""
from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from typing import Collection

from captioning.data.dataset_issues import DatasetIssue, clip, issue, read_lines, strip_fields
from captioning.data.layout import LAYOUT_KAGGLE, LAYOUT_TOKEN, DatasetError, describe_image_extensions, normalise_image_id

_TOKEN_FORMAT = "'<image>.jpg#<n><TAB><caption>'"
_KAGGLE_FORMAT = "'<image>.jpg,<caption>' after an 'image,caption' header"


@dataclass(frozen=True)
class CaptionRecord:
    image_id: str  # image file name, e.g. "1000268201_693b08cb0e.jpg"
    caption_index: int  # the "#n" of the token file; order of appearance in captions.txt
    text: str  # the caption as written (outer whitespace removed)
    source: str  # "uri:line" it was read from


@dataclass(frozen=True)
class _Parsed:
    raw_id: str
    number: int | None  # None: numbered by order of appearance (Kaggle)
    text: str


def _parse_token_line(uri: str, number: int, line: str) -> tuple[_Parsed | None, list[DatasetIssue]]:
    issues = []
    key, tab, text = line.partition("\t")
    if not tab:
        parts = line.split(None, 1)
        if len(parts) != 2 or "#" not in parts[0]:
            return None, [issue("malformed_line", uri, number, f"expected {_TOKEN_FORMAT}, got {clip(line)}")]
        key, text = parts
        issues.append(issue("space_separator", uri, number, "key and caption separated by spaces, not a tab"))
    raw_id, hash_sign, index = key.strip().rpartition("#")
    (raw_id, index, text), padded = strip_fields((raw_id, index, text))
    padded = padded or key != key.strip()
    if not hash_sign or not index.isascii() or not index.isdigit():
        return None, [issue("malformed_line", uri, number, f"expected {_TOKEN_FORMAT}, got {clip(line)}")]
    if padded and text:  # a blank caption is reported as empty_caption only
        issues.append(issue("whitespace_stripped", uri, number, "whitespace around the key or caption removed"))
    return _Parsed(raw_id, int(index), text), issues


def _csv_fields(line: str) -> list[str]:
    """The CSV fields of one line; an unreadable line (e.g. over csv's field limit) has none."""
    try:
        return next(csv.reader([line]), [])
    except csv.Error:
        return []


def _is_kaggle_header(line: str) -> bool:
    fields = _csv_fields(line)
    return [value.strip().lower() for value in fields] == ["image", "caption"]


def _parse_kaggle_line(uri: str, number: int, line: str) -> tuple[_Parsed | None, list[DatasetIssue]]:
    fields = _csv_fields(line)
    if len(fields) < 2:
        return None, [issue("malformed_line", uri, number, f"expected {_KAGGLE_FORMAT}, got {clip(line)}")]
    raw_id = fields[0]
    if len(fields) == 2:
        text = fields[1]
    elif not line.lstrip().startswith('"'):
        text = line.split(",", 1)[1]  # unquoted commas belong to the caption
    else:
        text = ",".join(fields[1:])
    (raw_id, text), padded = strip_fields((raw_id, text))
    padded = padded and bool(text)  # a blank caption is reported as empty_caption only
    issues = [issue("whitespace_stripped", uri, number, "whitespace around the image or caption removed")] if padded else []
    return _Parsed(raw_id, None, text), issues


class _CaptionCollector:
    """Turns parsed lines into records, numbering Kaggle captions and dropping repeats.

    ``exact_ids``: image ids that have captions under their exact name in this file; a
    suffixed variant of one of them is not that image.
    """

    def __init__(self, uri: str, image_ids: Collection[str] | None, exact_ids: Collection[str]) -> None:
        self.uri = uri
        self.image_ids = image_ids
        self.exact_ids = exact_ids
        self.records: list[CaptionRecord] = []
        self.issues: list[DatasetIssue] = []
        self.readable_lines = 0  # lines with a valid image name, whatever became of them
        self._seen: dict[tuple[str, int], int] = {}
        self._order: Counter[str] = Counter()

    def add(self, number: int, parsed: _Parsed) -> None:
        normal = normalise_image_id(parsed.raw_id)
        if normal is None:
            self.issues.append(
                issue("malformed_line", self.uri, number, f"{clip(parsed.raw_id)} is not an image file name ({describe_image_extensions()})")
            )
            return
        self.readable_lines += 1
        image_id, had_suffix = normal
        index = parsed.number
        if index is None:
            index = self._order[parsed.raw_id]
            self._order[parsed.raw_id] += 1
        if had_suffix and image_id in self.exact_ids:
            self.issues.append(
                issue("caption_for_missing_image", self.uri, number, f"{parsed.raw_id} is not in the image folder ({image_id} has captions under its exact name)")
            )
            return
        if had_suffix:
            self.issues.append(issue("id_suffix_normalised", self.uri, number, f"{parsed.raw_id!r} read as {image_id!r}"))
        if not parsed.text:
            self.issues.append(issue("empty_caption", self.uri, number, f"caption #{index} of {image_id} is empty"))
            return
        first = self._seen.get((image_id, index))
        if first is not None:
            self.issues.append(
                issue("duplicate_caption", self.uri, number, f"{image_id}#{index} was already read at line {first}; first kept")
            )
            return
        self._seen[(image_id, index)] = number
        if self.image_ids is not None and image_id not in self.image_ids:
            self.issues.append(issue("caption_for_missing_image", self.uri, number, f"{image_id} is not in the image folder"))
            return
        self.records.append(CaptionRecord(image_id, index, parsed.text, f"{self.uri}:{number}"))


def read_captions(
    uri: str, layout: str, image_ids: Collection[str] | None = None
) -> tuple[tuple[CaptionRecord, ...], tuple[DatasetIssue, ...]]:
    """Caption records and issues of a token file (``layout='token'``) or Kaggle CSV.

    With ``image_ids``, captions of other images are dropped as caption_for_missing_image.
    Raises :class:`DatasetError` for a non-text file, an empty file, or a file in which no
    line parses (most likely the wrong file).
    """
    if layout not in (LAYOUT_TOKEN, LAYOUT_KAGGLE):
        raise ValueError(f"unknown layout {layout!r}; expected {LAYOUT_TOKEN!r} or {LAYOUT_KAGGLE!r}")
    lines, issues = read_lines(uri, "caption file")
    parse = _parse_token_line if layout == LAYOUT_TOKEN else _parse_kaggle_line
    expected = _TOKEN_FORMAT if layout == LAYOUT_TOKEN else _KAGGLE_FORMAT
    content = [(n, line) for n, line in lines if line.strip()]
    header = layout == LAYOUT_KAGGLE and bool(content) and _is_kaggle_header(content[0][1])
    header_line = content[0][0] if header else None
    parsed = {number: parse(uri, number, line) for number, line in content if number != header_line}
    exact_ids = {p.raw_id for p, _ in parsed.values() if p is not None and normalise_image_id(p.raw_id) == (p.raw_id, False)}
    collector = _CaptionCollector(uri, image_ids, exact_ids)
    collector.issues = issues
    for number, line in lines:
        if number == header_line:
            continue
        if not line.strip():
            collector.issues.append(issue("blank_line", uri, number, "empty line"))
            continue
        record, line_issues = parsed[number]
        collector.issues.extend(line_issues)
        if record is not None:
            collector.add(number, record)
    data_lines = [item for item in content if item[0] != header_line]
    if not data_lines:
        raise DatasetError(f"{uri}: caption file has no caption lines; expected {expected}")
    if not collector.readable_lines:
        first_number, first_line = data_lines[0]
        raise DatasetError(
            f"{uri}: no line could be read as a caption (line {first_number}: {clip(first_line)}); "
            f"expected {expected}; is this the right file?"
        )
    return tuple(collector.records), tuple(collector.issues)


def read_token_captions(uri: str, image_ids: Collection[str] | None = None):
    """Records and issues of a ``Flickr8k.token.txt``; see :func:`read_captions`."""
    return read_captions(uri, LAYOUT_TOKEN, image_ids)


def read_kaggle_captions(uri: str, image_ids: Collection[str] | None = None):
    """Records and issues of a Kaggle ``captions.txt``; see :func:`read_captions`."""
    return read_captions(uri, LAYOUT_KAGGLE, image_ids)
