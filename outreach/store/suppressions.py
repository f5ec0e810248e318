"""The suppression list: addresses never to message, whether or not anyone has them yet.

An opt-out, unsubscribe, bounce or STOP is recorded by its normalised address
(:func:`record`), so one that arrives before the person is imported still holds when
they are: import and sync apply the list to the people they write
(:func:`apply_to_people`), and every tick reads it again for the people it decides
(:func:`suppressed_points`). What an entry covers is its ``scope``:

* ``address``: that address, for everyone who has it (a bounce; a STOP from a phone two
  people share silences the phone for both);
* ``channel``: every address of that kind of whoever has it (an email unsubscribe or
  opt-out covers all of that person's email addresses);
* ``all``: every channel of whoever has it (a global opt-out).

The first reason recorded for an address and scope stays.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, select, update

from outreach.store.bulk import bulk_write
from outreach.store.schema import ContactPoint, Person, Suppression

__all__ = ["Hits", "apply_to_people", "holders", "record", "scope_for", "suppressed_points"]

_suppressions = Suppression.__table__
_contacts = ContactPoint.__table__
_people = Person.__table__
_CHUNK = 500


def scope_for(event_type: str, kind: str) -> str:
    """The scope of a suppression from an event of ``event_type`` on an address of ``kind``.

    A bounce stays with its address and a STOP with its phone; an email unsubscribe or
    opt-out covers every email address of the person.
    """
    if event_type in ("opt_out", "unsubscribe") and kind == "email":
        return "channel"
    return "address"


def record(conn: Connection, entries: Iterable[dict[str, Any]], now: datetime) -> None:
    """Add ``entries`` (``kind``, ``value``, ``scope``, ``reason``, ``source``, ``at``) to
    the list in one statement; an address already listed in that scope keeps its entry."""
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for entry in entries:
        key = (entry["kind"], entry["value"], entry["scope"])
        if key not in rows or entry["at"] < rows[key]["at"]:
            rows[key] = {
                "kind": entry["kind"],
                "value": entry["value"],
                "scope": entry["scope"],
                "reason": entry["reason"],
                "source": (entry.get("source") or "unknown")[:64],
                "at": entry["at"],
                "created_at": now,
            }
    bulk_write(conn, _suppressions, list(rows.values()), conflict=("kind", "value", "scope"))


@dataclass
class Hits:
    """What the list says about some people: suppressed points (id -> reason) and the
    people opted out of everything (id -> when)."""

    points: dict[int, tuple[str, datetime]]
    people: dict[int, datetime]


def suppressed_points(conn: Connection, person_ids: Sequence[int]) -> Hits:
    """The contact points of ``person_ids`` the list suppresses, and who it opts out.

    One query per 500 people, plus one when an entry of scope ``channel`` reaches
    points without an entry of their own.
    """
    hits = Hits({}, {})
    channel: dict[tuple[int, str], tuple[str, datetime]] = {}
    ids = sorted(set(person_ids))
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        query = (
            select(
                _contacts.c.id,
                _contacts.c.person_id,
                _contacts.c.kind,
                _suppressions.c.scope,
                _suppressions.c.reason,
                _suppressions.c.at,
            )
            .join(
                _suppressions,
                and_(
                    _suppressions.c.kind == _contacts.c.kind,
                    _suppressions.c.value == _contacts.c.value,
                ),
            )
            .where(_contacts.c.person_id.in_(chunk))
        )
        for row in conn.execute(query):
            if row.scope == "address":
                hits.points.setdefault(row.id, (row.reason, row.at))
            elif row.scope == "channel":
                channel.setdefault((row.person_id, row.kind), (row.reason, row.at))
            else:  # all: the person is opted out; their points stay as they are
                earliest = hits.people.get(row.person_id)
                hits.people[row.person_id] = row.at if earliest is None else min(earliest, row.at)
    if channel:
        owners = sorted({person_id for person_id, _ in channel})
        for start in range(0, len(owners), _CHUNK):
            for point_id, person_id, kind in conn.execute(
                select(_contacts.c.id, _contacts.c.person_id, _contacts.c.kind).where(
                    _contacts.c.person_id.in_(owners[start : start + _CHUNK])
                )
            ):
                found = channel.get((person_id, kind))
                if found is not None:
                    hits.points.setdefault(point_id, found)
    return hits


def apply_to_people(conn: Connection, person_ids: Sequence[int], now: datetime) -> Hits:
    """Mark what the list covers on ``person_ids``: their points suppressed, their global
    opt-out set. Sticky: nothing is ever cleared here."""
    hits = suppressed_points(conn, person_ids)
    if hits.points:
        conn.execute(
            update(_contacts)
            .where(_contacts.c.id == bindparam("b_id"), _contacts.c.suppressed.is_(False))
            .values(
                suppressed=True,
                suppressed_reason=bindparam("b_reason"),
                suppressed_at=bindparam("b_at"),
                updated_at=now,
            ),
            [
                {"b_id": point_id, "b_reason": reason, "b_at": at}
                for point_id, (reason, at) in sorted(hits.points.items())
            ],
        )
    if hits.people:
        conn.execute(
            update(_people)
            .where(_people.c.id == bindparam("b_id"), _people.c.global_opt_out.is_(False))
            .values(global_opt_out=True, opted_out_at=bindparam("b_at"), updated_at=now),
            [{"b_id": person_id, "b_at": at} for person_id, at in sorted(hits.people.items())],
        )
    return hits


def holders(conn: Connection, addresses: Iterable[tuple[str, str]]) -> list[int]:
    """The people who have any of ``addresses`` (``(kind, value)`` pairs)."""
    by_kind: dict[str, set[str]] = defaultdict(set)
    for kind, value in addresses:
        by_kind[kind].add(value)
    found: set[int] = set()
    for kind, values in by_kind.items():
        ordered = sorted(values)
        for start in range(0, len(ordered), _CHUNK):
            found.update(
                conn.execute(
                    select(_contacts.c.person_id).where(
                        _contacts.c.kind == kind,
                        _contacts.c.value.in_(ordered[start : start + _CHUNK]),
                    )
                ).scalars()
            )
    return sorted(found)
