"""Browsing a caption-images output that lives on S3 (a real S3 API: moto's server on 127.0.0.1)."""
from __future__ import annotations

import io
import os

from PIL import Image

from captioning.app.browse import AnswerIndex, BrowseConfig
from captioning.store import storage
from captioning.store.bulk_output import BulkOutput, latest_answers
from tests.unit.test_browse import jpeg, row, write_run


def upload_folder(local: str, uri: str) -> None:
    for folder, _, names in os.walk(local):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                storage.write_bytes(storage.join(uri, os.path.relpath(path, local)), handle.read())


def test_latest_answers_thumbnails_and_search_from_s3(s3_bucket, tmp_path):
    photos = f"{s3_bucket}/photos"
    storage.write_bytes(f"{photos}/beach.jpg", jpeg((240, 220, 120), (640, 480)))
    storage.write_bytes(f"{photos}/park.jpg", jpeg((40, 160, 40), (480, 640)))
    local = str(tmp_path / "out")
    write_run(local, "20260101T000000Z-aaaaaa", [
        row(f"{photos}/beach.jpg", caption="a dog on the beach", score=-0.4),
        row(f"{photos}/park.jpg", caption="an old caption", score=-0.9),
        row(f"{photos}/gone.jpg", status="error", error="unreadable", detail="gone"),
    ])
    write_run(local, "20260102T000000Z-bbbbbb", [row(f"{photos}/park.jpg", caption="a dog in the park", score=-0.5, version="v2", at=30)])
    write_run(local, "20260103T000000Z-cccccc", [row(f"{photos}/beach.jpg", caption="not committed", score=-0.1, at=60)], committed=False)
    output = f"{s3_bucket}/captions-out"
    upload_folder(local, output)

    answers = latest_answers(BulkOutput(output)).set_index("uri")
    assert sorted(answers.index) == [f"{photos}/beach.jpg", f"{photos}/gone.jpg", f"{photos}/park.jpg"]
    assert answers.loc[f"{photos}/park.jpg", "caption"] == "a dog in the park"
    assert answers.loc[f"{photos}/beach.jpg", "caption"] == "a dog on the beach"

    index = AnswerIndex(BrowseConfig(output, thumbnail_side=64))
    assert (index.objects, index.runs, index.reasons) == (3, 2, {"unreadable": 1})
    page = index.search("dog beach").page(1)
    assert [r["uri"] for r in page.rows] == [f"{photos}/beach.jpg"]
    thumbs = index.thumbnails(index.search("dog").page(1).rows)
    with Image.open(io.BytesIO(thumbs[f"{photos}/park.jpg"])) as small:
        assert small.size == (48, 64)  # portrait stays portrait
