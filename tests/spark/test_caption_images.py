import glob
import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pyarrow.parquet as pq
import pytest

from captioning.store import storage
from captioning.pipeline import caption_images

from .images_kit import make_image_folder

FAST = ["--search", "greedy", "--batch-size", "8", "--images-per-partition", "6"]


def committed_rows(output: str) -> pd.DataFrame:
    files = [f for f in glob.glob(os.path.join(output, "captions", "run_date=*", "run_id=*", "*.parquet"))]
    frames = []
    for path in files:
        frame = pq.read_table(path).to_pandas()
        frame["run_id"] = path.split("run_id=")[1].split(os.sep)[0]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["uri", "run_id"])


@pytest.fixture(scope="module")
def bucket_folder(sample_dataset, tmp_path_factory):
    _, summary = sample_dataset
    folder = str(tmp_path_factory.mktemp("bucket") / "photos")
    expected = make_image_folder(folder, summary.images_uri, good=9)
    return folder, expected


@pytest.fixture(scope="module")
def first_run(spark, pipeline, bucket_folder, tmp_path_factory):
    folder, _ = bucket_folder
    output = str(tmp_path_factory.mktemp("captions") / "out")
    assert caption_images.main(["--input", folder, "--model", pipeline["model"], "--output", output, *FAST], spark=spark) == 0
    return output


def test_every_object_gets_exactly_one_row_with_a_reason(first_run, bucket_folder, pipeline):
    folder, expected = bucket_folder
    rows = committed_rows(first_run).set_index("uri")
    uris = {os.path.join(folder, name): reason for name, reason in expected.items()}
    assert sorted(rows.index) == sorted([*uris, os.path.join(folder, "notes.txt")])
    for uri, reason in uris.items():
        row = rows.loc[uri]
        if reason is None:
            # a briefly trained model may answer with an empty caption (endseq first): still an answer
            assert row.status == "ok" and isinstance(row.caption, str) and row.score < 0 and row.error is None, uri
        else:
            assert (row.status, row.error) == ("error", reason) and row.caption is None, uri
    note = rows.loc[os.path.join(folder, "notes.txt")]
    assert (note.status, note.error) == ("skipped", "not_an_image_name")
    from captioning.model.model_dir import read_info

    assert set(rows.model_id) == {read_info(pipeline["model"]).identity}


def test_run_summary_export_and_gallery(first_run):
    summaries = glob.glob(os.path.join(first_run, "runs", "*.json"))
    assert len(summaries) == 1
    summary = json.loads(open(summaries[0]).read())
    rows = committed_rows(first_run)
    assert summary["counts"] == rows.status.value_counts().to_dict() and summary["rows"] == len(rows)
    exported = [json.loads(line) for path in glob.glob(os.path.join(first_run, "exports", "run_id=*", "*.json")) for line in open(path)]
    assert sorted(r["uri"] for r in exported) == sorted(rows.uri)
    page = open(os.path.join(first_run, "gallery.html")).read()
    for caption in rows.caption.dropna():
        assert caption in page
    assert "truncated" in page and page.count("data:image/jpeg;base64,") >= (rows.status == "ok").sum()


def test_rerun_with_nothing_new_writes_nothing(spark, first_run, bucket_folder, pipeline):
    folder, _ = bucket_folder
    before = sorted(f.uri for f in storage.list_files(first_run))
    assert caption_images.main(["--input", folder, "--model", pipeline["model"], "--output", first_run, *FAST], spark=spark) == 0
    assert sorted(f.uri for f in storage.list_files(first_run)) == before


def test_new_and_changed_objects_only_are_captioned(spark, pipeline, sample_dataset, tmp_path):
    _, summary = sample_dataset
    folder, output = str(tmp_path / "in"), str(tmp_path / "out")
    make_image_folder(folder, summary.images_uri, good=4, bad=False, nested=False)
    args = ["--input", folder, "--model", pipeline["model"], "--output", output, *FAST]
    assert caption_images.main(args, spark=spark) == 0
    names = sorted(os.listdir(folder))
    extra = sorted(os.listdir(summary.images_uri))[-1]
    with open(os.path.join(summary.images_uri, extra), "rb") as src:
        data = src.read()
    for target in (os.path.join(folder, "new.jpg"), os.path.join(folder, names[0])):
        with open(target, "wb") as out:
            out.write(data)
    assert caption_images.main(args, spark=spark) == 0
    rows = committed_rows(output)
    second = rows[rows.run_id != rows.run_id.min()]
    assert sorted(second.uri) == sorted([os.path.join(folder, "new.jpg"), os.path.join(folder, names[0])])
    assert caption_images.main([*args, "--recaption"], spark=spark) == 0  # same model: nothing to redo
    assert len(committed_rows(output)) == len(rows)


def test_killed_run_leaves_nothing_visible_and_next_run_completes(spark, pipeline, sample_dataset, tmp_path):
    _, summary = sample_dataset
    folder, output = str(tmp_path / "in"), str(tmp_path / "out")
    expected = make_image_folder(folder, summary.images_uri, good=40, bad=False, nested=False)
    args = ["--input", folder, "--model", pipeline["model"], "--output", output, "--search", "greedy", "--batch-size", "4", "--images-per-partition", "2"]
    process = subprocess.Popen([sys.executable, "-m", "captioning.pipeline.caption_images", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and process.poll() is None:
            if glob.glob(os.path.join(output, "captions", "*", "*", "_temporary", "**", "*.parquet"), recursive=True):
                break  # some tasks have written, the job has not committed
            time.sleep(0.2)
        assert process.poll() is None, "the run finished before it could be killed"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert committed_rows(output).empty  # nothing of the killed run is visible
    assert caption_images.main(args + ["--lock-timeout-hours", "0"], spark=spark) == 0
    rows = committed_rows(output)
    assert sorted(rows.uri) == sorted(os.path.join(folder, n) for n in expected)
    assert not rows.uri.duplicated().any()


def test_overlapping_run_is_refused_while_the_lock_is_fresh(spark, pipeline, bucket_folder, tmp_path, capsys):
    folder, _ = bucket_folder
    output = str(tmp_path / "out")
    storage.write_text(os.path.join(output, "_lock.json"), json.dumps({"run_id": "other", "since": time.time()}))
    assert caption_images.main(["--input", folder, "--model", pipeline["model"], "--output", output, *FAST], spark=spark) == 2
    assert "run other has been running" in capsys.readouterr().err


def test_captions_objects_listed_from_s3(spark, pipeline, sample_dataset, s3_bucket, tmp_path):
    _, summary = sample_dataset
    names = sorted(os.listdir(summary.images_uri))[:3]
    for i, name in enumerate(names):
        storage.write_bytes(f"{s3_bucket}/in/{'deep/' if i else ''}{name.upper()}", storage.read_bytes(os.path.join(summary.images_uri, name)))
    storage.write_text(f"{s3_bucket}/in/manifest.csv", "a,b\n")
    output = str(tmp_path / "out")
    assert caption_images.main(["--input", f"{s3_bucket}/in/", "--model", pipeline["model"], "--output", output, *FAST], spark=spark) == 0
    rows = committed_rows(output).set_index("uri")
    listed = {f.uri: f.version for f in storage.list_files(f"{s3_bucket}/in")}
    assert sorted(rows.index) == sorted(listed)
    assert all(rows.loc[uri, "version"] == etag for uri, etag in listed.items())
    assert rows.loc[f"{s3_bucket}/in/manifest.csv", "status"] == "skipped"
    assert (rows.status == "ok").sum() == 3
