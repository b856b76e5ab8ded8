"""Reading images from S3 against reading them from local files, for both image-reading jobs.

    .venv/bin/python bench/bench_s3_io.py --images 320 --json-out bench/results/s3-io.json

One process, one Spark session, the same images and CNN for every run:

  * the same ``--images`` images as a local folder and as objects in a bucket of a local
    S3 server (moto's, on 127.0.0.1, started and stopped here);
  * extract-features and caption-images (captioning.pipeline) each run on the folder and
    on the bucket prefix, alternating, ``--repeats`` times each (the median is reported),
    every run into a fresh local output, so only where the images are read from differs;
    each job is warmed up first on ``--warmup-images`` images (every Python worker holds
    the CNN, and for captioning the decoder, before anything is timed);
  * the per-object read latency the jobs' reading threads (``--io-threads``) have to hide:
    each image read once, one after another, from the bucket and from the folder.

Goal printed: S3 images/s / local images/s >= 0.8 for both jobs. The local server runs on
the same cores as the jobs (real S3 does not), so on a small machine this is a
conservative measure; network latency to real S3 is larger than here, which is what the
reading threads overlap. The caption model is a small one trained here first, not timed
(``--model`` to use another).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

try:
    from . import _benchlib as lib
except ImportError:  # run as a script: bench/ is on sys.path
    import _benchlib as lib

GOAL_S3_VS_LOCAL = 0.8
BUCKET = "bench-images"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench_s3_io.py", description="extract-features and caption-images reading from a local S3 server vs from local files, side by side.")
    parser.add_argument("--images", type=int, default=320, help="images each measured run reads (default 320)")
    parser.add_argument("--warmup-images", type=int, default=0, help="images of each warm-up job; default: --batch-size per Spark core")
    parser.add_argument("--repeats", type=int, default=2, help="runs per job and source; the median is reported (default 2)")
    parser.add_argument("--backbone", default="mobilenetv3small", help="CNN backbone of the small model trained here (default mobilenetv3small)")
    parser.add_argument("--weights", default="none", help="CNN weights of that model: 'none' (seeded random, default) or 'imagenet'")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample data, random weights and training (default 0)")
    parser.add_argument("--model", default=None, help="an existing model directory; default: train a small one first")
    parser.add_argument("--backbone-weights", default=None, help="CNN weights file for --model when it was trained on features from a weights file")
    parser.add_argument("--train-images", type=int, default=200, help="sample images to train the small model on (default 200)")
    parser.add_argument("--search", choices=("beam", "greedy"), default="beam", help="caption search (default beam, as the job)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per CNN call (default 32)")
    parser.add_argument("--io-threads", type=int, default=8, help="concurrent reads per task, as the jobs' --io-threads (default 8)")
    lib.add_work_options(parser, "inputs, model and job outputs")
    return parser


def read_latencies(uris: list[str]) -> dict:
    """Milliseconds per object read, one after another (what a single reading thread waits)."""
    from captioning.store import storage

    times = []
    for uri in uris:
        started = time.perf_counter()
        storage.read_bytes(uri)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {"objects": len(times), "median_ms": statistics.median(times), "p90_ms": times[int(0.9 * (len(times) - 1))], "mean_ms": statistics.fmean(times)}


def run(args: argparse.Namespace) -> dict:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_bulk_captioning as bulk

    from captioning.store.local_s3 import LocalS3, upload_folder

    lib.setup_environment()
    bulk.configure_driver_tensorflow()
    results: dict = {"args": vars(args), "machine_start": lib.machine_info()}
    with lib.Workdir(args.workdir, args.keep) as work, LocalS3(buckets=(BUCKET,)) as server:
        paths = lib.source_images(args.dataset, args.images + (args.warmup_images or 64), work.path, args.seed)
        measured = lib.link_images(paths[: args.images], work.sub("photos"))
        warm_count = args.warmup_images or None
        spark = lib.spark_session("bench-s3-io", args.master)
        try:
            parallelism = spark.sparkContext.defaultParallelism
            warm_count = warm_count or args.batch_size * parallelism
            warm = lib.link_images(paths[args.images : args.images + warm_count], work.sub("warmup"))
            prefix = f"s3://{BUCKET}/photos"
            started = time.time()
            upload_folder(measured.folder, prefix)
            lib.note(f"uploaded {args.images} images to {prefix} on {server.endpoint} in {time.time() - started:.1f}s")
            model = args.model or bulk.train_small_model(spark, work.sub("train"), args)
            encoder = bulk.model_encoder(model, args)
            reading = ["--io-threads", str(args.io_threads)]
            sources = {"local": measured.folder, "s3": prefix + "/"}
            jobs = {
                "extract": lambda source, out: bulk.run_extract(spark, bulk.extract_argv(encoder, source, out, args.batch_size) + reading),
                "caption": lambda source, out: bulk.run_caption(spark, bulk.caption_argv(model, source, out, args) + reading),
            }
            lib.note(f"warm-up jobs on {warm_count} images")
            for name, job in jobs.items():
                job(warm.folder, work.sub(f"warmup-{name}"))
            seconds: dict[str, list[float]] = {f"{job}-{source}": [] for job in jobs for source in sources}
            for repeat in range(args.repeats):
                for name, job in jobs.items():
                    for source, uri in sources.items():  # alternating, so drift in the machine's load hits both
                        lib.note(f"{name} from {source} (run {repeat + 1} of {args.repeats})")
                        summary, wall = lib.timed(lambda: job(uri, work.sub(f"{name}-{source}-{repeat}")))
                        done = summary.get("ok", summary.get("new"))
                        if done != args.images:
                            raise SystemExit(f"error: {name} from {source} answered {done} of {args.images} images: {summary}")
                        seconds[f"{name}-{source}"].append(wall)
            results["latency"] = {
                "s3": read_latencies([f"{prefix}/{os.path.basename(path)}" for path in measured.paths]),
                "local": read_latencies(list(measured.paths)),
            }
        finally:
            spark.stop()
    results["machine_end"] = {"load_average_1_5_15": lib.load_average()}
    results["seconds"] = seconds
    results["images_per_second"] = {key: args.images / statistics.median(values) for key, values in seconds.items()}
    results["s3_over_local"] = {job: lib.ratio(results["images_per_second"][f"{job}-s3"], results["images_per_second"][f"{job}-local"]) for job in jobs}
    return results


def render_table(results: dict) -> str:
    args, rate, ratio, latency = results["args"], results["images_per_second"], results["s3_over_local"], results["latency"]
    lines = [
        f"Reading images from a local S3 server vs local files: {args['images']} images, backbone {args['backbone']}, batch {args['batch_size']}, "
        f"{args['io_threads']} reading threads per task, median of {args['repeats']} runs each",
        f"machine: {results['machine_start']['cpus']} CPUs, load average at start {results['machine_start']['load_average_1_5_15']}, at end {results['machine_end']['load_average_1_5_15']}",
        "",
        "| job | local files images/s | S3 images/s | S3 / local |",
        "|---|---:|---:|---:|",
    ]
    for job, title in (("extract", "extract-features"), ("caption", "caption-images")):
        lines.append(f"| {title} | {lib.fmt(rate[f'{job}-local'])} | {lib.fmt(rate[f'{job}-s3'])} | {lib.fmt(ratio[job], 3)} |")
    lines += [
        "",
        f"read latency per object, one at a time: S3 median {lib.fmt(latency['s3']['median_ms'])} ms (p90 {lib.fmt(latency['s3']['p90_ms'])}), "
        f"local median {lib.fmt(latency['local']['median_ms'], 3)} ms (p90 {lib.fmt(latency['local']['p90_ms'], 3)})",
    ]
    for job in ("extract", "caption"):
        lines.append(lib.goal_line(f"{job}: S3 / local images/s", ratio[job], f">= {GOAL_S3_VS_LOCAL}", None if ratio[job] is None else ratio[job] >= GOAL_S3_VS_LOCAL))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.images < 1 or args.repeats < 1:
        raise SystemExit("error: --images and --repeats must be positive")
    results = run(args)
    return lib.print_report(render_table(results), results, args.json_out)


if __name__ == "__main__":
    raise SystemExit(main())
