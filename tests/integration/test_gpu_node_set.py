"""The GPU node set: TensorFlow with NVIDIA's CUDA wheels, resolved from the pins (no upload).

Builds what ``make package`` builds for GPU nodes — about 2.8 GB of wheels, fetched with
pip (its cache makes later runs quick) — and checks that it is the CPU set with
tensorflow[and-cuda] instead of tensorflow-cpu, at the version the constraints pin, with
exactly the CUDA wheels TensorFlow pins, and that the bootstrap checks for the driver
those wheels need.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from captioning.aws import layout
from captioning.aws.package import CUDA_MIN_DRIVER, build_dist, required_driver
from captioning.aws.wheelhouse import Wheel, constraint_pins, wheel_metadata_requirements

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpu-dist")
    return build_dist(ROOT, folder / "emr", folder / "wheelhouse", kinds=("cpu", "gpu"))


def test_gpu_set_is_the_cpu_set_with_tensorflow_and_its_cuda_wheels(dist):
    pins = constraint_pins((ROOT / "requirements/constraints.txt").read_text())
    cpu = {w["name"]: w for w in dist.manifest["node_sets"]["cpu"]}
    gpu = {w["name"]: w for w in dist.manifest["node_sets"]["gpu"]}
    assert gpu["tensorflow"]["version"] == pins["tensorflow-cpu"] and "tensorflow-cpu" not in gpu
    cuda = {name for name in gpu if name.startswith("nvidia-")}
    assert {"nvidia-cudnn-cu12", "nvidia-cublas-cu12", "nvidia-cuda-runtime-cu12"} <= cuda
    assert set(gpu) - cuda - {"tensorflow"} == set(cpu) - {"tensorflow-cpu"}, "otherwise the same packages"
    shared = [name for name in set(gpu) & set(cpu)]
    assert all(gpu[n]["sha256"] == cpu[n]["sha256"] for n in shared), "shared wheels are the same files, stored once"
    assert "pyspark" not in gpu and "py4j" not in gpu
    assert sum(w["size"] for w in gpu.values()) > 1_000_000_000


def test_cuda_wheels_are_the_versions_tensorflow_pins(dist):
    gpu = {w["name"]: w for w in dist.manifest["node_sets"]["gpu"]}
    tensorflow = dist.wheelhouse / gpu["tensorflow"]["sha256"] / gpu["tensorflow"]["file"]
    cuda_extra = [r for r in wheel_metadata_requirements(tensorflow) if r.marker and r.marker.evaluate({"extra": "and-cuda"}) and r.name.startswith("nvidia-")]
    assert len(cuda_extra) >= 10
    for requirement in cuda_extra:
        (spec,) = requirement.specifier
        assert spec.operator == "==" and gpu[requirement.name]["version"] == spec.version, requirement


def test_bootstrap_checks_the_driver_the_cuda_wheels_need(dist):
    wheels = [Wheel(**w) for w in dist.manifest["node_sets"]["gpu"]]
    driver = required_driver(wheels)
    assert driver == CUDA_MIN_DRIVER["12"]
    assert f'MIN_NVIDIA_DRIVER="{driver}"' in (dist.root / layout.BOOTSTRAP).read_text()
    lock = (dist.root / layout.NODE_REQUIREMENTS["gpu"]).read_text()
    assert "tensorflow==" in lock and "tensorflow-cpu==" not in lock
