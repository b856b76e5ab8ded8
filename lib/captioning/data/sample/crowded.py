"""Crowded scenes: three to six single shapes of mixed attributes scattered over the picture.

Unlike the other sample scenes there is no group and no main object: every grid cell may
hold a shape of its own colour, shape and size. A decoder trained on the other kinds has
never seen such a picture; what it says about them shows how it copes with images unlike
its training data (for instance whether it falls into repeating itself). Their captions
list what is there, so the files keep the Flickr8k layout, but they are not a task to learn.
"""
from __future__ import annotations

import random

from captioning.data.sample.config import _RADIUS_SHARE, _SHAPE_SCALE, OBJECT_COLOURS, SHAPES, SIZES
from captioning.data.sample.scene import ObjectGroup, Scene, _background, _grid, _instance, _jitter, _placement_words
from captioning.data.sample.wording import _background_phrase, _capitalise, _noun_phrase, _usual

_NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six")
MIN_SHAPES, MAX_SHAPES = 3, 6


def describe_crowded_scene(rng: random.Random, width: int, height: int) -> Scene:
    """A background and 3..6 one-object groups in distinct cells, largest first."""
    grid = _grid(width, height)
    background = _background(rng)
    rows, cols = grid
    cells = [(row, col) for row in range(rows) for col in range(cols)]
    chosen = sorted(rng.sample(cells, rng.randint(MIN_SHAPES, min(MAX_SHAPES, len(cells)))))
    cell_w, cell_h = width / cols, height / rows
    groups = []
    for row, col in chosen:
        colour, shape, size = rng.choice(tuple(OBJECT_COLOURS)), rng.choice(SHAPES), rng.choice(SIZES)
        low, high = _RADIUS_SHARE[size]
        radius = max(6, round(rng.uniform(low, high) * min(cell_w, cell_h) * _SHAPE_SCALE[shape]))
        box = (col * cell_w, row * cell_h, (col + 1) * cell_w, (row + 1) * cell_h)
        instance = _instance(rng, box, radius, shape, _jitter(OBJECT_COLOURS[colour], rng, 12))
        horizontal, vertical = _placement_words(grid, [(row, col)])
        groups.append(ObjectGroup(colour, shape, size, 1, ((row, col),), (instance,), horizontal, vertical))
    ordered = sorted(groups, key=lambda g: (-g.salience, g.cells))
    return Scene(width=width, height=height, grid=grid, background=background, groups=tuple(ordered))


def write_crowded_captions(scene: Scene, rng: random.Random) -> tuple[str, ...]:
    """Five captions: how many shapes, and some or all of them, in varied framings."""
    total = _NUMBER_WORDS[len(scene.groups)]
    listed = [_noun_phrase(g, rng) for g in scene.groups]
    background = _background_phrase(scene.background, rng, with_texture=True)
    captions = [
        f"{total} shapes on a {background}",
        f"{', '.join(listed[:-1])} and {listed[-1]}",
        f"a picture of {total} different shapes",
        f"{listed[0]} among {_usual(('other shapes', 'several shapes'), rng)}",
        f"{total} {_usual(('colourful', 'coloured'), rng)} shapes scattered on a {background}",
    ]
    rng.shuffle(captions)
    return tuple(_capitalise(c) + rng.choice(("", " .", ".")) for c in captions)
