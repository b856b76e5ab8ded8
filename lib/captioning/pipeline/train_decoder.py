"""Train the LSTM caption decoder from the captions table and the feature store.

    spark-submit jobs/train_decoder.py --captions s3://my-bucket/prepared --features s3://my-bucket/features/resnet50 \
        --output s3://my-bucket/models/merge-v1 --epochs 20
    spark-submit --conf spark.dynamicAllocation.enabled=false jobs/train_decoder.py --workers 4 ...   # data-parallel
    captioner train-decoder --captions data/prepared --features data/features --output data/model --epochs 10

Spark joins each split's captions with their image vectors into training views
(``<output>/data/{train,dev}``), Petastorm streams them into tf.data, and Keras trains
with teacher forcing over whole padded captions. A checkpoint is written every epoch:
run the same command again after an interruption and it resumes from the last finished
epoch. Early stopping watches the dev loss; the best epoch's weights become the model.

With ``--workers N`` (N > 1) the Keras model trains data-parallel on N Spark tasks of one
barrier stage (``captioning.cluster.barrier``), one TensorFlow worker each, kept in step by
``MultiWorkerMirroredStrategy``: every worker reads its own Petastorm shard of the training
view (``cur_shard=rank``) and computes gradients on ``--batch-size / N`` captions, the
gradients are averaged over the workers, and every worker applies the same update, so a
step still covers ``--batch-size`` captions. Each epoch has the single-worker path's
``ceil(train rows / --batch-size)`` steps on every worker (the shard streams repeat, so no
worker runs dry while the others wait in a collective). Every worker scores the whole dev
split on its identical copy of the weights, so all of them reach the same early-stopping
decision. Only the chief (rank 0) writes checkpoints, state, history and plot; at start
every worker restores the chief's last checkpoint, so a rerun resumes as without
``--workers`` (also with another number of workers). ``--workers 1``, the default, trains
in the driver process exactly as before. Barrier stages need N free task slots at once
and no dynamic allocation.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field

from captioning.store import storage
from captioning.model.decoder import DecoderConfig
from captioning.store.feature_store import part_uri, require_manifest
from captioning.pipeline.runner import InputError, run_main, spark_for
from captioning.model.model_dir import VOCAB, WEIGHTS, write_config
from captioning.model.training.checkpoints import TrainConfig
from captioning.data.vocab import Vocabulary

LOG = logging.getLogger("train_decoder")
ROW_GROUP_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class TrainJobConfig:
    captions_uri: str
    features_uri: str
    output_uri: str
    train: TrainConfig = field(default_factory=TrainConfig)
    embedding_dim: int = 200
    units: int = 256
    hidden_units: int = 512
    dropout: float = 0.5
    glove_uri: str | None = None
    freeze_embeddings: bool = False
    overwrite: bool = False
    workers: int = 1  # data-parallel TensorFlow workers on Spark tasks; 1 trains in the driver


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="train-decoder", description="Train the merge LSTM caption decoder with teacher forcing; checkpoints every epoch and resumes.")
    parser.add_argument("--captions", required=True, help="output folder of prepare-captions (captions/, vocab.json, summary.json)")
    parser.add_argument("--features", required=True, help="feature store written by extract-features")
    parser.add_argument("--output", required=True, help="model directory to write (local or s3://); rerunning resumes from its checkpoints")
    parser.add_argument("--epochs", type=int, default=20, help="maximum epochs (default 20)")
    parser.add_argument("--batch-size", type=int, default=64, help="captions per step (default 64)")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="Adam learning rate (default 0.001)")
    parser.add_argument("--patience", type=int, default=3, help="stop after this many epochs without a better dev loss (default 3)")
    parser.add_argument("--shuffle-buffer", type=int, default=8192, help="captions mixed in memory on top of row-group shuffling (default 8192)")
    parser.add_argument("--seed", type=int, default=0, help="seed for initialisation and shuffling (default 0)")
    parser.add_argument("--embedding-dim", type=int, default=200, help="word embedding size (default 200; must match --glove)")
    parser.add_argument("--units", type=int, default=256, help="LSTM units and image projection size (default 256)")
    parser.add_argument("--hidden-units", type=int, default=512, help="Dense layer after the merge (default 512)")
    parser.add_argument("--dropout", type=float, default=0.5, help="dropout on image vectors and embeddings (default 0.5)")
    parser.add_argument("--glove", default=None, help="GloVe text file (local or s3://) to initialise the embeddings, e.g. glove.6B.200d.txt")
    parser.add_argument("--freeze-embeddings", action="store_true", help="keep the (GloVe) embeddings fixed, as the original project did")
    parser.add_argument("--overwrite", action="store_true", help="discard existing checkpoints and start over")
    parser.add_argument("--workers", type=int, default=1, help="data-parallel TensorFlow workers, one per Spark task of a barrier stage (default 1: train in the driver); --batch-size is the global batch and must be divisible by it")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainJobConfig:
    if args.epochs < 1 or args.batch_size < 1 or args.patience < 1 or args.workers < 1:
        raise InputError("--epochs, --batch-size, --patience and --workers must be positive")
    if args.batch_size % args.workers:
        raise InputError(f"--batch-size {args.batch_size} is the global batch: it must be divisible by --workers {args.workers}")
    return TrainJobConfig(
        captions_uri=args.captions,
        features_uri=args.features,
        output_uri=args.output,
        train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate, patience=args.patience, shuffle_buffer=args.shuffle_buffer, seed=args.seed),
        embedding_dim=args.embedding_dim,
        units=args.units,
        hidden_units=args.hidden_units,
        dropout=args.dropout,
        glove_uri=args.glove,
        freeze_embeddings=args.freeze_embeddings,
        overwrite=args.overwrite,
        workers=args.workers,
    )


def read_prepared(captions_uri: str) -> tuple[dict, Vocabulary]:
    summary_uri = storage.join(captions_uri, "summary.json")
    if not storage.exists(summary_uri):
        raise InputError(f"{captions_uri}: no summary.json (prepare-captions has not completed there); run prepare-captions first")
    summary = json.loads(storage.read_text(summary_uri))
    vocab_uri = storage.join(captions_uri, "vocab.json")
    return summary, Vocabulary.from_json(storage.read_text(vocab_uri), source=vocab_uri)


def data_fingerprint(prepared: dict, manifest) -> str:
    text = json.dumps({"captions": prepared["fingerprint"], "features": list(manifest.parts), "encoder": manifest.encoder}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _shardable(views: dict, workers: int) -> bool:
    """Whether every data-parallel worker gets row groups of its own (Petastorm shards by file row groups)."""
    from captioning.model.training.petastorm_input import parquet_files

    return workers == 1 or len(parquet_files(views["train"]["uri"])) >= workers


def build_views(spark, config: TrainJobConfig, manifest, fingerprint: str) -> dict:
    """Write data/{train,dev} (skipped when already built from the same inputs); row counts."""
    from captioning.pipeline.transforms.training_view import feature_moments, training_view

    marker = storage.join(config.output_uri, "data", "views.json")
    if storage.exists(marker):
        existing = json.loads(storage.read_text(marker))
        if existing.get("fingerprint") == fingerprint and _shardable(existing, config.workers) and "feature_statistics" in existing:
            return existing
    captions = spark.read.parquet(storage.join(config.captions_uri, "captions"))
    features = spark.read.parquet(*[part_uri(config.features_uri, p) for p in manifest.parts])
    info = {"fingerprint": fingerprint}
    for split in ("train", "dev"):
        view, missing = training_view(captions, features, split)
        target = storage.join(config.output_uri, "data", split)
        view.repartition(max(1, spark.sparkContext.defaultParallelism, config.workers)).write.option("parquet.block.size", ROW_GROUP_BYTES).mode("overwrite").parquet(target)
        rows = spark.read.parquet(target).count()
        if rows == 0:
            raise InputError(f"no {split} caption has an image vector: check that {config.features_uri} was extracted from the dataset of {config.captions_uri}")
        info[split] = {"rows": rows, "captions_without_features": missing.count(), "uri": target}
    train_images = captions.where("split = 'train'").select("image_id").distinct()
    mean, variance, count = feature_moments(features, train_images, manifest.dtype, manifest.feature_dim)
    info["feature_statistics"] = {"count": count, "mean": mean, "variance": variance}
    storage.write_text(marker, json.dumps(info, indent=1))
    return info


def run(config: TrainJobConfig, spark=None) -> dict:
    prepared, vocabulary = read_prepared(config.captions_uri)
    manifest = require_manifest(config.features_uri)
    decoder = DecoderConfig(
        vocab_size=vocabulary.size,
        max_length=int(prepared["max_length"]),
        feature_dim=manifest.feature_dim,
        embedding_dim=config.embedding_dim,
        units=config.units,
        hidden_units=config.hidden_units,
        dropout=config.dropout,
        train_embeddings=not config.freeze_embeddings,
    )
    fingerprint = data_fingerprint(prepared, manifest)
    # epochs and patience may change between a run and its resumption (train longer)
    resumable = {k: v for k, v in config.train.to_dict().items() if k not in ("epochs", "patience")}
    run_fingerprint = hashlib.sha256(json.dumps([fingerprint, decoder.to_dict(), resumable, config.glove_uri], sort_keys=True).encode()).hexdigest()[:16]
    if config.overwrite:
        storage.delete(storage.join(config.output_uri, "checkpoints"), recursive=True)
        storage.delete(storage.join(config.output_uri, "config.json"))
    distributed = None
    with spark_for("train-decoder", spark) as session:
        views = build_views(session, config, manifest, fingerprint)
        if config.workers > 1:  # the workers are Spark tasks: the session stays up while they train
            started = time.time()
            state, distributed = fit_distributed(session, config, decoder, vocabulary, manifest, views, run_fingerprint)
    if config.workers == 1:
        started = time.time()
        state = fit(config, decoder, vocabulary, manifest, views, run_fingerprint)
    model_id = f"{manifest.encoder['backbone']}-{run_fingerprint}"
    training = {
        "model_id": model_id,
        "run_fingerprint": run_fingerprint,
        "captions": config.captions_uri,
        "features": config.features_uri,
        "train_rows": views["train"]["rows"],
        "dev_rows": views["dev"]["rows"],
        "epochs_run": state["epoch"],
        "best_epoch": state["best_epoch"],
        "best_dev_loss": state["best_val_loss"],
        "stopped_early": state["stopped_early"],
        "train": config.train.to_dict(),
        "glove": config.glove_uri,
    }
    if distributed is not None:
        training["distributed"] = distributed
    write_config(config.output_uri, decoder, {**manifest.encoder, "dtype": manifest.dtype}, training)
    LOG.info("model %s written to %s (best epoch %s, dev loss %s) in %.0fs", model_id, config.output_uri, state["best_epoch"], state["best_val_loss"], time.time() - started)
    return training


def initial_model(config: TrainJobConfig, decoder: DecoderConfig, vocabulary: Vocabulary, views: dict):
    """A new compiled model: seeded weights, feature statistics, optional GloVe embeddings."""
    import keras

    from captioning.model.decoder import build_training_model, compile_model, load_glove, set_feature_statistics

    keras.utils.set_random_seed(config.train.seed)
    model = build_training_model(decoder)
    if decoder.normalize_features:
        stats = views["feature_statistics"]
        set_feature_statistics(model, stats["mean"], stats["variance"], stats["count"])
    if config.glove_uri:
        matrix, found = load_glove(config.glove_uri, vocabulary.words, decoder.embedding_dim, config.train.seed)
        model.get_layer("embedding").set_weights([matrix])
        LOG.info("GloVe vectors for %d of %d words from %s", found, vocabulary.size, config.glove_uri)
    compile_model(model, config.train.learning_rate)
    return model


def fit(config: TrainJobConfig, decoder: DecoderConfig, vocabulary: Vocabulary, manifest, views: dict, run_fingerprint: str) -> dict:
    """Train (or resume) and copy the best weights into the model directory; returns the state."""
    import numpy as np
    import tensorflow as tf

    from captioning.model.training import checkpoints as training
    from captioning.model.encoder import configure_tensorflow
    from captioning.model.training.petastorm_input import ReaderConfig, open_dataset, trim_padding

    configure_tensorflow(mixed_precision=False)  # GPU memory growth before the first model

    checkpoints = storage.join(config.output_uri, "checkpoints")
    state = training.read_state(checkpoints)
    if state is not None and state.get("fingerprint") != run_fingerprint:
        raise InputError(f"{config.output_uri}: holds checkpoints of a different configuration or data; use --overwrite to start over, or another --output")
    storage.write_text(storage.join(config.output_uri, VOCAB), vocabulary.to_json())
    if state is None:
        state = training.new_state(run_fingerprint)
        model = initial_model(config, decoder, vocabulary, views)
    else:
        LOG.info("resuming %s after epoch %d", config.output_uri, state["epoch"])
        model = training.restore(checkpoints, state)

    finished = state["stopped_early"] or state["epoch"] >= config.train.epochs
    if not finished:
        base = dict(feature_dtype=manifest.dtype, feature_dim=decoder.feature_dim, max_length=decoder.max_length, batch_size=config.train.batch_size)
        # petastorm treats seed 0 as "unseeded": keep it positive, and new after a resume
        train_reader = ReaderConfig(
            shuffle=True, seed=config.train.seed * 1000 + state["epoch"] + 1, shuffle_buffer=config.train.shuffle_buffer, num_epochs=None, trim_padding=True, **base,
        )
        dev_reader = ReaderConfig(shuffle=False, seed=0, shuffle_buffer=1, num_epochs=1, **base)
        steps = math.ceil(views["train"]["rows"] / config.train.batch_size)
        with open_dataset(views["dev"]["uri"], dev_reader) as dev_stream:
            dev = list(dev_stream.as_numpy_iterator())  # dev split is small: read once, reuse each epoch
        dev_data = tf.data.Dataset.from_tensor_slices(
            ((np.concatenate([d[0][0] for d in dev]), np.concatenate([d[0][1] for d in dev])), np.concatenate([d[1] for d in dev]), np.concatenate([d[2] for d in dev]))
        ).batch(config.train.batch_size).map(trim_padding)
        callback = training.make_epoch_callback(checkpoints, config.output_uri, state, config.train, is_chief=True)
        with open_dataset(views["train"]["uri"], train_reader) as train_stream:
            model.fit(train_stream, epochs=config.train.epochs, initial_epoch=state["epoch"], steps_per_epoch=steps, validation_data=dev_data, callbacks=[callback], verbose=2, shuffle=False)
    publish_best_weights(checkpoints, config.output_uri)
    return state


def publish_best_weights(checkpoints: str, output_uri: str) -> None:
    """Copy the best checkpoint to the model's weights; a finished rerun leaves them untouched."""
    best = storage.read_bytes(storage.join(checkpoints, "best.weights.h5"))
    target = storage.join(output_uri, WEIGHTS)
    if storage.exists(target) and storage.read_bytes(target) == best:
        return
    storage.write_bytes(target, best)


def fit_distributed(spark, config: TrainJobConfig, decoder: DecoderConfig, vocabulary: Vocabulary, manifest, views: dict, run_fingerprint: str) -> tuple[dict, dict]:
    """Train (or resume) on ``config.workers`` barrier tasks; copy the best weights as ``fit`` does.

    Returns the chief's final state and a description of the run (workers, batch per
    worker, steps, what each worker restored and wrote).
    """
    from captioning.model.training import checkpoints as training
    from captioning.cluster.barrier import run_barrier

    checkpoints = storage.join(config.output_uri, "checkpoints")
    state = training.read_state(checkpoints)
    if state is not None and state.get("fingerprint") != run_fingerprint:
        raise InputError(f"{config.output_uri}: holds checkpoints of a different configuration or data; use --overwrite to start over, or another --output")
    storage.write_text(storage.join(config.output_uri, VOCAB), vocabulary.to_json())
    per_worker_batch = config.train.batch_size // config.workers
    steps = math.ceil(views["train"]["rows"] / config.train.batch_size)  # as fit(): the same optimizer steps per epoch
    description = {"workers": config.workers, "per_worker_batch": per_worker_batch, "steps_per_epoch": steps, "ranks": []}
    if state is not None and (state["stopped_early"] or state["epoch"] >= config.train.epochs):
        LOG.info("%s: training already finished after epoch %d", config.output_uri, state["epoch"])
    else:
        payload = {
            "config": dataclasses.asdict(config),
            "decoder": decoder.to_dict(),
            "feature_dtype": manifest.dtype,
            "views": views,
            "run_fingerprint": run_fingerprint,
            "per_worker_batch": per_worker_batch,
            "steps_per_epoch": steps,
        }
        LOG.info("training on %d data-parallel workers: %d captions per worker and step, %d steps per epoch", config.workers, per_worker_batch, steps)
        results = run_barrier(spark, config.workers, "captioning.pipeline.train_decoder:train_worker", payload)
        description["ranks"] = [{k: r[k] for k in ("rank", "chief", "executor", "restored_from", "wrote", "weights_sha256", "optimizer_steps")} for r in results]
        state = next(r["state"] for r in results if r["chief"])
    publish_best_weights(checkpoints, config.output_uri)
    return state, description


def train_worker(payload: dict, role) -> dict:
    """One data-parallel worker (a process started by ``captioning.cluster.barrier``).

    MultiWorkerMirroredStrategy is created first (it must precede any other TensorFlow
    work in the process); the model is built or restored inside its scope. State is read
    here, by every worker, from the chief's checkpoints: the chief cannot finish an epoch
    (and so cannot write a newer state) before every worker has joined the first
    collective, which happens after that read.
    """
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()

    import numpy as np

    from captioning.model.training import checkpoints as training
    from captioning.model.training.petastorm_input import ReaderConfig, open_dataset

    raw = dict(payload["config"])
    config = TrainJobConfig(**{**raw, "train": TrainConfig(**raw["train"])})
    decoder = DecoderConfig.from_dict(payload["decoder"])
    views = payload["views"]
    checkpoints = storage.join(config.output_uri, "checkpoints")
    state = training.read_state(checkpoints)
    restored_from = None
    with strategy.scope():
        if state is None:
            state = training.new_state(payload["run_fingerprint"])
            vocabulary = Vocabulary.from_json(storage.read_text(storage.join(config.output_uri, VOCAB)))
            model = initial_model(config, decoder, vocabulary, views)
        else:
            restored_from = state["checkpoint"]
            model = training.restore(checkpoints, state)

    batch = payload["per_worker_batch"]
    base = dict(feature_dtype=payload["feature_dtype"], feature_dim=decoder.feature_dim, max_length=decoder.max_length, batch_size=batch)
    train_reader = ReaderConfig(
        shuffle=True, seed=config.train.seed * 1000 + state["epoch"] + 1, shuffle_buffer=config.train.shuffle_buffer,
        num_epochs=None, cur_shard=role.rank, shard_count=role.count, **base,
    )
    dev_reader = ReaderConfig(shuffle=False, seed=0, shuffle_buffer=1, num_epochs=1, **base)
    with open_dataset(views["dev"]["uri"], dev_reader) as dev_stream:
        dev = list(dev_stream.as_numpy_iterator())
    dev_data = tf.data.Dataset.from_tensor_slices(
        ((np.concatenate([d[0][0] for d in dev]), np.concatenate([d[0][1] for d in dev])), np.concatenate([d[1] for d in dev]), np.concatenate([d[2] for d in dev]))
    ).batch(config.train.batch_size)  # as in fit(): dev batches of the global size, whole split on every worker
    callback = training.make_epoch_callback(checkpoints, config.output_uri, state, config.train, is_chief=role.is_chief)
    with open_dataset(views["train"]["uri"], train_reader) as train_stream:
        training.fit_data_parallel(model, strategy, train_stream, dev_data, config.train.epochs, state["epoch"], payload["steps_per_epoch"], callback)
    prefix = config.output_uri.rstrip("/") + "/"
    wrote = sorted({uri[len(prefix):] if uri.startswith(prefix) else uri for uri in callback.written})
    # equal on every worker when the all-reduce kept the replicas in sync
    weights_sha256 = hashlib.sha256(b"".join(np.asarray(w).tobytes() for w in model.trainable_weights)).hexdigest()
    return {
        "chief": role.is_chief, "restored_from": restored_from, "wrote": wrote,
        "weights_sha256": weights_sha256, "optimizer_steps": int(model.optimizer.iterations.numpy()), "state": state if role.is_chief else None,
    }


def main(argv: list[str] | None = None, spark=None) -> int:
    def job() -> int:
        print(json.dumps(run(config_from_args(build_parser().parse_args(argv)), spark), indent=1))
        return 0

    return run_main(job)


if __name__ == "__main__":
    raise SystemExit(main())
