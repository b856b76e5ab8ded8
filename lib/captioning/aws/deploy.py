"""Upload a dist folder (``make package``) under ``<artifacts_uri>/<version>/`` (``captioner deploy``).

    captioner deploy --stack captioning --version 2024-06-01-a1b2c3d
    captioner deploy --artifacts-uri s3://my-artifacts/artifacts --version v1 --dist dist/emr --build
    captioner deploy --artifacts-uri /shared/captioning/artifacts --version v1   # a folder every node mounts

A version is immutable: deploying the same files again is a no-op, deploying different
files under an existing version is refused (``--force`` overrides), because clusters and
scheduled runs refer to versions by name. The node wheels go to
``<artifacts_uri>/wheelhouse/<sha256>/<file>`` first, each only if that key is missing, so
versions share every unchanged wheel and a new version uploads only what changed.
manifest.json is uploaded last, so a version folder with a manifest is complete. Prints
the URIs the cluster uses, as JSON.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from captioning.aws import layout
from captioning.aws.awserrors import AwsError, aws_call
from captioning.aws.layout import ArtifactLayout

KINDS = ("cpu", "gpu")  # the node sets a cluster needs: the primary installs cpu, the GPU nodes gpu


class DeployError(RuntimeError):
    pass


@dataclass(frozen=True)
class Deployed:
    """What was deployed: the layout, every relative path, whether anything was uploaded."""

    layout: ArtifactLayout
    files: tuple[str, ...]
    wheel: str  # relative path
    uploaded: bool
    wheels_uploaded: int = 0
    wheels_reused: int = 0
    bytes_uploaded: int = 0

    def uris(self) -> dict:
        jobs = sorted(f for f in self.files if f.startswith(layout.JOBS + "/"))
        return {
            "version": self.layout.version,
            "prefix": self.layout.prefix,
            "bootstrap": self.layout.bootstrap,
            "constraints": self.layout.constraints,
            "node_requirements": {kind: self.layout.uri(name) for kind, name in layout.NODE_REQUIREMENTS.items() if name in self.files},
            "wheelhouse": self.layout.wheelhouse,
            "wheel": self.layout.uri(self.wheel),
            "jobs": {Path(f).name: self.layout.uri(f) for f in jobs},
            "manifest": self.layout.manifest,
            "uploaded": self.uploaded,
            "wheels": {"uploaded": self.wheels_uploaded, "already_there": self.wheels_reused, "bytes_uploaded": self.bytes_uploaded},
        }


def split_s3(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or len(uri) <= 5:
        raise DeployError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


class S3Target:
    """The artifacts root in S3; keys are relative to it."""

    def __init__(self, root: str, client=None):
        import boto3

        self.bucket, prefix = split_s3(root.rstrip("/"))
        self.prefix = prefix + "/" if prefix else ""
        self.root = root.rstrip("/")
        with aws_call(f"connecting to S3 for {self.root}"):
            self.client = client or boto3.client("s3")

    def size(self, key: str) -> int | None:
        from botocore.exceptions import ClientError

        with aws_call(f"checking {self.root}/{key}"):
            try:
                return self.client.head_object(Bucket=self.bucket, Key=self.prefix + key)["ContentLength"]
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return None
                raise

    def read_text(self, key: str) -> str | None:
        with aws_call(f"reading {self.root}/{key}"):
            try:
                return self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"].read().decode("utf-8")
            except self.client.exceptions.NoSuchKey:
                return None

    def put(self, path: Path, key: str) -> None:
        with aws_call(f"uploading {path} to {self.root}/{key}"):
            self.client.upload_file(str(path), self.bucket, self.prefix + key)


class FolderTarget:
    """An artifacts root that is a folder (a shared mount): same layout, plain files."""

    def __init__(self, root: str):
        self.root = Path(root[len("file://"):] if root.startswith("file://") else root)

    def size(self, key: str) -> int | None:
        path = self.root / key
        return path.stat().st_size if path.is_file() else None

    def read_text(self, key: str) -> str | None:
        path = self.root / key
        return path.read_text() if path.is_file() else None

    def put(self, path: Path, key: str) -> None:
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        shutil.copyfile(path, partial)
        partial.replace(target)


def target_for(artifacts_uri: str, client=None) -> S3Target | FolderTarget:
    if artifacts_uri.startswith("s3://"):
        return S3Target(artifacts_uri, client)
    if artifacts_uri.startswith("file://") or artifacts_uri.startswith("/"):
        return FolderTarget(artifacts_uri)
    raise DeployError(f"--artifacts-uri must be s3://bucket/prefix or an absolute folder, got {artifacts_uri!r}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(dist_dir: Path, kinds: tuple[str, ...] = KINDS) -> dict:
    """The dist's manifest, after checking every file and that it holds the node sets of ``kinds``."""
    path = dist_dir / layout.MANIFEST
    if not path.exists():
        raise DeployError(f"{dist_dir}: no {layout.MANIFEST}; build it first (make package)")
    manifest = json.loads(path.read_text())
    for name, entry in manifest["files"].items():
        local = dist_dir / name
        if not local.is_file() or _sha256(local) != entry["sha256"]:
            raise DeployError(f"{local}: missing or changed since the manifest was written; rebuild (make package)")
    missing = [kind for kind in kinds if kind not in manifest.get("node_sets", {})]
    if missing:
        raise DeployError(f"{dist_dir} has no {' and no '.join(missing)} node set, which the cluster's nodes install: run make package (without NODE_SETS)")
    return manifest


def upload_wheels(target, manifest: dict, wheelhouse: Path) -> tuple[int, int, int]:
    """Upload the node sets' wheels whose ``wheelhouse/<sha256>/<file>`` key is missing.

    Returns (uploaded, already there, bytes uploaded).
    """
    wheels = {w["sha256"]: w for kind in manifest["node_sets"].values() for w in kind}
    uploaded = reused = sent = 0
    for sha, wheel in sorted(wheels.items()):
        key = f"{layout.WHEELHOUSE}/{sha}/{wheel['file']}"
        if target.size(key) == wheel["size"]:
            reused += 1
            continue
        local = wheelhouse / sha / wheel["file"]
        if not local.is_file() or _sha256(local) != sha:
            raise DeployError(f"{local}: missing or damaged, and {key} is not in the artifacts yet; run make package again")
        target.put(local, key)
        uploaded, sent = uploaded + 1, sent + wheel["size"]
    return uploaded, reused, sent


def deploy(
    artifacts_uri: str,
    version: str,
    dist_dir: Path | str,
    client=None,
    force: bool = False,
    wheelhouse: Path | str | None = None,
    kinds: tuple[str, ...] = KINDS,
) -> Deployed:
    """Upload ``dist_dir`` to ``<artifacts_uri>/<version>/`` and its wheels to the wheelhouse."""
    target_layout = ArtifactLayout(artifacts_uri, version)
    dist = Path(dist_dir)
    manifest = read_manifest(dist, kinds)
    target = target_for(artifacts_uri, client)
    files = tuple(sorted(manifest["files"]))
    remote_text = target.read_text(f"{version}/{layout.MANIFEST}")
    remote = json.loads(remote_text) if remote_text is not None else None
    if remote is not None and remote["files"] == manifest["files"] and remote.get("node_sets") == manifest["node_sets"]:
        return Deployed(layout=target_layout, files=files, wheel=manifest["wheel"], uploaded=False)
    if remote is not None and not force:
        raise DeployError(f"{target_layout.prefix} already holds a different deployment; choose a new --version (or --force to replace it)")
    counts = upload_wheels(target, manifest, Path(wheelhouse) if wheelhouse is not None else dist.parent / layout.WHEELHOUSE)
    for name in files + (layout.MANIFEST,):
        target.put(dist / name, f"{version}/{name}")
    return Deployed(target_layout, files, manifest["wheel"], True, *counts)


def build_parser() -> argparse.ArgumentParser:
    from captioning.aws.stack import add_deployment_options

    parser = argparse.ArgumentParser(prog="captioner deploy", description="Upload the packaged wheel, node wheel sets, bootstrap action and job scripts under a version name.")
    parser.add_argument("--version", required=True, help="name of this deployment, e.g. a date and git commit; the state machines' artifacts_version")
    parser.add_argument("--dist", default="dist/emr", help="folder made by 'make package' (default dist/emr)")
    parser.add_argument("--wheelhouse", help="the wheel store 'make package' filled (default: wheelhouse/ next to --dist)")
    parser.add_argument("--build", action="store_true", help="(re)build the dist folder first (from --project-root)")
    parser.add_argument("--project-root", default=".", help="project root for --build (default: the current folder)")
    parser.add_argument("--force", action="store_true", help="replace a different deployment of the same version")
    parser.add_argument("--node-sets", default=",".join(KINDS), help="node sets the dist must hold (default cpu,gpu: the primary node installs cpu, the GPU nodes gpu)")
    add_deployment_options(parser, ("artifacts_uri",))
    return parser


def main(argv: list[str] | None = None) -> int:
    from captioning.aws.package import PackageError, build_dist
    from captioning.aws.stack import StackError, resolve_options

    args = build_parser().parse_args(argv)
    try:
        artifacts_uri = resolve_options(args, ("artifacts_uri",))["artifacts_uri"]
        if args.build:
            build_dist(args.project_root, args.dist, args.wheelhouse)
        kinds = tuple(k for k in args.node_sets.split(",") if k)
        deployed = deploy(artifacts_uri, args.version, args.dist, force=args.force, wheelhouse=args.wheelhouse, kinds=kinds)
    except (AwsError, DeployError, PackageError, StackError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(deployed.uris(), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
