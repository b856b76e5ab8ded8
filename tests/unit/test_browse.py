"""Browsing a caption-images output: latest answer per object, word search, pages, thumbnails, cards."""
from __future__ import annotations

import datetime as dt
import io
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from captioning.app.browse import AnswerIndex, BrowseConfig, query_words
from captioning.app.cards import answer_cards, photo_card, problem_table
from captioning.store.bulk_output import BulkOutput, latest_answers

SCHEMA = pa.schema(
    [
        ("uri", pa.string()), ("input", pa.string()), ("version", pa.string()), ("size", pa.int64()), ("mtime", pa.float64()),
        ("status", pa.string()), ("caption", pa.string()), ("score", pa.float64()), ("error", pa.string()), ("error_detail", pa.string()),
        ("model_id", pa.string()), ("captioned_at", pa.timestamp("us")),
    ]
)


def row(uri, status="ok", caption=None, score=None, error=None, detail=None, model="m1", version="v1", at=0):
    return {
        "uri": uri, "input": "in", "version": version, "size": 10, "mtime": 1.0, "status": status, "caption": caption, "score": score,
        "error": error, "error_detail": detail, "model_id": model, "captioned_at": dt.datetime(2026, 1, 1) + dt.timedelta(seconds=at),
    }


def write_run(output: str, run_id: str, rows: list[dict], parts: int = 1, committed: bool = True) -> None:
    """Rows as Spark leaves them: Parquet part files under the run's partition folder."""
    folder = BulkOutput(output).run_rows(run_id)
    if not committed:
        folder = os.path.join(folder, "_temporary", "0", "task_0")
    os.makedirs(folder, exist_ok=True)
    for part in range(parts):
        pq.write_table(pa.Table.from_pylist(rows[part::parts], schema=SCHEMA), os.path.join(folder, f"part-{part:05d}.snappy.parquet"))


def jpeg(colour, size=(64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="JPEG")
    return out.getvalue()


@pytest.fixture
def output(tmp_path):
    out = str(tmp_path / "captions-out")
    write_run(out, "20260101T000000Z-aaaaaa", [
        row("s3://b/dog.jpg", caption="a dog runs on the beach", score=-0.5),
        row("s3://b/cat.jpg", caption="a cat on a sofa", score=-0.7),
        row("s3://b/old.jpg", caption="an old caption", score=-1.0),
        row("s3://b/bad.jpg", status="error", error="truncated", detail="truncated: cut off"),
        row("s3://b/notes.txt", status="skipped", error="not_an_image_name", detail="not an image name"),
    ], parts=2)
    # a later run: old.jpg changed and was captioned again, bad.jpg was fixed
    write_run(out, "20260102T000000Z-bbbbbb", [
        row("s3://b/old.jpg", caption="a new caption of the dog beach photo", score=-0.4, version="v2", at=60),
        row("s3://b/bad.jpg", caption="two dogs on a beach", score=-0.6, version="v2", at=61),
    ])
    # a run killed before its commit: never visible
    write_run(out, "20260103T000000Z-cccccc", [row("s3://b/dog.jpg", caption="uncommitted", score=-0.1, at=120)], committed=False)
    return out


def test_latest_answer_per_object_across_runs(output):
    answers = latest_answers(BulkOutput(output)).set_index("uri")
    assert sorted(answers.index) == ["s3://b/bad.jpg", "s3://b/cat.jpg", "s3://b/dog.jpg", "s3://b/notes.txt", "s3://b/old.jpg"]
    assert answers.loc["s3://b/old.jpg", "caption"] == "a new caption of the dog beach photo"
    assert answers.loc["s3://b/old.jpg", "version"] == "v2"
    assert (answers.loc["s3://b/bad.jpg", "status"], answers.loc["s3://b/bad.jpg", "run_id"]) == ("ok", "20260102T000000Z-bbbbbb")
    assert answers.loc["s3://b/dog.jpg", "caption"] == "a dog runs on the beach"  # the uncommitted run is not read


def test_an_output_without_rows_is_empty(tmp_path):
    answers = latest_answers(BulkOutput(str(tmp_path / "nothing")))
    assert answers.empty and "uri" in answers.columns and "run_id" in answers.columns
    index = AnswerIndex(BrowseConfig(str(tmp_path / "nothing")))
    assert index.objects == 0 and index.search("dog").total == 0 and index.search("").page(3).pages == 1


def test_query_words():
    assert query_words("  Dog, BEACH!  ") == ["dog", "beach"]
    assert query_words("") == [] and query_words("a_b") == ["a", "b"]


def test_word_search_keeps_captions_with_every_word(output):
    index = AnswerIndex(BrowseConfig(output, page_size=2))
    assert (index.objects, index.runs, index.counts) == (5, 2, {"ok": 4, "skipped": 1})

    def uris(query):
        selection = index.search(query)
        return sorted(r["uri"] for number in range(1, selection.pages + 1) for r in selection.page(number).rows)

    assert uris("dog beach") == ["s3://b/dog.jpg", "s3://b/old.jpg"]
    assert uris("Beach,") == ["s3://b/bad.jpg", "s3://b/dog.jpg", "s3://b/old.jpg"]
    assert index.search("do").total == 0  # whole words only: "do" is not "dog"
    assert index.search("dogs").total == 1  # "two dogs on a beach"
    assert index.search("").total == 4 and index.search("zebra").total == 0


def test_pages_are_clamped_and_complete(output):
    index = AnswerIndex(BrowseConfig(output, page_size=3))
    everything = index.search("")
    assert (everything.total, everything.pages) == (4, 2)
    first, second = everything.page(1), everything.page(2)
    assert [len(first.rows), len(second.rows)] == [3, 1]
    assert sorted(r["uri"] for r in first.rows + second.rows) == sorted(index.captioned["uri"])
    assert everything.page(99).number == 2 and everything.page(-1).number == 1
    assert isinstance(first.rows[0]["captioned_at"], str) and first.rows[0]["error"] is None


def test_errors_with_their_reasons(output):
    index = AnswerIndex(BrowseConfig(output))
    assert index.reasons == {"not_an_image_name": 1}
    rows = index.errors().page(1).rows
    assert [(r["uri"], r["status"], r["error"]) for r in rows] == [("s3://b/notes.txt", "skipped", "not_an_image_name")]
    assert index.errors("truncated").total == 0


def test_thumbnails_of_the_page_only_and_none_when_unreadable(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "red.jpg").write_bytes(jpeg((200, 0, 0), (800, 600)))
    out = str(tmp_path / "out")
    write_run(out, "20260101T000000Z-aaaaaa", [row(str(folder / "red.jpg"), caption="red", score=-1.0), row(str(folder / "gone.jpg"), caption="gone", score=-1.0)])
    index = AnswerIndex(BrowseConfig(out, thumbnail_side=100))
    thumbs = index.thumbnails(index.search("").page(1).rows)
    assert thumbs[str(folder / "gone.jpg")] is None
    with Image.open(io.BytesIO(thumbs[str(folder / "red.jpg")])) as small:
        assert small.format == "JPEG" and max(small.size) == 100


def test_cards_escape_what_comes_from_models_and_buckets():
    rows = [{"uri": "s3://b/<img src=x onerror=alert(1)>.jpg", "caption": "a <script>alert(1)</script> dog", "score": -0.25, "captioned_at": None, "model_id": "m"}]
    page = answer_cards(rows, {rows[0]["uri"]: jpeg((0, 0, 255))})
    assert "<script>" not in page and "&lt;script&gt;" in page and "<img src=x" not in page
    assert "score -0.250" in page and page.count("data:image/jpeg;base64,") == 1
    table = problem_table([{"uri": "u", "status": "error", "error": "corrupt", "error_detail": "<b>bad</b>"}])
    assert "&lt;b&gt;bad&lt;/b&gt;" in table and "<b>" not in table


def test_photo_card_lists_the_alternatives_best_first():
    card = photo_card("dog.jpg", jpeg((0, 200, 0)), [("a dog on grass", "-0.412"), ("a dog", "-0.530"), ("", "-0.900")])
    assert card.index("a dog on grass") < card.index("-0.530") < card.index("-0.900")
    assert card.count('<tr class="beam">') == 3 and "(empty)" in card
    single = photo_card("dog.jpg", None, [("a dog on grass", "-0.412")])
    assert "cap-beams" not in single and "<img" not in single
