"""The one module that opens URIs outside Spark: local paths, ``file://`` and ``s3://``.

Everything else in the package calls these functions with URIs and never learns which
backend answered. S3 goes through s3fs (botocore underneath) with adaptive retries, so a
throttled or flaky request is retried instead of failing a job. The endpoint comes from
``AWS_ENDPOINT_URL`` when set, which is how tests point the code at a local S3 server.

Writes are whole-or-nothing: local files are written to a temporary name and renamed,
and S3 objects only appear once their upload completes.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import tempfile
import uuid
from dataclasses import dataclass
from typing import Iterator

import fsspec

from captioning.errors import UserError


class StorageError(UserError, OSError):
    """An URI could not be read or written; the message names the URI and what to do."""


class MissingInputError(StorageError, FileNotFoundError):
    """An input URI does not exist."""


@dataclass(frozen=True)
class StorageOptions:
    """How S3 is reached. Defaults suit EMR (instance-profile credentials, real S3)."""

    endpoint_url: str | None = None  # None: AWS_ENDPOINT_URL, else the AWS default
    max_attempts: int = 10  # botocore retry budget per request
    retry_mode: str = "adaptive"  # client-side rate limiting on throttling responses


@dataclass(frozen=True)
class FileInfo:
    """One listed object. ``version`` is the S3 ETag, or ``size-mtime`` for local files."""

    uri: str
    size: int
    version: str
    mtime: float | None


def is_s3(uri: str) -> bool:
    return uri.startswith(("s3://", "s3a://", "s3n://"))


def is_local(uri: str) -> bool:
    return not is_s3(uri) and "://" not in uri or uri.startswith("file://")


def _split(uri: str) -> tuple[str, str]:
    """Return (protocol, path) with the path in the form the fsspec backend expects."""
    if is_s3(uri):
        return "s3", uri.split("://", 1)[1]
    if uri.startswith("file://"):
        return "file", uri[len("file://"):]
    if "://" in uri:
        raise StorageError(f"{uri}: unsupported URI scheme; use a local path, file:// or s3://")
    return "file", os.path.abspath(uri)


def filesystem(uri: str, options: StorageOptions | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem serving ``uri`` and the path within it."""
    protocol, path = _split(uri)
    if protocol == "file":
        return fsspec.filesystem("file"), path
    options = options or StorageOptions()
    endpoint = options.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
    fs = fsspec.filesystem(
        "s3",
        client_kwargs={"endpoint_url": endpoint} if endpoint else {},
        config_kwargs={"retries": {"max_attempts": options.max_attempts, "mode": options.retry_mode}},
        use_listings_cache=False,
    )
    return fs, path


def to_uri(protocol_uri_like: str, path: str) -> str:
    """Rebuild a URI of the same kind as ``protocol_uri_like`` for a backend path."""
    if is_s3(protocol_uri_like):
        return "s3://" + path.lstrip("/")
    if protocol_uri_like.startswith("file://"):
        return "file://" + path
    return path


def join(base: str, *parts: str) -> str:
    """Join URI parts with '/', keeping the scheme of ``base``."""
    if is_s3(base) or base.startswith("file://"):
        scheme, rest = base.split("://", 1)
        return scheme + "://" + posixpath.join(rest, *parts)
    return os.path.join(base, *parts)


def parent(uri: str) -> str:
    if is_s3(uri) or uri.startswith("file://"):
        scheme, rest = uri.split("://", 1)
        return scheme + "://" + posixpath.dirname(rest.rstrip("/"))
    return os.path.dirname(os.path.abspath(uri))


def basename(uri: str) -> str:
    return posixpath.basename(uri.rstrip("/")) if "://" in uri else os.path.basename(uri.rstrip(os.sep))


def _wrap(uri: str, error: Exception, action: str) -> StorageError:
    if isinstance(error, FileNotFoundError):
        return MissingInputError(f"{uri}: not found ({action}); check the URI and that it exists")
    if isinstance(error, PermissionError):
        return StorageError(f"{uri}: permission denied ({action}); check credentials and bucket policy")
    return StorageError(f"{uri}: cannot {action}: {type(error).__name__}: {error}")


def exists(uri: str, options: StorageOptions | None = None) -> bool:
    fs, path = filesystem(uri, options)
    try:
        return fs.exists(path)
    except Exception as error:  # noqa: BLE001 - reported with the URI
        raise _wrap(uri, error, "check existence") from error


def isdir(uri: str, options: StorageOptions | None = None) -> bool:
    fs, path = filesystem(uri, options)
    try:
        return fs.isdir(path)
    except Exception as error:  # noqa: BLE001
        raise _wrap(uri, error, "check for a folder") from error


def read_bytes(uri: str, options: StorageOptions | None = None) -> bytes:
    fs, path = filesystem(uri, options)
    try:
        return fs.cat_file(path)
    except IsADirectoryError as error:
        raise StorageError(f"{uri}: is a folder, expected a file") from error
    except Exception as error:  # noqa: BLE001
        raise _wrap(uri, error, "read") from error


def read_text(uri: str, encoding: str = "utf-8", options: StorageOptions | None = None) -> str:
    data = read_bytes(uri, options)
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        raise StorageError(f"{uri}: not valid {encoding} text at byte {error.start}") from error


def write_bytes(uri: str, data: bytes, options: StorageOptions | None = None) -> None:
    """Write a whole object. Local files appear atomically (temporary name, then rename)."""
    fs, path = filesystem(uri, options)
    try:
        if fs.protocol in ("file", ("file", "local")) or "file" in fs.protocol:
            folder = os.path.dirname(path)
            os.makedirs(folder, exist_ok=True)
            handle, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
            try:
                with os.fdopen(handle, "wb") as out:
                    out.write(data)
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        else:
            fs.pipe_file(path, data)
    except StorageError:
        raise
    except Exception as error:  # noqa: BLE001
        raise _wrap(uri, error, "write") from error


def write_text(uri: str, text: str, options: StorageOptions | None = None) -> None:
    write_bytes(uri, text.encode("utf-8"), options)


def check_writable(uri: str) -> None:
    """Write and delete a small probe object below ``uri``: a job checks its output before it works."""
    probe = join(uri, f"_write_probe-{uuid.uuid4().hex[:12]}")
    try:
        write_bytes(probe, b"")
        delete(probe)
    except StorageError as error:
        raise StorageError(f"{uri}: cannot write the output here ({error}); check that the bucket or folder exists and that these credentials may write to it") from error


def makedirs(uri: str, options: StorageOptions | None = None) -> None:
    """Create a local folder; S3 has no folders, so this is a no-op there."""
    if not is_s3(uri):
        fs, path = filesystem(uri, options)
        fs.makedirs(path, exist_ok=True)


def delete(uri: str, recursive: bool = False, options: StorageOptions | None = None) -> None:
    fs, path = filesystem(uri, options)
    try:
        if fs.exists(path):
            fs.rm(path, recursive=recursive)
    except Exception as error:  # noqa: BLE001
        raise _wrap(uri, error, "delete") from error


def _info_to_file(uri_like: str, info: dict) -> FileInfo:
    size = int(info.get("size") or 0)
    mtime = info.get("mtime")
    modified = info.get("LastModified")
    if mtime is None and modified is not None:
        mtime = modified.timestamp()
    etag = info.get("ETag") or info.get("etag")
    version = etag.strip('"') if etag else f"{size}-{int((mtime or 0) * 1e6)}"
    return FileInfo(uri=to_uri(uri_like, info["name"]), size=size, version=version, mtime=mtime)


def s3_client(options: StorageOptions | None = None):
    """A boto3 S3 client with the same endpoint and retry policy as the filesystem."""
    import boto3
    from botocore.config import Config

    options = options or StorageOptions()
    endpoint = options.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
    return boto3.client("s3", endpoint_url=endpoint, config=Config(retries={"max_attempts": options.max_attempts, "mode": options.retry_mode}))


def _list_s3(uri: str, recursive: bool, options: StorageOptions | None) -> list[FileInfo]:
    """Objects under an S3 prefix through boto3's paginated ListObjectsV2 (1,000 keys a page)."""
    bucket, _, key = uri.split("://", 1)[1].partition("/")
    prefix = key.rstrip("/") + "/" if key else ""
    client = s3_client(options)
    arguments = {"Bucket": bucket, "Prefix": prefix}
    if not recursive:
        arguments["Delimiter"] = "/"
    files = []
    for page in client.get_paginator("list_objects_v2").paginate(**arguments):
        for item in page.get("Contents", ()):
            if item["Key"].endswith("/"):
                continue  # zero-byte "folder" markers made by consoles
            files.append(
                FileInfo(uri=f"s3://{bucket}/{item['Key']}", size=int(item["Size"]), version=item["ETag"].strip('"'), mtime=item["LastModified"].timestamp())
            )
    if not files and key:
        try:  # a single object named by the URI itself
            head = client.head_object(Bucket=bucket, Key=key)
            files.append(FileInfo(uri=f"s3://{bucket}/{key}", size=int(head["ContentLength"]), version=head["ETag"].strip('"'), mtime=head["LastModified"].timestamp()))
        except Exception:  # noqa: BLE001 - nothing there: reported below
            pass
    if not files and not key:
        client.head_bucket(Bucket=bucket)
    return files


def list_files(uri: str, recursive: bool = True, options: StorageOptions | None = None, include_hidden: bool = False) -> list[FileInfo]:
    """Every file below ``uri`` (a folder or prefix), sorted by URI.

    Names starting with '.' below ``uri`` (temporary files, .DS_Store) are left out unless
    ``include_hidden``.

    An empty but existing local folder or bucket gives []; a missing one raises
    MissingInputError. (S3 has no folders: an empty prefix is reported as missing.)
    """
    if is_s3(uri):
        try:
            found = _list_s3(uri, recursive, options)
        except Exception as error:  # noqa: BLE001
            raise _wrap(uri, error, "list") from error
        if not found and uri.split("://", 1)[1].partition("/")[2]:
            raise MissingInputError(f"{uri}: no objects under this prefix; check the bucket and prefix")
        return sorted((f for f in found if include_hidden or not _hidden(f.uri, uri)), key=lambda f: f.uri)
    fs, path = filesystem(uri, options)
    try:
        if not fs.exists(path):
            raise FileNotFoundError(path)
        if recursive:
            entries = fs.find(path, detail=True)
        else:
            entries = {entry["name"]: entry for entry in fs.ls(path, detail=True)}
    except Exception as error:  # noqa: BLE001
        raise _wrap(uri, error, "list") from error
    files = [_info_to_file(uri, info) for info in entries.values() if info.get("type") != "directory"]
    return sorted((f for f in files if include_hidden or not _hidden(f.uri, uri)), key=lambda f: f.uri)


def _hidden(file_uri: str, root_uri: str) -> bool:
    """Names starting with '.' below the root."""
    relative = file_uri[len(root_uri.rstrip("/")):] if file_uri.startswith(root_uri.rstrip("/")) else file_uri
    return any(part.startswith(".") for part in relative.split("/") if part)


def iter_lines(uri: str, options: StorageOptions | None = None) -> Iterator[tuple[int, str]]:
    """(1-based line number, line) pairs with any CR/LF stripped from line ends."""
    text = read_text(uri, encoding="utf-8-sig", options=options)
    for number, line in enumerate(text.splitlines(), start=1):
        yield number, line


def arrow_filesystem(uri: str, options: StorageOptions | None = None):
    """A ``pyarrow.fs.FileSystem`` and path for reading/writing Parquet at ``uri``.

    pyarrow 14's own S3 filesystem and its legacy s3fs wrapper do not work with current
    async s3fs, so S3 goes through pyarrow's generic fsspec handler.
    """
    import pyarrow.fs as pafs

    protocol, path = _split(uri)
    if protocol == "file":
        return pafs.LocalFileSystem(), path
    fs, path = filesystem(uri, options)
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


# --------------------------------------------------------------------------- conditional writes
# Compare-and-swap on one small object (a lease): S3's conditional requests, and on a local
# disk a short exclusive flock on a hidden guard file beside it. A version is the S3 ETag, or
# the SHA-256 of a local file's bytes.


def _s3_key(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.split("://", 1)[1].partition("/")
    return bucket, key


def _s3_condition_failed(error: Exception) -> bool:
    code = getattr(error, "response", {}).get("Error", {}).get("Code", "")
    return code in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "404", "412", "409")


@contextlib.contextmanager
def _guarded(path: str) -> Iterator[None]:
    import fcntl

    folder, name = os.path.split(path)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f".{name}.guard"), "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(guard, fcntl.LOCK_UN)


def _local_version(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except FileNotFoundError:
        return None


def _swap(uri: str, data: bytes | None, expected: str | None, create: bool) -> str | None:
    """Write ``data`` (or delete, for None) if the object is absent (``create``) or at version
    ``expected``; the new version ("" after a delete), or None when the condition failed."""
    try:
        if is_s3(uri):
            bucket, key = _s3_key(uri)
            client = s3_client()
            condition = {"IfNoneMatch": "*"} if create else {"IfMatch": expected}
            try:
                if data is None:
                    client.delete_object(Bucket=bucket, Key=key, **condition)
                    return ""
                return client.put_object(Bucket=bucket, Key=key, Body=data, **condition)["ETag"].strip('"')
            except Exception as error:  # noqa: BLE001 - botocore ClientError
                if _s3_condition_failed(error):
                    return None
                if data is None and getattr(error, "response", {}).get("Error", {}).get("Code") == "NotImplemented":
                    found = read_versioned(uri)  # a store without conditional deletes: check, then delete
                    if found is None or found[1] != expected:
                        return None
                    client.delete_object(Bucket=bucket, Key=key)
                    return ""
                raise
        path = _split(uri)[1]
        with _guarded(path):
            current = _local_version(path)
            if (current is not None) if create else (current is None or current != expected):
                return None
            if data is None:
                os.unlink(path)
                return ""
            write_bytes(path, data)
            return hashlib.sha256(data).hexdigest()
    except StorageError:
        raise
    except Exception as error:  # noqa: BLE001
        raise _wrap(uri, error, "write conditionally") from error


def create_exclusive(uri: str, data: bytes) -> str | None:
    """Create ``uri`` unless it exists; its version, or None when it already existed."""
    return _swap(uri, data, None, create=True)


def replace_if(uri: str, data: bytes, version: str) -> str | None:
    """Replace ``uri`` if it is still at ``version``; the new version, or None otherwise."""
    return _swap(uri, data, version, create=False)


def delete_if(uri: str, version: str) -> bool:
    """Delete ``uri`` if it is still at ``version``."""
    return _swap(uri, None, version, create=False) is not None


def read_versioned(uri: str) -> tuple[bytes, str] | None:
    """(bytes, version) of ``uri``, or None when it does not exist."""
    try:
        if is_s3(uri):
            bucket, key = _s3_key(uri)
            try:
                found = s3_client().get_object(Bucket=bucket, Key=key)
            except Exception as error:  # noqa: BLE001
                if getattr(error, "response", {}).get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    return None
                raise
            return found["Body"].read(), found["ETag"].strip('"')
        path = _split(uri)[1]
        with _guarded(path):
            try:
                with open(path, "rb") as handle:
                    data = handle.read()
            except FileNotFoundError:
                return None
        return data, hashlib.sha256(data).hexdigest()
    except Exception as error:  # noqa: BLE001
        raise _wrap(uri, error, "read") from error
