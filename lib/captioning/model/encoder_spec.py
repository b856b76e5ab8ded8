"""What a CNN image encoder is: backbone registry, weights, and the identity of its features.

Features are computed once by a Spark job and stored; the caption model trains and runs
on the stored vectors. Features are only useful if every worker that computed them used
the *same* network, so this module is built around an explicit identity:

* A backbone is chosen by name from a small registry (:func:`backbone_spec`) that fixes
  its input size, feature size and input preprocessing.
* Weights come from Keras' ImageNet download (``"imagenet"``, for clusters with internet
  access), from a weights file given as a local path or ``s3://`` URI (for clusters
  without: e.g. Keras' cached ``*_notop.h5`` copied to S3), or ``"none"``: random weights
  drawn from ``EncoderConfig.seed``, identical in every process that builds the same
  config with the same Keras version, so features from different Spark workers can be
  mixed. ``"none"`` exists for tests and pipeline dry runs on machines without weights.
* :func:`encoder_identity` names all of that in a JSON-able dict; it is written into the
  feature table's metadata, and later stages refuse features whose identity differs.

This module needs no TensorFlow (the Spark driver and CPU-only tools use the registry
and identities); the Keras network is built in :mod:`captioning.model.encoder`. The one
piece of module state is a documented per-process cache of weights files downloaded
from S3 (:data:`_DOWNLOADED`).
"""
from __future__ import annotations

import atexit
import hashlib
import math
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np

from captioning.errors import UserError
from captioning.store import storage

PREPROCESSING_MODES = ("caffe", "tf", "none")
POOLING_MODES = ("avg", "max")
IMAGENET = "imagenet"
NO_WEIGHTS = "none"
WEIGHTS_SUFFIXES = (".weights.h5", ".h5")  # Keras 3 weights files and legacy HDF5 (Keras' own downloads)

# Channel means of the ImageNet training set in BGR order, as the original Caffe ResNet
# subtracted them; the same numbers as keras.applications.imagenet_utils ("caffe" mode).
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)


class EncoderWeightsError(UserError, RuntimeError):
    """Weights could not be obtained or do not fit the backbone; the message says what to do."""


@dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone. Everything a feature consumer needs to know about it."""

    name: str  # registry key, e.g. "resnet50"
    application: str  # class name in keras.applications
    input_size: tuple[int, int]  # (width, height), the order captioning.data.images.decode_image takes
    feature_dim: int  # values per image after global pooling: the last feature map's channels
    grid: tuple[int, int]  # (rows, columns) of the last feature map at input_size, before pooling
    preprocessing: str  # "caffe": RGB->BGR, minus ImageNet means; "tf": to [-1, 1]; "none": the model rescales inside
    # EfficientNet only: Keras adds an extra input rescaling when it builds with
    # weights="imagenet" (keras issue tensorflow/tensorflow#49930). The same ImageNet file
    # loaded by path would silently miss it, so a file with this MD5 (Keras' published
    # hash of the "_notop.h5" download) gets the rescaling folded into its normalisation.
    imagenet_file_md5: str | None = None
    imagenet_input_stddev: tuple[float, float, float] | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(height, width, 3): one image as the model takes it."""
        return (self.input_size[1], self.input_size[0], 3)


_BACKBONES = (
    BackboneSpec("resnet50", "ResNet50", (224, 224), 2048, (7, 7), "caffe"),
    BackboneSpec("inceptionv3", "InceptionV3", (299, 299), 2048, (8, 8), "tf"),
    BackboneSpec(
        "efficientnetb0",
        "EfficientNetB0",
        (224, 224),
        1280,
        (7, 7),
        "none",
        imagenet_file_md5="50bc09e76180e00e4465e1a485ddc09d",
        imagenet_input_stddev=(0.229, 0.224, 0.225),
    ),
    BackboneSpec("mobilenetv3small", "MobileNetV3Small", (224, 224), 576, (7, 7), "none"),
)
BACKBONES: Mapping[str, BackboneSpec] = MappingProxyType({spec.name: spec for spec in _BACKBONES})
DEFAULT_BACKBONE = "resnet50"


def backbone_spec(name: str) -> BackboneSpec:
    """The registered backbone called ``name`` (case-insensitive)."""
    spec = BACKBONES.get(str(name).strip().lower())
    if spec is None:
        raise ValueError(f"unknown backbone {name!r}; valid names: {', '.join(BACKBONES)}")
    return spec


def weights_kind(weights: str) -> str:
    """``"imagenet"``, ``"none"`` or ``"file"`` (a local path, file:// or s3:// URI)."""
    lowered = weights.strip().lower()
    if lowered in (IMAGENET, NO_WEIGHTS):
        return lowered
    return "file"


@dataclass(frozen=True)
class EncoderConfig:
    backbone: str = DEFAULT_BACKBONE  # a key of BACKBONES
    weights: str = IMAGENET  # "imagenet", "none" (random from seed), or a path / s3:// URI of a .h5 / .weights.h5 file
    pooling: str = "avg"  # global pooling over the last feature map: "avg" or "max"
    batch_size: int = 32  # images per forward pass in the feature job
    mixed_precision: bool = False  # float16 compute on GPUs; features are float32 either way
    seed: int = 0  # random initialisation for weights="none" and the projection; identical in every process
    # keep the last feature map (rows x columns x channels) instead of pooling it: what an
    # attention decoder looks at, region by region; `pooling` then plays no part
    spatial: bool = False
    # spatial only: project every grid cell's channels to this many with a fixed random
    # matrix drawn from `seed` (the store shrinks by channels / feature_dim); 0 keeps them all
    channels: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "backbone", backbone_spec(self.backbone).name)
        if not isinstance(self.weights, str) or not self.weights.strip():
            raise ValueError('weights must be "imagenet", "none", or a path / s3:// URI of a weights file')
        if weights_kind(self.weights) == "file" and not self.weights.lower().endswith(WEIGHTS_SUFFIXES):
            raise ValueError(
                f"weights file {self.weights!r} must end in .weights.h5 or .h5 (Keras weights); "
                'or use weights="imagenet" / "none"'
            )
        if self.pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, got {self.pooling!r}")
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if not 0 <= int(self.seed) < 2**32:
            raise ValueError(f"seed must be in 0..2**32-1, got {self.seed}")
        if self.channels < 0 or (self.channels and not self.spatial):
            raise ValueError(f"channels (a projection of the spatial grid) needs spatial=True and must be >= 0, got {self.channels}")
        if self.channels > self.spec.feature_dim:
            raise ValueError(f"channels must be at most {self.spec.feature_dim} ({self.backbone}'s channels), got {self.channels}")

    @property
    def spec(self) -> BackboneSpec:
        return backbone_spec(self.backbone)

    @property
    def feature_shape(self) -> tuple[int, ...]:
        """Shape of one image's features: (channels,) pooled, (rows, columns, channels) spatial."""
        spec = self.spec
        if not self.spatial:
            return (spec.feature_dim,)
        return (*spec.grid, self.channels or spec.feature_dim)

    @property
    def feature_dim(self) -> int:
        """Values stored per image (the product of feature_shape)."""
        return math.prod(self.feature_shape)


def projection_matrix(seed: int, channels: int, projected: int) -> np.ndarray:
    """The fixed (channels, projected) float32 matrix of a spatial projection.

    Gaussian entries with variance 1 / projected, drawn from ``seed`` by numpy's PCG64
    (the same numbers on every machine): a random projection keeps the distances between
    cells' feature vectors approximately (Johnson-Lindenstrauss), which is what an
    attention decoder compares, at a fraction of the channels.
    """
    rng = np.random.default_rng([int(seed), int(channels), int(projected)])
    return (rng.standard_normal((channels, projected)) / np.sqrt(projected)).astype(np.float32)


# --- weights files -----------------------------------------------------------------------


@dataclass(frozen=True)
class _WeightsFile:
    uri: str  # as configured
    path: str  # local file Keras can open
    sha256: str
    md5: str


# Per-process cache: s3:// URI -> local copy. A Spark worker process builds the encoder
# once per task; without the cache each task would download ~100 MB again. Objects are
# assumed not to change while a job runs (weights files are written once and never
# overwritten). Copies live in one temporary folder removed when the process exits.
_DOWNLOADED: dict[str, _WeightsFile] = {}
_DOWNLOAD_LOCK = threading.Lock()


def _alternatives() -> str:
    return (
        'pass weights=<local path or s3:// URI of a Keras weights file> (for example Keras\' cached '
        '~/.keras/models/*_notop.h5 copied from a machine with internet access), or weights="none" '
        "for random weights that are deterministic from the seed (dry runs and tests only)"
    )


def _weights_file(uri: str) -> _WeightsFile:
    """A local copy (S3: downloaded once per process) and digests of a weights file."""
    if storage.is_s3(uri):
        with _DOWNLOAD_LOCK:
            cached = _DOWNLOADED.get(uri)
            if cached is None:
                cached = _download(uri)
                _DOWNLOADED[uri] = cached
            return cached
    data = _read_weights(uri)
    path = uri[len("file://"):] if uri.startswith("file://") else os.path.abspath(uri)
    return _WeightsFile(uri, path, hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest())


def _read_weights(uri: str) -> bytes:
    try:
        return storage.read_bytes(uri)
    except storage.StorageError as error:
        raise EncoderWeightsError(f"cannot read the weights file: {error}; or {_alternatives()}") from error


def _download(uri: str) -> _WeightsFile:
    data = _read_weights(uri)
    sha256 = hashlib.sha256(data).hexdigest()
    name = storage.basename(uri)
    suffix = ".weights.h5" if name.lower().endswith(".weights.h5") else ".h5"  # Keras picks the format by suffix
    path = os.path.join(_download_folder(), f"{sha256[:16]}{suffix}")
    storage.write_bytes(path, data)
    return _WeightsFile(uri, path, sha256, hashlib.md5(data).hexdigest())


def _download_folder() -> str:
    existing = next(iter(_DOWNLOADED.values()), None)
    if existing is not None:
        return os.path.dirname(existing.path)
    folder = tempfile.mkdtemp(prefix="captioning-weights-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


# --- identity ----------------------------------------------------------------------------


def weights_identity(config: EncoderConfig) -> str:
    """``imagenet:keras-<version>``, ``sha256:<hex of the file>`` or ``random:seed=<seed>``."""
    kind = weights_kind(config.weights)
    if kind == IMAGENET:
        import keras

        return f"imagenet:keras-{keras.__version__}"
    if kind == NO_WEIGHTS:
        return f"random:seed={config.seed}"
    return f"sha256:{_weights_file(config.weights).sha256}"


def encoder_identity(config: EncoderConfig) -> dict[str, Any]:
    """What makes two feature sets comparable; stored in feature-table metadata.

    ``mixed_precision`` and ``batch_size`` are left out: they change speed and the last
    bits of the values, not what the features mean. Spatial features add their shape
    (rows, columns, channels) and, when projected, the projection; pooled ones keep the
    keys they always had, so older stores and models still match.
    """
    spec = config.spec
    identity = {
        "backbone": spec.name,
        "input_size": list(spec.input_size),
        "feature_dim": config.feature_dim,
        "pooling": "none" if config.spatial else config.pooling,
        "preprocessing": spec.preprocessing,
        "weights": weights_identity(config),
    }
    if config.spatial:
        identity["feature_shape"] = list(config.feature_shape)
        if config.channels:
            identity["projection"] = f"random:seed={config.seed}"
    return identity
