"""Caption feature vectors with a trained model directory, batched and compiled.

The model is rebuilt from its directory once; the search (greedy or beam) is traced once
per process into a TensorFlow function of a (B, D) batch, so captioning a batch is a
single call whatever its size.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from captioning.errors import InputError
from captioning.model.encoder_spec import EncoderConfig, encoder_identity
from captioning.model.model_dir import ModelInfo, load_model
from captioning.model.search.config import SearchConfig
from captioning.store.feature_store import check_identity


@dataclass(frozen=True)
class Caption:
    text: str
    words: tuple[str, ...]
    score: float  # length-normalised log-probability (higher is more confident)
    log_prob: float
    ended: bool  # False when the caption was cut at the maximum length


def encoder_for(info: ModelInfo, backbone_weights: str | None = None, batch_size: int = 32, mixed_precision: bool = False) -> EncoderConfig:
    """The CNN the model's training features came from, checked against its recorded identity.

    ImageNet and seeded random weights are rebuilt from the record alone; features from a
    weights file need that file (``backbone_weights``), whose digest must match. A spatial
    grid (the attention decoder's input) is rebuilt with its projection, if it had one.
    """
    features = info.features
    weights_id = str(features["weights"])
    if backbone_weights:
        weights, seed = backbone_weights, 0
    elif weights_id.startswith("imagenet"):
        weights, seed = "imagenet", 0
    elif weights_id.startswith("random:seed="):
        weights, seed = "none", int(weights_id.split("=", 1)[1])
    else:
        raise InputError(f"{info.uri}: the model was trained on features from a weights file ({weights_id}); pass that file with --backbone-weights")
    shape = features.get("feature_shape")
    spatial = bool(shape) and len(shape) == 3
    projection = features.get("projection")
    if projection:  # "random:seed=<seed>": the projection's seed is the extraction's seed
        seed = int(str(projection).split("=", 1)[1])
    encoder = EncoderConfig(
        backbone=features["backbone"], weights=weights, seed=seed, pooling="avg" if spatial else features.get("pooling", "avg"),
        batch_size=batch_size, mixed_precision=mixed_precision, spatial=spatial, channels=int(shape[2]) if projection else 0,
    )
    check_identity(backbone_weights or info.uri, features, encoder_identity(encoder), "pass the CNN weights the model was trained with (--backbone-weights)")
    return encoder


class Captioner:
    """Captions image vectors with a model; ``search.max_length`` 0 means the model's own maximum
    (as many words as its training captions could hold)."""

    def __init__(self, info: ModelInfo, search: SearchConfig):
        import tensorflow as tf

        from captioning.model.decoder import step_decoder
        from captioning.model.search.compiled import make_search_fn

        search = search.for_model(info.decoder.max_length - 1)
        self.info = info
        self.search = search
        self.vocabulary = info.vocabulary
        step = step_decoder(load_model(info), info.decoder)
        spec = tf.TensorSpec([None, info.decoder.feature_dim], tf.float32)
        vocab = info.vocabulary
        self._search = make_search_fn(step.step, step.initial_state, spec, search, start_id=vocab.start_id, end_id=vocab.end_id, pad_id=vocab.pad_id)

    def caption(self, features: np.ndarray, source: str = "features") -> list[Caption]:
        """One caption per row of ``features`` (B, D); features of another shape than the
        model's are refused, naming ``source``."""
        from captioning.model.search.compiled import run_search

        features = np.asarray(features, dtype=np.float32)
        if features.ndim == 2 and len(features) == 0:
            return []
        self.info.check_feature_array(source, features)
        return [self._caption(result) for result in run_search(self._search, features)]

    def caption_ranked(self, features: np.ndarray, source: str = "features") -> list[tuple[Caption, ...]]:
        """The ``search.results`` best captions of each row of ``features`` (B, D), best first;
        the first is the caption :meth:`caption` gives."""
        from captioning.model.search.compiled import run_ranked_search

        features = np.asarray(features, dtype=np.float32)
        if features.ndim == 2 and len(features) == 0:
            return []
        self.info.check_feature_array(source, features)
        ranked = run_ranked_search(self._search, features)
        return [tuple(self._caption(result) for result in results) for results in ranked]

    def _caption(self, result) -> Caption:
        words = tuple(self.vocabulary.decode(result.token_ids))
        return Caption(" ".join(words), words, result.score, result.log_prob, result.ended)
