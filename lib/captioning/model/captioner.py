"""Caption feature vectors with a trained model directory, batched and compiled.

The model is rebuilt from its directory once; the search (greedy or beam) is traced once
per process into a TensorFlow function of a (B, D) batch, so captioning a batch is a
single call whatever its size.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from captioning.model.model_dir import ModelInfo, load_model
from captioning.model.search.reference import SearchConfig


@dataclass(frozen=True)
class Caption:
    text: str
    words: tuple[str, ...]
    score: float  # length-normalised log-probability (higher is more confident)
    log_prob: float
    ended: bool  # False when the caption was cut at the maximum length


def default_search(info: ModelInfo, method: str = "beam", beam_width: int = 3, length_alpha: float = 0.7, max_length: int | None = None) -> SearchConfig:
    """Search settings; at most as many words as the training captions could hold."""
    return SearchConfig(method=method, beam_width=beam_width, length_alpha=length_alpha, max_length=max_length or info.decoder.max_length - 1)


class Captioner:
    def __init__(self, info: ModelInfo, search: SearchConfig):
        import tensorflow as tf

        from captioning.model.decoder import StepDecoder
        from captioning.model.search.compiled import make_search_fn

        self.info = info
        self.vocabulary = info.vocabulary
        step = StepDecoder(load_model(info))
        spec = tf.TensorSpec([None, info.decoder.feature_dim], tf.float32)
        vocab = info.vocabulary
        self._search = make_search_fn(step.step, step.initial_state, spec, search, start_id=vocab.start_id, end_id=vocab.end_id, pad_id=vocab.pad_id)

    def caption(self, features: np.ndarray) -> list[Caption]:
        """One caption per row of ``features`` (B, D)."""
        from captioning.model.search.compiled import run_search

        if len(features) == 0:
            return []
        results = run_search(self._search, np.asarray(features, dtype=np.float32))
        out = []
        for result in results:
            words = tuple(self.vocabulary.decode(result.token_ids))
            out.append(Caption(" ".join(words), words, result.score, result.log_prob, result.ended))
        return out
