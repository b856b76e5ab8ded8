"""Captions written from a scene by five "annotators" with different framings.

One writes everything with the background, one a "there is" sentence, one background
first, one a terse label, one "a picture of" or the place first.
"""
from __future__ import annotations

import random
from types import MappingProxyType
from typing import Sequence

from captioning.data.sample.scene import Background, ObjectGroup, Scene

# Like real annotators, the five writers word things differently but mostly reach for the
# usual word: the first wording of each choice below is taken with probability USUAL_WORDING,
# otherwise one of the others. Most captions name the main group with all of its
# attributes and its place, so the captions of an image tend to share a core phrase such
# as "three big red circles at the top", while the framing around it differs.
USUAL_WORDING = 0.8
_NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six")
_COUNT_WORDS = MappingProxyType({1: ("a", "one", "a single"), 2: ("two", "a pair of"), 3: ("three",)})
_SIZE_WORDS = MappingProxyType({"small": ("small", "little"), "big": ("big", "large")})
_SHAPE_WORDS = MappingProxyType({"circle": ("circle", "disc"), "square": ("square", "block"), "triangle": ("triangle",), "star": ("star",)})
_BACKGROUND_WORDS = MappingProxyType({"white": ("white",), "grey": ("grey", "gray"), "black": ("black",)})


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def _usual(options: Sequence[str], rng: random.Random) -> str:
    """The usual wording (the first) most of the time, now and then another one."""
    if len(options) == 1 or rng.random() < USUAL_WORDING:
        return options[0]
    return rng.choice(options[1:])


def _noun_phrase(group: ObjectGroup, rng: random.Random, with_size: bool = True, with_colour: bool = True) -> str:
    words = [_usual(_COUNT_WORDS[group.count], rng)]
    if with_size:
        words.append(_usual(_SIZE_WORDS[group.size], rng))
    if with_colour:
        words.append(group.colour)
    words.append(_usual(_SHAPE_WORDS[group.shape], rng) + ("s" if group.count > 1 else ""))
    if words[0] == "a" and words[1][0] in "aeiou":  # "an orange star"
        words[0] = "an"
    return " ".join(words)


def _place_phrase(group: ObjectGroup, rng: random.Random) -> str:
    horizontal, vertical = group.horizontal, group.vertical
    side = horizontal if horizontal in ("left", "right") else None
    end = vertical if vertical in ("top", "bottom") else None
    if side and end:
        upper = "upper" if end == "top" else "lower"
        return _usual((f"in the {end} {side}", f"at the {end} {side}", f"in the {upper} {side} corner"), rng)
    if side:
        return _usual((f"on the {side}", f"on the {side} side", f"to the {side}"), rng)
    if end:
        return _usual((f"at the {end}", f"near the {end}"), rng)
    return _usual(("in the middle", "in the center"), rng)


def _background_phrase(background: Background, rng: random.Random, with_texture: bool) -> str:
    colour = _usual(_BACKGROUND_WORDS[background.colour], rng)
    texture = background.texture if with_texture and background.texture != "plain" else ""
    return " ".join(w for w in (texture, colour, _usual(("background", "backdrop"), rng)) if w)


def _verb(phrase: str) -> str:
    """Agreement with the noun phrase: "a pair of" is singular like "a"."""
    return "is" if phrase.startswith(("a ", "an ", "one ")) else "are"


def _main(scene: Scene, rng: random.Random) -> str:
    """The main group with every attribute and its place: the core most captions share."""
    return f"{_noun_phrase(scene.main, rng)} {_place_phrase(scene.main, rng)}"


def _caption_everything(scene: Scene, rng: random.Random) -> str:
    """The main group and its place, the other group, the background."""
    text = _main(scene, rng)
    for group in scene.groups[1:]:
        text += f" and {_noun_phrase(group, rng)}"
    where = _usual(("on", "against"), rng)
    return f"{text} {where} a {_background_phrase(scene.background, rng, with_texture=True)}"


def _caption_main_place(scene: Scene, rng: random.Random) -> str:
    """Only the main group and where it is, in a sentence."""
    phrase, place = _noun_phrase(scene.main, rng), _place_phrase(scene.main, rng)
    return f"there {_verb(phrase)} {phrase} {place}" if rng.random() < 0.6 else f"{phrase} {_verb(phrase)} {place}"


def _caption_background_first(scene: Scene, rng: random.Random) -> str:
    """The background first, then the main group."""
    return f"{_usual(('a', 'the'), rng)} {_background_phrase(scene.background, rng, with_texture=True)} with {_main(scene, rng)}"


def _caption_short(scene: Scene, rng: random.Random) -> str:
    """A terse label: the main group and its place."""
    return _main(scene, rng)


def _caption_overview(scene: Scene, rng: random.Random) -> str:
    """What kind of picture it is, or the place first, then the main group."""
    kind = rng.random()
    if kind < 0.5:
        picture = _usual(("picture", "image", "drawing"), rng)
        return f"{'an' if picture == 'image' else 'a'} {picture} of {_main(scene, rng)}"
    if kind < 0.75:
        total = scene.total_objects
        many = "a single shape" if total == 1 else f"{_NUMBER_WORDS[total]} shapes"
        return f"a picture of {many} with {_main(scene, rng)}"
    place, phrase = _place_phrase(scene.main, rng), _noun_phrase(scene.main, rng)
    return f"{place} there {_verb(phrase)} {phrase}"


_ANNOTATORS = (_caption_everything, _caption_main_place, _caption_background_first, _caption_short, _caption_overview)


def write_captions(scene: Scene, rng: random.Random) -> tuple[str, ...]:
    """Five captions of the scene, one per annotator style, in random order."""
    styles = list(_ANNOTATORS)
    rng.shuffle(styles)
    captions = []
    for style in styles:
        text = _capitalise(style(scene, rng))
        captions.append(text + rng.choice(("", " .", " .", ".")))
    return tuple(captions)
