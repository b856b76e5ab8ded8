"""The environment the EMR bootstrap installs, used as a cluster uses it: read-only, by another user.

On a node the bootstrap (running with sudo) installs the virtual environment as root, and
YARN runs every job as a different user, for whom the environment is read-only. This
test does the same on this machine:

1. ``make package``'s CPU node set is built and deployed with ``captioner deploy`` to the
   S3 test server (or, without the AWS CLI the bootstrap downloads with, to a folder),
2. emr/bootstrap.sh runs as root and installs it from the wheelhouse (``--no-index``)
   into a root-owned prefix,
3. the evaluate job runs as a separate system user (created with useradd) with that
   environment, pyspark coming from outside it as Spark provides it on EMR, and must
   write its COCO metrics.

It needs root (to install a root-owned environment and to switch users) and a Python 3.11
that another user may execute; it is skipped, saying which, only where those are missing.
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from captioning.aws.deploy import deploy
from captioning.aws.package import build_dist

ROOT = Path(__file__).resolve().parents[2]
USER = "captioning-job"
VERSION = "v1"


def require(condition: bool, reason: str) -> None:
    if not condition:
        pytest.skip(reason)


def shared_python() -> str | None:
    """A Python 3.11 outside any private folder, so the job user can run the environment's interpreter."""
    for candidate in ("/usr/bin/python3.11", "/usr/local/bin/python3.11"):
        path = Path(candidate)
        if path.exists() and all(os.stat(p).st_mode & stat.S_IXOTH for p in [path.resolve(), *path.resolve().parents]):
            return candidate
    return None


@pytest.fixture(scope="module")
def job_user():
    require(os.geteuid() == 0, "installing a root-owned environment and running a job as another user need root")
    require(shutil.which("useradd") is not None and shutil.which("runuser") is not None, "useradd and runuser (util-linux) are needed to run as another user")
    created = False
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER], check=True)
        created = True
    yield USER
    if created:
        subprocess.run(["userdel", USER], check=False)


@pytest.fixture(scope="module")
def shared_dir(job_user):
    """A world-readable folder outside pytest's private temporary tree."""
    folder = Path(tempfile.mkdtemp(prefix="captioning-node-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def node_environment(shared_dir, s3_endpoint):
    """emr/bootstrap.sh's environment, installed as root from the deployed wheelhouse."""
    python = shared_python()
    require(python is not None, "no Python 3.11 that another user may run (/usr/bin/python3.11); the node environment needs one")
    dist = build_dist(ROOT, shared_dir / "dist" / "emr", shared_dir / "dist" / "wheelhouse", kinds=("cpu",))
    if shutil.which("aws"):
        import boto3

        bucket = f"artifacts-{uuid.uuid4().hex[:8]}"
        boto3.client("s3").create_bucket(Bucket=bucket)
        artifacts = f"s3://{bucket}/artifacts"
    else:
        artifacts = str(shared_dir / "artifacts")
    deploy(artifacts, VERSION, dist.root, kinds=("cpu",))
    prefix = shared_dir / "opt"
    env = {**os.environ, "PATH": f"{Path(python).parent}:{os.environ['PATH']}"}  # the venv's python must be one others can run
    result = subprocess.run(
        ["bash", str(ROOT / "emr/bootstrap.sh"), "--artifacts", f"{artifacts}/{VERSION}", "--venv", str(prefix / "venv"), "--discovery-script", str(prefix / "gpu-discovery.sh")],
        capture_output=True, text=True, env=env, timeout=1200,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return {"venv": prefix / "venv", "log": result.stdout, "dist": dist}


def run_as(user: str, command: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    assignments = [f"{key}={value}" for key, value in env.items()]
    return subprocess.run(["runuser", "-u", user, "--", "env", "-i", *assignments, *command], capture_output=True, text=True, cwd=cwd, timeout=1200)


def test_bootstrap_installs_a_root_owned_read_only_environment_without_pyspark(node_environment, job_user, shared_dir):
    venv = node_environment["venv"]
    assert "downloaded" in node_environment["log"] and "node kind: cpu" in node_environment["log"]
    site = next(venv.glob("lib/python3.11/site-packages"))
    assert (site / "tensorflow").is_dir() and (site / "captioning").is_dir() and (site / "pycocoevalcap").is_dir()
    assert not (site / "pyspark").exists() and not (site / "py4j").exists(), "EMR's Spark provides pyspark"
    for path in (venv, site, site / "pycocoevalcap" / "tokenizer"):
        info = path.stat()
        assert info.st_uid == 0 and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH), path
    tokenizer = site / "pycocoevalcap" / "tokenizer"
    assert run_as(job_user, ["test", "-w", str(tokenizer)], {"PATH": "/usr/bin:/bin"}, shared_dir).returncode != 0
    assert (shared_dir / "opt" / "gpu-discovery.sh").stat().st_mode & stat.S_IXOTH


def test_evaluate_runs_as_another_user_with_the_read_only_environment(node_environment, job_user, shared_dir, pipeline):
    work = shared_dir / "job"
    inputs = work / "inputs"
    for name in ("prepared", "features", "model"):
        shutil.copytree(pipeline[name], inputs / name)
    spark_python = work / "spark-python"  # what spark-submit puts on the path on EMR: Spark's own pyspark and py4j
    spark_python.mkdir()
    import py4j
    import pyspark

    for module in (pyspark, py4j):
        (spark_python / module.__name__).symlink_to(Path(module.__file__).parent)
    home, output = work / "home", work / "evaluation"
    home.mkdir()
    output.mkdir()
    subprocess.run(["chmod", "-R", "a+rX", str(work)], check=True)
    user = pwd.getpwnam(job_user)
    for folder in (home, output):
        os.chown(folder, user.pw_uid, user.pw_gid)
    python = str(node_environment["venv"] / "bin" / "python")
    env = {
        "PATH": f"{Path(python).parent}:/usr/bin:/bin",
        "HOME": str(home),
        "PYTHONPATH": str(spark_python),
        "PYSPARK_PYTHON": python,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    command = [python, "-m", "captioning.pipeline.evaluate", "--model", str(inputs / "model"), "--features", str(inputs / "features"),
               "--captions", str(inputs / "prepared"), "--output", str(output), "--search", "greedy"]
    result = run_as(job_user, command, env, work)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((output / "metrics.json").read_text())
    coco = metrics["model"]["coco"]
    assert all(isinstance(coco[name], float) for name in ("Bleu_4", "METEOR", "ROUGE_L", "CIDEr")), coco
    assert (output / "metrics.json").stat().st_uid == user.pw_uid
    site = next(node_environment["venv"].glob("lib/python3.11/site-packages"))
    assert sorted(p.name for p in (site / "pycocoevalcap" / "tokenizer").iterdir() if p.name != "__pycache__") == ["ptbtokenizer.py", "stanford-corenlp-3.4.1.jar"]
    assert sys.executable != python  # the job really ran with the node environment, not this one
