"""Where each deployed file lives, relative to one artifacts version folder.

``captioner deploy`` uploads a dist folder to ``<artifacts_uri>/<version>/`` keeping these
relative paths and the node wheels to ``<artifacts_uri>/wheelhouse/<sha256>/<file>``, the
bootstrap action finds its inputs by them, and the state machines build the URIs of the
bootstrap script and of the job scripts from them. Keeping the
names here (and only here) is what lets a test check that the three agree.
"""
from __future__ import annotations

from dataclasses import dataclass

BOOTSTRAP = "bootstrap.sh"
GPU_DISCOVERY = "gpu-discovery.sh"
CONSTRAINTS = "constraints.txt"
NODE_REQUIREMENTS = {"cpu": "node-requirements-cpu.txt", "gpu": "node-requirements-gpu.txt"}
WHEELS = "wheels"
JOBS = "jobs"
MANIFEST = "manifest.json"
WHEELHOUSE = "wheelhouse"  # <root>/wheelhouse/<sha256>/<file>, shared by every version


def job_script(script: str) -> str:
    """Relative path of a job entry script, e.g. ``jobs/prepare_captions.py``."""
    return f"{JOBS}/{script}"


@dataclass(frozen=True)
class ArtifactLayout:
    """URIs of one deployed version: ``<root>/<version>/<relative path>``."""

    root: str  # e.g. s3://my-artifacts-bucket/artifacts
    version: str

    def __post_init__(self) -> None:
        if not self.version or "/" in self.version or self.version.strip() != self.version:
            raise ValueError(f"artifacts version must be a non-empty name without '/' or spaces, got {self.version!r}")
        if self.version == WHEELHOUSE:
            raise ValueError(f"{WHEELHOUSE!r} is the shared wheel folder, not a version name")

    @property
    def prefix(self) -> str:
        return f"{self.root.rstrip('/')}/{self.version}"

    def uri(self, relative: str) -> str:
        return f"{self.prefix}/{relative}"

    @property
    def wheelhouse(self) -> str:
        """Where the wheels of every version live, by content: ``<wheelhouse>/<sha256>/<file>``."""
        return f"{self.root.rstrip('/')}/{WHEELHOUSE}"

    @property
    def bootstrap(self) -> str:
        return self.uri(BOOTSTRAP)

    @property
    def constraints(self) -> str:
        return self.uri(CONSTRAINTS)

    @property
    def manifest(self) -> str:
        return self.uri(MANIFEST)

    def job(self, script: str) -> str:
        return self.uri(job_script(script))
