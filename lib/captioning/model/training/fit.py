"""Training the decoder from its training views: the set-up both training paths share.

A :class:`TrainingPlan` holds everything a training process needs (it is JSON-able, so
the data-parallel workers of :mod:`captioning.model.training.data_parallel` receive the
same plan as the single process here). From it: the starting point (a new seeded model,
or the last checkpoint of the same run), the training stream (Petastorm → tf.data, this
worker's shard) and the dev split (read once, reused every epoch).

:func:`fit` trains in this process with ``model.fit``: teacher forcing over whole padded
captions, a checkpoint every epoch, early stopping on dev loss, the best epoch's weights
published as the model's weights.
"""
from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

from captioning.data.vocab import Vocabulary
from captioning.errors import InputError
from captioning.model.decoder import DecoderConfig
from captioning.model.model_dir import ModelDir, publish_best_weights, read_vocabulary
from captioning.model.training import checkpoints

LOG = logging.getLogger("training")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20  # most epochs; a rerun may raise it to train longer
    batch_size: int = 64  # captions per optimizer step (the global batch when data-parallel)
    learning_rate: float = 1e-3  # Adam's default, as the original
    patience: int = 3  # epochs without a better dev loss before stopping
    shuffle_buffer: int = 8192  # captions mixed in memory on top of Petastorm's row-group shuffle
    seed: int = 0  # initialisation and shuffling
    # batches of captions of one length (in buckets this many tokens wide), so the batch
    # is one short block; 0: random batches. Off by default: the merge decoder computes
    # no padded position anyway, so on the sample it saves only ~8% per epoch, and it ends
    # at a higher dev loss (batches of one length move the weights less evenly).
    # Single-process training only (data-parallel workers must agree on every batch's shape)
    bucket_width: int = 0


@dataclass(frozen=True)
class TrainingPlan:
    """One training run, as every training process sees it."""

    model_uri: str  # the model directory (views, checkpoints and the result)
    decoder: DecoderConfig
    train: TrainConfig
    feature_dtype: str  # how the views store image vectors
    train_rows: int  # captions in the training view
    feature_statistics: Mapping[str, Any] = field(default_factory=dict)  # mean, variance, count of training vectors
    run_fingerprint: str = ""  # data + configuration: checkpoints of another run are refused
    glove_uri: str | None = None
    workers: int = 1

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch: the same whatever the number of workers."""
        return math.ceil(self.train_rows / self.train.batch_size)

    @property
    def worker_batch(self) -> int:
        return self.train.batch_size // self.workers

    def finished(self, state: Mapping[str, Any]) -> bool:
        return bool(state["stopped_early"]) or state["epoch"] >= self.train.epochs


def resumable_state(plan: TrainingPlan) -> dict | None:
    """The run's checkpoint state, None for a new run; another run's checkpoints are refused."""
    state = checkpoints.read_state(plan.model_uri)
    if state is not None and state.get("fingerprint") != plan.run_fingerprint:
        raise InputError(f"{plan.model_uri}: holds checkpoints of a different configuration or data; use --overwrite to start over, or another --output")
    return state


def initial_model(plan: TrainingPlan, vocabulary: Vocabulary):
    """A new compiled model: seeded weights, feature statistics, optional GloVe embeddings."""
    import keras

    from captioning.model.decoder import build_model, compile_model, load_glove, set_feature_statistics

    keras.utils.set_random_seed(plan.train.seed)
    model = build_model(plan.decoder)
    if plan.decoder.architecture.normalize_features:
        stats = plan.feature_statistics
        set_feature_statistics(model, stats["mean"], stats["variance"], stats["count"])
    if plan.glove_uri:
        matrix, found = load_glove(plan.glove_uri, vocabulary.words, plan.decoder.architecture.embedding_dim, plan.train.seed)
        model.get_layer("embedding").set_weights([matrix])
        LOG.info("GloVe vectors for %d of %d words from %s", found, vocabulary.size, plan.glove_uri)
    compile_model(model, plan.train.learning_rate)
    return model


def start_or_resume(plan: TrainingPlan) -> tuple[dict, Any, str | None]:
    """(state, compiled model, checkpoint restored from or None) for this run."""
    state = resumable_state(plan)
    if state is None:
        return checkpoints.new_state(plan.run_fingerprint), initial_model(plan, read_vocabulary(plan.model_uri)), None
    LOG.info("resuming %s after epoch %d", plan.model_uri, state["epoch"])
    return state, checkpoints.restore(plan.model_uri, state), state["checkpoint"]


def _reader_shape(plan: TrainingPlan, batch_size: int) -> dict:
    return dict(feature_dtype=plan.feature_dtype, feature_dim=plan.decoder.feature_dim, max_length=plan.decoder.max_length, batch_size=batch_size)


@contextlib.contextmanager
def training_stream(plan: TrainingPlan, state: Mapping[str, Any], shard: tuple[int, int] | None = None, trim_padding: bool = True) -> Iterator[Any]:
    """The endless, shuffled training batches of this worker's shard (``(rank, count)``, or all).

    The seed changes with the epoch a run starts at, so a resumed run does not replay the
    first epochs' order (petastorm treats seed 0 as "unseeded": it is kept positive).
    With ``bucket_width`` batches are grouped by caption length when the padding is trimmed.
    """
    from captioning.model.training.petastorm_input import ReaderConfig, open_dataset

    rank, count = shard if shard else (None, None)
    reader = ReaderConfig(
        shuffle=True, seed=plan.train.seed * 1000 + state["epoch"] + 1, shuffle_buffer=plan.train.shuffle_buffer,
        num_epochs=None, cur_shard=rank, shard_count=count, trim_padding=trim_padding, bucket_width=plan.train.bucket_width if trim_padding else 0,
        **_reader_shape(plan, plan.worker_batch if shard else plan.train.batch_size),
    )
    with open_dataset(ModelDir(plan.model_uri).view("train"), reader) as stream:
        yield stream


def dev_dataset(plan: TrainingPlan, trim_padding: bool = True):
    """The whole dev split in global-size batches; small, so read once and reused every epoch."""
    import numpy as np
    import tensorflow as tf

    from captioning.model.training.petastorm_input import ReaderConfig, open_dataset, trim_padding as trim

    reader = ReaderConfig(shuffle=False, seed=0, shuffle_buffer=1, num_epochs=1, **_reader_shape(plan, plan.train.batch_size))
    with open_dataset(ModelDir(plan.model_uri).view("dev"), reader) as stream:
        dev = list(stream.as_numpy_iterator())
    columns = ((np.concatenate([d[0][0] for d in dev]), np.concatenate([d[0][1] for d in dev])), np.concatenate([d[1] for d in dev]), np.concatenate([d[2] for d in dev]))
    batches = tf.data.Dataset.from_tensor_slices(columns).batch(plan.train.batch_size)
    return batches.map(trim) if trim_padding else batches


def fit(plan: TrainingPlan) -> dict:
    """Train (or resume) in this process; publish the best weights. Returns the final state."""
    from captioning.model.encoder import configure_tensorflow

    configure_tensorflow(mixed_precision=False)  # GPU memory growth before the first model
    state, model, _ = start_or_resume(plan)
    if not plan.finished(state):
        callback = checkpoints.make_epoch_callback(plan.model_uri, state, plan.train.epochs, plan.train.patience, is_chief=True)
        dev = dev_dataset(plan)
        with training_stream(plan, state) as train:
            model.fit(
                train, epochs=plan.train.epochs, initial_epoch=state["epoch"], steps_per_epoch=plan.steps_per_epoch,
                validation_data=dev, callbacks=[callback], verbose=2, shuffle=False,
            )
    publish_best_weights(plan.model_uri)
    return state
