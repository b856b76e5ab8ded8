"""Scenes: a background and one or two groups of objects, described before anything is drawn.

The main group is clearly the most salient one (at least ``SALIENCE_MARGIN`` times the
other's apparent size), so the group the captions lead with can be told from the picture.
Attributes are drawn independently and uniformly, so a captioner that ignores the picture
cannot guess them from word statistics, while one that looks at it can.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

from captioning.data.sample.config import (
    _GROUP_TRIES,
    _RADIUS_SHARE,
    _SHAPE_SCALE,
    BACKGROUND_COLOURS,
    COUNTS,
    MAX_GROUPS,
    OBJECT_COLOURS,
    SALIENCE_MARGIN,
    SHAPES,
    SIZES,
    TEXTURES,
    Box,
    Rgb,
)


@dataclass(frozen=True)
class Background:
    colour: str  # a BACKGROUND_COLOURS name
    texture: str  # one of TEXTURES
    rgb: Rgb  # base colour as drawn (slightly varied)
    pattern_rgb: Rgb  # colour of stripes, checks or dots
    spacing: int  # pattern period in pixels
    vertical: bool  # stripe direction


@dataclass(frozen=True)
class Instance:
    """One drawn object."""

    center: tuple[int, int]  # (x, y) in pixels
    radius: int  # every vertex (or the circle's edge) lies this far from the centre
    angle: float  # rotation in degrees
    rgb: Rgb  # fill colour as drawn (the group's colour, slightly varied)

    @property
    def box(self) -> Box:
        x, y = self.center
        return (x - self.radius, y - self.radius, x + self.radius, y + self.radius)


@dataclass(frozen=True)
class ObjectGroup:
    """``count`` equal objects in a straight run of adjacent grid cells."""

    colour: str  # an OBJECT_COLOURS name
    shape: str  # one of SHAPES
    size: str  # one of SIZES
    count: int  # one of COUNTS
    cells: tuple[tuple[int, int], ...]  # (row, column) of each object's grid cell
    instances: tuple[Instance, ...]
    horizontal: str | None  # "left", "center", "right"; None when the run spans every column
    vertical: str | None  # "top", "middle", "bottom"; None when the run spans every row

    @property
    def salience(self) -> float:
        """How much the group stands out: its objects' apparent sizes, summed.

        The main group is the most salient one. Apparent size ignores the shape (a star
        and a circle of one size look equally big), so the main group's shape stays as
        uniformly distributed as every group's.
        """
        return sum((i.radius / _SHAPE_SCALE[self.shape]) ** 2 for i in self.instances)


@dataclass(frozen=True)
class Scene:
    width: int
    height: int
    grid: tuple[int, int]  # (rows, columns) of object cells
    background: Background
    groups: tuple[ObjectGroup, ...]  # most salient first: groups[0] is the main group
    relation: str | None = None  # "relations" scenes: where the main group lies relative to the other (RELATIONS)

    @property
    def main(self) -> ObjectGroup:
        return self.groups[0]

    @property
    def total_objects(self) -> int:
        return sum(g.count for g in self.groups)


@dataclass(frozen=True)
class SampleImage:
    """Everything known about one image before it is drawn."""

    index: int  # position in the dataset; indices >= num_images are quirk extras
    image_id: str  # file name, e.g. "1371524658_2ec1d4aa5c.jpg"
    scene: Scene
    captions: tuple[str, ...]  # five captions, #0..#4


def _jitter(rgb: Sequence[int], rng: random.Random, amount: int) -> Rgb:
    return tuple(min(255, max(0, c + rng.randint(-amount, amount))) for c in rgb)  # type: ignore[return-value]


def _shade(rgb: Sequence[int], delta: int) -> Rgb:
    return tuple(min(255, max(0, c + delta)) for c in rgb)  # type: ignore[return-value]


def _background(rng: random.Random) -> Background:
    colour = rng.choice(tuple(BACKGROUND_COLOURS))
    rgb = _jitter(BACKGROUND_COLOURS[colour], rng, 6)
    delta = rng.randint(18, 28) * (-1 if colour == "white" or (colour == "grey" and rng.random() < 0.5) else 1)
    return Background(
        colour=colour,
        texture=rng.choice(TEXTURES),
        rgb=rgb,
        pattern_rgb=_shade(rgb, delta),
        spacing=rng.randint(14, 30),
        vertical=rng.random() < 0.5,
    )


def _grid(width: int, height: int) -> tuple[int, int]:
    return (2, 3) if width >= height else (3, 2)


def _free_runs(grid: tuple[int, int], taken: set[tuple[int, int]], length: int) -> list[tuple[tuple[int, int], ...]]:
    """Straight runs of ``length`` free adjacent cells, horizontal and vertical."""
    rows, cols = grid
    runs = []
    for row in range(rows):
        for col in range(cols):
            for d_row, d_col in ((0, 1), (1, 0)) if length > 1 else ((0, 1),):
                cells = tuple((row + d_row * k, col + d_col * k) for k in range(length))
                if all(r < rows and c < cols and (r, c) not in taken for r, c in cells):
                    runs.append(cells)
    return runs


def _placement_words(grid: tuple[int, int], cells: Sequence[tuple[int, int]]) -> tuple[str | None, str | None]:
    """(horizontal, vertical) words for where the cells' centre lies in the picture."""
    rows, cols = grid

    def word(values: list[int], span: int, low: str, mid: str, high: str) -> str | None:
        if len(set(values)) == span:
            return None
        share = (sum(values) / len(values) + 0.5) / span
        return low if share < 0.4 else high if share > 0.6 else mid

    return (
        word([c for _, c in cells], cols, "left", "center", "right"),
        word([r for r, _ in cells], rows, "top", "middle", "bottom"),
    )


def _instance(rng: random.Random, cell_box: tuple[float, float, float, float], radius: int, shape: str, rgb: Rgb) -> Instance:
    left, top, right, bottom = cell_box
    margin = 2

    def coordinate(low: float, high: float) -> int:
        low, high = low + radius + margin, high - radius - margin
        return round(rng.uniform(low, high)) if high > low else round((low + high) / 2)

    angle = {"circle": 0.0, "square": 45.0, "triangle": -90.0, "star": -90.0}[shape]
    angle += rng.uniform(-12, 12) if shape != "circle" else 0.0
    return Instance(center=(coordinate(left, right), coordinate(top, bottom)), radius=radius, angle=round(angle, 2), rgb=rgb)


def _group(rng: random.Random, scene_size: tuple[int, int], grid: tuple[int, int], taken: set[tuple[int, int]]) -> ObjectGroup | None:
    """A group with uniformly drawn attributes in free cells, or None when none are free."""
    colour, shape, size = rng.choice(tuple(OBJECT_COLOURS)), rng.choice(SHAPES), rng.choice(SIZES)
    count = rng.choice(COUNTS)
    runs = _free_runs(grid, taken, count)
    while not runs and count > 1:  # fewer objects fit than drawn: shrink the group
        count -= 1
        runs = _free_runs(grid, taken, count)
    if not runs:
        return None
    cells = rng.choice(runs)
    taken.update(cells)
    width, height = scene_size
    rows, cols = grid
    cell_w, cell_h = width / cols, height / rows
    low, high = _RADIUS_SHARE[size]
    radius = rng.uniform(low, high) * min(cell_w, cell_h) * _SHAPE_SCALE[shape]
    instances = []
    for row, col in cells:
        box = (col * cell_w, row * cell_h, (col + 1) * cell_w, (row + 1) * cell_h)
        rgb = _jitter(OBJECT_COLOURS[colour], rng, 12)
        instances.append(_instance(rng, box, max(6, round(radius * rng.uniform(0.95, 1.05))), shape, rgb))
    horizontal, vertical = _placement_words(grid, cells)
    return ObjectGroup(colour, shape, size, count, tuple(cells), tuple(instances), horizontal, vertical)


def _clear_main(groups: Sequence[ObjectGroup]) -> bool:
    """True when the most salient group stands out from the next by SALIENCE_MARGIN."""
    salience = sorted((g.salience for g in groups), reverse=True)
    return len(salience) < 2 or salience[0] >= SALIENCE_MARGIN * salience[1]


def describe_scene(rng: random.Random, width: int, height: int) -> Scene:
    """A random scene: background and 1..MAX_GROUPS groups, the main (most salient) group first.

    A group that would be about as salient as another (within SALIENCE_MARGIN) is drawn
    again, so the main group always stands out.
    """
    grid = _grid(width, height)
    background = _background(rng)
    wanted = rng.randint(1, MAX_GROUPS)
    taken: set[tuple[int, int]] = set()
    groups: list[ObjectGroup] = []
    for _ in range(_GROUP_TRIES):
        if len(groups) == wanted:
            break
        cells = set(taken)
        group = _group(rng, (width, height), grid, cells)
        if group is None:
            break
        if _clear_main([*groups, group]):
            groups.append(group)
            taken = cells
    ordered = sorted(groups, key=lambda g: (-g.salience, g.cells))
    return Scene(width=width, height=height, grid=grid, background=background, groups=tuple(ordered))
