"""What the sample dataset is made of: its settings, palette and shape vocabulary, and seeds.

Everything is derived from ``(seed, image index)`` alone (:func:`rng_for`): the same
:class:`SampleConfig` writes byte-identical files whatever the number of worker
processes, and a 20,000-image dataset renders in parallel.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

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
# What the scenes of a dataset are like (SampleConfig.difficulty):
#   groups     one or two groups, the captions lead with the main one and say where it is
#   relations  always two groups; the captions name both and how the main one lies
#              relative to the other ("a red circle to the left of two blue squares"), which
#              a single pooled image vector hardly keeps: which colour goes with which shape,
#              and which group is where
#   crowded    three to six single shapes of mixed colours scattered over the picture,
#              unlike both others: for checking what a trained model says about such images
DIFFICULTIES = ("groups", "relations", "crowded")
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

Rgb = tuple[int, int, int]
Box = tuple[int, int, int, int]


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
    difficulty: str = "groups"  # one of DIFFICULTIES: what the scenes and captions are like
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
        if self.difficulty not in DIFFICULTIES:
            raise ValueError(f"difficulty must be one of {DIFFICULTIES}, got {self.difficulty!r}")
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


def rng_for(seed: int, index: int, purpose: str) -> random.Random:
    """An independent stream per (seed, image, purpose); string seeds hash stably."""
    return random.Random(f"captioning.sample:{seed}:{index}:{purpose}")
