"""``--by`` keys, the local-time heat map and the small-cell flag.

A key maps to a column of ``report_touches`` or of the touch's CRM record (through its
enrollment); ``tag`` explodes the record's JSON tag list, one group per tag, ``(none)``
for an untagged record. A failed lookup lists the valid keys (dlt's registry style).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import FromClause, and_, case, func, literal, or_, select, true
from sqlalchemy.sql.elements import ColumnElement

from outreach.engine.window import zone_for
from outreach.errors import InputError
from outreach.reports.query import WorkTables, hour_bucket
from outreach.store.schema import CandidateRecord

__all__ = [
    "BY_KEYS",
    "NONE_VALUE",
    "Grouping",
    "group_values",
    "grouping",
    "heatmap",
    "is_small",
    "parse_by",
]

#: the value of a group whose attribute is missing (no record, no tag, no owner)
NONE_VALUE = "(none)"

#: ``--by`` key -> where its value comes from
BY_KEYS = {
    "cadence": "touch",
    "step": "touch",
    "channel": "touch",
    "variant": "touch",
    "stage": "touch",
    "source": "record",
    "owner": "record",
    "job": "record",
    "tag": "record",
}


def parse_by(text: str | Iterable[str] | None) -> tuple[str, ...]:
    """``cadence,step`` (or a sequence) as a tuple of known keys, in order, without repeats.

    ``InputError`` names an unknown key and lists the valid ones.
    """
    if text is None:
        return ()
    parts = text.split(",") if isinstance(text, str) else list(text)
    keys: list[str] = []
    for part in parts:
        key = part.strip().lower()
        if not key:
            continue
        if key not in BY_KEYS:
            raise InputError(
                f"--by: unknown key {part.strip()!r}; valid keys are {', '.join(BY_KEYS)}"
            )
        if key not in keys:
            keys.append(key)
    return tuple(keys)


def is_small(denominator: int | None, min_cell: int) -> bool:
    """A cell whose denominator is below ``min_cell`` is flagged (shown, never hidden)."""
    return (denominator or 0) < min_cell


@dataclass(frozen=True)
class Grouping:
    """The FROM clause and labelled group columns that a ``--by`` list needs."""

    source: FromClause
    columns: list[ColumnElement[Any]]


def grouping(work: WorkTables, keys: tuple[str, ...]) -> Grouping:
    """``report_touches`` joined to what ``keys`` need, and one labelled column per key."""
    rt = work.touches
    source: FromClause = rt
    records = CandidateRecord.__table__
    if any(BY_KEYS[k] == "record" for k in keys):
        source = source.outerjoin(records, records.c.id == rt.c.record_id)
    columns: list[ColumnElement[Any]] = []
    for key in keys:
        if key == "tag":
            if work.dialect == "sqlite":
                tags = func.json_each(records.c.tags).table_valued("value")
            else:
                tags = func.json_array_elements_text(records.c.tags).table_valued("value").lateral()
            source = source.outerjoin(tags, true())
            value: ColumnElement[Any] = tags.c.value
        else:
            value = {
                "cadence": rt.c.cadence_id,
                "step": rt.c.step_id,
                "channel": rt.c.channel,
                "variant": rt.c.variant,
                "stage": rt.c.trigger_stage,
                "source": records.c.source,
                "owner": records.c.owner_id,
                "job": records.c.job_title,
            }[key]
        columns.append(func.coalesce(value, literal(NONE_VALUE)).label(f"by_{key}"))
    return Grouping(source, columns)


def heatmap(work: WorkTables, default_timezone: str) -> list[dict[str, Any]]:
    """Sent touches and replied touches by day of week (0 = Monday) and hour, local time.

    The zone is the throttle's (``zone_for``: the record's zone, else the phone's, else the
    policy default). SQLite cannot convert zones, so SQL groups by zone inputs and UTC hour
    (bounded by zones x hours, not by touches) and Python converts each bucket.
    """
    rt = work.touches
    records = CandidateRecord.__table__
    no_zone = or_(records.c.timezone.is_(None), records.c.timezone == "")
    phone = case((no_zone, records.c.phone), else_=None)
    bucket = hour_bucket(rt.c.anchor_at, work.dialect)
    rows = work.conn.execute(
        select(
            records.c.timezone,
            phone,
            bucket,
            func.count(),
            func.sum(case((rt.c.replies > 0, 1), else_=0)),
        )
        .select_from(rt.outerjoin(records, records.c.id == rt.c.record_id))
        .where(and_(rt.c.sent == 1))
        .group_by(records.c.timezone, phone, bucket)
    )
    cells: dict[tuple[int, int], list[int]] = defaultdict(lambda: [0, 0])
    for timezone, number, hour, sent, replied in rows:
        zone, _ = zone_for(timezone, number, default_timezone)
        local = datetime.strptime(hour, "%Y-%m-%dT%H").replace(tzinfo=UTC).astimezone(zone)
        cell = cells[(local.weekday(), local.hour)]
        cell[0] += sent
        cell[1] += replied or 0
    return [
        {
            "dow": dow,
            "hour": hour,
            "sent": sent,
            "replies": replied,
            "rate": replied / sent if sent else None,
        }
        for (dow, hour), (sent, replied) in sorted(cells.items())
    ]


def group_values(row: Any, keys: tuple[str, ...]) -> dict[str, str]:
    """The ``by`` object of a result row produced with :func:`grouping` columns."""
    return {key: str(getattr(row, f"by_{key}")) for key in keys}
