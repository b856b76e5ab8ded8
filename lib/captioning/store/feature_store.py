"""The feature store's self-description: which model made the vectors, and which Parquet
parts hold the current rows.

A store is a folder (or S3 prefix)::

    <store>/_feature_store.json     this manifest; written last, atomically
    <store>/parts/<run-id>/         Parquet written by one extraction run

Readers (Spark, Petastorm) read exactly the parts the manifest lists, so a run that dies
half-way leaves an unlisted part that nobody reads (the next run deletes it). Runs that
only add images append a part; runs that see changed images rewrite one compacted part,
so each image has exactly one row.

Vectors are stored as raw little-endian bytes (float16 by default: half the size, and
more than enough precision for pooled CNN activations) because Parquet as written by
Spark has no half-precision type; every vector of a store has the same byte length.
A spatial store (``extract-features --spatial``) holds each image's last feature map,
rows x columns x channels flattened row by row, in the same column: the encoder identity
names its ``feature_shape`` (a pooled store's is just its ``feature_dim``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from captioning.errors import UserError
from captioning.serialization import from_dict, to_dict
from captioning.store import storage

MANIFEST = "_feature_store.json"
FORMAT = "captioning.feature-store/1"
IDENTITY_KEYS = ("backbone", "input_size", "feature_dim", "pooling", "weights", "feature_shape", "projection")


# Row groups of about 2k float16 ResNet vectors: Petastorm shuffles by row group, so small
# groups mix better. Also used for the training views, which carry the same vectors.
ROW_GROUP_BYTES = 8 * 1024 * 1024


class FeatureStoreMismatch(UserError, ValueError):
    """Features made by another model than the one a stage expects."""


@dataclass(frozen=True)
class Manifest:
    encoder: Mapping[str, Any]  # encoder_identity(): backbone, input_size, feature_dim, pooling, weights (+ feature_shape, projection)
    dtype: str  # "float16" or "float32"
    parts: tuple[str, ...]  # part folder names under parts/
    rows: int = 0
    errors: int = 0
    history: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)  # one summary per run

    @property
    def feature_dim(self) -> int:
        """Values stored per image."""
        return int(self.encoder["feature_dim"])

    @property
    def feature_shape(self) -> tuple[int, ...]:
        """(feature_dim,) for pooled vectors, (rows, columns, channels) for a spatial grid."""
        return tuple(int(v) for v in self.encoder.get("feature_shape") or (self.feature_dim,))

    @property
    def vector_bytes(self) -> int:
        """Bytes of one image's features as stored (before Parquet's compression)."""
        return vector_bytes(self.feature_dim, self.dtype)

    def part_uris(self, store_uri: str) -> list[str]:
        """The Parquet folders of the current rows: what every reader reads, and only that."""
        return [part_uri(store_uri, part) for part in self.parts]

    def to_json(self) -> str:
        return json.dumps({**to_dict(self), "format": FORMAT}, indent=1)

    @classmethod
    def from_json(cls, text: str, source: str) -> "Manifest":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise FeatureStoreMismatch(f"{source}: not a feature store manifest ({error})") from error
        if not isinstance(data, dict) or data.pop("format", None) != FORMAT:
            raise FeatureStoreMismatch(f"{source}: not a feature store manifest (expected format {FORMAT!r})")
        return from_dict(cls, data, source)


def manifest_uri(store_uri: str) -> str:
    return storage.join(store_uri, MANIFEST)


def part_uri(store_uri: str, part: str) -> str:
    return storage.join(store_uri, "parts", part)


def read_manifest(store_uri: str) -> Manifest | None:
    uri = manifest_uri(store_uri)
    if not storage.exists(uri):
        return None
    return Manifest.from_json(storage.read_text(uri), uri)


def require_manifest(store_uri: str) -> Manifest:
    manifest = read_manifest(store_uri)
    if manifest is None:
        raise FeatureStoreMismatch(f"{store_uri}: no feature store here ({MANIFEST} missing); run extract-features first, or check the URI")
    return manifest


def write_manifest(store_uri: str, manifest: Manifest) -> None:
    storage.write_text(manifest_uri(store_uri), manifest.to_json())


def identity_differences(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> list[str]:
    """Human-readable differences on the keys that decide whether vectors are comparable."""
    out = []
    for key in IDENTITY_KEYS:
        a, b = expected.get(key), actual.get(key)
        if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
            a, b = list(a or ()), list(b or ())
        if a != b:
            out.append(f"{key}: {b!r} here, {a!r} expected")
    return out


def check_identity(store_uri: str, expected: Mapping[str, Any], actual: Mapping[str, Any], remedy: str) -> None:
    differences = identity_differences(expected, actual)
    if differences:
        raise FeatureStoreMismatch(f"{store_uri}: features were made by another model ({'; '.join(differences)}); {remedy}")


def vector_bytes(feature_dim: int, dtype: str) -> int:
    """Bytes of one stored vector of ``feature_dim`` values in ``dtype`` (the column's fixed length)."""
    return int(feature_dim) * np.dtype(dtype).itemsize


def encode_vector(vector: np.ndarray, dtype: str) -> bytes:
    return np.asarray(vector, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()


def decode_vectors(blobs, dtype: str, dim: int) -> np.ndarray:
    """Stack raw vector bytes into a float32 array of shape (n, dim)."""
    flat = np.frombuffer(b"".join(blobs), dtype=np.dtype(dtype).newbyteorder("<"))
    return flat.reshape(-1, dim).astype(np.float32)


@dataclass(frozen=True)
class PartPlan:
    """Which parts a run writes and which the manifest lists afterwards."""

    new_part: str  # the rows this run computed
    compacted: str | None  # when images changed: one part with every current row, replacing all
    parts: tuple[str, ...]  # listed by the new manifest
    obsolete: tuple[str, ...]  # deleted once the new manifest is written


def plan_parts(previous: Manifest | None, run_id: str, changed: bool) -> PartPlan:
    """New images append a part; changed images rewrite one compacted part (one row per image)."""
    if previous is None:
        return PartPlan(run_id, None, (run_id,), ())
    if changed:
        compacted = run_id + "-compacted"
        return PartPlan(run_id, compacted, (compacted,), (*previous.parts, run_id))
    return PartPlan(run_id, None, (*previous.parts, run_id), ())


def part_names(store_uri: str) -> set[str]:
    """Names of the part folders present, listed or not (a killed run's files sit deeper, in
    ``parts/<run>/_temporary/...``: the part is the first folder below ``parts/``)."""
    root = storage.join(store_uri, "parts").rstrip("/") + "/"
    if not storage.exists(root):
        return set()
    return {f.uri[len(root):].split("/", 1)[0] for f in storage.list_files(root, include_hidden=True) if f.uri.startswith(root)}


def remove_unlisted_parts(store_uri: str, parts, obsolete=()) -> list[str]:
    """Delete parts no manifest lists: superseded ones and leftovers of interrupted runs."""
    removed = sorted((part_names(store_uri) | set(obsolete)) - set(parts))
    for name in removed:
        storage.delete(part_uri(store_uri, name), recursive=True)
    return removed

