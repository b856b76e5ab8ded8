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
"""
from __future__ import annotations

import argparse
import json
import logging
import time
import uuid
from dataclasses import dataclass, field

from captioning.store import storage
from captioning.model.encoder import EncoderConfig, backbone_spec, encoder_identity
from captioning.store.feature_store import Manifest, check_identity, part_uri, read_manifest, write_manifest
from captioning.data.images import DecodeConfig, is_image_name
from captioning.pipeline.runner import InputError, run_main, spark_for

LOG = logging.getLogger("extract_features")
IMAGE_FOLDERS = ("Flicker8k_Dataset", "Flickr8k_Dataset", "Images")
ROW_GROUP_BYTES = 8 * 1024 * 1024  # ~2k float16 ResNet vectors: fine-grained shuffling for Petastorm


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
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    dtype: str = "float16"
    io_threads: int = 8
    images_per_partition: int = 256
    overwrite: bool = False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="extract-features", description="Compute a CNN feature vector for every image and store them in Parquet.")
    parser.add_argument("--input", required=True, help="Flickr8k dataset root, or any folder / s3:// prefix of images (searched recursively)")
    parser.add_argument("--output", required=True, help="feature store folder / s3:// prefix")
    parser.add_argument("--backbone", default="resnet50", help="resnet50 (default, as the original project), inceptionv3, efficientnetb0, mobilenetv3small")
    parser.add_argument("--weights", default="imagenet", help="'imagenet' (Keras download; needs internet), a local path or s3:// URI of a weights file (.h5/.weights.h5), or 'none' (random, seeded)")
    parser.add_argument("--pooling", choices=("avg", "max"), default="avg", help="global pooling of the last feature map (default avg, as the original project)")
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed for --weights none (default 0)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per CNN call (default 32)")
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float16", help="storage precision of the vectors (default float16)")
    parser.add_argument("--mixed-precision", action="store_true", help="run the CNN in mixed float16 (GPUs with tensor cores)")
    parser.add_argument("--io-threads", type=int, default=8, help="concurrent image reads/decodes per task (default 8)")
    parser.add_argument("--images-per-partition", type=int, default=256, help="images per Spark task (default 256)")
    parser.add_argument("--max-pixels", type=int, default=DecodeConfig().max_pixels, help="refuse images with more pixels than this (decompression-bomb guard)")
    parser.add_argument("--overwrite", action="store_true", help="recompute every image and replace the store (also when it was made by another model)")
    return parser


def config_from_args(args: argparse.Namespace) -> ExtractConfig:
    backbone_spec(args.backbone)  # unknown names fail here, listing the valid ones
    if args.batch_size < 1 or args.io_threads < 1 or args.images_per_partition < 1:
        raise InputError("--batch-size, --io-threads and --images-per-partition must be positive")
    return ExtractConfig(
        input_uri=args.input,
        output_uri=args.output,
        encoder=EncoderConfig(backbone=args.backbone, weights=args.weights, pooling=args.pooling, batch_size=args.batch_size, mixed_precision=args.mixed_precision, seed=args.seed),
        decode=DecodeConfig(max_pixels=args.max_pixels),
        dtype=args.dtype,
        io_threads=args.io_threads,
        images_per_partition=args.images_per_partition,
        overwrite=args.overwrite,
    )


def image_folder(input_uri: str) -> str:
    """The dataset's image folder when ``input_uri`` is a Flickr8k root, else ``input_uri``."""
    if not storage.exists(input_uri):
        raise InputError(f"{input_uri}: not found; expected a dataset root or a folder / s3:// prefix of images")
    for name in IMAGE_FOLDERS:
        candidate = storage.join(input_uri, name)
        if storage.isdir(candidate):
            return candidate
    return input_uri


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


def _spark_paths(store_uri: str, parts) -> list[str]:
    return [part_uri(store_uri, p) for p in parts]


def run(config: ExtractConfig, spark=None) -> dict:
    from captioning.pipeline.transforms.features import FeatureConfig, extract_features, listing_frame, partitions_for

    started = time.time()
    folder = image_folder(config.input_uri)
    images, others = list_images(folder)
    if not images:
        raise InputError(f"{folder}: no images found (looked for {', '.join(sorted({'jpg', 'jpeg', 'png', 'webp', 'bmp', 'gif'}))} files)")
    identity = encoder_identity(config.encoder)
    previous = None if config.overwrite else read_manifest(config.output_uri)
    if previous is not None:
        check_identity(config.output_uri, identity, previous.encoder, "use --overwrite to replace them, or write to another --output")
        if previous.dtype != config.dtype:
            raise InputError(f"{config.output_uri}: stored as {previous.dtype}, asked for {config.dtype}; use --overwrite or the same --dtype")

    stage_config = FeatureConfig(encoder=config.encoder, decode=config.decode, dtype=config.dtype, io_threads=config.io_threads, images_per_partition=config.images_per_partition)
    run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:8]
    summary = {"input": config.input_uri, "image_folder": folder, "output": config.output_uri, "run_id": run_id, "listed_images": len(images), "skipped_non_image": len(others)}
    with spark_for("extract-features", spark) as session:
        listing = listing_frame(session, images, session.sparkContext.defaultParallelism)
        old = None
        if previous is not None:
            old = session.read.parquet(*_spark_paths(config.output_uri, previous.parts))
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
        spread = todo.repartition(partitions_for(todo_count, stage_config, session.sparkContext.defaultParallelism))
        features = extract_features(spread, stage_config)
        new_part = part_uri(config.output_uri, run_id)
        features.write.option("parquet.block.size", ROW_GROUP_BYTES).mode("overwrite").parquet(new_part)
        written = session.read.parquet(new_part)
        by_status = {(r["status"], r["error"]): r["count"] for r in written.groupBy("status", "error").count().collect()}
        summary.update(
            computed=todo_count,
            ok=sum(c for (s, _), c in by_status.items() if s == "ok"),
            errors={e: c for (s, e), c in by_status.items() if s != "ok"},
        )
        parts = [run_id]
        obsolete: list[str] = []
        if previous is not None:
            if changed:
                compact = run_id + "-compacted"
                kept = old.join(written.select("uri"), "uri", "left_anti")
                kept.unionByName(written).write.option("parquet.block.size", ROW_GROUP_BYTES).mode("overwrite").parquet(part_uri(config.output_uri, compact))
                parts, obsolete = [compact], list(previous.parts) + [run_id]
            else:
                parts = list(previous.parts) + [run_id]
        totals = {r["status"]: r["count"] for r in session.read.parquet(*_spark_paths(config.output_uri, parts)).groupBy("status").count().collect()}
    summary["seconds"] = round(time.time() - started, 2)
    summary["images_per_second"] = round(todo_count / max(summary["seconds"], 1e-9), 2)
    history = (previous.history if previous else ()) + (summary,)
    write_manifest(config.output_uri, Manifest(encoder=identity, dtype=config.dtype, parts=tuple(parts), rows=sum(totals.values()), errors=sum(c for s, c in totals.items() if s != "ok"), history=history[-20:]))
    _remove_unlisted_parts(config.output_uri, parts, obsolete)
    return summary


def _remove_unlisted_parts(store_uri: str, parts: list[str], obsolete: list[str]) -> None:
    """Delete parts no manifest lists: superseded ones and leftovers of interrupted runs."""
    root = storage.join(store_uri, "parts")
    names = {storage.basename(storage.parent(f.uri)) for f in storage.list_files(root)} if storage.exists(root) else set()
    for name in (names | set(obsolete)) - set(parts):
        storage.delete(part_uri(store_uri, name), recursive=True)


def main(argv: list[str] | None = None, spark=None) -> int:
    def job() -> int:
        summary = run(config_from_args(build_parser().parse_args(argv)), spark)
        print(json.dumps(summary, indent=1))
        return 0

    return run_main(job)


if __name__ == "__main__":
    raise SystemExit(main())
