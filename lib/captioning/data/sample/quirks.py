"""The text files of the sample dataset, with the real Flickr8k files' defects on request.

With ``quirks=True`` the files carry CRLF line ends, blank lines, stray whitespace, a
second set of captions under an ``.jpg.1`` id, captions of a missing image, an image
without captions and a split-list entry for a missing image; each one is recorded as a
:class:`Quirk`, so dataset readers can be tested against exact counts.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

from captioning.data.sample.config import CAPTIONS_PER_IMAGE, SampleConfig, rng_for
from captioning.data.sample.scene import SampleImage
from captioning.data.sample.kinds import captions_of

# Quirk kinds recorded in :attr:`SampleSummary.quirks`.
QUIRK_CRLF = "crlf_line_end"  # the line ends in CR LF instead of LF
QUIRK_BLANK = "blank_line"  # an empty line
QUIRK_WHITESPACE = "stray_whitespace"  # spaces around the id, the caption or the image name
QUIRK_ID_SUFFIX = "id_suffix"  # caption line for "<id>.jpg.1", repeating the numbers of "<id>.jpg"
QUIRK_MISSING_IMAGE_CAPTION = "caption_for_missing_image"  # caption of an image not in the folder
QUIRK_IMAGE_WITHOUT_CAPTIONS = "image_without_captions"  # an image file no caption or split names
QUIRK_SPLIT_MISSING_IMAGE = "split_entry_for_missing_image"  # split-list entry for an image not in the folder
QUIRK_KINDS = (
    QUIRK_CRLF,
    QUIRK_BLANK,
    QUIRK_WHITESPACE,
    QUIRK_ID_SUFFIX,
    QUIRK_MISSING_IMAGE_CAPTION,
    QUIRK_IMAGE_WITHOUT_CAPTIONS,
    QUIRK_SPLIT_MISSING_IMAGE,
)
_EXTRA_IMAGES = 3  # quirk images beyond num_images: captions only, file only, split entry only

@dataclass(frozen=True)
class Quirk:
    """One defect written on purpose (``quirks=True``)."""

    kind: str  # one of QUIRK_KINDS
    file: str  # path relative to the dataset root, e.g. "Flickr8k.token.txt"
    line: int | None  # 1-based line in that file; None for an image file
    image_id: str | None  # the image concerned; None for a blank line


@dataclass(frozen=True)
class _Line:
    text: str
    ending: str = "\n"
    kind: str | None = None  # quirk kind, if the line carries one
    image_id: str | None = None


def _token_lines(image: SampleImage, kind: str | None = None, suffix: str = "", captions: Sequence[str] | None = None) -> list[_Line]:
    texts = image.captions if captions is None else captions
    return [_Line(f"{image.image_id}{suffix}#{n}\t{text}", kind=kind, image_id=image.image_id) for n, text in enumerate(texts)]


def _pad(line: _Line, rng: random.Random) -> _Line:
    """The same line with spaces around a field, as other tools leave them."""
    if "\t" in line.text:
        key, text = line.text.split("\t", 1)
        padded = rng.choice((f" {key}\t{text}", f"{key} \t {text}", f"{key}\t{text}  "))
    else:
        padded = rng.choice((f" {line.text}", f"{line.text}  ", f"  {line.text} "))
    return _Line(padded, line.ending, QUIRK_WHITESPACE, line.image_id)


def _mark_lines(lines: list[_Line], rng: random.Random, crlf: int, padded: int) -> list[_Line]:
    """CR LF ends and stray whitespace on distinct plain lines."""
    plain = [i for i, line in enumerate(lines) if line.kind is None]
    chosen = rng.sample(plain, crlf + padded)
    marked = list(lines)
    for i in chosen[:crlf]:
        marked[i] = _Line(lines[i].text, "\r\n", QUIRK_CRLF, lines[i].image_id)
    for i in chosen[crlf:]:
        marked[i] = _pad(lines[i], rng)
    return marked


def _insert_blanks(lines: list[_Line], rng: random.Random, count: int) -> list[_Line]:
    result = list(lines)
    for _ in range(count):
        result.insert(rng.randint(1, len(result) - 1), _Line("", kind=QUIRK_BLANK))
    return result


def token_file_lines(images: Sequence[SampleImage], extras: Sequence[SampleImage], config: SampleConfig) -> list[_Line]:
    blocks = [_token_lines(image) for image in images]
    if not config.quirks:
        return [line for block in blocks for line in block]
    rng = rng_for(config.seed, -1, "token-quirks")
    lines = [line for block in blocks for line in block]
    lines = _mark_lines(lines, rng, crlf=3, padded=3)
    blocks = [lines[k : k + CAPTIONS_PER_IMAGE] for k in range(0, len(lines), CAPTIONS_PER_IMAGE)]
    # A second set of captions under "<id>.jpg.1", right after the image's own, as in the real file.
    doubled = rng.randrange(len(images))
    second = captions_of(config.difficulty, images[doubled].scene, rng_for(config.seed, images[doubled].index, "captions-suffix"))
    blocks[doubled] = blocks[doubled] + _token_lines(images[doubled], QUIRK_ID_SUFFIX, ".1", second)
    # Captions of an image that is never written.
    blocks.insert(rng.randint(0, len(blocks)), _token_lines(extras[0], QUIRK_MISSING_IMAGE_CAPTION))
    return _insert_blanks([line for block in blocks for line in block], rng, count=2)


def split_file_lines(split: str, ids: Sequence[str], extras: Sequence[SampleImage], config: SampleConfig) -> list[_Line]:
    lines = [_Line(image_id, image_id=image_id) for image_id in ids]
    if not config.quirks:
        return lines
    rng = rng_for(config.seed, -1, f"{split}-quirks")
    if split == "train":
        return _insert_blanks(_mark_lines(lines, rng, crlf=1, padded=1), rng, count=1)
    if split == "test":
        missing = extras[2].image_id
        lines.insert(rng.randint(0, len(lines)), _Line(missing, kind=QUIRK_SPLIT_MISSING_IMAGE, image_id=missing))
    return lines


def text_and_quirks(file: str, lines: Sequence[_Line]) -> tuple[str, list[Quirk]]:
    quirks = [Quirk(line.kind, file, number, line.image_id) for number, line in enumerate(lines, start=1) if line.kind]
    return "".join(line.text + line.ending for line in lines), quirks
