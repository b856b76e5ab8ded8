"""Node environment install time: the wheelhouse bootstrap against installing from PyPI.

Run as root (the bootstrap installs a root-owned environment), from the repository root::

    .venv/bin/python bench/bench_bootstrap.py --json-out bench-output/bootstrap.json
    .venv/bin/python bench/bench_bootstrap.py --node-set gpu     # the 2.8 GB CUDA set (see below)

Each row builds a fresh virtual environment with the same Python 3.11 and installs the same
node set into it, once, timed by the wall clock:

* wheelhouse: ``emr/bootstrap.sh`` end to end, as on a node: the version deployed by
  ``captioner deploy`` to an S3 API server on 127.0.0.1 (moto), downloaded by the AWS CLI
  (only the set's wheels), hashes checked, ``pip install --no-index --no-deps
  --require-hashes``, the project wheel, ``pip check``. The download runs over loopback,
  so on a node add the transfer from S3 in the region.
* PyPI, former bootstrap: what the bootstrap did before the wheelhouse: ``pip install
  --no-cache-dir -c constraints.txt -r <node requirements>`` resolving from PyPI (with
  pyspark, whose sdist is built into a wheel), then the project wheel.
* PyPI, same locked set: the wheelhouse's exact set (``--no-deps --require-hashes``) but
  downloaded from PyPI, to separate "where the files come from" from "resolving".

pip's cache, local find-links and configuration files are disabled for the PyPI rows.
On a machine without an NVIDIA GPU the bootstrap installs the CPU set (it decides by the
hardware), so for ``--node-set gpu`` the wheelhouse row is the bootstrap's install
command alone on the set's wheels, copied out of the local wheelhouse.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEELHOUSE_ROW = "wheelhouse"
sys.path.insert(0, str(ROOT / "lib"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_s3_server() -> tuple[subprocess.Popen, dict]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise SystemExit("error: the moto S3 server did not start")
            time.sleep(0.1)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    return server, env


def timed(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"error: {' '.join(command[:4])}... failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return seconds


def pypi_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    return {**env, "PIP_CONFIG_FILE": "/dev/null", "PIP_NO_CACHE_DIR": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def fresh_venv(python: str, parent: Path, name: str) -> Path:
    venv = parent / name
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    return venv


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--node-set", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--python", default=shutil.which("python3.11") or "python3.11", help="the Python 3.11 the environments are made with")
    parser.add_argument("--work", default="bench-output/bootstrap", help="scratch folder (dist, wheelhouse, environments)")
    parser.add_argument("--json-out", help="also write the numbers as JSON here")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("error: run as root: the bootstrap installs a root-owned environment")
    if shutil.which("aws") is None:
        raise SystemExit("error: the AWS CLI (aws) is needed: the bootstrap downloads with it")
    from captioning.aws import layout
    from captioning.aws.deploy import deploy
    from captioning.aws.package import NODE_EXTRAS, build_dist, node_requirements, wheel_requirements

    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    dist = build_dist(ROOT, work / "dist" / "emr", work / "wheelhouse", kinds=(args.node_set,))
    node_set = dist.manifest["node_sets"][args.node_set]
    lock = dist.root / layout.NODE_REQUIREMENTS[args.node_set]
    project_wheel = dist.root / dist.wheel
    envs = Path(tempfile.mkdtemp(prefix="bench-bootstrap-", dir=work))
    rows = {}
    server, s3_env = start_s3_server()
    try:
        import boto3

        bucket = f"artifacts-{uuid.uuid4().hex[:8]}"
        os.environ.update(s3_env)
        boto3.client("s3").create_bucket(Bucket=bucket)
        deploy(f"s3://{bucket}/artifacts", "bench", dist.root, kinds=(args.node_set,), wheelhouse=dist.wheelhouse)
        path = f"{Path(args.python).parent}:{os.environ['PATH']}"
        env = {**os.environ, **s3_env, "PATH": path}
        prefix = envs / "wheelhouse"
        if args.node_set == "cpu":
            rows[WHEELHOUSE_ROW] = timed(
                ["bash", str(ROOT / "emr/bootstrap.sh"), "--artifacts", f"s3://{bucket}/artifacts/bench", "--venv", str(prefix / "venv"), "--discovery-script", str(prefix / "gpu-discovery.sh")], env)
        else:
            wheels = envs / "wheels"
            wheels.mkdir()
            for wheel in node_set:
                shutil.copy2(dist.wheelhouse / wheel["sha256"] / wheel["file"], wheels / wheel["file"])
            venv = fresh_venv(args.python, envs, "wheelhouse-gpu")
            start = time.perf_counter()
            timed([str(venv / "bin/python"), "-m", "pip", "install", "--quiet", "--no-index", "--find-links", str(wheels), "--no-deps", "--require-hashes", "-r", str(lock)], pypi_env())
            timed([str(venv / "bin/python"), "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", str(project_wheel)], pypi_env())
            rows[WHEELHOUSE_ROW] = time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(timeout=10)

    former = work / f"former-requirements-{args.node_set}.txt"
    former.write_text("\n".join(node_requirements(wheel_requirements(project_wheel), NODE_EXTRAS, (ROOT / "requirements/constraints.txt").read_text())[args.node_set]) + "\n")
    venv = fresh_venv(args.python, envs, "pypi-former")
    start = time.perf_counter()
    timed([str(venv / "bin/python"), "-m", "pip", "install", "--quiet", "-c", str(ROOT / "requirements/constraints.txt"), "-r", str(former)], pypi_env())
    timed([str(venv / "bin/python"), "-m", "pip", "install", "--quiet", "--no-deps", str(project_wheel)], pypi_env())
    rows["PyPI, former bootstrap (resolve, pyspark built)"] = time.perf_counter() - start
    venv = fresh_venv(args.python, envs, "pypi-locked")
    start = time.perf_counter()
    timed([str(venv / "bin/python"), "-m", "pip", "install", "--quiet", "--no-deps", "--require-hashes", "-r", str(lock)], pypi_env())
    timed([str(venv / "bin/python"), "-m", "pip", "install", "--quiet", "--no-deps", str(project_wheel)], pypi_env())
    rows["PyPI, same locked set"] = time.perf_counter() - start
    shutil.rmtree(envs, ignore_errors=True)

    report = {
        "node_set": args.node_set,
        "wheels": len(node_set),
        "wheel_bytes": sum(w["size"] for w in node_set),
        "seconds": {name: round(value, 1) for name, value in rows.items()},
        "machine": {"host": platform.node(), "cpus": os.cpu_count(), "platform": platform.platform(), "load_average": [round(v, 2) for v in os.getloadavg()]},
    }
    base = rows[WHEELHOUSE_ROW]
    print(f"node set {args.node_set}: {report['wheels']} wheels, {report['wheel_bytes'] / 1e6:.0f} MB; {report['machine']['cpus']} CPUs, load {report['machine']['load_average']}")
    print("| install | seconds | ÷ wheelhouse |\n|---|---:|---:|")
    for name, value in rows.items():
        print(f"| {name} | {value:.1f} | {value / base:.2f} |")
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
