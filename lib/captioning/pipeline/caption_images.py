"""Caption every image in one or more buckets / folders, incrementally and exactly once.

    spark-submit jobs/caption_images.py --input s3://photos/2026/ s3://archive/scans/ \
        --model s3://my-bucket/models/merge-v1 --output s3://my-bucket/captions
    captioner caption-images --input data/new-images --model data/model --output data/captions

Output under ``--output``:
  captions/run_date=YYYY-MM-DD/run_id=<id>/   Parquet, one row per listed object: uri,
                                              input, version (ETag or size-mtime), size,
                                              status (ok/error/skipped), caption, score,
                                              error reason, model_id, run_id, captioned_at
  exports/run_id=<id>/                        the same rows as JSON Lines
  runs/<id>.json                              run summary: counts by status, throughput
  gallery/<id>.html, gallery.html             a self-contained page to look at the results

Each run captions only objects not yet answered: by default an object (same URI and
version) answered once is not captioned again, whatever model answered it; with
``--recaption`` every object not yet captioned by *this* model is captioned again (a new
model version over an old bucket). A run's rows become visible only when Spark commits
its output; a run killed earlier leaves nothing visible, and the next run does its work.
Runs on one output must not overlap: a lock object refuses a second concurrent run.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import time
import uuid
from dataclasses import dataclass

from captioning.store import storage
from captioning.model.encoder import EncoderConfig, encoder_identity
from captioning.store.feature_store import check_identity
from captioning.data.images import DecodeConfig
from captioning.pipeline.runner import InputError, run_main, spark_for
from captioning.model.model_dir import read_info

LOG = logging.getLogger("caption_images")
LOCK = "_lock.json"


@dataclass(frozen=True)
class CaptionJobConfig:
    inputs: tuple[str, ...]
    model_uri: str
    output_uri: str
    backbone_weights: str | None = None  # weights file of the CNN when the model's features came from one
    search: str = "beam"
    beam_width: int = 3
    length_alpha: float = 0.7
    batch_size: int = 32
    io_threads: int = 8
    images_per_partition: int = 256
    recaption: bool = False
    gallery_cards: int = 500
    lock_timeout_hours: float = 12.0
    mixed_precision: bool = False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="caption-images", description="Caption every image under one or more bucket prefixes or folders; one result row per object, exactly once.")
    parser.add_argument("--input", nargs="+", required=True, help="bucket prefixes (s3://bucket/prefix/) or folders, searched recursively")
    parser.add_argument("--model", required=True, help="model directory written by train-decoder")
    parser.add_argument("--output", required=True, help="output folder / s3:// prefix (captions/, exports/, runs/, gallery/)")
    parser.add_argument("--backbone-weights", default=None, help="CNN weights file (local or s3://) when the model was trained on features from a weights file; 'imagenet' and seeded random weights are found automatically")
    parser.add_argument("--search", default="beam", choices=("greedy", "beam"), help="decoding method (default beam)")
    parser.add_argument("--beam-width", type=int, default=3, help="beams per image (default 3)")
    parser.add_argument("--length-alpha", type=float, default=0.7, help="length normalisation exponent; 0 disables (default 0.7)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per CNN and decoder call (default 32)")
    parser.add_argument("--io-threads", type=int, default=8, help="concurrent object reads per task (default 8)")
    parser.add_argument("--images-per-partition", type=int, default=256, help="objects per Spark task (default 256)")
    parser.add_argument("--recaption", action="store_true", help="caption again every object this model has not captioned yet, even if an earlier model did")
    parser.add_argument("--gallery-cards", type=int, default=500, help="images shown in the HTML gallery (default 500; 0 = no gallery)")
    parser.add_argument("--lock-timeout-hours", type=float, default=12.0, help="a lock older than this is considered abandoned (default 12)")
    parser.add_argument("--mixed-precision", action="store_true", help="run the CNN in mixed float16 (GPUs)")
    return parser


def config_from_args(args: argparse.Namespace) -> CaptionJobConfig:
    if args.batch_size < 1 or args.io_threads < 1 or args.images_per_partition < 1:
        raise InputError("--batch-size, --io-threads and --images-per-partition must be positive")
    return CaptionJobConfig(
        inputs=tuple(args.input), model_uri=args.model, output_uri=args.output, backbone_weights=args.backbone_weights,
        search=args.search, beam_width=args.beam_width, length_alpha=args.length_alpha, batch_size=args.batch_size,
        io_threads=args.io_threads, images_per_partition=args.images_per_partition, recaption=args.recaption,
        gallery_cards=args.gallery_cards, lock_timeout_hours=args.lock_timeout_hours, mixed_precision=args.mixed_precision,
    )


def encoder_for_model(info, config: CaptionJobConfig) -> EncoderConfig:
    """The CNN the model's training features came from, checked against its recorded identity."""
    features = info.features
    weights_id = str(features["weights"])
    if config.backbone_weights:
        weights, seed = config.backbone_weights, 0
    elif weights_id.startswith("imagenet"):
        weights, seed = "imagenet", 0
    elif weights_id.startswith("random:seed="):
        weights, seed = "none", int(weights_id.split("=", 1)[1])
    else:
        raise InputError(f"{info.uri}: the model was trained on features from a weights file ({weights_id}); pass that file with --backbone-weights")
    encoder = EncoderConfig(
        backbone=features["backbone"], weights=weights, seed=seed, pooling=features.get("pooling", "avg"),
        batch_size=config.batch_size, mixed_precision=config.mixed_precision,
    )
    check_identity(config.backbone_weights or config.model_uri, features, encoder_identity(encoder), "pass the CNN weights the model was trained with (--backbone-weights)")
    return encoder


def list_objects(inputs) -> list[tuple]:
    """(uri, input, version, size, mtime) for every object under every input, each URI once."""
    seen: dict[str, tuple] = {}
    for root in inputs:
        for info in storage.list_files(root, include_hidden=True):
            seen.setdefault(info.uri, (info.uri, root, info.version, int(info.size), info.mtime))
    return sorted(seen.values())


class OutputLock:
    """A lock object at the output: one run at a time per output (overlapping schedules)."""

    def __init__(self, output_uri: str, run_id: str, timeout_hours: float):
        self.uri = storage.join(output_uri, LOCK)
        self.run_id = run_id
        self.timeout = timeout_hours * 3600

    def __enter__(self):
        if storage.exists(self.uri):
            held = json.loads(storage.read_text(self.uri))
            age = time.time() - float(held.get("since", 0))
            if age < self.timeout:
                raise InputError(f"{self.uri}: run {held.get('run_id')} has been running for {age / 60:.0f} min on this output; wait for it, or delete the lock if that run is dead")
            LOG.warning("taking over abandoned lock of run %s (%.1f h old)", held.get("run_id"), age / 3600)
        storage.write_text(self.uri, json.dumps({"run_id": self.run_id, "since": time.time()}))
        return self

    def __exit__(self, *exc):
        storage.delete(self.uri)
        return False


def read_results(spark, output_uri: str):
    """Committed result rows (empty DataFrame when there are none yet)."""
    from pyspark.sql import types as T

    from captioning.pipeline.transforms.bulk_captions import RESULT_SCHEMA

    schema = T.StructType(list(RESULT_SCHEMA.fields) + [T.StructField("run_date", T.StringType(), True)])
    root = storage.join(output_uri, "captions")
    if not storage.exists(root):
        return spark.createDataFrame([], schema)
    return spark.read.schema(schema).parquet(root)


def finish_run(spark, config: CaptionJobConfig, run_id: str, extra: dict) -> dict:
    """Exports, summary and gallery of a run whose rows are committed."""
    from pyspark.sql import functions as F

    rows = read_results(spark, config.output_uri).where(F.col("run_id") == run_id)
    rows.drop("run_date").write.mode("overwrite").json(storage.join(config.output_uri, "exports", f"run_id={run_id}"))
    counts = {r["status"]: r["count"] for r in rows.groupBy("status").count().collect()}
    reasons = {r["error"]: r["count"] for r in rows.where(F.col("error").isNotNull()).groupBy("error").count().collect()}
    summary = {"run_id": run_id, "output": config.output_uri, "inputs": list(config.inputs), "model": config.model_uri, "counts": counts, "reasons": reasons, "rows": sum(counts.values()), **extra}
    storage.write_text(storage.join(config.output_uri, "runs", f"{run_id}.json"), json.dumps(summary, indent=1))
    if config.gallery_cards:
        write_run_gallery(rows, config, summary)
    return summary


def write_run_gallery(rows, config: CaptionJobConfig, summary: dict) -> None:
    from pyspark.sql import functions as F

    from captioning.report.gallery import thumbnail, write_gallery

    shown = rows.orderBy(F.col("status") != "ok", "uri").limit(config.gallery_cards).collect()
    thumbnails = {}
    for row in shown:
        if row["status"] == "ok":
            try:
                small = thumbnail(storage.read_bytes(row["uri"]))
            except storage.StorageError:
                small = None
            if small:
                thumbnails[row["uri"]] = small
    records = [{**row.asDict(), "captioned_at": row["captioned_at"].isoformat() if row["captioned_at"] else None} for row in shown]
    title = f"Captions of run {summary['run_id']}"
    page = storage.join(config.output_uri, "gallery", f"{summary['run_id']}.html")
    full = storage.join(config.output_uri, "exports", f"run_id={summary['run_id']}")
    write_gallery(page, records, summary, thumbnails, title, max_cards=config.gallery_cards, full_output_uri=full)
    storage.write_bytes(storage.join(config.output_uri, "gallery.html"), storage.read_bytes(page))


def unfinished_runs(spark, config: CaptionJobConfig) -> list[str]:
    """Runs whose rows are committed but whose summary was never written (killed at the end)."""
    committed = {r["run_id"] for r in read_results(spark, config.output_uri).select("run_id").distinct().collect()}
    return sorted(r for r in committed if not storage.exists(storage.join(config.output_uri, "runs", f"{r}.json")))


def run(config: CaptionJobConfig, spark=None) -> dict:
    from pyspark.sql import functions as F

    from captioning.model.captioner import default_search
    from captioning.pipeline.transforms.bulk_captions import OBJECT_SCHEMA, BulkConfig, caption_objects

    started = time.time()
    info = read_info(config.model_uri)
    encoder = encoder_for_model(info, config)
    search = default_search(info, config.search, config.beam_width, config.length_alpha)
    objects = list_objects(config.inputs)
    run_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    summary = {"run_id": run_id, "listed": len(objects), "model_id": info.identity}
    with spark_for("caption-images", spark) as session, OutputLock(config.output_uri, run_id, config.lock_timeout_hours):
        for earlier in unfinished_runs(session, config):
            LOG.info("completing exports of earlier run %s", earlier)
            finish_run(session, config, earlier, {"recovered": True})
        listing = session.createDataFrame(session.sparkContext.parallelize(objects, max(1, session.sparkContext.defaultParallelism)), OBJECT_SCHEMA)
        done = read_results(session, config.output_uri)
        if config.recaption:
            done = done.where(F.col("model_id") == info.identity)
        todo = listing.join(done.select("uri", "version").distinct(), ["uri", "version"], "left_anti")
        count = todo.count()
        summary["already_answered"] = len(objects) - count
        if count == 0:
            LOG.info("nothing new under %s for model %s: nothing written", ", ".join(config.inputs), info.identity)
            summary.update(new=0, seconds=round(time.time() - started, 2))
            return summary
        partitions = max(session.sparkContext.defaultParallelism, -(-count // config.images_per_partition))
        bulk = BulkConfig(model_uri=config.model_uri, model_id=info.identity, run_id=run_id, encoder=encoder, search=search, decode=DecodeConfig(), io_threads=config.io_threads)
        results = caption_objects(todo.repartition(partitions), bulk)
        run_date = run_id[:4] + "-" + run_id[4:6] + "-" + run_id[6:8]
        target = storage.join(config.output_uri, "captions", f"run_date={run_date}", f"run_id={run_id}")
        results.drop("run_id").write.mode("overwrite").parquet(target)
        seconds = time.time() - started
        summary.update(new=count, seconds=round(seconds, 2), images_per_second=round(count / max(seconds, 1e-9), 2), started_at=dt.datetime.fromtimestamp(started, dt.timezone.utc).isoformat())
        summary = finish_run(session, config, run_id, summary)
    return summary


def main(argv: list[str] | None = None, spark=None) -> int:
    def job() -> int:
        print(json.dumps(run(config_from_args(build_parser().parse_args(argv)), spark), indent=1))
        return 0

    return run_main(job)


if __name__ == "__main__":
    raise SystemExit(main())
