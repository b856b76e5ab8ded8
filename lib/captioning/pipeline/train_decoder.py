"""Train the LSTM caption decoder from the captions table and the feature store.

    spark-submit jobs/train_decoder.py --captions s3://my-bucket/prepared --features s3://my-bucket/features/resnet50 \
        --output s3://my-bucket/models/merge-v1 --epochs 20
    spark-submit --conf spark.dynamicAllocation.enabled=false jobs/train_decoder.py --workers 4 ...   # data-parallel
    captioner train-decoder --captions data/prepared --features data/features --output data/model --epochs 10
    captioner train-decoder --decoder attention --features data/features-spatial ...   # a store made with --spatial

Spark joins each split's captions with their image vectors into training views inside
the model directory, Petastorm streams them into tf.data, and Keras trains with teacher
forcing, batches grouped by caption length (:mod:`captioning.model.training.fit`). A checkpoint
is written every epoch: run the same command again after an interruption and it resumes
from the last finished epoch. Early stopping watches the dev loss; the best epoch's
weights become the model.

With ``--workers N`` (N > 1) the model trains data-parallel on N Spark tasks of one
barrier stage, one TensorFlow worker each
(:mod:`captioning.model.training.data_parallel`); a step still covers ``--batch-size``
captions, so losses compare with single-process runs, and a rerun resumes from the
chief's checkpoints also with another number of workers. ``--workers 1``, the default,
trains in the driver process. Barrier stages need N free task slots at once and no
dynamic allocation.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field

from captioning.errors import InputError
from captioning.model.decoder import DECODERS, Architecture, DecoderConfig
from captioning.model.model_dir import ModelDir, write_config, write_vocabulary
from captioning.model.training.fit import TrainConfig, TrainingPlan
from captioning.pipeline.options import default, non_negative_int, positive_int
from captioning.pipeline.runner import run_stage, spark_for
from captioning.serialization import to_dict
from captioning.store import feature_store, storage
from captioning.store.feature_store import Manifest, require_manifest
from captioning.data.prepared import PreparedCaptions

LOG = logging.getLogger("train_decoder")
WORKER_ENTRY = "captioning.model.training.data_parallel:train_worker"


@dataclass(frozen=True)
class TrainJobConfig:
    captions_uri: str
    features_uri: str
    output_uri: str
    train: TrainConfig = field(default_factory=TrainConfig)
    architecture: Architecture = field(default_factory=Architecture)
    glove_uri: str | None = None
    overwrite: bool = False
    workers: int = 1  # data-parallel TensorFlow workers on Spark tasks; 1 trains in the driver


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="train-decoder", description="Train an LSTM caption decoder (merge, or attention over a spatial grid) with teacher forcing; checkpoints every epoch and resumes.")
    parser.add_argument("--captions", required=True, help="output folder of prepare-captions (captions/, vocab.json, summary.json)")
    parser.add_argument("--features", required=True, help="feature store written by extract-features")
    parser.add_argument("--output", required=True, help="model directory to write (local or s3://); rerunning resumes from its checkpoints")
    training = parser.add_argument_group("training")
    training.add_argument("--epochs", type=positive_int, default=default(TrainConfig, "epochs"), help="maximum epochs (default %(default)s)")
    training.add_argument("--batch-size", type=positive_int, default=default(TrainConfig, "batch_size"), help="captions per step (default %(default)s)")
    training.add_argument("--learning-rate", type=float, default=default(TrainConfig, "learning_rate"), help="Adam learning rate (default %(default)s)")
    training.add_argument("--patience", type=positive_int, default=default(TrainConfig, "patience"), help="stop after this many epochs without a better dev loss (default %(default)s)")
    training.add_argument("--shuffle-buffer", type=positive_int, default=default(TrainConfig, "shuffle_buffer"), help="captions mixed in memory on top of row-group shuffling (default %(default)s)")
    training.add_argument("--seed", type=int, default=default(TrainConfig, "seed"), help="seed for initialisation and shuffling (default %(default)s)")
    training.add_argument("--bucket-width", type=non_negative_int, default=default(TrainConfig, "bucket_width"), help="batch captions of about one length, in buckets this many tokens wide (default %(default)s; 0: random batches; single-process only)")
    training.add_argument("--workers", type=positive_int, default=default(TrainJobConfig, "workers"), help="data-parallel TensorFlow workers, one per Spark task of a barrier stage (default %(default)s: train in the driver); --batch-size is the global batch and must be divisible by it")
    network = parser.add_argument_group("network")
    network.add_argument(
        "--decoder", choices=DECODERS, default=default(Architecture, "decoder"),
        help="'merge' (default %(default)s): a pooled image vector added to the LSTM's output, the original project's model; "
        "'attention': soft attention over the CNN's spatial grid at every word (Show, Attend and Tell), needs a store made with extract-features --spatial",
    )
    network.add_argument("--embedding-dim", type=positive_int, default=default(Architecture, "embedding_dim"), help="word embedding size (default %(default)s; must match --glove)")
    network.add_argument("--units", type=positive_int, default=default(Architecture, "units"), help="LSTM units and image projection size (default %(default)s)")
    network.add_argument("--hidden-units", type=positive_int, default=default(Architecture, "hidden_units"), help="Dense layer after the merge (default %(default)s)")
    network.add_argument("--dropout", type=float, default=default(Architecture, "dropout"), help="dropout on image vectors and embeddings (default %(default)s)")
    network.add_argument("--attention-units", type=positive_int, default=default(Architecture, "attention_units"), help="attention decoder: width of the grid cells' projection and the attention layer (default %(default)s)")
    network.add_argument("--attention-penalty", type=float, default=default(Architecture, "attention_penalty"), help="attention decoder: weight of the doubly stochastic regulariser, 0 to turn it off (default %(default)s)")
    network.add_argument("--glove", default=None, help="GloVe text file (local or s3://) to initialise the embeddings, e.g. glove.6B.200d.txt")
    network.add_argument("--freeze-embeddings", action="store_true", help="keep the (GloVe) embeddings fixed, as the original project did")
    parser.add_argument("--overwrite", action="store_true", help="discard existing checkpoints and start over")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainJobConfig:
    if args.batch_size % args.workers:
        raise InputError(f"--batch-size {args.batch_size} is the global batch: it must be divisible by --workers {args.workers}")
    return TrainJobConfig(
        captions_uri=args.captions,
        features_uri=args.features,
        output_uri=args.output,
        train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate, patience=args.patience, shuffle_buffer=args.shuffle_buffer, seed=args.seed, bucket_width=args.bucket_width),
        architecture=Architecture(
            decoder=args.decoder, embedding_dim=args.embedding_dim, units=args.units, hidden_units=args.hidden_units, dropout=args.dropout,
            train_embeddings=not args.freeze_embeddings, attention_units=args.attention_units, attention_penalty=args.attention_penalty,
        ),
        glove_uri=args.glove,
        overwrite=args.overwrite,
        workers=args.workers,
    )


def decoder_config(config: TrainJobConfig, prepared: dict, vocabulary, manifest: Manifest) -> DecoderConfig:
    """The network to train; a decoder that cannot read the store's features is refused before any work."""
    shape = manifest.feature_shape if len(manifest.feature_shape) > 1 else ()
    try:
        return DecoderConfig(vocab_size=vocabulary.size, max_length=int(prepared["max_length"]), feature_dim=manifest.feature_dim, architecture=config.architecture, feature_shape=shape)
    except ValueError as error:
        raise InputError(f"{config.features_uri}: {error}") from error


def data_fingerprint(prepared: dict, manifest: Manifest) -> str:
    text = json.dumps({"captions": prepared["fingerprint"], "features": list(manifest.parts), "encoder": manifest.encoder}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_fingerprint(data: str, decoder: DecoderConfig, config: TrainJobConfig) -> str:
    """What checkpoints must share to be resumed: data and every setting but the stopping rule."""
    resumable = {k: v for k, v in to_dict(config.train).items() if k not in ("epochs", "patience")}  # a rerun may train longer
    return hashlib.sha256(json.dumps([data, to_dict(decoder), resumable, config.glove_uri], sort_keys=True).encode()).hexdigest()[:16]


def _shardable(views: dict, workers: int) -> bool:
    """Whether every data-parallel worker gets row groups of its own (Petastorm shards by file row groups)."""
    from captioning.model.training.petastorm_input import parquet_files

    return workers == 1 or len(parquet_files(views["train"]["uri"])) >= workers


def build_views(spark, config: TrainJobConfig, manifest: Manifest, fingerprint: str) -> dict:
    """Write the training views (skipped when already built from the same inputs); their sizes and statistics."""
    from captioning.pipeline.transforms.training_view import feature_moments, training_view

    model = ModelDir(config.output_uri)
    if storage.exists(model.views):
        existing = json.loads(storage.read_text(model.views))
        if existing.get("fingerprint") == fingerprint and _shardable(existing, config.workers) and "feature_statistics" in existing:
            return existing
    captions = spark.read.parquet(PreparedCaptions(config.captions_uri).captions)
    features = spark.read.parquet(*manifest.part_uris(config.features_uri))
    info = {"fingerprint": fingerprint}
    for split in ("train", "dev"):
        view, missing = training_view(captions, features, split)
        target = model.view(split)
        partitions = max(1, spark.sparkContext.defaultParallelism, config.workers)
        view.repartition(partitions).write.option("parquet.block.size", feature_store.ROW_GROUP_BYTES).mode("overwrite").parquet(target)
        rows = spark.read.parquet(target).count()
        if rows == 0:
            raise InputError(f"no {split} caption has an image vector: check that {config.features_uri} was extracted from the dataset of {config.captions_uri}")
        info[split] = {"rows": rows, "captions_without_features": missing.count(), "uri": target}
    train_images = captions.where("split = 'train'").select("image_id").distinct()
    mean, variance, count = feature_moments(features, train_images, manifest.dtype, manifest.feature_dim)
    info["feature_statistics"] = {"count": count, "mean": mean, "variance": variance}
    storage.write_text(model.views, json.dumps(info, indent=1))
    return info


def train_data_parallel(spark, plan: TrainingPlan) -> tuple[dict, dict]:
    """Train (or resume) on ``plan.workers`` barrier tasks; the chief's final state and a description of the run."""
    from captioning.cluster.barrier import run_barrier
    from captioning.model.model_dir import publish_best_weights
    from captioning.model.training.fit import resumable_state

    state = resumable_state(plan)
    description = {"workers": plan.workers, "per_worker_batch": plan.worker_batch, "steps_per_epoch": plan.steps_per_epoch, "ranks": []}
    if state is not None and plan.finished(state):
        LOG.info("%s: training already finished after epoch %d", plan.model_uri, state["epoch"])
    else:
        LOG.info("training on %d data-parallel workers: %d captions per worker and step, %d steps per epoch", plan.workers, plan.worker_batch, plan.steps_per_epoch)
        results = run_barrier(spark, plan.workers, WORKER_ENTRY, to_dict(plan))
        description["ranks"] = [{k: r[k] for k in ("rank", "chief", "executor", "restored_from", "wrote", "weights_sha256", "optimizer_steps")} for r in results]
        state = next(r["state"] for r in results if r["chief"])
    publish_best_weights(plan.model_uri)
    return state, description


def run(config: TrainJobConfig, spark=None) -> dict:
    from captioning.model.training.fit import fit

    prepared, vocabulary = PreparedCaptions(config.captions_uri).require()
    manifest = require_manifest(config.features_uri)
    decoder = decoder_config(config, prepared, vocabulary, manifest)
    data = data_fingerprint(prepared, manifest)
    fingerprint = run_fingerprint(data, decoder, config)
    model = ModelDir(config.output_uri)
    if config.overwrite:
        storage.delete(model.checkpoints, recursive=True)
        storage.delete(model.config)
    distributed = None
    with spark_for("train-decoder", spark) as session:
        views = build_views(session, config, manifest, data)
        write_vocabulary(config.output_uri, vocabulary)
        plan = TrainingPlan(
            model_uri=config.output_uri, decoder=decoder, train=config.train, feature_dtype=manifest.dtype, train_rows=views["train"]["rows"],
            feature_statistics=views["feature_statistics"], run_fingerprint=fingerprint, glove_uri=config.glove_uri, workers=config.workers,
        )
        started = time.time()
        if config.workers > 1:  # the workers are Spark tasks: the session stays up while they train
            state, distributed = train_data_parallel(session, plan)
    if config.workers == 1:
        state = fit(plan)
    kind = "" if config.architecture.decoder == "merge" else f"{config.architecture.decoder}-"
    model_id = f"{manifest.encoder['backbone']}-{kind}{fingerprint}"
    training = {
        "model_id": model_id,
        "run_fingerprint": fingerprint,
        "captions": config.captions_uri,
        "features": config.features_uri,
        "train_rows": views["train"]["rows"],
        "dev_rows": views["dev"]["rows"],
        "epochs_run": state["epoch"],
        "best_epoch": state["best_epoch"],
        "best_dev_loss": state["best_val_loss"],
        "stopped_early": state["stopped_early"],
        "train": to_dict(config.train),
        "glove": config.glove_uri,
    }
    if distributed is not None:
        training["distributed"] = distributed
    write_config(config.output_uri, decoder, {**manifest.encoder, "dtype": manifest.dtype}, training)
    LOG.info("model %s written to %s (best epoch %s, dev loss %s) in %.0fs", model_id, config.output_uri, state["best_epoch"], state["best_val_loss"], time.time() - started)
    return training


def main(argv: list[str] | None = None, spark=None) -> int:
    return run_stage(argv, build_parser(), config_from_args, lambda config: run(config, spark))


if __name__ == "__main__":
    raise SystemExit(main())
