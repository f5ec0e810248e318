"""A strict YAML reader that keeps line numbers for error messages.

PyYAML follows YAML 1.1, where ``9:30`` is the integer 570 and ``no`` (Norway's country
code) is ``False``. Cadence files are full of clock times and country codes, so this
loader only knows ``true``/``false`` as booleans and reads sexagesimal numbers as text.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

__all__ = ["MAX_DEPTH", "StrictLoader", "line_of", "load_with_nodes"]

#: deepest nesting of mappings and sequences read; a cadence file needs about six levels
MAX_DEPTH = 50


class StrictLoader(yaml.SafeLoader):
    """SafeLoader without YAML 1.1's surprising implicit types.

    A value PyYAML cannot build (``2026-02-30``, ``!!int abc``, ``!!bool maybe``) is a
    ``yaml.constructor.ConstructorError`` at that value's line, never a bare ``ValueError``
    or ``KeyError`` from inside the constructor.
    """

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """Build ``node``'s value; a failure names the node's place."""
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError):
            kind = node.tag.rsplit(":", 1)[-1]
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"cannot read this {kind} value; put it in quotes if it is meant as text",
                node.start_mark,
            ) from None


StrictLoader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp)
        for tag, regexp in resolvers
        if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:int")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0|[-+]?[1-9][0-9_]*)$"),
    list("-+0123456789"),
)


def load_with_nodes(text: str) -> tuple[Any, yaml.Node | None]:
    """Parse ``text``; return the data and the node tree (for :func:`line_of`).

    Raises ``yaml.YAMLError`` (with ``problem_mark`` for the line and column), also for a
    document nested deeper than :data:`MAX_DEPTH` (PyYAML's parser recurses per level).
    """
    _check_depth(text)
    loader = StrictLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except RecursionError:  # self-referencing aliases, which the depth check cannot see
        raise yaml.YAMLError(f"nested more than {MAX_DEPTH} levels deep") from None
    finally:
        loader.dispose()
    return data, node


def _check_depth(text: str) -> None:
    """Refuse ``text`` when its flow or block nesting passes :data:`MAX_DEPTH`, before the
    recursive parser gets to it (it would end in a ``RecursionError``)."""
    depth = 0
    for event in yaml.parse(text, Loader=StrictLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise yaml.MarkedYAMLError(
                    problem=f"nested more than {MAX_DEPTH} levels deep; a cadence file "
                    "needs about six",
                    problem_mark=event.start_mark,
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def line_of(root: yaml.Node | None, loc: tuple[str | int, ...]) -> tuple[int, int] | None:
    """The 1-based (line, column) of the value at ``loc``, or the nearest parent found."""
    node = root
    best = (node.start_mark.line + 1, node.start_mark.column + 1) if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            found = None
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    found = (key, value)
                    break
            if found is None:
                return best
            node = found[1]
            best = (found[0].start_mark.line + 1, found[0].start_mark.column + 1)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return best
            node = node.value[part]
            best = (node.start_mark.line + 1, node.start_mark.column + 1)
        else:
            return best
    return best
