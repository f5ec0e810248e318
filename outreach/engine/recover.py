"""What an interrupted run left behind: hand back what never left, ask the provider about
what may have, and give a person whatever the provider cannot answer.

A touch goes ``claimed`` (decided, in the ledger, enrollment advanced) → ``in_flight``
(marked in its own short transaction immediately before its provider request) →
``sent`` / ``failed`` / ``ambiguous``. A run that dies leaves:

* ``claimed`` touches: no request was ever made for them, so they are **released**: the
  touch is kept for the record as ``released`` under a retired key (``…#released<id>``)
  and its enrollment goes back to that occurrence, due now, so the throttle, the router
  and lateness decide it again. A cadence that stopped meanwhile is not resumed.
* ``in_flight`` touches: the request may have reached the provider. They become
  ``ambiguous`` and are **reconciled**: the channel asks its provider whether it holds
  the message (Twilio: messages to that number, matched by the body's digest, leaving out
  those the ledger already gives other touches; SendGrid: the Email Activity API by the
  touch's ``custom_args``). Found: the touch is ``sent``. Provably absent: it is released
  like a claim. Too early to tell (an activity feed still indexing, its 6 queries a minute
  used up): asked again next run. Cannot tell (no Email Activity
  add-on, a channel that cannot ask): a ``check`` task for the recruiter, in
  ``outreach tasks`` and, for CRM records, in the CRM. Nothing is ever re-sent blindly.

Releasing is this module; reconciling ambiguous sends is :mod:`outreach.engine.reconcile`.
A run's owner is dead when :mod:`outreach.engine.liveness` says so (a lock the killed
process lost) or, where it cannot tell, when the claim's lease has run out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, or_, select, update

from outreach.cadence import CadenceConfig
from outreach.engine.liveness import Liveness
from outreach.store.bulk import bulk_update
from outreach.store.schema import (
    CandidateRecord,
    ContactPoint,
    Enrollment,
    Task,
    Touch,
    WriteBack,
)

__all__ = ["CHECK_TASK_KIND", "RecoverySummary", "Transactions", "recover_interrupted", "release"]

Transactions = Callable[..., AbstractContextManager[Connection]]

_touches = Touch.__table__
_enrollments = Enrollment.__table__
_contacts = ContactPoint.__table__
_records = CandidateRecord.__table__
_tasks = Task.__table__
_write_backs = WriteBack.__table__

#: the task kind of an ambiguous send handed to a person
CHECK_TASK_KIND = "check"


@dataclass
class RecoverySummary:
    """What recovery and reconciliation did in one run."""

    #: claimed by an interrupted run and never requested: due again
    released: int = 0
    #: released, but their cadence had stopped or moved on: not sent
    dropped: int = 0
    #: in flight when their run died: now ambiguous and reconciled
    interrupted: int = 0
    #: ambiguous touches the provider holds: recorded as sent
    confirmed: int = 0
    #: ambiguous touches the provider proved it never received: due again
    absent: int = 0
    #: ambiguous touches the provider cannot answer for yet: asked again next run
    waiting: int = 0
    #: ambiguous touches handed to a person this run (a ``check`` task)
    handed_over: int = 0
    #: why touches were handed over
    reasons: Counter[str] = field(default_factory=Counter)
    #: what went wrong while asking (a channel bug); those touches are asked again
    problems: list[str] = field(default_factory=list)


def recover_interrupted(
    transaction: Transactions,
    liveness: Liveness,
    config: CadenceConfig,
    now: datetime,
    wall: datetime,
    run_id: str,
    summary: RecoverySummary,
) -> None:
    """Release the claims of dead runs and turn their in-flight touches ambiguous."""
    with transaction() as conn:
        rows = conn.execute(
            select(
                _touches.c.id, _touches.c.run_id, _touches.c.status, _touches.c.lease_until
            ).where(
                _touches.c.status.in_(("claimed", "in_flight")),
                or_(_touches.c.run_id.is_(None), _touches.c.run_id != run_id),
            )
        ).all()
        if not rows:
            return
        alive = liveness.alive({row.run_id for row in rows if row.run_id})

        def dead(row: Any) -> bool:
            state = alive.get(row.run_id) if row.run_id else None
            if state is not None:
                return not state
            return row.lease_until is None or row.lease_until < wall

        gone = [row for row in rows if dead(row)]
        in_flight = [row.id for row in gone if row.status == "in_flight"]
        for start in range(0, len(in_flight), 500):
            summary.interrupted += conn.execute(
                update(_touches)
                .where(
                    _touches.c.id.in_(in_flight[start : start + 500]),
                    _touches.c.status == "in_flight",
                )
                .values(
                    status="ambiguous",
                    reason="in flight when its run stopped (killed or crashed); "
                    "reconciled with the provider before anything is sent again",
                    lease_until=None,
                    updated_at=now,
                )
            ).rowcount
        claimed = [row.id for row in gone if row.status == "claimed"]
        released, dropped = release(
            conn,
            claimed,
            config,
            now,
            from_status="claimed",
            why="claimed by an interrupted run and never requested",
        )
        summary.released += released
        summary.dropped += dropped


def release(
    conn: Connection,
    touch_ids: list[int],
    config: CadenceConfig,
    now: datetime,
    *,
    from_status: str,
    why: str,
) -> tuple[int, int]:
    """Retire touches that provably never reached anyone and make their occurrences due
    again; return ``(released, dropped)``.

    Each touch is kept as ``released`` under the key ``…#released<id>`` (so the occurrence
    can be claimed again) and its enrollment goes back to that occurrence, due at ``now``,
    unless the enrollment stopped, or moved past it with a later touch, meanwhile: then the
    touch is dropped (nothing is sent) and says so.
    """
    if not touch_ids:
        return 0, 0
    rows: list[Any] = []
    for start in range(0, len(touch_ids), 500):
        chunk = touch_ids[start : start + 500]
        rows.extend(
            conn.execute(
                update(_touches)
                .where(_touches.c.id.in_(chunk), _touches.c.status == from_status)
                .values(status="released", lease_until=None, updated_at=now)
                .returning(
                    _touches.c.id,
                    _touches.c.idempotency_key,
                    _touches.c.enrollment_id,
                    _touches.c.cadence_id,
                    _touches.c.step_id,
                    _touches.c.occurrence,
                    _touches.c.due_at,
                    _touches.c.reason,
                )
            ).all()
        )
    rows.sort(key=lambda r: (r.due_at, r.id))
    touched: set[int] = set()
    released = dropped = 0
    updates = []
    for row in rows:
        resumed = False
        if row.enrollment_id not in touched:
            resumed = _resume(conn, row, config, now, why)
        touched.add(row.enrollment_id)
        released += resumed
        dropped += not resumed
        outcome = "due again" if resumed else "not sent again: its cadence stopped or moved on"
        updates.append(
            {
                "id": row.id,
                "idempotency_key": f"{row.idempotency_key}#released{row.id}",
                "reason": "; ".join(r for r in (row.reason, f"{why}; {outcome}") if r)[:2000],
            }
        )
    bulk_update(conn, _touches, updates)
    return released, dropped


def _resume(conn: Connection, row: Any, config: CadenceConfig, now: datetime, why: str) -> bool:
    try:
        cadence = config.cadence(row.cadence_id)
    except KeyError:
        return False
    index = next((i for i, s in enumerate(cadence.steps) if s.id == row.step_id), None)
    if index is None:
        return False
    later = (
        select(_touches.c.id)
        .where(
            _touches.c.enrollment_id == row.enrollment_id,
            _touches.c.id > row.id,
            _touches.c.status != "released",
        )
        .exists()
    )
    return bool(
        conn.execute(
            update(_enrollments)
            .where(
                _enrollments.c.id == row.enrollment_id,
                _enrollments.c.status.in_(("active", "completed")),
                _enrollments.c.stop_reason.is_(None),
                ~later,
            )
            .values(
                status="active",
                stop_reason=None,
                stopped_at=None,
                next_step=index,
                next_occurrence=row.occurrence,
                step_due_at=row.due_at,
                next_due_at=now,
                defer_reason=f"released: {why}",
                updated_at=now,
            )
        ).rowcount
    )
