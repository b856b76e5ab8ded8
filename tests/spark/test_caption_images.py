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
from captioning.store.lease import iso
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


def start_run(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "captioning.pipeline.caption_images", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_until_tasks_have_written(process: subprocess.Popen, output: str) -> None:
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        if glob.glob(os.path.join(output, "captions", "*", "*", "_temporary", "**", "*.parquet"), recursive=True):
            return  # some tasks have written, the job has not committed
        time.sleep(0.2)
    raise AssertionError(f"the run ended (or never wrote) before it could be stopped: {process.poll()} {process.stderr.read()[-2000:] if process.poll() is not None else ''}")


def test_a_killed_run_leaves_nothing_visible_and_the_next_run_takes_over_its_lease(spark, pipeline, sample_dataset, tmp_path):
    _, summary = sample_dataset
    folder, output = str(tmp_path / "in"), str(tmp_path / "out")
    expected = make_image_folder(folder, summary.images_uri, good=40, bad=False, nested=False)
    args = ["--input", folder, "--model", pipeline["model"], "--output", output, "--search", "greedy", "--batch-size", "4", "--images-per-partition", "2", "--lease-seconds", "4"]
    process = start_run(args)
    try:
        wait_until_tasks_have_written(process, output)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # as a lost instance: no clean-up runs
        process.wait()
    assert committed_rows(output).empty  # nothing of the killed run is visible
    assert json.loads(storage.read_text(os.path.join(output, "_lease.json")))["holder"]  # its lease is left behind
    assert caption_images.main(args + ["--lease-wait-seconds", "60"], spark=spark) == 0  # waits the lease out, then runs
    rows = committed_rows(output)
    assert sorted(rows.uri) == sorted(os.path.join(folder, n) for n in expected)
    assert not rows.uri.duplicated().any()
    assert not glob.glob(os.path.join(output, "**", "_temporary"), recursive=True)  # the killed run's debris is gone
    assert not os.path.exists(os.path.join(output, "_lease.json"))


def test_sigterm_stops_a_run_and_releases_its_lease(pipeline, sample_dataset, tmp_path):
    _, summary = sample_dataset
    folder, output = str(tmp_path / "in"), str(tmp_path / "out")
    make_image_folder(folder, summary.images_uri, good=40, bad=False, nested=False)
    process = start_run(["--input", folder, "--model", pipeline["model"], "--output", output, "--search", "greedy", "--batch-size", "4", "--images-per-partition", "2"])
    try:
        wait_until_tasks_have_written(process, output)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=300) != 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert not os.path.exists(os.path.join(output, "_lease.json"))
    assert committed_rows(output).empty


def test_of_two_runs_started_together_exactly_one_proceeds(pipeline, bucket_folder, tmp_path):
    folder, expected = bucket_folder
    output = str(tmp_path / "out")
    args = ["--input", folder, "--model", pipeline["model"], "--output", output, *FAST, "--lease-wait-seconds", "0"]
    runs = [start_run(args) for _ in range(2)]
    codes = [run.wait(timeout=400) for run in runs]
    errors = [run.stderr.read() for run in runs]
    assert sorted(codes) == [0, 2], errors
    refused = errors[codes.index(2)]
    assert "holds this output" in refused and "Traceback" not in refused
    rows = committed_rows(output)
    everything = [*(os.path.join(folder, name) for name in expected), os.path.join(folder, "notes.txt")]
    assert sorted(rows.uri) == sorted(everything) and not rows.uri.duplicated().any()


def test_a_run_is_refused_while_another_holds_the_output(spark, pipeline, bucket_folder, tmp_path, capsys):
    folder, _ = bucket_folder
    output = str(tmp_path / "out")
    lease = {"holder": "other", "acquired_at": iso(time.time()), "renewed_at": iso(time.time()), "expires_at": iso(time.time() + 600), "period_seconds": 600}
    storage.write_text(os.path.join(output, "_lease.json"), json.dumps(lease))
    assert caption_images.main(["--input", folder, "--model", pipeline["model"], "--output", output, *FAST, "--lease-wait-seconds", "0"], spark=spark) == 2
    assert "run other holds this output" in capsys.readouterr().err


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
