"""`captioner caption` gives the captions, scores and errors caption-images gives for the same images and options."""
from __future__ import annotations

import json
import os

import pytest

from captioning.app import caption
from captioning.store.bulk_output import BulkOutput, latest_answers

pytestmark = pytest.mark.usefixtures("one_load_per_search")  # one model build per search setting, not per call


@pytest.fixture(scope="module")
def photos(captioned_bucket):
    """The folder caption-images captioned (tests/conftest.py) and {relative path: expected reason}."""
    return captioned_bucket["folder"], captioned_bucket["expected"]


@pytest.fixture(scope="module")
def bulk_rows(captioned_bucket):
    """The latest answer caption-images gave each object, with its default search (beam 3)."""
    return latest_answers(BulkOutput(captioned_bucket["output"])).set_index("uri")


@pytest.fixture(scope="module")
def model(speaking_model):
    return speaking_model


def run_caption(capsys, *args: str) -> tuple[int, str, str]:
    status = caption.main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def test_same_captions_scores_and_errors_as_caption_images(model, photos, bulk_rows, capsys):
    folder, expected = photos
    status, out, err = run_caption(capsys, folder, "--model", model, "--json")
    answers = {a["image"]: a for a in json.loads(out)["images"]}
    assert status == 1  # the folder holds broken images
    assert sorted(answers) == sorted(os.path.join(folder, name) for name in expected)  # notes.txt: not an image name, as in bulk
    for uri, answer in answers.items():
        row = bulk_rows.loc[uri]
        if row.status == "ok":
            assert answer["status"] == "ok" and len(answer["captions"]) == 1, uri
            assert answer["captions"][0]["caption"] == row.caption, uri
            assert answer["captions"][0]["score"] == pytest.approx(row.score, abs=1e-4), uri
        else:
            assert (answer["status"], answer["error"]) == ("error", row.error), uri
    reasons = {answer["error"] for answer in answers.values() if answer["status"] == "error"}
    assert reasons == {"empty", "truncated", "not_an_image", "too_large"}
    lines = err.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("error: ") for line in lines)
    assert all(any(name in line for line in lines) for name in ("zero.jpg", "truncated.jpg", "text.png", "bomb.png"))
    assert "Traceback" not in err


def test_text_lines_and_the_n_best(model, photos, bulk_rows, capsys):
    folder, expected = photos
    good = sorted(os.path.join(folder, name) for name, reason in expected.items() if reason is None)[:3]
    status, out, err = run_caption(capsys, *good, "--model", model)
    assert status == 0 and err == ""
    lines = [line.split("\t") for line in out.splitlines()]
    assert [(uri, text) for uri, _, text in lines] == [(uri, bulk_rows.loc[uri].caption) for uri in good]
    assert [score for _, score, _ in lines] == [caption.format_score(bulk_rows.loc[uri].score) for uri in good]
    status, out, _ = run_caption(capsys, *good, "--model", model, "--beams", "3")
    ranked = [line.split("\t") for line in out.splitlines()]
    assert status == 0 and len(ranked) == 3 * len(good)
    for number, uri in enumerate(good):
        mine = ranked[3 * number : 3 * number + 3]
        assert {row[0] for row in mine} == {uri}
        assert mine[0][2] == bulk_rows.loc[uri].caption  # the best of three is the one caption
        scores = [float(row[1]) for row in mine]
        assert scores == sorted(scores, reverse=True) and len({row[2] for row in mine}) == 3


def test_a_missing_model_is_one_error_line(photos, tmp_path, capsys):
    folder, _ = photos
    status, out, err = run_caption(capsys, folder, "--model", str(tmp_path / "no-model"))
    assert status == 2 and out == ""
    assert err.startswith("error: ") and "not a model directory" in err and len(err.strip().splitlines()) == 1


def test_s3_objects_and_prefixes_get_the_local_captions(model, photos, bulk_rows, s3_bucket, capsys):
    from captioning.store import storage

    folder, expected = photos
    good = sorted(name for name, reason in expected.items() if reason is None)[:2]
    for name in good:
        storage.write_bytes(f"{s3_bucket}/in/{os.path.basename(name)}", storage.read_bytes(os.path.join(folder, name)))
    status, out, err = run_caption(capsys, f"{s3_bucket}/in/", f"{s3_bucket}/in/missing.jpg", "--model", model, "--json")
    answers = {a["image"]: a for a in json.loads(out)["images"]}
    assert status == 1 and "missing.jpg: not found" in err
    for name in good:
        answer = answers[f"{s3_bucket}/in/{os.path.basename(name)}"]
        assert answer["captions"][0]["caption"] == bulk_rows.loc[os.path.join(folder, name)].caption
    assert answers[f"{s3_bucket}/in/missing.jpg"]["error"] == "unreadable"
