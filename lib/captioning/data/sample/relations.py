"""Relation scenes: two groups, and where the main one lies relative to the other.

Every caption names both groups with their attributes and the relation between them, the
main (more salient) group first: "three big red circles to the left of a small blue star".
To write that, a captioner has to know which colour, shape, size and count belong to which
group and which group is where. A single vector pooled over the whole picture keeps what
is in it rather than where, so this dataset separates decoders that look at the image's
regions from those that see it only as a whole.

The relation is always clear-cut: the two groups are apart along one axis (every cell of
one group left of, or above, every cell of the other) and overlap along the other axis;
scenes where they are apart diagonally, or too alike in salience to tell which one is
the main group, are drawn again.
"""
from __future__ import annotations

import random
from types import MappingProxyType
from typing import Sequence

from captioning.data.sample.scene import Scene, _background, _clear_main, _grid, _group
from captioning.data.sample.wording import _background_phrase, _capitalise, _noun_phrase, _usual, _verb

RELATIONS = ("left", "right", "above", "below")
_INVERSE = MappingProxyType({"left": "right", "right": "left", "above": "below", "below": "above"})
# The usual wording first (USUAL_WORDING of the time), then the alternatives.
_RELATION_WORDS = MappingProxyType(
    {
        "left": ("to the left of", "left of", "on the left of"),
        "right": ("to the right of", "right of", "on the right of"),
        "above": ("above", "over"),
        "below": ("below", "under", "beneath"),
    }
)
_SCENE_TRIES = 200  # a valid scene is found within a few tries; this bound is never reached in practice


def relation_of(first: Sequence[tuple[int, int]], second: Sequence[tuple[int, int]]) -> str | None:
    """Where cells ``first`` lie relative to cells ``second`` ((row, column) each), or None when not clear-cut."""
    rows_a, cols_a = {r for r, _ in first}, {c for _, c in first}
    rows_b, cols_b = {r for r, _ in second}, {c for _, c in second}
    apart_cols = max(cols_a) < min(cols_b) or max(cols_b) < min(cols_a)
    apart_rows = max(rows_a) < min(rows_b) or max(rows_b) < min(rows_a)
    if apart_cols and not apart_rows:
        return "left" if max(cols_a) < min(cols_b) else "right"
    if apart_rows and not apart_cols:
        return "above" if max(rows_a) < min(rows_b) else "below"
    return None


def describe_relation_scene(rng: random.Random, width: int, height: int) -> Scene:
    """A background and exactly two groups with a clear main group and a clear-cut relation."""
    grid = _grid(width, height)
    background = _background(rng)
    for _ in range(_SCENE_TRIES):
        taken: set[tuple[int, int]] = set()
        drawn = [_group(rng, (width, height), grid, taken), _group(rng, (width, height), grid, taken)]
        if drawn[1] is None or not _clear_main(drawn):
            continue
        main, other = sorted(drawn, key=lambda g: (-g.salience, g.cells))
        relation = relation_of(main.cells, other.cells)
        if relation is not None:
            return Scene(width=width, height=height, grid=grid, background=background, groups=(main, other), relation=relation)
    raise RuntimeError(f"no two-group scene with a clear relation in {_SCENE_TRIES} tries ({width}x{height})")


def _relation_phrase(relation: str, rng: random.Random) -> str:
    return _usual(_RELATION_WORDS[relation], rng)


def _core(scene: Scene, rng: random.Random) -> str:
    """Main group, relation, other group: the phrase most captions share."""
    main, other = scene.groups
    return f"{_noun_phrase(main, rng)} {_relation_phrase(scene.relation, rng)} {_noun_phrase(other, rng)}"


def _caption_everything(scene: Scene, rng: random.Random) -> str:
    where = _usual(("on", "against"), rng)
    return f"{_core(scene, rng)} {where} a {_background_phrase(scene.background, rng, with_texture=True)}"


def _caption_sentence(scene: Scene, rng: random.Random) -> str:
    main, other = scene.groups
    phrase = _noun_phrase(main, rng)
    rest = f"{_relation_phrase(scene.relation, rng)} {_noun_phrase(other, rng)}"
    return f"there {_verb(phrase)} {phrase} {rest}" if rng.random() < 0.6 else f"{phrase} {_verb(phrase)} {rest}"


def _caption_short(scene: Scene, rng: random.Random) -> str:
    return _core(scene, rng)


def _caption_overview(scene: Scene, rng: random.Random) -> str:
    picture = _usual(("picture", "image", "drawing"), rng)
    return f"{'an' if picture == 'image' else 'a'} {picture} of {_core(scene, rng)}"


def _caption_other_first(scene: Scene, rng: random.Random) -> str:
    """Half of the time the other group first, with the inverse relation, as some people put it."""
    if rng.random() < 0.5:
        return _core(scene, rng)
    main, other = scene.groups
    return f"{_noun_phrase(other, rng)} {_relation_phrase(_INVERSE[scene.relation], rng)} {_noun_phrase(main, rng)}"


_ANNOTATORS = (_caption_everything, _caption_sentence, _caption_short, _caption_overview, _caption_other_first)


def write_relation_captions(scene: Scene, rng: random.Random) -> tuple[str, ...]:
    """Five captions of a relation scene, one per annotator style, in random order."""
    styles = list(_ANNOTATORS)
    rng.shuffle(styles)
    return tuple(_capitalise(style(scene, rng)) + rng.choice(("", " .", " .", ".")) for style in styles)

