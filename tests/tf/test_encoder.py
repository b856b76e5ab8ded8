"""The image encoder: registry, weights sources, determinism, the compiled featurizer.

Most tests use mobilenetv3small with random weights (builds in under a second). No test
downloads anything: the ImageNet case replaces Keras' download function with one that
fails the way it does offline.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from captioning.model import encoder_spec
from captioning.store import storage  # noqa: E402
from captioning.model.encoder_spec import BACKBONES, EncoderConfig, EncoderWeightsError, backbone_spec, encoder_identity
from captioning.serialization import from_dict, to_dict
from captioning.model.encoder import build_encoder, configure_tensorflow, make_batch_featurizer, preprocess

SMALL = EncoderConfig(backbone="mobilenetv3small", weights="none", seed=0)


def pixels(count: int, shape=(224, 224, 3), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, *shape), dtype=np.uint8)  # (N, H, W, 3)


@pytest.fixture(scope="module")
def small_model():
    return build_encoder(SMALL)


@pytest.fixture(scope="module")
def small_featurizer(small_model):
    return make_batch_featurizer(small_model)


@pytest.fixture(scope="module")
def small_features(small_featurizer):
    return small_featurizer(pixels(3))  # (3, 576)


@pytest.fixture(autouse=True)
def float32_policy_afterwards():
    yield
    keras.config.set_dtype_policy("float32")


# --- shapes and the compiled function ----------------------------------------------------


def test_features_shape_dtype_and_single_trace(small_featurizer, small_features):
    assert small_features.shape == (3, 576) and small_features.dtype == np.float32
    assert np.isfinite(small_features).all()
    assert np.ptp(small_features, axis=0).max() > 0  # different images, different features
    assert small_featurizer(pixels(1)).shape == (1, 576)
    assert small_featurizer(pixels(0)).shape == (0, 576)
    assert small_featurizer.function.experimental_get_tracing_count() == 1


def test_model_takes_uint8_or_float_pixels(small_model, small_features):
    batch = pixels(3)
    assert small_model.input_shape == (None, 224, 224, 3) and small_model.output_shape == (None, 576)
    scale = np.abs(small_features).max()  # eager and graph runs may round differently
    np.testing.assert_allclose(small_model(batch).numpy(), small_features, rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_allclose(small_model(batch.astype(np.float32)).numpy(), small_features, rtol=1e-4, atol=1e-4 * scale)


def test_featurizer_rejects_wrong_input(small_featurizer):
    with pytest.raises(TypeError, match="uint8"):
        small_featurizer(pixels(1).astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        small_featurizer(pixels(1, shape=(112, 112, 3)))


def test_max_pooling_keeps_the_feature_size():
    model = build_encoder(dataclasses.replace(SMALL, pooling="max"))
    assert model.output_shape == (None, 576)


# --- determinism -------------------------------------------------------------------------


def test_random_weights_follow_the_seed(small_model):
    again = build_encoder(SMALL)
    other = build_encoder(dataclasses.replace(SMALL, seed=1))
    assert all(np.array_equal(a, b) for a, b in zip(small_model.get_weights(), again.get_weights()))
    assert not all(np.array_equal(a, b) for a, b in zip(small_model.get_weights(), other.get_weights()))


_WORKER = textwrap.dedent(
    """
    import hashlib, sys
    import numpy as np
    from captioning.model.encoder_spec import EncoderConfig
    from captioning.model.encoder import build_encoder, make_batch_featurizer
    config = EncoderConfig(backbone="mobilenetv3small", weights="none", seed=0)
    model = build_encoder(config)
    weights = hashlib.sha256(b"".join(w.tobytes() for w in model.get_weights())).hexdigest()
    batch = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    np.save(sys.argv[1], make_batch_featurizer(model)(batch))
    print(weights)
    """
)


def test_random_weights_and_features_identical_across_processes(tmp_path, small_model, small_features):
    """Two Spark workers building the same config must produce the same features."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    outputs = [tmp_path / f"worker{i}.npy" for i in range(2)]
    workers = [
        subprocess.Popen([sys.executable, "-c", _WORKER, str(path)], env=env, stdout=subprocess.PIPE, text=True)
        for path in outputs
    ]
    digests = [worker.communicate(timeout=600)[0].strip() for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0]
    here = hashlib.sha256(b"".join(w.tobytes() for w in small_model.get_weights())).hexdigest()
    assert digests == [here, here]
    first, second = (np.load(path) for path in outputs)
    if tf.config.list_physical_devices("GPU"):  # cuDNN may pick other kernels per process
        np.testing.assert_allclose(first, second, rtol=1e-3, atol=1e-3 * np.abs(first).max())
    else:
        assert np.array_equal(first, second)
        assert np.array_equal(first, small_features)


# --- weights files -----------------------------------------------------------------------


def test_weights_file_round_trip(tmp_path, small_model, small_features):
    path = tmp_path / "mobile.weights.h5"
    small_model.save_weights(str(path))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    for weights in (str(path), "file://" + str(path)):
        config = dataclasses.replace(SMALL, weights=weights, seed=99)  # the seed must not matter now
        assert np.array_equal(make_batch_featurizer(build_encoder(config))(pixels(3)), small_features)
        assert encoder_identity(config)["weights"] == f"sha256:{digest}"


def test_weights_file_from_s3_is_downloaded_once(s3_bucket, tmp_path, small_model, small_features):
    local = tmp_path / "mobile.weights.h5"
    small_model.save_weights(str(local))
    uri = f"{s3_bucket}/models/mobile.weights.h5"
    storage.write_bytes(uri, local.read_bytes())
    config = dataclasses.replace(SMALL, weights=uri)
    assert np.array_equal(make_batch_featurizer(build_encoder(config))(pixels(3)), small_features)
    assert encoder_identity(config)["weights"] == "sha256:" + hashlib.sha256(local.read_bytes()).hexdigest()
    cached = encoder_spec._DOWNLOADED[uri]
    storage.delete(uri)  # a second build in this process must not need S3 any more
    assert encoder_spec._weights_file(uri) is cached
    build_encoder(config)


def test_legacy_h5_weights_file_loads(tmp_path, small_model, small_features):
    """Keras' ImageNet downloads are legacy HDF5 files; one copied to S3 must load the same way."""
    legacy = pytest.importorskip("keras.src.legacy.saving.legacy_h5_format")
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "mobilenet_v3_small_notop.h5"
    with h5py.File(path, "w") as handle:
        legacy.save_weights_to_hdf5_group(handle, small_model)
    model = build_encoder(dataclasses.replace(SMALL, weights=str(path)))
    assert np.array_equal(make_batch_featurizer(model)(pixels(3)), small_features)


def test_mismatched_weights_file_is_refused(tmp_path):
    other_variant = keras.applications.MobileNetV3Small(
        input_shape=(224, 224, 3), include_top=False, weights=None, alpha=0.75, pooling="avg"
    )
    tiny = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    for name, model in (("alpha075.weights.h5", other_variant), ("dense.weights.h5", tiny)):
        path = tmp_path / name
        model.save_weights(str(path))
        with pytest.raises(EncoderWeightsError) as caught:
            build_encoder(dataclasses.replace(SMALL, weights=str(path)))
        message = str(caught.value)
        assert str(path) in message and "does not fit backbone mobilenetv3small" in message


def test_missing_weights_file(tmp_path):
    missing = str(tmp_path / "nothing.weights.h5")
    with pytest.raises(EncoderWeightsError, match="not found") as caught:
        build_encoder(dataclasses.replace(SMALL, weights=missing))
    assert missing in str(caught.value) and '"none"' in str(caught.value)


def test_efficientnet_imagenet_file_gets_the_keras_rescaling(tmp_path, monkeypatch):
    """Keras' EfficientNet file loaded by path must equal weights="imagenet" (extra input rescaling)."""
    legacy = pytest.importorskip("keras.src.legacy.saving.legacy_h5_format")
    h5py = pytest.importorskip("h5py")
    from keras.src.utils import file_utils

    config = EncoderConfig(backbone="efficientnetb0", weights="none", seed=3)
    source = build_encoder(config)
    normalization = next(layer for layer in source.layers if isinstance(layer, keras.layers.Normalization))
    normalization.adapt_mean.assign([0.485, 0.456, 0.406])  # what Keras' ImageNet file holds
    normalization.adapt_variance.assign([0.229**2, 0.224**2, 0.225**2])
    normalization.finalize_state()
    path = tmp_path / "efficientnetb0_notop.h5"
    with h5py.File(path, "w") as handle:
        legacy.save_weights_to_hdf5_group(handle, source)

    monkeypatch.setattr(file_utils, "get_file", lambda *args, **kwargs: str(path))  # the "download"
    batch = pixels(2)
    imagenet = make_batch_featurizer(build_encoder(dataclasses.replace(config, weights="imagenet")))(batch)
    from_file = dataclasses.replace(config, weights=str(path))
    unfolded = make_batch_featurizer(build_encoder(from_file))(batch)
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    spec = dataclasses.replace(BACKBONES["efficientnetb0"], imagenet_file_md5=md5)
    monkeypatch.setattr(encoder_spec, "BACKBONES", {**BACKBONES, "efficientnetb0": spec})
    folded = make_batch_featurizer(build_encoder(from_file))(batch)
    np.testing.assert_allclose(folded, imagenet, rtol=1e-4, atol=1e-5)
    assert not np.allclose(unfolded, imagenet, rtol=1e-3, atol=1e-4)


# --- ImageNet download -------------------------------------------------------------------


def test_imagenet_download_failure_names_the_alternatives(monkeypatch):
    from keras.src.utils import file_utils

    def offline(fname, origin=None, **kwargs):
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -2] Name or service not known")

    monkeypatch.setattr(file_utils, "get_file", offline)
    config = dataclasses.replace(SMALL, weights="imagenet")
    with pytest.raises(EncoderWeightsError) as caught:
        build_encoder(config)
    message = str(caught.value)
    assert "URL fetch failure" in message and "s3://" in message and 'weights="none"' in message
    assert encoder_identity(config)["weights"] == f"imagenet:keras-{keras.__version__}"


# --- registry and config -----------------------------------------------------------------


def test_unknown_backbone_lists_the_valid_names():
    with pytest.raises(ValueError) as caught:
        backbone_spec("vgg16")
    for name in BACKBONES:
        assert name in str(caught.value)
    with pytest.raises(ValueError, match="unknown backbone"):
        EncoderConfig(backbone="vgg16")
    assert EncoderConfig(backbone="ResNet50").backbone == "resnet50"


def test_config_validation_and_round_trip():
    config = EncoderConfig(backbone="inceptionv3", weights="s3://bucket/w.h5", pooling="max", batch_size=8, seed=5)
    assert from_dict(EncoderConfig, to_dict(config)) == config
    for bad in [{"pooling": "none"}, {"batch_size": 0}, {"weights": "model.pt"}, {"weights": ""}, {"seed": -1}]:
        with pytest.raises(ValueError):
            EncoderConfig(**bad)
    with pytest.raises(ValueError, match="unknown EncoderConfig settings"):
        from_dict(EncoderConfig, {"layers": 3})


def test_identity_for_random_weights():
    assert encoder_identity(SMALL) == {
        "backbone": "mobilenetv3small",
        "input_size": [224, 224],
        "feature_dim": 576,
        "pooling": "avg",
        "preprocessing": "none",
        "weights": "random:seed=0",
    }


@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_backbone_builds_with_the_declared_sizes(name):
    """The spatial build checks the declared grid and channels (the pooled vector is its pooled grid)."""
    spec = backbone_spec(name)
    spatial = EncoderConfig(backbone=name, weights="none", spatial=True)
    model = build_encoder(spatial)
    assert model.input_shape == (None, *spec.input_shape)
    assert spatial.feature_shape == (*spec.grid, spec.feature_dim)
    assert model.output_shape == (None, spatial.feature_dim)
    features = make_batch_featurizer(model)(pixels(1, spec.input_shape))
    assert features.shape == (1, spatial.feature_dim) and np.isfinite(features).all()
    assert encoder_identity(spatial)["feature_shape"] == [*spec.grid, spec.feature_dim]


def test_spatial_grid_pools_to_the_pooled_vector_and_projects_with_the_fixed_matrix():
    from captioning.model.encoder_spec import projection_matrix

    batch = pixels(3, SMALL.spec.input_shape)
    pooled = make_batch_featurizer(build_encoder(dataclasses.replace(SMALL, pooling="max")))(batch)  # (3, 576)
    grid = make_batch_featurizer(build_encoder(dataclasses.replace(SMALL, spatial=True)))(batch).reshape(3, 7, 7, 576)
    np.testing.assert_allclose(grid.max(axis=(1, 2)), pooled, rtol=1e-5, atol=1e-5)  # the same feature map, cell by cell
    projected_config = dataclasses.replace(SMALL, spatial=True, channels=32, seed=5)
    projected = make_batch_featurizer(build_encoder(projected_config))(batch)
    assert projected.shape == (3, 7 * 7 * 32)
    np.testing.assert_allclose(projected.reshape(3, 7, 7, 32), grid @ projection_matrix(5, 576, 32), rtol=1e-4, atol=1e-4)
    assert encoder_identity(projected_config)["projection"] == "random:seed=5"
    assert "projection" not in encoder_identity(dataclasses.replace(SMALL, spatial=True))


@pytest.mark.parametrize(
    "name, module",
    [
        ("resnet50", "resnet50"),
        ("inceptionv3", "inception_v3"),
        ("efficientnetb0", "efficientnet"),
        ("mobilenetv3small", "mobilenet_v3"),
    ],
)
def test_preprocess_matches_keras(name, module):
    batch = pixels(2, (8, 8, 3)).astype(np.float32)
    expected = getattr(keras.applications, module).preprocess_input(batch.copy())
    actual = keras.ops.convert_to_numpy(preprocess(backbone_spec(name), batch))
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-4)


# --- TensorFlow setup --------------------------------------------------------------------


def test_configure_tensorflow_and_mixed_precision_build():
    gpus = configure_tensorflow(mixed_precision=True)
    assert gpus == [gpu.name for gpu in tf.config.list_physical_devices("GPU")]
    assert keras.config.dtype_policy().name == "mixed_float16"
    configure_tensorflow(mixed_precision=False)
    assert keras.config.dtype_policy().name == "float32"

    model = build_encoder(dataclasses.replace(SMALL, mixed_precision=True))
    assert keras.config.dtype_policy().name == "float32"  # the build does not leak its policy
    assert any(layer.compute_dtype == "float16" for layer in model.layers)
    features = make_batch_featurizer(model)(pixels(2))
    assert features.shape == (2, 576) and features.dtype == np.float32


def test_importing_the_module_does_not_start_tensorflow():
    code = "import sys, captioning.model.encoder; assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
