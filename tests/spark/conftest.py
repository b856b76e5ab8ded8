"""Shared inputs of the Spark tests; their local Spark session (``spark``) is in tests/conftest.py."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def sample_dataset(tmp_path_factory):
    """A small sample dataset with the real files' quirks (shared, read-only)."""
    from captioning.data.sample.config import SampleConfig
    from captioning.data.sample.generate import generate_sample_dataset

    root = tmp_path_factory.mktemp("sample") / "flickr"
    summary = generate_sample_dataset(str(root), SampleConfig(num_images=80, seed=3, quirks=True, workers=1))
    return str(root), summary


@pytest.fixture(scope="session")
def pipeline(spark, sample_dataset, tmp_path_factory):
    """Prepared captions, a feature store and a briefly trained small model (shared)."""
    from captioning.pipeline import extract_features
    from captioning.pipeline import prepare_captions
    from captioning.pipeline import train_decoder

    root, _ = sample_dataset
    work = tmp_path_factory.mktemp("pipeline")
    paths = {name: str(work / name) for name in ("prepared", "features", "model")}
    assert prepare_captions.main(["--dataset", root, "--output", paths["prepared"], "--min-count", "3"], spark=spark) == 0
    assert extract_features.main(["--input", root, "--output", paths["features"], "--backbone", "resnet50", "--weights", "none", "--batch-size", "16"], spark=spark) == 0
    assert train_decoder.main(["--captions", paths["prepared"], "--features", paths["features"], "--output", paths["model"], *SMALL_MODEL, "--epochs", "2"], spark=spark) == 0
    return {"root": root, **paths}


SMALL_MODEL = ["--units", "32", "--hidden-units", "64", "--embedding-dim", "16", "--batch-size", "32"]
