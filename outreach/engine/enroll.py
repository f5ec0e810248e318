"""Enroll and stop: turn unprocessed events into enrollment changes.

* ``stage_change`` (written by import and sync): enrollments of that record whose trigger
  stage is left end when their cadence stops on ``stage_change``; the new stage enrolls the
  person in every cadence it triggers, once per entry (unique record × cadence × entry
  time), and never twice at once in the same cadence for one person (the same application
  seen in two CRMs).
* ``reply``: ends the person's enrollments that stop on ``reply``.
* ``opt_out`` / ``unsubscribe``: suppress the contact point (or, without one, opt the person
  out globally) and end enrollments that stop on ``opt_out``.
* ``bounce``: suppress the email address.

Events are processed in id order, in batches, each batch in one transaction with its
``processed_at`` stamp, so a crash never applies an event twice or loses one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, select, update

from outreach.cadence import CadenceConfig
from outreach.store.bulk import bulk_write
from outreach.store.schema import ContactPoint, Enrollment, Event, Person

__all__ = ["EnrollStats", "process_events"]

_events = Event.__table__
_enrollments = Enrollment.__table__
_contacts = ContactPoint.__table__
_people = Person.__table__
BATCH = 1000
_SUPPRESSING = {"opt_out": "opted out", "unsubscribe": "unsubscribed", "bounce": "bounced"}
_CHANNEL_KIND = {"email": "email", "sms": "phone", "call": "phone", "linkedin": "linkedin"}


@dataclass
class EnrollStats:
    """What event processing changed."""

    events: int = 0
    enrolled: Counter[str] = field(default_factory=Counter)
    stopped: Counter[str] = field(default_factory=Counter)
    suppressed: int = 0
    opted_out: int = 0
    already_enrolled: int = 0


def process_events(
    transaction: Callable[[], AbstractContextManager[Connection]],
    config: CadenceConfig,
    now: datetime,
    *,
    person_ids: set[int] | None = None,
) -> EnrollStats:
    """Apply every unprocessed event; ``transaction()`` opens one unit of work."""
    stats = EnrollStats()
    after = 0
    while True:
        with transaction() as conn:
            query = (
                select(_events)
                .where(_events.c.processed_at.is_(None), _events.c.id > after)
                .order_by(_events.c.id)
                .limit(BATCH)
            )
            if person_ids is not None:
                query = query.where(_events.c.person_id.in_(person_ids))
            if conn.dialect.name == "postgresql":
                # Concurrent workers share the events instead of applying them twice.
                query = query.with_for_update(skip_locked=True)
            rows = list(conn.execute(query).mappings())
            if not rows:
                return stats
            for row in rows:
                _apply(conn, config, row, now, stats)
            conn.execute(
                update(_events)
                .where(_events.c.id.in_([row["id"] for row in rows]))
                .values(processed_at=now)
            )
            stats.events += len(rows)
            after = rows[-1]["id"]


def _apply(
    conn: Connection, config: CadenceConfig, event: Any, now: datetime, stats: EnrollStats
) -> None:
    kind = event["type"]
    person_id = event["person_id"]
    if person_id is None:
        return
    if kind == "stage_change":
        payload = event["payload"] or {}
        _stage_change(conn, config, event, payload.get("to"), now, stats)
    elif kind == "reply":
        _stop(
            conn,
            config,
            person_id,
            "reply",
            f"reply on {event['channel'] or 'a channel'}",
            now,
            stats,
        )
    elif kind in _SUPPRESSING:
        reason = _SUPPRESSING[kind]
        if event["contact_point_id"] is not None:
            _suppress(conn, [event["contact_point_id"]], reason, event["at"], now)
            stats.suppressed += 1
        elif kind in ("opt_out", "unsubscribe") and not event["channel"]:
            conn.execute(
                update(_people)
                .where(_people.c.id == person_id)
                .values(global_opt_out=True, opted_out_at=event["at"], updated_at=now)
            )
            stats.opted_out += 1
        elif event["channel"] in _CHANNEL_KIND:
            ids = list(
                conn.execute(
                    select(_contacts.c.id).where(
                        _contacts.c.person_id == person_id,
                        _contacts.c.kind == _CHANNEL_KIND[event["channel"]],
                    )
                ).scalars()
            )
            _suppress(conn, ids, reason, event["at"], now)
            stats.suppressed += len(ids)
        if kind != "bounce":
            _stop(conn, config, person_id, "opt_out", reason, now, stats)


def _stage_change(
    conn: Connection,
    config: CadenceConfig,
    event: Any,
    to: str | None,
    now: datetime,
    stats: EnrollStats,
) -> None:
    person_id, record_id, at = event["person_id"], event["record_id"], event["at"]
    # Leaving a stage: end this record's enrollments from other stages.
    active = conn.execute(
        select(_enrollments.c.id, _enrollments.c.cadence_id, _enrollments.c.trigger_stage).where(
            _enrollments.c.person_id == person_id,
            _enrollments.c.record_id == record_id,
            _enrollments.c.status == "active",
            _enrollments.c.trigger_stage != (to or ""),
        )
    ).all()
    for enrollment_id, cadence_id, trigger_stage in active:
        stop_on = _stop_on(config, cadence_id)
        if "stage_change" in stop_on:
            reason = f"stage_change: {trigger_stage} -> {to or 'unmapped stage'}"
            _end(conn, [enrollment_id], reason, now)
            stats.stopped["stage_change"] += 1
    if to is None:
        return
    opted_out = conn.execute(
        select(_people.c.global_opt_out).where(_people.c.id == person_id)
    ).scalar()
    if opted_out:
        return
    # One person, one running enrollment per cadence: the same application seen in two
    # CRMs (or a record merged into a person already enrolled) does not start it twice.
    running = set(
        conn.execute(
            select(_enrollments.c.cadence_id).where(
                _enrollments.c.person_id == person_id, _enrollments.c.status == "active"
            )
        ).scalars()
    )
    rows = []
    for cadence in config.cadences:
        if cadence.trigger.stage != to:
            continue
        if cadence.id in running:
            stats.already_enrolled += 1
            continue
        first = cadence.steps[0]
        due = at + first.after
        rows.append(
            {
                "person_id": person_id,
                "record_id": record_id,
                "cadence_id": cadence.id,
                "trigger_stage": to,
                "triggered_at": at,
                "status": "active",
                "next_step": 0,
                "next_occurrence": 0,
                "step_due_at": due,
                "next_due_at": due,
                "created_at": now,
                "updated_at": now,
            }
        )
        stats.enrolled[cadence.id] += 1
    bulk_write(conn, _enrollments, rows, conflict=("record_id", "cadence_id", "triggered_at"))


def _stop_on(config: CadenceConfig, cadence_id: str) -> list[str]:
    try:
        return list(config.cadence(cadence_id).stop_on)
    except KeyError:
        return ["reply", "stage_change", "opt_out"]


def _stop(
    conn: Connection,
    config: CadenceConfig,
    person_id: int,
    trigger: str,
    reason: str,
    now: datetime,
    stats: EnrollStats,
) -> None:
    active = conn.execute(
        select(_enrollments.c.id, _enrollments.c.cadence_id).where(
            _enrollments.c.person_id == person_id, _enrollments.c.status == "active"
        )
    ).all()
    ids = [eid for eid, cadence_id in active if trigger in _stop_on(config, cadence_id)]
    if ids:
        _end(conn, ids, f"{trigger}: {reason}", now)
        stats.stopped[trigger] += len(ids)


def _end(conn: Connection, ids: list[int], reason: str, now: datetime) -> None:
    conn.execute(
        update(_enrollments)
        .where(_enrollments.c.id.in_(ids))
        .values(
            status="stopped", stop_reason=reason, stopped_at=now, next_due_at=None, updated_at=now
        )
    )


def _suppress(conn: Connection, ids: list[int], reason: str, at: datetime, now: datetime) -> None:
    if not ids:
        return
    conn.execute(
        update(_contacts)
        .where(and_(_contacts.c.id.in_(ids), _contacts.c.suppressed.is_(False)))
        .values(suppressed=True, suppressed_reason=reason, suppressed_at=at, updated_at=now)
    )
