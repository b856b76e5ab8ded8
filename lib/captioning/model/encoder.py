"""The CNN image encoder: a Keras application backbone, globally pooled to one vector.

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

TensorFlow is imported inside functions only: importing this module is free, so the
Spark driver and CPU-only tools can use the registry and identities without TensorFlow
starting up. The one piece of module state is a documented per-process cache of weights
files downloaded from S3 (:data:`_DOWNLOADED`).
"""
from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import random
import shutil
import tempfile
import threading
import warnings
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from captioning.store import storage

PREPROCESSING_MODES = ("caffe", "tf", "none")
POOLING_MODES = ("avg", "max")
IMAGENET = "imagenet"
NO_WEIGHTS = "none"
WEIGHTS_SUFFIXES = (".weights.h5", ".h5")  # Keras 3 weights files and legacy HDF5 (Keras' own downloads)

# Channel means of the ImageNet training set in BGR order, as the original Caffe ResNet
# subtracted them; the same numbers as keras.applications.imagenet_utils ("caffe" mode).
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)


class EncoderWeightsError(RuntimeError):
    """Weights could not be obtained or do not fit the backbone; the message says what to do."""


@dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone. Everything a feature consumer needs to know about it."""

    name: str  # registry key, e.g. "resnet50"
    application: str  # class name in keras.applications
    input_size: tuple[int, int]  # (width, height), the order captioning.data.images.decode_image takes
    feature_dim: int  # values per image after global pooling
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
    BackboneSpec("resnet50", "ResNet50", (224, 224), 2048, "caffe"),
    BackboneSpec("inceptionv3", "InceptionV3", (299, 299), 2048, "tf"),
    BackboneSpec(
        "efficientnetb0",
        "EfficientNetB0",
        (224, 224),
        1280,
        "none",
        imagenet_file_md5="50bc09e76180e00e4465e1a485ddc09d",
        imagenet_input_stddev=(0.229, 0.224, 0.225),
    ),
    BackboneSpec("mobilenetv3small", "MobileNetV3Small", (224, 224), 576, "none"),
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
    seed: int = 0  # random initialisation for weights="none"; identical in every process

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

    @property
    def spec(self) -> BackboneSpec:
        return backbone_spec(self.backbone)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EncoderConfig":
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown encoder options {sorted(unknown)}; expected {sorted(cls.__dataclass_fields__)}")
        return cls(**data)


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
    bits of the values, not what the features mean.
    """
    spec = config.spec
    return {
        "backbone": spec.name,
        "input_size": list(spec.input_size),
        "feature_dim": spec.feature_dim,
        "pooling": config.pooling,
        "preprocessing": spec.preprocessing,
        "weights": weights_identity(config),
    }


# --- the model ---------------------------------------------------------------------------


def preprocess(spec: BackboneSpec, batch):
    """Map pixels in 0..255, RGB, shape (N, H, W, 3) to what ``spec``'s backbone expects.

    Works on numpy arrays, tensors and symbolic Keras tensors (it is part of the model
    :func:`build_encoder` returns). Equal to ``keras.applications.<module>.preprocess_input``
    for the backbone; for "none" the model rescales inside itself.
    """
    from keras import ops

    pixels = ops.cast(batch, "float32")  # (N, H, W, 3) RGB in 0..255
    if spec.preprocessing == "caffe":
        bgr = ops.flip(pixels, axis=-1)  # (N, H, W, 3) BGR
        return bgr - ops.convert_to_tensor(np.asarray(_CAFFE_BGR_MEAN, dtype=np.float32))  # (N, H, W, 3)
    if spec.preprocessing == "tf":
        return pixels / 127.5 - 1.0  # (N, H, W, 3) in [-1, 1]
    if spec.preprocessing == "none":
        return pixels
    raise ValueError(f"unknown preprocessing {spec.preprocessing!r}; expected one of {PREPROCESSING_MODES}")


@contextlib.contextmanager
def _build_scope(config: EncoderConfig) -> Iterator[None]:
    """Dtype policy and initialiser seeds for one build; the caller's settings come back after.

    Keras gives every unseeded initialiser a seed drawn from Python's ``random`` module
    when the layer is created, and initialises from that seed statelessly; seeding
    ``random`` just for the build makes the weights a function of ``config.seed`` alone.
    """
    import keras

    saved_policy = keras.config.dtype_policy()
    saved_random = random.getstate()
    keras.config.set_dtype_policy("mixed_float16" if config.mixed_precision else "float32")
    random.seed(int(config.seed))
    try:
        yield
    finally:
        random.setstate(saved_random)
        keras.config.set_dtype_policy(saved_policy)


def build_encoder(config: EncoderConfig = EncoderConfig()):
    """A ``keras.Model``: pixels (N, H, W, 3) in 0..255 (uint8 or float) -> features (N, D) float32.

    H, W and D are ``config.spec.input_shape`` and ``feature_dim``. Preprocessing is inside
    the model. Raises :class:`EncoderWeightsError` when weights cannot be had.
    """
    import keras

    spec = config.spec
    kind = weights_kind(config.weights)
    weights_file = _weights_file(config.weights) if kind == "file" else None
    application = getattr(keras.applications, spec.application)
    with _build_scope(config):
        pixels = keras.Input(shape=spec.input_shape, dtype="float32", name="pixels")  # (N, H, W, 3) 0..255 RGB
        prepared = preprocess(spec, pixels)  # (N, H, W, 3) as the backbone expects
        backbone = _application(application, spec, prepared, config.pooling, kind)
        features = keras.ops.cast(backbone.outputs[0], "float32")  # (N, D)
        model = keras.Model(pixels, features, name=f"encoder_{spec.name}")
    if weights_file is not None:
        _load_weights(model, spec, weights_file)
    return model


def _application(application: Callable, spec: BackboneSpec, inputs, pooling: str, kind: str):
    """The Keras application on ``inputs``, without its classifier; downloads ImageNet weights if asked."""
    try:
        return application(
            input_tensor=inputs,
            include_top=False,
            weights=IMAGENET if kind == IMAGENET else None,
            pooling=pooling,
        )
    except Exception as error:  # noqa: BLE001 - only reached for a failed download in practice
        if kind != IMAGENET:
            raise
        raise EncoderWeightsError(
            f"could not get ImageNet weights for {spec.name} through Keras' download "
            f"({type(error).__name__}: {error}). Without internet access, {_alternatives()}"
        ) from error


def _load_weights(model, spec: BackboneSpec, weights_file: _WeightsFile) -> None:
    """Load a backbone weights file, refusing anything that does not fit exactly.

    Keras only warns about some mismatches (and keeps random values for what it
    skipped); here every such warning is an error, because features from partially
    random weights look plausible and are useless.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(weights_file.path)
        except Exception as error:  # noqa: BLE001 - Keras raises ValueError, KeyError, OSError...
            raise _mismatch(spec, weights_file, str(error).splitlines()[0]) from error
    skipped = [str(w.message) for w in caught if "skip" in str(w.message).lower() or "not load" in str(w.message).lower()]
    if skipped:
        raise _mismatch(spec, weights_file, f"{len(skipped)} parts were skipped, e.g. {skipped[0]}")
    if spec.imagenet_input_stddev is not None and weights_file.md5 == spec.imagenet_file_md5:
        _fold_imagenet_rescaling(model, spec.imagenet_input_stddev)


def _mismatch(spec: BackboneSpec, weights_file: _WeightsFile, detail: str) -> EncoderWeightsError:
    return EncoderWeightsError(
        f"weights file {weights_file.uri} does not fit backbone {spec.name} ({detail}). "
        f"Use a file saved from a {spec.name} encoder (or keras.applications.{spec.application} with "
        "include_top=False: Keras' '_notop' ImageNet file), or pick the backbone the file was made for"
    )


def _fold_imagenet_rescaling(model, stddev: tuple[float, float, float]) -> None:
    """Give a file-loaded EfficientNet the input scaling Keras adds for weights="imagenet".

    Keras follows Normalization((x - mean) / sqrt(var)) with Rescaling(1 / sqrt(stddev)).
    Dividing by sqrt(var * stddev) instead is the same function, with no extra layer.
    """
    import keras

    normalization = next(layer for layer in model.layers if isinstance(layer, keras.layers.Normalization))
    variance = keras.ops.convert_to_numpy(normalization.adapt_variance)  # (3,)
    normalization.adapt_variance.assign(variance * np.asarray(stddev, dtype=variance.dtype))
    normalization.finalize_state()


# --- running it --------------------------------------------------------------------------


def configure_tensorflow(mixed_precision: bool) -> list[str]:
    """Process-wide TensorFlow setup; call once, before any TensorFlow op runs.

    Turns on memory growth for every visible GPU (TensorFlow otherwise reserves all GPU
    memory up front, which starves a second worker process on the same GPU) and sets
    the global Keras dtype policy: ``mixed_float16`` when asked, else ``float32``. Safe
    on machines without GPUs. Returns the names of the GPUs configured.
    """
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError as error:  # GPUs already initialised by an earlier op
            if not tf.config.experimental.get_memory_growth(gpu):
                raise RuntimeError(
                    f"cannot turn on memory growth for {gpu.name}: TensorFlow already uses the GPU. "
                    "Call configure_tensorflow() at the start of the process, before building models"
                ) from error
    keras.config.set_dtype_policy("mixed_float16" if mixed_precision else "float32")
    return [gpu.name for gpu in gpus]


@dataclass(frozen=True)
class BatchFeaturizer:
    """Callable: uint8 images (N, H, W, 3) -> float32 features (N, D), via one traced graph."""

    function: Any  # the tf.function; traced once thanks to its fixed input signature
    input_shape: tuple[int, int, int]  # (H, W, 3)
    feature_dim: int

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        if batch.dtype != np.uint8:
            raise TypeError(f"expected uint8 pixels (as decode_image returns), got {batch.dtype}")
        if batch.ndim != 4 or tuple(batch.shape[1:]) != self.input_shape:
            raise ValueError(f"expected a batch of shape (N, {', '.join(map(str, self.input_shape))}), got {batch.shape}")
        if batch.shape[0] == 0:
            return np.zeros((0, self.feature_dim), dtype=np.float32)
        return self.function(batch).numpy()  # (N, D) float32


def make_batch_featurizer(model, jit_compile: bool = False) -> BatchFeaturizer:
    """Wrap an encoder from :func:`build_encoder` in a graph-compiled function.

    The input signature has a free batch dimension, so the last, smaller batch of a
    partition reuses the same graph instead of tracing a new one. ``jit_compile`` turns
    on XLA, which helps on GPUs and costs a compile per new batch size.
    """
    import tensorflow as tf

    height, width, channels = (int(v) for v in model.input_shape[1:])
    feature_dim = int(model.output_shape[-1])

    @tf.function(
        input_signature=[tf.TensorSpec([None, height, width, channels], tf.uint8)],
        jit_compile=jit_compile,
    )
    def featurize(images):  # (N, H, W, 3) uint8
        pixels = tf.cast(images, tf.float32)  # (N, H, W, 3) in 0..255
        features = model(pixels, training=False)  # (N, D)
        return tf.cast(features, tf.float32)  # (N, D)

    return BatchFeaturizer(featurize, (height, width, channels), feature_dim)
