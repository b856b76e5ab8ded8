"""Upload a dist folder (``make package``) to ``<artifacts_uri>/<version>/`` (``captioner deploy``).

    captioner deploy --stack captioning --version 2024-06-01-a1b2c3d
    captioner deploy --artifacts-uri s3://my-artifacts/artifacts --version v1 --dist dist/emr --build

A version is immutable: deploying the same files again is a no-op, deploying different
files under an existing version is refused (``--force`` overrides), because clusters and
scheduled runs refer to versions by name. manifest.json is uploaded last, so a version
folder with a manifest is complete. Prints the URIs the cluster uses, as JSON.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from captioning.aws import layout
from captioning.aws.layout import ArtifactLayout


class DeployError(RuntimeError):
    pass


@dataclass(frozen=True)
class Deployed:
    """What was deployed: the layout, every relative path, and whether anything was uploaded."""

    layout: ArtifactLayout
    files: tuple[str, ...]
    wheel: str  # relative path
    uploaded: bool

    def uris(self) -> dict:
        jobs = sorted(f for f in self.files if f.startswith(layout.JOBS + "/"))
        return {
            "version": self.layout.version,
            "prefix": self.layout.prefix,
            "bootstrap": self.layout.bootstrap,
            "constraints": self.layout.constraints,
            "node_requirements": {kind: self.layout.uri(name) for kind, name in layout.NODE_REQUIREMENTS.items()},
            "wheel": self.layout.uri(self.wheel),
            "jobs": {Path(f).name: self.layout.uri(f) for f in jobs},
            "manifest": self.layout.manifest,
            "uploaded": self.uploaded,
        }


def split_s3(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or len(uri) <= 5:
        raise DeployError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


def read_manifest(dist_dir: Path) -> dict:
    path = dist_dir / layout.MANIFEST
    if not path.exists():
        raise DeployError(f"{dist_dir}: no {layout.MANIFEST}; build it first (make package)")
    manifest = json.loads(path.read_text())
    for name, entry in manifest["files"].items():
        local = dist_dir / name
        if not local.is_file() or hashlib.sha256(local.read_bytes()).hexdigest() != entry["sha256"]:
            raise DeployError(f"{local}: missing or changed since the manifest was written; rebuild (make package)")
    return manifest


def _remote_manifest(client, bucket: str, key: str) -> dict | None:
    try:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except client.exceptions.NoSuchKey:
        return None
    return json.loads(body)


def deploy(artifacts_uri: str, version: str, dist_dir: Path | str, client=None, force: bool = False) -> Deployed:
    """Upload ``dist_dir`` to ``<artifacts_uri>/<version>/``; returns what the URIs are."""
    import boto3

    target = ArtifactLayout(artifacts_uri, version)
    dist = Path(dist_dir)
    manifest = read_manifest(dist)
    client = client or boto3.client("s3")
    bucket, _ = split_s3(target.prefix)
    files = tuple(sorted(manifest["files"]))
    remote = _remote_manifest(client, bucket, split_s3(target.manifest)[1])
    if remote is not None and remote["files"] == manifest["files"]:
        return Deployed(layout=target, files=files, wheel=manifest["wheel"], uploaded=False)
    if remote is not None and not force:
        raise DeployError(f"{target.prefix} already holds a different deployment; choose a new --version (or --force to replace it)")
    for name in files + (layout.MANIFEST,):
        client.upload_file(str(dist / name), bucket, split_s3(target.uri(name))[1])
    return Deployed(layout=target, files=files, wheel=manifest["wheel"], uploaded=True)


def build_parser() -> argparse.ArgumentParser:
    from captioning.aws.stack import add_deployment_options

    parser = argparse.ArgumentParser(prog="captioner deploy", description="Upload the packaged wheel, constraints, bootstrap action and job scripts to S3 under a version name.")
    parser.add_argument("--version", required=True, help="name of this deployment, e.g. a date and git commit; the state machines' artifacts_version")
    parser.add_argument("--dist", default="dist/emr", help="folder made by 'make package' (default dist/emr)")
    parser.add_argument("--build", action="store_true", help="(re)build the dist folder first (from --project-root)")
    parser.add_argument("--project-root", default=".", help="project root for --build (default: the current folder)")
    parser.add_argument("--force", action="store_true", help="replace a different deployment of the same version")
    add_deployment_options(parser, ("artifacts_uri",))
    return parser


def main(argv: list[str] | None = None) -> int:
    from captioning.aws.package import PackageError, build_dist
    from captioning.aws.stack import StackError, resolve_options

    args = build_parser().parse_args(argv)
    try:
        artifacts_uri = resolve_options(args, ("artifacts_uri",))["artifacts_uri"]
        if args.build:
            build_dist(args.project_root, args.dist)
        deployed = deploy(artifacts_uri, args.version, args.dist, force=args.force)
    except (DeployError, PackageError, StackError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(deployed.uris(), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
