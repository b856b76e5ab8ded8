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

from captioning.store import storage

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


def _upload_model(model, uri: str, upload: bool = True) -> None:
    """Save the model (``.keras``) or its weights to ``uri``; with ``upload=False`` the save
    happens in a throwaway folder only (non-chief data-parallel workers, see make_epoch_callback)."""
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, os.path.basename(uri))
        if local.endswith(".keras"):
            model.save(local)
        else:
            model.save_weights(local)
        if upload:
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
    """Keras callback: checkpoint, best weights, history/plot, early stopping.

    Every worker of a data-parallel group runs it with the same (all-reduced) dev loss, so
    they all take the same early-stopping decision. Only the chief writes: the others save
    the same models into a throwaway local folder instead, because a save may read
    distributed variables collectively, and a collective one worker skips blocks the rest.
    ``callback.written`` lists the URIs this process wrote.
    """
    import keras

    class EpochEnd(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.written: list[str] = []

        def save(self, uri: str) -> None:
            _upload_model(self.model, uri, upload=is_chief)
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
                self.save(storage.join(checkpoint_uri, "best.weights.h5"))
            else:
                state["wait"] += 1
            if state["wait"] >= config.patience:
                state["stopped_early"] = True
                self.model.stop_training = True
            previous = state.get("checkpoint")
            state.update(epoch=epoch + 1, checkpoint=f"epoch-{epoch + 1:04d}.keras")
            self.save(storage.join(checkpoint_uri, state["checkpoint"]))
            if is_chief:
                self.write(storage.join(checkpoint_uri, STATE), json.dumps(state, indent=1).encode())
                if previous and previous != state["checkpoint"]:
                    storage.delete(storage.join(checkpoint_uri, previous))
                self.write(storage.join(output_uri, "history.json"), json.dumps(state["history"], indent=1).encode())
                self.write(storage.join(output_uri, "loss.png"), loss_curve_png(state["history"]))
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


def fit_data_parallel(model, strategy, train_batches, dev_batches, epochs: int, initial_epoch: int, steps_per_epoch: int, callback) -> None:
    """``model.fit`` of the single-worker path, for one MultiWorkerMirroredStrategy worker.

    ``train_batches``: this worker's batches (its own shard, batch size = global batch /
    workers), repeating; ``dev_batches``: the whole dev split in global-size batches. The
    model must have been built or restored (and compiled) inside ``strategy.scope()``.

    Why not ``model.fit``: Keras 3's TensorFlow trainer fails under this strategy (with
    Keras 3.15: ``strategy.reduce`` of a whole nested batch before the first step, then
    ``reduce(..., axis=0)`` of the scalar step metrics; keras-team/keras#20585). The loop
    keeps fit's definitions, so losses and histories compare with single-worker runs:

    * step loss = sum(weight * cross-entropy) / sum(weight) over the worker's batch, i.e.
      the compiled loss (``mean_with_sample_weight``); it is divided by the number of
      workers and the optimizer all-reduces (sums) the gradients: their mean is applied,
      identically on every worker;
    * logged ``loss`` = step losses averaged with the batch rows as weights, ``accuracy``
      = weighted share of correct next words, both summed over all workers;
    * ``val_loss`` / ``val_accuracy``: the same over the dev split, computed by every worker
      alone on its (identical) copy of the weights, so all workers see the same numbers and
      take the same early-stopping decision without exchanging anything.

    The epoch callback (``make_epoch_callback``) is driven as fit would drive it.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    workers = strategy.num_replicas_in_sync

    def batch_sums(inputs, targets, weights, training: bool):
        logits = model(inputs, training=training)  # (B, T, V)
        weight_total = tf.reduce_sum(weights)
        loss = tf.math.divide_no_nan(tf.reduce_sum(entropy(targets, logits) * weights), weight_total)
        hits = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=targets.dtype), targets), tf.float32)
        rows = tf.cast(tf.shape(targets)[0], tf.float32)
        return loss, tf.stack([loss * rows, rows, tf.reduce_sum(hits * weights), weight_total])

    def replica_step(batch):
        inputs, targets, weights = batch
        with tf.GradientTape() as tape:
            loss, sums = batch_sums(inputs, targets, weights, training=True)
            scaled = loss / workers
        gradients = tape.gradient(scaled, model.trainable_variables)
        model.optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return sums

    @tf.function
    def train_step(iterator):
        sums = strategy.run(replica_step, args=(next(iterator),))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, sums, axis=None)

    @tf.function
    def dev_step(inputs, targets, weights):
        return batch_sums(inputs, targets, weights, training=False)[1]

    def rates(sums) -> tuple[float, float]:
        loss_rows, rows, hits, weight_total = (float(v) for v in sums)
        return loss_rows / max(rows, 1.0), hits / max(weight_total, 1e-12)

    iterator = iter(strategy.distribute_datasets_from_function(lambda _context: train_batches))
    callback.set_model(model)
    model.stop_training = False
    for epoch in range(initial_epoch, epochs):
        callback.on_epoch_begin(epoch)
        totals = np.zeros(4)
        for _ in range(steps_per_epoch):
            totals += train_step(iterator).numpy()
        dev_totals = np.zeros(4)
        for inputs, targets, weights in dev_batches:
            dev_totals += dev_step(inputs, targets, weights).numpy()
        (loss, accuracy), (val_loss, val_accuracy) = rates(totals), rates(dev_totals)
        callback.on_epoch_end(epoch, {"accuracy": accuracy, "loss": loss, "val_accuracy": val_accuracy, "val_loss": val_loss})
        if model.stop_training:
            break
