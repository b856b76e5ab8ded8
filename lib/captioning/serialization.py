"""Frozen configuration dataclasses to and from JSON-ready dicts, with one policy.

Settings are stored inside artifacts (a model directory's config.json, a vocabulary's
cleaning rules, a data-parallel worker's payload) and read back into the same
dataclasses. Reading is strict: a key the dataclass does not have is refused with a
message naming the source and the expected keys, because silently dropping a setting
would rebuild something other than what was saved. Nested dataclasses and tuples are
rebuilt; missing keys take the dataclass defaults.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Mapping, TypeVar

from captioning.errors import ConfigError

T = TypeVar("T")


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a dataclass instance (nested dataclasses included; tuples become lists)."""
    return _plain(dataclasses.asdict(config))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], source: str | None = None) -> T:
    """The ``cls`` instance ``data`` describes; unknown keys raise :class:`ConfigError`."""
    where = source or cls.__name__
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected an object of {cls.__name__} settings, got {type(data).__name__}")
    fields = {field.name for field in dataclasses.fields(cls) if field.init}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ConfigError(f"{where}: unknown {cls.__name__} settings {unknown}; expected some of {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    return cls(**{name: _typed(hints[name], value, f"{where}.{name}") for name, value in data.items()})


def _typed(hint: Any, value: Any, where: str) -> Any:
    """``value`` rebuilt as ``hint`` says: a dataclass from a dict, a tuple from a list."""
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return _typed(options[0], value, where) if len(options) == 1 else value
    if dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
        return from_dict(hint, value, where)
    if origin is tuple and isinstance(value, (list, tuple)):
        args = typing.get_args(hint)
        item = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        return tuple(_typed(item, v, where) if item is not None else v for v in value)
    return value
