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
   with delivery events, replies and conversions as columns (``report_touches``), joined
   in while loading (an ``UPDATE`` afterwards would write every row twice). SQLite reads
   the touches in key order and probes each one's events, moves and replies by index;
   PostgreSQL hash-joins pre-aggregated events, conversions and replies.
4. :func:`collect_opt_outs`: each person's latest opt-out or unsubscribe of the window.

Dialect differences (hours between instants, adding hours, quarter-hour buckets) live in
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
    cast,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    text,
)
from sqlalchemy.sql.elements import ColumnElement

from outreach.store.schema import Enrollment, Event, Touch
from outreach.store.types import UTCDateTime

__all__ = [
    "CONVERSION_WINDOW",
    "QUARTER_SECONDS",
    "STAGE_RANK",
    "WorkTables",
    "collect_moves",
    "collect_opt_outs",
    "collect_replies",
    "collect_touches",
    "hours_between",
    "plus_hours",
    "quarter_bucket",
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


#: width of a heat map bucket: zones with a :30 or :45 offset (India, Nepal) shift by quarters
QUARTER_SECONDS = 900


def quarter_bucket(instant: ColumnElement[Any], dialect: str):
    """The UTC quarter hour of ``instant`` as whole seconds since 1970 divided by
    :data:`QUARTER_SECONDS` (an integer; grouped on, then converted to local time)."""
    if dialect == "sqlite":
        return cast(func.strftime("%s", instant), Integer) // QUARTER_SECONDS
    # date_part is double precision (extract is numeric, several times slower to divide);
    # stored microseconds stay exact enough that a quarter's boundary is never crossed
    return func.floor(func.date_part("epoch", instant) / float(QUARTER_SECONDS))


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
            # Sorts and hashes of a million-row window stay in memory (this transaction only;
            # the server's memory: the per-touch event aggregate spills to disk at 64MB).
            conn.execute(text("SET LOCAL work_mem = '256MB'"))
            # JIT compiling these aggregates costs more than it saves at a million rows
            conn.execute(text("SET LOCAL jit = off"))

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
    """Fill ``report_touches`` with delivery events, replies and conversions joined in.

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
        if status in ("sent", "holdout"):
            # Joined in while loading: an UPDATE afterwards would write every row twice
            # (and on PostgreSQL leave a dead version of each).
            rows, more = _with_outcomes(work, rows, status, placed, anchor, since, until)
            names += more
        conn.execute(insert(rt).from_select(names, rows))
    # Built after the rows are in: one sort instead of a random insert per row.
    conn.execute(text("CREATE INDEX ix_report_touches_person ON report_touches (person_id)"))
    work.analyze(rt)


def _with_outcomes(work: WorkTables, rows, status: str, placed, anchor, since, until):
    """``rows`` (touches of ``status`` in the window) joined with their delivery events,
    attributed replies (sent touches) and conversions; returns the select and the names of
    the added columns."""
    window = (Touch.status == status, placed >= since, placed < until)
    if work.dialect == "sqlite":
        return _sqlite_outcomes(work, rows, status)
    mv = work.moves
    converting = (
        select(Touch.id.label("touch_id"))
        .join(Enrollment, Enrollment.id == Touch.enrollment_id)
        .join(mv, _moved(work, Touch.person_id, Enrollment.trigger_stage, anchor))
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
    answered = _answered(work)
    rows = (
        rows.outerjoin(per_touch, per_touch.c.touch_id == Touch.id)
        .outerjoin(answered, answered.c.touch_id == Touch.id)
        .add_columns(
            *(func.coalesce(per_touch.c[name], 0) for name in _DELIVERY_FLAGS),
            *_reply_columns(work, answered, anchor),
        )
    )
    names += [*_DELIVERY_FLAGS, "replies", "auto_replies", "first_reply_at", "ttr_hours"]
    return rows, names


def _sqlite_outcomes(work: WorkTables, rows, status: str):
    """SQLite's one pass over the window's rows of ``status`` (ordered by key): each touch
    probes its events through (touch_id, type), grouped by the key with no sort, then the
    (person, stage, at) index of the moves once, and its replies."""
    if status != "sent":
        converted = _converted(work, Touch.person_id, Enrollment.trigger_stage, Touch.due_at)
        return rows.add_columns(converted), ["converted"]
    loaded = (
        rows.outerjoin(Event, and_(Event.touch_id == Touch.id, Event.type.in_(_DELIVERY_TYPES)))
        .add_columns(*(value.label(name) for name, value in _flag_aggregates().items()))
        .group_by(Touch.id)
        .subquery("loaded")
    )
    answered = _answered(work)
    columns = list(loaded.c)
    rows = (
        select(
            *columns[: -len(_DELIVERY_FLAGS)],
            _converted(work, loaded.c.person_id, loaded.c.trigger_stage, loaded.c.delivery_at),
            *columns[-len(_DELIVERY_FLAGS) :],
            *_reply_columns(work, answered, loaded.c.delivery_at),
        )
        # no ORDER BY: the co-routine already yields in key order (one would add a sort)
        .select_from(loaded.outerjoin(answered, answered.c.touch_id == loaded.c.id))
    )
    return rows, [
        "converted",
        *_DELIVERY_FLAGS,
        "replies",
        "auto_replies",
        "first_reply_at",
        "ttr_hours",
    ]


def _moved(work: WorkTables, person, stage, anchor) -> ColumnElement[bool]:
    """A forward move of ``person`` from ``stage`` within the conversion window after ``anchor``."""
    mv = work.moves
    horizon = int(CONVERSION_WINDOW.total_seconds() // 3600)
    return and_(
        mv.c.person_id == person,
        mv.c.from_stage == stage,
        mv.c.at > anchor,
        mv.c.at <= plus_hours(anchor, horizon, work.dialect),
    )


def _converted(work: WorkTables, person, stage, anchor):
    """1 when :func:`_moved` finds a move (one probe of the moves' index), else 0."""
    moves = select(work.moves.c.event_id).where(_moved(work, person, stage, anchor))
    return case((moves.exists(), 1), else_=0)


def _answered(work: WorkTables):
    """Attributed replies per touch: human replies, auto-replies, first human reply."""
    rp = work.replies
    human = rp.c.type == "reply"
    return (
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


def _reply_columns(work: WorkTables, answered, anchor) -> tuple[ColumnElement[Any], ...]:
    """replies, auto_replies, first_reply_at, ttr_hours of a row joined to ``answered``."""
    return (
        func.coalesce(answered.c.replies, 0),
        func.coalesce(answered.c.auto_replies, 0),
        answered.c.first_reply_at,
        hours_between(answered.c.first_reply_at, anchor, work.dialect),
    )


#: per-touch columns taken from delivery-side events
_DELIVERY_FLAGS = ("delivered", "bounced", "opened", "machine_opened", "clicked", "open_events")


#: the event types the delivery flags are read from
_DELIVERY_TYPES = ("delivered", "bounce", "open", "click")


def _flag_aggregates() -> dict[str, ColumnElement[Any]]:
    """The :data:`_DELIVERY_FLAGS` as aggregates over ``events`` rows of one touch (0 for a
    touch without any, as in an outer join)."""
    machine = Event.payload["machine"].as_boolean()
    is_open = Event.type == "open"

    def flag(condition: ColumnElement[bool]):
        return func.max(case((condition, 1), else_=0))

    return {
        "delivered": flag(Event.type == "delivered"),
        "bounced": flag(Event.type == "bounce"),
        "opened": flag(and_(is_open, or_(machine.is_(None), machine.is_(False)))),
        "machine_opened": flag(and_(is_open, machine.is_(True))),
        "clicked": flag(Event.type == "click"),
        "open_events": func.sum(case((is_open, 1), else_=0)),
    }


def _delivery_flags(touches):
    """Delivery-side events of the touches in ``touches`` (a subquery with an ``id``
    column), one row per touch with the :data:`_DELIVERY_FLAGS` columns. They count for the
    touch's window, whenever they arrived."""
    return (
        select(
            Event.touch_id.label("touch_id"),
            *(value.label(name) for name, value in _flag_aggregates().items()),
        )
        .join(touches, touches.c.id == Event.touch_id)
        .where(Event.type.in_(_DELIVERY_TYPES))
        .group_by(Event.touch_id)
        .subquery("delivery")
    )


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
