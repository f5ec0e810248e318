"""What the engine knows about a person during one tick, loaded in bulk for a batch."""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, select

from outreach.engine.window import zone_for
from outreach.store.schema import CandidateRecord, ContactPoint, Person, Touch
from outreach.store.suppressions import suppressed_points

__all__ = ["COUNTED_STATUSES", "Contact", "PersonState", "load_people"]

#: ledger statuses that count toward a person's caps: anything that may have reached them
COUNTED_STATUSES = ("claimed", "in_flight", "sent", "ambiguous", "task")

_people = Person.__table__
_records = CandidateRecord.__table__
_contacts = ContactPoint.__table__
_touches = Touch.__table__
# What a tick needs of records and contact points (fewer columns: less to decode per row).
_RECORD_COLUMNS = [
    _records.c[name]
    for name in (
        "id",
        "person_id",
        "source",
        "external_id",
        "first_name",
        "last_name",
        "stage",
        "stage_entered_at",
        "timezone",
        "job_title",
        "job_department",
        "recruiter_name",
        "recruiter_email",
        "recruiter_phone",
        "owner_id",
        "preferred_channel",
        "tags",
        "custom",
        "updated_at",
    )
]
_CONTACT_COLUMNS = [
    _contacts.c[name]
    for name in (
        "id",
        "person_id",
        "kind",
        "value",
        "valid",
        "phone_type",
        "sms_consent",
        "consent_source",
        "shared",
        "suppressed",
        "suppressed_reason",
    )
]


@dataclass
class Contact:
    """One contact point and its state."""

    id: int
    kind: str
    value: str
    valid: bool
    phone_type: str | None
    sms_consent: bool | None
    suppressed: bool
    suppressed_reason: str | None
    #: the source of the newest consent statement (a withdrawal names who withdrew)
    consent_source: str | None = None
    #: another person has this phone too (an office line)
    shared: bool = False


@dataclass
class PersonState:
    """A person's records, contact points and recent touch history."""

    id: int
    global_opt_out: bool
    records: list[dict[str, Any]]
    contacts: list[Contact]
    history: list[datetime] = field(default_factory=list)
    zone: ZoneInfo | None = None
    zone_source: str = "default"
    #: an out-of-office notice holds every touch until then
    paused_until: datetime | None = None

    def record(self, record_id: int | None) -> dict[str, Any]:
        """The record an enrollment came from, else the most recently updated one."""
        for record in self.records:
            if record["id"] == record_id:
                return record
        return max(self.records, key=lambda r: r["updated_at"]) if self.records else {}

    def contact(self, kind: str) -> Contact | None:
        """The best contact point of ``kind``: unsuppressed and valid first, newest first."""
        options = [c for c in self.contacts if c.kind == kind]
        if not options:
            return None
        options.sort(key=lambda c: (not c.suppressed, c.valid, c.id), reverse=True)
        return options[0]

    @property
    def current_stage(self) -> str | None:
        """The stage of the most recently entered record."""
        staged = [r for r in self.records if r["stage"] and r["stage_entered_at"]]
        return max(staged, key=lambda r: r["stage_entered_at"])["stage"] if staged else None

    @property
    def preferred_channel(self) -> str | None:
        """The newest record's preferred channel, if any says one."""
        for record in sorted(self.records, key=lambda r: r["updated_at"], reverse=True):
            if record["preferred_channel"]:
                return record["preferred_channel"]
        return None

    def add_touch(self, at: datetime) -> None:
        """Count a new touch at ``at`` toward the caps."""
        bisect.insort(self.history, at)


def load_people(
    conn: Connection,
    person_ids: Iterable[int],
    *,
    history_since: datetime,
    default_timezone: str,
) -> dict[int, PersonState]:
    """Load people, their records, contacts and counted touches since ``history_since``.

    A few queries per batch, whatever its size. The suppression list is read here too, so
    an address listed since the people were last written is not messaged (DESIGN.md
    invariant 4).
    """
    ids = sorted(set(person_ids))
    if not ids:
        return {}
    people: dict[int, PersonState] = {}
    for row in conn.execute(select(_people).where(_people.c.id.in_(ids))).mappings():
        people[row["id"]] = PersonState(
            id=row["id"],
            global_opt_out=bool(row["global_opt_out"]),
            records=[],
            contacts=[],
            paused_until=row["paused_until"],
        )
    for row in conn.execute(
        select(*_RECORD_COLUMNS).where(_records.c.person_id.in_(ids))
    ).mappings():
        if row["person_id"] in people:
            people[row["person_id"]].records.append(dict(row))
    for row in conn.execute(
        select(*_CONTACT_COLUMNS).where(_contacts.c.person_id.in_(ids))
    ).mappings():
        if row["person_id"] in people:
            people[row["person_id"]].contacts.append(
                Contact(
                    id=row["id"],
                    kind=row["kind"],
                    value=row["value"],
                    valid=bool(row["valid"]),
                    phone_type=row["phone_type"],
                    sms_consent=row["sms_consent"],
                    suppressed=bool(row["suppressed"]),
                    suppressed_reason=row["suppressed_reason"],
                    consent_source=row["consent_source"],
                    shared=bool(row["shared"]),
                )
            )
    listed = suppressed_points(conn, ids)
    for person in people.values():
        if person.id in listed.people:
            person.global_opt_out = True
        for contact in person.contacts:
            hit = listed.points.get(contact.id)
            if hit is not None and not contact.suppressed:
                contact.suppressed, contact.suppressed_reason = True, hit[0]
    history: dict[int, list[datetime]] = defaultdict(list)
    for person_id, planned_at in conn.execute(
        select(_touches.c.person_id, _touches.c.planned_at).where(
            _touches.c.person_id.in_(ids),
            _touches.c.status.in_(COUNTED_STATUSES),
            _touches.c.planned_at > history_since,
        )
    ):
        history[person_id].append(planned_at)
    for person in people.values():
        person.history = sorted(history.get(person.id, []))
        timezone = next((r["timezone"] for r in _newest(person.records) if r["timezone"]), None)
        phone = person.contact("phone")
        person.zone, person.zone_source = zone_for(
            timezone, phone.value if phone else None, default_timezone
        )
    return people


def _newest(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(records, key=lambda r: r["updated_at"], reverse=True)


def history_window(min_gap: timedelta, per: timedelta) -> timedelta:
    """How far back the caps look."""
    return max(min_gap, per)
