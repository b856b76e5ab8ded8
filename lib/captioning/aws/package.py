"""Build everything an EMR cluster needs into one local folder (``make package``).

    python -m captioning.aws.package --dist dist/emr

The folder mirrors what ``captioner deploy`` uploads to ``<artifacts>/<version>/``:

  bootstrap.sh                 emr/bootstrap.sh, the bootstrap action of every node
  gpu-discovery.sh             emr/gpu-discovery.sh, Spark's GPU discovery script (installed by the bootstrap)
  constraints.txt              requirements/constraints.txt, the one pinned dependency set
  node-requirements-cpu.txt    every wheel a CPU node installs: name==version --hash=sha256:...
  node-requirements-gpu.txt    the same with tensorflow[and-cuda] instead of tensorflow-cpu
  wheels/<project wheel>       ``pip wheel --no-deps``
  jobs/<name>.py               the spark-submit entry scripts
  manifest.json                sha256 and size of every other file, and the node sets; written last

and the wheels of both node sets are stored once in a shared, content-addressed folder
(``--wheelhouse``, default ``dist/wheelhouse``: ``<sha256>/<file>``), which deploy uploads
to ``<artifacts>/wheelhouse/`` (see ``captioning.aws.wheelhouse``). The node sets start
from the wheel's own metadata (its base requirements plus the spark, tf and metrics
extras), so setup.py stays the only list of dependencies; the bootstrap installs a set
with ``pip install --no-index --no-deps --require-hashes`` from the downloaded wheels and
then the project wheel with ``--no-deps``.

The wheel is built from a temporary copy of the build inputs, so a stale ``build/`` in
the work tree can never leak deleted modules into it and the work tree is not touched.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from captioning.aws import layout
from captioning.aws.wheelhouse import PROVIDED, Store, TargetPlatform, Wheel, WheelhouseError, node_set

BUILD_INPUTS = ("setup.py", "setup.cfg", "pyproject.toml", "MANIFEST.in", "lib")
NODE_EXTRAS = ("spark", "tf", "metrics")
MANIFEST_FORMAT = "captioning.emr-artifacts/2"
KINDS = ("cpu", "gpu")
# The oldest Linux driver each CUDA major version of NVIDIA's pip wheels runs on (CUDA
# minor-version compatibility); emr/bootstrap.sh checks it before downloading anything.
CUDA_MIN_DRIVER = {"12": "525.60.13"}
_CUDA_RUNTIME = re.compile(r"^nvidia-cuda-runtime-cu(\d+)$")
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXTRA_MARKER = re.compile(r"""^extra\s*==\s*["']([^"']+)["']$""")


class PackageError(RuntimeError):
    """The project or the dist folder is not in a state a package can be built from."""


@dataclass(frozen=True)
class Dist:
    """A built dist folder: its location, the wheel's relative path, the manifest, the wheel store."""

    root: Path
    wheel: str  # relative to root, e.g. wheels/spark_captioning-0.1.0-py3-none-any.whl
    manifest: dict
    wheelhouse: Path

    def files(self) -> list[str]:
        """Relative paths of every file, the manifest last (the upload order)."""
        return sorted(self.manifest["files"]) + [layout.MANIFEST]


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_requirements(wheel: Path) -> list[str]:
    """The ``Requires-Dist`` lines of a wheel's METADATA."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = next((n for n in archive.namelist() if n.endswith(".dist-info/METADATA")), None)
        if metadata is None:
            raise PackageError(f"{wheel}: no .dist-info/METADATA")
        text = archive.read(metadata).decode("utf-8")
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]


def pinned_version(constraints: str, package: str) -> str:
    """The ``==`` version of ``package`` in a constraints file's text."""
    for line in constraints.splitlines():
        line = line.split("#", 1)[0].strip()
        match = _NAME.match(line)
        if match and normalize(match.group(1)) == normalize(package) and "==" in line:
            return line.split("==", 1)[1].split(";", 1)[0].strip()
    raise PackageError(f"the constraints pin no version of {package} (a '{package}==X' line is needed)")


def node_requirements(requires_dist: list[str], extras: tuple[str, ...], constraints: str) -> dict[str, list[str]]:
    """Requirement lines for CPU and GPU nodes: base + ``extras``; GPU swaps tensorflow-cpu.

    Requirements of other extras are left out; other environment markers are kept for pip
    to evaluate. On GPU nodes ``tensorflow-cpu`` becomes ``tensorflow[and-cuda]`` pinned to
    the version the constraints give tensorflow-cpu (one TensorFlow version everywhere).
    """
    lines: list[str] = []
    for requirement in requires_dist:
        spec, _, marker = requirement.partition(";")
        marker = marker.strip()
        extra = _EXTRA_MARKER.match(marker)
        if extra:
            if extra.group(1) in extras:
                lines.append(spec.strip())
            continue
        if re.search(r"\bextra\b", marker):
            raise PackageError(f"cannot interpret the marker of requirement {requirement!r}")
        lines.append(requirement.strip())
    names = [normalize(_NAME.match(line).group(1)) for line in lines]
    if "tensorflow-cpu" not in names:
        raise PackageError("the wheel's tf extra does not require tensorflow-cpu; the GPU swap in node-requirements-gpu.txt needs updating")
    gpu = [
        f"tensorflow[and-cuda]=={pinned_version(constraints, 'tensorflow-cpu')}" if name == "tensorflow-cpu" else line
        for line, name in zip(lines, names)
    ]
    return {"cpu": lines, "gpu": gpu}


def build_wheel(project_root: Path, out_dir: Path) -> Path:
    """``pip wheel --no-deps`` of a clean copy of the project; returns the wheel's path."""
    with tempfile.TemporaryDirectory(prefix="captioning-wheel-") as tmp:
        source = Path(tmp) / "src"
        source.mkdir()
        for name in BUILD_INPUTS:
            path = project_root / name
            if path.is_dir():
                shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"))
            elif path.exists():
                shutil.copy2(path, source / name)
        built = Path(tmp) / "wheels"
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(built), str(source)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise PackageError(f"pip wheel failed ({' '.join(command)}):\n{result.stdout}{result.stderr}")
        wheels = sorted(built.glob("*.whl"))
        if len(wheels) != 1:
            raise PackageError(f"pip wheel produced {len(wheels)} wheels, expected one: {wheels}")
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / wheels[0].name
        shutil.copy2(wheels[0], target)
        return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_replaceable(dist_dir: Path) -> None:
    """Refuse to replace a folder that is not an earlier dist."""
    if dist_dir.exists() and any(dist_dir.iterdir()) and not (dist_dir / layout.MANIFEST).exists():
        raise PackageError(f"{dist_dir} exists, is not empty and holds no {layout.MANIFEST}: not replacing it")


def job_scripts(project_root: Path) -> list[Path]:
    return sorted((project_root / "jobs").glob("*.py"))


def lock_text(kind: str, wheels: list[Wheel], project_wheel: str) -> str:
    """A pip requirements file pinning every wheel by hash (``--require-hashes`` mode)."""
    header = [
        f"# {kind.upper()} nodes: pip install --no-index --no-deps --require-hashes -r this file, then the project wheel with --no-deps",
        f"# generated from {project_wheel} and {layout.CONSTRAINTS}; the wheels are <artifacts>/{layout.WHEELHOUSE}/<sha256>/<file>",
        f"# provided by the cluster: {' '.join(sorted(PROVIDED))}",
    ]
    return "\n".join(header + [wheel.requirement_line() for wheel in wheels]) + "\n"


def required_driver(gpu_wheels: list[Wheel]) -> str:
    """The oldest NVIDIA driver the GPU set's CUDA runtime wheel runs on."""
    majors = {m.group(1) for m in (_CUDA_RUNTIME.match(w.name) for w in gpu_wheels) if m}
    if len(majors) != 1 or next(iter(majors)) not in CUDA_MIN_DRIVER:
        raise PackageError(f"the GPU set should hold one known nvidia-cuda-runtime-cuNN wheel, found CUDA major version(s) {sorted(majors)}")
    return CUDA_MIN_DRIVER[majors.pop()]


def check_bootstrap_driver(bootstrap: str, driver: str) -> None:
    if f'MIN_NVIDIA_DRIVER="{driver}"' not in bootstrap:
        raise PackageError(f'emr/bootstrap.sh must check for the driver the GPU wheels need: set MIN_NVIDIA_DRIVER="{driver}"')


def _write_node_sets(work: Path, root: Path, wheel: Path, store: Store, kinds: tuple[str, ...]) -> dict[str, list[dict]]:
    """Resolve and fetch each node set, write its hash-pinned requirements file; {kind: wheels}."""
    constraints = (root / "requirements/constraints.txt").read_text()
    requirements = node_requirements(wheel_requirements(wheel), NODE_EXTRAS, constraints)
    node_sets: dict[str, list[dict]] = {}
    for kind in kinds:
        try:
            wheels = node_set(requirements[kind], constraints, store)
        except WheelhouseError as error:
            raise PackageError(f"{kind} node set: {error}") from error
        if kind == "gpu":
            check_bootstrap_driver((root / "emr/bootstrap.sh").read_text(), required_driver(wheels))
        (work / layout.NODE_REQUIREMENTS[kind]).write_text(lock_text(kind, wheels, wheel.name))
        node_sets[kind] = [w.as_json() for w in wheels]
    return node_sets


def _fill(work: Path, root: Path, store: Store, kinds: tuple[str, ...]) -> dict:
    """Everything of a version folder into ``work``; returns the manifest (written last)."""
    wheel = build_wheel(root, work / layout.WHEELS)
    shutil.copy2(root / "requirements/constraints.txt", work / layout.CONSTRAINTS)
    shutil.copy2(root / "emr/bootstrap.sh", work / layout.BOOTSTRAP)
    shutil.copy2(root / "emr" / layout.GPU_DISCOVERY, work / layout.GPU_DISCOVERY)
    node_sets = _write_node_sets(work, root, wheel, store, kinds)
    (work / layout.JOBS).mkdir()
    for script in job_scripts(root):
        shutil.copy2(script, work / layout.job_script(script.name))
    files = sorted(p.relative_to(work).as_posix() for p in work.rglob("*") if p.is_file())
    manifest = {
        "format": MANIFEST_FORMAT,
        "wheel": wheel.relative_to(work).as_posix(),
        "files": {name: {"sha256": _sha256(work / name), "size": (work / name).stat().st_size} for name in files},
        "node_sets": node_sets,
        "target": {"python": store.target.python_version, "platform": f"manylinux_2_{store.target.glibc_minor}_{store.target.arch}"},
    }
    (work / layout.MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def build_dist(
    project_root: Path | str,
    dist_dir: Path | str,
    wheelhouse: Path | str | None = None,
    kinds: tuple[str, ...] = KINDS,
    target: TargetPlatform = TargetPlatform(),
) -> Dist:
    """Build the wheel, resolve and fetch the node sets of ``kinds``, collect the rest.

    The folder is built next to ``dist_dir`` and renamed into place when complete, so a
    failed build leaves the previous dist as it was.
    """
    root = Path(project_root).resolve()
    dist = Path(dist_dir).resolve()
    store_dir = Path(wheelhouse).resolve() if wheelhouse is not None else dist.parent / layout.WHEELHOUSE
    for needed in ("setup.py", "requirements/constraints.txt", "emr/bootstrap.sh", "emr/" + layout.GPU_DISCOVERY, "jobs"):
        if not (root / needed).exists():
            raise PackageError(f"{root}: no {needed}; run from the project root or pass --project-root")
    if set(kinds) - set(KINDS):  # none: the project's own files only (a rehearsal's nodes reuse a local environment)
        raise PackageError(f"node sets must be among {KINDS}, got {kinds}")
    _check_replaceable(dist)
    dist.parent.mkdir(parents=True, exist_ok=True)
    store_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dist.name}-", dir=dist.parent))
    try:
        manifest = _fill(work, root, Store(store_dir, target), kinds)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if dist.exists():
        shutil.rmtree(dist)
    work.rename(dist)
    return Dist(root=dist, wheel=manifest["wheel"], manifest=manifest, wheelhouse=store_dir)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="package", description="Build the wheel and collect the files an EMR cluster needs into a dist folder.")
    parser.add_argument("--project-root", default=".", help="project root holding setup.py (default: the current folder)")
    parser.add_argument("--dist", default="dist/emr", help="folder to (re)create (default dist/emr)")
    parser.add_argument("--wheelhouse", help="content-addressed wheel store shared by all versions (default: wheelhouse/ next to --dist)")
    parser.add_argument("--node-sets", default=",".join(KINDS), help="node sets to build, comma-separated (default cpu,gpu; the GPU set downloads several GB once)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        dist = build_dist(args.project_root, args.dist, args.wheelhouse, tuple(k for k in args.node_sets.split(",") if k))
    except PackageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    sets = {kind: {"wheels": len(w), "bytes": sum(x["size"] for x in w)} for kind, w in dist.manifest["node_sets"].items()}
    print(json.dumps({"dist": str(dist.root), "wheel": dist.wheel, "wheelhouse": str(dist.wheelhouse), "node_sets": sets, "files": dist.files()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
