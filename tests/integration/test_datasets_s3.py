"""The Flickr8k readers against a real S3 API (the moto server of the ``s3_bucket`` fixture).

The same small datasets are written to tmp_path and uploaded to S3; loading either must
give the same captions, splits, images and issues once the root prefix is taken off.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from captioning.store import storage
from captioning.data.flickr8k import DatasetError, Flickr8kDataset, load_dataset

JPEG = b"\xff\xd8\xff\xe0 small fake jpeg"

TOKEN_DATASET = {
    "Flicker8k_Dataset/1000268201_693b08cb0e.jpg": JPEG,
    "Flicker8k_Dataset/1001773457_577c3a7d70.jpg": JPEG + b"!",
    "Flicker8k_Dataset/2258277193_586949ec62.jpg": JPEG,
    "Flicker8k_Dataset/3333333333_nocaption00.jpg": JPEG,
    "Flicker8k_Dataset/notes.txt": b"not an image",
    "Flickr8k_text/Flickr8k.token.txt": (
        "\ufeff1000268201_693b08cb0e.jpg#0\tA child in a pink dress .\r\n"
        "1000268201_693b08cb0e.jpg#1\t A girl going into a wooden building . \r\n"
        "\r\n"
        "2258277193_586949ec62.jpg#0\tA man stands next to a bus .\r\n"
        "2258277193_586949ec62.jpg.1#0\tA man standing by a bus .\r\n"
        "2258277193_586949ec62.jpg.1#1\tA man in front of a bus .\r\n"
        "9999999999_missing000.jpg#0\tNo such image .\r\n"
        "1001773457_577c3a7d70.jpg#0\tA black dog and a spotted dog are fighting\r\n"
        "garbage\r\n"
    ).encode("utf-8"),
    "Flickr8k_text/Flickr_8k.trainImages.txt": b"1000268201_693b08cb0e.jpg\n2258277193_586949ec62.jpg\n",
    "Flickr8k_text/Flickr_8k.devImages.txt": b"1001773457_577c3a7d70.jpg\n5555555555_notthere000.jpg\n",
    "Flickr8k_text/Flickr_8k.testImages.txt": b"1000268201_693b08cb0e.jpg\n",
}

KAGGLE_DATASET = {
    **{f"Images/{i:04d}_img.jpg": JPEG for i in range(16)},
    "captions.txt": (
        "image,caption\n"
        + "".join(f"{i:04d}_img.jpg,A dog, number {i} , runs .\n" for i in range(16))
        + '0000_img.jpg,"A quoted caption, with a comma ."\n'
    ).encode("utf-8"),
}


def write_local(root: Path, files: dict[str, bytes]) -> str:
    for relative, data in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return str(root)


def upload(root_uri: str, files: dict[str, bytes]) -> str:
    for relative, data in files.items():
        storage.write_bytes(storage.join(root_uri, relative), data)
    return root_uri


def comparable(dataset: Flickr8kDataset) -> dict:
    """Everything the dataset says, with URIs made relative to its root."""
    prefix = dataset.root.rstrip("/") + "/"

    def rel(uri: str) -> str:
        assert uri.startswith(prefix), (uri, prefix)
        return uri[len(prefix) :]

    return {
        "layout": dataset.layout,
        "images_uri": rel(dataset.images_uri),
        "captions_uri": rel(dataset.captions_uri),
        "split_uris": {split: rel(uri) for split, uri in dataset.split_uris.items()},
        "captions": [(r.image_id, r.caption_index, r.text, rel(r.source)) for r in dataset.captions],
        "splits": dict(dataset.splits),
        "images": {image_id: (rel(info.uri), info.size) for image_id, info in dataset.images.items()},
        "issues": [(i.reason, rel(i.uri) if i.uri != dataset.root else ".", i.line, i.detail) for i in dataset.issues],
    }


def test_token_layout_from_s3_matches_local(s3_bucket, tmp_path):
    local = load_dataset(write_local(tmp_path, TOKEN_DATASET))
    remote = load_dataset(upload(f"{s3_bucket}/datasets/flickr8k", TOKEN_DATASET) + "/")

    assert remote.root == f"{s3_bucket}/datasets/flickr8k"
    assert remote.images["1000268201_693b08cb0e.jpg"].uri == f"{s3_bucket}/datasets/flickr8k/Flicker8k_Dataset/1000268201_693b08cb0e.jpg"
    assert remote.captions[0].source == f"{s3_bucket}/datasets/flickr8k/Flickr8k_text/Flickr8k.token.txt:1"
    assert comparable(remote) == comparable(local)
    assert remote.issue_counts() == {
        "blank_line": 1,
        "byte_order_mark": 1,
        "caption_for_missing_image": 3,  # 9999999999_missing000.jpg, and the two under 2258277193_586949ec62.jpg.1
        "crlf_line_endings": 1,
        "image_in_no_split": 1,
        "image_in_several_splits": 1,
        "image_without_captions": 1,
        "malformed_line": 1,
        "non_image_file": 1,
        "split_image_missing": 1,
        "whitespace_stripped": 1,
    }
    assert [(r.image_id, r.caption_index) for r in remote.captions] == [
        ("1000268201_693b08cb0e.jpg", 0),
        ("1000268201_693b08cb0e.jpg", 1),
        ("2258277193_586949ec62.jpg", 0),
        ("1001773457_577c3a7d70.jpg", 0),
    ]


def test_kaggle_layout_at_bucket_root_matches_local(s3_bucket, tmp_path):
    local = load_dataset(write_local(tmp_path, KAGGLE_DATASET))
    remote = load_dataset(upload(s3_bucket, KAGGLE_DATASET))

    assert remote.layout == "kaggle"
    assert comparable(remote) == comparable(local)
    assert {split: len(ids) for split, ids in remote.splits.items()} == {"train": 12, "dev": 2, "test": 2}
    assert remote.captions[0].text == "A dog, number 0 , runs ."
    assert remote.captions[-1].text == "A quoted caption, with a comma ."
    assert remote.issue_counts() == {"splits_derived": 1}


def test_missing_s3_root_is_a_dataset_error(s3_bucket):
    with pytest.raises(DatasetError) as error:
        load_dataset(f"{s3_bucket}/no/such/prefix")

    message = str(error.value)
    assert f"{s3_bucket}/no/such/prefix" in message and "Flickr8k.token.txt" in message


def test_s3_partial_split_lists_are_a_dataset_error(s3_bucket):
    files = {k: v for k, v in TOKEN_DATASET.items() if not k.endswith("testImages.txt")}
    root = upload(f"{s3_bucket}/partial", files)

    with pytest.raises(DatasetError, match=r"Flickr_8k\.testImages\.txt missing"):
        load_dataset(root)
