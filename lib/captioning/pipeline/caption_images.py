"""Caption every image in one or more buckets / folders, incrementally and exactly once.

    spark-submit jobs/caption_images.py --input s3://photos/2026/ s3://archive/scans/ \
        --model s3://my-bucket/models/merge-v1 --output s3://my-bucket/captions
    captioner caption-images --input data/new-images --model data/model --output data/captions

Every listed object gets one result row (ok, error with its reason, or skipped); the
output's layout (Parquet by run, JSON Lines exports, run summaries, galleries) belongs to
:mod:`captioning.store.bulk_output`.

Each run captions only objects not yet answered: by default an object (same URI and
version) answered once is not captioned again, whatever model answered it; with
``--recaption`` every object not yet captioned by *this* model is captioned again (a new
model version over an old bucket). A run's rows become visible only when Spark commits
its output; a run killed earlier leaves nothing visible, and the next run does its work
(and removes what the killed run left half-written). Runs on one output never overlap:
each holds the output's lease (:mod:`captioning.store.lease`) while it works.
"""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from captioning.model.captioner import encoder_for
from captioning.model.encoder_spec import EncoderConfig
from captioning.model.model_dir import read_info
from captioning.model.search.config import SearchConfig
from captioning.pipeline.options import add_lease_options, add_model_options, add_reading_options, add_search_options, default, lease_from_args, reading_from_args, search_from_args
from captioning.pipeline.reading import ImageReading
from captioning.cluster.session import require_s3
from captioning.pipeline.runner import run_stage, spark_for
from captioning.store import storage
from captioning.store.bulk_output import BulkOutput, new_run_id
from captioning.store.lease import Lease, LeaseConfig

LOG = logging.getLogger("caption_images")


@dataclass(frozen=True)
class CaptionJobConfig:
    inputs: tuple[str, ...]
    model_uri: str
    output_uri: str
    backbone_weights: str | None = None  # weights file of the CNN when the model's features came from one
    search: SearchConfig = field(default_factory=SearchConfig)
    batch_size: int = default(EncoderConfig, "batch_size")  # images per CNN and decoder call
    mixed_precision: bool = False
    reading: ImageReading = field(default_factory=ImageReading)
    recaption: bool = False
    gallery_cards: int = 500  # images shown in the HTML gallery; 0: no gallery
    lease: LeaseConfig = field(default_factory=LeaseConfig)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="caption-images", description="Caption every image under one or more bucket prefixes or folders; one result row per object, exactly once.")
    parser.add_argument("--input", nargs="+", required=True, help="bucket prefixes (s3://bucket/prefix/) or folders, searched recursively")
    add_model_options(parser)
    parser.add_argument("--output", required=True, help="output folder / s3:// prefix (captions/, exports/, runs/, gallery/)")
    add_search_options(parser)
    add_reading_options(parser)
    parser.add_argument("--recaption", action="store_true", help="caption again every object this model has not captioned yet, even if an earlier model did")
    parser.add_argument("--gallery-cards", type=int, default=default(CaptionJobConfig, "gallery_cards"), help="images shown in the HTML gallery (default %(default)s; 0 = no gallery)")
    add_lease_options(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> CaptionJobConfig:
    return CaptionJobConfig(
        inputs=tuple(args.input), model_uri=args.model, output_uri=args.output, backbone_weights=args.backbone_weights,
        search=search_from_args(args), batch_size=args.batch_size, mixed_precision=args.mixed_precision, reading=reading_from_args(args),
        recaption=args.recaption, gallery_cards=args.gallery_cards, lease=lease_from_args(args),
    )


def list_objects(inputs) -> list[tuple]:
    """(uri, input, version, size, mtime) for every object under every input, each URI once."""
    seen: dict[str, tuple] = {}
    for root in inputs:
        for info in storage.list_files(root, include_hidden=True):
            seen.setdefault(info.uri, (info.uri, root, info.version, int(info.size), info.mtime))
    return sorted(seen.values())


def read_results(spark, output: BulkOutput):
    """Committed result rows (empty DataFrame when there are none yet)."""
    from pyspark.sql import types as T

    from captioning.pipeline.transforms.bulk_captions import RESULT_SCHEMA

    schema = T.StructType(list(RESULT_SCHEMA.fields) + [T.StructField("run_date", T.StringType(), True)])
    if not storage.exists(output.captions):
        return spark.createDataFrame([], schema)
    return spark.read.schema(schema).parquet(output.captions)


def finish_run(spark, config: CaptionJobConfig, run_id: str, extra: dict) -> dict:
    """Exports, summary and gallery of a run whose rows are committed."""
    from pyspark.sql import functions as F

    output = BulkOutput(config.output_uri)
    rows = read_results(spark, output).where(F.col("run_id") == run_id)
    rows.drop("run_date").write.mode("overwrite").json(output.export(run_id))
    counts = {r["status"]: r["count"] for r in rows.groupBy("status").count().collect()}
    reasons = {r["error"]: r["count"] for r in rows.where(F.col("error").isNotNull()).groupBy("error").count().collect()}
    summary = {"run_id": run_id, "output": config.output_uri, "inputs": list(config.inputs), "model": config.model_uri, "counts": counts, "reasons": reasons, "rows": sum(counts.values()), **extra}
    output.write_summary(summary)
    if config.gallery_cards:
        write_run_gallery(rows, config, summary)
    return summary


def write_run_gallery(rows, config: CaptionJobConfig, summary: dict) -> None:
    from pyspark.sql import functions as F

    from captioning.report.gallery import render_gallery, thumbnail

    output = BulkOutput(config.output_uri)
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
    run_id = summary["run_id"]
    page = output.gallery(run_id)
    html = render_gallery(records, summary, thumbnails, f"Captions of run {run_id}", max_cards=config.gallery_cards, full_output_uri=output.export(run_id))
    storage.write_text(page, html)
    storage.write_text(output.latest_gallery, html)


def unfinished_runs(spark, config: CaptionJobConfig) -> list[str]:
    """Runs whose rows are committed but whose summary was never written (killed at the end)."""
    output = BulkOutput(config.output_uri)
    committed = {r["run_id"] for r in read_results(spark, output).select("run_id").distinct().collect()}
    return sorted(r for r in committed if not output.has_summary(r))


class RunProgress:
    """How far a run got: whether its rows' write returned, and the Spark context running it."""

    def __init__(self) -> None:
        self.written = False
        self.jobs = None


@contextmanager
def discarded_if_interrupted(output: BulkOutput, run_id: str) -> Iterator[RunProgress]:
    """A run stopped (SIGTERM, Ctrl-C, an error) before its rows' write returned leaves no rows.

    Spark may commit the write between the signal and the job's cancellation; entered outside
    ``spark_for``, this runs after an owned session has stopped, when nothing can commit any more.
    """
    progress = RunProgress()
    try:
        yield progress
    except BaseException:
        if not progress.written:
            if progress.jobs is not None:
                try:
                    progress.jobs.cancelJobGroup(run_id)
                except Exception:  # the context may already be stopped; the rows go either way
                    LOG.debug("could not cancel the jobs of run %s", run_id, exc_info=True)
            output.discard_run(run_id)
        raise


def run(config: CaptionJobConfig, spark=None) -> dict:
    from pyspark.sql import functions as F

    from captioning.pipeline.transforms.bulk_captions import OBJECT_SCHEMA, BulkConfig, caption_objects

    started = time.time()
    storage.check_writable(config.output_uri)
    info = read_info(config.model_uri)
    encoder = encoder_for(info, config.backbone_weights, config.batch_size, config.mixed_precision)
    objects = list_objects(config.inputs)
    run_id = new_run_id(started)
    output = BulkOutput(config.output_uri)
    summary = {"run_id": run_id, "listed": len(objects), "model_id": info.identity}
    with Lease(config.output_uri, run_id, config.lease) as lease, discarded_if_interrupted(output, run_id) as progress, spark_for("caption-images", spark) as session:
        require_s3(session, [config.output_uri])
        removed = output.remove_debris()
        if removed:
            LOG.info("removed what interrupted runs left half-written: %s", ", ".join(removed))
        for earlier in unfinished_runs(session, config):
            LOG.info("completing exports of earlier run %s", earlier)
            finish_run(session, config, earlier, {"recovered": True})
        parallelism = session.sparkContext.defaultParallelism
        listing = session.createDataFrame(session.sparkContext.parallelize(objects, max(1, parallelism)), OBJECT_SCHEMA)
        done = read_results(session, output)
        if config.recaption:
            done = done.where(F.col("model_id") == info.identity)
        todo = listing.join(done.select("uri", "version").distinct(), ["uri", "version"], "left_anti")
        count = todo.count()
        summary["already_answered"] = len(objects) - count
        if count == 0:
            LOG.info("nothing new under %s for model %s: nothing written", ", ".join(config.inputs), info.identity)
            summary.update(new=0, seconds=round(time.time() - started, 2))
            return summary
        bulk = BulkConfig(model_uri=config.model_uri, model_id=info.identity, run_id=run_id, encoder=encoder, search=config.search, reading=config.reading)
        results = caption_objects(todo.repartition(config.reading.partitions_for(count, parallelism)), bulk)
        lease.check()
        session.sparkContext.setJobGroup(run_id, f"caption-images run {run_id}", interruptOnCancel=True)
        progress.jobs = session.sparkContext
        results.drop("run_id").write.mode("overwrite").parquet(output.run_rows(run_id))
        progress.written = True
        lease.check()
        seconds = time.time() - started
        summary.update(new=count, seconds=round(seconds, 2), images_per_second=round(count / max(seconds, 1e-9), 2), started_at=dt.datetime.fromtimestamp(started, dt.timezone.utc).isoformat())
        summary = finish_run(session, config, run_id, summary)
    return summary


def main(argv: list[str] | None = None, spark=None) -> int:
    return run_stage(argv, build_parser(), config_from_args, lambda config: run(config, spark))


if __name__ == "__main__":
    raise SystemExit(main())
