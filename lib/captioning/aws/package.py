"""Build everything an EMR cluster needs into one local folder (``make package``).

    python -m captioning.aws.package --dist dist/emr

The folder mirrors what ``captioner deploy`` uploads to ``<artifacts>/<version>/``:

  bootstrap.sh                 emr/bootstrap.sh, the bootstrap action of every node
  constraints.txt              requirements/constraints.txt, the one pinned dependency set
  node-requirements-cpu.txt    what a node installs (under the constraints) besides the wheel
  node-requirements-gpu.txt    the same with tensorflow[and-cuda] instead of tensorflow-cpu
  wheels/<project wheel>       ``pip wheel --no-deps``
  jobs/<name>.py               the spark-submit entry scripts
  manifest.json                sha256 and size of every other file; written last

The node requirement files come from the wheel's own metadata (its base requirements plus
the spark, tf and metrics extras), so setup.py stays the only list of dependencies: the
bootstrap installs them with ``-c constraints.txt`` and then the wheel with ``--no-deps``.

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

BUILD_INPUTS = ("setup.py", "setup.cfg", "pyproject.toml", "MANIFEST.in", "lib")
NODE_EXTRAS = ("spark", "tf", "metrics")
MANIFEST_FORMAT = "captioning.emr-artifacts/1"
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXTRA_MARKER = re.compile(r"""^extra\s*==\s*["']([^"']+)["']$""")


class PackageError(RuntimeError):
    """The project or the dist folder is not in a state a package can be built from."""


@dataclass(frozen=True)
class Dist:
    """A built dist folder: its location, the wheel's relative path and the manifest."""

    root: Path
    wheel: str  # relative to root, e.g. wheels/spark_captioning-0.1.0-py3-none-any.whl
    manifest: dict

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


def _prepare_dist_dir(dist_dir: Path) -> None:
    """Empty ``dist_dir``, refusing to empty a folder that is not an earlier dist."""
    if dist_dir.exists():
        if any(dist_dir.iterdir()) and not (dist_dir / layout.MANIFEST).exists():
            raise PackageError(f"{dist_dir} exists, is not empty and holds no {layout.MANIFEST}: not replacing it")
        shutil.rmtree(dist_dir)
    dist_dir.mkdir(parents=True)


def job_scripts(project_root: Path) -> list[Path]:
    return sorted((project_root / "jobs").glob("*.py"))


def build_dist(project_root: Path | str, dist_dir: Path | str) -> Dist:
    """Build the wheel and collect bootstrap, constraints, requirements and job scripts."""
    root = Path(project_root).resolve()
    dist = Path(dist_dir).resolve()
    for needed in ("setup.py", "requirements/constraints.txt", "emr/bootstrap.sh", "jobs"):
        if not (root / needed).exists():
            raise PackageError(f"{root}: no {needed}; run from the project root or pass --project-root")
    _prepare_dist_dir(dist)
    wheel = build_wheel(root, dist / layout.WHEELS)
    constraints = (root / "requirements/constraints.txt").read_text()
    shutil.copy2(root / "requirements/constraints.txt", dist / layout.CONSTRAINTS)
    shutil.copy2(root / "emr/bootstrap.sh", dist / layout.BOOTSTRAP)
    requirements = node_requirements(wheel_requirements(wheel), NODE_EXTRAS, constraints)
    for kind, name in layout.NODE_REQUIREMENTS.items():
        header = f"# {kind.upper()} nodes: installed with -c {layout.CONSTRAINTS}, then the wheel with --no-deps (generated from {wheel.name})\n"
        (dist / name).write_text(header + "\n".join(requirements[kind]) + "\n")
    (dist / layout.JOBS).mkdir()
    for script in job_scripts(root):
        shutil.copy2(script, dist / layout.job_script(script.name))

    files = sorted(p.relative_to(dist).as_posix() for p in dist.rglob("*") if p.is_file())
    manifest = {
        "format": MANIFEST_FORMAT,
        "wheel": wheel.relative_to(dist).as_posix(),
        "files": {name: {"sha256": _sha256(dist / name), "size": (dist / name).stat().st_size} for name in files},
    }
    (dist / layout.MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return Dist(root=dist, wheel=manifest["wheel"], manifest=manifest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="package", description="Build the wheel and collect the files an EMR cluster needs into a dist folder.")
    parser.add_argument("--project-root", default=".", help="project root holding setup.py (default: the current folder)")
    parser.add_argument("--dist", default="dist/emr", help="folder to (re)create (default dist/emr)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        dist = build_dist(args.project_root, args.dist)
    except PackageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps({"dist": str(dist.root), "wheel": dist.wheel, "files": dist.files()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
