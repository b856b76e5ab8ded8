"""The Flickr8k layout: where a dataset's images, caption file and split lists are.

Flickr8k circulates in two layouts:

* the original release: an image folder ``Flicker8k_Dataset/`` (the misspelling is the
  real name; some repackagings fix it to ``Flickr8k_Dataset/``) and text files, at the
  dataset root or in ``Flickr8k_text/``: ``Flickr8k.token.txt`` with lines
  ``<image>.jpg#<n><TAB><caption>`` and the split lists ``Flickr_8k.trainImages.txt``,
  ``Flickr_8k.devImages.txt``, ``Flickr_8k.testImages.txt`` (one image name a line);
* the Kaggle repackaging: ``Images/`` and ``captions.txt``, a CSV with the header
  ``image,caption`` whose captions contain commas that are mostly *not* quoted, and no
  split lists at all.

This module is the one place that knows these names, and the one list of file
extensions the package treats as images (the dataset reader, feature extraction, bulk
captioning and the sample generator all ask it).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from captioning.errors import UserError
from captioning.store import storage

IMAGE_FOLDERS = ("Flicker8k_Dataset", "Flickr8k_Dataset", "Images")  # the first is what the sample writes
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
# File name extensions of pictures, lower case. Names decide what is offered to the image
# decoder; the decoder then judges the bytes (a ".jpg" that is not an image is an error row).
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "avif", "heic", "heif")

LAYOUT_TOKEN = "token"  # Flickr8k.token.txt (+ split lists)
LAYOUT_KAGGLE = "kaggle"  # captions.txt CSV

_IMAGE_ID = re.compile(r"^(?P<base>[^/\s]+?\.(?:" + "|".join(IMAGE_EXTENSIONS) + r"))(?P<suffix>\.\d+)?$", re.IGNORECASE)


class DatasetError(UserError, ValueError):
    """The dataset cannot be used; the message names the URI and what was expected."""


@dataclass(frozen=True)
class DatasetFiles:
    """Where the parts of a dataset were found (see :func:`locate`)."""

    root: str
    images_uri: str
    captions_uri: str
    layout: str  # LAYOUT_TOKEN or LAYOUT_KAGGLE
    split_uris: Mapping[str, str]  # split -> list URI; empty when there are no lists


def is_image_name(name: str) -> bool:
    """True when a file name or URI ends in one of :data:`IMAGE_EXTENSIONS` (any case)."""
    base = name.rsplit("/", 1)[-1]  # a trailing "/" is a folder: empty base, not an image
    return "." in base and base.rsplit(".", 1)[1].lower() in IMAGE_EXTENSIONS


def describe_image_extensions() -> str:
    return ", ".join(IMAGE_EXTENSIONS)


def normalise_image_id(raw: str) -> tuple[str, bool] | None:
    """(image id, whether a ``.N`` suffix was removed), or None when not an image name."""
    match = _IMAGE_ID.match(raw)
    if match is None:
        return None
    return match.group("base"), match.group("suffix") is not None


def image_folder(input_uri: str) -> str:
    """The dataset's image folder when ``input_uri`` is a dataset root, else ``input_uri``.

    Feature extraction takes either a dataset root or any folder / prefix of images.
    """
    if not storage.exists(input_uri):
        raise DatasetError(f"{input_uri}: not found; expected a dataset root or a folder / s3:// prefix of images")
    return _find_images_uri(input_uri, required=False) or input_uri


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


def _find_images_uri(root: str, required: bool = True) -> str | None:
    for name in IMAGE_FOLDERS:
        candidate = storage.join(root, name)
        if storage.isdir(candidate):
            return candidate
    if not required:
        return None
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
