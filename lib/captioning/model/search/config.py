"""Search settings and results, shared by the numpy reference and the compiled search."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal


@dataclass(frozen=True)
class SearchConfig:
    method: Literal["greedy", "beam"] = "beam"
    beam_width: int = 3  # beams kept per image (beam search only)
    length_alpha: float = 0.7  # GNMT length penalty exponent; 0 ranks by plain log-prob sum
    max_length: int = 0  # most tokens emitted per caption, endseq included; 0: what the model was trained for
    # no n-gram of this many words twice in one caption (a word that would repeat one gets
    # probability 0); stops loops like "with with with" on unfamiliar images. 0: no blocking
    no_repeat_ngram: int = 3
    results: int = 1  # captions returned per image, best first: the best beams of the final beam set

    # ``results`` does not change the search: the first of N results is the one caption of
    # the same search with results=1 (the beam set is what beam_width makes it either way).

    def __post_init__(self) -> None:
        if self.method not in ("greedy", "beam"):
            raise ValueError(f"method must be 'greedy' or 'beam', got {self.method!r}")
        if self.beam_width < 1:
            raise ValueError(f"beam_width must be >= 1, got {self.beam_width}")
        if self.length_alpha < 0:
            raise ValueError(f"length_alpha must be >= 0, got {self.length_alpha}")
        if self.no_repeat_ngram < 0:
            raise ValueError(f"no_repeat_ngram must be >= 0 (0: no blocking), got {self.no_repeat_ngram}")
        if self.max_length < 0:
            raise ValueError(f"max_length must be >= 0 (0: the model's own maximum), got {self.max_length}")
        if self.results < 1:
            raise ValueError(f"results must be >= 1, got {self.results}")
        if self.method == "greedy" and self.results > 1:
            raise ValueError(f"greedy search finds one caption per image, {self.results} were asked for: use beam search")
        if self.results > self.beam_width:
            raise ValueError(f"results ({self.results}) cannot exceed beam_width ({self.beam_width}): the final beam set holds beam_width captions")

    def for_model(self, longest: int) -> "SearchConfig":
        """These settings with ``max_length`` 0 replaced by ``longest`` (the model's maximum)."""
        return self if self.max_length else replace(self, max_length=longest)


@dataclass(frozen=True)
class SearchResult:
    """The caption found for one image."""

    token_ids: tuple[int, ...]  # emitted word ids, without startseq and the final endseq
    log_prob: float  # sum of log-probabilities of the emitted tokens (endseq included if emitted)
    score: float  # log_prob / ((5 + emitted) / 6) ** length_alpha
    ended: bool  # True if the model emitted endseq, False if cut at max_length


def require_max_length(config: SearchConfig) -> None:
    if config.max_length < 1:
        raise ValueError("the search needs max_length >= 1: resolve the model's maximum first (SearchConfig.for_model)")
