"""The model directory: the one self-describing artifact a trained decoder lives in.

This module is the only one that knows its file names::

    <model>/config.json            format, decoder (which one, data sizes, feature shape,
                                   architecture), identity of the features it was trained on,
                                   training summary; written last
    <model>/model.weights.h5       Keras-native weights (the best epoch on dev loss)
    <model>/vocab.json             the vocabulary and cleaning rules
    <model>/history.json           per-epoch loss/accuracy, dev loss, timing
    <model>/loss.png               the loss curves
    <model>/checkpoints/           what lets a killed training run resume:
        epoch-NNNN.keras           the whole model after epoch NNNN, optimizer state included
        best.weights.h5            weights of the epoch with the lowest dev loss so far
        state.json                 last finished epoch, its checkpoint, early-stopping state
    <model>/data/train/, dev/      the training views (Parquet) Petastorm streams
    <model>/data/views.json        what the views were built from, their sizes, feature statistics

Loading rebuilds the network from config.json and loads the weights, so inference runs
exactly the trained architecture. Keras' own formats and JSON; no pickle anywhere.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from typing import Any, Mapping

from captioning.data.vocab import Vocabulary
from captioning.errors import UserError
from captioning.model.decoder import Architecture, DecoderConfig
from captioning.serialization import from_dict, to_dict
from captioning.store import storage
from captioning.store.feature_store import check_identity

FORMAT = "captioning.model/3"  # the decoder's kind (merge, attention) and the features' shape
_FORMAT_V2 = "captioning.model/2"  # merge decoders only: no architecture.decoder, no feature_shape (their defaults)
_FORMAT_V1 = "captioning.model/1"  # the decoder's sizes flat beside vocab_size, max_length, feature_dim
_READABLE = (FORMAT, _FORMAT_V2, _FORMAT_V1)


class ModelDirError(UserError, ValueError):
    pass


@dataclass(frozen=True)
class ModelDir:
    """The URIs of one model directory's parts."""

    uri: str

    def _at(self, *parts: str) -> str:
        return storage.join(self.uri, *parts)

    @property
    def config(self) -> str:
        return self._at("config.json")

    @property
    def weights(self) -> str:
        return self._at("model.weights.h5")

    @property
    def vocab(self) -> str:
        return self._at("vocab.json")

    @property
    def history(self) -> str:
        return self._at("history.json")

    @property
    def loss_plot(self) -> str:
        return self._at("loss.png")

    @property
    def checkpoints(self) -> str:
        return self._at("checkpoints")

    @property
    def state(self) -> str:
        return self._at("checkpoints", "state.json")

    @property
    def best_weights(self) -> str:
        return self._at("checkpoints", "best.weights.h5")

    def checkpoint(self, name: str) -> str:
        return self._at("checkpoints", name)

    @staticmethod
    def epoch_checkpoint_name(epoch: int) -> str:
        return f"epoch-{epoch:04d}.keras"

    @property
    def views(self) -> str:
        return self._at("data", "views.json")

    def view(self, split: str) -> str:
        return self._at("data", split)


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

    @property
    def decoder_kind(self) -> str:
        return self.decoder.architecture.decoder

    def describe_input(self) -> str:
        """What the model takes per image, for messages: e.g. "a 7x7x256 spatial grid"."""
        shape = self.decoder.input_shape
        return f"a {'x'.join(map(str, shape))} spatial grid" if len(shape) > 1 else f"a pooled vector of {shape[0]} values"

    def check_features(self, source: str, encoder_identity: Mapping[str, Any]) -> None:
        shape = self.decoder.input_shape
        grid = f", --spatial{f' --channels {shape[2]}' if self.features.get('projection') else ''}" if len(shape) > 1 else ""
        check_identity(
            source, self.features, encoder_identity,
            f"the {self.decoder_kind} decoder of {self.uri} takes {self.describe_input()}: extract features with the model's backbone "
            f"({self.features.get('backbone')}, weights {self.features.get('weights')}{grid}) or use a model trained on these",
        )

    def check_feature_array(self, source: str, features) -> None:
        """Refuse an array of image features (B, D) the model was not built for."""
        shape = tuple(getattr(features, "shape", ()))
        if len(shape) != 2 or shape[1] != self.decoder.feature_dim:
            raise ModelDirError(
                f"{source}: features of shape {shape[1:] if len(shape) == 2 else shape} given, but the {self.decoder_kind} decoder of {self.uri} "
                f"takes {self.describe_input()} ({self.decoder.feature_dim} values) per image; use features extracted as the model's were"
            )


def write_config(uri: str, decoder: DecoderConfig, features: Mapping[str, Any], training: Mapping[str, Any]) -> None:
    """config.json, written last: its presence means the directory is a complete model."""
    data = {"format": FORMAT, "decoder": to_dict(decoder), "features": dict(features), "training": dict(training)}
    storage.write_text(ModelDir(uri).config, json.dumps(data, indent=1))


def write_vocabulary(uri: str, vocabulary: Vocabulary) -> None:
    storage.write_text(ModelDir(uri).vocab, vocabulary.to_json())


def read_vocabulary(uri: str) -> Vocabulary:
    source = ModelDir(uri).vocab
    return Vocabulary.from_json(storage.read_text(source), source=source)


def _decoder_settings(data: Mapping[str, Any], source: str) -> Mapping[str, Any]:
    """The "decoder" object of config.json, in the current form (format 1 kept sizes flat)."""
    decoder = dict(data["decoder"])
    if data.get("format") == _FORMAT_V1:
        sizes = {name: decoder.pop(name) for name in Architecture.__dataclass_fields__ if name in decoder}
        decoder["architecture"] = sizes
    return decoder


def read_info(uri: str) -> ModelInfo:
    place = ModelDir(uri)
    if not storage.exists(place.config):
        raise ModelDirError(f"{uri}: not a model directory (config.json missing; an interrupted training leaves none); run train-decoder first")
    try:
        data = json.loads(storage.read_text(place.config))
    except json.JSONDecodeError as error:
        raise ModelDirError(f"{place.config}: not JSON ({error})") from error
    if data.get("format") not in _READABLE:
        raise ModelDirError(f"{place.config}: format {data.get('format')!r}, expected one of {list(_READABLE)} (a newer version of this project wrote it?)")
    vocabulary = read_vocabulary(uri)
    decoder = from_dict(DecoderConfig, _decoder_settings(data, place.config), f"{place.config}: decoder")
    if vocabulary.size != decoder.vocab_size:
        raise ModelDirError(f"{uri}: vocab.json has {vocabulary.size} words but the model was built for {decoder.vocab_size}")
    return ModelInfo(uri=uri, decoder=decoder, features=data["features"], vocabulary=vocabulary, training=data.get("training", {}))


def save_keras(model, uri: str, upload: bool = True) -> None:
    """Save a whole model (``uri`` ending in ``.keras``) or its weights (``.weights.h5``) to ``uri``.

    Keras writes local files only, so the save goes through a temporary folder. With
    ``upload=False`` the save happens there and nothing is written to ``uri``: data-parallel
    workers other than the chief must still take part in a save (it may read distributed
    variables collectively), but only the chief's copy is kept.
    """
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, os.path.basename(uri))
        if local.endswith(".keras"):
            model.save(local)
        else:
            model.save_weights(local)
        if upload:
            with open(local, "rb") as handle:
                storage.write_bytes(uri, handle.read())


def load_keras_model(uri: str):
    """A whole model saved by :func:`save_keras` (compiled, optimizer state included)."""
    import keras

    import captioning.model.attention  # noqa: F401 - registers the attention decoder's layers with Keras
    import captioning.model.packing  # noqa: F401 - registers the merge decoder's packed layers with Keras

    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, os.path.basename(uri))
        with open(local, "wb") as handle:
            handle.write(storage.read_bytes(uri))
        return keras.models.load_model(local)


def load_weights(model, uri: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "model.weights.h5")
        with open(local, "wb") as handle:
            handle.write(storage.read_bytes(uri))
        try:
            model.load_weights(local)
        except ValueError as error:
            raise ModelDirError(f"{uri}: weights do not fit the network in config.json ({error})") from error


def publish_best_weights(uri: str) -> None:
    """Copy the best checkpoint to the model's weights; a finished rerun leaves them untouched."""
    place = ModelDir(uri)
    best = storage.read_bytes(place.best_weights)
    if storage.exists(place.weights) and storage.read_bytes(place.weights) == best:
        return
    storage.write_bytes(place.weights, best)


def load_model(info: ModelInfo):
    """The trained Keras training model, rebuilt from config and loaded with its weights."""
    from captioning.model.decoder import build_model

    model = build_model(info.decoder)
    load_weights(model, ModelDir(info.uri).weights)
    return model
