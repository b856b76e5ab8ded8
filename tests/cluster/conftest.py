"""A real Spark standalone cluster for the tests, and the project shipped to it as to EMR.

Fixtures (all per test session):

* ``cluster``: one master and two workers (1 core, 3 GB each, separate work folders) on
  127.0.0.1, started with ``spark-daemon.sh`` (``captioning.cluster.standalone``) and always
  stopped at the end, also when tests fail.
* ``shipment``: what ``make package`` builds (``captioning.aws.package.build_dist``: the
  wheel and the job scripts), plus the Python the cluster runs:
    - the wheel is handed to ``spark-submit --py-files`` under a ``.zip`` name (same bytes):
      PySpark puts ``--py-files`` entries on the executors' ``sys.path`` only when they end
      in .zip, .egg or .jar (``SparkContext.PACKAGE_EXTENSIONS``); a ``.whl`` is copied to
      the executors but never importable there, while the driver imports it fine;
    - ``python``: a virtual environment made here without pip whose only addition is a
      ``.pth`` line naming this project's site-packages. Python adds that folder to
      ``sys.path`` but does not run the ``.pth`` files inside it, so every third-party
      package imports while the editable install of this project (a ``.pth`` import hook
      in site-packages) is not active: ``import captioning`` fails in that Python unless
      the shipped wheel is on the path. Driver and executors both run it, from working
      folders outside the repository and with no PYTHONPATH.
* ``submit``: runs one job script through ``<SPARK_HOME>/bin/spark-submit --master
  spark://127.0.0.1:<port>`` as a subprocess and returns the JSON the job prints.
* ``spark`` (tests/conftest.py), ``dataset``, ``reference``: the same jobs run in this process on
  ``local[2]`` (the editable install), the results the cluster runs are compared with.

Every path here is a local folder. On one machine every executor sees it, as each node
of a real cluster would see S3, HDFS or a shared mount; the test shows that the code
and its imports travel, not that storage is shared.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SMALL_MODEL = ["--units", "32", "--hidden-units", "64", "--embedding-dim", "16", "--batch-size", "32", "--learning-rate", "0.01", "--patience", "100"]
EPOCHS = 10  # ~2.2 nats of dev-loss progress on the sample data: enough to compare training runs
FEATURES = ["--backbone", "mobilenetv3small", "--weights", "none", "--batch-size", "16", "--images-per-partition", "16"]
EVALUATE = ["--search", "greedy", "--no-coco"]
CAPTION = ["--search", "greedy", "--batch-size", "8", "--images-per-partition", "16"]
SUBMIT_TIMEOUT = 1200  # a bound for a hung job, never reached by a working one
JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"


@dataclass(frozen=True)
class Shipment:
    wheel: str  # the wheel make package builds
    py_files: str  # the same bytes as <name>.zip, what --py-files gets
    jobs: str  # folder of the job scripts (dist/emr/jobs)
    python: str  # interpreter of driver and executors: dependencies yes, this project no


@dataclass(frozen=True)
class Submitted:
    stdout: str
    stderr: str
    seconds: float
    tasks_by_worker: dict  # worker index -> tasks its executor ran for this application

    def json(self) -> dict:
        """The last top-level JSON object the job printed (jobs print one when they finish)."""
        start = self.stdout.rfind("\n{") + 1
        return json.loads(self.stdout[start:])


def _executor_python(folder: Path) -> str:
    """A venv seeing this project's site-packages without running its .pth files."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, env=_clean_env())
    python = folder / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "project-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return str(python)


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "SPARK_HOME", "SPARK_CONF_DIR", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")}
    env.update(SPARK_LOCAL_IP="127.0.0.1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONNOUSERSITE="1")
    return env


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    from captioning.cluster.standalone import ClusterConfig, StandaloneCluster, WorkerSpec

    root = tmp_path_factory.mktemp("cluster")
    standalone = StandaloneCluster(ClusterConfig(root=str(root), workers=(WorkerSpec(1, "3g"), WorkerSpec(1, "3g"))))
    try:
        standalone.start()
        yield standalone
    finally:
        standalone.stop()


@pytest.fixture(scope="session")
def shipment(tmp_path_factory) -> Shipment:
    from captioning.aws.package import build_dist

    root = tmp_path_factory.mktemp("shipment")
    dist = build_dist(REPO, root / "dist")
    wheel = dist.root / dist.wheel
    py_files = root / (wheel.stem + ".zip")
    shutil.copyfile(wheel, py_files)
    return Shipment(wheel=str(wheel), py_files=str(py_files), jobs=str(dist.root / "jobs"), python=_executor_python(root / "venv"))


@pytest.fixture(scope="session")
def submit(cluster, shipment, tmp_path_factory):
    """``submit(script, args) -> Submitted``: one spark-submit of a job to the cluster."""
    from captioning.cluster.session import s3a_jars
    from captioning.cluster.standalone import spark_home, spark_submit

    workdir = tmp_path_factory.mktemp("submit-cwd")  # no lib/ here: imports come from the wheel

    def run(script: str, args: list[str], conf: dict[str, str] | None = None, env: dict[str, str] | None = None) -> Submitted:
        settings = {
            "spark.pyspark.python": shipment.python,
            "spark.pyspark.driver.python": shipment.python,
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            "spark.ui.enabled": "false",
            "spark.sql.shuffle.partitions": "4",
            "spark.executor.memory": "1g",
            # start tasks only once both executors are registered, so every job uses both workers
            "spark.cores.max": "2",
            "spark.scheduler.minRegisteredResourcesRatio": "1.0",
            "spark.scheduler.maxRegisteredResourcesWaitingTime": "60s",
            # short-lived JVMs on 2 cores: the quick JIT tier and one GC thread start faster
            "spark.driver.extraJavaOptions": JVM_OPTIONS,
            "spark.executor.extraJavaOptions": JVM_OPTIONS,
            **(conf or {}),
        }
        command = [spark_submit(), "--master", cluster.master_url, "--py-files", shipment.py_files, "--jars", ",".join(s3a_jars())]
        for key, value in settings.items():
            command += ["--conf", f"{key}={value}"]
        command += [script if os.path.isabs(script) else os.path.join(shipment.jobs, script), *args]
        environment = {**_clean_env(), **(env or {})}
        environment.update(SPARK_HOME=spark_home(), SPARK_CONF_DIR=cluster.path("conf"), PYSPARK_PYTHON=shipment.python, PYSPARK_DRIVER_PYTHON=shipment.python)
        before = _applications(cluster)
        started = time.monotonic()
        process = subprocess.Popen(command, cwd=workdir, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            stdout, stderr = process.communicate(timeout=SUBMIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the JVM and the Python driver it started
            stdout, stderr = process.communicate()
            raise AssertionError(f"spark-submit {script} did not end within {SUBMIT_TIMEOUT}s:\n{stdout[-3000:]}\n{stderr[-8000:]}")
        seconds = time.monotonic() - started
        if process.returncode != 0:
            raise AssertionError(f"spark-submit {script} failed ({process.returncode}):\n{stdout[-3000:]}\n{stderr[-8000:]}")
        return Submitted(stdout, stderr, seconds, _tasks_by_worker(cluster, _applications(cluster) - before))

    return run


def _applications(cluster) -> set[tuple[int, str]]:
    """(worker index, application folder) pairs present in the workers' work folders."""
    return {(i, name) for i in range(1, len(cluster.config.workers) + 1) for name in os.listdir(cluster.work_dir(i)) if name.startswith("app-")}


def _tasks_by_worker(cluster, new: set[tuple[int, str]]) -> dict[int, int]:
    """Tasks each worker's executors ran, from the executors' own logs (``Executor: Running task``)."""
    counts = {i: 0 for i in range(1, len(cluster.config.workers) + 1)}
    for worker, app in new:
        for log in Path(cluster.work_dir(worker), app).glob("*/stderr"):
            counts[worker] += log.read_text(errors="replace").count("Executor: Running task")
    return counts


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    """~60 sample images with the real files' quirks (shared, read-only)."""
    from captioning.data.sample.config import SampleConfig
    from captioning.data.sample.generate import generate_sample_dataset

    root = tmp_path_factory.mktemp("cluster-sample") / "flickr"
    summary = generate_sample_dataset(str(root), SampleConfig(num_images=60, seed=3, quirks=True, workers=1))
    return {"root": str(root), "images": summary.images_uri}


@pytest.fixture(scope="session")
def reference(spark, dataset, tmp_path_factory):
    """Every job run locally (local[2]) on the sample: the outputs the cluster must reproduce."""
    from captioning.pipeline import caption_images
    from captioning.pipeline import evaluate
    from captioning.pipeline import extract_features
    from captioning.pipeline import prepare_captions
    from captioning.pipeline import train_decoder

    work = tmp_path_factory.mktemp("local-reference")
    paths = {name: str(work / name) for name in ("prepared", "features", "model", "evaluation", "captions")}
    assert prepare_captions.main(["--dataset", dataset["root"], "--output", paths["prepared"], "--min-count", "3"], spark=spark) == 0
    assert extract_features.main(["--input", dataset["root"], "--output", paths["features"], *FEATURES], spark=spark) == 0
    assert train_decoder.main(["--captions", paths["prepared"], "--features", paths["features"], "--output", paths["model"], *SMALL_MODEL, "--epochs", str(EPOCHS)], spark=spark) == 0
    assert evaluate.main(["--model", paths["model"], "--features", paths["features"], "--captions", paths["prepared"], "--output", paths["evaluation"], *EVALUATE], spark=spark) == 0
    assert caption_images.main(["--input", dataset["images"], "--model", paths["model"], "--output", paths["captions"], *CAPTION], spark=spark) == 0
    return paths
