"""The expression language of Step Functions (JSONPath mode): writing it and evaluating it.

Writing: ``quote`` turns a Python string into an intrinsic-function string literal,
``quote_template`` does the same for a States.Format template (keeping its ``{}``
placeholders) and ``call`` builds ``States.X(...)`` invocations.

Evaluating: the state machines here only compute values in Pass states and result
selectors (paths and the intrinsics States.Format, States.Array,
States.JsonMerge, States.ArrayLength, States.StringSplit and States.StringToJson), so
this module evaluates exactly that subset, with the rules the Step Functions
documentation gives: ``Key.$`` fields hold a path or an intrinsic, ``\\'``, ``\\{``,
``\\}`` and ``\\\\`` are the escapes inside string literals, a path with ``[*]`` returns
the list of every match (``$.a[*][*]`` flattens a list of lists), ResultPath ``null``
discards a result.
``plan`` uses it to compute what a state machine would run, without AWS. Anything outside
the subset raises ``AslError`` rather than being guessed.
"""
from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

_OPEN, _CLOSE = "\ue000", "\ue001"  # escaped braces inside a string literal, until formatting
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")


class AslError(ValueError):
    """An expression outside the supported subset, or one that fails on the given data."""


def quote(text: str) -> str:
    """``text`` as an intrinsic-function string literal."""
    escaped = text.replace("\\", "\\\\").replace("'", "\\'").replace("{", "\\{").replace("}", "\\}")
    return f"'{escaped}'"


def quote_template(template: str) -> str:
    """A States.Format template literal: ``{}`` stays a placeholder, other braces are escaped."""
    return "'" + "{}".join(quote(part)[1:-1] for part in template.split("{}")) + "'"


def call(function: str, *args: str) -> str:
    """``States.<function>(arg, ...)`` from already-rendered arguments."""
    return f"States.{function}({', '.join(args)})"


def placeholders(text: str) -> set[str]:
    """The ``${Name}`` definition substitutions used in ``text``."""
    return set(_PLACEHOLDER.findall(text))


def substitute(text: str, values: Mapping[str, str]) -> str:
    """Replace ``${Name}`` as CloudFormation's DefinitionSubstitutions does (JSON-escaped)."""
    missing = placeholders(text) - set(values)
    if missing:
        raise AslError(f"no value for definition substitution(s): {', '.join(sorted(missing))}")
    return _PLACEHOLDER.sub(lambda m: json.dumps(values[m.group(1)])[1:-1], text)


# --- paths -------------------------------------------------------------------------------

_SEGMENT = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\['([^']*)'\]|\[(\d+)\]|\[\*\]")


@dataclass(frozen=True)
class Context:
    """The parts of the context object (``$$``) the simulation knows."""

    execution_name: str
    execution_input: Any
    entered_time: str = ""  # $$.State.EnteredTime of the current state

    def as_json(self) -> dict:
        return {"Execution": {"Name": self.execution_name, "Input": self.execution_input}, "State": {"EnteredTime": self.entered_time}}


def read_path(path: str, data: Any, context: Context | None = None) -> Any:
    if path.startswith("$$"):
        if context is None:
            raise AslError(f"{path}: no context object")
        root, rest = context.as_json(), path[2:]
    elif path.startswith("$"):
        root, rest = data, path[1:]
    else:
        raise AslError(f"not a path: {path!r}")
    nodes, wildcard, position = [root], False, 0
    while position < len(rest):
        match = _SEGMENT.match(rest, position)
        if match is None:
            raise AslError(f"{path}: unsupported path syntax at {rest[position:]!r}")
        position = match.end()
        name, quoted, index = match.group(1), match.group(2), match.group(3)
        following = []
        for node in nodes:
            if name is not None or quoted is not None:
                key = name if name is not None else quoted
                if isinstance(node, dict) and key in node:
                    following.append(node[key])
                elif not wildcard:
                    raise AslError(f"{path}: no field {key!r} in the data")
            elif index is not None:
                if isinstance(node, list) and int(index) < len(node):
                    following.append(node[int(index)])
                elif not wildcard:
                    raise AslError(f"{path}: no item {index} in the data")
            else:
                wildcard = True
                if isinstance(node, list):
                    following.extend(node)
                elif isinstance(node, dict):
                    following.extend(node.values())
        nodes = following
    return nodes if wildcard else nodes[0]


def write_path(path: str | None, data: Any, value: Any) -> Any:
    """``data`` with ``value`` placed at a ResultPath (``None`` keeps ``data`` unchanged)."""
    if path is None:
        return data
    if path == "$":
        return value
    result = copy.deepcopy(data)
    keys = [m.group(1) for m in re.finditer(r"\.([A-Za-z_][A-Za-z0-9_]*)", path)]
    if "$" + "".join(f".{k}" for k in keys) != path:
        raise AslError(f"unsupported ResultPath {path!r}")
    node = result
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    return result


# --- intrinsic functions -----------------------------------------------------------------


@dataclass(frozen=True)
class _Literal:
    text: str  # escaped braces kept as _OPEN/_CLOSE


@dataclass(frozen=True)
class _Call:
    name: str
    args: tuple


@dataclass(frozen=True)
class _Path:
    path: str


class _Reader:
    def __init__(self, text: str):
        self.text, self.pos = text, 0

    def fail(self, message: str) -> AslError:
        return AslError(f"{message} at position {self.pos} of {self.text!r}")

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] == " ":
            self.pos += 1

    def expression(self):
        self.skip()
        text, pos = self.text, self.pos
        if text.startswith("States.", pos):
            end = text.index("(", pos) if "(" in text[pos:] else -1
            if end < 0:
                raise self.fail("intrinsic without '('")
            name, self.pos = text[pos + 7 : end], end + 1
            args = []
            self.skip()
            if self.text[self.pos] == ")":
                self.pos += 1
                return _Call(name, ())
            while True:
                args.append(self.expression())
                self.skip()
                if self.pos >= len(text):
                    raise self.fail("unterminated intrinsic")
                if text[self.pos] == ",":
                    self.pos += 1
                elif text[self.pos] == ")":
                    self.pos += 1
                    return _Call(name, tuple(args))
                else:
                    raise self.fail("expected ',' or ')'")
        if text.startswith("'", pos):
            return self.string()
        if text.startswith("$", pos):
            depth, end = 0, pos
            while end < len(text):
                char = text[end]
                if char == "[":
                    depth += 1
                elif char == "]":
                    depth -= 1
                elif char in ",)" and depth == 0:
                    break
                end += 1
            self.pos = end
            return _Path(text[pos:end].strip())
        match = re.compile(r"-?\d+(\.\d+)?|true|false|null").match(text, pos)
        if match is None:
            raise self.fail("expected a string, number, path or intrinsic")
        self.pos = match.end()
        return json.loads(match.group(0))

    def string(self) -> _Literal:
        out, self.pos = [], self.pos + 1
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "\\":
                escaped = self.text[self.pos + 1 : self.pos + 2]
                if escaped not in ("'", "{", "}", "\\"):
                    raise self.fail(f"unknown escape \\{escaped}")
                out.append({"{": _OPEN, "}": _CLOSE}.get(escaped, escaped))
                self.pos += 2
            elif char == "'":
                self.pos += 1
                return _Literal("".join(out))
            else:
                out.append(char)
                self.pos += 1
        raise self.fail("unterminated string")


def _plain(text: str) -> str:
    return text.replace(_OPEN, "{").replace(_CLOSE, "}")


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _format(template: Any, *args: Any) -> str:
    if not isinstance(template, str):
        raise AslError("States.Format needs a string template")
    parts = template.split("{}")
    if len(parts) - 1 != len(args):
        raise AslError(f"States.Format template {_plain(template)!r} has {len(parts) - 1} placeholders for {len(args)} arguments")
    if "{" in template.replace("{}", "") or "}" in template.replace("{}", ""):
        raise AslError(f"States.Format template {_plain(template)!r} has an unescaped brace")
    out = parts[0]
    for arg, part in zip(args, parts[1:]):
        out += _as_text(arg) + part
    return _plain(out)


def _json_merge(left: Any, right: Any, deep: Any) -> dict:
    if not isinstance(left, dict) or not isinstance(right, dict) or deep is not False:
        raise AslError("States.JsonMerge here takes two objects and false (shallow merge)")
    return {**left, **right}


def _array_length(value: Any) -> int:
    if not isinstance(value, list):
        raise AslError(f"States.ArrayLength needs an array, got {type(value).__name__}")
    return len(value)


def _string_split(text: Any, delimiters: Any) -> list[str]:
    """Split at every character of ``delimiters``; empty pieces are outside the subset."""
    if not isinstance(text, str) or not isinstance(delimiters, str) or not delimiters:
        raise AslError("States.StringSplit takes a string and a non-empty string of delimiter characters")
    pieces = re.split("[" + re.escape(delimiters) + "]", text)
    if any(piece == "" for piece in pieces):
        raise AslError(f"States.StringSplit of {text!r}: empty pieces are outside the supported subset")
    return pieces


def _string_to_json(text: Any) -> Any:
    if not isinstance(text, str):
        raise AslError("States.StringToJson needs a string")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise AslError(f"States.StringToJson: not JSON ({error})") from None


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "Array": lambda *args: list(args),
    "JsonMerge": _json_merge,
    "ArrayLength": _array_length,
    "StringSplit": _string_split,
    "StringToJson": _string_to_json,
}


def _evaluate(node: Any, data: Any, context: Context | None, template: bool = False) -> Any:
    if isinstance(node, _Literal):
        return node.text if template else _plain(node.text)
    if isinstance(node, _Path):
        return read_path(node.path, data, context)
    if isinstance(node, _Call):
        if node.name == "Format":
            if not node.args:
                raise AslError("States.Format needs a template")
            return _format(_evaluate(node.args[0], data, context, template=True), *(_evaluate(a, data, context) for a in node.args[1:]))
        if node.name not in _FUNCTIONS:
            raise AslError(f"States.{node.name} is outside the supported subset")
        return _FUNCTIONS[node.name](*(_evaluate(a, data, context) for a in node.args))
    return node


def evaluate(expression: str, data: Any, context: Context | None = None) -> Any:
    """The value of a ``Key.$`` field: a path or an intrinsic invocation."""
    reader = _Reader(expression)
    node = reader.expression()
    reader.skip()
    if reader.pos != len(expression):
        raise reader.fail("unexpected text after the expression")
    return _evaluate(node, data, context)


def count_intrinsics(expression: str) -> int:
    """How many intrinsic invocations a field holds (Step Functions allows at most 10)."""
    return len(re.findall(r"States\.[A-Za-z]+\(", expression))


def resolve(template: Any, data: Any, context: Context | None = None) -> Any:
    """A Parameters (or ResultSelector) template filled from ``data``."""
    if isinstance(template, dict):
        out = {}
        for key, value in template.items():
            if key.endswith(".$"):
                if not isinstance(value, str):
                    raise AslError(f"{key} must hold a path or intrinsic string")
                out[key[:-2]] = evaluate(value, data, context)
            else:
                out[key] = resolve(value, data, context)
        return out
    if isinstance(template, list):
        return [resolve(item, data, context) for item in template]
    return template
