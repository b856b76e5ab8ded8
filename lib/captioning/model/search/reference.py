"""Caption search (greedy and beam) over a two-method step interface, in plain numpy.

Why a step interface: the search only needs "what state does an image start in" and
"given the last word and the state, what are the next-word log-probabilities and the new
state". Hiding the decoder behind those two calls (as im2txt's inference wrapper does)
keeps the search independent of how the model is built, lets the tests drive it with
hand-written probability tables, and lets the compiled TensorFlow version in
:mod:`captioning.model.search.compiled` be checked against this one.

This module is the reference implementation: easy to read, batched over images, and
exact about the rules both implementations follow:

* every sequence starts by feeding ``start_id``; a sequence stops when it emits
  ``end_id`` or after ``max_length`` emitted tokens (``end_id`` included), and reaching
  ``max_length`` without ``end_id`` is a normal result, never an error;
* the score of a sequence is the sum of the log-probabilities of its emitted tokens
  (``end_id`` included when emitted); the normalised score divides it by the GNMT length
  penalty ``((5 + length) / 6) ** length_alpha`` where ``length`` counts emitted tokens;
* beam search keeps exactly ``beam_width`` beams per image; a beam that emitted
  ``end_id`` stays in the beam set, frozen (it only appends padding and its score does not
  change), and competes with the live beams on normalised score at every step; the search
  ends when every beam is finished or after ``max_length`` steps; the answer is the beam
  with the best normalised score, and the ``results`` best beams of the final set, best
  first, are the N-best list (a beam that never became live, possible only when the
  vocabulary is smaller than the beam, is left out of it);
* ties are broken towards the lowest index: lowest word id, and in beam search lowest
  (parent beam, word id) pair, the order ``tf.math.top_k`` guarantees;
* with ``no_repeat_ngram`` n > 0, a live sequence may not emit a word that completes an
  n-gram it already holds (its emitted tokens, startseq not counted): that word's
  log-probability becomes -inf for this step, the others keep theirs (no renormalisation).
  So a caption never holds the same n words in a row twice.
"""
from __future__ import annotations

from typing import Any, Protocol, Sequence

import numpy as np

from captioning.model.search.config import SearchConfig, SearchResult, require_max_length

State = tuple[np.ndarray, ...]  # every array has leading dimension B (or B*K in beam search)


class StepModel(Protocol):
    """A decoder seen one word at a time; the search never sees anything else of it."""

    def initial_state(self, features: Any) -> State:
        """State for a batch of B images: a non-empty tuple of arrays with leading dim B."""
        ...

    def step(self, word_ids: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """``word_ids`` int [N] and a state of leading dim N -> (log_probs [N, V], new state)."""
        ...


def length_penalty(lengths: np.ndarray, alpha: float) -> np.ndarray:
    """GNMT length penalty ``((5 + length) / 6) ** alpha`` (1 everywhere when alpha is 0)."""
    return ((5.0 + np.asarray(lengths, dtype=np.float64)) / 6.0) ** alpha


def repeat_mask(tokens: np.ndarray, t: int, n: int, vocab: int) -> np.ndarray:
    """Words each sequence may not emit at step ``t``: bool [N, V] for tokens [N, T] (columns < t emitted).

    Word w is banned when the last n-1 emitted tokens followed by w form an n-gram that
    already occurs among the emitted tokens. n = 0 bans nothing.
    """
    rows = tokens.shape[0]
    banned = np.zeros((rows, vocab), dtype=bool)  # [N, V]
    if n < 1:
        return banned
    tail = tokens[:, t - n + 1 : t] if n > 1 else tokens[:, :0]  # [N, n-1]
    for start in range(0, t - n + 1):  # every earlier n-gram tokens[start : start + n]
        match = np.all(tokens[:, start : start + n - 1] == tail, axis=1)  # [N]
        banned[np.flatnonzero(match), tokens[match, start + n - 1]] = True
    return banned


def _block_repeats(log_probs: np.ndarray, tokens: np.ndarray, t: int, n: int) -> np.ndarray:
    """log_probs [N, V] with the words of :func:`repeat_mask` set to -inf."""
    if n < 1 or t < n:
        return log_probs
    return np.where(repeat_mask(tokens, t, n, log_probs.shape[1]), -np.inf, log_probs)


def search(model: StepModel, features: Any, config: SearchConfig, *, start_id: int = 2, end_id: int = 3, pad_id: int = 0) -> list[SearchResult]:
    """Caption every image of a batch with the method ``config`` names (ids as in vocab.py)."""
    if config.method == "greedy":
        return greedy_search(model, features, config, start_id=start_id, end_id=end_id, pad_id=pad_id)
    return beam_search(model, features, config, start_id=start_id, end_id=end_id, pad_id=pad_id)


def ranked_search(model: StepModel, features: Any, config: SearchConfig, *, start_id: int = 2, end_id: int = 3, pad_id: int = 0) -> list[tuple[SearchResult, ...]]:
    """The ``config.results`` best captions of every image, best first (greedy: its one caption)."""
    if config.method == "greedy":
        return [(result,) for result in greedy_search(model, features, config, start_id=start_id, end_id=end_id, pad_id=pad_id)]
    tokens, lengths, finished, sums, scores = _final_beams(model, features, config, start_id, end_id, pad_id)
    return [
        tuple(_result(tokens[b, k], lengths[b, k], finished[b, k], sums[b, k], scores[b, k]) for k in range(config.results) if np.isfinite(sums[b, k]))
        for b in range(tokens.shape[0])
    ]


def greedy_search(model: StepModel, features: Any, config: SearchConfig, *, start_id: int = 2, end_id: int = 3, pad_id: int = 0) -> list[SearchResult]:
    """At every step take the most probable word (lowest id on ties), for all images at once."""
    state = _initial_state(model, features)
    batch = state[0].shape[0]
    require_max_length(config)
    tokens = np.full((batch, config.max_length), pad_id, dtype=np.int64)  # [B, T]
    sums = np.zeros(batch, dtype=np.float64)  # [B]
    lengths = np.zeros(batch, dtype=np.int64)  # [B]
    finished = np.zeros(batch, dtype=bool)  # [B]
    words = np.full(batch, start_id, dtype=np.int64)  # [B]
    for t in range(config.max_length):
        if finished.all():
            break
        log_probs, state = model.step(words, state)  # [B, V], state [B, ...]
        log_probs = _block_repeats(np.asarray(log_probs, dtype=np.float64), tokens, t, config.no_repeat_ngram)  # [B, V]
        best = np.argmax(log_probs, axis=1)  # [B]; argmax returns the first maximum
        words = np.where(finished, pad_id, best)  # [B]
        sums = sums + np.where(finished, 0.0, log_probs[np.arange(batch), best])  # [B]
        lengths = lengths + (~finished)  # [B]
        tokens[:, t] = words
        finished = finished | (words == end_id)  # [B]
    scores = sums / length_penalty(lengths, config.length_alpha)  # [B]
    return [_result(tokens[b], lengths[b], finished[b], sums[b], scores[b]) for b in range(batch)]


def beam_search(model: StepModel, features: Any, config: SearchConfig, *, start_id: int = 2, end_id: int = 3, pad_id: int = 0) -> list[SearchResult]:
    """Keep ``beam_width`` best partial captions per image; all images advance together."""
    tokens, lengths, finished, sums, scores = _final_beams(model, features, config, start_id, end_id, pad_id)
    # beams are sorted by normalised score after every step, so beam 0 is the answer
    return [_result(tokens[b, 0], lengths[b, 0], finished[b, 0], sums[b, 0], scores[b, 0]) for b in range(tokens.shape[0])]


def _final_beams(model: StepModel, features: Any, config: SearchConfig, start_id: int, end_id: int, pad_id: int) -> tuple[np.ndarray, ...]:
    """The final beam set, sorted best first: tokens [B, K, T], lengths, finished, sums, scores [B, K].

    The state is kept flattened as [B*K, ...] (beam k of image b at row b*K + k) and is
    re-gathered by parent beam after every step.
    """
    width = config.beam_width
    state = _initial_state(model, features)
    batch = state[0].shape[0]
    state = tuple(np.repeat(np.asarray(s), width, axis=0) for s in state)  # each [B*K, ...]
    require_max_length(config)
    tokens = np.full((batch, width, config.max_length), pad_id, dtype=np.int64)  # [B, K, T]
    sums = np.full((batch, width), -np.inf)  # [B, K]
    sums[:, 0] = 0.0  # only beam 0 is live at first, so the K copies do not repeat one caption
    lengths = np.zeros((batch, width), dtype=np.int64)  # [B, K]
    finished = np.zeros((batch, width), dtype=bool)  # [B, K]
    scores = np.zeros((batch, width))  # [B, K] normalised scores, sorted best first
    words = np.full(batch * width, start_id, dtype=np.int64)  # [B*K]
    rows = np.arange(batch)[:, None]  # [B, 1]
    for t in range(config.max_length):
        if finished.all():
            break
        log_probs, state = model.step(words, state)  # [B*K, V], state [B*K, ...]
        log_probs = _block_repeats(np.asarray(log_probs, dtype=np.float64), tokens.reshape(batch * width, -1), t, config.no_repeat_ngram)  # [B*K, V]
        vocab = log_probs.shape[1]
        cand_sums, cand_lengths = _candidates(log_probs.reshape(batch, width, vocab), sums, lengths, finished, pad_id)  # [B, K, V], [B, K]
        cand_scores = cand_sums / length_penalty(cand_lengths, config.length_alpha)[:, :, None]  # [B, K, V]
        flat_scores = cand_scores.reshape(batch, width * vocab)  # [B, K*V]
        top = np.argsort(-flat_scores, axis=1, kind="stable")[:, :width]  # [B, K]; ties -> lowest index
        parent, word = top // vocab, top % vocab  # [B, K], [B, K]
        sums = cand_sums.reshape(batch, width * vocab)[rows, top]  # [B, K]
        scores = flat_scores[rows, top]  # [B, K]
        lengths = cand_lengths[rows, parent]  # [B, K]
        finished = finished[rows, parent] | (word == end_id)  # [B, K]
        tokens = tokens[rows, parent]  # [B, K, T]
        tokens[:, :, t] = word
        flat_parent = (rows * width + parent).reshape(-1)  # [B*K]
        state = tuple(s[flat_parent] for s in state)  # each [B*K, ...]
        words = word.reshape(-1)  # [B*K]
    return tokens, lengths, finished, sums, scores


def _candidates(log_probs: np.ndarray, sums: np.ndarray, lengths: np.ndarray, finished: np.ndarray, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Score of every (beam, next word) pair; a finished beam offers only itself plus padding.

    log_probs [B, K, V], sums/lengths/finished [B, K] -> candidate sums [B, K, V] and
    candidate lengths [B, K].
    """
    live = sums[:, :, None] + log_probs  # [B, K, V]
    frozen = np.full_like(live, -np.inf)  # [B, K, V]
    frozen[:, :, pad_id] = sums  # [B, K]
    cand_sums = np.where(finished[:, :, None], frozen, live)  # [B, K, V]
    cand_lengths = np.where(finished, lengths, lengths + 1)  # [B, K]
    return cand_sums, cand_lengths


def _initial_state(model: StepModel, features: Any) -> State:
    state = tuple(np.asarray(s) for s in model.initial_state(features))
    if not state:
        raise ValueError("initial_state must return a non-empty tuple of arrays (their leading dim is the batch size)")
    return state


def _result(tokens: Sequence[int], length: int, ended: bool, log_prob: float, score: float) -> SearchResult:
    """One image's answer: its ``length`` emitted tokens, less the final endseq if it ended."""
    words = int(length) - int(bool(ended))
    return SearchResult(token_ids=tuple(int(t) for t in tokens[:words]), log_prob=float(log_prob), score=float(score), ended=bool(ended))
