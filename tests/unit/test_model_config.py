"""Decoder configurations, the model directory's config.json across formats, and feature identities."""
from __future__ import annotations

import json

import numpy as np
import pytest

from captioning.data.vocab import build_vocabulary
from captioning.model.decoder import Architecture, DecoderConfig, channel_statistics
from captioning.model.encoder_spec import EncoderConfig, encoder_identity, projection_matrix
from captioning.model.model_dir import FORMAT, ModelDir, ModelDirError, read_info, write_config, write_vocabulary
from captioning.store.feature_store import FeatureStoreMismatch, Manifest, check_identity

VOCAB = build_vocabulary([["red", "circle"], ["blue", "square"]] * 10, min_count=1)


def test_each_decoder_takes_its_kind_of_features():
    grid = DecoderConfig(vocab_size=9, max_length=8, feature_dim=7 * 7 * 16, feature_shape=(7, 7, 16), architecture=Architecture(decoder="attention"))
    assert grid.input_shape == (7, 7, 16)
    assert DecoderConfig(vocab_size=9, max_length=8, feature_dim=2048).input_shape == (2048,)
    with pytest.raises(ValueError, match="extract-features --spatial"):
        DecoderConfig(vocab_size=9, max_length=8, feature_dim=2048, architecture=Architecture(decoder="attention"))
    with pytest.raises(ValueError, match="merge decoder takes pooled vectors, not a 7x7x16 grid"):
        DecoderConfig(vocab_size=9, max_length=8, feature_dim=784, feature_shape=(7, 7, 16))
    with pytest.raises(ValueError, match="does not hold"):
        DecoderConfig(vocab_size=9, max_length=8, feature_dim=100, feature_shape=(7, 7, 16), architecture=Architecture(decoder="attention"))
    with pytest.raises(ValueError, match="decoder must be one of"):
        Architecture(decoder="transformer")


def _model_dir(tmp_path, data: dict) -> str:
    uri = str(tmp_path / "model")
    write_vocabulary(uri, VOCAB)
    with open(ModelDir(uri).config, "w") as handle:
        json.dump(data, handle)
    return uri


def test_config_json_of_every_format_is_read(tmp_path):
    sizes = {"embedding_dim": 8, "units": 16, "hidden_units": 20, "dropout": 0.5, "train_embeddings": True, "normalize_features": True}
    v1 = _model_dir(tmp_path / "v1", {"format": "captioning.model/1", "decoder": {"vocab_size": VOCAB.size, "max_length": 9, "feature_dim": 2048, **sizes}, "features": {}})
    v2 = _model_dir(tmp_path / "v2", {"format": "captioning.model/2", "decoder": {"vocab_size": VOCAB.size, "max_length": 9, "feature_dim": 2048, "architecture": sizes}, "features": {}})
    for uri in (v1, v2):
        info = read_info(uri)
        assert info.decoder.architecture == Architecture(**sizes)  # a merge decoder
        assert info.decoder_kind == "merge" and info.decoder.input_shape == (2048,)
    decoder = DecoderConfig(vocab_size=VOCAB.size, max_length=9, feature_dim=7 * 7 * 32, feature_shape=(7, 7, 32), architecture=Architecture(decoder="attention", attention_units=64))
    uri = str(tmp_path / "v3")
    write_vocabulary(uri, VOCAB)
    write_config(uri, decoder, {"backbone": "resnet50"}, {"model_id": "m"})
    with open(ModelDir(uri).config) as handle:
        assert json.load(handle)["format"] == FORMAT == "captioning.model/3"
    assert read_info(uri).decoder == decoder
    future = _model_dir(tmp_path / "v9", {"format": "captioning.model/9", "decoder": {}, "features": {}})
    with pytest.raises(ModelDirError, match="captioning.model/9"):
        read_info(future)


def test_a_model_refuses_features_of_another_shape_naming_what_it_takes(tmp_path):
    decoder = DecoderConfig(vocab_size=VOCAB.size, max_length=9, feature_dim=7 * 7 * 32, feature_shape=(7, 7, 32), architecture=Architecture(decoder="attention"))
    uri = str(tmp_path / "m")
    write_vocabulary(uri, VOCAB)
    spatial = encoder_identity(EncoderConfig(weights="none", spatial=True, channels=32))
    write_config(uri, decoder, spatial, {"model_id": "m"})
    info = read_info(uri)
    info.check_feature_array("batch", np.zeros((4, 7 * 7 * 32)))
    with pytest.raises(ModelDirError, match=r"batch: features of shape \(2048,\) given, but the attention decoder of .* takes a 7x7x32 spatial grid"):
        info.check_feature_array("batch", np.zeros((4, 2048)))
    pooled = encoder_identity(EncoderConfig(weights="none"))
    with pytest.raises(FeatureStoreMismatch, match=r"feature_shape: \[\] here, \[7, 7, 32\] expected.*--spatial --channels 32\)"):
        info.check_features("store", pooled)


def test_spatial_identity_extends_the_pooled_one():
    pooled = encoder_identity(EncoderConfig(weights="none", pooling="max"))
    assert set(pooled) == {"backbone", "input_size", "feature_dim", "pooling", "preprocessing", "weights"}  # as before: old stores still match
    grid = encoder_identity(EncoderConfig(weights="none", spatial=True, channels=256))
    assert grid["feature_shape"] == [7, 7, 256] and grid["feature_dim"] == 12544 and grid["pooling"] == "none"
    with pytest.raises(FeatureStoreMismatch, match="projection"):
        check_identity("s", grid, {**grid, "projection": "random:seed=1"}, "redo")
    manifest = Manifest(encoder=grid, dtype="float16", parts=())
    assert manifest.feature_shape == (7, 7, 256) and manifest.vector_bytes == 12544 * 2
    assert Manifest(encoder=pooled, dtype="float16", parts=()).feature_shape == (2048,)
    with pytest.raises(ValueError, match="spatial"):
        EncoderConfig(weights="none", channels=64)
    with pytest.raises(ValueError, match="at most 2048"):
        EncoderConfig(weights="none", spatial=True, channels=4096)


def test_projection_matrix_is_fixed_by_its_seed_and_keeps_lengths():
    a, b = projection_matrix(3, 512, 64), projection_matrix(3, 512, 64)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, projection_matrix(4, 512, 64))
    x = np.random.default_rng(0).normal(size=(200, 512))
    ratio = np.linalg.norm(x @ a, axis=1) / np.linalg.norm(x, axis=1)
    assert 0.7 < ratio.mean() < 1.3


def test_channel_statistics_pool_cells_as_one_sample():
    rng = np.random.default_rng(1)
    grids = rng.normal(size=(30, 6, 4)) * [1, 2, 3, 4] + [0, 5, 10, 15]  # (images, cells, channels)
    flat = grids.reshape(30, 24)
    mean, variance = channel_statistics(flat.mean(axis=0), flat.var(axis=0), 4)
    np.testing.assert_allclose(mean, grids.reshape(-1, 4).mean(axis=0))
    np.testing.assert_allclose(variance, grids.reshape(-1, 4).var(axis=0))
