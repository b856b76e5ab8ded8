"""Greedy and beam caption search compiled with TensorFlow, batched over many images.

Why: the numpy search in :mod:`captioning.model.search.reference` calls the decoder once per step from
Python, which is fine for tests but slow when a Spark task captions thousands of images.
Here the whole search for a batch of images (and all their beams) is one ``tf.function``
with a ``tf.while_loop``; the batch dimension of its input signature is ``None``, so each
(search config, decoder) pair is traced once and then runs on any batch size.

The decoder is seen only through two TensorFlow functions:

* ``initial_state_fn(features) -> state``: a non-empty tuple of tensors [B, ...];
* ``step_fn(word_ids int32 [N], state [N, ...]) -> (log_probs float [N, V], new_state)``.

The search rules (stopping, scoring, length penalty, tie-breaking, frozen finished beams,
repeated n-gram blocking) are exactly those documented in :mod:`captioning.model.search.reference`, which is the reference the
tests compare this module against. Beam search keeps the state flattened as [B*K, ...]
(beam k of image b at row b*K + k) and gathers it by parent beam after every step.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
import tensorflow as tf

from captioning.model.search.config import SearchConfig, SearchResult, require_max_length

State = tuple  # of tf.Tensor, each with leading dimension B (or B*K in beam search)
StepFn = Callable[[tf.Tensor, State], tuple]  # (word_ids [N], state) -> (log_probs [N, V], state)
InitialStateFn = Callable[[Any], State]  # features [B, ...] -> state


def make_search_fn(
    step_fn: StepFn,
    initial_state_fn: InitialStateFn,
    feature_spec: Any,
    config: SearchConfig,
    *,
    start_id: int = 2,
    end_id: int = 3,
    pad_id: int = 0,
) -> Any:
    """Compile the search ``config`` names into a ``tf.function`` of the image features.

    ``feature_spec`` is a ``tf.TensorSpec`` (or a nest of them) whose first dimension is
    ``None``. The returned function maps features to a dict of tensors:

    * ``token_ids`` int32 [B, max_length]: the caption's word ids, then ``pad_id``;
    * ``lengths`` int32 [B]: number of words in the caption (endseq not counted);
    * ``log_probs`` float32 [B]: sum of log-probabilities of the emitted tokens;
    * ``scores`` float32 [B]: the length-normalised score;
    * ``ended`` bool [B]: whether endseq was emitted (False: cut at max_length).

    With ``config.results`` N > 1 (beam search) every output gains an axis of N after the
    batch axis: the N best beams of each image, best first (``token_ids`` [B, N, T], the
    others [B, N]). :func:`results_from_outputs` turns the dict into the best
    :class:`SearchResult` of each image, :func:`ranked_results_from_outputs` into the N best.
    """
    require_max_length(config)
    for spec in tf.nest.flatten(feature_spec):
        if not isinstance(spec, tf.TensorSpec) or spec.shape.rank is None or spec.shape.rank < 1 or spec.shape[0] is not None:
            raise ValueError(f"feature_spec must hold tf.TensorSpec objects with a None batch dimension, got {spec!r}")
    ids = (start_id, end_id, pad_id)

    if config.method == "greedy":

        def run(features: Any) -> dict[str, tf.Tensor]:
            return _greedy(step_fn, _initial_state(initial_state_fn, features), config, *ids)

    else:

        def run(features: Any) -> dict[str, tf.Tensor]:
            return _beam(step_fn, _initial_state(initial_state_fn, features), config, *ids)

    return tf.function(run, input_signature=[feature_spec])


def results_from_outputs(outputs: Mapping[str, Any]) -> list[SearchResult]:
    """The dict a compiled search returns, as the best :class:`SearchResult` of each image."""
    return [ranked[0] for ranked in ranked_results_from_outputs(outputs)]


def ranked_results_from_outputs(outputs: Mapping[str, Any]) -> list[tuple[SearchResult, ...]]:
    """The dict a compiled search returns, as each image's results, best first.

    A beam that never became live (log-prob -inf: only when the vocabulary is smaller
    than the beam) is no caption and is left out, as in the reference search.
    """
    token_ids = np.asarray(outputs["token_ids"])  # [B, T] or [B, N, T]
    ranked = token_ids.ndim == 3
    columns = {name: np.asarray(outputs[name]) for name in ("lengths", "log_probs", "scores", "ended")}  # each [B] or [B, N]
    if not ranked:
        token_ids = token_ids[:, None, :]  # [B, 1, T]
        columns = {name: values[:, None] for name, values in columns.items()}  # each [B, 1]
    lengths, log_probs, scores, ended = (columns[name] for name in ("lengths", "log_probs", "scores", "ended"))
    return [
        tuple(
            SearchResult(
                token_ids=tuple(int(t) for t in token_ids[b, k, : lengths[b, k]]),
                log_prob=float(log_probs[b, k]),
                score=float(scores[b, k]),
                ended=bool(ended[b, k]),
            )
            for k in range(token_ids.shape[1])
            if k == 0 or np.isfinite(log_probs[b, k])
        )
        for b in range(token_ids.shape[0])
    ]


def run_search(search_fn: Any, features: Any) -> list[SearchResult]:
    """Caption a batch of images with a function from :func:`make_search_fn`."""
    return results_from_outputs(search_fn(features))


def run_ranked_search(search_fn: Any, features: Any) -> list[tuple[SearchResult, ...]]:
    """The N best captions of each image of a batch (N: the search config's ``results``)."""
    return ranked_results_from_outputs(search_fn(features))


def length_penalty(lengths: tf.Tensor, alpha: float) -> tf.Tensor:
    """GNMT length penalty ``((5 + length) / 6) ** alpha`` as float32, same shape as ``lengths``."""
    return tf.pow((5.0 + tf.cast(lengths, tf.float32)) / 6.0, alpha)


def _initial_state(initial_state_fn: InitialStateFn, features: Any) -> State:
    state = tuple(initial_state_fn(features))
    if not state:
        raise ValueError("initial_state_fn must return a non-empty tuple of tensors (their leading dim is the batch size)")
    return state


def _step(step_fn: StepFn, words: tf.Tensor, state: State) -> tuple[tf.Tensor, State]:
    log_probs, new_state = step_fn(words, state)
    return tf.cast(log_probs, tf.float32), tuple(new_state)  # [N, V], each [N, ...]


def repeat_mask(tokens: tf.Tensor, t: tf.Tensor, n: int, vocab: tf.Tensor) -> tf.Tensor:
    """Words each sequence may not emit at step ``t`` (the reference's rule): bool [N, V].

    tokens [N, T] (columns < t emitted). Every n-gram window of the tokens that starts at
    j <= t - n and whose first n-1 tokens equal the last n-1 emitted ones bans its last
    word; the bans are scattered into [N, V] (no [N, T, V] one-hot, so large vocabularies
    cost nothing extra).
    """
    rows = tf.shape(tokens)[0]  # scalar N
    windows = tf.signal.frame(tokens, frame_length=n, frame_step=1, axis=1)  # [N, W, n], W = T - n + 1
    starts = tf.range(tf.shape(windows)[1])  # [W]
    tail_index = tf.maximum(t - (n - 1) + tf.range(n - 1), 0)  # [n-1] columns of the last n-1 emitted tokens
    tail = tf.gather(tokens, tail_index, axis=1)  # [N, n-1]
    same = tf.reduce_all(tf.equal(windows[:, :, : n - 1], tail[:, None, :]), axis=2)  # [N, W]
    match = tf.logical_and(same, (starts <= t - n)[None, :])  # [N, W] only windows already complete
    flat = tf.reshape(tf.range(rows)[:, None] * vocab + windows[:, :, n - 1], [-1, 1])  # [N*W, 1] row-major (row, word)
    hits = tf.scatter_nd(flat, tf.reshape(tf.cast(match, tf.int32), [-1]), [rows * vocab])  # [N*V]
    return tf.reshape(hits > 0, [rows, vocab])  # [N, V]


def _block_repeats(log_probs: tf.Tensor, tokens: tf.Tensor, t: tf.Tensor, n: int, max_length: int) -> tf.Tensor:
    """log_probs [N, V] with the words of :func:`repeat_mask` at -inf; unchanged when n is 0."""
    if n < 1 or max_length <= n:  # nothing can repeat in so few tokens
        return log_probs
    banned = repeat_mask(tokens, t, n, tf.shape(log_probs)[1])  # [N, V]
    return tf.where(banned, tf.constant(-np.inf, log_probs.dtype), log_probs)  # [N, V]


def _write_column(tokens: tf.Tensor, t: tf.Tensor, words: tf.Tensor) -> tf.Tensor:
    """``tokens[..., t] = words`` for tokens [..., T] and words [...]."""
    column = tf.equal(tf.range(tf.shape(tokens)[-1]), t)  # [T]
    return tf.where(column, words[..., None], tokens)  # [..., T]


def _outputs(tokens: tf.Tensor, sums: tf.Tensor, lengths: tf.Tensor, ended: tf.Tensor, alpha: float, pad_id: int) -> dict[str, tf.Tensor]:
    """Final dict from the chosen sequences: tokens [B, T], sums/lengths/ended [B]
    (or, for N-best lists, tokens [B, N, T] and the others [B, N]: shown as [...] below)."""
    words = lengths - tf.cast(ended, tf.int32)  # [...] caption words, endseq not counted
    in_caption = tf.range(tf.shape(tokens)[-1]) < words[..., None]  # [..., T]
    return {
        "token_ids": tf.where(in_caption, tokens, pad_id),  # [..., T]
        "lengths": words,  # [...]
        "log_probs": sums,  # [...]
        "scores": sums / length_penalty(lengths, alpha),  # [...]
        "ended": ended,  # [...]
    }


def _greedy(step_fn: StepFn, state: State, config: SearchConfig, start_id: int, end_id: int, pad_id: int) -> dict[str, tf.Tensor]:
    """Most probable next word for every image, in one while loop over time steps."""
    batch = tf.shape(state[0])[0]  # scalar B
    max_length = config.max_length

    def keep_going(t, words, state, tokens, sums, lengths, finished):
        return tf.logical_and(t < max_length, tf.logical_not(tf.reduce_all(finished)))  # scalar

    def advance(t, words, state, tokens, sums, lengths, finished):
        log_probs, state = _step(step_fn, words, state)  # [B, V], each [B, ...]
        log_probs = _block_repeats(log_probs, tokens, t, config.no_repeat_ngram, max_length)  # [B, V]
        best_log_prob, best = tf.math.top_k(log_probs, k=1)  # [B, 1], [B, 1]; ties -> lowest id
        words = tf.where(finished, pad_id, best[:, 0])  # [B]
        sums = sums + tf.where(finished, 0.0, best_log_prob[:, 0])  # [B]
        lengths = lengths + tf.cast(tf.logical_not(finished), tf.int32)  # [B]
        tokens = _write_column(tokens, t, words)  # [B, T]
        finished = tf.logical_or(finished, tf.equal(words, end_id))  # [B]
        return t + 1, words, state, tokens, sums, lengths, finished

    loop_vars = (
        tf.constant(0),  # scalar step t
        tf.fill([batch], tf.constant(start_id, tf.int32)),  # [B] words fed next
        state,  # each [B, ...]
        tf.fill([batch, max_length], tf.constant(pad_id, tf.int32)),  # [B, T] emitted tokens
        tf.zeros([batch], tf.float32),  # [B] log-prob sums
        tf.zeros([batch], tf.int32),  # [B] emitted token counts
        tf.zeros([batch], tf.bool),  # [B] endseq emitted
    )
    _, _, _, tokens, sums, lengths, finished = tf.while_loop(keep_going, advance, loop_vars, maximum_iterations=max_length)
    return _outputs(tokens, sums, lengths, finished, config.length_alpha, pad_id)


def _beam(step_fn: StepFn, state: State, config: SearchConfig, start_id: int, end_id: int, pad_id: int) -> dict[str, tf.Tensor]:
    """``beam_width`` beams per image, all images and beams stepped together as [B*K] rows."""
    width = config.beam_width
    max_length = config.max_length
    alpha = config.length_alpha
    batch = tf.shape(state[0])[0]  # scalar B
    state = tuple(tf.repeat(s, width, axis=0) for s in state)  # each [B*K, ...]
    beam_offsets = tf.range(batch)[:, None] * width  # [B, 1] row of beam 0 of each image
    first_sums = tf.constant([[0.0] + [-np.inf] * (width - 1)], tf.float32)  # [1, K] only beam 0 live

    def keep_going(t, words, state, tokens, sums, lengths, finished):
        return tf.logical_and(t < max_length, tf.logical_not(tf.reduce_all(finished)))  # scalar

    def advance(t, words, state, tokens, sums, lengths, finished):
        log_probs, state = _step(step_fn, words, state)  # [B*K, V], each [B*K, ...]
        log_probs = _block_repeats(log_probs, tf.reshape(tokens, [batch * width, max_length]), t, config.no_repeat_ngram, max_length)  # [B*K, V]
        vocab = tf.shape(log_probs)[1]  # scalar V
        log_probs = tf.reshape(log_probs, [batch, width, vocab])  # [B, K, V]
        cand_sums, cand_lengths = _candidates(log_probs, sums, lengths, finished, pad_id)  # [B, K, V], [B, K]
        cand_scores = cand_sums / length_penalty(cand_lengths, alpha)[:, :, None]  # [B, K, V]
        _, top = tf.math.top_k(tf.reshape(cand_scores, [batch, width * vocab]), k=width)  # [B, K]; ties -> lowest index
        parent = top // vocab  # [B, K] beam each winner extends
        word = top % vocab  # [B, K] word it appends
        sums = tf.gather(tf.reshape(cand_sums, [batch, width * vocab]), top, batch_dims=1)  # [B, K]
        lengths = tf.gather(cand_lengths, parent, batch_dims=1)  # [B, K]
        finished = tf.logical_or(tf.gather(finished, parent, batch_dims=1), tf.equal(word, end_id))  # [B, K]
        tokens = _write_column(tf.gather(tokens, parent, batch_dims=1), t, word)  # [B, K, T]
        rows = tf.reshape(beam_offsets + parent, [-1])  # [B*K] parent row of every new row
        state = tuple(tf.gather(s, rows) for s in state)  # each [B*K, ...]
        return t + 1, tf.reshape(word, [-1]), state, tokens, sums, lengths, finished  # words [B*K]

    loop_vars = (
        tf.constant(0),  # scalar step t
        tf.fill([batch * width], tf.constant(start_id, tf.int32)),  # [B*K] words fed next
        state,  # each [B*K, ...]
        tf.fill([batch, width, max_length], tf.constant(pad_id, tf.int32)),  # [B, K, T] emitted tokens
        tf.tile(first_sums, [batch, 1]),  # [B, K] log-prob sums
        tf.zeros([batch, width], tf.int32),  # [B, K] emitted token counts
        tf.zeros([batch, width], tf.bool),  # [B, K] endseq emitted
    )
    _, _, _, tokens, sums, lengths, finished = tf.while_loop(keep_going, advance, loop_vars, maximum_iterations=max_length)
    # top_k returns beams sorted by normalised score, so beam 0 is each image's answer
    if config.results == 1:
        return _outputs(tokens[:, 0], sums[:, 0], lengths[:, 0], finished[:, 0], alpha, pad_id)
    best = config.results
    return _outputs(tokens[:, :best], sums[:, :best], lengths[:, :best], finished[:, :best], alpha, pad_id)  # [B, N, T], [B, N]


def _candidates(log_probs: tf.Tensor, sums: tf.Tensor, lengths: tf.Tensor, finished: tf.Tensor, pad_id: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Sum for every (beam, next word); a finished beam offers only itself plus padding.

    log_probs [B, K, V], sums/lengths/finished [B, K] -> sums [B, K, V], lengths [B, K].
    """
    live = sums[:, :, None] + log_probs  # [B, K, V]
    is_pad = tf.equal(tf.range(tf.shape(log_probs)[2]), pad_id)  # [V]
    frozen = tf.where(is_pad[None, None, :], sums[:, :, None], -np.inf)  # [B, K, V]
    cand_sums = tf.where(finished[:, :, None], frozen, live)  # [B, K, V]
    cand_lengths = lengths + tf.cast(tf.logical_not(finished), tf.int32)  # [B, K]
    return cand_sums, cand_lengths
