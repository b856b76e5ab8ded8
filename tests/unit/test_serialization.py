"""Configuration dataclasses to dicts and back: nested settings, tuples, and unknown keys refused."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from captioning.errors import ConfigError, UserError
from captioning.serialization import from_dict, to_dict


@dataclass(frozen=True)
class Inner:
    size: int = 3
    colours: tuple[str, ...] = ("red",)


@dataclass(frozen=True)
class Outer:
    name: str
    inner: Inner = field(default_factory=Inner)
    optional: Inner | None = None
    ratio: float = 0.5


def test_round_trip_through_json_rebuilds_nested_dataclasses_and_tuples():
    config = Outer("x", Inner(5, ("blue", "green")), Inner(1, ()), 0.25)

    data = json.loads(json.dumps(to_dict(config)))

    assert data == {"name": "x", "inner": {"size": 5, "colours": ["blue", "green"]}, "optional": {"size": 1, "colours": []}, "ratio": 0.25}
    assert from_dict(Outer, data) == config


def test_missing_keys_take_the_defaults():
    assert from_dict(Outer, {"name": "y", "inner": {"size": 7}}) == Outer("y", Inner(7, ("red",)))


def test_unknown_keys_are_refused_naming_the_source_and_the_nested_place():
    with pytest.raises(ConfigError, match=r"model/config.json: unknown Outer settings \['colour'\]"):
        from_dict(Outer, {"name": "z", "colour": "red"}, "model/config.json")
    with pytest.raises(ConfigError, match=r"cfg.inner: unknown Inner settings \['depth'\]; expected some of \['colours', 'size'\]"):
        from_dict(Outer, {"name": "z", "inner": {"depth": 2}}, "cfg")


def test_a_non_object_is_refused_as_a_user_error():
    with pytest.raises(UserError, match="expected an object of Outer settings, got list"):
        from_dict(Outer, [1, 2])
