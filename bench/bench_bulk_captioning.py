"""Bulk captioning throughput against feature extraction alone, and its peak memory.

Throughput (one process, one Spark session, the same images and backbone for both jobs):

    .venv/bin/python bench/bench_bulk_captioning.py --backbone resnet50 --images 320 --json-out bench/results/bulk-resnet50.json

  * feature extraction only: the extract-features job (captioning.pipeline.extract_features)
    on ``--images`` images into a fresh feature store;
  * bulk captioning: the caption-images job (captioning.pipeline.caption_images) on the same
    images into a fresh output: read, decode, CNN, caption search (beam by default, as
    the job), Parquet, then the job's JSON Lines export and HTML gallery.
  Both are timed by the wall clock around the job's ``run()``; the caption-images row is
  also given as the job reports it (its ``seconds`` stop once the captions are committed,
  before the export and gallery). Each measured job is preceded by a warm-up run of the
  same job on ``--warmup-images`` images (default: one batch per Spark core), so every
  Python worker already holds the CNN (and, for captioning, the decoder with its traced
  search); the warm-ups and the Spark session start are reported on their own rows.
  A probe task before and after each measured job lists the Python workers and what they
  hold (Spark stops workers left idle for about a minute).
  Goal printed: captioning images/s / extraction images/s >= 0.8.

  The caption model: ``--model`` (a model directory written by train-decoder; its
  backbone and weights then decide the CNN), or by default a small one trained here
  first and not timed: a ``--train-images`` sample dataset, prepare-captions,
  extract-features with the same backbone, train-decoder for one epoch with the job's
  default decoder sizes. The sample vocabulary has about seventy words, far fewer than
  a real Flickr8k model's, so the decoder's output layer is cheaper here than in
  production; pass ``--model`` to measure a real model.

Memory (each size in a fresh process, its whole process tree sampled every 0.2 s):

    .venv/bin/python bench/bench_bulk_captioning.py --memory --memory-sizes 1000,20000 --json-out bench/results/bulk-memory.json

  runs caption-images alone (session start to stop) on each size and reports peak
  resident memory of the Python driver, the JVM, the largest Python worker and all
  Python workers together; goal printed: peak(largest) / peak(smallest) <= 1.2 for the
  driver and for the largest worker. Default backbone here: mobilenetv3small (fast).

Inputs: ``--dataset`` (a local folder of images or a Flickr8k-layout root) or, by default,
a generated sample dataset (320x240 JPEGs). The images are hard-linked into a temporary
work folder, removed at the end (``--keep`` keeps it). ``--weights none`` (default):
seeded random CNN weights, the same computation as ImageNet weights without a download.

Machine caveats: numbers are only comparable on a quiet machine; the load average is
recorded at the start and end. The same script runs unchanged on a GPU machine with a
CUDA build of TensorFlow (every Spark Python worker uses the visible GPU with memory
growth); use more images there (e.g. ``--images 4096``) and consider ``--master local[4]``.
"""
from __future__ import annotations

import argparse
import json
import os

try:
    from . import _benchlib as lib
except ImportError:  # run as a script: bench/ is on sys.path
    import _benchlib as lib

GOAL_CAPTION_VS_EXTRACT = 0.8
GOAL_MEMORY_RATIO = 1.2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench_bulk_captioning.py",
        description="Images per second of the caption-images job against the extract-features job on the same images; or (--memory) caption-images' peak memory at two sizes.",
    )
    parser.add_argument("--backbone", default=None, help="CNN backbone of the model trained here (default resnet50; mobilenetv3small with --memory)")
    parser.add_argument("--weights", default="none", help="CNN weights of the model trained here: 'none' (seeded random, default), 'imagenet', or a weights file")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample data, random weights and training (default 0)")
    parser.add_argument("--model", default=None, help="an existing model directory (train-decoder output); default: train a small one first")
    parser.add_argument("--backbone-weights", default=None, help="CNN weights file for --model when it was trained on features from a weights file")
    parser.add_argument("--train-images", type=int, default=200, help="sample images to train the small model on (default 200)")
    parser.add_argument("--search", choices=("beam", "greedy"), default="beam", help="caption search of caption-images (default beam, as the job)")
    parser.add_argument("--images", type=int, default=320, help="images measured by both jobs (default 320)")
    parser.add_argument("--warmup-images", type=int, default=0, help="images of each warm-up job; default: --batch-size per Spark core")
    parser.add_argument("--batch-size", type=int, default=32, help="images per CNN and decoder call, as the jobs' --batch-size (default 32)")
    lib.add_work_options(parser, "inputs, model and job outputs")
    lib.add_memory_options(parser, "1000,20000", "train")
    return parser


# --------------------------------------------------------------------------- the jobs


def _parse(module, argv: list[str]):
    return module.config_from_args(module.build_parser().parse_args(argv))


def train_small_model(spark, folder: str, args: argparse.Namespace) -> str:
    """A model directory trained for one epoch on a small sample dataset; returns its path."""
    from captioning.pipeline import extract_features
    from captioning.pipeline import prepare_captions
    from captioning.pipeline import train_decoder
    from captioning.data.sample.config import SampleConfig
    from captioning.data.sample.generate import generate_sample_dataset

    paths = {name: os.path.join(folder, name) for name in ("sample", "prepared", "features", "model")}
    generate_sample_dataset(paths["sample"], SampleConfig(num_images=args.train_images, seed=args.seed + 1))
    prepare_captions.run(_parse(prepare_captions, ["--dataset", paths["sample"], "--output", paths["prepared"]]), spark)
    extract_features.run(_parse(extract_features, ["--input", paths["sample"], "--output", paths["features"], "--backbone", args.backbone, "--weights", args.weights, "--seed", str(args.seed), "--batch-size", str(args.batch_size)]), spark)
    train_decoder.run(_parse(train_decoder, ["--captions", paths["prepared"], "--features", paths["features"], "--output", paths["model"], "--epochs", "1", "--seed", str(args.seed)]), spark)
    return paths["model"]


def model_encoder(model: str, args: argparse.Namespace):
    """The CNN (EncoderConfig) caption-images will use for ``model``, as the job derives it."""
    from captioning.model.captioner import encoder_for
    from captioning.model.model_dir import read_info

    return encoder_for(read_info(model), args.backbone_weights, args.batch_size)


def extract_argv(encoder, input_folder: str, output: str, batch_size: int) -> list[str]:
    return ["--input", input_folder, "--output", output, "--backbone", encoder.backbone, "--weights", encoder.weights, "--seed", str(encoder.seed), "--batch-size", str(batch_size)]


def caption_argv(model: str, input_folder: str, output: str, args: argparse.Namespace) -> list[str]:
    argv = ["--input", input_folder, "--model", model, "--output", output, "--batch-size", str(args.batch_size), "--search", args.search]
    return argv + (["--backbone-weights", args.backbone_weights] if args.backbone_weights else [])


def run_extract(spark, argv: list[str]) -> dict:
    from captioning.pipeline import extract_features

    return extract_features.run(_parse(extract_features, argv), spark)


def run_caption(spark, argv: list[str]) -> dict:
    from captioning.pipeline import caption_images

    return caption_images.run(_parse(caption_images, argv), spark)


def check_extracted(summary: dict, count: int) -> None:
    if summary.get("ok") != count:
        raise SystemExit(f"error: extract-features computed {summary.get('ok')} of {count} images: {summary}")


def check_captioned(summary: dict, count: int) -> None:
    ok = summary.get("counts", {}).get("ok")
    if ok != count:
        raise SystemExit(f"error: caption-images captioned {ok} of {count} images: {summary}")


# --------------------------------------------------------------------------- throughput


def configure_driver_tensorflow() -> None:
    """Memory growth for this process's TensorFlow (training runs here), so that on a GPU
    machine the driver does not reserve the whole GPU the local Spark workers also use."""
    from captioning.model.encoder import configure_tensorflow

    configure_tensorflow(mixed_precision=False)


def throughput(args: argparse.Namespace) -> dict:
    configure_driver_tensorflow()
    results: dict = {"benchmark": "bulk-captioning-throughput", "args": vars(args), "machine_start": lib.machine_info()}
    count = args.images
    lib.note(f"machine: {results['machine_start']['cpus']} CPUs, load {results['machine_start']['load_average_1_5_15']}, GPUs {results['machine_start']['gpus'] or 'none'}")
    rows = {}
    with lib.Workdir(args.workdir, args.keep) as work:
        paths = lib.source_images(args.dataset, count, work.path, args.seed)
        measured = lib.link_images(paths, work.sub("input"))
        spark, session_seconds = lib.timed(lambda: lib.spark_session("bench-bulk-captioning", args.master))
        rows["session"] = {"method": "    Spark session start (JVM)", "images": None, "seconds": session_seconds}
        try:
            parallelism = spark.sparkContext.defaultParallelism
            warm_count = min(args.warmup_images or args.batch_size * parallelism, count)
            warm = lib.link_images(paths[:warm_count], work.sub("warmup-input"))
            model = args.model
            if model is None:
                lib.note(f"training a small {args.backbone} model for one epoch on {args.train_images} sample images (not timed in the comparison)")
                model, train_seconds = lib.timed(lambda: train_small_model(spark, work.sub("training"), args))
                rows["train"] = {"method": "    small model: sample data, prepare, extract, train 1 epoch", "images": args.train_images, "seconds": train_seconds}
            encoder = model_encoder(model, args)
            results["model"] = model
            results["encoder"] = encoder.to_dict()
            probes = {}

            lib.note(f"extract-features: warm-up on {warm_count} images, then {count} images")
            _, seconds = lib.timed(lambda: run_extract(spark, extract_argv(encoder, warm.folder, work.sub("warmup-features"), args.batch_size)))
            rows["extract_warmup"] = {"method": "    extract-features warm-up job", "images": warm_count, "seconds": seconds}
            probes["before_extract"] = lib.probe_workers(spark)
            extracted, seconds = lib.timed(lambda: run_extract(spark, extract_argv(encoder, measured.folder, work.sub("features"), args.batch_size)))
            probes["after_extract"] = lib.probe_workers(spark)
            check_extracted(extracted, count)
            rows["extract"] = {"method": "extract-features job (features only)", "images": count, "seconds": seconds}

            lib.note(f"caption-images: warm-up on {warm_count} images, then {count} images")
            _, seconds = lib.timed(lambda: run_caption(spark, caption_argv(model, warm.folder, work.sub("warmup-captions"), args)))
            rows["caption_warmup"] = {"method": "    caption-images warm-up job", "images": warm_count, "seconds": seconds}
            probes["before_caption"] = lib.probe_workers(spark)
            captioned, seconds = lib.timed(lambda: run_caption(spark, caption_argv(model, measured.folder, work.sub("captions"), args)))
            probes["after_caption"] = lib.probe_workers(spark)
            check_captioned(captioned, count)
            rows["caption"] = {"method": "caption-images job (wall: + export, gallery)", "images": count, "seconds": seconds}
            rows["caption_own"] = {"method": "caption-images job, as it reports (to commit)", "images": count, "seconds": captioned["seconds"]}
            rows["extract_own"] = {"method": "extract-features job, as it reports", "images": count, "seconds": extracted["seconds"]}
            results.update(extract_summary=extracted, caption_summary=captioned, worker_probes=probes, spark_parallelism=parallelism)
        finally:
            spark.stop()
    results["machine_end"] = {"load_average_1_5_15": lib.load_average()}
    return report_throughput(results, rows)


def report_throughput(results: dict, rows: dict) -> dict:
    for row in rows.values():
        row["images_per_second"] = row["images"] / row["seconds"] if row["images"] and row["seconds"] else None
    base = rows["extract"]["images_per_second"]
    for key in ("extract", "caption", "caption_own"):
        rows[key]["ratio_to_extract"] = lib.ratio(rows[key]["images_per_second"], base)
    rows["extract_own"]["ratio_to_extract"] = None
    order = [k for k in ("extract", "caption", "caption_own", "extract_own", "session", "train", "extract_warmup", "caption_warmup") if k in rows]
    args = results["args"]
    encoder = results["encoder"]
    caption = results["caption_summary"]
    print()
    print(f"Bulk captioning vs feature extraction, backbone {encoder['backbone']}, weights {encoder['weights']}, batch {args['batch_size']}, search {args['search']}, master {args['master']}")
    print(f"machine: {results['machine_start']['cpus']} CPUs, GPUs: {results['machine_start']['gpus'] or 'none'}, "
          f"load average at start {results['machine_start']['load_average_1_5_15']}, at end {results['machine_end']['load_average_1_5_15']}")
    print(f"model: {results['model']}")
    print()
    lib.print_table(
        ["method", "images", "seconds", "images/s", "vs extract"],
        [[rows[k]["method"], rows[k]["images"], rows[k]["seconds"], rows[k]["images_per_second"], rows[k].get("ratio_to_extract")] for k in order],
    )
    probes = results["worker_probes"]
    print()
    for name, probe in probes.items():
        print(f"Python workers {name.replace('_', ' ')}: {probe}")
    print(f"caption-images counts: {caption.get('counts')}")
    wall = lib.ratio(rows["caption"]["images_per_second"], base)
    own = lib.ratio(rows["caption_own"]["images_per_second"], rows["extract_own"]["images_per_second"])
    results["rows"] = [dict(rows[k], key=k) for k in order]
    results["caption_over_extract"] = wall
    results["caption_over_extract_as_jobs_report"] = own
    results["goal_caption_over_extract"] = GOAL_CAPTION_VS_EXTRACT
    print()
    print(lib.goal_line("captioning / extraction images/s (wall)", wall, f">= {GOAL_CAPTION_VS_EXTRACT}", None if wall is None else wall >= GOAL_CAPTION_VS_EXTRACT))
    print(f"captioning / extraction images/s as the jobs report them = {lib.fmt(own, 3)}")
    return results


# --------------------------------------------------------------------------- memory


def child_train(args: argparse.Namespace) -> int:
    configure_driver_tensorflow()
    spark = lib.spark_session("bench-bulk-train", args.master)
    try:
        train_small_model(spark, args.child_train, args)
    finally:
        spark.stop()
    return 0


def memory_child(args: argparse.Namespace) -> int:
    """One measured process: a fresh session, caption-images on one input, the summary as JSON."""
    spark = lib.spark_session("bench-bulk-memory", args.master)
    try:
        summary = run_caption(spark, caption_argv(args.model, args.child_input, args.child_output, args))
    finally:
        spark.stop()
    with open(args.child_result, "w") as handle:
        json.dump(summary, handle)
    return 0


def memory(args: argparse.Namespace) -> dict:
    import subprocess
    import sys

    sizes = lib.parse_sizes(args.memory_sizes)
    results: dict = {"benchmark": "bulk-captioning-memory", "args": vars(args), "machine_start": lib.machine_info(with_tensorflow=False), "sizes": []}
    common = ["--batch-size", str(args.batch_size), "--search", args.search, "--master", args.master, "--seed", str(args.seed)]
    with lib.Workdir(args.workdir, args.keep) as work:
        paths = lib.source_images(args.dataset, sizes[-1], work.path, args.seed)
        model = args.model
        if model is None:
            folder = work.sub("training")
            lib.note(f"training a small {args.backbone} model for one epoch on {args.train_images} sample images (separate process, not measured)")
            train = [sys.executable, os.path.abspath(__file__), "--child-train", folder, "--backbone", args.backbone, "--weights", args.weights, "--train-images", str(args.train_images), *common]
            if subprocess.call(train) != 0:
                raise SystemExit("error: training the small model failed")
            model = os.path.join(folder, "model")
        results["model"] = model
        encoder = model_encoder(model, args)
        args.backbone, args.weights = encoder.backbone, encoder.weights
        results["encoder"] = encoder.to_dict()
        for size in sizes:
            images = lib.link_images(paths[:size], work.sub(f"input-{size}"))
            result_path = work.sub(f"result-{size}.json")
            child = [os.path.abspath(__file__), "--model", model, *common, "--child-input", images.folder, "--child-output", work.sub(f"captions-{size}"), "--child-result", result_path]
            if args.backbone_weights:
                child += ["--backbone-weights", args.backbone_weights]
            lib.note(f"caption-images on {size} images in a fresh process (memory sampled every {args.sample_interval}s)")
            summary, peaks, seconds = lib.run_measured_child(child, result_path, args.sample_interval)
            check_captioned(summary, size)
            results["sizes"].append({"images": size, "process_seconds": seconds, "job_summary": summary, "peak_mib": peaks.as_mib()})
            lib.note(f"  {seconds:.0f}s, peaks (MiB) {peaks.as_mib()}")
    results["machine_end"] = {"load_average_1_5_15": lib.load_average()}
    if results["model"] and not args.model:
        results["model"] = "(trained in the work folder)"
    lib.report_memory(results, "caption-images", GOAL_MEMORY_RATIO)
    return results


# --------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.backbone is None:
        args.backbone = "mobilenetv3small" if args.memory else "resnet50"
    lib.setup_environment()
    if args.child_train:
        return child_train(args)
    if args.child_result:
        return memory_child(args)
    if args.images < 1 or args.batch_size < 1 or args.train_images < 10:
        raise SystemExit("error: --images and --batch-size must be positive, --train-images at least 10")
    from captioning.model.encoder_spec import backbone_spec

    backbone_spec(args.backbone)  # unknown names fail before any work
    if args.model and not os.path.exists(os.path.join(args.model, "config.json")) and "://" not in args.model:
        raise SystemExit(f"error: {args.model}: not a model directory (no config.json)")
    results = memory(args) if args.memory else throughput(args)
    lib.write_json(args.json_out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
