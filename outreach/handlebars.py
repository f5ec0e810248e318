"""Which data a SendGrid dynamic template needs: the variables of its Handlebars source.

SendGrid renders a dynamic template with the ``dynamic_template_data`` of each
personalization, and a variable that is not there renders as nothing ("object failure"
in SendGrid's Handlebars reference). The engine promises that no message leaves with an
unfilled placeholder (DESIGN.md, invariant 3), so before a touch goes to a dynamic
template its data is checked against what the template's active version uses.

:func:`template_variables` reads the subject, HTML and plain-text parts and returns the
data paths (``candidate.first_name``) a render needs, with where each is first used:

* **required**: printed by ``{{path}}`` or ``{{{path}}}``, an argument of ``formatDate``,
  or ``{{insert path}}`` without a default;
* **optional**: a variable whose absence the template handles itself: a condition of
  ``#if``, ``#unless``, ``#each``, ``#with``, ``#equals``, ``#notEquals``,
  ``#greaterThan``, ``#lessThan``, ``#and``, ``#or`` or ``length`` (missing is false,
  empty or 0), ``{{insert path "default=…"}}`` (or ``{{insert path "…"}}``), and a
  variable printed only inside a block guarded by itself: ``{{#if x}}…{{x}}…{{/if}}``,
  the ``{{else}}`` of ``{{#unless x}}``, the body of ``{{#and x y}}``. A variable
  printed inside a block guarded by something else is still required.

Names local to a block are not data paths: inside ``{{#each list}}`` the item
(``this``, ``this.name``, ``name``) and ``@index``, ``@key``, ``@first``, ``@last``, and
block parameters (``{{#each list as |item i|}}``). ``@root.x`` and ``../x`` reach the
outer data. ``{{#with x}}`` makes ``{{y}}`` inside mean ``x.y``. Comments (``{{!…}}``,
``{{!-- … --}}``), escaped mustaches (``\\{{…}}``) and partials print no data.

Example::

    found = template_variables({"subject": "Hi {{candidate.first_name}}",
                                "html_content": "{{#if job.title}}for {{job.title}}{{/if}}"})
    [use.path for use in found.required]          # ['candidate.first_name']
    found.missing({"candidate": {}})              # [Use('candidate.first_name', 'subject', 1)]
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["HandlebarsError", "TemplateVariables", "Use", "provides", "template_variables"]

#: block helpers whose arguments are conditions: a missing value is simply false
_CONDITION_BLOCKS = frozenset(
    {"if", "unless", "each", "with", "equals", "notEquals", "greaterThan", "lessThan", "and", "or"}
)
#: every helper SendGrid documents, plus Handlebars' built-ins: never a data name
_HELPERS = _CONDITION_BLOCKS | {"insert", "formatDate", "length", "lookup", "log"}
_DATA_VARIABLES = re.compile(r"^@(?:index|key|first|last|level)\b")
_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")
_LITERALS = frozenset({"true", "false", "null", "undefined"})
_BLOCK_PARAMS = re.compile(r"\bas\s*\|([^|]*)\|\s*$")
_COMMENT_OPEN = re.compile(r"\{\{~?!(--)?")
_LONG_COMMENT_CLOSE = re.compile(r"--~?\}\}")


class HandlebarsError(ValueError):
    """The template cannot be read: an unclosed ``{{``, a block closed by the wrong name."""

    def __init__(self, part: str, line: int, message: str) -> None:
        self.part = part
        self.line = line
        self.message = message
        super().__init__(f"{part} line {line}: {message}")


@dataclass(frozen=True)
class Use:
    """A data path and where the template first uses it (``part`` line ``line``)."""

    path: str
    part: str
    line: int

    def __str__(self) -> str:
        return f"{self.path} ({self.part} line {self.line})"


@dataclass(frozen=True)
class TemplateVariables:
    """The data paths a template uses: ``required`` ones render blank when missing."""

    required: tuple[Use, ...]
    optional: tuple[Use, ...]

    def missing(self, data: Mapping[str, Any]) -> list[Use]:
        """The required paths ``data`` does not provide (absent, or ``None``).

        An empty string counts as provided: it is a value the sender chose. (The engine
        leaves CRM fields that are empty out of its data altogether, so for a touch an
        empty CRM field is missing, as it is for a local template.)
        """
        return [use for use in self.required if not provides(data, use.path)]

    def paths(self) -> set[str]:
        """Every path used, required or optional."""
        return {use.path for use in (*self.required, *self.optional)}


def template_variables(parts: Mapping[str, str | None]) -> TemplateVariables:
    """The variables of a template given as ``{part name: source}`` (subject, html_content,
    plain_content); a part that is ``None`` or empty is skipped.

    Raises :class:`HandlebarsError` for source SendGrid could not render either.
    """
    collector = _Collector()
    for part, source in parts.items():
        if source:
            _Reader(part, source, collector).read()
    required = tuple(collector.required.values())
    optional = tuple(u for p, u in collector.optional.items() if p not in collector.required)
    return TemplateVariables(required, optional)


def provides(data: Any, path: str) -> bool:
    """Whether ``data`` has a value (not ``None``) at the dotted ``path``."""
    value = data
    for segment in path.split("."):
        if isinstance(value, Mapping):
            if segment not in value:
                return False
            value = value[segment]
        elif isinstance(value, list | tuple) and segment.isdigit():
            index = int(segment)
            if index >= len(value):
                return False
            value = value[index]
        else:
            return False
        if value is None:
            return False
    return True


# -- reading -------------------------------------------------------------------------------


class _Collector:
    """Uses gathered over all parts: the first use of each path, required wins."""

    def __init__(self) -> None:
        self.required: dict[str, Use] = {}
        self.optional: dict[str, Use] = {}

    def add(self, use: Use, required: bool) -> None:
        target = self.required if required else self.optional
        target.setdefault(use.path, use)


@dataclass
class _Scope:
    """A context: the data path ``this`` stands for (None: an item of a list, not data)."""

    prefix: tuple[str, ...] | None


@dataclass
class _Frame:
    """An open block: its helper, the guards of the branch being read, what it pushed."""

    helper: str
    line: int
    guards: set[tuple[str, ...]] = field(default_factory=set)
    else_guards: set[tuple[str, ...]] = field(default_factory=set)
    pushed_scope: bool = False
    params: frozenset[str] = frozenset()
    in_else: bool = False
    #: opened by ``{{else if …}}``: closed together with the block it continues
    chained: bool = False


@dataclass(frozen=True)
class _Sub:
    """A subexpression ``(helper args…)``."""

    helper: str
    args: tuple[Any, ...]


@dataclass(frozen=True)
class _Str:
    """A string literal."""

    value: str


class _Reader:
    """Reads one part: finds each ``{{…}}``, keeps the block stack, records each use."""

    def __init__(self, part: str, source: str, collector: _Collector) -> None:
        self.part = part
        self.source = source
        self.collector = collector
        self.scopes: list[_Scope] = [_Scope(())]
        self.frames: list[_Frame] = []
        self.line = 1

    def read(self) -> None:
        text = self.source
        pos = 0
        while True:
            start = text.find("{{", pos)
            if start < 0:
                break
            self.line = text.count("\n", 0, start) + 1
            if (
                start >= 1
                and text[start - 1] == "\\"
                and not (start >= 2 and text[start - 2] == "\\")
            ):
                pos = start + 2  # \{{ prints the braces themselves
                continue
            if text.startswith("{{{{", start):
                pos = self._raw_block(start)
                continue
            inner_start = start + 2
            if text.startswith("{{~!", start) or text.startswith("{{!", start):
                pos = self._comment(start)
                continue
            triple = text.startswith("{{{", start)
            if triple:
                inner_start += 1
            end = self._closing(inner_start, "}}}" if triple else "}}")
            inner = text[inner_start:end].strip()
            pos = end + (3 if triple else 2)
            if inner.startswith("~"):
                inner = inner[1:].strip()
            if inner.endswith("~"):
                inner = inner[:-1].strip()
            self._statement(inner, triple)
        if self.frames:
            frame = self.frames[-1]
            self.line = frame.line
            raise self._error(
                f"{{{{#{frame.helper}}}}} is never closed with {{{{/{frame.helper}}}}}"
            )

    def _error(self, message: str) -> HandlebarsError:
        return HandlebarsError(self.part, self.line, message)

    def _comment(self, start: int) -> int:
        opener = _COMMENT_OPEN.match(self.source, start)
        assert opener is not None
        if opener.group(1):
            end = _LONG_COMMENT_CLOSE.search(self.source, opener.end())
            if end is None:
                raise self._error("a {{!-- comment is never closed with --}}")
            return end.end()
        close = self.source.find("}}", opener.end())
        if close < 0:
            raise self._error("a {{! comment is never closed with }}")
        return close + 2

    def _raw_block(self, start: int) -> int:
        match = re.match(r"\{\{\{\{\s*([^\s}]+)[^}]*\}\}\}\}", self.source[start:])
        if match is None:
            raise self._error("a {{{{raw}}}} block is not well formed")
        closing = "{{{{/" + match.group(1) + "}}}}"
        end = self.source.find(closing, start + match.end())
        if end < 0:
            raise self._error(f"a raw block is never closed with {closing}")
        return end + len(closing)

    def _closing(self, pos: int, closer: str) -> int:
        """Where the mustache opened before ``pos`` closes (quotes may hold braces)."""
        text = self.source
        quote = ""
        while pos < len(text):
            char = text[pos]
            if quote:
                if char == "\\":
                    pos += 2
                    continue
                if char == quote:
                    quote = ""
            elif char in "\"'":
                quote = char
            elif text.startswith(closer, pos):
                return pos
            elif text.startswith("{{", pos):
                break
            pos += 1
        raise self._error(f"an opening {closer.replace('}', '{')} is never closed with {closer}")

    # -- statements ----------------------------------------------------------------------

    def _statement(self, inner: str, triple: bool) -> None:
        if not inner:
            raise self._error("an empty {{}}")
        head = inner[0]
        if head == "#":
            if inner[1:2] in ("*", ">"):
                return  # decorators and partial blocks print no data of ours
            self._open(inner[1:].strip(), inverse=False)
        elif head == "^":
            rest = inner[1:].strip()
            if rest:
                self._open(rest, inverse=True)
            else:
                self._else("")
        elif head == "/":
            self._close(inner[1:].strip())
        elif head in (">", "!"):
            return
        elif inner == "else" or inner.startswith(("else ", "else\t", "else\n")):
            self._else(inner[4:].strip())
        else:
            if head == "&":
                inner = inner[1:].strip()
            self._output(inner)

    def _output(self, inner: str) -> None:
        tokens = self._tokens(inner)
        if not tokens:
            return
        first, args = tokens[0], tokens[1:]
        if isinstance(first, str) and not args and first not in _HELPERS:
            self._use(first, required=True)
            return
        helper = first if isinstance(first, str) else ""
        if helper == "insert":
            has_default = any(isinstance(a, _Str) for a in args[1:]) or any(
                isinstance(a, tuple) and a[0] == "default" for a in args
            )
            for index, arg in enumerate(args):
                self._argument(arg, required=index == 0 and not has_default)
        elif helper == "length":
            for arg in args:
                self._argument(arg, required=False)
        else:
            # formatDate and any other helper: what it prints comes from its arguments.
            for arg in args:
                self._argument(arg, required=True)

    def _argument(self, arg: Any, *, required: bool) -> None:
        if isinstance(arg, _Str):
            return
        if isinstance(arg, tuple):  # hash argument key=value
            self._argument(arg[1], required=required)
            return
        if isinstance(arg, _Sub):
            inner_required = required and arg.helper not in _CONDITION_BLOCKS | {"length"}
            for sub in arg.args:
                self._argument(sub, required=inner_required)
            return
        self._use(arg, required=required)

    def _open(self, inner: str, *, inverse: bool, chained: bool = False) -> None:
        params: frozenset[str] = frozenset()
        match = _BLOCK_PARAMS.search(inner)
        if match:
            params = frozenset(match.group(1).split())
            inner = inner[: match.start()].strip()
        tokens = self._tokens(inner)
        if not tokens or not isinstance(tokens[0], str):
            raise self._error("a block without a helper name")
        helper, args = tokens[0], tokens[1:]
        frame = _Frame(helper if not inverse else "^" + helper, self.line, chained=chained)
        frame.params = params
        if inverse or helper not in _HELPERS:
            # {{#x}}…{{/x}} and {{^x}}…{{/x}}: a section on the value x itself.
            if args:
                for arg in args:
                    self._argument(arg, required=True)  # an unknown helper: be strict
                self._push(frame, helper, None)
                return
            path = self._resolve(helper)
            self._use(helper, required=False)
            if inverse:
                if path:
                    frame.else_guards.add(path)
                self._push(frame, helper, None)
            else:
                if path:
                    frame.guards.add(path)
                self._push(frame, helper, path if path else None, scoped=True)
            return
        for arg in args:
            self._argument(arg, required=False)
        paths = [p for a in args if isinstance(a, str) and (p := self._resolve(a))]
        if helper == "if" and paths:
            frame.guards.add(paths[0])
        elif helper == "unless" and paths:
            frame.else_guards.add(paths[0])
        elif helper == "and":
            frame.guards.update(paths)
        if helper == "each":
            self._push(frame, helper, None, scoped=True)
        elif helper == "with":
            target = self._resolve(args[0]) if args and isinstance(args[0], str) else None
            if target:
                frame.guards.add(target)
            self._push(frame, helper, target, scoped=True)
        else:
            self._push(frame, helper, None)

    def _push(
        self, frame: _Frame, helper: str, prefix: tuple[str, ...] | None, *, scoped: bool = False
    ) -> None:
        if scoped:
            self.scopes.append(_Scope(prefix))
            frame.pushed_scope = True
        self.frames.append(frame)

    def _else(self, rest: str) -> None:
        if not self.frames:
            raise self._error("{{else}} outside any block")
        frame = self.frames[-1]
        if frame.in_else:
            raise self._error(f"a second {{{{else}}}} in {{{{#{frame.helper}}}}}")
        frame.in_else = True
        if frame.pushed_scope:  # the inverse of #each / #with renders in the outer context
            self.scopes.pop()
            frame.pushed_scope = False
        frame.guards = frame.else_guards
        if rest:
            self._open(rest, inverse=False, chained=True)

    def _close(self, name: str) -> None:
        while self.frames and self.frames[-1].chained:
            self._pop()
        if not self.frames:
            raise self._error(f"{{{{/{name}}}}} closes no open block")
        frame = self.frames[-1]
        if frame.helper.lstrip("^") != name:
            raise self._error(
                f"{{{{/{name}}}}} closes {{{{#{frame.helper}}}}} opened on line {frame.line}"
            )
        self._pop()

    def _pop(self) -> None:
        frame = self.frames.pop()
        if frame.pushed_scope:
            self.scopes.pop()

    # -- paths -----------------------------------------------------------------------------

    def _use(self, token: str, *, required: bool) -> None:
        path = self._resolve(token)
        if not path:
            return
        if required and self._guarded(path):
            required = False
        self.collector.add(Use(".".join(path), self.part, self.line), required)

    def _guarded(self, path: tuple[str, ...]) -> bool:
        return any(path in frame.guards for frame in self.frames)

    def _resolve(self, token: str) -> tuple[str, ...] | None:
        """The data path ``token`` names, or None (a literal, a local or ``@index``)."""
        if token in _LITERALS or _NUMBER.match(token):
            return None
        if token.startswith("@root"):
            rest = _segments(token[len("@root") :].lstrip("./"))
            return tuple(rest) or None
        if token.startswith("@") or _DATA_VARIABLES.match(token):
            return None
        depth = 0
        while token.startswith("../"):
            depth += 1
            token = token[3:]
        segments = _segments(token)
        if segments and segments[0] in ("this", "."):
            segments = segments[1:]
        elif segments and any(segments[0] in f.params for f in self.frames):
            return None  # a block parameter
        scope = self.scopes[max(0, len(self.scopes) - 1 - depth)]
        if scope.prefix is None:
            return None
        path = scope.prefix + tuple(segments)
        return path or None

    def _tokens(self, inner: str) -> list[Any]:
        """Split an expression: paths (str), ``_Str``, ``_Sub`` and ``(key, value)``."""
        tokens: list[Any] = []
        pos = 0
        length = len(inner)
        while pos < length:
            char = inner[pos]
            if char.isspace():
                pos += 1
            elif char in "\"'":
                end = pos + 1
                while end < length and inner[end] != char:
                    end += 2 if inner[end] == "\\" else 1
                if end >= length:
                    raise self._error(f"an unclosed string in {{{{{inner}}}}}")
                tokens.append(_Str(inner[pos + 1 : end]))
                pos = end + 1
            elif char == "(":
                depth, end = 0, pos
                while end < length:
                    if inner[end] == "(":
                        depth += 1
                    elif inner[end] == ")":
                        depth -= 1
                        if depth == 0:
                            break
                    end += 1
                if end >= length:
                    raise self._error(f"an unclosed ( in {{{{{inner}}}}}")
                sub = self._tokens(inner[pos + 1 : end])
                if not sub or not isinstance(sub[0], str):
                    raise self._error(f"a subexpression without a helper in {{{{{inner}}}}}")
                tokens.append(_Sub(sub[0], tuple(sub[1:])))
                pos = end + 1
            else:
                end = pos
                while end < length and not inner[end].isspace() and inner[end] not in "()=":
                    if inner[end] == "[":
                        close = inner.find("]", end)
                        end = length if close < 0 else close + 1
                    else:
                        end += 1
                word = inner[pos:end]
                pos = end
                if pos < length and inner[pos] == "=":
                    value = self._tokens(inner[pos + 1 :])
                    if not value:
                        raise self._error(f"a hash argument {word}= without a value")
                    tokens.append((word, value[0]))
                    tokens.extend(value[1:])
                    return tokens
                if word:
                    tokens.append(word)
                else:
                    pos += 1
        return tokens


def _segments(token: str) -> list[str]:
    """``a.b.[c d]`` or ``a/b`` -> ``["a", "b", "c d"]``."""
    segments: list[str] = []
    current = ""
    pos = 0
    while pos < len(token):
        char = token[pos]
        if char == "[":
            close = token.find("]", pos)
            close = len(token) if close < 0 else close
            current += token[pos + 1 : close]
            pos = close + 1
            continue
        if char in "./":
            if current:
                segments.append(current)
            elif char == "." and not segments and token == ".":
                segments.append(".")
            current = ""
        else:
            current += char
        pos += 1
    if current:
        segments.append(current)
    return segments
