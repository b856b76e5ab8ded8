"""Data-parallel TensorFlow workers launched by Spark: barrier stage, TF_CONFIG, chief.

    spark-submit jobs/train_decoder.py ... --workers 2     (uses this module)

Why Spark's barrier execution mode: ``MultiWorkerMirroredStrategy`` needs all N workers
running at the same time, each knowing every other worker's address, and a failure of one
must stop the others (a half-alive ring of collectives just hangs). A barrier stage
(``rdd.barrier().mapPartitions``) gives exactly that: its N tasks are scheduled together
or not at all, ``BarrierTaskContext.allGather`` exchanges messages between them, and if
any task fails Spark kills the rest and retries the whole stage. No separate cluster
manager, no ssh, no fixed ports: the workers run wherever Spark has free task slots.

How one worker starts (``_BarrierTask``, inside a Spark Python worker):

1. rank = the task's partition id (0..N-1); rank 0 is the chief;
2. it picks a free TCP port on its executor's host (the address Spark reports in
   ``getTaskInfos()``) and ``allGather`` gives every task the list of ``host:port`` by
   rank, from which each builds the same ``TF_CONFIG`` cluster (``worker`` tasks only;
   MultiWorkerMirroredStrategy treats worker 0 as the chief);
3. it runs the entry function (``"module:function"``) in a fresh Python process with that
   ``TF_CONFIG``, the Python worker's ``sys.path`` (so code shipped with ``--py-files``
   resolves there too), TensorFlow's thread pools sized to the task's CPUs and, on GPU
   clusters, the task's GPU. A fresh process because TensorFlow's collective runtime can
   be configured once per process, while Spark reuses Python workers across tasks and
   jobs; the process also ends when its Spark task goes away (the parent is watched), so
   a killed job leaves no TensorFlow worker behind;
4. the entry function returns a JSON-able dict; the driver gets them ordered by rank.

Caveats. The port is released between being picked and being bound by TensorFlow's
server; if another process takes it in that window the worker fails and Spark retries the
stage with new ports. TensorFlow's gRPC server listens on that port on every interface
(``0.0.0.0`` is hard-coded in TensorFlow), whatever host ``TF_CONFIG`` names: on shared
networks, firewall the executors' ephemeral ports. Barrier stages need as many free task
slots as workers at once and refuse to run with dynamic allocation
(``spark.dynamicAllocation.enabled=false``). With Spark 3.5.0-3.5.5 the driver JVM does
not exit after a barrier stage; ``release_barrier_timer_at_exit`` works around it.
"""
from __future__ import annotations

import atexit
import collections
import importlib
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class WorkerRole:
    """Where one worker stands in the group: its rank and every worker's TF address."""

    rank: int
    addresses: tuple[str, ...]  # "host:port" of every worker's TensorFlow server, by rank

    def __post_init__(self) -> None:
        if not 0 <= self.rank < len(self.addresses):
            raise ValueError(f"rank {self.rank} outside a group of {len(self.addresses)} workers")

    @property
    def count(self) -> int:
        return len(self.addresses)

    @property
    def is_chief(self) -> bool:
        """Rank 0 writes checkpoints and results; the others only compute."""
        return self.rank == 0

    def tf_config(self) -> dict[str, Any]:
        return {"cluster": {"worker": list(self.addresses)}, "task": {"type": "worker", "index": self.rank}}


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def run_barrier(spark, workers: int, entry: str, payload: dict) -> list[dict]:
    """Run ``entry(payload, role)`` on ``workers`` simultaneous Spark tasks; results by rank.

    ``entry`` is ``"module:function"``, importable on the executors (the installed or
    ``--py-files``-shipped package); ``payload`` must be JSON-serialisable.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    module_name, _, function_name = entry.partition(":")
    if not module_name or not function_name:
        raise ValueError(f"entry must be 'module:function', got {entry!r}")
    check_barrier_settings(spark.sparkContext.getConf().get("spark.dynamicAllocation.enabled", "false"))
    message = json.dumps({"entry": entry, "payload": payload})
    task = _BarrierTask(message)
    rdd = spark.sparkContext.parallelize(range(workers), workers)
    try:
        results = rdd.barrier().mapPartitions(task).collect()
    finally:
        release_barrier_timer_at_exit(spark)
    return sorted(results, key=lambda r: r["rank"])


def check_barrier_settings(dynamic_allocation: str) -> None:
    """Refuse before any work what Spark would refuse only when the barrier stage starts."""
    if dynamic_allocation.strip().lower() == "true":
        raise ValueError(
            "data-parallel training runs as a Spark barrier stage, which cannot run with dynamic allocation: "
            "submit with --conf spark.dynamicAllocation.enabled=false and enough executors for every worker "
            "(or train with --workers 1)"
        )


def release_barrier_timer_at_exit(spark) -> None:
    """Let the driver JVM exit after a barrier stage (Spark 3.5.0 to 3.5.5).

    The driver's BarrierCoordinator keeps a non-daemon ``java.util.Timer`` thread ("BarrierCoordinator
    barrier epoch increment timer") that its ``onStop`` never cancels, so after the application ends
    ``spark-submit`` in client mode never returns (SPARK-49479, fixed by SPARK-51450 in 3.5.6). The
    timer is cancelled when this Python driver exits, after the session is stopped, not earlier:
    another barrier stage of the same application still needs it. On Spark versions without that
    timer (the field is gone) nothing is done.
    """
    try:
        coordinator = spark.sparkContext._jsc.sc().taskScheduler().barrierCoordinator()  # noqa: SLF001
        timer = getattr(coordinator, "org$apache$spark$BarrierCoordinator$$timer")()
    except Exception:  # noqa: BLE001 - another Spark version, or no coordinator was started
        return
    atexit.register(_cancel_quietly, timer)


def _cancel_quietly(timer) -> None:
    try:
        timer.cancel()
    except Exception:  # noqa: BLE001 - the JVM is already gone: nothing left to release
        pass


class _BarrierTask:
    """The function of each barrier task (a class, so it pickles without closures)."""

    def __init__(self, message: str):
        self.message = message

    def __call__(self, _rows):
        from pyspark import BarrierTaskContext

        context = BarrierTaskContext.get()
        rank = context.partitionId()
        executor = context.getTaskInfos()[rank].address  # host:port of the executor running this task
        host = executor.rsplit(":", 1)[0]
        port = free_port(host)
        gathered = [json.loads(m) for m in context.allGather(json.dumps({"rank": rank, "address": f"{host}:{port}"}))]
        addresses = tuple(m["address"] for m in sorted(gathered, key=lambda m: m["rank"]))
        role = WorkerRole(rank, addresses)
        gpus = context.resources().get("gpu")
        cpus = context.cpus()
        result = run_worker_process(self.message, role, cpus=cpus, gpus=tuple(gpus.addresses) if gpus else ())
        yield {**result, "executor": executor}


def run_worker_process(message: str, role: WorkerRole, cpus: int = 1, gpus: tuple[str, ...] = ()) -> dict:
    """Run one worker's entry function in a child process; its result dict (with ``rank``)."""
    with tempfile.TemporaryDirectory(prefix=f"captioning-worker-{role.rank}-") as tmp:
        spec_path, result_path = os.path.join(tmp, "spec.json"), os.path.join(tmp, "result.json")
        spec = {**json.loads(message), "rank": role.rank, "addresses": list(role.addresses), "cpus": cpus, "parent": os.getpid()}
        with open(spec_path, "w") as handle:
            json.dump(spec, handle)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) if p else os.getcwd() for p in sys.path)
        env["TF_CONFIG"] = json.dumps(role.tf_config())
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        process = subprocess.Popen(
            [sys.executable, "-m", "captioning.cluster.barrier", spec_path, result_path],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
        )
        tail: collections.deque[str] = collections.deque(maxlen=40)
        for line in process.stdout:  # forwarded to the executor's log as it comes
            tail.append(line)
            sys.stderr.write(line)
        code = process.wait()
        if code != 0 or not os.path.exists(result_path):
            raise RuntimeError(f"data-parallel worker {role.rank} of {role.count} ended with exit status {code}; its last output:\n{''.join(tail)}")
        with open(result_path) as handle:
            return {**json.load(handle), "rank": role.rank}


def _exit_with_parent(parent: int, interval: float = 1.0) -> None:
    """End this process when the Spark task that started it is gone (killed job, lost executor)."""

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(3)
            time.sleep(interval)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _configure_threads(cpus: int) -> None:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(max(1, cpus))
    tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, cpus)))


def resolve(entry: str) -> Callable[[dict, WorkerRole], dict]:
    module_name, _, function_name = entry.partition(":")
    return getattr(importlib.import_module(module_name), function_name)


def main(argv: list[str] | None = None) -> int:
    """Child process: ``python -m captioning.cluster.barrier SPEC.json RESULT.json``."""
    spec_path, result_path = argv if argv is not None else sys.argv[1:]
    with open(spec_path) as handle:
        spec = json.load(handle)
    _exit_with_parent(int(spec["parent"]))
    role = WorkerRole(int(spec["rank"]), tuple(spec["addresses"]))
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s %(levelname)s worker-{role.rank} %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("petastorm").setLevel(logging.WARNING)
    os.environ["TF_CONFIG"] = json.dumps(role.tf_config())
    _configure_threads(int(spec.get("cpus") or 1))
    result = resolve(spec["entry"])(spec["payload"], role)
    partial = result_path + ".partial"
    with open(partial, "w") as handle:
        json.dump(result, handle)
    os.replace(partial, result_path)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip interpreter teardown: TensorFlow's collective threads can block a normal exit


if __name__ == "__main__":
    raise SystemExit(main())
