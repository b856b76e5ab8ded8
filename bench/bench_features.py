"""Feature extraction throughput: one image at a time vs batched vs the Spark job.

Throughput (one process, the same images and backbone for every row):

    .venv/bin/python bench/bench_features.py --backbone resnet50 --images 320 --json-out bench/results/features-resnet50.json

  (a) the original project's loop: for each image, read the file, decode and resize it
      (captioning.data.images.decode_image, the decode the job uses, like Keras' load_img),
      then ``model.predict(x[None])``: one image per forward pass. One warm-up predict is
      made first and not timed.
  (b) the ceiling: the compiled batch featurizer (captioning.model.encoder.make_batch_featurizer)
      on images already decoded into one uint8 array, ``--batch-size`` images per call,
      no file reading and no decoding. The graph is traced on one untimed batch first.
  (c) the extract-features job (captioning.pipeline.extract_features.run) on local Spark:
      listing, reading, decoding, resizing, inference, Parquet write, manifest, into a
      fresh output folder. What is timed, separately:
        * the Spark session start (JVM);
        * a warm-up job on ``--warmup-images`` copies of the first images (default:
          one batch per core), into its own output: every Python worker starts, imports
          TensorFlow and builds the model once (the cold cost of a first job);
        * the same small job again, now on warm workers, into another fresh output;
        * the measured job on all ``--images`` images, wall clock around ``run()`` (which
          includes listing, Spark's job scheduling, the Parquet commit, reading the
          counts back and the manifest). The job's own ``images_per_second`` is printed
          as well. "(c) marginal" = (measured images - small images) / (measured seconds
          - small seconds): the job's rate without its fixed per-job cost.
      Spark reuses Python workers between jobs of one session (spark.python.worker.reuse,
      on by default) but stops a worker left idle for about a minute. A probe task just
      before and just after the measured job lists the worker processes and how many hold
      the encoder, so the output shows whether the measured job ran on warm workers.
  Goal printed: (c)/(b) >= 0.85 (whole measured job); (c) marginal/(b) is printed too.

Memory (each size in a fresh process, its whole process tree sampled every 0.2 s):

    .venv/bin/python bench/bench_features.py --memory --memory-sizes 1000,10000 --json-out bench/results/features-memory.json

  runs the extract-features job alone (session start to stop) on each size and reports
  peak resident memory of the Python driver, the JVM, the largest Python worker and all
  Python workers together; goal printed: peak(largest) / peak(smallest) <= 1.2 for the
  driver and for the largest worker. Default backbone here: mobilenetv3small (fast).

Inputs: ``--dataset`` (a local folder of images or a Flickr8k-layout root) or, by default,
a generated sample dataset (320x240 JPEGs; real photos are larger and cost more to decode).
The chosen images are hard-linked into a temporary work folder, removed at the end
(``--keep`` keeps it). ``--weights none`` (default) uses seeded random weights: the same
computation as ImageNet weights, without a download.

Machine caveats: numbers are only comparable on a quiet machine; the load average is
recorded at the start and end of every run. On a 2-core machine local[*] runs two Python
workers, each with TensorFlow's own thread pools, next to each other. The same script runs
unchanged on a GPU machine with a CUDA build of TensorFlow: every process (this one for
(a)/(b), each Spark Python worker for (c)) uses the visible GPU with memory growth; there,
use more images (e.g. ``--images 4096 --single-images 512``) and consider
``--master local[4]`` so few workers share the GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import time

try:
    from . import _benchlib as lib
except ImportError:  # run as a script: bench/ is on sys.path
    import _benchlib as lib

GOAL_JOB_VS_CEILING = 0.85
GOAL_MEMORY_RATIO = 1.2
MEASURES = ("a", "b", "c", "c_marginal")  # rows with ratios; the others are context


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench_features.py",
        description="Images per second of feature extraction: single-image predict loop, batched ceiling, and the extract-features Spark job; or (--memory) the job's peak memory at two sizes.",
    )
    parser.add_argument("--backbone", default=None, help="CNN backbone (default resnet50; mobilenetv3small with --memory)")
    parser.add_argument("--weights", default="none", help="'none' (seeded random, default), 'imagenet', or a weights file")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample data and of random weights (default 0)")
    parser.add_argument("--images", type=int, default=320, help="images measured by every method (default 320)")
    parser.add_argument("--single-images", type=int, default=0, help="images for the one-at-a-time loop (a); default: --images")
    parser.add_argument("--warmup-images", type=int, default=0, help="images of the warm-up job; default: --batch-size per Spark core")
    parser.add_argument("--batch-size", type=int, default=32, help="images per CNN call, as the job's --batch-size (default 32)")
    lib.add_work_options(parser, "inputs and job outputs")
    parser.add_argument("--skip-single", action="store_true", help="leave out (a), the slow single-image loop")
    lib.add_memory_options(parser, "1000,10000")
    return parser


def job_argv(input_folder: str, output: str, args: argparse.Namespace) -> list[str]:
    """The extract-features command line (the job's defaults for everything else)."""
    return ["--input", input_folder, "--output", output, "--backbone", args.backbone, "--weights", args.weights, "--seed", str(args.seed), "--batch-size", str(args.batch_size)]


def run_extract_job(spark, argv: list[str]) -> dict:
    from captioning.pipeline import extract_features

    return extract_features.run(extract_features.config_from_args(extract_features.build_parser().parse_args(argv)), spark)


# --------------------------------------------------------------------------- throughput


def single_image_loop(model, paths, size, decode) -> tuple[float, object]:
    """(seconds, first vector) of the original per-image loop: read, decode, predict one image."""
    import numpy as np

    from captioning.data.images import decode_image

    def one(path):
        with open(path, "rb") as handle:
            pixels = decode_image(handle.read(), size, decode)  # (H, W, 3) uint8
        return model.predict(pixels[None].astype(np.float32), verbose=0)  # (1, D)

    one(paths[0])  # builds Keras' predict function; not timed
    first = None
    started = time.perf_counter()
    for path in paths:
        vector = one(path)
        if first is None:
            first = vector[0]
    return time.perf_counter() - started, first


def decode_all(paths, size, decode) -> tuple[float, object]:
    """(seconds, (N, H, W, 3) uint8) reading and decoding every image in this thread."""
    import numpy as np

    from captioning.data.images import decode_image

    started = time.perf_counter()
    arrays = []
    for path in paths:
        with open(path, "rb") as handle:
            arrays.append(decode_image(handle.read(), size, decode))
    return time.perf_counter() - started, np.stack(arrays)


def batched_ceiling(featurize, pixels, batch_size: int) -> tuple[float, object]:
    """(seconds, first vector) of the compiled featurizer over pre-decoded batches."""
    featurize(pixels[:batch_size])  # traces the graph; not timed
    first = None
    started = time.perf_counter()
    for start in range(0, len(pixels), batch_size):
        vectors = featurize(pixels[start : start + batch_size])
        if first is None:
            first = vectors[0]
    return time.perf_counter() - started, first


def throughput(args: argparse.Namespace) -> dict:
    import numpy as np

    from captioning.model.encoder_spec import EncoderConfig
    from captioning.model.encoder import build_encoder, configure_tensorflow, make_batch_featurizer
    from captioning.data.images import DecodeConfig
    from captioning.pipeline.reading import ImageReading

    results: dict = {"benchmark": "features-throughput", "args": vars(args)}
    count = args.images
    single = min(args.single_images or count, count)
    with lib.Workdir(args.workdir, args.keep) as work:
        paths = lib.source_images(args.dataset, count, work.path, args.seed)
        measured = lib.link_images(paths, work.sub("input"))

        gpus = configure_tensorflow(mixed_precision=False)
        results["machine_start"] = lib.machine_info()
        lib.note(f"machine: {results['machine_start']['cpus']} CPUs, load {results['machine_start']['load_average_1_5_15']}, GPUs {gpus or 'none'}")
        encoder_config = EncoderConfig(backbone=args.backbone, weights=args.weights, batch_size=args.batch_size, seed=args.seed)
        spec = encoder_config.spec
        decode = DecodeConfig()
        model, build_seconds = lib.timed(lambda: build_encoder(encoder_config))
        lib.note(f"{spec.name} built in this process in {build_seconds:.1f}s")
        rows = {}

        if not args.skip_single:
            lib.note(f"(a) one image at a time: {single} images")
            seconds, first_a = single_image_loop(model, measured.paths[:single], spec.input_size, decode)
            rows["a"] = {"method": "(a) single-image predict loop (read+decode+predict)", "images": single, "seconds": seconds}
        else:
            first_a = None

        lib.note(f"reading and decoding {count} images (one thread) for (b)")
        decode_seconds, pixels = decode_all(measured.paths, spec.input_size, decode)
        rows["decode"] = {"method": "    read+decode only, 1 thread (for reference)", "images": count, "seconds": decode_seconds}
        featurize = make_batch_featurizer(model)
        lib.note(f"(b) batched featurizer on decoded images, batch {args.batch_size}")
        seconds, first_b = batched_ceiling(featurize, pixels, args.batch_size)
        rows["b"] = {"method": f"(b) batched featurizer, pre-decoded (batch {args.batch_size})", "images": count, "seconds": seconds}
        if first_a is not None:
            results["max_abs_difference_a_vs_b_first_image"] = float(np.max(np.abs(first_a - first_b)))
        del pixels

        lib.note(f"(c) extract-features job on Spark ({args.master})")
        spark, session_seconds = lib.timed(lambda: lib.spark_session("bench-features", args.master))
        try:
            parallelism = spark.sparkContext.defaultParallelism
            warm_count = min(args.warmup_images or args.batch_size * parallelism, count)
            warm = lib.link_images(paths[:warm_count], work.sub("warmup-input"))
            rows["session"] = {"method": "    Spark session start (JVM)", "images": None, "seconds": session_seconds}
            probes = {"before_warmup": lib.probe_workers(spark)}
            warm_summary, warm_seconds = lib.timed(lambda: run_extract_job(spark, job_argv(warm.folder, work.sub("warmup-features"), args)))
            rows["c_warmup"] = {"method": "    warm-up job, cold workers (TF import + model build)", "images": warm_count, "seconds": warm_seconds}
            probes["before_measured"] = lib.probe_workers(spark)
            if warm_count < count:  # the same small job again, warm: per-job fixed cost vs per-image cost
                _, small_seconds = lib.timed(lambda: run_extract_job(spark, job_argv(warm.folder, work.sub("warm-features"), args)))
                rows["c_small"] = {"method": "    the warm-up images again, warm workers", "images": warm_count, "seconds": small_seconds}
            summary, job_seconds = lib.timed(lambda: run_extract_job(spark, job_argv(measured.folder, work.sub("features"), args)))
            probes["after_measured"] = lib.probe_workers(spark)
            rows["c"] = {"method": "(c) extract-features job, warm workers (wall)", "images": count, "seconds": job_seconds}
            results["job_summary"] = summary
            results["warmup_job_summary"] = warm_summary
            results["worker_probes"] = probes
            results["spark_parallelism"] = parallelism
            results["spark_tasks_measured_job"] = ImageReading().partitions_for(count, parallelism)
        finally:
            spark.stop()
        if summary.get("ok") != count:
            raise SystemExit(f"error: the job computed {summary.get('ok')} of {count} images: {summary}")
        results["machine_end"] = {"load_average_1_5_15": lib.load_average()}
    return report_throughput(results, rows, build_seconds)


def report_throughput(results: dict, rows: dict, build_seconds: float) -> dict:
    for row in rows.values():
        row["images_per_second"] = row["images"] / row["seconds"] if row["images"] and row["seconds"] else None
    if "c_small" in rows and rows["c"]["seconds"] > rows["c_small"]["seconds"]:
        rows["c_marginal"] = {
            "method": "(c) marginal: extra images / extra seconds",
            "images": rows["c"]["images"] - rows["c_small"]["images"],
            "seconds": rows["c"]["seconds"] - rows["c_small"]["seconds"],
        }
        rows["c_marginal"]["images_per_second"] = rows["c_marginal"]["images"] / rows["c_marginal"]["seconds"]
    rate = {key: rows[key]["images_per_second"] for key in ("a", "b", "c") if key in rows}
    for key, row in rows.items():
        row["ratio_to_a"] = lib.ratio(row["images_per_second"], rate.get("a")) if key in MEASURES else None
        row["ratio_to_b"] = lib.ratio(row["images_per_second"], rate.get("b")) if key in MEASURES else None
    order = [k for k in (*MEASURES, "decode", "session", "c_warmup", "c_small") if k in rows]
    args = results["args"]
    print()
    print(f"Feature extraction, backbone {args['backbone']}, weights {args['weights']}, batch {args['batch_size']}, master {args['master']}")
    print(f"machine: {results['machine_start']['cpus']} CPUs, GPUs: {results['machine_start']['gpus'] or 'none'}, "
          f"load average at start {results['machine_start']['load_average_1_5_15']}, at end {results['machine_end']['load_average_1_5_15']}")
    print(f"model build in this process: {build_seconds:.1f}s (not in any row)")
    print()
    lib.print_table(
        ["method", "images", "seconds", "images/s", "vs (a)", "vs (b)"],
        [[rows[k]["method"], rows[k]["images"], rows[k]["seconds"], rows[k]["images_per_second"], rows[k]["ratio_to_a"], rows[k]["ratio_to_b"]] for k in order],
    )
    summary = results["job_summary"]
    print()
    print(f"(c) as the job reports it: {summary.get('seconds')}s, images_per_second {summary.get('images_per_second')} (its run() from listing to manifest)")
    print(f"(c) ran as {results['spark_tasks_measured_job']} Spark tasks (the job's --images-per-partition default) on {results['spark_parallelism']} cores")
    probes = results["worker_probes"]
    print(f"Python workers: before warm-up {probes['before_warmup']}, before measured job {probes['before_measured']}, after it {probes['after_measured']}")
    if "max_abs_difference_a_vs_b_first_image" in results:
        print(f"first image, |(a) - (b)| max: {results['max_abs_difference_a_vs_b_first_image']:.3g} (same features either way)")
    c_vs_b = lib.ratio(rate.get("c"), rate.get("b"))
    results["rows"] = [dict(rows[k], key=k) for k in order]
    results["c_over_b"] = c_vs_b
    results["goal_c_over_b"] = GOAL_JOB_VS_CEILING
    print()
    print(lib.goal_line("(c)/(b)", c_vs_b, f">= {GOAL_JOB_VS_CEILING}", None if c_vs_b is None else c_vs_b >= GOAL_JOB_VS_CEILING))
    if "c_marginal" in rows:
        marginal = lib.ratio(rows["c_marginal"]["images_per_second"], rate.get("b"))
        results["c_marginal_over_b"] = marginal
        print(f"(c) marginal/(b) = {lib.fmt(marginal, 3)}   (the job without its fixed per-job cost: listing, scheduling, commit, manifest)")
    if "a" in rate:
        print(f"(c)/(a) = {lib.fmt(lib.ratio(rate['c'], rate['a']), 3)}   (the job against the original one-at-a-time loop)")
    return results


# --------------------------------------------------------------------------- memory


def memory_child(args: argparse.Namespace) -> int:
    """One measured process: a fresh session, the job on one input, the summary as JSON."""
    spark = lib.spark_session("bench-features-memory", args.master)
    try:
        summary = run_extract_job(spark, job_argv(args.child_input, args.child_output, args))
    finally:
        spark.stop()
    with open(args.child_result, "w") as handle:
        json.dump(summary, handle)
    return 0


def memory(args: argparse.Namespace) -> dict:
    sizes = lib.parse_sizes(args.memory_sizes)
    results: dict = {"benchmark": "features-memory", "args": vars(args), "machine_start": lib.machine_info(with_tensorflow=False), "sizes": []}
    with lib.Workdir(args.workdir, args.keep) as work:
        paths = lib.source_images(args.dataset, sizes[-1], work.path, args.seed)
        for size in sizes:
            images = lib.link_images(paths[:size], work.sub(f"input-{size}"))
            result_path = work.sub(f"result-{size}.json")
            child = [os.path.abspath(__file__), *job_argv(images.folder, work.sub(f"features-{size}"), args)[4:], "--master", args.master,
                     "--child-input", images.folder, "--child-output", work.sub(f"features-{size}"), "--child-result", result_path]
            lib.note(f"extract-features on {size} images in a fresh process (memory sampled every {args.sample_interval}s)")
            summary, peaks, seconds = lib.run_measured_child(child, result_path, args.sample_interval)
            if summary.get("ok") != size:
                raise SystemExit(f"error: the job computed {summary.get('ok')} of {size} images: {summary}")
            results["sizes"].append({"images": size, "process_seconds": seconds, "job_summary": summary, "peak_mib": peaks.as_mib()})
            lib.note(f"  {seconds:.0f}s, peaks (MiB) {peaks.as_mib()}")
    results["machine_end"] = {"load_average_1_5_15": lib.load_average()}
    lib.report_memory(results, "extract-features", GOAL_MEMORY_RATIO)
    return results


# --------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.backbone is None:
        args.backbone = "mobilenetv3small" if args.memory else "resnet50"
    lib.setup_environment()
    if args.child_result:
        return memory_child(args)
    if args.images < 1 or args.batch_size < 1:
        raise SystemExit("error: --images and --batch-size must be positive")
    from captioning.model.encoder_spec import backbone_spec

    backbone_spec(args.backbone)  # unknown names fail before any work
    results = memory(args) if args.memory else throughput(args)
    lib.write_json(args.json_out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
