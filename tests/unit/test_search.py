"""Greedy and beam search on fake decoders whose probabilities are written by hand.

The fake decoders are probability tables indexed by (image table, previous word, current
word), so every expected caption can be worked out on paper or by enumerating all
captions.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from captioning.model.search.config import SearchConfig
from captioning.model.search.reference import beam_search, greedy_search, length_penalty, ranked_search, repeat_mask, search

PAD, UNK, START, END, A, B, C = range(7)
VOCAB = 7
EPS = 1e-9


class TableModel:
    """Second-order table decoder: log p(next | table, previous word, current word).

    ``features`` are table indices, one per image. The state carries the table index and
    the previous word, so a search that gathers states from the wrong beam gets wrong
    probabilities.
    """

    def __init__(self, log_probs: np.ndarray):
        self.log_probs = log_probs  # [N, V, V, V]

    def initial_state(self, features):
        tables = np.asarray(features, dtype=np.int64)  # [B]
        return tables, np.full_like(tables, UNK)  # [B], [B]

    def step(self, word_ids, state):
        tables, previous = state  # [N], [N]
        return self.log_probs[tables, previous, word_ids], (tables, np.asarray(word_ids))  # [N, V]


def first_order(rows: dict[int, dict[int, float]]) -> TableModel:
    """One table where the next word depends only on the current word; unlisted words get EPS."""
    probs = np.full((VOCAB, VOCAB), EPS)
    for word, row in rows.items():
        for nxt, p in row.items():
            probs[word, nxt] = p
    probs /= probs.sum(axis=1, keepdims=True)
    log_probs = np.broadcast_to(np.log(probs), (1, VOCAB, VOCAB, VOCAB)).copy()  # [1, V(prev), V, V]
    return TableModel(log_probs)


def random_model(seed: int, tables: int = 6, vocab: int = VOCAB, end_boost: float = 1.0) -> TableModel:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(vocab, 0.5), size=(tables, vocab, vocab))  # [N, V, V, V]
    probs[..., END] *= end_boost
    probs /= probs.sum(axis=-1, keepdims=True)
    return TableModel(np.log(probs))


# start -> a (.5) | b (.4) | end (.1); a -> end (.35) | c (.33) | b (.32); b -> end (.9) | c (.1); c -> end
GREEDY_TRAP = {START: {A: 0.5, B: 0.4, END: 0.1}, A: {END: 0.35, C: 0.33, B: 0.32}, B: {END: 0.9, C: 0.1}, C: {END: 1.0}}


def test_beam_finds_the_globally_better_caption_greedy_misses():
    model = first_order(GREEDY_TRAP)
    greedy = greedy_search(model, [0], SearchConfig(method="greedy", max_length=30))[0]
    beam = beam_search(model, [0], SearchConfig(beam_width=2, length_alpha=0.0, max_length=30))[0]
    assert greedy.token_ids == (A,) and greedy.ended
    assert greedy.log_prob == pytest.approx(math.log(0.5 * 0.35), abs=1e-6)
    assert beam.token_ids == (B,) and beam.ended
    assert beam.log_prob == pytest.approx(math.log(0.4 * 0.9), abs=1e-6)
    assert beam.log_prob > greedy.log_prob


def test_scores_are_length_normalised_log_prob_sums():
    model = first_order(GREEDY_TRAP)
    result = beam_search(model, [0], SearchConfig(beam_width=3, length_alpha=0.7, max_length=30))[0]
    assert result.token_ids == (B,)
    # two emitted tokens: b and endseq
    assert result.score == pytest.approx(math.log(0.36) / ((5 + 2) / 6) ** 0.7, abs=1e-6)


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_caption_without_end_token_stops_at_max_length(method):
    model = first_order({START: {A: 1.0}, A: {B: 0.6, C: 0.4}, B: {A: 1.0}, C: {A: 1.0}})
    result = search(model, [0], SearchConfig(method=method, max_length=5, no_repeat_ngram=0))[0]
    assert result.token_ids == (A, B, A, B, A)
    assert not result.ended
    assert result.log_prob == pytest.approx(2 * math.log(0.6), abs=1e-6)


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_max_length_counts_the_end_token(method):
    model = first_order({START: {A: 1.0}, A: {END: 1.0}})
    assert search(model, [0], SearchConfig(method=method, max_length=2))[0] == search(model, [0], SearchConfig(method=method, max_length=9))[0]
    cut = search(model, [0], SearchConfig(method=method, max_length=1))[0]
    assert cut.token_ids == (A,) and not cut.ended


def test_length_normalisation_changes_the_winner():
    # short: start c end = .3 (2 tokens); long: start a b end = .7 * .4 = .28 (3 tokens)
    model = first_order({START: {C: 0.3, A: 0.7}, C: {END: 1.0}, A: {B: 0.4, END: 0.35, C: 0.25}, B: {END: 1.0}})
    plain = beam_search(model, [0], SearchConfig(beam_width=2, length_alpha=0.0, max_length=30))[0]
    normalised = beam_search(model, [0], SearchConfig(beam_width=2, length_alpha=1.0, max_length=30))[0]
    assert plain.token_ids == (C,)
    assert plain.log_prob == pytest.approx(math.log(0.3), abs=1e-6)
    assert normalised.token_ids == (A, B)
    assert normalised.log_prob == pytest.approx(math.log(0.28), abs=1e-6)
    assert normalised.score == pytest.approx(math.log(0.28) / (8 / 6), abs=1e-6)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("alpha", [0.0, 0.7])
def test_beam_width_one_equals_greedy(seed, alpha):
    model = random_model(seed)
    images = np.arange(6)
    greedy = greedy_search(model, images, SearchConfig(method="greedy", length_alpha=alpha, max_length=8))
    beam = beam_search(model, images, SearchConfig(beam_width=1, length_alpha=alpha, max_length=8))
    assert [r.token_ids for r in beam] == [r.token_ids for r in greedy]
    assert [r.ended for r in beam] == [r.ended for r in greedy]
    np.testing.assert_allclose([r.log_prob for r in beam], [r.log_prob for r in greedy], rtol=1e-12)
    np.testing.assert_allclose([r.score for r in beam], [r.score for r in greedy], rtol=1e-12)


@pytest.mark.parametrize("config", [SearchConfig(method="greedy", max_length=7), SearchConfig(beam_width=3, max_length=7), SearchConfig(beam_width=4, length_alpha=0.0, max_length=7)])
def test_batch_results_equal_per_image_results(config):
    model = random_model(seed=11, end_boost=3.0)
    images = np.array([3, 0, 5, 1, 4, 2, 3])
    batched = search(model, images, config)
    alone = [search(model, images[i : i + 1], config)[0] for i in range(len(images))]
    assert [r.token_ids for r in batched] == [r.token_ids for r in alone]
    assert [r.ended for r in batched] == [r.ended for r in alone]
    np.testing.assert_allclose([r.score for r in batched], [r.score for r in alone], rtol=1e-12)
    assert any(r.ended for r in batched)


def test_ties_go_to_the_lowest_word_id():
    model = first_order({START: {A: 1 / 3, B: 1 / 3, C: 1 / 3}, A: {END: 1.0}, B: {END: 1.0}, C: {END: 1.0}})
    for config in (SearchConfig(method="greedy", max_length=30), SearchConfig(beam_width=2, max_length=30), SearchConfig(beam_width=3, max_length=30)):
        first, again = (search(model, [0], config)[0] for _ in range(2))
        assert first == again
        assert first.token_ids == (A,) and first.ended


def all_captions(vocab: int, max_length: int):
    """Every emitted-token sequence the rules allow: endseq only last, or max_length tokens."""
    others = [w for w in range(vocab) if w != END]
    for length in range(1, max_length + 1):
        for words in itertools.product(others, repeat=length - 1):
            yield words + (END,)
    yield from itertools.product(others, repeat=max_length)


def sequence_log_prob(model: TableModel, table: int, emitted: tuple[int, ...]) -> float:
    previous, current, total = UNK, START, 0.0
    for word in emitted:
        total += model.log_probs[table, previous, current, word]
        previous, current = current, word
    return total


def has_repeat(tokens, n: int) -> bool:
    grams = [tuple(tokens[k : k + n]) for k in range(len(tokens) - n + 1)]
    return n > 0 and len(grams) != len(set(grams))


@pytest.mark.parametrize("alpha", [0.0, 0.7])
@pytest.mark.parametrize("no_repeat", [0, 1, 2])
def test_wide_beam_is_exhaustive_search(alpha, no_repeat):
    """With blocking on, the best caption among those that repeat no n-gram."""
    vocab, max_length = 5, 4
    model = random_model(seed=5, tables=4, vocab=vocab, end_boost=0.5)
    captions = sorted(c for c in all_captions(vocab, max_length) if not has_repeat(c, no_repeat))
    width = len(list(all_captions(vocab, max_length)))  # no caption is ever pruned
    assert len(captions) < width or no_repeat == 0
    config = SearchConfig(beam_width=width, length_alpha=alpha, max_length=max_length, no_repeat_ngram=no_repeat)
    results = beam_search(model, np.arange(4), config)
    for table, result in enumerate(results):
        def normalised(c):
            return sequence_log_prob(model, table, c) / length_penalty(len(c), alpha)

        best = max(captions, key=normalised)
        assert result.ended == (best[-1] == END)
        assert result.token_ids == (best[:-1] if result.ended else best)
        assert result.score == pytest.approx(normalised(best), abs=1e-9)
        assert result.log_prob == pytest.approx(sequence_log_prob(model, table, best), abs=1e-9)
    assert {len(r.token_ids) for r in results} & {2, 3, 4}  # long enough for the state to matter


@pytest.mark.parametrize("method,width", [("greedy", 1), ("beam", 2), ("beam", 3)])
def test_reported_log_prob_is_the_log_prob_of_the_returned_caption(method, width):
    # the model depends on the previous word through its state, so a search that does not
    # carry each beam's own state along reports a sum that belongs to no caption
    model = random_model(seed=21, tables=12, end_boost=0.7)
    results = search(model, np.arange(12), SearchConfig(method=method, beam_width=width, max_length=6))
    for table, result in enumerate(results):
        emitted = result.token_ids + ((END,) if result.ended else ())
        assert result.log_prob == pytest.approx(sequence_log_prob(model, table, emitted), abs=1e-9)
        assert result.score == pytest.approx(result.log_prob / length_penalty(len(emitted), 0.7), abs=1e-9)


def test_repeat_mask_bans_the_word_that_would_repeat_an_ngram():
    tokens = np.array([[A, B, C, A, B, PAD], [A, B, C, A, C, PAD], [C, A, A, A, B, PAD]])  # [3, 6]
    trigram = repeat_mask(tokens, 5, 3, VOCAB)  # after 5 tokens
    assert [set(np.flatnonzero(row)) for row in trigram] == [{C}, set(), set()]  # "a b c" seen: after "a b", c is banned
    bigram = repeat_mask(tokens, 5, 2, VOCAB)
    assert [set(np.flatnonzero(row)) for row in bigram] == [{C}, {A}, set()]  # after "b": c; after "c": a
    assert set(np.flatnonzero(repeat_mask(tokens, 3, 2, VOCAB)[2])) == {A}  # after "c a a": "a a" seen
    assert [set(np.flatnonzero(row)) for row in repeat_mask(tokens, 3, 1, VOCAB)] == [{A, B, C}, {A, B, C}, {A, C}]
    assert not repeat_mask(tokens, 5, 0, VOCAB).any()


# a loop the model loves: start -> a b c a b c ... end is unlikely everywhere
LOOP = {START: {A: 0.99, END: 0.01}, A: {B: 0.9, C: 0.05, END: 0.05}, B: {C: 0.9, A: 0.05, END: 0.05}, C: {A: 0.9, B: 0.05, END: 0.05}}


@pytest.mark.parametrize("method", ["greedy", "beam"])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_blocking_keeps_every_ngram_unique_and_counts_only_emitted_words(method, n):
    model = first_order(LOOP)
    blocked = search(model, [0], SearchConfig(method=method, max_length=12, no_repeat_ngram=n, length_alpha=0.0))[0]
    loose = search(model, [0], SearchConfig(method=method, max_length=12, no_repeat_ngram=0, length_alpha=0.0))[0]
    assert has_repeat(loose.token_ids, n)  # the loop without blocking
    assert not has_repeat(blocked.token_ids + ((END,) if blocked.ended else ()), n)
    assert blocked.log_prob == pytest.approx(sequence_log_prob(model, 0, blocked.token_ids + ((END,) if blocked.ended else ())), abs=1e-9)
    if method == "greedy" and n == 3:
        # a b c a b, then c would repeat "a b c": the next best after b is a (.05, id 4) or end (.05, id 3): end wins the tie
        assert blocked.token_ids == (A, B, C, A, B) and blocked.ended
@pytest.mark.parametrize("alpha", [0.0, 0.7])
def test_n_best_list_of_a_wide_beam_is_the_exhaustive_top_n(alpha):
    vocab, max_length, best_of = 5, 4, 6
    model = random_model(seed=8, tables=4, vocab=vocab, end_boost=0.5)
    captions = sorted(all_captions(vocab, max_length))
    config = SearchConfig(beam_width=len(captions), length_alpha=alpha, max_length=max_length, results=best_of, no_repeat_ngram=0)
    for table, ranked in enumerate(ranked_search(model, np.arange(4), config)):
        def normalised(c):
            return sequence_log_prob(model, table, c) / length_penalty(len(c), alpha)

        expected = sorted(captions, key=normalised, reverse=True)[:best_of]
        assert [r.token_ids + ((END,) if r.ended else ()) for r in ranked] == expected
        np.testing.assert_allclose([r.score for r in ranked], [normalised(c) for c in expected], atol=1e-9)


def test_n_best_by_hand():
    # start -> a (.5) | b (.4) | end (.1); a -> end .35 | c .33 | b .32; b -> end .9 | c .1; c -> end
    model = first_order(GREEDY_TRAP)
    ranked = ranked_search(model, [0], SearchConfig(beam_width=3, length_alpha=0.0, max_length=30, results=3))[0]
    assert [r.token_ids for r in ranked] == [(B,), (A,), (A, C)]
    np.testing.assert_allclose([r.log_prob for r in ranked], np.log([0.4 * 0.9, 0.5 * 0.35, 0.5 * 0.33]), atol=1e-6)
    assert all(r.ended for r in ranked)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("width,best_of", [(3, 1), (3, 3), (5, 2)])
def test_first_of_the_n_best_is_the_one_caption(seed, width, best_of):
    model = random_model(seed, end_boost=2.0)
    images = np.arange(6)
    config = SearchConfig(beam_width=width, max_length=7, results=best_of)
    ranked = ranked_search(model, images, config)
    assert [r[0] for r in ranked] == beam_search(model, images, SearchConfig(beam_width=width, max_length=7))
    for results in ranked:
        assert len(results) == best_of
        assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)
        assert len({r.token_ids + (r.ended,) for r in results}) == best_of  # N different captions


def test_greedy_ranked_is_its_one_caption():
    model = random_model(seed=2)
    config = SearchConfig(method="greedy", max_length=6)
    assert ranked_search(model, np.arange(3), config) == [(r,) for r in greedy_search(model, np.arange(3), config)]


def test_beams_that_never_became_live_are_not_in_the_n_best():
    # a beam two wider than the vocabulary: the first step has only VOCAB candidates, and
    # with max_length 1 the search ends there; the two beams left empty are no captions
    model = first_order({START: {A: 0.4, B: 0.3, C: 0.2, END: 0.1}})
    ranked = ranked_search(model, [0], SearchConfig(beam_width=VOCAB + 2, length_alpha=0.0, max_length=1, results=VOCAB + 2))[0]
    assert len(ranked) == VOCAB  # every word once, the never-live beams left out
    assert all(np.isfinite(r.log_prob) for r in ranked)
    assert [r.token_ids for r in ranked[:3]] == [(A,), (B,), (C,)]


def test_config_is_validated():
    with pytest.raises(ValueError, match="method"):
        SearchConfig(method="sample")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="beam_width"):
        SearchConfig(beam_width=0)
    with pytest.raises(ValueError, match="max_length"):
        SearchConfig(max_length=-1)
    with pytest.raises(ValueError, match="no_repeat_ngram"):
        SearchConfig(no_repeat_ngram=-1)
    with pytest.raises(ValueError, match="greedy search finds one caption"):
        SearchConfig(method="greedy", results=2)
    with pytest.raises(ValueError, match="cannot exceed beam_width"):
        SearchConfig(beam_width=3, results=4)
    with pytest.raises(ValueError, match="results must be"):
        SearchConfig(results=0)
