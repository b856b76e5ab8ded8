"""A Flickr8k dataset read as it is actually distributed, quirks included.

:func:`load_dataset` finds the parts (:mod:`captioning.data.layout`), lists the images,
reads the captions (:mod:`captioning.data.caption_files`) and the splits
(:mod:`captioning.data.splits`), and returns every kept record together with every issue
(:mod:`captioning.data.dataset_issues`), so what was dropped, and why, can always be
counted (:meth:`Flickr8kDataset.issue_counts`).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Iterable, Mapping

from captioning.data.caption_files import CaptionRecord, read_captions
from captioning.data.dataset_issues import DatasetIssue, issue
from captioning.data.layout import SPLITS, DatasetError, describe_image_extensions, is_image_name, locate
from captioning.data.splits import derive_splits, read_split_lists
from captioning.store import storage
from captioning.store.storage import FileInfo


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
            issues.append(issue("non_image_file", info.uri, None, f"{name} is in a subfolder; only files directly in the image folder are read"))
        elif not is_image_name(name):
            issues.append(issue("non_image_file", info.uri, None, f"{name} is not an image file ({describe_image_extensions()})"))
        else:
            images[name] = info
    if not images:
        raise DatasetError(f"{images_uri}: image folder holds no image files; expected {describe_image_extensions()} files")
    return images, tuple(issues)



def _coverage_issues(images: Mapping[str, FileInfo], captions: Iterable[CaptionRecord], splits: Mapping[str, frozenset[str]]):
    captioned = {record.image_id for record in captions}
    in_split = frozenset().union(*splits.values())
    issues = []
    for image_id, info in sorted(images.items()):
        if image_id not in captioned:
            issues.append(issue("image_without_captions", info.uri, None, f"{image_id} has no caption"))
        if image_id not in in_split:
            issues.append(issue("image_in_no_split", info.uri, None, f"{image_id} is in no split list"))
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
            issue(
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
