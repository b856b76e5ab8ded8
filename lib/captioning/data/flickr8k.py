"""Reading Flickr8k as it is actually distributed, quirks included.

Flickr8k circulates in two layouts, and neither copy is clean:

* the original release: an image folder ``Flicker8k_Dataset/`` (the misspelling is the
  real name; some repackagings fix it to ``Flickr8k_Dataset/``) and text files, at the
  dataset root or in ``Flickr8k_text/``: ``Flickr8k.token.txt`` with lines
  ``<image>.jpg#<n><TAB><caption>`` and the split lists ``Flickr_8k.trainImages.txt``,
  ``Flickr_8k.devImages.txt``, ``Flickr_8k.testImages.txt`` (one image name a line);
* the Kaggle repackaging: ``Images/`` and ``captions.txt``, a CSV with the header
  ``image,caption`` whose captions contain commas that are mostly *not* quoted, and no
  split lists at all.

The real files carry an id with a stray ``.1`` suffix (``2258277193_586949ec62.jpg.1``,
whose five captions repeat the numbers of the plain id), captions for images that are
not in the folder, images without captions, and copies of the text files that picked
up CRLF line ends, a UTF-8 byte-order mark or stray spaces on their way through other
tools. A training run must not crash on these, and must not quietly lose data either:
every input line ends either as a record or as a :class:`DatasetIssue` that names the
file and line, so a count of what was dropped, and why, is always available
(:meth:`Flickr8kDataset.issue_counts`). Only problems that make the dataset unusable,
such as a wrong path, a missing caption file or a binary file where text was expected,
raise :class:`DatasetError`.

Issue reason codes. *Dropped* means the line, entry or file was left out; *normalised*
means it was kept after a repair; *noted* is information about the kept data.

==========================  ==========  ====================================================
reason                      kind        meaning
==========================  ==========  ====================================================
blank_line                  dropped     an empty (or all-whitespace) line in a text file
malformed_line              dropped     a line that is not a caption or an image name
empty_caption               dropped     a caption line whose caption text is empty
duplicate_caption           dropped     a second caption with the same (image, number),
                                        usually made by ``id_suffix_normalised``; the
                                        first one read is kept
caption_for_missing_image   dropped     a caption for an image not in the image folder
split_image_missing         dropped     a split-list entry for an image not in the folder
duplicate_split_entry       dropped     an image listed twice in the same split list
image_in_several_splits     dropped     an image listed in more than one split list; it
                                        stays in the first of train, dev, test and the
                                        later entry is dropped (no train/test leakage)
non_image_file              dropped     a file in the image folder that is not a
                                        ``.jpg``/``.jpeg``/``.png`` directly in the folder
id_suffix_normalised        normalised  ``x.jpg.1`` read as ``x.jpg``
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

import csv
import hashlib
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Collection, Iterable, Mapping

from captioning.store import storage
from captioning.store.storage import FileInfo

IMAGE_FOLDERS = ("Flicker8k_Dataset", "Flickr8k_Dataset", "Images")
TEXT_FOLDERS = ("", "Flickr8k_text")  # "" is the dataset root
TOKEN_FILE = "Flickr8k.token.txt"
KAGGLE_FILE = "captions.txt"
SPLITS = ("train", "dev", "test")
SPLIT_FILES = MappingProxyType(
    {
        "train": "Flickr_8k.trainImages.txt",
        "dev": "Flickr_8k.devImages.txt",
        "test": "Flickr_8k.testImages.txt",
    }
)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# The original lists hold 6000/1000/1000 of the 8000 listed images.
DERIVED_SHARES = MappingProxyType({"train": 6000, "dev": 1000, "test": 1000})

LAYOUT_TOKEN = "token"  # Flickr8k.token.txt (+ split lists)
LAYOUT_KAGGLE = "kaggle"  # captions.txt CSV

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

_IMAGE_ID = re.compile(r"^(?P<base>[^/\s]+?\.(?:jpe?g|png))(?P<suffix>\.\d+)?$", re.IGNORECASE)
_LINE_BREAK = re.compile(r"\r\n|\n|\r")
_TOKEN_FORMAT = "'<image>.jpg#<n><TAB><caption>'"
_KAGGLE_FORMAT = "'<image>.jpg,<caption>' after an 'image,caption' header"
_SPLIT_FORMAT = "one image file name such as '1000268201_693b08cb0e.jpg' a line"


class DatasetError(ValueError):
    """The dataset cannot be used; the message names the URI and what was expected."""


@dataclass(frozen=True)
class CaptionRecord:
    image_id: str  # image file name, e.g. "1000268201_693b08cb0e.jpg"
    caption_index: int  # the "#n" of the token file; order of appearance in captions.txt
    text: str  # the caption as written (outer whitespace removed)
    source: str  # "uri:line" it was read from


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


@dataclass(frozen=True)
class DatasetFiles:
    """Where the parts of a dataset were found (see :func:`locate`)."""

    root: str
    images_uri: str
    captions_uri: str
    layout: str  # LAYOUT_TOKEN or LAYOUT_KAGGLE
    split_uris: Mapping[str, str]  # split -> list URI; empty when there are no lists


@dataclass(frozen=True)
class Flickr8kDataset:
    root: str
    images_uri: str
    layout: str
    captions: tuple[CaptionRecord, ...]  # kept captions, in file order
    splits: Mapping[str, frozenset[str]]  # 'train', 'dev', 'test' -> image ids
    images: Mapping[str, FileInfo]  # image id -> listed file
    issues: tuple[DatasetIssue, ...]
    captions_uri: str = ""
    split_uris: Mapping[str, str] = field(default_factory=dict)  # empty when splits were derived

    def __post_init__(self) -> None:
        object.__setattr__(self, "splits", MappingProxyType({k: frozenset(v) for k, v in self.splits.items()}))
        object.__setattr__(self, "images", MappingProxyType(dict(self.images)))
        object.__setattr__(self, "split_uris", MappingProxyType(dict(self.split_uris)))

    def split_of(self, image_id: str) -> str | None:
        """'train', 'dev' or 'test', or None for an image in no split."""
        for name in SPLITS:
            if image_id in self.splits.get(name, ()):
                return name
        return None

    def issue_counts(self) -> dict[str, int]:
        """Reason -> number of issues, sorted by reason."""
        return dict(sorted(Counter(issue.reason for issue in self.issues).items()))

    def dropped_count(self) -> int:
        return sum(1 for issue in self.issues if issue.dropped)

    def captions_by_image(self) -> dict[str, tuple[CaptionRecord, ...]]:
        grouped: dict[str, list[CaptionRecord]] = {}
        for record in self.captions:
            grouped.setdefault(record.image_id, []).append(record)
        return {image_id: tuple(records) for image_id, records in grouped.items()}

    def caption_rows(self) -> list[tuple[str, str, int, str, str]]:
        """(image_id, split, caption_index, text, source) for captions of images in a split."""
        rows = []
        for record in self.captions:
            split = self.split_of(record.image_id)
            if split is not None:
                rows.append((record.image_id, split, record.caption_index, record.text, record.source))
        return rows


# --------------------------------------------------------------------------- helpers


def _issue(reason: str, uri: str, line: int | None, detail: str) -> DatasetIssue:
    return DatasetIssue(reason=reason, uri=uri, line=line, detail=detail)


def _clip(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def normalise_image_id(raw: str) -> tuple[str, bool] | None:
    """(image id, whether a ``.N`` suffix was removed), or None when not an image name."""
    match = _IMAGE_ID.match(raw)
    if match is None:
        return None
    return match.group("base"), match.group("suffix") is not None


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _read_text_file(uri: str, role: str) -> str:
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


def _split_lines(uri: str, text: str) -> tuple[list[tuple[int, str]], list[DatasetIssue]]:
    """(line number, line) pairs without line ends, plus BOM / CRLF issues."""
    issues = []
    if text.startswith("\ufeff"):
        text = text[1:]
        issues.append(_issue("byte_order_mark", uri, 1, "UTF-8 byte-order mark at the start of the file ignored"))
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
            _issue(
                "crlf_line_endings",
                uri,
                other_ends[0],
                f"{len(other_ends)} of {len(lines)} lines end in CR LF or CR; read as plain line ends",
            )
        )
    return lines, issues


def _read_lines(uri: str, role: str) -> tuple[list[tuple[int, str]], list[DatasetIssue]]:
    return _split_lines(uri, _read_text_file(uri, role))


def _strip_fields(fields: Iterable[str]) -> tuple[list[str], bool]:
    """Fields without outer whitespace, and whether any had some."""
    raw = list(fields)
    stripped = [value.strip() for value in raw]
    return stripped, stripped != raw


# --------------------------------------------------------------------------- captions


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
            return None, [_issue("malformed_line", uri, number, f"expected {_TOKEN_FORMAT}, got {_clip(line)}")]
        key, text = parts
        issues.append(_issue("space_separator", uri, number, "key and caption separated by spaces, not a tab"))
    raw_id, hash_sign, index = key.strip().rpartition("#")
    (raw_id, index, text), padded = _strip_fields((raw_id, index, text))
    padded = padded or key != key.strip()
    if not hash_sign or not index.isascii() or not index.isdigit():
        return None, [_issue("malformed_line", uri, number, f"expected {_TOKEN_FORMAT}, got {_clip(line)}")]
    if padded and text:  # a blank caption is reported as empty_caption only
        issues.append(_issue("whitespace_stripped", uri, number, "whitespace around the key or caption removed"))
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
        return None, [_issue("malformed_line", uri, number, f"expected {_KAGGLE_FORMAT}, got {_clip(line)}")]
    raw_id = fields[0]
    if len(fields) == 2:
        text = fields[1]
    elif not line.lstrip().startswith('"'):
        text = line.split(",", 1)[1]  # unquoted commas belong to the caption
    else:
        text = ",".join(fields[1:])
    (raw_id, text), padded = _strip_fields((raw_id, text))
    padded = padded and bool(text)  # a blank caption is reported as empty_caption only
    issues = [_issue("whitespace_stripped", uri, number, "whitespace around the image or caption removed")] if padded else []
    return _Parsed(raw_id, None, text), issues


class _CaptionCollector:
    """Turns parsed lines into records, numbering Kaggle captions and dropping repeats."""

    def __init__(self, uri: str, image_ids: Collection[str] | None) -> None:
        self.uri = uri
        self.image_ids = image_ids
        self.records: list[CaptionRecord] = []
        self.issues: list[DatasetIssue] = []
        self.readable_lines = 0  # lines with a valid image name, whatever became of them
        self._seen: dict[tuple[str, int], int] = {}
        self._order: Counter[str] = Counter()

    def add(self, number: int, parsed: _Parsed) -> None:
        normal = normalise_image_id(parsed.raw_id)
        if normal is None:
            self.issues.append(
                _issue("malformed_line", self.uri, number, f"{_clip(parsed.raw_id)} is not an image file name (.jpg, .jpeg, .png)")
            )
            return
        self.readable_lines += 1
        image_id, had_suffix = normal
        index = parsed.number
        if index is None:
            index = self._order[parsed.raw_id]
            self._order[parsed.raw_id] += 1
        if had_suffix:
            self.issues.append(_issue("id_suffix_normalised", self.uri, number, f"{parsed.raw_id!r} read as {image_id!r}"))
        if not parsed.text:
            self.issues.append(_issue("empty_caption", self.uri, number, f"caption #{index} of {image_id} is empty"))
            return
        first = self._seen.get((image_id, index))
        if first is not None:
            self.issues.append(
                _issue("duplicate_caption", self.uri, number, f"{image_id}#{index} was already read at line {first}; first kept")
            )
            return
        self._seen[(image_id, index)] = number
        if self.image_ids is not None and image_id not in self.image_ids:
            self.issues.append(_issue("caption_for_missing_image", self.uri, number, f"{image_id} is not in the image folder"))
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
    lines, issues = _read_lines(uri, "caption file")
    parse = _parse_token_line if layout == LAYOUT_TOKEN else _parse_kaggle_line
    expected = _TOKEN_FORMAT if layout == LAYOUT_TOKEN else _KAGGLE_FORMAT
    collector = _CaptionCollector(uri, image_ids)
    collector.issues = issues
    content = [(n, line) for n, line in lines if line.strip()]
    header = layout == LAYOUT_KAGGLE and bool(content) and _is_kaggle_header(content[0][1])
    header_line = content[0][0] if header else None
    for number, line in lines:
        if number == header_line:
            continue
        if not line.strip():
            collector.issues.append(_issue("blank_line", uri, number, "empty line"))
            continue
        parsed, line_issues = parse(uri, number, line)
        collector.issues.extend(line_issues)
        if parsed is not None:
            collector.add(number, parsed)
    data_lines = [item for item in content if item[0] != header_line]
    if not data_lines:
        raise DatasetError(f"{uri}: caption file has no caption lines; expected {expected}")
    if not collector.readable_lines:
        first_number, first_line = data_lines[0]
        raise DatasetError(
            f"{uri}: no line could be read as a caption (line {first_number}: {_clip(first_line)}); "
            f"expected {expected}; is this the right file?"
        )
    return tuple(collector.records), tuple(collector.issues)


def read_token_captions(uri: str, image_ids: Collection[str] | None = None):
    """Records and issues of a ``Flickr8k.token.txt``; see :func:`read_captions`."""
    return read_captions(uri, LAYOUT_TOKEN, image_ids)


def read_kaggle_captions(uri: str, image_ids: Collection[str] | None = None):
    """Records and issues of a Kaggle ``captions.txt``; see :func:`read_captions`."""
    return read_captions(uri, LAYOUT_KAGGLE, image_ids)


# --------------------------------------------------------------------------- splits


def _read_split_list(
    split: str, uri: str, image_ids: Collection[str] | None, assigned: dict[str, str]
) -> tuple[set[str], list[DatasetIssue]]:
    """Image ids kept for one split; ``assigned`` (id -> split) is updated in place."""
    lines, issues = _read_lines(uri, f"{split} split list")
    kept: set[str] = set()
    parsed_any = False
    for number, line in lines:
        entry = line.strip()
        if not entry:
            issues.append(_issue("blank_line", uri, number, "empty line"))
            continue
        if entry != line:
            issues.append(_issue("whitespace_stripped", uri, number, "whitespace around the image name removed"))
        normal = normalise_image_id(entry)
        if normal is None:
            issues.append(_issue("malformed_line", uri, number, f"expected {_SPLIT_FORMAT}, got {_clip(line)}"))
            continue
        parsed_any = True
        image_id, had_suffix = normal
        if had_suffix:
            issues.append(_issue("id_suffix_normalised", uri, number, f"{entry!r} read as {image_id!r}"))
        if image_id in kept:
            issues.append(_issue("duplicate_split_entry", uri, number, f"{image_id} is already in this list"))
        elif image_ids is not None and image_id not in image_ids:
            issues.append(_issue("split_image_missing", uri, number, f"{image_id} is not in the image folder"))
        elif image_id in assigned:
            issues.append(
                _issue("image_in_several_splits", uri, number, f"{image_id} is already in the {assigned[image_id]} split; kept there")
            )
        else:
            kept.add(image_id)
            assigned[image_id] = split
    if not parsed_any and any(line.strip() for _, line in lines):
        raise DatasetError(f"{uri}: no line is an image file name; expected {_SPLIT_FORMAT}; is this the right file?")
    return kept, issues


def read_split_lists(
    uris: Mapping[str, str], image_ids: Collection[str] | None = None
) -> tuple[dict[str, frozenset[str]], tuple[DatasetIssue, ...]]:
    """Splits from the lists in ``uris`` (split -> URI), read in train, dev, test order.

    An image listed in several lists stays in the first one. With ``image_ids``, entries
    for other images are dropped as split_image_missing.
    """
    unknown = set(uris) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split names {sorted(unknown)}; expected {list(SPLITS)}")
    assigned: dict[str, str] = {}
    splits: dict[str, frozenset[str]] = {}
    issues: list[DatasetIssue] = []
    for split in SPLITS:
        if split in uris:
            kept, split_issues = _read_split_list(split, uris[split], image_ids, assigned)
            splits[split] = frozenset(kept)
            issues.extend(split_issues)
        else:
            splits[split] = frozenset()
    return splits, tuple(issues)


def _split_key(image_id: str, seed: int) -> tuple[str, str]:
    return hashlib.sha256(f"{seed}:{image_id}".encode("utf-8")).hexdigest(), image_id


def derive_splits(image_ids: Iterable[str], seed: int = 0) -> dict[str, frozenset[str]]:
    """Deterministic train/dev/test split in the original 6000/1000/1000 proportions.

    Images are ordered by a SHA-256 hash of ``seed`` and the id, and the ordered list is
    cut at 75 % and 87.5 %, so the split does not depend on listing order, the shares are
    exact up to rounding, and another seed gives another split.
    """
    ordered = sorted(set(image_ids), key=lambda image_id: _split_key(image_id, seed))
    total = sum(DERIVED_SHARES.values())
    splits: dict[str, frozenset[str]] = {}
    start = 0
    share_so_far = 0
    for split in SPLITS:
        share_so_far += DERIVED_SHARES[split]
        end = (len(ordered) * share_so_far * 2 + total) // (2 * total)  # rounded cumulative cut
        splits[split] = frozenset(ordered[start:end])
        start = end
    return splits


# --------------------------------------------------------------------------- images


def _relative(folder_uri: str, file_uri: str) -> str:
    prefix = folder_uri.rstrip("/") + "/"
    if file_uri.startswith(prefix):
        return file_uri[len(prefix) :]
    return storage.basename(file_uri)


def list_images(images_uri: str) -> tuple[dict[str, FileInfo], tuple[DatasetIssue, ...]]:
    """Image id (file name) -> file for the images directly in ``images_uri``.

    Other files, and files in subfolders, are non_image_file issues. A folder without
    any image is a :class:`DatasetError`.
    """
    images: dict[str, FileInfo] = {}
    issues: list[DatasetIssue] = []
    for info in storage.list_files(images_uri):
        name = _relative(images_uri, info.uri)
        if "/" in name or "\\" in name:
            issues.append(_issue("non_image_file", info.uri, None, f"{name} is in a subfolder; only files directly in the image folder are read"))
        elif not is_image_name(name):
            issues.append(_issue("non_image_file", info.uri, None, f"{name} is not a {'/'.join(IMAGE_EXTENSIONS)} file"))
        else:
            images[name] = info
    if not images:
        raise DatasetError(f"{images_uri}: image folder holds no image files; expected {', '.join(IMAGE_EXTENSIONS)} files")
    return images, tuple(issues)


# --------------------------------------------------------------------------- layout


def _normalise_root(root_uri: str) -> str:
    if storage.is_local(root_uri) and not root_uri.startswith("file://"):
        return os.path.abspath(root_uri)
    stripped = root_uri.rstrip("/")
    return stripped if not stripped.endswith(":/") and not stripped.endswith(":") else root_uri


def _is_file(uri: str) -> bool:
    return storage.exists(uri) and not storage.isdir(uri)


def _text_locations(root: str) -> list[str]:
    return [storage.join(root, folder) if folder else root for folder in TEXT_FOLDERS]


def _describe_layout() -> str:
    return (
        f"an image folder ({', '.join(name + '/' for name in IMAGE_FOLDERS)}) and a caption file "
        f"({TOKEN_FILE} or {KAGGLE_FILE}, at the root or in {TEXT_FOLDERS[1]}/)"
    )


def _find_images_uri(root: str) -> str:
    for name in IMAGE_FOLDERS:
        candidate = storage.join(root, name)
        if storage.isdir(candidate):
            return candidate
    raise DatasetError(f"{root}: no image folder found; tried {', '.join(name + '/' for name in IMAGE_FOLDERS)}")


def _find_captions(root: str) -> tuple[str, str]:
    locations = _text_locations(root)
    for name, layout in ((TOKEN_FILE, LAYOUT_TOKEN), (KAGGLE_FILE, LAYOUT_KAGGLE)):
        for location in locations:
            candidate = storage.join(location, name)
            if _is_file(candidate):
                return candidate, layout
    tried = [storage.join(location, name) for name in (TOKEN_FILE, KAGGLE_FILE) for location in locations]
    raise DatasetError(f"{root}: no caption file found; tried {', '.join(tried)}")


def _find_split_lists(root: str, captions_uri: str) -> dict[str, str]:
    locations = [storage.parent(captions_uri)] + [loc for loc in _text_locations(root) if loc != storage.parent(captions_uri)]
    found = {}
    for split, name in SPLIT_FILES.items():
        for location in locations:
            candidate = storage.join(location, name)
            if _is_file(candidate):
                found[split] = candidate
                break
    if found and len(found) < len(SPLITS):
        missing = [SPLIT_FILES[split] for split in SPLITS if split not in found]
        present = [storage.basename(found[split]) for split in SPLITS if split in found]
        raise DatasetError(
            f"{root}: split list {', '.join(missing)} missing (found {', '.join(present)}); "
            f"all three of {', '.join(SPLIT_FILES.values())} are needed, looked in {', '.join(locations)}"
        )
    return found


def locate(root_uri: str, require_splits: bool = True) -> DatasetFiles:
    """Find the image folder, caption file and split lists below ``root_uri``.

    The token file is preferred over ``captions.txt``. Split lists must be all present or
    all absent; with none, the token layout is an error when ``require_splits`` is true
    (the original release always ships them), while the Kaggle layout never has them.
    """
    root = _normalise_root(root_uri)
    if not storage.exists(root):
        raise DatasetError(f"{root_uri}: dataset root not found; expected a folder with {_describe_layout()}")
    if not storage.isdir(root):
        raise DatasetError(f"{root_uri}: dataset root is a file; expected a folder with {_describe_layout()}")
    images_uri = _find_images_uri(root)
    captions_uri, layout = _find_captions(root)
    split_uris = _find_split_lists(root, captions_uri)
    if not split_uris and layout == LAYOUT_TOKEN and require_splits:
        raise DatasetError(
            f"{root}: no split lists found next to {storage.basename(captions_uri)}; expected "
            f"{', '.join(SPLIT_FILES.values())} (pass require_splits=False to derive splits)"
        )
    return DatasetFiles(root, images_uri, captions_uri, layout, MappingProxyType(split_uris))


def _coverage_issues(images: Mapping[str, FileInfo], captions: Iterable[CaptionRecord], splits: Mapping[str, frozenset[str]]):
    captioned = {record.image_id for record in captions}
    in_split = frozenset().union(*splits.values())
    issues = []
    for image_id, info in sorted(images.items()):
        if image_id not in captioned:
            issues.append(_issue("image_without_captions", info.uri, None, f"{image_id} has no caption"))
        if image_id not in in_split:
            issues.append(_issue("image_in_no_split", info.uri, None, f"{image_id} is in no split list"))
    return issues


def load_dataset(root_uri: str, require_splits: bool = True, split_seed: int = 0) -> Flickr8kDataset:
    """Read a Flickr8k dataset (original or Kaggle layout) from a local path, file:// or s3://.

    Quirks become :class:`DatasetIssue` entries; unusable input raises :class:`DatasetError`.
    Without split lists the splits come from :func:`derive_splits` with ``split_seed``.
    Storage failures other than missing files (permissions, network) raise
    :class:`captioning.store.storage.StorageError`.
    """
    files = locate(root_uri, require_splits=require_splits)
    images, issues = list_images(files.images_uri)
    all_issues = list(issues)
    captions, caption_issues = read_captions(files.captions_uri, files.layout, images)
    all_issues.extend(caption_issues)
    if files.split_uris:
        splits, split_issues = read_split_lists(files.split_uris, images)
        all_issues.extend(split_issues)
    else:
        splits = derive_splits(images, split_seed)
        counts = ", ".join(f"{name} {len(splits[name])}" for name in SPLITS)
        all_issues.append(
            _issue(
                "splits_derived",
                files.root,
                None,
                f"no split lists; derived from a hash of the image id with seed {split_seed}: {counts}",
            )
        )
    all_issues.extend(_coverage_issues(images, captions, splits))
    return Flickr8kDataset(
        root=files.root,
        images_uri=files.images_uri,
        layout=files.layout,
        captions=captions,
        splits=splits,
        images=images,
        issues=tuple(all_issues),
        captions_uri=files.captions_uri,
        split_uris=files.split_uris,
    )
