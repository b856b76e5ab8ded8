"""A throwaway Spark standalone cluster on this machine: one master, N workers, 127.0.0.1 only.

Why it exists: ``local[*]`` runs the driver, the scheduler and every task in one JVM, so
it cannot show what only a real cluster exercises: code and files shipped to executors
(``--py-files``), executors in their own JVMs and work folders, tasks of one stage on
different workers, barrier stages spanning workers. The pip ``pyspark`` package carries
the Spark distribution's ``bin/`` and ``sbin/spark-daemon.sh`` but not
``start-master.sh``/``start-worker.sh``, so the daemons are started here with
``spark-daemon.sh`` directly, the way those scripts do:

    spark-daemon.sh start org.apache.spark.deploy.master.Master 1 --host 127.0.0.1 --port P --webui-port W
    spark-daemon.sh start org.apache.spark.deploy.worker.Worker N spark://127.0.0.1:P --host 127.0.0.1 \
        --cores C --memory M --work-dir <root>/worker-N

Every cluster lives under its own root folder (logs, pid files, an empty configuration
folder so no ``spark-defaults.conf`` of the machine applies, one work folder per worker),
so several clusters (a test session, a benchmark) can run side by side; ports are picked
free. ``stop()`` stops the workers (which kill their executors) and then the master, and
kills any daemon that outlives ``spark-daemon.sh stop``. Used by ``tests/cluster`` and
``bench/bench_scaling.py``:

    with StandaloneCluster(ClusterConfig(root="/tmp/c", workers=(WorkerSpec(1, "3g"), WorkerSpec(1, "3g")))) as cluster:
        subprocess.run([spark_submit(), "--master", cluster.master_url, ...])
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"


class ClusterError(RuntimeError):
    """The cluster did not start (the message carries the tail of the daemon logs)."""


@dataclass(frozen=True)
class WorkerSpec:
    cores: int = 1
    memory: str = "3g"  # what the worker offers to executors (each executor asks spark.executor.memory)


@dataclass(frozen=True)
class ClusterConfig:
    root: str  # folder for logs, pid files, configuration and the workers' work folders
    workers: tuple[WorkerSpec, ...] = field(default_factory=lambda: (WorkerSpec(), WorkerSpec()))
    host: str = "127.0.0.1"
    start_timeout: float = 90.0  # seconds for the master and every worker to register
    daemon_memory: str = "512m"  # heap of the master and worker daemons themselves
    daemon_java_options: str = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"  # quick JIT tier, one GC thread: small daemons start fast

    def __post_init__(self) -> None:
        if not self.workers:
            raise ValueError("a cluster needs at least one worker")
        if any(w.cores < 1 for w in self.workers):
            raise ValueError("every worker needs at least one core")


def spark_home() -> str:
    """SPARK_HOME of the installed pyspark (the package folder holds bin/, sbin/ and jars/)."""
    import pyspark

    return os.environ.get("SPARK_HOME") or os.path.dirname(os.path.abspath(pyspark.__file__))


def spark_submit() -> str:
    return os.path.join(spark_home(), "bin", "spark-submit")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class StandaloneCluster:
    """Start with ``start()`` (or ``with``); always ``stop()``, also after a failed start."""

    def __init__(self, config: ClusterConfig):
        self.config = config
        self.master_port = 0
        self.webui_port = 0
        self._started: list[tuple[str, int]] = []  # (daemon class, instance) in start order

    @property
    def master_url(self) -> str:
        return f"spark://{self.config.host}:{self.master_port}"

    @property
    def webui_url(self) -> str:
        return f"http://{self.config.host}:{self.webui_port}"

    def path(self, *parts: str) -> str:
        return os.path.join(self.config.root, *parts)

    def work_dir(self, index: int) -> str:
        """Work folder of worker ``index`` (1-based): one ``app-*/<executor>/`` folder per application."""
        return self.path(f"worker-{index}")

    def environment(self) -> dict[str, str]:
        """Environment of the daemons: this cluster's folders, no PYTHONPATH of the caller."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SPARK_CONF_DIR", "SPARK_HOME")}
        env.update(
            SPARK_HOME=spark_home(),
            SPARK_CONF_DIR=self.path("conf"),
            SPARK_LOG_DIR=self.path("logs"),
            SPARK_PID_DIR=self.path("pids"),
            SPARK_IDENT_STRING="captioning",
            SPARK_LOCAL_IP=self.config.host,
            SPARK_DAEMON_MEMORY=self.config.daemon_memory,
            SPARK_DAEMON_JAVA_OPTS=self.config.daemon_java_options,
        )
        return env

    def _daemon(self, action: str, cls: str, instance: int, *args: str) -> subprocess.CompletedProcess:
        script = os.path.join(spark_home(), "sbin", "spark-daemon.sh")
        return subprocess.run(["bash", script, action, cls, str(instance), *args], env=self.environment(), cwd=self.config.root, capture_output=True, text=True, timeout=120)

    def start(self) -> "StandaloneCluster":
        for name in ("conf", "logs", "pids"):
            os.makedirs(self.path(name), exist_ok=True)
        host = self.config.host
        self.master_port, self.webui_port = free_port(host), free_port(host)
        self._launch([(MASTER_CLASS, 1, ("--host", host, "--port", str(self.master_port), "--webui-port", str(self.webui_port)))])
        workers = []
        for index, spec in enumerate(self.config.workers, start=1):
            os.makedirs(self.work_dir(index), exist_ok=True)
            args = (self.master_url, "--host", host, "--webui-port", str(free_port(host)), "--cores", str(spec.cores), "--memory", spec.memory, "--work-dir", self.work_dir(index))
            workers.append((WORKER_CLASS, index, args))
        self._launch(workers)  # together: spark-daemon.sh waits a few seconds for each daemon it starts
        self._wait_ready()
        return self

    def _launch(self, daemons: list[tuple[str, int, tuple[str, ...]]]) -> None:
        with ThreadPoolExecutor(max_workers=len(daemons)) as pool:
            results = list(pool.map(lambda d: self._daemon("start", d[0], d[1], *d[2]), daemons))
        self._started.extend((cls, instance) for cls, instance, _ in daemons)
        for (cls, instance, _), result in zip(daemons, results):
            if result.returncode != 0:
                raise ClusterError(f"spark-daemon.sh start {cls} {instance} failed ({result.returncode}):\n{result.stdout}{result.stderr}\n{self.log_tail()}")

    def state(self) -> dict:
        """The master's JSON status page (workers, applications)."""
        with urllib.request.urlopen(self.webui_url + "/json/", timeout=5) as response:
            return json.loads(response.read().decode())

    def alive_workers(self) -> list[dict]:
        return [w for w in self.state().get("workers", []) if w.get("state") == "ALIVE"]

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.config.start_timeout
        while True:
            try:
                if len(self.alive_workers()) == len(self.config.workers):
                    return
            except OSError:
                pass  # the master's web UI is not up yet
            if time.monotonic() > deadline:
                raise ClusterError(f"the cluster did not come up within {self.config.start_timeout:.0f}s\n{self.log_tail()}")
            time.sleep(0.5)

    def log_tail(self, lines: int = 30) -> str:
        out = []
        folder = self.path("logs")
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            with open(os.path.join(folder, name), errors="replace") as handle:
                out.append(f"--- {name}\n" + "".join(handle.readlines()[-lines:]))
        return "\n".join(out)

    def _pid(self, cls: str, instance: int) -> int | None:
        pid_file = self.path("pids", f"spark-captioning-{cls}-{instance}.pid")
        try:
            with open(pid_file) as handle:
                return int(handle.read().strip())
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        """Workers first (their executors end with them), then the master; no daemon survives."""
        workers = [(cls, i) for cls, i in self._started if cls == WORKER_CLASS]
        masters = [(cls, i) for cls, i in self._started if cls != WORKER_CLASS]
        for group in (workers, masters):
            if group:
                with ThreadPoolExecutor(max_workers=len(group)) as pool:
                    list(pool.map(lambda daemon: self._stop_daemon(*daemon), group))
        self._started.clear()

    def _stop_daemon(self, cls: str, instance: int) -> None:
        pid = self._pid(cls, instance)
        try:
            self._daemon("stop", cls, instance)
        except subprocess.TimeoutExpired:
            pass
        if pid is not None:
            _kill_if_alive(pid)

    def __enter__(self) -> "StandaloneCluster":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


def _kill_if_alive(pid: int, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds, for a daemon ``spark-daemon.sh stop`` left."""
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        time.sleep(2.0)
