"""Decoder training with Keras: checkpoints every epoch, resume, early stopping on dev loss.

Everything that lets a killed run continue lives under ``<output>/checkpoints/``:

    epoch-NNNN.keras     the whole model after epoch NNNN, optimizer state included
    best.weights.h5      weights of the epoch with the lowest dev loss so far
    state.json           last finished epoch, its checkpoint, best dev loss, patience
                         counter, history, and the run fingerprint

``state.json`` is rewritten after the checkpoint it names is complete, so it always points
at a whole checkpoint. Starting the same command again reads it and continues with the
next epoch (same optimizer state, same early-stopping counters); a different
configuration or different data is refused rather than silently mixed.
"""
from __future__ import annotations

import io
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

from . import storage

LOG = logging.getLogger("training")
STATE = "state.json"


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 1e-3  # Adam's default, as the original
    patience: int = 3  # epochs without a better dev loss before stopping
    shuffle_buffer: int = 8192  # captions mixed in memory on top of Petastorm's row-group shuffle
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _download(uri: str, suffix: str) -> str:
    handle, local = tempfile.mkstemp(suffix=suffix)
    with os.fdopen(handle, "wb") as out:
        out.write(storage.read_bytes(uri))
    return local


def _upload_model(model, uri: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, os.path.basename(uri))
        if local.endswith(".keras"):
            model.save(local)
        else:
            model.save_weights(local)
        with open(local, "rb") as handle:
            storage.write_bytes(uri, handle.read())


def read_state(checkpoint_uri: str) -> dict | None:
    uri = storage.join(checkpoint_uri, STATE)
    return json.loads(storage.read_text(uri)) if storage.exists(uri) else None


def restore(checkpoint_uri: str, state: dict):
    """The compiled model (optimizer state included) saved after ``state['epoch']``."""
    import keras

    local = _download(storage.join(checkpoint_uri, state["checkpoint"]), ".keras")
    try:
        return keras.models.load_model(local)
    finally:
        os.unlink(local)


def loss_curve_png(history: list[dict]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4), dpi=100)
    epochs = [h["epoch"] for h in history]
    axis.plot(epochs, [h["loss"] for h in history], marker="o", label="train loss")
    if any(h.get("val_loss") is not None for h in history):
        axis.plot(epochs, [h.get("val_loss") for h in history], marker="o", label="dev loss")
    axis.set_xlabel("epoch")
    axis.set_ylabel("cross-entropy per word")
    axis.grid(alpha=0.3)
    axis.legend()
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def make_epoch_callback(checkpoint_uri: str, output_uri: str, state: dict, config: TrainConfig, is_chief: bool, on_epoch: Callable[[dict], None] | None = None):
    """Keras callback: checkpoint, best weights, history/plot, early stopping."""
    import keras

    class EpochEnd(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.time()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            record = {"epoch": epoch + 1, "seconds": round(time.time() - self.started, 2)}
            record.update({k: float(v) for k, v in logs.items()})
            state["history"].append(record)
            val_loss = record.get("val_loss")
            if val_loss is not None and (state["best_val_loss"] is None or val_loss < state["best_val_loss"]):
                state.update(best_val_loss=val_loss, best_epoch=epoch + 1, wait=0)
                if is_chief:
                    _upload_model(self.model, storage.join(checkpoint_uri, "best.weights.h5"))
            else:
                state["wait"] += 1
            if state["wait"] >= config.patience:
                state["stopped_early"] = True
                self.model.stop_training = True
            previous = state.get("checkpoint")
            state.update(epoch=epoch + 1, checkpoint=f"epoch-{epoch + 1:04d}.keras")
            if is_chief:
                _upload_model(self.model, storage.join(checkpoint_uri, state["checkpoint"]))
                storage.write_text(storage.join(checkpoint_uri, STATE), json.dumps(state, indent=1))
                if previous and previous != state["checkpoint"]:
                    storage.delete(storage.join(checkpoint_uri, previous))
                storage.write_text(storage.join(output_uri, "history.json"), json.dumps(state["history"], indent=1))
                storage.write_bytes(storage.join(output_uri, "loss.png"), loss_curve_png(state["history"]))
            LOG.info(
                "epoch %d/%d: loss %.4f acc %.3f dev loss %s (%.1fs)%s",
                epoch + 1, config.epochs, record.get("loss", float("nan")), record.get("accuracy", float("nan")),
                f"{val_loss:.4f}" if val_loss is not None else "-", record["seconds"],
                " - stopping early" if state.get("stopped_early") else "",
            )
            if on_epoch:
                on_epoch(record)

    return EpochEnd()


def new_state(fingerprint: str) -> dict:
    return {"fingerprint": fingerprint, "epoch": 0, "checkpoint": None, "best_val_loss": None, "best_epoch": None, "wait": 0, "stopped_early": False, "history": []}
