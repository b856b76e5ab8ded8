"""Caption text cleaning: the original project's rules, each one a switch.

The original lower-cased captions, removed punctuation characters, dropped one-letter
tokens (which removes "a") and dropped tokens containing digits, then wrapped each
caption in ``startseq``/``endseq``. The same :class:`CleaningConfig` is stored with the
vocabulary so that training, evaluation and inference clean text identically.
"""
from __future__ import annotations

import string
from dataclasses import dataclass

START = "startseq"
END = "endseq"
PAD = "<pad>"
UNK = "<unk>"

_PUNCTUATION = str.maketrans("", "", string.punctuation)


@dataclass(frozen=True)
class CleaningConfig:
    lowercase: bool = True  # "A Dog" and "a dog" are one word
    strip_punctuation: bool = True  # delete ASCII punctuation characters: "dog's" -> "dogs"
    drop_single_letter: bool = True  # the original dropped tokens of length 1 ("a", "s")
    drop_with_digits: bool = True  # "2", "3rd" carry little and inflate the vocabulary


def clean_caption(text: str, config: CleaningConfig = CleaningConfig()) -> list[str]:
    """Tokens of one caption after cleaning (without start/end markers)."""
    if config.lowercase:
        text = text.lower()
    if config.strip_punctuation:
        text = text.translate(_PUNCTUATION)
    tokens = text.split()
    if config.drop_single_letter:
        tokens = [t for t in tokens if len(t) > 1]
    if config.drop_with_digits:
        tokens = [t for t in tokens if not any(c.isdigit() for c in t)]
    return tokens
