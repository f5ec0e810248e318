"""What the engine knows about a person during one tick, loaded in bulk for a batch."""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection

from outreach.engine.window import zone_for
from outreach.store.bulk import instant_reader, json_reader, select_by_ids
from outreach.store.suppressions import suppressed_points
from outreach.store.types import sqlite_text

__all__ = ["COUNTED_STATUSES", "Contact", "PersonState", "load_people"]

#: ledger statuses that count toward a person's caps: anything that may have reached them
COUNTED_STATUSES = ("claimed", "in_flight", "sent", "ambiguous", "task")

# What a tick needs of records and contact points (fewer columns: less to decode per row).
_RECORD_COLUMNS = (
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
_CONTACT_COLUMNS = (
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
# Read straight through the driver (one statement per batch each; see store.bulk): these
# three run for every due touch, and SQLAlchemy's row objects cost more than the query.
_PEOPLE_SQL = "SELECT id, global_opt_out, paused_until FROM people WHERE id {ids}"
_RECORDS_SQL = f"SELECT {', '.join(_RECORD_COLUMNS)} FROM candidate_records WHERE person_id {{ids}}"
_CONTACTS_SQL = f"SELECT {', '.join(_CONTACT_COLUMNS)} FROM contact_points WHERE person_id {{ids}}"
_HISTORY_SQL = (
    "SELECT person_id, planned_at FROM touches "
    f"WHERE status IN ({', '.join('?' * len(COUNTED_STATUSES))}) AND planned_at > ? "
    "AND person_id {ids}"
)
_STAGE_ENTERED = _RECORD_COLUMNS.index("stage_entered_at")
_UPDATED = _RECORD_COLUMNS.index("updated_at")
_TAGS = _RECORD_COLUMNS.index("tags")
_CUSTOM = _RECORD_COLUMNS.index("custom")


@dataclass(slots=True)
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


@dataclass(slots=True)
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
        # One pass instead of a sort: ids are unique, so the best is the same point.
        best: Contact | None = None
        for contact in self.contacts:
            if contact.kind != kind:
                continue
            if best is None or (not contact.suppressed, contact.valid, contact.id) > (
                not best.suppressed,
                best.valid,
                best.id,
            ):
                best = contact
        return best

    @property
    def current_stage(self) -> str | None:
        """The stage of the most recently entered record."""
        if len(self.records) == 1:
            (only,) = self.records
            return only["stage"] if only["stage"] and only["stage_entered_at"] else None
        staged = [r for r in self.records if r["stage"] and r["stage_entered_at"]]
        return max(staged, key=lambda r: r["stage_entered_at"])["stage"] if staged else None

    @property
    def preferred_channel(self) -> str | None:
        """The newest record's preferred channel, if any says one."""
        if len(self.records) == 1:
            return self.records[0]["preferred_channel"] or None
        return next(
            (r["preferred_channel"] for r in _newest(self.records) if r["preferred_channel"]), None
        )

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
    instant, parse_json = instant_reader(conn), json_reader(conn)
    people: dict[int, PersonState] = {}
    for id_, global_opt_out, paused_until in select_by_ids(conn, _PEOPLE_SQL, ids):
        people[id_] = PersonState(
            id=id_,
            global_opt_out=bool(global_opt_out),
            records=[],
            contacts=[],
            paused_until=instant(paused_until),
        )
    for row in select_by_ids(conn, _RECORDS_SQL, ids):
        person = people.get(row[1])
        if person is not None:
            record = dict(zip(_RECORD_COLUMNS, row, strict=True))
            record["stage_entered_at"] = instant(row[_STAGE_ENTERED])
            record["updated_at"] = instant(row[_UPDATED])
            record["tags"] = parse_json(row[_TAGS])
            record["custom"] = parse_json(row[_CUSTOM])
            person.records.append(record)
    for (
        id_,
        person_id,
        kind,
        value,
        valid,
        phone_type,
        sms_consent,
        consent_source,
        shared,
        suppressed,
        suppressed_reason,
    ) in select_by_ids(conn, _CONTACTS_SQL, ids):
        person = people.get(person_id)
        if person is not None:
            person.contacts.append(
                Contact(
                    id=id_,
                    kind=kind,
                    value=value,
                    valid=bool(valid),
                    phone_type=phone_type,
                    sms_consent=None if sms_consent is None else bool(sms_consent),
                    suppressed=bool(suppressed),
                    suppressed_reason=suppressed_reason,
                    consent_source=consent_source,
                    shared=bool(shared),
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
    since = sqlite_text(history_since) if conn.dialect.name == "sqlite" else history_since
    history: dict[int, list[datetime]] = defaultdict(list)
    for person_id, planned_at in select_by_ids(conn, _HISTORY_SQL, ids, (*COUNTED_STATUSES, since)):
        history[person_id].append(instant(planned_at))
    for person in people.values():
        found = history.get(person.id)
        if found:
            found.sort()
            person.history = found
        records = person.records
        if len(records) == 1:
            timezone = records[0]["timezone"] or None
        else:
            timezone = next((r["timezone"] for r in _newest(records) if r["timezone"]), None)
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
