"""``train-decoder --workers 2`` on the two-worker cluster: data-parallel training that
converges like single-worker training, writes from the chief only, and resumes.

One training in two runs: 2 epochs, then the same command with 10 epochs (a run stopped
after epoch 2 and started again), compared with the local single-worker reference model
trained for the same 10 epochs on the same inputs.
"""
import json
import os

import pytest

from captioning.store import storage

from .conftest import EPOCHS, SMALL_MODEL

FIRST_EPOCHS = 2
CHECKPOINT_FILES = ["checkpoints/best.weights.h5", "checkpoints/state.json", "history.json", "loss.png"]

# "Comparable" dev loss, relative to the single-worker run: 10%. Data-parallel training
# differs from it only in what is equivalent to another random draw: which captions fall
# into which step (each worker reads its own row groups), and each step's loss being the
# mean of the two workers' half-batch means instead of one mean over the whole batch. On
# this sample, the final dev loss of single-worker runs with seeds 0, 1, 2 spans 1.83-1.86
# and that of 2-worker runs 1.80-1.90 (mean 1.85 for both); the largest same-seed gap was
# 0.08 (4%). 10% is about twice that; learning goes from ~4.0 to ~1.85 in these 10 epochs,
# so a run whose workers do not learn together (e.g. unaveraged or unapplied gradients)
# lands far outside. That the workers stay in step is checked exactly: identical weights.
DEV_LOSS_TOLERANCE = 0.10


@pytest.fixture(scope="module")
def two_runs(submit, reference, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("distributed") / "model")
    args = ["--captions", reference["prepared"], "--features", reference["features"], "--output", out, *SMALL_MODEL, "--workers", "2"]
    first = submit("train_decoder.py", [*args, "--epochs", str(FIRST_EPOCHS)])
    first_history = json.loads(storage.read_text(os.path.join(out, "history.json")))
    second = submit("train_decoder.py", [*args, "--epochs", str(EPOCHS)])
    return {"out": out, "first": first, "second": second, "first_history": first_history}


def ranks(submitted) -> list[dict]:
    return submitted.json()["distributed"]["ranks"]


def test_two_workers_train_in_step_on_both_executors(two_runs):
    for run in ("first", "second"):
        submitted = two_runs[run]
        described = submitted.json()["distributed"]
        assert described["workers"] == 2 and described["per_worker_batch"] == 16
        workers = ranks(submitted)
        assert [w["rank"] for w in workers] == [0, 1] and [w["chief"] for w in workers] == [True, False]
        assert len({w["executor"] for w in workers}) == 2  # one task in each executor
        assert all(count > 0 for count in submitted.tasks_by_worker.values()), submitted.tasks_by_worker
        assert workers[0]["weights_sha256"] == workers[1]["weights_sha256"]  # replicas bit-identical
        assert workers[0]["optimizer_steps"] == workers[1]["optimizer_steps"]


def test_only_the_chief_writes(two_runs):
    first, second = ranks(two_runs["first"]), ranks(two_runs["second"])
    assert first[1]["wrote"] == [] and second[1]["wrote"] == []
    assert first[0]["wrote"] == sorted(CHECKPOINT_FILES + [f"checkpoints/epoch-{e:04d}.keras" for e in range(1, FIRST_EPOCHS + 1)])
    assert second[0]["wrote"] == sorted(CHECKPOINT_FILES + [f"checkpoints/epoch-{e:04d}.keras" for e in range(FIRST_EPOCHS + 1, EPOCHS + 1)])
    leftovers = sorted(os.listdir(os.path.join(two_runs["out"], "checkpoints")))
    assert leftovers == ["best.weights.h5", f"epoch-{EPOCHS:04d}.keras", "state.json"]


def test_the_second_run_resumes_every_worker_from_the_chiefs_checkpoint(two_runs):
    first, second = ranks(two_runs["first"]), ranks(two_runs["second"])
    assert [w["restored_from"] for w in first] == [None, None]
    assert [w["restored_from"] for w in second] == [f"epoch-{FIRST_EPOCHS:04d}.keras"] * 2
    steps = two_runs["second"].json()["distributed"]["steps_per_epoch"]
    assert first[0]["optimizer_steps"] == FIRST_EPOCHS * steps
    assert second[0]["optimizer_steps"] == EPOCHS * steps  # the optimizer state came back too
    history = json.loads(storage.read_text(os.path.join(two_runs["out"], "history.json")))
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))
    assert history[:FIRST_EPOCHS] == two_runs["first_history"]  # the first epochs were not trained again
    assert two_runs["second"].json()["epochs_run"] == EPOCHS


def test_dev_loss_is_comparable_to_single_worker_training(two_runs, reference):
    single = json.loads(storage.read_text(os.path.join(reference["model"], "config.json")))["training"]
    single_history = json.loads(storage.read_text(os.path.join(reference["model"], "history.json")))
    two = two_runs["second"].json()
    history = json.loads(storage.read_text(os.path.join(two_runs["out"], "history.json")))
    assert history[-1]["val_loss"] < history[0]["val_loss"] - 1.0  # it learned
    gap = abs(history[-1]["val_loss"] - single_history[-1]["val_loss"])
    assert gap <= DEV_LOSS_TOLERANCE * single_history[-1]["val_loss"], (history[-1]["val_loss"], single_history[-1]["val_loss"])
    assert abs(two["best_dev_loss"] - single["best_dev_loss"]) <= DEV_LOSS_TOLERANCE * single["best_dev_loss"]
    assert two["model_id"] == single["model_id"]  # same data and configuration: the same model identity
