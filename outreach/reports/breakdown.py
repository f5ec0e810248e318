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

from sqlalchemy import FromClause, and_, case, func, insert, literal, or_, select, true
from sqlalchemy.sql.elements import ColumnElement

from outreach.engine.window import zone_for
from outreach.errors import InputError
from outreach.reports.query import QUARTER_SECONDS, WorkTables, quarter_bucket
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

#: rows per batch when resolving zones (streamed: memory stays flat)
_BATCH = 5_000

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


def _zone_keys(records):
    """The two columns that decide a record's zone: its ``timezone``, and its phone only
    when it has no zone (so records with a zone never multiply the keys)."""
    no_zone = or_(records.c.timezone.is_(None), records.c.timezone == "")
    timezone = func.coalesce(records.c.timezone, literal(""))
    phone = func.coalesce(case((no_zone, records.c.phone), else_=None), literal(""))
    return timezone, phone


def heatmap(work: WorkTables, default_timezone: str) -> list[dict[str, Any]]:
    """Sent touches and replied touches by day of week (0 = Monday) and hour, local time.

    The zone is the throttle's (``zone_for``: the record's zone, else the phone's, else the
    policy default). Python resolves each distinct (zone, phone) key once into a small work
    table; SQL then groups by (zone, UTC quarter hour: a +5:30 or +5:45 zone changes its local hour
    at :30 or :45 UTC), bounded by zones x quarters, not by touches,
    and Python converts those buckets (SQLite cannot convert zones).
    """
    rt, conn = work.touches, work.conn
    records = CandidateRecord.__table__
    timezone, phone = _zone_keys(records)
    joined = rt.outerjoin(records, records.c.id == rt.c.record_id)
    keys = conn.execute(
        select(timezone, phone)
        .select_from(joined)
        .where(rt.c.sent == 1)
        .distinct()
        .execution_options(stream_results=True, yield_per=_BATCH)
    )
    batch: list[dict[str, str]] = []
    for zone_name, number in keys:
        zone, _ = zone_for(zone_name or None, number or None, default_timezone)
        batch.append({"timezone": zone_name, "phone": number, "zone": zone.key})
        if len(batch) >= _BATCH:
            conn.execute(insert(work.zones), batch)
            batch = []
    if batch:
        conn.execute(insert(work.zones), batch)
    zones = work.zones
    bucket = quarter_bucket(rt.c.anchor_at, work.dialect)
    rows = conn.execute(
        select(
            zones.c.zone,
            bucket,
            func.count(),
            func.sum(case((rt.c.replies > 0, 1), else_=0)),
        )
        .select_from(
            joined.outerjoin(zones, and_(zones.c.timezone == timezone, zones.c.phone == phone))
        )
        .where(rt.c.sent == 1)
        .group_by(zones.c.zone, bucket)
    )
    cells: dict[tuple[int, int], list[int]] = defaultdict(lambda: [0, 0])
    for zone_name, quarter, sent, replied in rows:
        zone, _ = zone_for(zone_name, None, default_timezone)
        local = datetime.fromtimestamp(int(quarter) * QUARTER_SECONDS, UTC).astimezone(zone)
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
