"""``replies list``: what came in, how it was classified and what it matched."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select

from outreach.store.schema import InboundMessage

__all__ = ["KINDS", "LIST_COLUMNS", "iter_inbound"]

_inbound = InboundMessage.__table__
#: the kinds ``--kind`` accepts; ``unmatched`` is any kind that matched no one
KINDS = ("human", "auto", "bounce", "unsubscribe", "invalid", "unmatched")
LIST_COLUMNS = (
    "id",
    "received_at",
    "kind",
    "out_of_office",
    "returns_on",
    "bounce_status",
    "rule",
    "matched_by",
    "person_id",
    "touch_id",
    "source",
    "origin",
    "subject",
    "new_text",
    "error",
)


def iter_inbound(
    engine: Engine, *, kind: str | None = None, since: datetime | None = None, page: int = 1000
) -> Iterator[dict[str, Any]]:
    """Stored inbound messages, oldest first, streamed a page at a time."""
    query = select(*(_inbound.c[name] for name in LIST_COLUMNS)).order_by(_inbound.c.id)
    if kind == "unmatched":
        query = query.where(_inbound.c.person_id.is_(None), _inbound.c.kind != "invalid")
    elif kind is not None:
        query = query.where(_inbound.c.kind == kind)
    if since is not None:
        query = query.where(_inbound.c.received_at >= since)
    after = 0
    while True:
        with engine.connect() as conn:
            rows = list(conn.execute(query.where(_inbound.c.id > after).limit(page)).mappings())
        if not rows:
            return
        for row in rows:
            yield dict(row)
        after = rows[-1]["id"]
