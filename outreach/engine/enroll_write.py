"""Writing one batch of applied events: enrollments, ends, opt-outs, pauses, suppressions.

:mod:`outreach.engine.enroll` applies a batch of events in order to an in-memory view;
:func:`write_changes` then writes every change with one statement per kind, in the
batch's transaction, and puts what it suppressed on the suppression list, applied to
everyone holding those addresses (invariant 4: an opt-out, unsubscribe, bounce or STOP
covers the address for every person who has it, now and later).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, or_, select, update

from outreach.store import suppressions as suppression_list
from outreach.store.bulk import bulk_update, bulk_write
from outreach.store.schema import ContactPoint, Enrollment, Person

if TYPE_CHECKING:
    from outreach.engine.enroll import _Batch

__all__ = ["chunks", "write_changes"]

_enrollments = Enrollment.__table__
_contacts = ContactPoint.__table__
_people = Person.__table__


def write_changes(batch: _Batch) -> None:
    """Write every change of an event batch, one statement per kind."""
    bulk_write(
        batch.conn,
        _enrollments,
        batch.new_rows,
        conflict=("record_id", "cadence_id", "triggered_at"),
    )
    bulk_update(
        batch.conn,
        _enrollments,
        [
            {
                "id": enrollment_id,
                "status": "stopped",
                "stop_reason": reason,
                "stopped_at": batch.now,
                "next_due_at": None,
                "updated_at": batch.now,
            }
            for enrollment_id, reason in batch.ends.items()
        ],
    )
    bulk_update(batch.conn, _people, batch.opt_outs)
    ended = [pid for pid, until in batch.pauses.items() if until is None]
    for chunk in chunks(sorted(ended)):
        batch.conn.execute(
            update(_people)
            .where(_people.c.id.in_(chunk), _people.c.paused_until.is_not(None))
            .values(paused_until=None, pause_reason=None, updated_at=batch.now)
        )
    pauses = [
        {"b_id": pid, "until": until, "why": f"out of office until {until:%Y-%m-%d}"}
        for pid, until in batch.pauses.items()
        if until is not None
    ]
    if pauses:
        # A pause only ever grows: an earlier notice does not shorten a later one.
        batch.conn.execute(
            update(_people)
            .where(
                _people.c.id == bindparam("b_id"),
                or_(
                    _people.c.paused_until.is_(None),
                    _people.c.paused_until < bindparam("until"),
                ),
            )
            .values(
                paused_until=bindparam("until"),
                pause_reason=bindparam("why"),
                updated_at=batch.now,
            ),
            pauses,
        )
    if batch.suppressions:
        # Suppression is sticky and the first reason stays: only points not yet suppressed.
        batch.conn.execute(
            update(_contacts)
            .where(_contacts.c.id == bindparam("b_id"), _contacts.c.suppressed.is_(False))
            .values(
                suppressed=True,
                suppressed_reason=bindparam("reason"),
                suppressed_at=bindparam("at"),
                updated_at=bindparam("now"),
            ),
            [{k: item[k] for k in ("b_id", "reason", "at", "now")} for item in batch.suppressions],
        )
    _list(batch)


def _list(batch: _Batch) -> None:
    """Put what this batch suppressed on the suppression list (by address), and apply
    the list to everyone who has those addresses."""
    wanted: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for item in batch.suppressions:
        wanted[item["b_id"]].append(item)
    entries: list[dict[str, Any]] = []
    for chunk in chunks(sorted(wanted)):
        for cid, kind, value in batch.conn.execute(
            select(_contacts.c.id, _contacts.c.kind, _contacts.c.value).where(
                _contacts.c.id.in_(chunk)
            )
        ):
            entries.extend(
                {
                    "kind": kind,
                    "value": value,
                    "scope": suppression_list.scope_for(item["type"], kind),
                    "reason": item["reason"],
                    "source": item["source"],
                    "at": item["at"],
                }
                for item in wanted[cid]
            )
    # A global opt-out: whoever has one of these email addresses later is this person.
    opted = sorted({row["id"] for row in batch.opt_outs})
    when = {row["id"]: row["opted_out_at"] for row in batch.opt_outs}
    for chunk in chunks(opted):
        for person_id, value in batch.conn.execute(
            select(_contacts.c.person_id, _contacts.c.value).where(
                _contacts.c.person_id.in_(chunk), _contacts.c.kind == "email"
            )
        ):
            entries.append(
                {
                    "kind": "email",
                    "value": value,
                    "scope": "all",
                    "reason": "opted out",
                    "source": "events",
                    "at": when[person_id],
                }
            )
    if not entries:
        return
    suppression_list.record(batch.conn, entries, batch.now)
    people = suppression_list.holders(batch.conn, {(e["kind"], e["value"]) for e in entries})
    suppression_list.apply_to_people(batch.conn, people, batch.now)


def chunks(ids: list[int], size: int = 500) -> Iterator[list[int]]:
    """``ids`` in chunks of ``size`` (an IN list per statement stays small)."""
    for start in range(0, len(ids), size):
        yield ids[start : start + size]
