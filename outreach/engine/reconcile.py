"""Reconciling ambiguous sends: ask the provider, record what it says, hand over the rest.

A touch is ``ambiguous`` when its request may have reached the provider (a timeout after
the request left, or ``in_flight`` when its run died: see :mod:`outreach.engine.recover`).
:func:`reconcile_ambiguous` asks each channel whether its provider holds the message.
Found: the touch is ``sent`` (and its CRM note owed). Provably absent: it is released like
a claim, due again. Too early to tell: asked again next run. Cannot tell: a ``check``
task for the recruiter, in ``outreach tasks`` and, for CRM records, in the CRM.

Invariant carried: an ambiguous send is never re-sent blindly (invariant 2).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, select, update

from channels.base import Channel, Inquiry
from outreach.cadence import CadenceConfig
from outreach.engine.recover import CHECK_TASK_KIND, RecoverySummary, Transactions, release
from outreach.store.bulk import bulk_write
from outreach.store.schema import (
    CandidateRecord,
    ContactPoint,
    Enrollment,
    Task,
    Touch,
    WriteBack,
)
from outreach.writeback import CRM_SOURCES

__all__ = ["reconcile_ambiguous"]

_touches = Touch.__table__
_enrollments = Enrollment.__table__
_contacts = ContactPoint.__table__
_records = CandidateRecord.__table__
_tasks = Task.__table__
_write_backs = WriteBack.__table__
_RECONCILE_BATCH = 200


def reconcile_ambiguous(
    transaction: Transactions,
    channels: Mapping[str, Channel],
    config: CadenceConfig,
    now: datetime,
    summary: RecoverySummary,
    *,
    person_ids: Iterable[int] | None = None,
) -> None:
    """Ask each channel's provider about the ambiguous touches not yet handed over.

    A run asks twice (before planning, and at its end for its own sends): ``waiting`` is
    what the last asking left unanswered, not a sum over both.
    """
    summary.waiting = 0
    checked = select(_tasks.c.id).where(
        _tasks.c.touch_id == _touches.c.id, _tasks.c.kind == CHECK_TASK_KIND
    )
    query = (
        select(
            _touches.c.id,
            _touches.c.channel,
            _touches.c.person_id,
            _touches.c.enrollment_id,
            _touches.c.cadence_id,
            _touches.c.step_id,
            _touches.c.occurrence,
            _touches.c.planned_at,
            _touches.c.claimed_at,
            _touches.c.updated_at,
            _touches.c.body_digest,
            _touches.c.reason,
            _touches.c.subject,
            _touches.c.variant,
            _touches.c.contact_point_id,
            _contacts.c.value.label("to"),
            _records.c.id.label("record_id"),
            _records.c.source,
            _records.c.external_id,
            _records.c.owner_id,
        )
        .select_from(
            _touches.outerjoin(_contacts, _contacts.c.id == _touches.c.contact_point_id)
            .outerjoin(_enrollments, _enrollments.c.id == _touches.c.enrollment_id)
            .outerjoin(_records, _records.c.id == _enrollments.c.record_id)
        )
        .where(_touches.c.status == "ambiguous", ~checked.exists())
        .order_by(_touches.c.id)
    )
    if person_ids is not None:
        query = query.where(_touches.c.person_id.in_(list(person_ids)))
    with transaction(immediate=False) as conn:
        rows = conn.execute(query).all()
    if not rows:
        return
    known = _known_ids(transaction, {row.contact_point_id for row in rows} - {None})
    by_channel: dict[str | None, list[Any]] = {}
    for row in rows:
        by_channel.setdefault(row.channel, []).append(row)
    for name, items in by_channel.items():
        channel = channels.get(name or "")
        if channel is None:
            # The channel is off in this run: its provider cannot be asked; next run may.
            summary.waiting += len(items)
            continue
        for start in range(0, len(items), _RECONCILE_BATCH):
            chunk = items[start : start + _RECONCILE_BATCH]
            inquiries = [
                Inquiry(
                    touch_id=row.id,
                    to=row.to or "",
                    since=row.claimed_at,
                    send_at=row.planned_at,
                    body_digest=row.body_digest,
                    known_ids=frozenset(known.get(row.contact_point_id, ())),
                )
                for row in chunk
            ]
            try:
                answers = {a.touch_id: a for a in channel.reconcile(inquiries, now)}
            except Exception as exc:  # a channel bug: ask again next run, say why
                summary.waiting += len(chunk)
                summary.problems.append(f"{name}: {type(exc).__name__} while reconciling")
                continue
            _apply(transaction, chunk, answers, config, now, summary)


def _known_ids(transaction: Transactions, points: set[int]) -> dict[int, set[str]]:
    """The provider ids the ledger already gives touches to these contact points."""
    known: dict[int, set[str]] = {}
    ids = sorted(points)
    with transaction(immediate=False) as conn:
        for start in range(0, len(ids), 500):
            for point, provider_id in conn.execute(
                select(_touches.c.contact_point_id, _touches.c.provider_message_id).where(
                    _touches.c.contact_point_id.in_(ids[start : start + 500]),
                    _touches.c.provider_message_id.is_not(None),
                )
            ):
                known.setdefault(point, set()).add(provider_id)
    return known


def _apply(
    transaction: Transactions,
    rows: list[Any],
    answers: Mapping[int, Any],
    config: CadenceConfig,
    now: datetime,
    summary: RecoverySummary,
) -> None:
    sent: list[dict[str, Any]] = []
    absent: list[int] = []
    hand_over: list[tuple[Any, str]] = []
    for row in rows:
        answer = answers.get(row.id)
        if answer is None:
            summary.waiting += 1
        elif answer.status == "delivered":
            sent.append(
                {
                    "id": row.id,
                    "status": "sent",
                    "sent_at": row.claimed_at,
                    "delivery_at": max(row.claimed_at, row.planned_at),
                    "provider_message_id": answer.provider_message_id,
                    "recall_ref": answer.recall_ref,
                    "reason": _append(row.reason, f"reconciled: {answer.reason}"),
                    "updated_at": now,
                }
            )
        elif answer.status == "absent":
            absent.append(row.id)
        elif answer.status == "later":
            summary.waiting += 1
        else:
            hand_over.append((row, answer.reason or "the provider cannot tell"))
    by_id = {row.id: row for row in rows}
    with transaction() as conn:
        if sent:
            notes = []
            # Only rows still ambiguous: another run may have settled them meanwhile.
            for item in sent:
                settled = conn.execute(
                    update(_touches)
                    .where(and_(_touches.c.id == item["id"], _touches.c.status == "ambiguous"))
                    .values({k: v for k, v in item.items() if k != "id"})
                ).rowcount
                summary.confirmed += settled
                if settled and (note := _note(by_id[item["id"]], now)) is not None:
                    notes.append(note)
            bulk_write(conn, _write_backs, notes, conflict=("touch_id", "kind"))
        if absent:
            released, dropped = release(
                conn,
                absent,
                config,
                now,
                from_status="ambiguous",
                why="ambiguous send the provider never received",
            )
            summary.absent += released + dropped
            summary.dropped += dropped
        if hand_over:
            _check_tasks(conn, hand_over, now, summary)


def _check_tasks(
    conn: Connection, hand_over: list[tuple[Any, str]], now: datetime, summary: RecoverySummary
) -> None:
    """A task per touch nobody can confirm, in the engine's queue and the CRM."""
    tasks = []
    for row, why in hand_over:
        title = (
            f"Check whether the {row.channel} {row.cadence_id}/{row.step_id} reached "
            f"candidate {row.person_id} before sending anything by hand"
        )
        body = (
            f"The {row.channel} message of {row.cadence_id}/{row.step_id} (touch {row.id}, "
            f"planned {row.planned_at.isoformat()}) may or may not have been delivered, and "
            f"the engine could not find out: {why}. It will not be sent again by the engine."
        )
        tasks.append(
            {
                "person_id": row.person_id,
                "record_id": row.record_id,
                "touch_id": row.id,
                "source": row.source,
                "owner_id": row.owner_id,
                "kind": CHECK_TASK_KIND,
                "title": title[:500],
                "body": body,
                "reason": why[:2000],
                "due_at": now,
                "status": "open",
                "external_id": None,
                "created_at": now,
            }
        )
        summary.reasons[why] += 1
    bulk_write(conn, _tasks, tasks)
    summary.handed_over += len(tasks)
    ids = dict(
        conn.execute(
            select(_tasks.c.touch_id, _tasks.c.id).where(
                _tasks.c.touch_id.in_([row.id for row, _ in hand_over]),
                _tasks.c.kind == CHECK_TASK_KIND,
            )
        ).all()
    )
    owed = [
        {
            "touch_id": row.id,
            "inbound_id": None,
            "task_id": ids.get(row.id),
            "source": row.source,
            "external_id": row.external_id,
            "kind": "task",
            "text": f"{task['title']}\n\n{task['body']}",
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
            "updated_at": now,
        }
        for (row, _), task in zip(hand_over, tasks, strict=True)
        if row.source in CRM_SOURCES and row.external_id
    ]
    bulk_write(conn, _write_backs, owed, conflict=("touch_id", "kind"))


def _note(row: Any, now: datetime) -> dict[str, Any] | None:
    """The CRM note a confirmed send is owed, as a confirmed send at the time gets it."""
    if row.source not in CRM_SOURCES or not row.external_id:
        return None
    what = f"Email '{row.subject}'" if row.channel == "email" and row.subject else None
    what = what or ("Email" if row.channel == "email" else str(row.channel).upper())
    return {
        "touch_id": row.id,
        "inbound_id": None,
        "task_id": None,
        "source": row.source,
        "external_id": row.external_id,
        "kind": "note",
        "text": f"{what} sent by the outreach engine ({row.cadence_id}/{row.step_id}, "
        f"variant {row.variant}; confirmed with the provider after an interrupted send)",
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        "updated_at": now,
    }


def _append(reason: str | None, more: str) -> str:
    return "; ".join(r for r in (reason, more) if r)[:2000]
