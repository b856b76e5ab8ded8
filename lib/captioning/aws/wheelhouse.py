"""The node environment as a content-addressed set of wheels, so nodes never need PyPI.

``node_set`` resolves what a cluster node installs — the project's requirements (its
base requirements and the ``spark``, ``tf`` and ``metrics`` extras), and everything they
require — to exactly one wheel each for the nodes' platform (``TargetPlatform``: CPython
3.11 on manylinux x86_64), and stores every wheel once under ``<store>/<sha256>/<file>``.
Versions come from ``requirements/constraints.txt``; a dependency it does not pin must be
pinned exactly by the requirement itself (as TensorFlow's ``and-cuda`` extra pins the
CUDA wheels), anything else is an error. Nothing is guessed and there is no backtracking:
the constraints are already one consistent resolution (``make venv`` installs them and
``pip check`` passes), this only picks the node's part of it and its files.

Two sets are built: ``cpu`` (tensorflow-cpu) and ``gpu`` (``tensorflow[and-cuda]`` at the
same version, which brings NVIDIA's CUDA and cuDNN wheels). ``PROVIDED`` packages are not
installed on nodes: EMR's Spark puts its own pyspark (and py4j) on the Python path of
every Spark job, and a second copy could only disagree with it.

Wheels are fetched with ``pip download --no-deps`` for the target platform (pip's cache
applies), their hashes recorded; a wheel already in the store is not fetched again, and
identical wheels are shared by every version that uses them (``captioner deploy``
uploads a wheel only when its ``<sha256>/<file>`` key is missing).
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

PROVIDED = {"pyspark": "EMR's Spark puts its pyspark (and py4j) on every job's Python path"}
# Marker variables whose value on the nodes is not fixed by the target (patch level,
# kernel): a requirement using them is refused rather than evaluated with a guess.
UNKNOWN_MARKER_VARIABLES = ("python_full_version", "platform_release", "platform_version", "implementation_version")


class WheelhouseError(RuntimeError):
    """The node set cannot be resolved or fetched from the pinned versions."""


@dataclass(frozen=True)
class TargetPlatform:
    """Where the wheels will be installed: EMR 7 nodes (Amazon Linux 2023, glibc 2.34)."""

    python_version: str = "3.11"
    implementation: str = "cp"
    abis: tuple[str, ...] = ("cp311", "abi3", "none")
    arch: str = "x86_64"
    glibc_minor: int = 34  # manylinux_2_X wheels with X <= this install on the nodes

    @property
    def platforms(self) -> list[str]:
        """pip ``--platform`` tags, newest first, down to the oldest manylinux."""
        tags = [f"manylinux_2_{minor}_{self.arch}" for minor in range(self.glibc_minor, 4, -1)]
        return tags + [f"manylinux2014_{self.arch}", f"manylinux2010_{self.arch}", f"manylinux1_{self.arch}"]

    def marker_environment(self, extra: str = "") -> dict[str, str]:
        return {
            "implementation_name": "cpython",
            "os_name": "posix",
            "platform_machine": self.arch,
            "platform_python_implementation": "CPython",
            "platform_system": "Linux",
            "python_version": self.python_version,
            "sys_platform": "linux",
            "extra": extra,
        }

    def download_options(self) -> list[str]:
        options = ["--only-binary=:all:", "--python-version", self.python_version, "--implementation", self.implementation]
        for abi in self.abis:
            options += ["--abi", abi]
        for platform in self.platforms:
            options += ["--platform", platform]
        return options


@dataclass(frozen=True)
class Wheel:
    """One wheel of a node set, as stored: ``<sha256>/<file>`` below the store."""

    name: str  # canonical project name
    version: str
    file: str
    sha256: str
    size: int

    @property
    def key(self) -> str:
        return f"{self.sha256}/{self.file}"

    def requirement_line(self) -> str:
        """A line of a pip requirements file that pip's hash-checking mode accepts."""
        return f"{self.name}=={self.version} --hash=sha256:{self.sha256}"

    def as_json(self) -> dict:
        return {"name": self.name, "version": self.version, "file": self.file, "sha256": self.sha256, "size": self.size}


def constraint_pins(constraints: str) -> dict[str, str]:
    """{canonical name: version} of every ``name==version`` line."""
    pins = {}
    for line in constraints.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or "==" not in line:
            continue
        requirement = Requirement(line)
        (spec,) = requirement.specifier
        pins[canonicalize_name(requirement.name)] = spec.version
    return pins


def exact_pin(requirement: Requirement) -> str | None:
    specs = list(requirement.specifier)
    if len(specs) == 1 and specs[0].operator == "==" and "*" not in specs[0].version:
        return specs[0].version
    return None


def wheel_metadata_requirements(path: Path) -> list[Requirement]:
    with zipfile.ZipFile(path) as archive:
        name = next((n for n in archive.namelist() if n.endswith(".dist-info/METADATA")), None)
        if name is None:
            raise WheelhouseError(f"{path.name}: no .dist-info/METADATA")
        text = archive.read(name).decode("utf-8")
    return [Requirement(line.split(":", 1)[1].strip()) for line in text.splitlines() if line.startswith("Requires-Dist:")]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Store:
    """A folder of wheels at ``<sha256>/<file>``, filled by ``pip download``."""

    def __init__(self, root: Path | str, target: TargetPlatform):
        self.root = Path(root)
        self.target = target

    def find(self, name: str, version: str) -> Wheel | None:
        for path in sorted(self.root.glob("*/*.whl")):
            wheel_name, wheel_version, _, _ = parse_wheel_filename(path.name)
            if canonicalize_name(wheel_name) == name and wheel_version == Version(version):
                return Wheel(name, version, path.name, path.parent.name, path.stat().st_size)
        return None

    def path(self, wheel: Wheel) -> Path:
        return self.root / wheel.sha256 / wheel.file

    def fetch(self, pins: dict[str, str]) -> dict[str, Wheel]:
        """{name: Wheel} for ``pins``, downloading (one pip call) the ones not stored yet."""
        found = {name: self.find(name, version) for name, version in pins.items()}
        missing = sorted(name for name, wheel in found.items() if wheel is None)
        if missing:
            with tempfile.TemporaryDirectory(prefix="wheelhouse-", dir=self.root.parent if self.root.parent.exists() else None) as tmp:
                command = [sys.executable, "-m", "pip", "download", "--no-deps", "--progress-bar", "off", "--quiet", "-d", tmp, *self.target.download_options()]
                command += [f"{name}=={pins[name]}" for name in missing]
                result = subprocess.run(command, capture_output=True, text=True)
                if result.returncode != 0:
                    lines = (result.stderr or result.stdout).strip().splitlines()
                    raise WheelhouseError(f"pip download of {len(missing)} wheel(s) for {self.target.python_version} manylinux {self.target.arch} failed: {lines[-1] if lines else result.returncode}")
                for path in Path(tmp).glob("*.whl"):
                    digest = _sha256(path)
                    (self.root / digest).mkdir(parents=True, exist_ok=True)
                    shutil.move(str(path), self.root / digest / path.name)
            found = {name: self.find(name, version) for name, version in pins.items()}
        absent = sorted(name for name, wheel in found.items() if wheel is None)
        if absent:
            raise WheelhouseError(f"no wheel of {', '.join(f'{n}=={pins[n]}' for n in absent)} for the target platform")
        return found  # type: ignore[return-value]


@dataclass
class _Resolution:
    """The state of one ``node_set`` walk (private; see ``node_set``)."""

    pins: dict[str, str]
    target: TargetPlatform
    exact: dict[str, str]
    extras: dict[str, set[str]]
    wheels: dict[str, Wheel]
    expanded: set[tuple[str, str]]

    def pin(self, requirement: Requirement, wanted_by: str) -> str | None:
        name = canonicalize_name(requirement.name)
        version = self.pins.get(name) or self.exact.get(name)
        if version is not None and not requirement.specifier.contains(version, prereleases=True):
            raise WheelhouseError(f"{wanted_by} requires {requirement}, but the pinned version is {name}=={version}")
        return version

    def applies(self, requirement: Requirement, extra: str, wanted_by: str) -> bool:
        """Whether ``requirement`` applies on the nodes: to the base package (``extra`` empty) or to that extra."""
        if requirement.marker is None:
            return extra == ""
        text = str(requirement.marker)
        if any(variable in text for variable in UNKNOWN_MARKER_VARIABLES):
            raise WheelhouseError(f"{wanted_by}: cannot evaluate the marker of {requirement} for the nodes")
        if ("extra" in text) != bool(extra):
            return False  # a base requirement when expanding an extra, or an extra's when expanding the base
        return Marker(text).evaluate(self.target.marker_environment(extra))


def node_set(roots: Iterable[str], constraints: str, store: Store) -> list[Wheel]:
    """Every wheel a node installs for ``roots`` (requirement strings), sorted by name."""
    state = _Resolution(pins=constraint_pins(constraints), target=store.target, exact={}, extras={}, wheels={}, expanded=set())
    pending = [(r, "the project") for r in map(Requirement, roots) if state.applies(r, "", "the project")]
    while pending:
        wanted: dict[str, str] = {}
        deferred: list[tuple[Requirement, str]] = []
        for requirement, wanted_by in pending:
            name = canonicalize_name(requirement.name)
            if name in PROVIDED:
                continue
            version = exact_pin(requirement)
            if version is not None and state.exact.setdefault(name, version) != version:
                raise WheelhouseError(f"{name} is pinned to both {state.exact[name]} and {version}")
            state.extras.setdefault(name, set()).update(requirement.extras)
        for requirement, wanted_by in pending:
            name = canonicalize_name(requirement.name)
            if name in PROVIDED:
                continue
            version = state.pin(requirement, wanted_by)
            if version is None:
                deferred.append((requirement, wanted_by))
            elif name not in state.wheels:
                wanted[name] = version
        if not wanted and deferred:
            unpinned = sorted({str(r) for r, _ in deferred})
            raise WheelhouseError(f"no pinned version for {', '.join(unpinned)}: add it to requirements/constraints.txt")
        state.wheels.update(store.fetch(wanted))
        pending = deferred + _expand(state, store)
    return sorted(state.wheels.values(), key=lambda w: w.name)


def _expand(state: _Resolution, store: Store) -> list[tuple[Requirement, str]]:
    """Requirements of every fetched wheel (base and requested extras) not looked at yet."""
    found: list[tuple[Requirement, str]] = []
    for name, wheel in state.wheels.items():
        for extra in ("", *sorted(state.extras.get(name, ()))):
            if (name, extra) in state.expanded:
                continue
            state.expanded.add((name, extra))
            wanted_by = f"{name}[{extra}]" if extra else name
            for requirement in wheel_metadata_requirements(store.path(wheel)):
                if state.applies(requirement, extra, wanted_by):
                    found.append((requirement, wanted_by))
    return found
