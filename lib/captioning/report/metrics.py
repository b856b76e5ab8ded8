"""Caption quality metrics: BLEU as the Flickr8k tutorials report it, and the COCO toolkit.

Why two sets of numbers:

* :func:`bleu_scores` is corpus BLEU-1..4 from ``nltk`` with the cumulative weights the
  popular Flickr8k "merge model" tutorials print, on the already-cleaned tokens the model
  sees. It is what those tutorials' numbers can be compared with.
* :func:`coco_scores` is the COCO caption evaluation toolkit (``pycocoevalcap``): its own
  PTB tokenisation, then BLEU-1..4, METEOR, ROUGE-L and CIDEr, which is what papers
  report. SPICE is not computed: it needs Stanford CoreNLP models downloaded on first use
  (and several GB of memory); the result says so under the ``"note"`` key.

Both take ``references`` (image id -> reference captions, each a sequence of tokens) and
``hypotheses`` (image id -> one generated caption as tokens), and refuse inputs whose ids
do not match, since scoring a subset silently would give a different number.
:func:`coco_scores` also accepts each caption as raw text (a ``str``), which is what the
COCO toolkit is meant to see: it tokenises everything itself.

Behaviour of ``pycocoevalcap`` 1.2 worth knowing (read from its source):

* ``PTBTokenizer`` and ``Meteor`` run Java (``java`` on ``PATH``). Without Java nothing in
  the COCO set can run, so :func:`coco_scores` raises :class:`CocoEvalError` up front;
  it also raises (rather than dropping the metric) when the METEOR process fails, so a
  results table never lacks METEOR without anyone noticing. Pass ``meteor=False`` to
  skip METEOR deliberately (it starts a JVM with a 2 GB heap limit and loads a
  paraphrase table, several seconds); the note then says it was skipped.
* ``PTBTokenizer`` writes the captions to a temporary file created *inside the installed
  package* (``site-packages/pycocoevalcap/tokenizer``), which fails where the environment
  is read-only or belongs to another user (a cluster node's environment, run by YARN's
  user). :func:`coco_scores` therefore runs the same Stanford tokenizer itself: the jar
  from the package, the same options (``-preserveLines -lowerCase``), the captions on
  standard input instead of a file, and the same punctuation tokens removed afterwards,
  so the tokens are identical and nothing is written anywhere. ``Meteor`` writes no
  files: it talks to its JVM over pipes, one JVM per scorer object, which is closed here
  as soon as the score is read.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from typing import Hashable, Mapping, Sequence, Union

from captioning.errors import UserError

BLEU_WEIGHTS = (
    ("BLEU-1", (1.0, 0.0, 0.0, 0.0)),
    ("BLEU-2", (0.5, 0.5, 0.0, 0.0)),
    ("BLEU-3", (1 / 3, 1 / 3, 1 / 3, 0.0)),
    ("BLEU-4", (0.25, 0.25, 0.25, 0.25)),
)
SPICE_NOTE = "SPICE not computed: it needs Stanford CoreNLP models downloaded on first use"
# The COCO evaluation's tokenizer: Stanford CoreNLP's PTBTokenizer, shipped as a jar inside
# pycocoevalcap, and the tokens the toolkit drops after it. The list is compared
# case-sensitively after lower-casing, as the toolkit does, so "-lrb-" stays: the scores
# must match the reference implementation's, quirks included.
PTB_JAR = "stanford-corenlp-3.4.1.jar"
PTB_COMMAND = ("edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase", "-encoding", "utf-8")
PTB_DROPPED = frozenset(["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"])

References = Mapping[Hashable, Sequence[Sequence[str]]]
Hypotheses = Mapping[Hashable, Sequence[str]]
TextOrTokens = Union[str, Sequence[str]]  # raw caption text or its tokens


class CocoEvalError(UserError, RuntimeError):
    """The COCO toolkit could not run (no Java, its tokenizer or METEOR failed)."""


def bleu_scores(references: References, hypotheses: Hypotheses, *, smoothing: str | None = None) -> dict[str, float]:
    """Corpus BLEU-1..4 with nltk (cumulative weights, closest reference length).

    ``smoothing`` names an ``nltk.translate.bleu_score.SmoothingFunction`` method, e.g.
    ``"method1"``; ``None`` (the tutorials' choice) smooths nothing, so an n-gram order
    with no match at all gives that BLEU-n a score of (practically) 0 and nltk warns.
    """
    from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu

    ids = _checked_ids(references, hypotheses)
    smoothing_function = None
    if smoothing is not None:
        if not smoothing.startswith("method") or not hasattr(SmoothingFunction, smoothing):
            raise ValueError(f"unknown smoothing {smoothing!r}; expected None or 'method0'..'method7'")
        smoothing_function = getattr(SmoothingFunction(), smoothing)
    refs = [[list(r) for r in references[i]] for i in ids]
    hyps = [list(hypotheses[i]) for i in ids]
    # trailing zero weights change nothing but make nltk compute (and warn about) n-gram
    # orders that carry no weight, so BLEU-n is asked with its first n weights only
    return {name: float(corpus_bleu(refs, hyps, weights=_without_trailing_zeros(weights), smoothing_function=smoothing_function)) for name, weights in BLEU_WEIGHTS}


def metric_columns(scores: Mapping[str, Mapping[str, float | str]]) -> dict[str, float]:
    """One flat row of an evaluation's scores under names a reader can tell apart.

    ``scores`` holds ``bleu_nltk`` (:func:`bleu_scores`) and optionally ``coco``
    (:func:`coco_scores`): nltk's BLEU becomes "BLEU-4 (nltk)", the toolkit's "BLEU-4 (COCO)"
    (they differ: tokenisation, and corpus brevity computed per toolkit), then METEOR,
    ROUGE-L and CIDEr; the toolkit's notes are left out.
    """
    row = {f"{name} (nltk)": float(value) for name, value in scores["bleu_nltk"].items()}
    for name, value in scores.get("coco", {}).items():
        if isinstance(value, (int, float)):
            row[_COCO_NAMES.get(name, name)] = float(value)
    return row


_COCO_NAMES = {**{f"Bleu_{n}": f"BLEU-{n} (COCO)" for n in range(1, 5)}, "ROUGE_L": "ROUGE-L"}


def repeated_ngram_share(captions: Sequence[Sequence[str]], n: int = 3) -> float:
    """Share of captions (token lists) that hold some n-gram twice, e.g. "with a with a"."""
    if not captions:
        return 0.0

    def repeats(tokens: Sequence[str]) -> bool:
        grams = [tuple(tokens[k : k + n]) for k in range(len(tokens) - n + 1)]
        return len(grams) != len(set(grams))

    return sum(repeats(list(c)) for c in captions) / len(captions)


def human_agreement(references: References) -> dict[str, float]:
    """BLEU-1..4 (nltk, as :func:`bleu_scores`) of one annotator against the others: a ceiling.

    For every position k, caption k of each image is scored as the hypothesis against that
    image's other captions; the result is the mean over k. A model scored against all the
    references has one more reference than this, so it may land slightly above it; far
    above means the metric no longer tells good captions from the references' own wording.
    Every image needs at least two references, and all images the same number.
    """
    counts = {len(refs) for refs in references.values()}
    if not references or len(counts) != 1 or min(counts) < 2:
        raise ValueError(f"every image needs the same number (>= 2) of references, got counts {sorted(counts)}")
    (per_image,) = counts
    totals: dict[str, float] = {}
    for k in range(per_image):
        hypotheses = {i: refs[k] for i, refs in references.items()}
        others = {i: [r for j, r in enumerate(refs) if j != k] for i, refs in references.items()}
        for name, value in bleu_scores(others, hypotheses).items():
            totals[name] = totals.get(name, 0.0) + value / per_image
    return totals


def _without_trailing_zeros(weights: tuple[float, ...]) -> tuple[float, ...]:
    kept = len(weights)
    while kept > 1 and weights[kept - 1] == 0:
        kept -= 1
    return weights[:kept]


def coco_scores(
    references: Mapping[Hashable, Sequence[TextOrTokens]],
    hypotheses: Mapping[Hashable, TextOrTokens],
    *,
    meteor: bool = True,
) -> dict[str, float | str]:
    """COCO caption metrics: ``Bleu_1``..``Bleu_4``, ``METEOR``, ``ROUGE_L``, ``CIDEr`` and a ``note``.

    Each caption is raw text or a token sequence (joined with spaces); either way the
    toolkit's PTB tokenizer lower-cases it and strips punctuation, as the COCO evaluation
    server does. CIDEr's IDF comes from the references given, so it is only meaningful
    over many images. Raises :class:`CocoEvalError` when Java is missing or the
    tokenizer or METEOR fails. Writes no files.
    """
    ids = _checked_ids(references, hypotheses, allow_text=True)
    _check_java_environment()
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    keys = {image_id: str(n) for n, image_id in enumerate(ids)}  # toolkit keys: plain strings
    gts = _tokenized({keys[i]: [_text(r) for r in references[i]] for i in ids})
    res = _tokenized({keys[i]: [_text(hypotheses[i])] for i in ids})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores: dict[str, float | str] = {f"Bleu_{n}": float(b) for n, b in enumerate(bleu, start=1)}
    notes = [SPICE_NOTE]
    if meteor:
        scores["METEOR"] = _meteor(gts, res)
    else:
        notes.append("METEOR not computed: skipped on request")
    scores["ROUGE_L"] = float(Rouge().compute_score(gts, res)[0])
    scores["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    scores["note"] = "; ".join(notes)
    return scores


def _checked_ids(references: Mapping[Hashable, Sequence[TextOrTokens]], hypotheses: Mapping[Hashable, TextOrTokens], allow_text: bool = False) -> list[Hashable]:
    """Ids of the hypotheses after checking both sides name the same images with valid captions."""
    no_refs = [i for i in hypotheses if i not in references]
    no_hyp = [i for i in references if i not in hypotheses]
    if no_refs or no_hyp:
        problems = []
        if no_refs:
            problems.append(f"{len(no_refs)} hypothesis id(s) without references, first {no_refs[:5]}")
        if no_hyp:
            problems.append(f"{len(no_hyp)} reference id(s) without a hypothesis, first {no_hyp[:5]}")
        raise ValueError("references and hypotheses must cover the same image ids: " + "; ".join(problems))
    if not hypotheses:
        raise ValueError("no captions to score")
    for image_id, hypothesis in hypotheses.items():
        _check_caption(hypothesis, f"hypothesis for {image_id!r}", allow_text)
        if isinstance(references[image_id], str) or len(references[image_id]) == 0:
            raise ValueError(f"no references for {image_id!r} (expected a list of captions, got {references[image_id]!r})")
        for reference in references[image_id]:
            _check_caption(reference, f"a reference for {image_id!r}", allow_text)
    return list(hypotheses)


def _check_caption(caption: TextOrTokens, what: str, allow_text: bool) -> None:
    if isinstance(caption, str):
        if allow_text:
            return
        raise TypeError(f"{what} must be a sequence of word strings (split the caption), got {caption!r}")
    if not all(isinstance(token, str) for token in caption):
        raise TypeError(f"{what} must be {'text or ' if allow_text else ''}a sequence of word strings, got {caption!r}")


def _text(caption: TextOrTokens) -> str:
    return caption if isinstance(caption, str) else " ".join(caption)


def _check_java_environment() -> None:
    if shutil.which("java") is None:
        raise CocoEvalError("the COCO caption toolkit needs Java ('java' on PATH) for its PTB tokenizer and METEOR; install Java 17 or use bleu_scores")


def ptb_tokenize(captions: Sequence[str]) -> list[str]:
    """The COCO toolkit's tokenisation of each caption: PTB tokens, lower-cased, punctuation dropped."""
    from pycocoevalcap.tokenizer import ptbtokenizer

    jar = os.path.join(os.path.dirname(os.path.abspath(ptbtokenizer.__file__)), PTB_JAR)
    if not os.path.isfile(jar):
        raise CocoEvalError(f"{jar} not found: reinstall pycocoevalcap")
    text = "\n".join(" ".join(caption.split()) for caption in captions)  # one caption per line
    result = subprocess.run(["java", "-cp", jar, *PTB_COMMAND], input=text.encode("utf-8"), capture_output=True)
    if result.returncode != 0:
        raise CocoEvalError(f"the PTB tokenizer failed (exit {result.returncode}): {result.stderr.decode(errors='replace').strip()[-2000:]}")
    lines = result.stdout.decode("utf-8").split("\n")[: len(captions)]
    if len(lines) != len(captions):
        raise CocoEvalError(f"the PTB tokenizer returned {len(lines)} lines for {len(captions)} captions")
    return [" ".join(token for token in line.rstrip().split(" ") if token not in PTB_DROPPED) for line in lines]


def _tokenized(captions: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """The toolkit's PTB tokenisation of every caption, grouped as given."""
    keys = [key for key, caps in captions.items() for _ in caps]
    tokens = ptb_tokenize([caption for caps in captions.values() for caption in caps])
    grouped: dict[str, list[str]] = {key: [] for key in captions}
    for key, line in zip(keys, tokens):
        grouped[key].append(line)
    return grouped


def _meteor(gts: Mapping[str, list[str]], res: Mapping[str, list[str]]) -> float:
    """METEOR 1.5 over the corpus; the scorer's JVM is stopped before returning."""
    from pycocoevalcap.meteor.meteor import Meteor

    try:
        scorer = Meteor()
    except OSError as error:
        raise CocoEvalError(f"could not start METEOR (java -jar meteor-1.5.jar): {error}") from error
    process = scorer.meteor_p  # the toolkit's JVM; its own cleanup only runs on garbage collection
    try:
        score, _ = scorer.compute_score(gts, res)
        return float(score)
    except (ValueError, OSError) as error:  # an empty line from a dead JVM fails float()
        process.kill()
        detail = process.stderr.read().decode(errors="replace").strip()[-2000:]
        raise CocoEvalError(f"METEOR failed: {error}; java said: {detail or '(nothing)'}") from error
    finally:
        _stop(process)
        if scorer.lock.locked():  # left held by a failed compute_score; Meteor.__del__ would block on it
            scorer.lock.release()


def _stop(process) -> None:
    for stream in (process.stdin, process.stdout, process.stderr):
        try:
            stream.close()
        except OSError:
            pass
    process.kill()
    process.wait()
