"""SLA per cadence step with a deadline, and the recruiters' task backlog.

A step with ``within`` promises delivery by a deadline: ``within`` is counted from the same
anchor as ``after``, so an occurrence due at ``due_at`` (anchor + after) has its deadline at
``due_at + (within - after)`` (as the planner reckons lateness). For every occurrence whose
deadline falls in the report window:

* **met**: a sent touch (any channel: a fallback keeps the ledger row) delivered
  (``delivery_at``) by the deadline; **late**: delivered after it;
* **never**: no delivery, by reason: the ledger row's status (``skipped``, ``task``,
  ``failed``, ``cancelled``, ``ambiguous``, ``unconfirmed`` for a claim still
  open past its deadline), ``overdue`` (an active enrollment still waiting on the step past
  its deadline), ``stopped`` (the enrollment stopped after the deadline passed unsent);
* **pending**: not delivered yet and the deadline is still ahead of ``now`` (not due);
* **unreachable**: handed to a recruiter because no channel may carry it (the person
  opted out or unsubscribed, or has no usable address): not due, since sending would
  break DESIGN.md invariant 4; counted apart.
* **held_out**: kept from the step by its ``holdout`` share (the experiment's no-contact
  group, nothing was meant to be sent): not due, counted apart.
* **condition_not_met**: skipped because the step's ``when:`` did not hold (nothing was
  owed to that candidate): not due, counted apart.

Rows under a retired key (a killed run's ``released`` claim, a failure re-planned, a touch
recalled for an out-of-office pause and put back) are superseded attempts, not
occurrences: the occurrence has, or will get, a row under its own key. An enrollment
stopped before its deadline (a reply, a stage change) owes nothing. Everything is counted
in SQL, one query per step, on the ``(cadence_id, step_id, due_at)`` index: the window on
the deadline is a range on ``due_at`` shifted by the step's constant offset.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    String,
    and_,
    case,
    cast,
    exists,
    extract,
    func,
    not_,
    or_,
    select,
)
from sqlalchemy.sql.elements import ColumnElement

from outreach.cadence import CadenceConfig, Step
from outreach.cadence_when import SKIP_PREFIX
from outreach.engine.route import NO_CHANNEL
from outreach.store.schema import Enrollment, Task, Touch

__all__ = ["NEVER_STATUSES", "per_step", "task_backlog"]

_touches = Touch.__table__
_enrollments = Enrollment.__table__
_tasks = Task.__table__

#: the reasons ``never`` is broken down by that come from ledger rows (``overdue`` and
#: ``stopped`` come from enrollments still or last waiting on the step)
NEVER_STATUSES = ("failed", "ambiguous", "skipped", "cancelled", "task", "unconfirmed")
#: what a superseded attempt's idempotency key carries (``…#released<id>``, ``…#failed<id>``
#: for a failure re-planned, ``…#recalled<id>`` for a touch recalled for an out-of-office
#: pause and put back): the occurrence has, or will get, a row under its own key
RETIRED = "#"
# SQLite reckons seconds from Julian days (a double): allow a millisecond of rounding, so a
# touch delivered exactly at its deadline is met on both databases.
_SQLITE_SLACK = 0.001


@dataclass(frozen=True)
class _DeadlineStep:
    """A step with ``within``: where it is in its cadence and its deadline's offset from
    ``due_at`` (``within - after``)."""

    cadence: str
    index: int
    step: Step
    offset: timedelta


def per_step(
    conn: Connection,
    config: CadenceConfig,
    since: datetime,
    until: datetime,
    now: datetime,
) -> list[dict[str, Any]]:
    """SLA figures of every step with ``within``, for deadlines in ``[since, until)``.

    One dict per step, in cadence file order: ``cadence``, ``step``, ``within_hours``,
    ``after_hours``, ``due`` (= met + late + never), ``met``, ``late``, ``never``,
    ``met_rate`` (``None`` when nothing was due), ``pending``, ``unreachable``,
    ``held_out``, ``condition_not_met`` and ``never_by_reason``.
    """
    if since >= until:
        raise ValueError(f"SLA window: since ({since.isoformat()}) must be before until")
    steps = [
        _DeadlineStep(cadence.id, index, step, step.within - step.after)
        for cadence in config.cadences
        for index, step in enumerate(cadence.steps)
        if step.within is not None
    ]
    waiting = _waiting_outcomes(conn, steps, since, until, now)
    out: list[dict[str, Any]] = []
    for item in steps:
        step, offset = item.step, item.offset
        assert step.within is not None
        counts = Counter(_ledger_outcomes(conn, item.cadence, step.id, offset, since, until, now))
        counts.update(waiting.get((item.cadence, item.index), {}))
        met, late = counts.pop("met", 0), counts.pop("late", 0)
        pending = counts.pop("pending", 0)
        unreachable = counts.pop("unreachable", 0)
        held_out = counts.pop("holdout", 0)
        condition_not_met = counts.pop("condition_not_met", 0)
        never_by_reason = {reason: n for reason, n in sorted(counts.items()) if n}
        never = sum(never_by_reason.values())
        due = met + late + never
        out.append(
            {
                "cadence": item.cadence,
                "step": step.id,
                "within_hours": _hours(step.within),
                "after_hours": _hours(step.after),
                "due": due,
                "met": met,
                "late": late,
                "never": never,
                "met_rate": met / due if due else None,
                "pending": pending,
                "unreachable": unreachable,
                "held_out": held_out,
                "condition_not_met": condition_not_met,
                "never_by_reason": never_by_reason,
            }
        )
    return out


def _ledger_outcomes(
    conn: Connection,
    cadence_id: str,
    step_id: str,
    offset: timedelta,
    since: datetime,
    until: datetime,
    now: datetime,
) -> dict[str, int]:
    """Occurrences with ledger rows, by outcome (met, late, pending, or a never reason).

    Only live rows count (a superseded attempt's key is retired), and an occurrence has
    one live row at most (its idempotency key is unique): no grouping by occurrence.
    """
    touches = _touches.c
    waited = _seconds_between(conn, touches.due_at, touches.delivery_at)
    slack = _SQLITE_SLACK if conn.dialect.name == "sqlite" else 0.0
    outcome = case(
        (
            touches.status == "sent",
            case((waited <= offset.total_seconds() + slack, "met"), else_="late"),
        ),
        (
            touches.status.in_(("claimed", "in_flight")),
            case((touches.due_at > now - offset, "pending"), else_="unconfirmed"),
        ),
        (and_(touches.status == "task", touches.reason.startswith(NO_CHANNEL)), "unreachable"),
        (
            and_(touches.status == "skipped", touches.reason.startswith(SKIP_PREFIX)),
            "condition_not_met",
        ),
        else_=touches.status,
    )
    query = (
        select(outcome.label("outcome"), func.count())
        .where(
            touches.cadence_id == cadence_id,
            touches.step_id == step_id,
            touches.due_at >= since - offset,
            touches.due_at < until - offset,
            touches.status != "released",
            not_(touches.idempotency_key.contains(RETIRED)),
        )
        .group_by(outcome)
    )
    return {name: count for name, count in conn.execute(query)}


def _waiting_outcomes(
    conn: Connection,
    steps: list[_DeadlineStep],
    since: datetime,
    until: datetime,
    now: datetime,
) -> dict[tuple[str, int], dict[str, int]]:
    """Occurrences without a ledger row: enrollments still (or last) waiting on a step.

    One pass over the enrollments for every step, keyed by (cadence, step index).
    """
    if not steps:
        return {}
    rows = _enrollments.c
    at_step = {
        (item.cadence, item.index): and_(
            rows.cadence_id == item.cadence, rows.next_step == item.index
        )
        for item in steps
    }
    after_deadline = _seconds_between(conn, rows.step_due_at, rows.stopped_at)
    owed = [
        and_(
            at_step[item.cadence, item.index],
            rows.step_due_at >= since - item.offset,
            rows.step_due_at < until - item.offset,
            or_(
                rows.status == "active",
                # Stopped only after the deadline had passed unsent: that occurrence was owed.
                and_(rows.status == "stopped", after_deadline >= item.offset.total_seconds()),
            ),
        )
        for item in steps
    ]
    # The occurrence's live row has exactly its idempotency key (a superseded attempt's key
    # carries a suffix): a lookup in the unique index, no table row read.
    step_id = case(*((at_step[item.cadence, item.index], item.step.id) for item in steps))
    key = cast(rows.id, String) + ":" + step_id + ":" + cast(rows.next_occurrence, String)
    has_row = exists().where(_touches.c.idempotency_key == key)
    outcome = case(
        (rows.status == "stopped", "stopped"),
        *(
            (
                and_(at_step[item.cadence, item.index], rows.step_due_at <= now - item.offset),
                "overdue",
            )
            for item in steps
        ),
        else_="pending",
    )
    query = (
        select(rows.cadence_id, rows.next_step, outcome.label("outcome"), func.count())
        .where(or_(*owed), not_(has_row))
        .group_by(rows.cadence_id, rows.next_step, outcome)
    )
    out: dict[tuple[str, int], dict[str, int]] = {}
    for cadence_id, index, name, count in conn.execute(query):
        out.setdefault((cadence_id, index), {})[name] = count
    return out


def task_backlog(conn: Connection, until: datetime) -> dict[str, Any]:
    """Recruiter tasks open at ``until``: counts, overdue, age (hours), per owner and kind.

    A task is open at ``until`` when it was created before it and not completed before it;
    overdue when its due time is before ``until``. Ages are ``until - created_at``.
    """
    open_then = and_(
        _tasks.c.created_at < until,
        or_(_tasks.c.completed_at.is_(None), _tasks.c.completed_at >= until),
    )
    overdue = func.sum(case((_tasks.c.due_at < until, 1), else_=0))
    groups = conn.execute(
        select(
            _tasks.c.owner_id,
            _tasks.c.kind,
            func.count(),
            overdue,
            func.min(_tasks.c.created_at),
        )
        .where(open_then)
        .group_by(_tasks.c.owner_id, _tasks.c.kind)
    ).all()
    # Owners by name, tasks without an owner last (the databases order NULL differently).
    groups.sort(key=lambda row: (row[0] is None, row[0] or "", row[1]))
    by_owner = []
    for owner, kind, count, late, oldest in groups:
        scope = and_(
            open_then,
            _tasks.c.owner_id.is_(None) if owner is None else _tasks.c.owner_id == owner,
            _tasks.c.kind == kind,
        )
        by_owner.append(
            {
                "owner": owner,
                "kind": kind,
                "open": count,
                "overdue": int(late or 0),
                "median_age_hours": _median_age(conn, scope, count, until),
                "max_age_hours": _hours(until - oldest),
            }
        )
    total = sum(group["open"] for group in by_owner)
    oldest = min((row[4] for row in groups), default=None)
    return {
        "open": total,
        "overdue": sum(group["overdue"] for group in by_owner),
        "median_age_hours": _median_age(conn, open_then, total, until),
        "max_age_hours": _hours(until - oldest) if oldest is not None else None,
        "by_owner": by_owner,
    }


def _median_age(
    conn: Connection, scope: ColumnElement[bool], count: int, until: datetime
) -> float | None:
    """Median of ``until - created_at`` over ``count`` tasks in ``scope``: the middle one or
    two rows by creation time (an ``OFFSET`` query keeps memory flat on both databases)."""
    if not count:
        return None
    middle = conn.execute(
        select(_tasks.c.created_at)
        .where(scope)
        .order_by(_tasks.c.created_at.desc())
        .offset((count - 1) // 2)
        .limit(2 - count % 2)
    ).scalars()
    ages = [_hours(until - created) for created in middle]
    return sum(ages) / len(ages)


def _seconds_between(
    conn: Connection, start: ColumnElement[Any], end: ColumnElement[Any]
) -> ColumnElement[float]:
    """``end - start`` in seconds, in SQL (PostgreSQL: epoch of the interval; SQLite: Julian
    days of the stored UTC text)."""
    if conn.dialect.name == "postgresql":
        return extract("epoch", end - start)
    return (func.julianday(end) - func.julianday(start)) * 86400.0


def _hours(delta: timedelta) -> float:
    return delta.total_seconds() / 3600
