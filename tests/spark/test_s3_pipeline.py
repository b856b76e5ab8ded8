"""Every stage bucket to bucket through Spark's own S3 connector, against an S3 API over HTTP;
and the two image-reading jobs through a flaky endpoint (throttling, errors, dropped
connections) still answer every object exactly once."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from captioning.pipeline import caption_images, evaluate, extract_features, prepare_captions, train_decoder
from captioning.store import storage
from captioning.store.feature_store import read_manifest
from captioning.store.local_s3 import upload_folder

from ..s3_faults import FaultyS3Proxy
from .conftest import SMALL_MODEL

# Object names as users' buckets hold them: spaces, '+', '%', '#', '?', non-ASCII, nesting.
AWKWARD_NAMES = ["with space.jpg", "plus+sign.jpg", "percent%20.jpg", "hash#1.jpg", "question?.jpg", "café ü.jpg", "deep/er/nested.JPG"]


def read_rows(uri: str):
    """Rows of a Parquet folder on S3, read without Spark."""
    files = [f.uri for f in storage.list_files(uri) if f.uri.endswith(".parquet")]
    tables = []
    for file in files:
        fs, path = storage.arrow_filesystem(file)
        with fs.open_input_file(path) as handle:
            tables.append(pq.read_table(handle).to_pandas())
    import pandas as pd

    return pd.concat(tables, ignore_index=True)


@pytest.fixture(scope="module")
def bucket_run(spark, sample_dataset, s3_endpoint, tmp_path_factory):
    """The sample dataset uploaded to a bucket, and every stage run on it, bucket to bucket."""
    import boto3

    root, summary = sample_dataset
    boto3.client("s3").create_bucket(Bucket="pipeline-data")
    boto3.client("s3").create_bucket(Bucket="pipeline-results")
    dataset, out = "s3://pipeline-data/flickr8k", "s3://pipeline-results/run"
    upload_folder(root, dataset)
    images = sorted(os.listdir(summary.images_uri))
    photos = "s3://pipeline-data/photos/2026"
    for name, source in zip(AWKWARD_NAMES, images):
        storage.write_bytes(f"{photos}/{name}", storage.read_bytes(os.path.join(summary.images_uri, source)))
    storage.s3_client().put_object(Bucket="pipeline-data", Key="photos/2026/empty-folder/", Body=b"")  # a console's folder marker
    storage.write_text(f"{photos}/notes.txt", "not a picture")
    paths = {name: f"{out}/{name}" for name in ("prepared", "features", "model", "evaluation", "captions")}
    assert prepare_captions.main(["--dataset", dataset, "--output", paths["prepared"], "--min-count", "3"], spark=spark) == 0
    assert extract_features.main(["--input", dataset, "--output", paths["features"], "--backbone", "mobilenetv3small", "--weights", "none", "--batch-size", "16"], spark=spark) == 0
    assert train_decoder.main(["--captions", paths["prepared"], "--features", paths["features"], "--output", paths["model"], *SMALL_MODEL, "--epochs", "1"], spark=spark) == 0
    assert evaluate.main(["--model", paths["model"], "--features", paths["features"], "--captions", paths["prepared"], "--output", paths["evaluation"], "--search", "greedy"], spark=spark) == 0
    assert caption_images.main(["--input", f"{photos}/", "--model", paths["model"], "--output", paths["captions"], "--search", "greedy", "--batch-size", "4"], spark=spark) == 0
    return {"dataset": dataset, "photos": photos, "summary": summary, **paths}


def test_every_stage_wrote_its_output_to_the_bucket(bucket_run):
    prepared = json.loads(storage.read_text(f"{bucket_run['prepared']}/summary.json"))
    assert prepared["captions"]["written"] == len(read_rows(f"{bucket_run['prepared']}/captions")) > 0
    manifest = read_manifest(bucket_run["features"])
    assert manifest.rows == bucket_run["summary"].image_files and manifest.parts
    config = json.loads(storage.read_text(f"{bucket_run['model']}/config.json"))
    assert config["training"]["epochs_run"] == 1 and storage.exists(f"{bucket_run['model']}/model.weights.h5")
    assert len(read_rows(f"{bucket_run['model']}/data/train")) == config["training"]["train_rows"]
    metrics = json.loads(storage.read_text(f"{bucket_run['evaluation']}/metrics.json"))
    assert metrics["images"] > 0 and "CIDEr" in metrics["model"]["coco"]


def test_every_object_of_the_bucket_got_one_row_whatever_its_name(bucket_run):
    rows = read_rows(f"{bucket_run['captions']}/captions").set_index("uri")
    photos = bucket_run["photos"]
    expected = {f"{photos}/{name}" for name in AWKWARD_NAMES} | {f"{photos}/notes.txt"}
    assert set(rows.index) == expected and not rows.index.duplicated().any()
    assert rows.loc[f"{photos}/notes.txt", "status"] == "skipped"
    assert (rows.drop(f"{photos}/notes.txt").status == "ok").all()
    assert storage.exists(f"{bucket_run['captions']}/gallery.html")
    summary = next(iter(storage.list_files(f"{bucket_run['captions']}/runs")))
    assert json.loads(storage.read_text(summary.uri))["counts"] == {"ok": len(AWKWARD_NAMES), "skipped": 1}


def test_an_output_in_a_missing_bucket_is_one_clear_line_before_any_work(bucket_run, spark, capsys):
    code = caption_images.main(["--input", f"{bucket_run['photos']}/", "--model", bucket_run["model"], "--output", "s3://no-such-bucket-here/captions"], spark=spark)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and errors[0].startswith("error: s3://no-such-bucket-here/captions: cannot write the output here")
    assert "Traceback" not in err and "Exception" not in err


def run_job(module: str, args: list[str], endpoint: str) -> dict:
    environment = {**os.environ, "AWS_ENDPOINT_URL": endpoint}
    done = subprocess.run([sys.executable, "-m", module, *args], env=environment, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout)


def test_jobs_through_a_flaky_endpoint_answer_every_object_once(bucket_run, s3_endpoint):
    photos, model = bucket_run["photos"], bucket_run["model"]
    out = "s3://pipeline-results/flaky"
    with FaultyS3Proxy(s3_endpoint, share=0.08, seed=7) as proxy:
        features = run_job("captioning.pipeline.extract_features", ["--input", f"{photos}/", "--output", f"{out}/features", "--backbone", "mobilenetv3small", "--weights", "none", "--batch-size", "4", "--images-per-partition", "2"], proxy.url)
        captions = run_job("captioning.pipeline.caption_images", ["--input", f"{photos}/", "--model", model, "--output", f"{out}/captions", "--search", "greedy", "--batch-size", "4", "--images-per-partition", "2"], proxy.url)
    assert sum(proxy.counts[kind] for kind in ("503", "500", "drop")) >= 10, proxy.counts
    assert features["ok"] == len(AWKWARD_NAMES) and read_manifest(f"{out}/features").rows == len(AWKWARD_NAMES)
    rows = read_rows(f"{out}/captions/captions")
    assert captions["new"] == len(rows) == len(AWKWARD_NAMES) + 1 and not rows.uri.duplicated().any()
    assert set(rows[rows.status == "ok"].uri) == {f"{photos}/{name}" for name in AWKWARD_NAMES}
