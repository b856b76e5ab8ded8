"""Train / dev / test splits: the split lists of the original release, or derived by hash.

An image listed in several lists stays in the first of train, dev, test (no train/test
leakage); every list line ends as a kept entry or a named issue.
"""
from __future__ import annotations

import hashlib
from types import MappingProxyType
from typing import Collection, Iterable, Mapping

from captioning.data.dataset_issues import DatasetIssue, clip, issue, read_lines
from captioning.data.layout import SPLITS, DatasetError, normalise_image_id

# The original lists hold 6000/1000/1000 of the 8000 listed images.
DERIVED_SHARES = MappingProxyType({"train": 6000, "dev": 1000, "test": 1000})
_SPLIT_FORMAT = "one image file name such as '1000268201_693b08cb0e.jpg' a line"


def _read_split_list(
    split: str, uri: str, image_ids: Collection[str] | None, assigned: dict[str, str]
) -> tuple[set[str], list[DatasetIssue]]:
    """Image ids kept for one split; ``assigned`` (id -> split) is updated in place."""
    lines, issues = read_lines(uri, f"{split} split list")
    kept: set[str] = set()
    parsed_any = False
    for number, line in lines:
        entry = line.strip()
        if not entry:
            issues.append(issue("blank_line", uri, number, "empty line"))
            continue
        if entry != line:
            issues.append(issue("whitespace_stripped", uri, number, "whitespace around the image name removed"))
        normal = normalise_image_id(entry)
        if normal is None:
            issues.append(issue("malformed_line", uri, number, f"expected {_SPLIT_FORMAT}, got {clip(line)}"))
            continue
        parsed_any = True
        image_id, had_suffix = normal
        if had_suffix:
            issues.append(issue("id_suffix_normalised", uri, number, f"{entry!r} read as {image_id!r}"))
        if image_id in kept:
            issues.append(issue("duplicate_split_entry", uri, number, f"{image_id} is already in this list"))
        elif image_ids is not None and image_id not in image_ids:
            issues.append(issue("split_image_missing", uri, number, f"{image_id} is not in the image folder"))
        elif image_id in assigned:
            issues.append(
                issue("image_in_several_splits", uri, number, f"{image_id} is already in the {assigned[image_id]} split; kept there")
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
