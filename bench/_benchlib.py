"""Shared pieces of the benchmark scripts: inputs, Spark session, memory sampling, output.

Nothing here runs at import; TensorFlow, Spark and psutil are imported inside functions.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

MIB = 1024 * 1024


# --------------------------------------------------------------------------- environment


def setup_environment() -> None:
    """What the jobs need to start local Spark from this interpreter (kept if already set)."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def machine_info(with_tensorflow: bool = True) -> dict:
    """What the numbers depend on: CPUs, load, accelerators, library versions."""
    info = {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": cpu_count(),
        "load_average_1_5_15": load_average(),
    }
    try:
        import pyspark

        info["pyspark"] = pyspark.__version__
    except ImportError:
        pass
    if with_tensorflow:
        import keras
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
        info["keras"] = keras.__version__
        info["tensorflow_cuda_build"] = bool(tf.test.is_built_with_cuda())
        info["gpus"] = [gpu.name for gpu in tf.config.list_physical_devices("GPU")]
    return info


def note(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class ImageSet:
    folder: str  # a local folder holding exactly these images (hard links or copies)
    paths: tuple[str, ...]  # the image files, sorted


def source_images(dataset: str | None, count: int, workdir: str, seed: int = 0) -> list[str]:
    """At least ``count`` local image paths, sorted: from ``dataset`` or a generated sample."""
    from captioning.store import storage
    from captioning.data.layout import image_folder
    from captioning.pipeline.extract_features import list_images

    if dataset is None:
        from captioning.data.sample.config import SampleConfig
        from captioning.data.sample.generate import generate_sample_dataset

        dataset = os.path.join(workdir, "sample")
        note(f"generating a sample dataset of {count} images in {dataset}")
        started = time.time()
        generate_sample_dataset(dataset, SampleConfig(num_images=count, seed=seed))
        note(f"  generated in {time.time() - started:.1f}s")
    if storage.is_s3(dataset):
        raise SystemExit("error: --dataset must be a local folder (the benchmark links its images into work folders)")
    dataset = os.path.abspath(dataset[len("file://"):] if dataset.startswith("file://") else dataset)
    images, _ = list_images(image_folder(dataset))
    paths = sorted(image.uri[len("file://"):] if image.uri.startswith("file://") else image.uri for image in images)
    if len(paths) < count:
        raise SystemExit(f"error: {dataset} holds {len(paths)} images, {count} asked for")
    return paths[:count]


def link_images(paths: Sequence[str], folder: str) -> ImageSet:
    """A folder holding exactly ``paths`` (hard links when possible, else copies)."""
    os.makedirs(folder, exist_ok=False)
    linked = []
    for index, path in enumerate(paths):
        target = os.path.join(folder, f"{index:06d}_{os.path.basename(path)}")
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)
        linked.append(target)
    return ImageSet(folder, tuple(linked))


# --------------------------------------------------------------------------- Spark


def spark_session(app_name: str, master: str):
    from captioning.cluster.session import build_session

    return build_session(app_name, master=master, extra_conf={"spark.ui.enabled": "false"})


def probe_workers(spark) -> dict:
    """Which Python worker processes the next tasks get, and what each already holds.

    Runs one trivial task per core; each answers with its process id and the number of
    encoders (featurizers) and captioners cached in it. Spark reuses Python workers
    (``spark.python.worker.reuse``) but stops ones left idle for about a minute, so a probe
    just before and just after a measured job shows whether that job ran on workers that
    already held the model.
    """
    parallelism = spark.sparkContext.defaultParallelism

    def answer(batches):  # a mapInPandas body, like the jobs' stages: the same worker pool
        import os as _os

        import pandas as _pd

        from captioning.pipeline.transforms import worker_models as worker_cache

        for _ in batches:
            pass
        yield _pd.DataFrame({"pid": [_os.getpid()], "encoders": [worker_cache.featurizer.cache_info().currsize], "captioners": [worker_cache.captioner.cache_info().currsize]})

    frame = spark.range(0, parallelism, 1, parallelism)
    rows = [(r["pid"], r["encoders"], r["captioners"]) for r in frame.mapInPandas(answer, "pid long, encoders long, captioners long").collect()]
    workers = {pid: (encoders, captioners) for pid, encoders, captioners in rows}
    return {
        "pids": sorted(workers),
        "with_encoder": sum(1 for encoders, _ in workers.values() if encoders),
        "with_captioner": sum(1 for _, captioners in workers.values() if captioners),
    }


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


# --------------------------------------------------------------------------- memory


@dataclass
class TreePeaks:
    """Peak resident memory (bytes) of a Spark driver's process tree, by role."""

    driver: int = 0  # the Python driver process
    jvm: int = 0  # the Spark JVM (driver + local executor)
    worker_max: int = 0  # the largest single Python worker
    workers_total: int = 0  # all Python workers together (+ the pyspark daemon)
    tree_total: int = 0  # driver + JVM + Python workers and daemons, at one instant
    other: int = 0  # processes that are neither Java nor Python (shells, short-lived forks)
    max_workers: int = 0  # most Python workers alive at once
    samples: int = 0
    other_names: set = field(default_factory=set)  # names of the "other" processes seen

    def as_mib(self) -> dict:
        counts = ("max_workers", "samples", "other_names")
        out = {k: round(v / MIB, 1) for k, v in self.__dict__.items() if k not in counts}
        out.update(max_workers=self.max_workers, samples=self.samples, other_names=sorted(self.other_names))
        return out


class TreeSampler:
    """Samples the RSS of a process and all its descendants every ``interval`` seconds.

    Local Spark's processes form a tree: the Python driver starts the JVM, the JVM starts
    ``pyspark.daemon`` Python processes (one per worker environment: plain RDD tasks, such
    as turning the driver's listing into a DataFrame, and SQL/Arrow tasks such as the
    jobs' ``mapInPandas`` stages get separate ones), and each daemon forks one Python
    worker per concurrently running task. Workers are told from daemons by their parent
    (a daemon's parent is the JVM). RSS counts pages shared with the daemon in every
    worker, so ``workers_total`` slightly overstates what the workers use together.
    Anything else (launcher shells, ``chmod``/``ps`` the JVM runs) is "other" and is not
    in ``tree_total``: a process the JVM forks shows the JVM's resident pages (named after
    the forking Java thread, e.g. "Executor task l") until it executes its program, which
    would count the JVM twice.
    """

    def __init__(self, root_pid: int, interval: float = 0.2):
        self.root_pid = root_pid
        self.interval = interval
        self.peaks = TreePeaks()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def __enter__(self) -> "TreeSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.root_pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop.is_set():
            try:
                self._sample(root)
            except psutil.NoSuchProcess:
                if not root.is_running():
                    return
            self._stop.wait(self.interval)

    def _sample(self, root) -> None:
        import psutil

        driver = root.memory_info().rss
        found = []
        for child in root.children(recursive=True):
            try:
                found.append((child.pid, child.ppid(), child.name().lower(), child.memory_info().rss))
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        jvm_pids = {pid for pid, _, name, _ in found if name.startswith("java")}
        jvm = sum(rss for _, _, name, rss in found if name.startswith("java"))
        pythons = [(parent, rss) for _, parent, name, rss in found if name.startswith("python")]
        workers_total = sum(rss for _, rss in pythons)
        worker_rss = [rss for parent, rss in pythons if parent not in jvm_pids and parent != self.root_pid]  # forked by the daemon
        worker_max, workers = max(worker_rss, default=0), len(worker_rss)
        tree = driver + jvm + workers_total  # "other" left out: see the class docstring
        others = [(name, rss) for _, _, name, rss in found if not name.startswith(("java", "python"))]
        for name, _ in others:
            self.peaks.other_names.add(name)
        other = sum(rss for _, rss in others)
        peaks = self.peaks
        peaks.driver = max(peaks.driver, driver)
        peaks.jvm = max(peaks.jvm, jvm)
        peaks.worker_max = max(peaks.worker_max, worker_max)
        peaks.workers_total = max(peaks.workers_total, workers_total)
        peaks.tree_total = max(peaks.tree_total, tree)
        peaks.other = max(peaks.other, other)
        peaks.max_workers = max(peaks.max_workers, workers)
        peaks.samples += 1


def run_measured_child(argv: list[str], result_path: str, interval: float = 0.2) -> tuple[dict, TreePeaks, float]:
    """Run ``python argv...`` (which writes JSON to ``result_path``) while sampling its process tree."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, *argv])
    with TreeSampler(process.pid, interval) as sampler:
        code = process.wait()
    seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"error: measured run failed with exit status {code}: {' '.join(argv)}")
    with open(result_path) as handle:
        return json.load(handle), sampler.peaks, seconds


# --------------------------------------------------------------------------- output


def parse_sizes(text: str, option: str = "--memory-sizes") -> list[int]:
    try:
        sizes = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise SystemExit(f"error: {option} takes comma-separated counts, got {text!r}")
    if len(sizes) < 2 or sizes[0] < 1:
        raise SystemExit(f"error: {option} needs at least two different positive counts")
    return sizes


def report_memory(results: dict, job: str, goal: float) -> None:
    args = results["args"]
    print()
    print(f"Peak memory of {job}, backbone {args['backbone']}, master {args['master']}, one fresh process per size")
    print(f"machine: {results['machine_start']['cpus']} CPUs, load average at start {results['machine_start']['load_average_1_5_15']}, at end {results['machine_end']['load_average_1_5_15']}")
    print()
    rows = []
    for entry in results["sizes"]:
        peak, summary = entry["peak_mib"], entry["job_summary"]
        rows.append([entry["images"], entry["process_seconds"], summary.get("images_per_second"), peak["driver"], peak["jvm"], peak["worker_max"], peak["workers_total"], peak["tree_total"], peak["max_workers"]])
    print_table(["images", "process s", "job img/s", "driver MiB", "JVM MiB", "worker max MiB", "workers MiB", "tree MiB", "workers"], rows)
    small, large = results["sizes"][0], results["sizes"][-1]
    ratios = {key: ratio(large["peak_mib"][key], small["peak_mib"][key]) for key in ("driver", "jvm", "worker_max", "workers_total", "tree_total")}
    results["ratios_largest_to_smallest"] = ratios
    results["goal_ratio"] = goal
    print()
    label = f"{large['images']} / {small['images']} images"
    for key, name in (("driver", "driver (Python) peak"), ("worker_max", "largest Python worker peak")):
        value = ratios[key]
        print(goal_line(f"{name}, {label}", value, f"<= {goal}", None if value is None else value <= goal))
    print(f"JVM peak ratio {fmt(ratios['jvm'], 3)}, all Python workers {fmt(ratios['workers_total'], 3)}, whole tree {fmt(ratios['tree_total'], 3)} (for information)")


def fmt(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def print_table(headers: Sequence[str], rows: Sequence[Sequence]) -> None:
    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths)))
    print(line)
    print("-" * len(line))
    for row in cells:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))


def goal_line(label: str, value: float | None, goal: str, met: bool | None) -> str:
    verdict = "n/a" if met is None else ("MET" if met else "NOT MET")
    return f"{label} = {fmt(value, 3)}   goal {goal}: {verdict}"


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def add_work_options(parser, kept: str, master: bool = True) -> None:
    """Where the images come from, where the work happens, and where results go."""
    if master:
        parser.add_argument("--master", default="local[*]", help="Spark master (default local[*])")
    parser.add_argument("--dataset", default=None, help="local folder of images or Flickr8k root; default: generate a sample dataset")
    parser.add_argument("--workdir", default=None, help="where the temporary work folder is made (default: the system temp folder)")
    parser.add_argument("--keep", action="store_true", help=f"keep the work folder ({kept})")
    parser.add_argument("--json-out", default=None, help="also write the results as JSON to this path")


def add_memory_options(parser, sizes: str, *child_options: str) -> None:
    """The peak-memory mode: sizes measured, sampling interval, and the child run's own options."""
    parser.add_argument("--memory", action="store_true", help="peak memory mode instead of throughput")
    parser.add_argument("--memory-sizes", default=sizes, help=f"image counts for --memory, comma separated (default {sizes})")
    parser.add_argument("--sample-interval", type=float, default=0.2, help="seconds between memory samples (default 0.2)")
    for name in ("input", "output", "result", *child_options):
        parser.add_argument(f"--child-{name}", default=None, help=argparse.SUPPRESS)


def print_report(table: str, result: dict, json_path: str | None) -> int:
    """The table on stdout after a blank line, the numbers as JSON when asked; exit status 0."""
    print()
    print(table)
    write_json(json_path, result)
    return 0


def write_json(path: str | None, data: dict) -> None:
    if not path:
        return
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "w") as handle:
        json.dump(data, handle, indent=1, default=str)
    note(f"results written to {path}")


@dataclass
class Workdir:
    """A temporary folder for inputs and outputs, removed at the end unless kept."""

    parent: str | None = None
    keep: bool = False
    path: str = field(default="", init=False)

    def __enter__(self) -> "Workdir":
        import tempfile

        self.path = tempfile.mkdtemp(prefix="captioning-bench-", dir=self.parent)
        return self

    def __exit__(self, *exc) -> None:
        if self.keep:
            note(f"work folder kept: {self.path}")
        else:
            shutil.rmtree(self.path, ignore_errors=True)

    def sub(self, name: str) -> str:
        return os.path.join(self.path, name)
