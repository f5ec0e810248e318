"""What a template reads of its variables, worked out once from its syntax tree.

A template that reads ``candidate`` only as ``candidate.first_name`` and
``candidate.stage`` renders the same with a ``candidate`` that holds just those two
fields: the render stage then builds no more of a person's variables than the template
uses (no contact points looked up, no rating links made, for a template that shows none).

Only plain attribute reads count (``candidate.first_name``, and ``candidate.custom`` for
``candidate.custom.highlight``). A variable used in any other way (``candidate['x']``,
``candidate.items()``, ``candidate | tojson``, ``{{ candidate }}``, passed to a macro,
assigned or shadowed by ``{% set %}``, a loop or a macro argument) is *opaque*: it gets
every field, as before. A template that includes, imports or extends another is opaque
as a whole.

Example::

    reads = template_reads(env.parse(source), vars_attributes)
    reads.of("candidate")   # frozenset({"first_name", "stage"}), or None: build it all
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from jinja2 import meta, nodes

__all__ = ["EVERYTHING", "TemplateReads", "template_reads"]


@dataclass(frozen=True)
class TemplateReads:
    """The attributes a template reads of each variable, for the variables it reads only so.

    ``of(name)`` is the set of attribute names read of variable ``name`` (empty when the
    template never mentions it), or ``None`` when the template uses it otherwise, or when
    ``everything`` (it uses other templates, or its tree could not be read).
    """

    attributes: Mapping[str, frozenset[str]]
    opaque: frozenset[str]
    everything: bool = False

    def of(self, name: str) -> frozenset[str] | None:
        """The attributes of ``name`` the template reads, or ``None`` for "all of it"."""
        if self.everything or name in self.opaque:
            return None
        return self.attributes.get(name, _NONE)


_NONE: frozenset[str] = frozenset()
#: the answer for a template whose reads cannot be told
EVERYTHING = TemplateReads({}, frozenset(), everything=True)


def template_reads(tree: nodes.Template, reserved: frozenset[str]) -> TemplateReads:
    """The reads of the template ``tree``; ``reserved`` are attribute names that are not
    fields (a ``Vars``'s own attributes and methods: reading one makes the variable opaque).
    """
    if list(meta.find_referenced_templates(tree)):
        return EVERYTHING
    attributes: dict[str, set[str]] = {}
    opaque: set[str] = set()
    for parent in (tree, *tree.find_all(nodes.Node)):
        for child in parent.iter_child_nodes():
            if isinstance(child, nodes.NSRef):
                opaque.add(child.name)
            if not isinstance(child, nodes.Name):
                continue
            if (
                child.ctx == "load"
                and isinstance(parent, nodes.Getattr)
                and parent.node is child
                and parent.attr not in reserved
            ):
                attributes.setdefault(child.name, set()).add(parent.attr)
            else:
                opaque.add(child.name)
    return TemplateReads(
        {name: frozenset(found) for name, found in attributes.items() if name not in opaque},
        frozenset(opaque),
    )
