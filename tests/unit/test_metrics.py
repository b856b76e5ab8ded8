"""BLEU (nltk) and COCO toolkit scores on captions small enough to check by hand."""
from __future__ import annotations

import math
import shutil
from collections import Counter

import pytest

from captioning.report.metrics import CocoEvalError, bleu_scores, coco_scores

REFERENCES = {
    "dog.jpg": [
        "a black dog is running across the green grass".split(),
        "the dog runs on the grass in the park".split(),
        "a dog is running outside".split(),
    ],
    "kids.jpg": [
        "two children are playing in the sand on the beach".split(),
        "kids play with sand near the ocean".split(),
        "two young children playing at the beach".split(),
    ],
    "bike.jpg": [
        "a man rides a bicycle down a dirt path".split(),
        "a cyclist is riding along a trail in the woods".split(),
        "man on a mountain bike in the forest".split(),
    ],
    "climb.jpg": [
        "a woman climbs a steep rock wall".split(),
        "a climber is scaling a large rock face".split(),
        "woman rock climbing with a rope".split(),
    ],
}
PERFECT = {image: refs[0] for image, refs in REFERENCES.items()}
BAD = {
    "dog.jpg": "purple elephants juggle violins loudly".split(),
    "kids.jpg": "an old car is parked by the dog".split(),
    "bike.jpg": "two children eat cake on the beach".split(),
    "climb.jpg": "people sing songs quietly indoors".split(),
}
NAMES = ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4"]


def bleu1_by_definition(hypothesis, references):
    """Clipped unigram precision times the brevity penalty (closest reference length)."""
    counts = Counter(hypothesis)
    max_ref_counts = Counter()
    for reference in references:
        for word, n in Counter(reference).items():
            max_ref_counts[word] = max(max_ref_counts[word], n)
    clipped = sum(min(n, max_ref_counts[word]) for word, n in counts.items())
    precision = clipped / len(hypothesis)
    c = len(hypothesis)
    r = min((abs(len(ref) - c), len(ref)) for ref in references)[1]
    brevity = 1.0 if c > r else math.exp(1 - r / c)
    return precision * brevity


def test_identical_captions_score_one():
    scores = bleu_scores(REFERENCES, PERFECT)
    assert list(scores) == NAMES
    for name in NAMES:
        assert scores[name] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "hypothesis,references",
    [
        # 3 of 4 unigrams survive clipping ("the" x3 against at most 2); brevity exp(1 - 6/4)
        ("the the the cat", ["the cat is on the mat"]),
        # closest reference has 3 words < 5, so no brevity penalty
        ("a cat on a mat", ["the cat is on the mat", "cat on mat"]),
    ],
)
@pytest.mark.filterwarnings("ignore:\\s*The hypothesis contains 0 counts")  # BLEU-3/4 of these pairs are 0
def test_bleu1_matches_its_definition(hypothesis, references):
    hyp, refs = hypothesis.split(), [r.split() for r in references]
    expected = bleu1_by_definition(hyp, refs)
    assert bleu_scores({"x": refs}, {"x": hyp})["BLEU-1"] == pytest.approx(expected, abs=1e-12)


def test_first_case_is_what_the_definition_says_by_hand():
    assert bleu1_by_definition("the the the cat".split(), ["the cat is on the mat".split()]) == pytest.approx(0.75 * math.exp(-0.5))


@pytest.mark.filterwarnings("ignore:\\s*The hypothesis contains 0 counts")
def test_same_numbers_as_the_tutorials_four_weight_calls():
    from nltk.translate.bleu_score import corpus_bleu

    hyps = {"dog.jpg": "a black dog runs on the grass".split(), "kids.jpg": "two children play in the sand".split(), "bike.jpg": BAD["bike.jpg"], "climb.jpg": "a man climbs a rock".split()}
    refs = [REFERENCES[i] for i in hyps]
    tutorial = [corpus_bleu(refs, list(hyps.values()), weights=w) for w in [(1, 0, 0, 0), (0.5, 0.5, 0, 0), (1 / 3, 1 / 3, 1 / 3, 0), (0.25, 0.25, 0.25, 0.25)]]
    assert list(bleu_scores(REFERENCES, hyps).values()) == pytest.approx(tutorial, abs=1e-12)
    assert 0 < tutorial[3] < tutorial[2] < tutorial[1] < tutorial[0] < 1


def test_disjoint_hypothesis_scores_zero():
    scores = bleu_scores({"x": [["a", "dog", "runs"]]}, {"x": ["purple", "elephants", "sing"]})
    assert scores == {name: 0.0 for name in NAMES}


def test_smoothing_lifts_a_missing_ngram_order():
    refs = {"x": [["a", "dog", "runs", "on", "grass"]]}
    hyp = {"x": ["a", "dog", "runs", "in", "grass"]}  # no 4-gram in common
    with pytest.warns(UserWarning):
        plain = bleu_scores(refs, hyp)
    smoothed = bleu_scores(refs, hyp, smoothing="method1")
    assert plain["BLEU-4"] < 1e-6 < smoothed["BLEU-4"]
    assert plain["BLEU-1"] == pytest.approx(smoothed["BLEU-1"])
    with pytest.raises(ValueError, match="smoothing"):
        bleu_scores(refs, hyp, smoothing="laplace")


@pytest.mark.parametrize("score", [bleu_scores, coco_scores])
def test_mismatched_ids_are_named(score):
    hyps = dict(PERFECT, **{"extra1.jpg": ["a"], "extra2.jpg": ["b"]})
    with pytest.raises(ValueError, match=r"2 hypothesis id\(s\) without references.*extra1\.jpg.*extra2\.jpg"):
        score(REFERENCES, hyps)
    del hyps["extra1.jpg"], hyps["extra2.jpg"], hyps["kids.jpg"]
    with pytest.raises(ValueError, match=r"reference id\(s\) without a hypothesis.*kids\.jpg"):
        score(REFERENCES, hyps)


def test_captions_must_be_token_lists():
    with pytest.raises(TypeError, match="split"):
        bleu_scores({"x": [["a", "dog"]]}, {"x": "a dog"})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="split"):
        bleu_scores({"x": ["a dog"]}, {"x": ["a", "dog"]})  # type: ignore[list-item]
    with pytest.raises(ValueError, match="no references"):
        bleu_scores({"x": []}, {"x": ["a", "dog"]})
    with pytest.raises(ValueError, match="no references"):
        bleu_scores({"x": "a dog"}, {"x": ["a", "dog"]})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="no captions"):
        bleu_scores({}, {})


def test_coco_scores_need_java(monkeypatch):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(CocoEvalError, match="Java"):
        coco_scores(REFERENCES, PERFECT)


needs_coco = pytest.mark.skipif(shutil.which("java") is None, reason="the COCO toolkit needs Java")


@pytest.fixture(scope="module")
def coco_perfect_and_bad():
    pytest.importorskip("pycocoevalcap")
    return coco_scores(REFERENCES, PERFECT), coco_scores(REFERENCES, BAD)


@needs_coco
def test_coco_scores_rank_a_perfect_match_above_a_bad_one(coco_perfect_and_bad):
    perfect, bad = coco_perfect_and_bad
    metrics = ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"]
    assert set(perfect) == set(metrics) | {"note"}
    for name in metrics:
        assert perfect[name] > bad[name], name
    for name in ["Bleu_1", "Bleu_4", "ROUGE_L"]:
        assert perfect[name] == pytest.approx(1.0, abs=1e-6)
    assert perfect["CIDEr"] > 1.0 and perfect["METEOR"] > 0.5
    assert bad["Bleu_4"] < 1e-3 and bad["CIDEr"] < 0.5
    assert "SPICE" in perfect["note"]


@needs_coco
def test_coco_scores_can_skip_meteor_and_take_raw_text():
    pytest.importorskip("pycocoevalcap")
    scores = coco_scores(REFERENCES, PERFECT, meteor=False)
    assert "METEOR" not in scores and "METEOR" in scores["note"] and "SPICE" in scores["note"]
    assert scores["CIDEr"] > 1.0
    # the toolkit lower-cases and drops punctuation itself, so raw captions score the same
    raw_refs = {i: [" ".join(r).capitalize() + "." for r in refs] for i, refs in REFERENCES.items()}
    raw_hyps = {i: " ".join(h).upper() + " !" for i, h in PERFECT.items()}
    assert coco_scores(raw_refs, raw_hyps, meteor=False) == pytest.approx(scores)


@needs_coco
def test_a_failing_meteor_is_an_error_not_a_hang(monkeypatch):
    meteor = pytest.importorskip("pycocoevalcap.meteor.meteor")
    monkeypatch.setattr(meteor, "METEOR_JAR", "no-such-meteor.jar")
    with pytest.raises(CocoEvalError, match="METEOR failed.*no-such-meteor.jar"):
        coco_scores(REFERENCES, PERFECT)


def test_human_agreement_scores_each_annotator_against_the_others():
    from captioning.report.metrics import human_agreement

    same = {i: [list(refs[0])] * 3 for i, refs in REFERENCES.items()}  # three annotators who agree word for word
    assert human_agreement(same)["BLEU-4"] == pytest.approx(1.0)
    scores = human_agreement(REFERENCES)
    by_hand = []
    for k in range(3):
        hypotheses = {i: refs[k] for i, refs in REFERENCES.items()}
        others = {i: [r for j, r in enumerate(refs) if j != k] for i, refs in REFERENCES.items()}
        by_hand.append(bleu_scores(others, hypotheses)["BLEU-1"])
    assert scores["BLEU-1"] == pytest.approx(sum(by_hand) / 3)
    assert 0 < scores["BLEU-1"] < 1
    with pytest.raises(ValueError, match="same number"):
        human_agreement({"a": [["x"], ["y"]], "b": [["x"]]})


def test_metric_columns_tell_nltk_and_coco_bleu_apart():
    from captioning.report.metrics import metric_columns

    row = metric_columns({"bleu_nltk": {"BLEU-1": 0.8, "BLEU-4": 0.5}, "coco": {"Bleu_1": 0.7, "Bleu_4": 0.4, "METEOR": 0.3, "ROUGE_L": 0.6, "CIDEr": 2.0, "note": "x"}})
    assert row == {"BLEU-1 (nltk)": 0.8, "BLEU-4 (nltk)": 0.5, "BLEU-1 (COCO)": 0.7, "BLEU-4 (COCO)": 0.4, "METEOR": 0.3, "ROUGE-L": 0.6, "CIDEr": 2.0}
    assert metric_columns({"bleu_nltk": {"BLEU-4": 0.5}}) == {"BLEU-4 (nltk)": 0.5}


def test_repeated_ngram_share_counts_captions_with_a_repeat():
    from captioning.report.metrics import repeated_ngram_share

    captions = ["three three with with with with".split(), "a red circle above a red square".split(), "a b c a b c".split(), "a b c d".split()]
    assert repeated_ngram_share(captions, 3) == pytest.approx(2 / 4)  # "with with with" twice; "a b c" twice
    assert repeated_ngram_share(captions, 2) == pytest.approx(3 / 4)  # also "a red"
    assert repeated_ngram_share([], 3) == 0.0
