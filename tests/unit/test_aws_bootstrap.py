"""The node scripts (emr/bootstrap.sh, emr/gpu-discovery.sh) without a cluster.

This machine has no GPU, so the GPU paths run with a stand-in ``nvidia-smi`` on PATH: a
two-line script that prints what the driver's tool prints (a driver version, GPU
indexes) or fails. The scripts' own logic — the version comparison, the refusal before
any download, the JSON Spark reads — is what runs. The install path of the bootstrap
(wheelhouse -> read-only environment) is exercised for real in
tests/spark/test_node_environment.py.
"""
from __future__ import annotations

import json
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from captioning.aws import layout
from captioning.aws.cluster import ClusterConfig
from captioning.aws.package import CUDA_MIN_DRIVER

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = ROOT / "emr/bootstrap.sh"
DISCOVERY = ROOT / "emr" / layout.GPU_DISCOVERY
SCRIPTS = [BOOTSTRAP, DISCOVERY]


def has_nvidia_device() -> bool:
    return any(p.read_text().strip() == "0x10de" for p in Path("/sys/bus/pci/devices").glob("*/vendor") if p.is_file())


def fake_tool_dir(tmp_path: Path, script: str) -> Path:
    """A folder holding a stand-in ``nvidia-smi`` with ``script`` as its body."""
    folder = tmp_path / "bin"
    folder.mkdir()
    tool = folder / "nvidia-smi"
    tool.write_text("#!/bin/sh\n" + script + "\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return folder


def run(command: list[str], path_first: Path | None = None) -> subprocess.CompletedProcess:
    env_path = (f"{path_first}:" if path_first else "") + "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
    return subprocess.run(command, capture_output=True, text=True, env={"PATH": env_path}, timeout=180)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_node_scripts_are_valid_bash_and_pass_shellcheck(script):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_bootstrap_agrees_with_the_layout_the_cluster_config_and_the_gpu_wheels():
    text = BOOTSTRAP.read_text()
    config = ClusterConfig()
    assert f'VENV="{config.venv}"' in text
    assert f'DISCOVERY="{config.gpu_discovery_script}"' in text
    assert f'CGROUP_ROOT="{config.cgroup_root}"' in text
    assert f'MIN_NVIDIA_DRIVER="{CUDA_MIN_DRIVER["12"]}"' in text
    assert f'"$ARTIFACTS/{layout.GPU_DISCOVERY}"' in text
    assert f'WHEELHOUSE="${{ARTIFACTS%/*}}/{layout.WHEELHOUSE}"' in text
    assert '"$ARTIFACTS/node-requirements-$KIND.txt"' in text
    assert set(layout.NODE_REQUIREMENTS.values()) == {"node-requirements-cpu.txt", "node-requirements-gpu.txt"}
    assert f'"$ARTIFACTS/{layout.WHEELS}/"' in text
    assert "--no-index" in text and "--require-hashes" in text and "pypi" not in text.lower().replace("no pypi", "")
    assert "mount -t cgroup -o devices" in text


def test_bootstrap_refuses_to_run_without_artifacts():
    result = run(["bash", str(BOOTSTRAP)])
    assert result.returncode != 0 and "--artifacts" in result.stdout


@pytest.mark.parametrize(
    "tool,expected",
    [
        ('echo "470.57.02"', "NVIDIA driver 470.57.02 is older than 525.60.13"),
        ('echo "NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver"', "reported no driver version"),
        ("exit 9", "nvidia-smi cannot query the driver version"),
    ],
)
def test_a_gpu_node_with_an_unusable_driver_fails_in_one_line_before_any_download(tmp_path, tool, expected):
    result = run(["bash", str(BOOTSTRAP), "--artifacts", "s3://no-such-bucket-anywhere/artifacts/v1", "--venv", str(tmp_path / "venv")], fake_tool_dir(tmp_path, tool))
    assert result.returncode == 1
    errors = [line for line in result.stdout.splitlines() if "error:" in line]
    assert len(errors) == 1 and expected in errors[0], result.stdout
    assert "downloading" not in result.stdout and not (tmp_path / "venv").exists()


def test_a_gpu_node_without_nvidia_smi_fails_before_any_download(tmp_path):
    if not has_nvidia_device():
        pytest.skip("this machine has no NVIDIA PCI device, so the bootstrap rightly sees a CPU node (the driver checks run with a stand-in nvidia-smi above)")
    if shutil.which("nvidia-smi"):
        pytest.skip("this GPU machine has nvidia-smi")
    result = run(["bash", str(BOOTSTRAP), "--artifacts", "s3://no-such-bucket-anywhere/artifacts/v1"])
    assert result.returncode == 1 and "GPU node without nvidia-smi" in result.stdout


def test_a_cpu_node_reads_the_cpu_node_set_first(tmp_path):
    if has_nvidia_device() or shutil.which("nvidia-smi"):
        pytest.skip("this machine has an NVIDIA GPU, so it is a GPU node")
    artifacts = tmp_path / "artifacts" / "v1"
    artifacts.mkdir(parents=True)
    result = run(["bash", str(BOOTSTRAP), "--artifacts", str(artifacts), "--venv", str(tmp_path / "venv")])
    assert result.returncode == 1
    assert "node kind: cpu" in result.stdout
    errors = [line for line in result.stdout.splitlines() if "error:" in line]
    assert len(errors) == 1 and f"cannot read {artifacts}/node-requirements-cpu.txt" in errors[0], result.stdout


def test_gpu_discovery_reports_every_gpu_nvidia_smi_lists(tmp_path):
    result = run(["bash", str(DISCOVERY)], fake_tool_dir(tmp_path, 'printf "0\\n1\\n3\\n"'))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"name": "gpu", "addresses": ["0", "1", "3"]}


def test_gpu_discovery_reports_none_when_no_gpu_is_visible(tmp_path):
    result = run(["bash", str(DISCOVERY)], fake_tool_dir(tmp_path, "true"))
    assert result.returncode == 0 and json.loads(result.stdout) == {"name": "gpu", "addresses": []}


@pytest.mark.parametrize("tool,message", [("exit 1", "nvidia-smi failed"), ('echo "No devices were found"', "unexpected nvidia-smi output")])
def test_gpu_discovery_fails_instead_of_reporting_garbage(tmp_path, tool, message):
    result = run(["bash", str(DISCOVERY)], fake_tool_dir(tmp_path, tool))
    assert result.returncode == 1 and message in result.stderr and result.stdout == ""


def test_gpu_discovery_without_nvidia_smi_fails(tmp_path):
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has nvidia-smi")
    result = run(["bash", str(DISCOVERY)])
    assert result.returncode == 1 and "nvidia-smi not found" in result.stderr
