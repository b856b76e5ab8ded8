"""The kind of scene a dataset holds (``SampleConfig.difficulty``): how scenes are drawn and captioned."""
from __future__ import annotations

import random

from captioning.data.sample.crowded import describe_crowded_scene, write_crowded_captions
from captioning.data.sample.relations import describe_relation_scene, write_relation_captions
from captioning.data.sample.scene import Scene, describe_scene
from captioning.data.sample.wording import write_captions

_DESCRIBE = {"groups": describe_scene, "relations": describe_relation_scene, "crowded": describe_crowded_scene}


def describe(difficulty: str, rng: random.Random, width: int, height: int) -> Scene:
    """A random scene of the kind ``difficulty`` names (one of config.DIFFICULTIES)."""
    return _DESCRIBE[difficulty](rng, width, height)


def captions_of(difficulty: str, scene: Scene, rng: random.Random) -> tuple[str, ...]:
    """The five captions of a scene of that kind."""
    if difficulty == "relations":
        return write_relation_captions(scene, rng)
    if difficulty == "crowded":
        return write_crowded_captions(scene, rng)
    return write_captions(scene, rng)
