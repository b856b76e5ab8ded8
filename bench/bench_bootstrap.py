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
A fourth row times the bootstrap's two pip commands alone on the set's wheels already
on local disk (what is left of the bootstrap once the download is done), and the
bootstrap's own log splits its time into download, install and the rest. On a machine
without an NVIDIA GPU the bootstrap installs the CPU set (it decides by the hardware), so
``--node-set gpu`` has no end-to-end bootstrap row.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEELHOUSE_ROW = "wheelhouse: the install step alone (wheels on local disk)"
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


def timed(command: list[str], env: dict, log: list[str] | None = None) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"error: {' '.join(command[:4])}... failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    if log is not None:
        log.extend(result.stdout.splitlines())
    return seconds


def phases(log: list[str]) -> dict[str, int]:
    """Seconds between the bootstrap's log lines (whole seconds: its clock prints HH:MM:SS)."""
    stamps = []
    for line in log:
        match = re.match(r"\[captioning-bootstrap (\d\d):(\d\d):(\d\d)\] (.*)", line)
        if match:
            h, m, sec = (int(g) for g in match.groups()[:3])
            stamps.append((h * 3600 + m * 60 + sec, match.group(4)))
    marks = {"download and hash check": ("downloading", "downloaded"), "pip install of the set": ("installing the", "installing spark_captioning"), "project wheel, pip check, rest": ("installing spark_captioning", "done")}
    found = {}
    for name, (first, last) in marks.items():
        start = next(t for t, text in stamps if text.startswith(first))
        end = next(t for t, text in stamps if text.startswith(last))
        found[name] = (end - start) % 86400
    return found


def bootstrap_end_to_end(python: str, dist, envs: Path, rows: dict) -> dict[str, int]:
    """Deploy to an S3 server on 127.0.0.1 and time emr/bootstrap.sh installing from it."""
    import boto3

    from captioning.aws.deploy import deploy

    server, s3_env = start_s3_server()
    try:
        bucket = f"artifacts-{uuid.uuid4().hex[:8]}"
        os.environ.update(s3_env)
        boto3.client("s3").create_bucket(Bucket=bucket)
        deploy(f"s3://{bucket}/artifacts", "bench", dist.root, kinds=("cpu",), wheelhouse=dist.wheelhouse)
        env = {**os.environ, **s3_env, "PATH": f"{Path(python).parent}:{os.environ['PATH']}"}  # python3.11 as the nodes have it
        prefix, log = envs / "wheelhouse", []
        rows["wheelhouse: bootstrap.sh end to end (S3 on 127.0.0.1)"] = timed(
            ["bash", str(ROOT / "emr/bootstrap.sh"), "--artifacts", f"s3://{bucket}/artifacts/bench", "--venv", str(prefix / "venv"), "--discovery-script", str(prefix / "gpu-discovery.sh")], env, log)
        return phases(log)
    finally:
        server.terminate()
        server.wait(timeout=10)


def install_from_pypi(python: str, envs: Path, name: str, requirements: list[str], project_wheel: Path) -> float:
    venv = fresh_venv(python, envs, name)
    start = time.perf_counter()
    timed([str(venv / "bin/python"), "-m", "pip", "install", "--quiet", *requirements], pypi_env())
    timed([str(venv / "bin/python"), "-m", "pip", "install", "--quiet", "--no-deps", str(project_wheel)], pypi_env())
    return time.perf_counter() - start


def install_from_local_wheels(python: str, envs: Path, dist, node_set: list[dict], lock: Path, project_wheel: Path) -> float:
    """The bootstrap's pip commands alone, on the set's wheels already on local disk."""
    wheels = envs / "local-wheels"
    wheels.mkdir()
    for wheel in node_set:
        shutil.copy2(dist.wheelhouse / wheel["sha256"] / wheel["file"], wheels / wheel["file"])
    venv = fresh_venv(python, envs, "wheelhouse-local")
    start = time.perf_counter()
    timed([str(venv / "bin/python"), "-m", "pip", "install", "--quiet", "--no-index", "--find-links", str(wheels), "--no-deps", "--require-hashes", "-r", str(lock)], pypi_env())
    timed([str(venv / "bin/python"), "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", str(project_wheel)], pypi_env())
    return time.perf_counter() - start


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
    if args.node_set == "cpu" and shutil.which("aws") is None:
        raise SystemExit("error: the AWS CLI (aws) is needed: the bootstrap downloads with it")
    from captioning.aws import layout
    from captioning.aws.package import NODE_EXTRAS, build_dist, node_requirements, wheel_requirements

    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    dist = build_dist(ROOT, work / "dist" / "emr", work / "wheelhouse", kinds=(args.node_set,))
    node_set = dist.manifest["node_sets"][args.node_set]
    lock = dist.root / layout.NODE_REQUIREMENTS[args.node_set]
    project_wheel = dist.root / dist.wheel
    envs = Path(tempfile.mkdtemp(prefix="bench-bootstrap-", dir=work))
    rows = {}
    bootstrap_phases: dict[str, int] = {}
    if args.node_set == "cpu":  # the bootstrap installs the set the hardware calls for
        bootstrap_phases = bootstrap_end_to_end(args.python, dist, envs, rows)
    rows[WHEELHOUSE_ROW] = install_from_local_wheels(args.python, envs, dist, node_set, lock, project_wheel)
    former = work / f"former-requirements-{args.node_set}.txt"
    former.write_text("\n".join(node_requirements(wheel_requirements(project_wheel), NODE_EXTRAS, (ROOT / "requirements/constraints.txt").read_text())[args.node_set]) + "\n")
    pypi = ["-c", str(ROOT / "requirements/constraints.txt"), "-r", str(former)]
    rows["PyPI, former bootstrap (resolve, pyspark built)"] = install_from_pypi(args.python, envs, "pypi-former", pypi, project_wheel)
    pypi = ["--no-deps", "--require-hashes", "-r", str(lock)]
    rows["PyPI, same locked set"] = install_from_pypi(args.python, envs, "pypi-locked", pypi, project_wheel)
    shutil.rmtree(envs, ignore_errors=True)

    report = {
        "node_set": args.node_set,
        "wheels": len(node_set),
        "wheel_bytes": sum(w["size"] for w in node_set),
        "seconds": {name: round(value, 1) for name, value in rows.items()},
        "bootstrap_phases_seconds": bootstrap_phases or None,
        "machine": {"host": platform.node(), "cpus": os.cpu_count(), "platform": platform.platform(), "load_average": [round(v, 2) for v in os.getloadavg()]},
    }
    base = next(iter(rows.values()))  # the first row: the bootstrap end to end (CPU set) or the install step
    print(f"node set {args.node_set}: {report['wheels']} wheels, {report['wheel_bytes'] / 1e6:.0f} MB; {report['machine']['cpus']} CPUs, load {report['machine']['load_average']}")
    print("| install | seconds | ÷ first row |\n|---|---:|---:|")
    for name, value in rows.items():
        print(f"| {name} | {value:.1f} | {value / base:.2f} |")
    if bootstrap_phases:
        print("bootstrap.sh phases (s): " + ", ".join(f"{k} {v}" for k, v in bootstrap_phases.items()))
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
