"""An S3 API server on 127.0.0.1 for demos, rehearsals and tests: moto's, in its own process.

    with LocalS3(buckets=("data", "results")) as s3:
        ...  # AWS_ENDPOINT_URL and test credentials point boto3, s3fs and Spark's S3A at it

It serves the real S3 REST protocol over HTTP (conditional writes included), so every
client talks to it exactly as to AWS, and it keeps everything in memory: what should
survive it has to be copied out (:func:`download_prefix`) before it stops. Only moto's
server extra is needed, which the project's test dependencies install.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from captioning.errors import UserError
from captioning.store import storage

_ENVIRONMENT = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_REGION")


class LocalS3Error(UserError, RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LocalS3:
    buckets: tuple[str, ...] = ()
    start_timeout: float = 30.0
    region: str = "us-east-1"

    def __post_init__(self) -> None:
        self.port = 0
        self._process: subprocess.Popen | None = None
        self._saved: dict[str, str | None] = {}

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        """What a process needs to use this server (credentials are the server's dummy ones)."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": self.region}

    def start(self) -> "LocalS3":
        try:
            import moto.server  # noqa: F401 - only checks that the server extra is installed
        except ImportError as error:
            raise LocalS3Error("a local S3 server needs moto's server extra: pip install 'moto[server]' (make venv installs it)") from error
        self.port = _free_port()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise LocalS3Error(f"the local S3 server did not start on 127.0.0.1:{self.port} within {self.start_timeout:.0f}s")
                time.sleep(0.1)
        self._saved = {key: os.environ.get(key) for key in _ENVIRONMENT}
        os.environ.update(self.environment())
        client = storage.s3_client()
        for bucket in self.buckets:
            client.create_bucket(Bucket=bucket)
        return self

    def stop(self) -> None:
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved = {}
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    def __enter__(self) -> "LocalS3":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def upload_folder(folder: str, uri: str) -> int:
    """Copy a local folder below ``uri``; the number of files."""
    count = 0
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                storage.write_bytes(storage.join(uri, os.path.relpath(path, folder).replace(os.sep, "/")), handle.read())
            count += 1
    return count


def download_prefix(uri: str, folder: str) -> int:
    """Copy every object below ``uri`` into a local folder; the number of objects."""
    prefix = uri.rstrip("/") + "/"
    count = 0
    for file in storage.list_files(uri, include_hidden=True):
        relative = file.uri[len(prefix):] if file.uri.startswith(prefix) else storage.basename(file.uri)
        storage.write_bytes(os.path.join(folder, relative), storage.read_bytes(file.uri))
        count += 1
    return count
