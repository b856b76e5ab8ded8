"""The model directory: one self-describing artifact a trained decoder lives in.

    <model>/config.json        format, decoder sizes, vocabulary size, max length, and the
                               identity of the features it was trained on; written last
    <model>/model.weights.h5   Keras-native weights (the best epoch on dev loss)
    <model>/vocab.json         the vocabulary and cleaning rules
    <model>/history.json       per-epoch loss/accuracy, dev loss, timing
    <model>/loss.png           the loss curves

Loading rebuilds the network from config.json and loads the weights, so inference runs
exactly the trained architecture. No pickle anywhere.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from typing import Any, Mapping

from captioning.store import storage
from captioning.model.decoder import DecoderConfig
from captioning.store.feature_store import check_identity
from captioning.data.vocab import Vocabulary

FORMAT = "captioning.model/1"
CONFIG = "config.json"
WEIGHTS = "model.weights.h5"
VOCAB = "vocab.json"


class ModelDirError(ValueError):
    pass


@dataclass(frozen=True)
class ModelInfo:
    uri: str
    decoder: DecoderConfig
    features: Mapping[str, Any]  # the feature store's encoder identity + dtype
    vocabulary: Vocabulary
    training: Mapping[str, Any]

    @property
    def identity(self) -> str:
        """Short stable name of this model version (for output rows and recaptioning)."""
        return str(self.training.get("model_id", ""))

    def check_features(self, source: str, encoder_identity: Mapping[str, Any]) -> None:
        check_identity(source, self.features, encoder_identity, f"extract features with the model's backbone ({self.features.get('backbone')}, weights {self.features.get('weights')}) or use a model trained on these")


def write_config(uri: str, decoder: DecoderConfig, features: Mapping[str, Any], training: Mapping[str, Any]) -> None:
    data = {"format": FORMAT, "decoder": decoder.to_dict(), "features": dict(features), "training": dict(training)}
    storage.write_text(storage.join(uri, CONFIG), json.dumps(data, indent=1))


def read_info(uri: str) -> ModelInfo:
    config_uri = storage.join(uri, CONFIG)
    if not storage.exists(config_uri):
        raise ModelDirError(f"{uri}: not a model directory ({CONFIG} missing; an interrupted training leaves none); run train-decoder first")
    try:
        data = json.loads(storage.read_text(config_uri))
    except json.JSONDecodeError as error:
        raise ModelDirError(f"{config_uri}: not JSON ({error})") from error
    if data.get("format") != FORMAT:
        raise ModelDirError(f"{config_uri}: format {data.get('format')!r}, expected {FORMAT!r}")
    vocab_uri = storage.join(uri, VOCAB)
    vocabulary = Vocabulary.from_json(storage.read_text(vocab_uri), source=vocab_uri)
    decoder = DecoderConfig.from_dict(data["decoder"])
    if vocabulary.size != decoder.vocab_size:
        raise ModelDirError(f"{uri}: vocab.json has {vocabulary.size} words but the model was built for {decoder.vocab_size}")
    return ModelInfo(uri=uri, decoder=decoder, features=data["features"], vocabulary=vocabulary, training=data.get("training", {}))


def save_weights(model, uri: str) -> None:
    """Keras-native weights file at ``uri`` (local or S3; S3 via a local temporary file)."""
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "model.weights.h5")
        model.save_weights(local)
        with open(local, "rb") as handle:
            storage.write_bytes(uri, handle.read())


def load_weights(model, uri: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "model.weights.h5")
        with open(local, "wb") as handle:
            handle.write(storage.read_bytes(uri))
        try:
            model.load_weights(local)
        except ValueError as error:
            raise ModelDirError(f"{uri}: weights do not fit the network in config.json ({error})") from error


def load_model(info: ModelInfo):
    """The trained Keras training model, rebuilt from config and loaded with its weights."""
    from captioning.model.decoder import build_training_model

    model = build_training_model(info.decoder)
    load_weights(model, storage.join(info.uri, WEIGHTS))
    return model
