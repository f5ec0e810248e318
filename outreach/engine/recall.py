"""Recall: cancel deliveries a provider holds for later once they should no longer go out.

A touch handed to SendGrid or Twilio with a future delivery time carries a ``recall_ref``
(a batch id, a message SID). When, before that time, its person replies, opts out, is
suppressed on that address, leaves the stage (the enrollment stops) or sends an
out-of-office notice that covers the time, a ``recalls`` row is written and the channel's
``cancel`` is called. Each outcome is kept:

* ``cancelled``: the touch is marked ``cancelled`` in the ledger (it no longer counts
  toward caps); a touch recalled for an out-of-office pause is put back in its enrollment
  so the step goes out after the return (its deadline rules still apply);
* ``failed``: retried at the next tick (sooner when the provider said when), until the
  provider's cut-off makes it ``too_late``;
* ``too_late`` / ``unsupported``: unrecallable, counted in the run's summary.

SendGrid keeps a cancelled batch counted against its limit of ten until it is deleted;
``release`` frees it once the send time has passed.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, or_, select, update

from channels.base import Channel, Recall, RecallResult
from outreach.cadence import CadenceConfig
from outreach.store.bulk import bulk_update, bulk_write
from outreach.store.schema import ContactPoint, Enrollment, Person, Touch
from outreach.store.schema import Recall as RecallRow

__all__ = ["RecallSummary", "recall_scheduled"]

_touches = Touch.__table__
_recalls = RecallRow.__table__
_enrollments = Enrollment.__table__
_people = Person.__table__
_contacts = ContactPoint.__table__
#: recall attempts before a recall that keeps failing is given up (counted unrecallable)
MAX_ATTEMPTS = 12
_BATCH = 500
UNRECALLABLE = ("too_late", "unsupported", "failed")


@dataclass
class RecallSummary:
    """What the recall step did this tick."""

    requested: int = 0
    cancelled: int = 0
    retrying: int = 0
    released: int = 0
    replanned: int = 0
    unrecallable: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)


def recall_scheduled(
    transaction: Callable[..., AbstractContextManager[Connection]],
    channels: Mapping[str, Channel],
    config: CadenceConfig,
    now: datetime,
    *,
    person_ids: set[int] | None = None,
) -> RecallSummary:
    """Find scheduled deliveries that must not go out, cancel them, free spent slots."""
    summary = RecallSummary()
    with transaction() as conn:
        summary.requested = _request(conn, now, person_ids)
        due = list(
            conn.execute(
                select(_recalls, _touches.c.person_id)
                .join(_touches, _touches.c.id == _recalls.c.touch_id)
                .where(_recalls.c.status == "pending", _recalls.c.next_attempt_at <= now)
                .order_by(_recalls.c.send_at)
                .limit(_BATCH * 4)
            ).mappings()
        )
        spent = list(
            conn.execute(
                select(_recalls)
                .where(_recalls.c.status == "cancelled", _recalls.c.send_at < now)
                .limit(_BATCH * 4)
            ).mappings()
        )
    by_channel: dict[str, list[Any]] = defaultdict(list)
    for row in due:
        by_channel[row["channel"]].append(row)
    results: list[tuple[Any, RecallResult]] = []
    for name, rows in by_channel.items():
        channel = channels.get(name)
        if channel is None:
            # The channel is off this run: try again when it is on, unless it is too late.
            results.extend(
                (r, RecallResult(r["touch_id"], "too_late", f"{name} was off until its send time"))
                for r in rows
                if r["send_at"] <= now
            )
            continue
        recalls = [Recall(r["touch_id"], r["ref"], r["send_at"]) for r in rows]
        try:
            answers = {a.touch_id: a for a in channel.cancel(recalls, now)}
        except Exception as exc:  # an untranslated transport error must not end the tick
            answers = {}
            summary.problems.append(f"{name} cancel: {type(exc).__name__}")
        for row in rows:
            answer = answers.get(row["touch_id"]) or RecallResult(
                row["touch_id"], "failed", "no answer from the channel"
            )
            results.append((row, answer))
    released: list[int] = []
    spent_by_channel: dict[str, list[Any]] = defaultdict(list)
    for row in spent:
        spent_by_channel[row["channel"]].append(row)
    for name, rows in spent_by_channel.items():
        channel = channels.get(name)
        if channel is None:
            continue
        try:
            released.extend(
                channel.release([Recall(r["touch_id"], r["ref"], r["send_at"]) for r in rows], now)
            )
        except Exception as exc:
            summary.problems.append(f"{name} release: {type(exc).__name__}")
    with transaction() as conn:
        cutoffs = {
            name: getattr(channel, "cancel_cutoff", timedelta(0))
            for name, channel in channels.items()
        }
        _record(conn, results, now, summary, cutoffs)
        if released:
            for start in range(0, len(released), _BATCH):
                conn.execute(
                    update(_recalls)
                    .where(
                        _recalls.c.touch_id.in_(released[start : start + _BATCH]),
                        _recalls.c.status == "cancelled",
                    )
                    .values(status="released", updated_at=now)
                )
            summary.released = len(released)
        _replan_paused(conn, [row for row, a in results if a.status == "cancelled"], config, now)
    summary.replanned = sum(1 for row, a in results if a.status == "cancelled" and _paused(row))
    return summary


def _request(conn: Connection, now: datetime, person_ids: set[int] | None) -> int:
    """Write a pending recall for every held delivery whose reason to go out is gone."""
    stopped = _enrollments.c.status == "stopped"
    opted_out = _people.c.global_opt_out.is_(True)
    # An out-of-office pause holds follow-ups, not the answers to the person's own moves.
    paused = and_(
        _people.c.paused_until.is_not(None),
        _people.c.paused_until > _touches.c.planned_at,
        _touches.c.transactional.is_(False),
    )
    suppressed = _contacts.c.suppressed.is_(True)
    query = (
        select(
            _touches.c.id,
            _touches.c.channel,
            _touches.c.recall_ref,
            _touches.c.planned_at,
            stopped.label("stopped"),
            opted_out.label("opted_out"),
            paused.label("paused"),
            suppressed.label("suppressed"),
            _enrollments.c.stop_reason,
        )
        .join(_enrollments, _enrollments.c.id == _touches.c.enrollment_id)
        .join(_people, _people.c.id == _touches.c.person_id)
        .outerjoin(_contacts, _contacts.c.id == _touches.c.contact_point_id)
        .outerjoin(_recalls, _recalls.c.touch_id == _touches.c.id)
        .where(
            _touches.c.status == "sent",
            _touches.c.recall_ref.is_not(None),
            _touches.c.planned_at > now,
            _recalls.c.id.is_(None),
            or_(stopped, opted_out, paused, suppressed),
        )
    )
    if person_ids is not None:
        query = query.where(_touches.c.person_id.in_(person_ids))
    rows = []
    for row in conn.execute(query):
        if row.opted_out:
            why = "opted out"
        elif row.suppressed:
            why = "address suppressed"
        elif row.stopped:
            why = f"cadence stopped: {row.stop_reason or 'stopped'}"
        else:
            why = "paused: out of office"
        rows.append(
            {
                "touch_id": row.id,
                "channel": row.channel or "",
                "ref": row.recall_ref,
                "send_at": row.planned_at,
                "status": "pending",
                "why": why,
                "reason": None,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
                "updated_at": now,
            }
        )
    bulk_write(conn, _recalls, rows, conflict=("touch_id",))
    return len(rows)


def _record(
    conn: Connection,
    results: list[tuple[Any, RecallResult]],
    now: datetime,
    summary: RecallSummary,
    cutoffs: Mapping[str, timedelta],
) -> None:
    """Write each answer; a failure is retried only while the provider's cut-off allows."""
    recalls, touches = [], []
    for row, answer in results:
        values = {
            "id": row["id"],
            "status": answer.status,
            "reason": answer.reason,
            "attempts": row["attempts"] + 1,
            "next_attempt_at": now,
            "updated_at": now,
        }
        if answer.status == "cancelled":
            summary.cancelled += 1
            touches.append(
                {
                    "id": row["touch_id"],
                    "status": "cancelled",
                    "reason": f"recalled: {row['why']}",
                    "updated_at": now,
                }
            )
        elif (
            answer.status == "failed"
            and row["attempts"] + 1 < MAX_ATTEMPTS
            and now < row["send_at"] - cutoffs.get(row["channel"], timedelta(0))
        ):
            wait = answer.retry_after or min(3600, 60 * 2 ** row["attempts"])
            values.update(status="pending", next_attempt_at=now + timedelta(seconds=wait))
            summary.retrying += 1
        else:
            summary.unrecallable[answer.status] += 1
            summary.problems.append(
                f"touch {row['touch_id']} ({row['channel']}) could not be recalled: "
                f"{answer.reason or answer.status}"
            )
        recalls.append(values)
    bulk_update(conn, _recalls, recalls)
    bulk_update(conn, _touches, touches)


def _paused(row: Any) -> bool:
    return str(row["why"]).startswith("paused")


def _replan_paused(
    conn: Connection, cancelled: list[Any], config: CadenceConfig, now: datetime
) -> None:
    """Put occurrences recalled for an out-of-office pause back into their enrollments.

    Each recalled touch's idempotency key is retired (``#recalled<id>``) so the occurrence
    can be claimed again; the enrollment goes back to its earliest recalled occurrence,
    due after the pause, unless it has stopped meanwhile.
    """
    ids = [row["touch_id"] for row in cancelled if _paused(row)]
    if not ids:
        return
    touches = list(
        conn.execute(
            select(
                _touches.c.id,
                _touches.c.idempotency_key,
                _touches.c.enrollment_id,
                _touches.c.step_id,
                _touches.c.occurrence,
                _touches.c.due_at,
                _touches.c.planned_at,
                _people.c.paused_until,
                _enrollments.c.status,
                _enrollments.c.cadence_id,
            )
            .join(_people, _people.c.id == _touches.c.person_id)
            .join(_enrollments, _enrollments.c.id == _touches.c.enrollment_id)
            .where(_touches.c.id.in_(ids))
            .order_by(_touches.c.planned_at)
        )
    )
    bulk_update(
        conn,
        _touches,
        [{"id": t.id, "idempotency_key": f"{t.idempotency_key}#recalled{t.id}"} for t in touches],
    )
    seen: set[int] = set()
    for touch in touches:
        if touch.enrollment_id in seen or touch.status not in ("active", "completed"):
            continue
        seen.add(touch.enrollment_id)
        try:
            cadence = config.cadence(touch.cadence_id)
        except KeyError:
            continue
        index = next((i for i, s in enumerate(cadence.steps) if s.id == touch.step_id), None)
        if index is None:
            continue
        resume = max(touch.paused_until or now, now)
        conn.execute(
            update(_enrollments)
            .where(_enrollments.c.id == touch.enrollment_id)
            .values(
                status="active",
                stop_reason=None,
                stopped_at=None,
                next_step=index,
                next_occurrence=touch.occurrence,
                step_due_at=touch.due_at,
                next_due_at=resume,
                defer_reason=f"out of office until {resume:%Y-%m-%d}",
                updated_at=now,
            )
        )
