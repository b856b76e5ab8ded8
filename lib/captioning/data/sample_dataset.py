"""The built-in sample dataset: synthetic pictures in the Flickr8k layout, with captions.

Flickr8k itself cannot be shipped with the code, yet every stage (caption preparation,
feature extraction, training, evaluation) needs a dataset to run on in a demo, in CI and
on a laptop. This module writes one in exactly the real layout:

* ``Flicker8k_Dataset/<id>.jpg`` (the misspelled folder name is the real one), with
  ids shaped like Flickr photo ids, ``<digits>_<10 hex characters>``;
* ``Flickr8k.token.txt`` with five ``<id>.jpg#<n><TAB><caption>`` lines per image;
* ``Flickr_8k.trainImages.txt``, ``Flickr_8k.devImages.txt``, ``Flickr_8k.testImages.txt``.

The data has to be *learnable*, otherwise a demo that trains on it proves nothing. So
every image starts as a :class:`Scene`: a background (colour and texture) and one or two
groups of objects, each group with a colour, shape, size, count and place in the picture.
The main group is clearly the most salient one (at least ``SALIENCE_MARGIN`` times the
other's apparent size), so the group the captions lead with can be told from the picture.
The image is drawn from the scene, and the five captions are written from the same scene
by five "annotators" with different framings (everything with the background; a "there
is" sentence; background first; a terse label; "a picture of" or the place first). Like
real annotators they mostly use the usual words (``USUAL_WORDING``) and now and then a
synonym, plural forms and number words, so the captions of one image usually share a core
phrase such as "three big red circles at the top" around which they differ. Attributes
are drawn independently and uniformly, so a captioner that ignores the picture cannot
guess them from word statistics, while one that looks at it can. The vocabulary is small
(about seventy words), so every word clears the usual minimum count in a 2,000-image
dataset.

Everything is derived from ``(seed, image index)`` alone: the same
:class:`SampleConfig` writes byte-identical files whatever the number of worker
processes, and a 20,000-image dataset renders in parallel.

With ``quirks=True`` the files also carry the defects of the real Flickr8k files (CRLF
line ends, blank lines, stray whitespace, an ``.jpg.1`` id, captions of a missing image,
an image without captions, a split-list entry for a missing image), and the summary
lists each one injected, so dataset readers can be tested against exact counts.
"""
from __future__ import annotations

import io
import math
import multiprocessing
import os
import random
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from types import MappingProxyType
from typing import Iterable, Mapping, Sequence

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from captioning.store import storage

IMAGE_FOLDER = "Flicker8k_Dataset"  # sic: the real folder name
TOKEN_FILE = "Flickr8k.token.txt"
SPLITS = ("train", "dev", "test")
SPLIT_FILES = MappingProxyType(
    {"train": "Flickr_8k.trainImages.txt", "dev": "Flickr_8k.devImages.txt", "test": "Flickr_8k.testImages.txt"}
)
CAPTIONS_PER_IMAGE = 5

# Object colours are saturated and far apart in hue; backgrounds are grey tones, so any
# strongly coloured pixel belongs to an object.
OBJECT_COLOURS: Mapping[str, tuple[int, int, int]] = MappingProxyType(
    {
        "red": (215, 35, 35),
        "orange": (245, 135, 20),
        "yellow": (240, 210, 30),
        "green": (40, 165, 60),
        "blue": (40, 85, 220),
        "purple": (140, 50, 180),
    }
)
BACKGROUND_COLOURS: Mapping[str, tuple[int, int, int]] = MappingProxyType(
    {"white": (232, 232, 226), "grey": (128, 128, 128), "black": (34, 34, 38)}
)
TEXTURES = ("plain", "striped", "checkered", "dotted")
SHAPES = ("circle", "square", "triangle", "star")
SIZES = ("small", "big")
COUNTS = (1, 2, 3)
MAX_GROUPS = 2
# The main group is at least this many times as salient as any other group, so which group
# the captions lead with can be seen in the picture (two near-equal groups would make the
# choice a coin toss no captioner could learn). Drawing gives up after _GROUP_TRIES groups.
SALIENCE_MARGIN = 2.0
_GROUP_TRIES = 20

# Object radius as a share of the smaller side of its grid cell.
_RADIUS_SHARE = MappingProxyType({"small": (0.19, 0.23), "big": (0.38, 0.43)})
# Pointed shapes cover less of their circle, so they are drawn a little larger to look as big.
_SHAPE_SCALE = MappingProxyType({"circle": 0.92, "square": 1.08, "triangle": 1.12, "star": 1.12})
_STAR_INNER = 0.5  # inner radius of the five-pointed star, as a share of the outer one

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

Rgb = tuple[int, int, int]
Box = tuple[int, int, int, int]


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class SampleConfig:
    """What to generate. Equal configs write byte-identical datasets."""

    num_images: int = 2000  # regular images, each with five captions and in one split
    seed: int = 0  # every image, caption and split assignment derives from it
    image_size: tuple[int, int] = (320, 240)  # (width, height) of a typical landscape image
    size_jitter: float = 0.08  # each side varies by up to this share, like real photos
    portrait_share: float = 0.2  # share of images turned upright (width and height swapped)
    jpeg_quality: int = 85  # typical camera/web quality: real compression artefacts, small files
    noise: int = 8  # grain amplitude in grey levels, so no region is perfectly flat
    train_fraction: float = 0.75  # Flickr8k's lists hold 6000 / 1000 / 1000 images
    dev_fraction: float = 0.125
    test_fraction: float = 0.125
    quirks: bool = False  # add the real files' defects (see the module docstring)
    workers: int = 0  # rendering processes; 0: one per available CPU, 1: no pool
    pool_threshold: int = 400  # fewer images than this render in-process (pool start-up costs more)

    def __post_init__(self) -> None:
        if self.num_images < 1:
            raise ValueError(f"num_images must be at least 1, got {self.num_images}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if len(self.image_size) != 2 or min(self.image_size) < 64:
            raise ValueError(f"image_size must be (width, height), both at least 64, got {self.image_size!r}")
        object.__setattr__(self, "image_size", (int(self.image_size[0]), int(self.image_size[1])))
        if not 0 <= self.size_jitter < 0.5:
            raise ValueError(f"size_jitter must be in [0, 0.5), got {self.size_jitter}")
        if not 0 <= self.portrait_share <= 1:
            raise ValueError(f"portrait_share must be in [0, 1], got {self.portrait_share}")
        if not 1 <= self.jpeg_quality <= 95:
            raise ValueError(f"jpeg_quality must be in 1..95, got {self.jpeg_quality}")
        if not 0 <= self.noise <= 64:
            raise ValueError(f"noise must be in 0..64, got {self.noise}")
        fractions = self.split_fractions
        if min(fractions.values()) < 0 or abs(sum(fractions.values()) - 1) > 1e-6:
            raise ValueError(f"split fractions must be >= 0 and sum to 1, got {dict(fractions)}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0 (0: one per CPU), got {self.workers}")
        if self.quirks and self.split_counts["train"] < 2:
            raise ValueError("quirks=True needs at least two training images; raise num_images")

    @property
    def split_fractions(self) -> Mapping[str, float]:
        return MappingProxyType({"train": self.train_fraction, "dev": self.dev_fraction, "test": self.test_fraction})

    @property
    def split_counts(self) -> Mapping[str, int]:
        """Images per split: fractions of num_images, rounded; test takes the remainder."""
        train = round(self.num_images * self.train_fraction)
        dev = min(round(self.num_images * self.dev_fraction), self.num_images - train)
        return MappingProxyType({"train": train, "dev": dev, "test": self.num_images - train - dev})

    def resolved_workers(self) -> int:
        if self.workers:
            return self.workers
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not on Linux
            return max(1, os.cpu_count() or 1)


# --------------------------------------------------------------------------- scenes


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


def _rng(seed: int, index: int, purpose: str) -> random.Random:
    """An independent stream per (seed, image, purpose); string seeds hash stably."""
    return random.Random(f"captioning.sample:{seed}:{index}:{purpose}")


def _image_id(seed: int, index: int, attempt: int) -> str:
    rng = _rng(seed, index, f"id{attempt}")
    return f"{rng.randint(100_000_000, 3_799_999_999)}_{rng.getrandbits(40):010x}.jpg"


def _image_size(rng: random.Random, config: SampleConfig) -> tuple[int, int]:
    width, height = (round(side * (1 + rng.uniform(-config.size_jitter, config.size_jitter))) for side in config.image_size)
    return (height, width) if rng.random() < config.portrait_share else (width, height)


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


# --------------------------------------------------------------------------- captions

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


def sample_image(config: SampleConfig, index: int, attempt: int = 0) -> SampleImage:
    """Image ``index`` of the dataset ``config`` describes; ``attempt`` > 0 only on an id clash."""
    rng = _rng(config.seed, index, "scene")
    width, height = _image_size(rng, config)
    scene = describe_scene(rng, width, height)
    captions = write_captions(scene, _rng(config.seed, index, "captions"))
    return SampleImage(index=index, image_id=_image_id(config.seed, index, attempt), scene=scene, captions=captions)


def plan_images(config: SampleConfig) -> tuple[SampleImage, ...]:
    """Every image to write, in index order: num_images regular ones, then quirk extras."""
    total = config.num_images + (_EXTRA_IMAGES if config.quirks else 0)
    used: set[str] = set()
    images = []
    for index in range(total):
        image = sample_image(config, index)
        attempt = 0
        while image.image_id in used:  # a 1-in-2^40 clash: take the next id of this image's stream
            attempt += 1
            image = SampleImage(index, _image_id(config.seed, index, attempt), image.scene, image.captions)
        used.add(image.image_id)
        images.append(image)
    return tuple(images)


# --------------------------------------------------------------------------- rendering


def _polygon(instance: Instance, shape: str) -> list[tuple[float, float]]:
    x, y = instance.center
    sides = {"square": 4, "triangle": 3, "star": 10}[shape]
    points = []
    for k in range(sides):
        radius = instance.radius * (_STAR_INNER if shape == "star" and k % 2 else 1.0)
        theta = math.radians(instance.angle + 360.0 * k / sides)
        points.append((x + radius * math.cos(theta), y + radius * math.sin(theta)))
    if shape == "triangle":  # centre the triangle's height on the instance centre
        shift = instance.radius * 0.25 * math.cos(math.radians(instance.angle + 90.0))
        points = [(px, py + shift) for px, py in points]
    return points


def _draw_background(draw: ImageDraw.ImageDraw, background: Background, size: tuple[int, int]) -> None:
    width, height = size
    step, fill = background.spacing, background.pattern_rgb
    if background.texture == "striped":
        for start in range(0, width if background.vertical else height, step * 2):
            box = (start, 0, start + step - 1, height) if background.vertical else (0, start, width, start + step - 1)
            draw.rectangle(box, fill=fill)
    elif background.texture == "checkered":
        for row, top in enumerate(range(0, height, step)):
            for col, left in enumerate(range(0, width, step)):
                if (row + col) % 2:
                    draw.rectangle((left, top, left + step - 1, top + step - 1), fill=fill)
    elif background.texture == "dotted":
        dot = max(2, step // 6)
        for top in range(step // 2, height, step):
            for left in range(step // 2, width, step):
                draw.ellipse((left - dot, top - dot, left + dot, top + dot), fill=fill)


def _draw_group(draw: ImageDraw.ImageDraw, group: ObjectGroup) -> None:
    for instance in group.instances:
        outline = tuple(round(c * 0.7) for c in instance.rgb)
        if group.shape == "circle":
            draw.ellipse(instance.box, fill=instance.rgb, outline=outline, width=2)
        else:
            draw.polygon(_polygon(instance, group.shape), fill=instance.rgb, outline=outline, width=2)


def _add_grain(image: Image.Image, amplitude: int, seed: Sequence[int]) -> Image.Image:
    """Film-like grain: the same random offset in -amplitude..amplitude on a pixel's three channels."""
    if amplitude == 0:
        return image
    random_bytes = np.random.default_rng(list(seed)).bytes(image.width * image.height)
    levels = [value * (2 * amplitude + 1) // 256 for value in range(256)]  # 0..2*amplitude
    grain = Image.frombytes("L", image.size, random_bytes).point(levels)
    return ImageChops.add(image, Image.merge("RGB", (grain, grain, grain)), scale=1.0, offset=-amplitude)


def render_scene(scene: Scene, noise: int = 8, noise_seed: Sequence[int] = (0,)) -> Image.Image:
    """The scene as an RGB image: background texture, objects with outlines, grain."""
    image = Image.new("RGB", (scene.width, scene.height), scene.background.rgb)
    draw = ImageDraw.Draw(image)
    _draw_background(draw, scene.background, image.size)
    for group in scene.groups:
        _draw_group(draw, group)
    return _add_grain(image, noise, noise_seed)


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def image_bytes(config: SampleConfig, image: SampleImage) -> bytes:
    """The JPEG file of one planned image; depends only on the config and the image."""
    rendered = render_scene(image.scene, config.noise, (config.seed, image.index, 1))
    return encode_jpeg(rendered, config.jpeg_quality)


@dataclass(frozen=True)
class _RenderJob:
    config: SampleConfig
    images_uri: str
    images: tuple[SampleImage, ...]


def _render_and_write(job: _RenderJob) -> int:
    """Render, encode and write a chunk of images; S3 uploads overlap in threads."""

    def one(image: SampleImage) -> int:
        data = image_bytes(job.config, image)
        storage.write_bytes(storage.join(job.images_uri, image.image_id), data)
        return len(data)

    if storage.is_s3(job.images_uri):
        with ThreadPoolExecutor(max_workers=8) as threads:
            return sum(threads.map(one, job.images))
    return sum(one(image) for image in job.images)


def _chunks(items: Sequence[SampleImage], size: int) -> Iterable[tuple[SampleImage, ...]]:
    for start in range(0, len(items), size):
        yield tuple(items[start : start + size])


def _write_images(config: SampleConfig, images_uri: str, images: Sequence[SampleImage]) -> int:
    """Write every image file; returns the bytes written."""
    workers = config.resolved_workers()
    if workers <= 1 or len(images) < config.pool_threshold:
        return _render_and_write(_RenderJob(config, images_uri, tuple(images)))
    chunk = max(1, min(250, len(images) // (workers * 4)))
    jobs = [_RenderJob(config, images_uri, part) for part in _chunks(images, chunk)]
    workers = min(workers, len(jobs))
    # "spawn": the parent may hold threads (the S3 event loop) that a fork would copy half-way.
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return sum(pool.map(_render_and_write, jobs))


# --------------------------------------------------------------------------- text files and quirks


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


def _token_file_lines(images: Sequence[SampleImage], extras: Sequence[SampleImage], config: SampleConfig) -> list[_Line]:
    blocks = [_token_lines(image) for image in images]
    if not config.quirks:
        return [line for block in blocks for line in block]
    rng = _rng(config.seed, -1, "token-quirks")
    lines = [line for block in blocks for line in block]
    lines = _mark_lines(lines, rng, crlf=3, padded=3)
    blocks = [lines[k : k + CAPTIONS_PER_IMAGE] for k in range(0, len(lines), CAPTIONS_PER_IMAGE)]
    # A second set of captions under "<id>.jpg.1", right after the image's own, as in the real file.
    doubled = rng.randrange(len(images))
    second = write_captions(images[doubled].scene, _rng(config.seed, images[doubled].index, "captions-suffix"))
    blocks[doubled] = blocks[doubled] + _token_lines(images[doubled], QUIRK_ID_SUFFIX, ".1", second)
    # Captions of an image that is never written.
    blocks.insert(rng.randint(0, len(blocks)), _token_lines(extras[0], QUIRK_MISSING_IMAGE_CAPTION))
    return _insert_blanks([line for block in blocks for line in block], rng, count=2)


def _split_file_lines(split: str, ids: Sequence[str], extras: Sequence[SampleImage], config: SampleConfig) -> list[_Line]:
    lines = [_Line(image_id, image_id=image_id) for image_id in ids]
    if not config.quirks:
        return lines
    rng = _rng(config.seed, -1, f"{split}-quirks")
    if split == "train":
        return _insert_blanks(_mark_lines(lines, rng, crlf=1, padded=1), rng, count=1)
    if split == "test":
        missing = extras[2].image_id
        lines.insert(rng.randint(0, len(lines)), _Line(missing, kind=QUIRK_SPLIT_MISSING_IMAGE, image_id=missing))
    return lines


def _text_and_quirks(file: str, lines: Sequence[_Line]) -> tuple[str, list[Quirk]]:
    quirks = [Quirk(line.kind, file, number, line.image_id) for number, line in enumerate(lines, start=1) if line.kind]
    return "".join(line.text + line.ending for line in lines), quirks


def assign_splits(config: SampleConfig) -> dict[str, tuple[int, ...]]:
    """Split -> image indices (ascending): a seeded shuffle cut at the configured shares."""
    order = list(range(config.num_images))
    _rng(config.seed, -1, "splits").shuffle(order)
    result, start = {}, 0
    for split in SPLITS:
        count = config.split_counts[split]
        result[split] = tuple(sorted(order[start : start + count]))
        start += count
    return result


# --------------------------------------------------------------------------- entry point


@dataclass(frozen=True)
class SampleSummary:
    """What :func:`generate_sample_dataset` wrote."""

    root: str  # the dataset URI, as given
    images_uri: str  # the Flicker8k_Dataset folder
    token_uri: str  # Flickr8k.token.txt
    split_uris: Mapping[str, str]  # split -> list file URI
    split_counts: Mapping[str, int]  # split -> regular images listed (quirk entries not counted)
    num_images: int  # regular images: in the folder, captioned five times, in one split
    image_files: int  # JPEG files written, quirk extras included
    caption_lines: int  # non-blank lines of the token file, quirk lines included
    image_bytes: int  # total size of the JPEG files
    quirks: tuple[Quirk, ...]  # every defect injected, in file order; empty without quirks

    def quirk_counts(self) -> dict[str, int]:
        """Quirk kind -> number injected (kinds not injected are left out)."""
        counts: dict[str, int] = {}
        for quirk in self.quirks:
            counts[quirk.kind] = counts.get(quirk.kind, 0) + 1
        return counts


def _check_image_folder(images_uri: str, expected: set[str]) -> None:
    """Refuse to mix with another dataset's images: they would be read as part of this one."""
    if not storage.exists(images_uri):
        return
    stale = [f.uri for f in storage.list_files(images_uri) if storage.basename(f.uri) not in expected]
    if stale:
        raise ValueError(
            f"{images_uri}: already holds {len(stale)} other files (e.g. {stale[0]}); "
            "write the sample dataset to an empty or new folder"
        )


def generate_sample_dataset(out_uri: str, config: SampleConfig = SampleConfig()) -> SampleSummary:
    """Write the sample dataset at ``out_uri`` (local path, file:// or s3://)."""
    planned = plan_images(config)
    images, extras = planned[: config.num_images], planned[config.num_images :]
    images_uri = storage.join(out_uri, IMAGE_FOLDER)
    written = [*images, *extras[1:2]]  # extras[0] has captions only, extras[2] only a split entry
    _check_image_folder(images_uri, {image.image_id for image in written})
    total_bytes = _write_images(config, images_uri, written)

    quirks: list[Quirk] = []
    if config.quirks:
        quirks.append(Quirk(QUIRK_IMAGE_WITHOUT_CAPTIONS, f"{IMAGE_FOLDER}/{extras[1].image_id}", None, extras[1].image_id))
    token_text, token_quirks = _text_and_quirks(TOKEN_FILE, _token_file_lines(images, extras, config))
    quirks += token_quirks
    split_uris, split_texts = {}, {}
    for split, indices in assign_splits(config).items():
        lines = _split_file_lines(split, [images[i].image_id for i in indices], extras, config)
        split_texts[split], split_quirks = _text_and_quirks(SPLIT_FILES[split], lines)
        split_uris[split] = storage.join(out_uri, SPLIT_FILES[split])
        quirks += split_quirks
    for split in SPLITS:
        storage.write_text(split_uris[split], split_texts[split])
    token_uri = storage.join(out_uri, TOKEN_FILE)
    storage.write_text(token_uri, token_text)  # last: a token file means the images are all there

    return SampleSummary(
        root=out_uri,
        images_uri=images_uri,
        token_uri=token_uri,
        split_uris=MappingProxyType(split_uris),
        split_counts=config.split_counts,
        num_images=len(images),
        image_files=len(written),
        caption_lines=sum(1 for line in token_text.splitlines() if line.strip()),
        image_bytes=total_bytes,
        quirks=tuple(quirks),
    )
