"""Feature extraction on a Spark standalone cluster: executor overhead, and cost per image as data grows.

    .venv/bin/python bench/bench_scaling.py --json-out bench/results/scaling.json
    .venv/bin/python bench/bench_scaling.py --sizes 1000,5000,20000 --topology-images 1000 --repeats 3

Why: local[*] cannot show the costs a cluster adds (one JVM per executor, one set of
Python workers per executor each loading TensorFlow and the CNN, tasks scheduled over the
network, results committed by the driver), nor whether a job's cost per image stays flat
as the dataset grows. Every job here is a ``spark-submit`` of ``jobs/extract_features.py``
to a throwaway standalone cluster on 127.0.0.1 (``captioning.cluster.standalone``), with the
project wheel from ``make package`` shipped through ``--py-files`` as in the cluster
tests, each run into a fresh feature store.

(1) Topology, same total cores: ``--topology-images`` images, and the small
    ``--baseline-images`` job, on
    (a) one worker with 2 cores: one executor running two tasks at a time, and
    (b) two workers with 1 core each: two executors running one task each.
    Both have two Python workers, each with its own TensorFlow and CNN; (b) adds a JVM
    and splits the tasks over two executors. (b)/(a) measures that overhead, not a
    speed-up: the cores are the same. Reported: the whole job's ratio, the difference of
    the fixed cost per job (the small job's seconds), and the ratio of the marginal cost
    per image (job seconds above the small job's, per extra image). On one machine the
    second executor's start (a JVM, a Python daemon) competes with the job for the same
    two cores, a cost paid once per job that separate nodes pay in parallel; the
    marginal ratio is what stays as data grows. Goal printed: marginal (b)/(a) <= 1.15.
    Both clusters run side by side (idle daemons cost next to nothing), one untimed
    small job warms each up, and the jobs alternate so drifting load hits both alike.
(2) Size, on (b): ``--sizes`` images each, plus a ``--baseline-images`` job. Reported per
    size: the wall clock of spark-submit, the job's own seconds (listing to manifest, as it
    prints them), images/s, and the marginal cost per image, (job seconds - baseline job
    seconds) / (images - baseline images): the fixed cost of a job (executors start, every
    Python worker imports TensorFlow and builds the CNN) is the same for every size and
    drops out. Goal printed: marginal cost at the largest size / at the smallest <= 1.2.

Each configuration is run ``--repeats`` times and the median is reported. The machine's
CPUs, load average (start and end) and library versions are printed with the tables.
Everything is on one machine: the cluster's "nodes" share its cores, memory, disk and page
cache, so this measures Spark's and the job's overheads, not network or storage effects.

Inputs: ``--dataset`` (a local image folder or Flickr8k root) or, by default, a generated
sample dataset of the largest size (320x240 JPEGs). Each size's images are hard-linked
into their own folder under a temporary work folder, removed at the end (``--keep``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

try:
    from . import _benchlib as lib
except ImportError:  # run as a script: bench/ is on sys.path
    import _benchlib as lib

GOAL_TOPOLOGY = 1.15
GOAL_FLAT = 1.2
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class Run:
    images: int
    wall_seconds: float  # spark-submit, start to exit
    job_seconds: float  # what the job reports: listing to manifest

    @property
    def images_per_second(self) -> float:
        return self.images / max(self.job_seconds, 1e-9)


@dataclass(frozen=True)
class Submitter:
    master_url: str
    conf_dir: str
    py_files: str
    script: str
    python: str
    job_args: tuple[str, ...]
    cwd: str
    spark_conf: tuple[str, ...] = ()  # extra KEY=VALUE settings, the same for every run

    def extract(self, folder: str, images: int, output: str) -> Run:
        from captioning.cluster.standalone import spark_home, spark_submit

        command = [
            spark_submit(), "--master", self.master_url, "--py-files", self.py_files,
            "--conf", f"spark.pyspark.python={self.python}", "--conf", f"spark.pyspark.driver.python={self.python}",
            "--conf", "spark.driver.host=127.0.0.1", "--conf", "spark.driver.bindAddress=127.0.0.1",
            "--conf", "spark.ui.enabled=false",
            # start only when every executor is registered: each run uses the whole cluster
            "--conf", "spark.scheduler.minRegisteredResourcesRatio=1.0", "--conf", "spark.cores.max=2",
            *[piece for setting in self.spark_conf for piece in ("--conf", setting)],
            self.script, "--input", folder, "--output", output, *self.job_args,
        ]
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SPARK_CONF_DIR")}
        env.update(SPARK_HOME=spark_home(), SPARK_CONF_DIR=self.conf_dir, PYSPARK_PYTHON=self.python, PYSPARK_DRIVER_PYTHON=self.python)
        started = time.perf_counter()
        done = subprocess.run(command, cwd=self.cwd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"error: extract-features failed on {self.master_url} ({done.returncode}):\n{done.stderr[-4000:]}")
        summary = json.loads(done.stdout[done.stdout.rfind("\n{") + 1:])
        if summary.get("ok") != images:
            raise SystemExit(f"error: {images} images given, {summary.get('ok')} extracted: {summary}")
        return Run(images, round(wall, 2), float(summary["seconds"]))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench_scaling.py", description="Feature extraction on a standalone cluster: 1 worker x 2 cores vs 2 workers x 1 core, and cost per image from small to large datasets.")
    parser.add_argument("--sizes", default="1000,5000,20000", help="dataset sizes for the size measurement (default 1000,5000,20000)")
    parser.add_argument("--topology-images", type=int, default=1000, help="images for the topology measurement (default 1000)")
    parser.add_argument("--baseline-images", type=int, default=64, help="the small job whose time is the fixed per-job cost (default 64)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per configuration; the median is reported (default 1; 3 on a busy machine)")
    parser.add_argument("--backbone", default="mobilenetv3small", help="CNN backbone (default mobilenetv3small, the fast one)")
    parser.add_argument("--weights", default="none", help="'none' (seeded random, default), 'imagenet', or a weights file")
    parser.add_argument("--batch-size", type=int, default=32, help="images per CNN call (default 32)")
    parser.add_argument("--images-per-partition", type=int, default=256, help="images per Spark task (default 256, the job's default)")
    parser.add_argument("--worker-memory", default="3g", help="memory each 1-core worker offers (the 2-core worker offers twice this; default 3g)")
    lib.add_work_options(parser, "images, stores, cluster logs", master=False)
    parser.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE", help="a Spark setting for every spark-submit (repeatable)")
    return parser


def scaled_memory(text: str, factor: int) -> str:
    """``"3g"`` x 2 -> ``"6g"`` (Spark's memory strings: a number and an optional k/m/g/t unit)."""
    number, unit = (text[:-1], text[-1]) if text[-1:].isalpha() else (text, "")
    if not number.isdigit():
        raise SystemExit(f"error: --worker-memory takes a size like 3g or 3072m, got {text!r}")
    return f"{int(number) * factor}{unit}"


def median_run(runs: list[Run]) -> Run:
    return Run(runs[0].images, round(statistics.median(r.wall_seconds for r in runs), 2), round(statistics.median(r.job_seconds for r in runs), 2))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sizes = lib.parse_sizes(args.sizes, "--sizes")
    if args.baseline_images >= sizes[0] or args.topology_images < 1 or args.repeats < 1:
        raise SystemExit("error: --baseline-images must be below the smallest size; --topology-images and --repeats positive")
    lib.setup_environment()
    from captioning.aws.package import build_dist
    from captioning.cluster.standalone import ClusterConfig, StandaloneCluster, WorkerSpec

    results: dict = {"args": vars(args), "machine_start": lib.machine_info(with_tensorflow=False)}
    largest = max(sizes[-1], args.topology_images)
    job_args = ("--backbone", args.backbone, "--weights", args.weights, "--batch-size", str(args.batch_size), "--images-per-partition", str(args.images_per_partition))
    double = scaled_memory(args.worker_memory, 2)
    with lib.Workdir(args.workdir, args.keep) as work:
        paths = lib.source_images(args.dataset, largest, work.path)
        folders = {n: lib.link_images(paths[:n], work.sub(f"images-{n}")).folder for n in sorted({*sizes, args.topology_images, args.baseline_images})}
        lib.note("building the wheel (captioning.aws.package)")
        dist = build_dist(REPO, work.sub("dist"))
        wheel = os.path.join(dist.root, dist.wheel)
        py_files = work.sub(os.path.basename(wheel)[: -len(".whl")] + ".zip")  # PySpark imports .zip, not .whl, on executors
        shutil.copyfile(wheel, py_files)
        script = os.path.join(dist.root, "jobs", "extract_features.py")
        os.makedirs(work.sub("cwd"))
        one = StandaloneCluster(ClusterConfig(root=work.sub("cluster-1x2"), workers=(WorkerSpec(2, double),)))
        two = StandaloneCluster(ClusterConfig(root=work.sub("cluster-2x1"), workers=(WorkerSpec(1, args.worker_memory), WorkerSpec(1, args.worker_memory))))
        try:
            lib.note("starting two standalone clusters on 127.0.0.1: 1 worker x 2 cores, 2 workers x 1 core")
            one.start()
            two.start()
            submit = {
                name: Submitter(cluster.master_url, cluster.path("conf"), py_files, script, sys.executable, job_args, work.sub("cwd"), tuple(args.conf))
                for name, cluster in (("1x2", one), ("2x1", two))
            }
            counter = iter(range(10**6))

            def extract(name: str, images: int) -> Run:
                run = submit[name].extract(folders[images], images, work.sub(f"store-{next(counter)}"))
                lib.note(f"  {name}: {images} images, job {run.job_seconds:.1f}s, wall {run.wall_seconds:.1f}s")
                return run

            lib.note("warm-up (not measured): one small job on each cluster, so no measured run pays for cold disk caches")
            for name in ("1x2", "2x1"):
                extract(name, args.baseline_images)
            lib.note(f"topology: {args.topology_images} and {args.baseline_images} images, {args.repeats} run(s) each, alternating")
            topology = {(name, n): [] for name in ("1x2", "2x1") for n in (args.baseline_images, args.topology_images)}
            for _ in range(args.repeats):
                for name, n in topology:
                    topology[name, n].append(extract(name, n))
            lib.note(f"sizes on 2 workers x 1 core: baseline {args.baseline_images}, then {sizes}")
            by_size = {n: [] for n in [args.baseline_images, *sizes]}
            for _ in range(args.repeats):
                for n in by_size:
                    by_size[n].append(extract("2x1", n))
        finally:
            one.stop()
            two.stop()
    results["machine_end"] = lib.machine_info(with_tensorflow=False)
    report(results, {k: median_run(v) for k, v in topology.items()}, {n: median_run(v) for n, v in by_size.items()}, args)
    results["runs"] = {"topology": {f"{k[0]}/{k[1]}": [vars(r) for r in v] for k, v in topology.items()}, "sizes": {str(n): [vars(r) for r in v] for n, v in by_size.items()}}
    lib.write_json(args.json_out, results)
    return 0


def report(results: dict, topology: dict[tuple[str, int], Run], sizes: dict[int, Run], args) -> None:
    start, end = results["machine_start"], results["machine_end"]
    print()
    print(f"Feature extraction on a standalone cluster, {args.backbone} (weights {args.weights}), median of {args.repeats} run(s)")
    print(f"machine: {start['cpus']} CPUs, load average at start {start['load_average_1_5_15']}, at end {end['load_average_1_5_15']}; pyspark {start.get('pyspark')}")
    print()
    n, small = args.topology_images, args.baseline_images
    print(f"(1) topology, same 2 cores: {n} images, and the {small}-image job for the fixed cost; marginal = (job s({n}) - job s({small})) / {n - small}")
    marginal_t = {name: (topology[name, n].job_seconds - topology[name, small].job_seconds) / (n - small) * 1000 for name in ("1x2", "2x1")}
    rows = [
        [label, topology[name, n].wall_seconds, topology[name, n].job_seconds, round(topology[name, n].images_per_second, 1), topology[name, small].job_seconds,
         round(marginal_t[name], 3), lib.ratio(topology[name, n].job_seconds, topology["1x2", n].job_seconds), lib.ratio(marginal_t[name], marginal_t["1x2"])]
        for label, name in (("(a) 1 worker x 2 cores", "1x2"), ("(b) 2 workers x 1 core", "2x1"))
    ]
    lib.print_table(["cluster", "wall s", "job s", "job img/s", f"job s ({small})", "marginal ms/img", "job vs (a)", "marginal vs (a)"], rows)
    overhead = lib.ratio(topology["2x1", n].job_seconds, topology["1x2", n].job_seconds)
    per_image = lib.ratio(marginal_t["2x1"], marginal_t["1x2"]) if marginal_t["1x2"] > 0 else None
    fixed = round(topology["2x1", small].job_seconds - topology["1x2", small].job_seconds, 2)
    print(f"(b)/(a) whole job = {lib.fmt(overhead, 3)}; fixed cost per job (b) - (a) = {fixed} s")
    print(lib.goal_line("(b)/(a) marginal cost per image", per_image, f"<= {GOAL_TOPOLOGY}", None if per_image is None else per_image <= GOAL_TOPOLOGY))
    print()
    baseline = sizes[args.baseline_images]
    print(f"(2) size, 2 workers x 1 core; marginal = (job s - {baseline.job_seconds:.2f} s of the {args.baseline_images}-image job) / (images - {args.baseline_images})")
    measured = [n for n in sizes if n != args.baseline_images]
    marginal = {n: (sizes[n].job_seconds - baseline.job_seconds) / (n - args.baseline_images) * 1000 for n in measured}
    first = marginal[measured[0]]
    rows = [[n, sizes[n].wall_seconds, sizes[n].job_seconds, round(sizes[n].images_per_second, 1), round(marginal[n], 3), lib.ratio(marginal[n], first)] for n in measured]
    rows.insert(0, [args.baseline_images, baseline.wall_seconds, baseline.job_seconds, round(baseline.images_per_second, 1), None, None])
    lib.print_table(["images", "wall s", "job s", "job img/s", "marginal ms/img", "vs smallest"], rows)
    # a marginal cost at or below zero means the sizes are too close for the machine's noise
    flat = lib.ratio(marginal[measured[-1]], first) if first > 0 else None
    print(lib.goal_line(f"marginal cost per image, {measured[-1]} / {measured[0]} images", flat, f"<= {GOAL_FLAT}", None if flat is None else flat <= GOAL_FLAT))
    results.update(
        topology={f"{k[0]}/{k[1]}": {**vars(v), "images_per_second": v.images_per_second} for k, v in topology.items()},
        topology_marginal_ms_per_image=marginal_t,
        topology_ratio_job=overhead,
        topology_ratio_marginal=per_image,
        topology_fixed_cost_difference_s=fixed,
        sizes={str(n): {**vars(r), "images_per_second": r.images_per_second, "marginal_ms_per_image": marginal.get(n)} for n, r in sizes.items()},
        flat_ratio=flat,
        goals={"topology_ratio_max": GOAL_TOPOLOGY, "flat_ratio_max": GOAL_FLAT},
    )


if __name__ == "__main__":
    raise SystemExit(main())
