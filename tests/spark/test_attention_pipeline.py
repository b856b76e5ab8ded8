"""The attention decoder through the pipeline: a spatial store, training (one process and
data-parallel), evaluation and bulk captioning, and the refusals of mismatched inputs."""
import json
import os

import pytest

from captioning.model.model_dir import read_info
from captioning.pipeline import caption_images, evaluate, extract_features, train_decoder
from captioning.store import storage
from captioning.store.feature_store import require_manifest

from .conftest import SMALL_MODEL

ATTENTION = [*SMALL_MODEL, "--decoder", "attention", "--attention-units", "16"]


@pytest.fixture(scope="module")
def spatial(spark, pipeline, tmp_path_factory):
    """A spatial store (MobileNetV3Small 7x7 grid projected to 16 channels) and an attention model trained on it."""
    work = tmp_path_factory.mktemp("attention")
    paths = {"features": str(work / "spatial"), "model": str(work / "model")}
    assert extract_features.main(["--input", pipeline["root"], "--output", paths["features"], "--backbone", "mobilenetv3small", "--weights", "none", "--spatial", "--channels", "16"], spark=spark) == 0
    args = ["--captions", pipeline["prepared"], "--features", paths["features"], "--output", paths["model"], *ATTENTION, "--epochs", "2"]
    assert train_decoder.main(args, spark=spark) == 0
    return paths


def test_spatial_store_and_attention_model_describe_themselves(spatial, pipeline):
    manifest = require_manifest(spatial["features"])
    assert manifest.feature_shape == (7, 7, 16) and manifest.encoder["projection"] == "random:seed=0"
    assert manifest.history[-1]["vector_bytes"] == 7 * 7 * 16 * 2
    info = read_info(spatial["model"])
    assert info.decoder_kind == "attention" and info.decoder.feature_shape == (7, 7, 16)
    assert json.loads(storage.read_text(os.path.join(spatial["model"], "config.json")))["format"] == "captioning.model/3"
    assert info.identity.startswith("mobilenetv3small-attention-")
    history = json.loads(storage.read_text(os.path.join(spatial["model"], "history.json")))
    assert len(history) == 2 and history[1]["loss"] < history[0]["loss"]


def test_evaluation_and_bulk_captioning_run_the_attention_model(spark, spatial, pipeline, tmp_path):
    out = str(tmp_path / "evaluation")
    assert evaluate.main(["--model", spatial["model"], "--features", spatial["features"], "--captions", pipeline["prepared"], "--output", out, "--no-coco"], spark=spark) == 0
    metrics = json.loads(storage.read_text(os.path.join(out, "metrics.json")))
    assert metrics["decoder"] == "attention" and metrics["search"]["no_repeat_ngram"] == 3
    assert metrics["images"] > 0 and 0.0 <= metrics["model"]["bleu_nltk"]["BLEU-1"] <= 1.0
    assert "BLEU-4 (nltk)" in storage.read_text(os.path.join(out, "summary.md"))
    captions = str(tmp_path / "captions")
    images = os.path.join(pipeline["root"], "Flicker8k_Dataset")
    assert caption_images.main(["--input", images, "--model", spatial["model"], "--output", captions, "--gallery-cards", "0"], spark=spark) == 0
    rows = spark.read.parquet(os.path.join(captions, "captions")).collect()
    assert len(rows) == len(os.listdir(images)) and {r["status"] for r in rows} == {"ok"}
    assert {r["model_id"] for r in rows} == {read_info(spatial["model"]).identity}


def test_each_decoder_refuses_the_others_features(spark, spatial, pipeline, tmp_path, capsys):
    base = ["--captions", pipeline["prepared"], "--output", str(tmp_path / "m"), *SMALL_MODEL, "--epochs", "1"]
    assert train_decoder.main([*base, "--features", pipeline["features"], "--decoder", "attention"], spark=spark) == 2
    assert "needs spatial features" in capsys.readouterr().err
    assert train_decoder.main([*base, "--features", spatial["features"]], spark=spark) == 2
    assert "merge decoder takes pooled vectors, not a 7x7x16 grid" in capsys.readouterr().err
    assert not os.path.exists(str(tmp_path / "m"))  # refused before any work
    out = str(tmp_path / "e")
    assert evaluate.main(["--model", spatial["model"], "--features", pipeline["features"], "--captions", pipeline["prepared"], "--output", out], spark=spark) == 2
    assert "takes a 7x7x16 spatial grid" in capsys.readouterr().err


def test_data_parallel_attention_training_keeps_the_workers_in_step(spark, spatial, pipeline, tmp_path):
    out = str(tmp_path / "model")
    args = ["--captions", pipeline["prepared"], "--features", spatial["features"], "--output", out, *ATTENTION, "--epochs", "1", "--workers", "2"]
    assert train_decoder.main(args, spark=spark) == 0
    training = read_info(out).training
    workers = training["distributed"]["ranks"]
    assert [w["rank"] for w in workers] == [0, 1]
    assert workers[0]["weights_sha256"] == workers[1]["weights_sha256"]  # the regulariser's gradients were averaged too
    assert training["best_dev_loss"] > 0
