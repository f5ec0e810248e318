"""The SQL-style ``where`` clause of Bullhorn's ``query`` calls, for the sandbox fake.

Supports what Bullhorn documents for ``where``: comparisons (``=``, ``<>``, ``>``, ``>=``,
``<``, ``<=``) of a field (dotted for a to-one association, ``candidate.id``) with a number,
``true``/``false`` or a quoted string; ``IN (…)``; ``AND``, ``OR``, ``NOT`` and parentheses.
:func:`compile_where` turns a clause into a predicate over a record, or raises ValueError
naming what it could not read.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

__all__ = ["compile_where"]

Predicate = Callable[[dict[str, Any]], bool]

_TOKEN = re.compile(
    r"\s*(?:(?P<num>-?\d+(?:\.\d+)?)|(?P<str>'(?:[^']|'')*')|(?P<op><>|>=|<=|!=|=|>|<)"
    r"|(?P<punct>[(),])|(?P<word>[A-Za-z_][A-Za-z0-9_.]*))"
)
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "<>": lambda a, b: a != b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a is not None and a > b,
    ">=": lambda a, b: a is not None and a >= b,
    "<": lambda a, b: a is not None and a < b,
    "<=": lambda a, b: a is not None and a <= b,
}


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise ValueError(f"cannot read the where clause at {text[pos : pos + 20]!r}")
        kind = match.lastgroup or ""
        out.append((kind, match.group(kind)))
        pos = match.end()
    return out


def _field(record: dict[str, Any], path: str) -> Any:
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise ValueError("the where clause ends too early")
        self.pos += 1
        return token

    def keyword(self, word: str) -> bool:
        token = self.peek()
        if token and token[0] == "word" and token[1].upper() == word:
            self.pos += 1
            return True
        return False

    def expect(self, value: str) -> None:
        _kind, text = self.take()
        if text != value:
            raise ValueError(f"expected {value!r} in the where clause, found {text!r}")

    def parse_or(self) -> Predicate:
        parts = [self.parse_and()]
        while self.keyword("OR"):
            parts.append(self.parse_and())
        return parts[0] if len(parts) == 1 else (lambda r: any(p(r) for p in parts))

    def parse_and(self) -> Predicate:
        parts = [self.parse_not()]
        while self.keyword("AND"):
            parts.append(self.parse_not())
        return parts[0] if len(parts) == 1 else (lambda r: all(p(r) for p in parts))

    def parse_not(self) -> Predicate:
        if self.keyword("NOT"):
            inner = self.parse_not()
            return lambda r: not inner(r)
        token = self.peek()
        if token == ("punct", "("):
            self.take()
            inner = self.parse_or()
            self.expect(")")
            return inner
        return self.parse_comparison()

    def value(self) -> Any:
        kind, text = self.take()
        if kind == "num":
            return float(text) if "." in text else int(text)
        if kind == "str":
            return text[1:-1].replace("''", "'")
        if kind == "word" and text.lower() in ("true", "false"):
            return text.lower() == "true"
        if kind == "word" and text.lower() == "null":
            return None
        raise ValueError(f"{text!r} is not a value in the where clause")

    def parse_comparison(self) -> Predicate:
        kind, name = self.take()
        if kind != "word":
            raise ValueError(f"expected a field name in the where clause, found {name!r}")
        if self.keyword("IN"):
            self.expect("(")
            values = {self.value()}
            while self.peek() == ("punct", ","):
                self.take()
                values.add(self.value())
            self.expect(")")
            return lambda r: _field(r, name) in values
        kind, op = self.take()
        if kind != "op":
            raise ValueError(f"expected an operator after {name!r}, found {op!r}")
        compare, expected = _OPS[op], self.value()
        if "." not in name:
            return lambda r: compare(r.get(name), expected)
        return lambda r: compare(_field(r, name), expected)


def compile_where(text: str) -> Predicate:
    """A predicate for the Bullhorn ``where`` clause ``text`` (ValueError when unreadable)."""
    parser = _Parser(_tokens(text))
    predicate = parser.parse_or()
    if parser.peek() is not None:
        raise ValueError(f"unexpected {parser.peek()[1]!r} in the where clause")  # type: ignore[index]
    return predicate
