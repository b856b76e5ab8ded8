import json
import os
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

from captioning.store import storage
from captioning.pipeline import evaluate
from captioning.pipeline import train_decoder
from captioning.model.model_dir import read_info
from captioning.data.vocab import Vocabulary

from .conftest import SMALL_MODEL


def test_model_directory_describes_itself(pipeline):
    info = read_info(pipeline["model"])
    prepared_vocab = Vocabulary.from_json(storage.read_text(os.path.join(pipeline["prepared"], "vocab.json")))
    assert info.vocabulary == prepared_vocab
    assert info.decoder.vocab_size == prepared_vocab.size and info.decoder.architecture.units == 32
    assert info.decoder.max_length == json.loads(storage.read_text(os.path.join(pipeline["prepared"], "summary.json")))["max_length"]
    assert info.features["backbone"] == "resnet50" and info.features["weights"] == "random:seed=0" and info.decoder.feature_dim == 2048
    history = json.loads(storage.read_text(os.path.join(pipeline["model"], "history.json")))
    assert [h["epoch"] for h in history] == [1, 2] and all(h["val_loss"] > 0 for h in history)
    assert history[1]["loss"] < history[0]["loss"]
    assert Image.open(os.path.join(pipeline["model"], "loss.png")).format == "PNG"
    assert not any(name.endswith(".pkl") or name.endswith(".pickle") for _, _, files in os.walk(pipeline["model"]) for name in files)


def test_training_again_continues_from_the_last_epoch(spark, pipeline, tmp_path):
    model = str(tmp_path / "model")
    base = ["--captions", pipeline["prepared"], "--features", pipeline["features"], "--output", model, *SMALL_MODEL]
    assert train_decoder.main([*base, "--epochs", "1"], spark=spark) == 0
    first = json.loads(storage.read_text(os.path.join(model, "history.json")))
    assert train_decoder.main([*base, "--epochs", "3"], spark=spark) == 0
    history = json.loads(storage.read_text(os.path.join(model, "history.json")))
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[0] == first[0]  # epoch 1 was not trained again
    assert read_info(model).training["epochs_run"] == 3


def test_killed_training_resumes_from_its_checkpoint(spark, pipeline, tmp_path):
    model = str(tmp_path / "model")
    args = ["--captions", pipeline["prepared"], "--features", pipeline["features"], "--output", model, *SMALL_MODEL]
    process = subprocess.Popen([sys.executable, "-m", "captioning.pipeline.train_decoder", *args, "--epochs", "200", "--patience", "200"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    state_file = os.path.join(model, "checkpoints", "state.json")
    try:
        deadline = time.time() + 240
        while time.time() < deadline and process.poll() is None:
            if os.path.exists(state_file) and json.loads(open(state_file).read())["epoch"] >= 2:
                break
            time.sleep(0.5)
        assert process.poll() is None, "training ended before it could be killed"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    done = json.loads(open(state_file).read())["epoch"]
    assert not os.path.exists(os.path.join(model, "config.json"))  # no model until training completes
    assert train_decoder.main([*args, "--epochs", str(done + 1), "--patience", "200"], spark=spark) == 0
    history = json.loads(storage.read_text(os.path.join(model, "history.json")))
    assert [h["epoch"] for h in history] == list(range(1, done + 2))
    assert read_info(model).training["epochs_run"] == done + 1


def test_other_configuration_in_the_same_output_is_refused(spark, pipeline, capsys):
    args = ["--captions", pipeline["prepared"], "--features", pipeline["features"], "--output", pipeline["model"], *SMALL_MODEL, "--units", "48", "--epochs", "2"]
    assert train_decoder.main(args, spark=spark) == 2
    assert "different configuration" in capsys.readouterr().err


@pytest.fixture(scope="module")
def evaluation(spark, pipeline, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("evaluation"))
    assert evaluate.main(["--model", pipeline["model"], "--features", pipeline["features"], "--captions", pipeline["prepared"], "--output", out, "--search", "greedy"], spark=spark) == 0
    return out


def test_evaluation_scores_every_test_image_with_both_toolkits(evaluation, pipeline):
    metrics = json.loads(storage.read_text(os.path.join(evaluation, "metrics.json")))
    summary = json.loads(storage.read_text(os.path.join(pipeline["prepared"], "summary.json")))
    assert metrics["images"] == summary["splits"]["test"]["images"]
    for side in ("model", "blind"):
        assert set(metrics[side]["bleu_nltk"]) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4"}
        assert {"Bleu_4", "METEOR", "ROUGE_L", "CIDEr"} <= set(metrics[side]["coco"])
        assert all(0.0 <= v <= 10.0 for v in metrics[side]["bleu_nltk"].values())
    predictions = [json.loads(line) for line in storage.read_text(os.path.join(evaluation, "predictions.jsonl")).splitlines()]
    assert len(predictions) == metrics["images"] and all(len(p["references"]) == 5 for p in predictions)
    vocab = read_info(pipeline["model"]).vocabulary
    assert all(set(p["caption"].split()) <= set(vocab.words) for p in predictions)
    summary_md = storage.read_text(os.path.join(evaluation, "summary.md"))
    assert "| image |" in summary_md and "| blind |" in summary_md and isinstance(metrics["blind_caption"], str)


def test_evaluation_refuses_features_of_another_model(spark, pipeline, tmp_path, capsys):
    from captioning.store.feature_store import read_manifest, write_manifest
    import dataclasses
    import shutil

    other = str(tmp_path / "other")
    shutil.copytree(pipeline["features"], other)
    manifest = read_manifest(other)
    write_manifest(other, dataclasses.replace(manifest, encoder={**manifest.encoder, "backbone": "inceptionv3"}))
    assert evaluate.main(["--model", pipeline["model"], "--features", other, "--captions", pipeline["prepared"], "--output", str(tmp_path / "e")], spark=spark) == 2
    assert "inceptionv3" in capsys.readouterr().err


def test_evaluating_again_reuses_the_result(spark, evaluation, pipeline):
    before = {f.uri: f.version for f in storage.list_files(evaluation)}
    assert evaluate.main(["--model", pipeline["model"], "--features", pipeline["features"], "--captions", pipeline["prepared"], "--output", evaluation, "--search", "greedy"], spark=spark) == 0
    assert {f.uri: f.version for f in storage.list_files(evaluation)} == before
