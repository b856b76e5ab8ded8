"""Extract CNN features of every image into a Parquet feature store.

    spark-submit jobs/extract_features.py --input s3://my-bucket/flickr8k --output s3://my-bucket/features/resnet50 \
        --backbone resnet50 --weights s3://my-bucket/weights/resnet50_notop.weights.h5
    captioner extract-features --input data/sample --output data/features --backbone mobilenetv3small --weights none

``--input`` is a Flickr8k-layout dataset root (its Flicker8k_Dataset/ or Images/ folder
is used) or any folder / bucket prefix of images. One row per image: image_id (path
below the image folder), uri, size, version (S3 ETag or size+mtime), mtime, features,
status and error reason. Reruns compute only new or changed images; ``--overwrite``
recomputes everything. On GPU executors give each task one GPU
(``--conf spark.task.resource.gpu.amount=1``); the model is built once per worker.
The store's layout and manifest belong to :mod:`captioning.store.feature_store`.
"""
from __future__ import annotations

import argparse
import logging
import time
import uuid
from dataclasses import dataclass, field

from captioning.data.layout import describe_image_extensions, image_folder, is_image_name
from captioning.errors import InputError
from captioning.model.encoder_spec import BACKBONES, POOLING_MODES, EncoderConfig, encoder_identity
from captioning.pipeline.options import add_lease_options, add_reading_options, default, lease_from_args, non_negative_int, reading_from_args
from captioning.pipeline.reading import ImageReading
from captioning.cluster.session import require_s3
from captioning.pipeline.runner import run_stage, spark_for
from captioning.store import feature_store, storage
from captioning.store.feature_store import Manifest, check_identity, read_manifest, write_manifest
from captioning.store.lease import Lease, LeaseConfig

LOG = logging.getLogger("extract_features")
DTYPES = ("float16", "float32")


@dataclass(frozen=True)
class ImageFile:
    image_id: str
    uri: str
    size: int
    version: str
    mtime: float | None


@dataclass(frozen=True)
class ExtractConfig:
    input_uri: str
    output_uri: str
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    reading: ImageReading = field(default_factory=ImageReading)
    dtype: str = "float16"  # storage precision of the vectors; float32 doubles the store
    overwrite: bool = False
    lease: LeaseConfig = field(default_factory=LeaseConfig)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="extract-features", description="Compute a CNN feature vector for every image and store them in Parquet.")
    parser.add_argument("--input", required=True, help="Flickr8k dataset root, or any folder / s3:// prefix of images (searched recursively)")
    parser.add_argument("--output", required=True, help="feature store folder / s3:// prefix")
    parser.add_argument("--backbone", type=str.lower, default=default(EncoderConfig, "backbone"), choices=tuple(BACKBONES), help="CNN backbone (default %(default)s, as the original project)")
    parser.add_argument("--weights", default=default(EncoderConfig, "weights"), help="'imagenet' (Keras download; needs internet), a local path or s3:// URI of a weights file (.h5/.weights.h5), or 'none' (random, seeded) (default %(default)s)")
    parser.add_argument("--pooling", choices=POOLING_MODES, default=default(EncoderConfig, "pooling"), help="global pooling of the last feature map (default %(default)s, as the original project)")
    parser.add_argument("--seed", type=int, default=default(EncoderConfig, "seed"), help="initialisation seed for --weights none and --channels (default %(default)s)")
    parser.add_argument(
        "--spatial", action="store_true",
        help="store the last feature map (grid of rows x columns x channels) instead of one pooled vector: what the attention decoder needs. "
        "float16 per image: resnet50 7x7x2048 = 196 KiB, inceptionv3 8x8x2048 = 256 KiB, efficientnetb0 7x7x1280 = 122.5 KiB, mobilenetv3small 7x7x576 = 55 KiB (pooled: 4 KiB or less)",
    )
    parser.add_argument("--channels", type=non_negative_int, default=default(EncoderConfig, "channels"), help="with --spatial: project each grid cell to this many channels with a fixed random matrix from --seed (e.g. 256: resnet50 7x7x256 = 24.5 KiB per image); default %(default)s keeps them all")
    parser.add_argument("--dtype", choices=DTYPES, default=default(ExtractConfig, "dtype"), help="storage precision of the vectors (default %(default)s)")
    add_reading_options(parser)
    add_lease_options(parser)
    parser.add_argument("--overwrite", action="store_true", help="recompute every image and replace the store (also when it was made by another model)")
    return parser


def config_from_args(args: argparse.Namespace) -> ExtractConfig:
    return ExtractConfig(
        input_uri=args.input,
        output_uri=args.output,
        encoder=EncoderConfig(
            backbone=args.backbone, weights=args.weights, pooling=args.pooling, batch_size=args.batch_size, mixed_precision=args.mixed_precision, seed=args.seed,
            spatial=args.spatial, channels=args.channels,
        ),
        reading=reading_from_args(args),
        dtype=args.dtype,
        overwrite=args.overwrite,
        lease=lease_from_args(args),
    )


def list_images(folder: str) -> tuple[list[ImageFile], list[str]]:
    """(images, other files) below ``folder``; image_id is the path relative to it."""
    prefix = folder.rstrip("/") + "/"
    images, others = [], []
    for info in storage.list_files(folder):
        relative = info.uri[len(prefix):] if info.uri.startswith(prefix) else storage.basename(info.uri)
        if is_image_name(info.uri):
            images.append(ImageFile(relative, info.uri, info.size, info.version, info.mtime))
        else:
            others.append(info.uri)
    return images, others


def previous_store(config: ExtractConfig, identity: dict) -> Manifest | None:
    """The store to add to; one made by another model or precision is refused unless --overwrite."""
    previous = None if config.overwrite else read_manifest(config.output_uri)
    if previous is not None:
        check_identity(config.output_uri, identity, previous.encoder, "use --overwrite to replace them, or write to another --output")
        if previous.dtype != config.dtype:
            raise InputError(f"{config.output_uri}: stored as {previous.dtype}, asked for {config.dtype}; use --overwrite or the same --dtype")
    return previous


def run(config: ExtractConfig, spark=None) -> dict:
    """The whole stage, holding the store's lease: one run at a time writes a store."""
    storage.check_writable(config.output_uri)
    folder = image_folder(config.input_uri)
    images, others = list_images(folder)
    if not images:
        raise InputError(f"{folder}: no images found (looked for {describe_image_extensions()} files)")
    identity = encoder_identity(config.encoder)  # reads a weights file now, not after the listing
    run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:8]
    with Lease(config.output_uri, run_id, config.lease) as lease:
        current = read_manifest(config.output_uri)  # what readers read now, --overwrite or not
        removed = feature_store.remove_unlisted_parts(config.output_uri, current.parts if current else ())
        if removed:
            LOG.info("removed parts no manifest lists (left by interrupted runs): %s", ", ".join(removed))
        return extract(config, run_id, folder, images, others, identity, lease, spark)


def extract(config: ExtractConfig, run_id: str, folder: str, images: list[ImageFile], others: list[str], identity: dict, lease: Lease, spark=None) -> dict:
    from captioning.pipeline.transforms.features import FeatureConfig, extract_features, listing_frame

    started = time.time()
    previous = previous_store(config, identity)
    stage = FeatureConfig(encoder=config.encoder, reading=config.reading, dtype=config.dtype)
    summary = {
        "input": config.input_uri, "image_folder": folder, "output": config.output_uri, "run_id": run_id, "listed_images": len(images), "skipped_non_image": len(others),
        "feature_shape": list(config.encoder.feature_shape), "vector_bytes": feature_store.vector_bytes(config.encoder.feature_dim, config.dtype),
    }
    with spark_for("extract-features", spark) as session:
        require_s3(session, [config.output_uri])
        parallelism = session.sparkContext.defaultParallelism
        listing = listing_frame(session, images, parallelism)
        old = None
        if previous is not None:
            old = session.read.parquet(*previous.part_uris(config.output_uri))
            todo = listing.join(old.select("uri", "version"), ["uri", "version"], "left_anti")
            changed = old.select("uri").join(todo.select("uri"), "uri", "left_semi").count()
        else:
            todo, changed = listing, 0
        todo_count = todo.count()
        summary.update(up_to_date=len(images) - todo_count, new=todo_count - changed, changed=changed)
        if not todo_count:
            LOG.info("%s is up to date: %d images, nothing to compute", config.output_uri, len(images))
            summary.update(computed=0, ok=0, errors={}, seconds=round(time.time() - started, 2))
            return summary
        plan = feature_store.plan_parts(previous, run_id, changed > 0)
        features = extract_features(todo.repartition(config.reading.partitions_for(todo_count, parallelism)), stage)
        new_part = feature_store.part_uri(config.output_uri, plan.new_part)
        features.write.option("parquet.block.size", feature_store.ROW_GROUP_BYTES).mode("overwrite").parquet(new_part)
        written = session.read.parquet(new_part)
        by_status = {(r["status"], r["error"]): r["count"] for r in written.groupBy("status", "error").count().collect()}
        summary.update(
            computed=todo_count,
            ok=sum(c for (s, _), c in by_status.items() if s == "ok"),
            errors={e: c for (s, e), c in by_status.items() if s != "ok"},
        )
        if plan.compacted:
            kept = old.join(written.select("uri"), "uri", "left_anti")
            compacted = feature_store.part_uri(config.output_uri, plan.compacted)
            kept.unionByName(written).write.option("parquet.block.size", feature_store.ROW_GROUP_BYTES).mode("overwrite").parquet(compacted)
        current = Manifest(encoder=identity, dtype=config.dtype, parts=plan.parts)
        totals = {r["status"]: r["count"] for r in session.read.parquet(*current.part_uris(config.output_uri)).groupBy("status").count().collect()}
    summary["seconds"] = round(time.time() - started, 2)
    summary["images_per_second"] = round(todo_count / max(summary["seconds"], 1e-9), 2)
    lease.check()  # a run that lost its lease must not publish its parts
    history = (previous.history if previous else ()) + (summary,)
    write_manifest(config.output_uri, Manifest(encoder=identity, dtype=config.dtype, parts=plan.parts, rows=sum(totals.values()), errors=sum(c for s, c in totals.items() if s != "ok"), history=history[-20:]))
    feature_store.remove_unlisted_parts(config.output_uri, plan.parts, plan.obsolete)
    return summary


def main(argv: list[str] | None = None, spark=None) -> int:
    return run_stage(argv, build_parser(), config_from_args, lambda config: run(config, spark))


if __name__ == "__main__":
    raise SystemExit(main())
