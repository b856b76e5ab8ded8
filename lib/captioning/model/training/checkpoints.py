"""Checkpoints of a decoder training run: every epoch, resumable, with early stopping.

Everything that lets a killed run continue lives in the model directory's
``checkpoints/`` (names in :mod:`captioning.model.model_dir`): the whole model after the
last finished epoch (optimizer state included), the best epoch's weights, and
``state.json``: last finished epoch, its checkpoint, best dev loss, patience counter,
history and the run fingerprint.

``state.json`` is rewritten after the checkpoint it names is complete, so it always points
at a whole checkpoint. Starting the same command again reads it and continues with the
next epoch (same optimizer state, same early-stopping counters); a different
configuration or different data is refused rather than silently mixed.
"""
from __future__ import annotations

import io
import json
import logging
import time
from typing import Callable

from captioning.model.model_dir import ModelDir, load_keras_model, save_keras
from captioning.store import storage

LOG = logging.getLogger("training")


def new_state(fingerprint: str) -> dict:
    return {"fingerprint": fingerprint, "epoch": 0, "checkpoint": None, "best_val_loss": None, "best_epoch": None, "wait": 0, "stopped_early": False, "history": []}


def read_state(model_uri: str) -> dict | None:
    uri = ModelDir(model_uri).state
    return json.loads(storage.read_text(uri)) if storage.exists(uri) else None


def restore(model_uri: str, state: dict):
    """The compiled model (optimizer state included) saved after ``state['epoch']``."""
    return load_keras_model(ModelDir(model_uri).checkpoint(state["checkpoint"]))


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


def make_epoch_callback(model_uri: str, state: dict, epochs: int, patience: int, is_chief: bool, on_epoch: Callable[[dict], None] | None = None):
    """Keras callback: checkpoint, best weights, history/plot, early stopping.

    Every worker of a data-parallel group runs it with the same (all-reduced) dev loss, so
    they all take the same early-stopping decision. Only the chief writes: the others save
    the same models into a throwaway local folder instead, because a save may read
    distributed variables collectively, and a collective one worker skips blocks the rest.
    ``callback.written`` lists the URIs this process wrote.
    """
    import keras

    place = ModelDir(model_uri)

    class EpochEnd(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.written: list[str] = []

        def save(self, uri: str) -> None:
            save_keras(self.model, uri, upload=is_chief)
            if is_chief:
                self.written.append(uri)

        def write(self, uri: str, data: bytes) -> None:
            storage.write_bytes(uri, data)
            self.written.append(uri)

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
                self.save(place.best_weights)
            else:
                state["wait"] += 1
            if state["wait"] >= patience:
                state["stopped_early"] = True
                self.model.stop_training = True
            previous = state.get("checkpoint")
            state.update(epoch=epoch + 1, checkpoint=place.epoch_checkpoint_name(epoch + 1))
            self.save(place.checkpoint(state["checkpoint"]))
            if is_chief:
                self.write(place.state, json.dumps(state, indent=1).encode())
                if previous and previous != state["checkpoint"]:
                    storage.delete(place.checkpoint(previous))
                self.write(place.history, json.dumps(state["history"], indent=1).encode())
                self.write(place.loss_plot, loss_curve_png(state["history"]))
            LOG.info(
                "epoch %d/%d: loss %.4f acc %.3f dev loss %s (%.1fs)%s",
                epoch + 1, epochs, record.get("loss", float("nan")), record.get("accuracy", float("nan")),
                f"{val_loss:.4f}" if val_loss is not None else "-", record["seconds"],
                " - stopping early" if state.get("stopped_early") else "",
            )
            if on_epoch:
                on_epoch(record)

    return EpochEnd()
