"""The CNN image encoder as a Keras network: preprocessing, backbone, global pooling.

What the network is (backbone, weights, pooling) and the identity of its features are
defined in :mod:`captioning.model.encoder_spec`; this module builds it with Keras and
runs it on batches through one traced TensorFlow function. TensorFlow is imported inside
functions only, so importing this module is free.
"""
from __future__ import annotations

import contextlib
import random
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from captioning.model.encoder_spec import (
    _CAFFE_BGR_MEAN,
    IMAGENET,
    PREPROCESSING_MODES,
    BackboneSpec,
    EncoderConfig,
    EncoderWeightsError,
    _alternatives,
    _weights_file,
    _WeightsFile,
    weights_kind,
)


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

    H, W are ``config.spec.input_shape``; D is ``config.feature_dim``: the pooled channels,
    or with ``config.spatial`` the last feature map (rows, columns, channels, optionally
    projected to fewer channels) flattened row by row. Preprocessing is inside the model.
    Raises :class:`EncoderWeightsError` when weights cannot be had.
    """
    import keras

    spec = config.spec
    kind = weights_kind(config.weights)
    weights_file = _weights_file(config.weights) if kind == "file" else None
    application = getattr(keras.applications, spec.application)
    with _build_scope(config):
        pixels = keras.Input(shape=spec.input_shape, dtype="float32", name="pixels")  # (N, H, W, 3) 0..255 RGB
        prepared = preprocess(spec, pixels)  # (N, H, W, 3) as the backbone expects
        backbone = _application(application, spec, prepared, None if config.spatial else config.pooling, kind)
        features = keras.ops.cast(backbone.outputs[0], "float32")  # (N, C) pooled, or (N, rows, cols, C)
        if config.spatial:
            features = _spatial_features(features, config)  # (N, rows * cols * C')
        model = keras.Model(pixels, features, name=f"encoder_{spec.name}")
    if weights_file is not None:
        _load_weights(model, spec, weights_file)
    return model


def _spatial_features(grid, config: EncoderConfig):
    """The last feature map (N, rows, cols, C), projected to C' channels if asked, flattened to (N, rows * cols * C')."""
    import keras

    from captioning.model.encoder_spec import projection_matrix

    rows, cols, channels = config.feature_shape
    if config.channels:
        matrix = projection_matrix(config.seed, config.spec.feature_dim, channels)  # (C, C')
        grid = keras.ops.matmul(grid, keras.ops.convert_to_tensor(matrix))  # (N, rows, cols, C')
    return keras.ops.reshape(grid, (-1, rows * cols * channels))  # (N, rows * cols * C')


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
