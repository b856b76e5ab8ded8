"""The compiled TensorFlow search gives the numpy reference search's captions.

Both run the same small LSTM decoder with fixed random weights: once written with
TensorFlow ops (what the compiled search calls) and once in numpy (what the reference
search calls). The image features set the LSTM's initial state, as in im2txt.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from captioning.model.search.config import SearchConfig  # noqa: E402
from captioning.model.search.reference import ranked_search, search  # noqa: E402
from captioning.model.search.compiled import make_search_fn, run_ranked_search, run_search  # noqa: E402

END = 3
FEATURES, HIDDEN, VOCAB = 6, 8, 12


@dataclass(frozen=True)
class LstmWeights:
    init_h: np.ndarray  # [D, H]
    init_c: np.ndarray  # [D, H]
    embedding: np.ndarray  # [V, E]
    kernel: np.ndarray  # [E + H, 4H] gates i, f, g, o
    bias: np.ndarray  # [4H]
    output: np.ndarray  # [H, V]
    output_bias: np.ndarray  # [V]


def lstm_weights(seed: int, end_bias: float) -> LstmWeights:
    rng = np.random.default_rng(seed)
    embed = 5

    def normal(*shape, scale=1.0):
        return rng.normal(0.0, scale, size=shape)

    output_bias = normal(VOCAB, scale=0.5)
    output_bias[END] += end_bias
    return LstmWeights(
        init_h=normal(FEATURES, HIDDEN, scale=0.7),
        init_c=normal(FEATURES, HIDDEN, scale=0.7),
        embedding=normal(VOCAB, embed),
        kernel=normal(embed + HIDDEN, 4 * HIDDEN, scale=0.6),
        bias=normal(4 * HIDDEN, scale=0.1),
        output=normal(HIDDEN, VOCAB, scale=1.5),
        output_bias=output_bias,
    )


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


class NumpyLstm:
    """The reference decoder for :func:`captioning.model.search.reference.search`."""

    def __init__(self, w: LstmWeights):
        self.w = w

    def initial_state(self, features):
        features = np.asarray(features, dtype=np.float64)  # [B, D]
        return np.tanh(features @ self.w.init_h), np.tanh(features @ self.w.init_c)  # [B, H], [B, H]

    def step(self, word_ids, state):
        h, c = state  # [N, H], [N, H]
        z = np.concatenate([self.w.embedding[word_ids], h], axis=1) @ self.w.kernel + self.w.bias  # [N, 4H]
        i, f, g, o = np.split(z, 4, axis=1)  # each [N, H]
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)  # [N, H]
        h = sigmoid(o) * np.tanh(c)  # [N, H]
        logits = h @ self.w.output + self.w.output_bias  # [N, V]
        logits = logits - logits.max(axis=1, keepdims=True)  # [N, V]
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True)), (h, c)  # [N, V]


def tf_lstm(w: LstmWeights):
    """The same decoder as (initial_state_fn, step_fn) in TensorFlow, float32."""
    const = {name: tf.constant(value, tf.float32) for name, value in vars(w).items()}

    def initial_state_fn(features):  # [B, D]
        return tf.tanh(features @ const["init_h"]), tf.tanh(features @ const["init_c"])  # [B, H], [B, H]

    def step_fn(word_ids, state):
        h, c = state  # [N, H], [N, H]
        x = tf.gather(const["embedding"], word_ids)  # [N, E]
        z = tf.concat([x, h], axis=1) @ const["kernel"] + const["bias"]  # [N, 4H]
        i, f, g, o = tf.split(z, 4, axis=1)  # each [N, H]
        c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)  # [N, H]
        h = tf.sigmoid(o) * tf.tanh(c)  # [N, H]
        return tf.nn.log_softmax(h @ const["output"] + const["output_bias"]), (h, c)  # [N, V]

    return initial_state_fn, step_fn


SPEC = tf.TensorSpec([None, FEATURES], tf.float32)


def images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, FEATURES)).astype(np.float32)  # [B, D]


def assert_same_results(got, expected):
    assert [r.token_ids for r in got] == [r.token_ids for r in expected]
    assert [r.ended for r in got] == [r.ended for r in expected]
    np.testing.assert_allclose([r.log_prob for r in got], [r.log_prob for r in expected], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose([r.score for r in got], [r.score for r in expected], rtol=1e-4, atol=1e-4)


CONFIGS = [
    SearchConfig(method="greedy", max_length=10),
    SearchConfig(method="beam", beam_width=3, length_alpha=0.7, max_length=10),
    SearchConfig(method="beam", beam_width=4, length_alpha=0.0, max_length=10),
]


@pytest.mark.parametrize("config", CONFIGS, ids=["greedy", "beam3", "beam4-plain"])
@pytest.mark.parametrize("end_bias", [1.0, -40.0], ids=["ends", "never-ends"])
def test_tf_search_equals_numpy_reference(config, end_bias):
    weights = lstm_weights(seed=7, end_bias=end_bias)
    initial_state_fn, step_fn = tf_lstm(weights)
    search_fn = make_search_fn(step_fn, initial_state_fn, SPEC, config)
    features = images(16)
    got = run_search(search_fn, tf.constant(features))
    expected = search(NumpyLstm(weights), features, config)
    assert_same_results(got, expected)
    ended = [r.ended for r in expected]
    if end_bias > 0:
        assert any(ended) and len({len(r.token_ids) for r in expected}) > 1
    else:
        assert not any(ended) and {len(r.token_ids) for r in expected} == {config.max_length}


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_traced_once_for_any_batch_size(method):
    weights = lstm_weights(seed=3, end_bias=1.0)
    initial_state_fn, step_fn = tf_lstm(weights)
    config = SearchConfig(method=method, beam_width=3, max_length=8)
    search_fn = make_search_fn(step_fn, initial_state_fn, SPEC, config)
    reference = NumpyLstm(weights)
    for count in (5, 2, 0):
        features = images(count, seed=count)
        assert_same_results(run_search(search_fn, tf.constant(features)), search(reference, features, config))
    assert search_fn.experimental_get_tracing_count() == 1


RANKED_CONFIGS = [
    SearchConfig(method="beam", beam_width=3, length_alpha=0.7, max_length=10, results=3),
    SearchConfig(method="beam", beam_width=5, length_alpha=0.0, max_length=10, results=2),
]


@pytest.mark.parametrize("config", RANKED_CONFIGS, ids=["3-of-3", "2-of-5-plain"])
@pytest.mark.parametrize("end_bias", [1.0, -40.0], ids=["ends", "never-ends"])
def test_tf_n_best_equals_numpy_reference(config, end_bias):
    weights = lstm_weights(seed=11, end_bias=end_bias)
    initial_state_fn, step_fn = tf_lstm(weights)
    search_fn = make_search_fn(step_fn, initial_state_fn, SPEC, config)
    features = images(12, seed=4)
    outputs = search_fn(tf.constant(features))
    assert tuple(outputs["token_ids"].shape) == (12, config.results, config.max_length)
    got = run_ranked_search(search_fn, tf.constant(features))
    expected = ranked_search(NumpyLstm(weights), features, config)
    assert [len(r) for r in got] == [len(r) for r in expected] == [config.results] * 12
    for mine, theirs in zip(got, expected):
        assert_same_results(mine, theirs)
    # the first of the N best is the caption of the same search asked for one result
    single = make_search_fn(step_fn, initial_state_fn, SPEC, SearchConfig(beam_width=config.beam_width, length_alpha=config.length_alpha, max_length=10))
    assert_same_results([r[0] for r in got], run_search(single, tf.constant(features)))


def test_one_result_keeps_the_flat_outputs():
    initial_state_fn, step_fn = tf_lstm(lstm_weights(seed=1, end_bias=1.0))
    config = SearchConfig(beam_width=3, max_length=6)
    outputs = make_search_fn(step_fn, initial_state_fn, SPEC, config)(tf.constant(images(4)))
    assert tuple(outputs["token_ids"].shape) == (4, 6) and tuple(outputs["scores"].shape) == (4,)


def test_feature_spec_needs_a_free_batch_dimension():
    initial_state_fn, step_fn = tf_lstm(lstm_weights(seed=0, end_bias=0.0))
    with pytest.raises(ValueError, match="None batch dimension"):
        make_search_fn(step_fn, initial_state_fn, tf.TensorSpec([4, FEATURES], tf.float32), SearchConfig(max_length=8))


def repeats(tokens, n: int) -> bool:
    grams = [tuple(tokens[k : k + n]) for k in range(len(tokens) - n + 1)]
    return len(grams) != len(set(grams))


@pytest.mark.parametrize("method,width", [("greedy", 1), ("beam", 3)])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_repeat_blocking_equals_the_reference(method, width, n):
    """A decoder that loops when free to: the compiled search blocks the same words as the reference."""
    weights = lstm_weights(seed=7, end_bias=-40.0)  # never ends: 14 words, so words must repeat somewhere
    initial_state_fn, step_fn = tf_lstm(weights)
    features = images(24, seed=5)
    blocked = SearchConfig(method=method, beam_width=width, max_length=14, no_repeat_ngram=n)
    free = SearchConfig(method=method, beam_width=width, max_length=14, no_repeat_ngram=0)
    got = run_search(make_search_fn(step_fn, initial_state_fn, SPEC, blocked), tf.constant(features))
    expected = search(NumpyLstm(weights), features, blocked)
    assert_same_results(got, expected)
    unblocked = search(NumpyLstm(weights), features, free)
    assert sum(repeats(r.token_ids, n) for r in unblocked) >= 6  # blocking has work to do
    assert not any(repeats(r.token_ids, n) for r in got)
    assert all(len(r.token_ids) == 14 for r in got) or n == 1  # with 12 words, a 14-word caption must repeat a word
