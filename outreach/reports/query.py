"""The report's working tables, built in the database with ``INSERT ... SELECT``.

Nothing per touch ever reaches Python: the window's touches become one temporary table
(``report_touches``, one row per ledger row that counts in the window, with its delivery
events, attributed replies and conversion as columns), and every figure is an aggregate
over it. The builders run in order on one connection:

1. :func:`collect_replies`: each human reply and auto-reply of the window, attributed to
   the person's last sent touch delivered at or before it (``report_replies``).
2. :func:`collect_moves`: forward stage changes of the window (``report_moves``).
3. :func:`collect_touches`: sent touches by ``delivery_at``, failed and ambiguous and
   skipped by ``updated_at``, cancelled by ``planned_at``, holdout rows by ``due_at``,
   with delivery events, replies and conversions as columns (``report_touches``). SQLite
   folds them in with ``UPDATE``s after a key-ordered load; PostgreSQL, where an update
   writes a new version of each row, joins them in while loading.
4. :func:`collect_opt_outs`: each person's latest opt-out or unsubscribe of the window.

Dialect differences (hours between instants, adding hours, hour buckets as text) live in
the small helpers at the top.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    case,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.sql.elements import ColumnElement

from outreach.store.schema import Enrollment, Event, Touch
from outreach.store.types import UTCDateTime

__all__ = [
    "CONVERSION_WINDOW",
    "STAGE_RANK",
    "WorkTables",
    "collect_moves",
    "collect_opt_outs",
    "collect_replies",
    "collect_touches",
    "hour_bucket",
    "hours_between",
    "plus_hours",
]

#: a stage change counts as a conversion when it follows a touch within this
CONVERSION_WINDOW = timedelta(days=14)

#: forward order of the canonical stages; ``rejected`` has no rank, so it is never forward
STAGE_RANK = {"prospect": 0, "applied": 1, "screening": 2, "interview": 3, "offer": 4, "hired": 5}

#: statuses that appear in the report and the column that places each in the window
WINDOWED_STATUSES = {
    "sent": "delivery_at",
    "failed": "updated_at",
    "ambiguous": "updated_at",
    "skipped": "updated_at",
    "cancelled": "planned_at",
    "holdout": "due_at",
}


def hours_between(later: ColumnElement[Any], earlier: ColumnElement[Any], dialect: str):
    """``later - earlier`` in hours, as a float SQL expression."""
    if dialect == "sqlite":
        # Julian days are doubles: round to whole milliseconds so 4 h is 4.0, not 3.99999
        millis = func.round((func.julianday(later) - func.julianday(earlier)) * 86_400_000.0)
        return millis / 3_600_000.0
    return func.extract("epoch", later - earlier) / 3600.0


def plus_hours(instant: ColumnElement[Any], hours: int, dialect: str):
    """``instant + hours`` as an SQL expression comparable with stored instants.

    SQLite stores ``YYYY-MM-DD HH:MM:SS.ffffff`` text: the shifted seconds part keeps the
    stored microseconds, so comparisons at the exact boundary stay exact.
    """
    if dialect == "sqlite":
        shifted = func.strftime("%Y-%m-%d %H:%M:%S", instant, f"+{hours} hours")
        return shifted.op("||")(func.substr(instant, 20))
    return instant + literal_column(f"interval '{int(hours)} hours'")


def hour_bucket(instant: ColumnElement[Any], dialect: str):
    """The UTC hour of ``instant`` as text ``YYYY-MM-DDTHH`` (grouped on, then converted)."""
    if dialect == "sqlite":
        return func.strftime("%Y-%m-%dT%H", instant)
    return func.to_char(func.timezone("UTC", instant), literal('YYYY-MM-DD"T"HH24'))


def _rank(stage: ColumnElement[Any]):
    return case(STAGE_RANK, value=stage, else_=None)


class WorkTables:
    """The temporary tables of one report run, created on ``conn`` and dropped by :meth:`drop`."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.dialect = conn.dialect.name
        meta = MetaData()
        temp = {"prefixes": ["TEMPORARY"]}
        self.replies = Table(
            "report_replies",
            meta,
            Column("event_id", Integer, primary_key=True),
            Column("type", String(32), nullable=False),
            Column("person_id", Integer, nullable=False),
            Column("at", UTCDateTime, nullable=False),
            Column("touch_id", Integer),
            **temp,
        )
        self.moves = Table(
            "report_moves",
            meta,
            Column("event_id", Integer, primary_key=True),
            Column("person_id", Integer, nullable=False),
            Column("from_stage", String(20), nullable=False),
            Column("at", UTCDateTime, nullable=False),
            Index("ix_report_moves_person", "person_id", "from_stage", "at"),
            **temp,
        )
        self.touches = Table(
            "report_touches",
            meta,
            Column("id", Integer, primary_key=True),
            Column("person_id", Integer, nullable=False),
            Column("record_id", Integer),
            Column("trigger_stage", String(20)),
            Column("cadence_id", String(64), nullable=False),
            Column("step_id", String(64), nullable=False),
            Column("status", String(16), nullable=False),
            Column("channel", String(16)),
            Column("variant", String(64)),
            # delivery_at for sent touches, due_at for holdout rows: what a conversion follows
            Column("anchor_at", UTCDateTime),
            Column("sent", Integer, nullable=False, default=0),
            Column("delivered", Integer, nullable=False, default=0),
            Column("bounced", Integer, nullable=False, default=0),
            Column("opened", Integer, nullable=False, default=0),
            Column("machine_opened", Integer, nullable=False, default=0),
            Column("clicked", Integer, nullable=False, default=0),
            Column("open_events", Integer, nullable=False, default=0),
            Column("replies", Integer, nullable=False, default=0),
            Column("auto_replies", Integer, nullable=False, default=0),
            Column("first_reply_at", UTCDateTime),
            Column("ttr_hours", Float),
            Column("converted", Integer, nullable=False, default=0),
            # old enough (anchor + 14 d <= now) that a missing conversion is a real "no"
            Column("mature", Integer, nullable=False, default=0),
            **temp,
        )

        # The zone of each distinct (record timezone, phone) key of the window.
        self.zones = Table(
            "report_zones",
            meta,
            Column("timezone", String(64), nullable=False),
            Column("phone", String(32), nullable=False),
            Column("zone", String(64), nullable=False),
            Index("ix_report_zones_key", "timezone", "phone"),
            **temp,
        )
        self.opt_outs = Table(
            "report_opt_outs",
            meta,
            Column("person_id", Integer, primary_key=True),
            Column("last_at", UTCDateTime, nullable=False),
            **temp,
        )
        self._meta = meta
        meta.create_all(conn)
        if self.dialect == "postgresql":
            # Sorts and hashes of a million-row window stay in memory (this transaction only).
            conn.execute(text("SET LOCAL work_mem = '64MB'"))

    def analyze(self, table: Table) -> None:
        """Give PostgreSQL's planner row counts for a filled work table (autovacuum never
        analyzes temporary tables; without them it plans a million rows as a few)."""
        if self.dialect == "postgresql":
            self.conn.execute(text(f"ANALYZE {table.name}"))

    def drop(self) -> None:
        """Drop the temporary tables (they would go with the connection anyway)."""
        self._meta.drop_all(self.conn)


def collect_replies(work: WorkTables, since: datetime, until: datetime) -> None:
    """Replies and auto-replies of the window, each with the touch it answers.

    The touch is the person's last sent touch with ``since <= delivery_at <= reply.at``
    (ties on delivery time go to the later ledger row); a reply before any touch of the
    window keeps ``touch_id`` NULL and counts nowhere.
    """
    last_touch = (
        select(Touch.id)
        .where(
            Touch.person_id == Event.person_id,
            Touch.status == "sent",
            Touch.delivery_at >= since,
            Touch.delivery_at <= Event.at,
        )
        .order_by(Touch.delivery_at.desc(), Touch.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    rows = select(Event.id, Event.type, Event.person_id, Event.at, last_touch).where(
        Event.type.in_(("reply", "auto_reply")),
        Event.at >= since,
        Event.at < until,
        Event.person_id.is_not(None),
    )
    work.conn.execute(
        insert(work.replies).from_select(["event_id", "type", "person_id", "at", "touch_id"], rows)
    )
    work.analyze(work.replies)


def collect_moves(work: WorkTables, since: datetime, until: datetime) -> None:
    """Stage changes of the window that move a person forward (``rank(to) > rank(from)``)."""
    source = Event.payload["from"].as_string()
    target = Event.payload["to"].as_string()
    rows = select(Event.id, Event.person_id, source, Event.at).where(
        Event.type == "stage_change",
        Event.at > since,
        Event.at < until,
        Event.person_id.is_not(None),
        source.is_not(None),
        _rank(target) > _rank(source),
    )
    work.conn.execute(
        insert(work.moves).from_select(["event_id", "person_id", "from_stage", "at"], rows)
    )
    work.analyze(work.moves)


def collect_touches(work: WorkTables, since: datetime, until: datetime, now: datetime) -> None:
    """Fill ``report_touches`` and fold in delivery events, replies and conversions.

    A touch younger than 14 days (before ``now``, or before ``until`` for a past window)
    may still convert: it is ``mature`` (counts in a conversion denominator without
    converting) only once that time has passed.
    """
    conn, rt = work.conn, work.touches
    cutoff = min(now, until) - CONVERSION_WINDOW
    for status, column_name in WINDOWED_STATUSES.items():
        placed = getattr(Touch, column_name)
        anchor = (
            Touch.delivery_at
            if status == "sent"
            else Touch.due_at
            if status == "holdout"
            else literal(None, UTCDateTime)
        )
        rows = (
            select(
                Touch.id,
                Touch.person_id,
                Enrollment.record_id,
                Enrollment.trigger_stage,
                Touch.cadence_id,
                Touch.step_id,
                Touch.status,
                Touch.channel,
                Touch.variant,
                anchor,
                literal(1 if status == "sent" else 0),
                case((anchor <= cutoff, 1), else_=0),
            )
            .join(Enrollment, Enrollment.id == Touch.enrollment_id)
            .where(Touch.status == status, placed >= since, placed < until)
        )
        names = [
            "id",
            "person_id",
            "record_id",
            "trigger_stage",
            "cadence_id",
            "step_id",
            "status",
            "channel",
            "variant",
            "anchor_at",
            "sent",
            "mature",
        ]
        if work.dialect == "sqlite":
            # in key order the rows append to the table's B-tree instead of splitting pages
            rows = rows.order_by(Touch.id)
        elif status in ("sent", "holdout"):
            # PostgreSQL writes a new row version for every UPDATE: join the outcomes in
            # while loading instead of folding them in afterwards.
            rows, more = _with_outcomes(work, rows, status, placed, anchor, since, until)
            names += more
        conn.execute(insert(rt).from_select(names, rows))
    # Built after the rows are in: one sort instead of a random insert per row.
    conn.execute(text("CREATE INDEX ix_report_touches_person ON report_touches (person_id)"))
    work.analyze(rt)
    if work.dialect == "sqlite":
        _fold_delivery_events(work)
        _fold_replies(work)
        _fold_conversions(work)


def _with_outcomes(work: WorkTables, rows, status: str, placed, anchor, since, until):
    """``rows`` (touches of ``status`` in the window) joined with their delivery events,
    attributed replies (sent touches) and conversions; returns the select and the names of
    the added columns."""
    rp = work.replies
    mv = work.moves
    window = (Touch.status == status, placed >= since, placed < until)
    horizon = int(CONVERSION_WINDOW.total_seconds() // 3600)
    converting = (
        select(Touch.id.label("touch_id"))
        .join(Enrollment, Enrollment.id == Touch.enrollment_id)
        .join(
            mv,
            and_(
                mv.c.person_id == Touch.person_id,
                mv.c.from_stage == Enrollment.trigger_stage,
                mv.c.at > anchor,
                mv.c.at <= plus_hours(anchor, horizon, work.dialect),
            ),
        )
        .where(*window)
        .distinct()
        .subquery("converting")
    )
    rows = rows.outerjoin(converting, converting.c.touch_id == Touch.id).add_columns(
        case((converting.c.touch_id.is_not(None), 1), else_=0)
    )
    names = ["converted"]
    if status != "sent":
        return rows, names
    per_touch = _delivery_flags(select(Touch.id).where(*window).subquery("window_touches"))
    human = rp.c.type == "reply"
    answered = (
        select(
            rp.c.touch_id.label("touch_id"),
            func.sum(case((human, 1), else_=0)).label("replies"),
            func.sum(case((human, 0), else_=1)).label("auto_replies"),
            func.min(case((human, rp.c.at), else_=None)).label("first_reply_at"),
        )
        .where(rp.c.touch_id.is_not(None))
        .group_by(rp.c.touch_id)
        .subquery("answered")
    )
    rows = (
        rows.outerjoin(per_touch, per_touch.c.touch_id == Touch.id)
        .outerjoin(answered, answered.c.touch_id == Touch.id)
        .add_columns(
            *(func.coalesce(per_touch.c[name], 0) for name in _DELIVERY_FLAGS),
            func.coalesce(answered.c.replies, 0),
            func.coalesce(answered.c.auto_replies, 0),
            answered.c.first_reply_at,
            hours_between(answered.c.first_reply_at, anchor, work.dialect),
        )
    )
    names += [*_DELIVERY_FLAGS, "replies", "auto_replies", "first_reply_at", "ttr_hours"]
    return rows, names


#: per-touch columns taken from delivery-side events
_DELIVERY_FLAGS = ("delivered", "bounced", "opened", "machine_opened", "clicked", "open_events")


def _delivery_flags(touches):
    """Delivery-side events of the touches in ``touches`` (a subquery with an ``id``
    column), one row per touch with the :data:`_DELIVERY_FLAGS` columns. They count for the
    touch's window, whenever they arrived."""
    machine = Event.payload["machine"].as_boolean()
    is_open = Event.type == "open"

    def flag(condition: ColumnElement[bool]):
        return func.max(case((condition, 1), else_=0))

    return (
        select(
            Event.touch_id.label("touch_id"),
            flag(Event.type == "delivered").label("delivered"),
            flag(Event.type == "bounce").label("bounced"),
            flag(and_(is_open, or_(machine.is_(None), machine.is_(False)))).label("opened"),
            flag(and_(is_open, machine.is_(True))).label("machine_opened"),
            flag(Event.type == "click").label("clicked"),
            func.sum(case((is_open, 1), else_=0)).label("open_events"),
        )
        .join(touches, touches.c.id == Event.touch_id)
        .where(Event.type.in_(("delivered", "bounce", "open", "click")))
        .group_by(Event.touch_id)
        .subquery("delivery")
    )


def _fold_delivery_events(work: WorkTables) -> None:
    rt = work.touches
    per_touch = _delivery_flags(select(rt.c.id).where(rt.c.sent == 1).subquery("sent_rows"))
    work.conn.execute(
        update(rt)
        .where(rt.c.id == per_touch.c.touch_id)
        .values({name: per_touch.c[name] for name in _DELIVERY_FLAGS})
    )


def _fold_replies(work: WorkTables) -> None:
    rt, rp = work.touches, work.replies
    human = rp.c.type == "reply"
    per_touch = (
        select(
            rp.c.touch_id.label("touch_id"),
            func.sum(case((human, 1), else_=0)).label("replies"),
            func.sum(case((human, 0), else_=1)).label("auto_replies"),
            func.min(case((human, rp.c.at), else_=None)).label("first_reply_at"),
        )
        .where(rp.c.touch_id.is_not(None))
        .group_by(rp.c.touch_id)
        .subquery()
    )
    work.conn.execute(
        update(rt)
        .where(rt.c.id == per_touch.c.touch_id)
        .values(
            replies=per_touch.c.replies,
            auto_replies=per_touch.c.auto_replies,
            first_reply_at=per_touch.c.first_reply_at,
            ttr_hours=hours_between(per_touch.c.first_reply_at, rt.c.anchor_at, work.dialect),
        )
    )


def _fold_conversions(work: WorkTables) -> None:
    # Driven by the (few) forward moves, each probing its person's rows of the window.
    rt, mv = work.touches, work.moves
    row = rt.alias("converting")
    horizon = int(CONVERSION_WINDOW.total_seconds() // 3600)
    converted = select(row.c.id).join(
        mv,
        and_(
            mv.c.person_id == row.c.person_id,
            mv.c.from_stage == row.c.trigger_stage,
            mv.c.at > row.c.anchor_at,
            mv.c.at <= plus_hours(row.c.anchor_at, horizon, work.dialect),
        ),
    )
    work.conn.execute(update(rt).where(rt.c.id.in_(converted)).values(converted=1))


def collect_opt_outs(work: WorkTables, since: datetime, until: datetime) -> None:
    """Each person's latest opt-out or unsubscribe in the window (compared with their
    first touch by the aggregation)."""
    rows = (
        select(Event.person_id, func.max(Event.at))
        .where(
            Event.type.in_(("opt_out", "unsubscribe")),
            Event.at >= since,
            Event.at < until,
            Event.person_id.is_not(None),
        )
        .group_by(Event.person_id)
    )
    work.conn.execute(insert(work.opt_outs).from_select(["person_id", "last_at"], rows))
