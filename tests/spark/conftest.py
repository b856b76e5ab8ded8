"""One local Spark session shared by every Spark test (starting a JVM costs seconds).

The session starts after the S3 test server, so the Python workers Spark launches inherit
the AWS_* variables that point them at it.
"""
from __future__ import annotations

import os
import sys

import pytest


@pytest.fixture(scope="session")
def spark(s3_endpoint):
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from captioning.spark_session import build_session

    session = build_session("captioning-tests", master="local[2]", extra_conf={"spark.sql.shuffle.partitions": "4", "spark.ui.enabled": "false"})
    yield session
    session.stop()


@pytest.fixture(scope="session")
def sample_dataset(tmp_path_factory):
    """A small sample dataset with the real files' quirks (shared, read-only)."""
    from captioning.sample_data import SampleConfig, generate_sample_dataset

    root = tmp_path_factory.mktemp("sample") / "flickr"
    summary = generate_sample_dataset(str(root), SampleConfig(num_images=80, seed=3, quirks=True, workers=1))
    return str(root), summary


@pytest.fixture(scope="session")
def pipeline(spark, sample_dataset, tmp_path_factory):
    """Prepared captions, a feature store and a briefly trained small model (shared)."""
    from captioning.jobs import extract_features, prepare_captions, train_decoder

    root, _ = sample_dataset
    work = tmp_path_factory.mktemp("pipeline")
    paths = {name: str(work / name) for name in ("prepared", "features", "model")}
    assert prepare_captions.main(["--dataset", root, "--output", paths["prepared"], "--min-count", "3"], spark=spark) == 0
    assert extract_features.main(["--input", root, "--output", paths["features"], "--backbone", "resnet50", "--weights", "none", "--batch-size", "16"], spark=spark) == 0
    assert train_decoder.main(["--captions", paths["prepared"], "--features", paths["features"], "--output", paths["model"], *SMALL_MODEL, "--epochs", "2"], spark=spark) == 0
    return {"root": root, **paths}


SMALL_MODEL = ["--units", "32", "--hidden-units", "64", "--embedding-dim", "16", "--batch-size", "32"]
