"""The few JSONata expressions the state machines use, evaluated for the simulation in ``plan``.

Step Functions evaluates a JSONata state's ``"{% ... %}"`` strings with JSONata 2.x. The
definitions here use JSONata in one place only (splitting an ``s3://`` URI, which
JSONPath cannot do), so this module evaluates exactly that subset: string literals in
single or double quotes, ``$states.input.<field>...`` paths, the ``&`` concatenation
operator, parentheses, and the functions ``$substringBefore`` and ``$substringAfter``
with JSONata's rule that a separator not found returns the whole string. Anything else
raises ``JsonataError`` rather than being guessed.
"""
from __future__ import annotations

import re
from typing import Any, Callable


class JsonataError(ValueError):
    """An expression outside the supported subset, or one that fails on the given data."""


def _substring_before(text: Any, separator: Any) -> str:
    _strings("$substringBefore", text, separator)
    return text.split(separator, 1)[0] if separator in text else text


def _substring_after(text: Any, separator: Any) -> str:
    _strings("$substringAfter", text, separator)
    return text.split(separator, 1)[1] if separator in text else text


def _strings(name: str, *args: Any) -> None:
    if not all(isinstance(arg, str) for arg in args):
        raise JsonataError(f"{name} takes strings, got {args!r}")


FUNCTIONS: dict[str, Callable[..., Any]] = {"substringBefore": _substring_before, "substringAfter": _substring_after}
_TOKEN = re.compile(r"""\s*(?:(?P<string>'[^']*'|"[^"]*")|(?P<name>\$[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)|(?P<op>[&(),]))""")


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None:
            raise JsonataError(f"unsupported JSONata at {text[position:]!r}")
        kind = match.lastgroup
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str, states_input: Any):
        self.tokens, self.position, self.input, self.text = _tokens(text), 0, states_input, text

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (value is not None and token[1] != value):
            raise JsonataError(f"expected {value or 'more'} in {self.text!r}")
        self.position += 1
        return token

    def expression(self) -> Any:
        value = self.primary()
        while self.peek() == ("op", "&"):
            self.take("&")
            right = self.primary()
            _strings("&", value, right)
            value += right
        return value

    def primary(self) -> Any:
        kind, text = self.take()
        if kind == "string":
            return text[1:-1]
        if text == "(":
            value = self.expression()
            self.take(")")
            return value
        if kind != "name":
            raise JsonataError(f"unexpected {text!r} in {self.text!r}")
        if self.peek() == ("op", "("):
            return self.call(text[1:])
        return self.path(text)

    def call(self, name: str) -> Any:
        if name not in FUNCTIONS:
            raise JsonataError(f"${name} is outside the supported subset")
        self.take("(")
        args = [self.expression()]
        while self.peek() == ("op", ","):
            self.take(",")
            args.append(self.expression())
        self.take(")")
        return FUNCTIONS[name](*args)

    def path(self, text: str) -> Any:
        parts = text.split(".")
        if parts[:2] != ["$states", "input"]:
            raise JsonataError(f"only $states.input paths are supported, got {text}")
        node = self.input
        for part in parts[2:]:
            if not isinstance(node, dict) or part not in node:
                raise JsonataError(f"{text}: no field {part!r} in the data")
            node = node[part]
        return node


def evaluate(template: str, states_input: Any) -> Any:
    """The value of a ``"{% expression %}"`` string in a JSONata state."""
    if not (template.startswith("{%") and template.endswith("%}")):
        raise JsonataError(f"not a JSONata expression: {template!r}")
    parser = _Parser(template[2:-2], states_input)
    value = parser.expression()
    if parser.peek() is not None:
        raise JsonataError(f"unexpected text after the expression in {template!r}")
    return value
