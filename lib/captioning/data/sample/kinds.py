"""The kind of scene a dataset holds (``SampleConfig.difficulty``): how scenes are drawn and captioned."""
from __future__ import annotations

import random

from captioning.data.sample.crowded import describe_crowded_scene, write_crowded_captions
from captioning.data.sample.relations import describe_relation_scene, write_relation_captions
from captioning.data.sample.scene import Scene, describe_scene
from captioning.data.sample.wording import write_captions

# difficulty -> (draw a scene, write its five captions)
_KINDS = {
    "groups": (describe_scene, write_captions),
    "relations": (describe_relation_scene, write_relation_captions),
    "crowded": (describe_crowded_scene, write_crowded_captions),
}


def describe(difficulty: str, rng: random.Random, width: int, height: int) -> Scene:
    """A random scene of the kind ``difficulty`` names (one of config.DIFFICULTIES)."""
    return _KINDS[difficulty][0](rng, width, height)


def captions_of(difficulty: str, scene: Scene, rng: random.Random) -> tuple[str, ...]:
    """The five captions of a scene of that kind."""
    return _KINDS[difficulty][1](scene, rng)
