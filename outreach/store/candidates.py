"""Bulk upsert of candidate records: one person across sources, stage changes as events.

:func:`upsert_candidates` takes a batch (a page from a CRM, a chunk of an import file)
and writes it with a constant number of statements per batch, never a round trip per
row. Records are matched on ``(source, external_id)``; people are matched on normalised
email, phone and LinkedIn URL, merging people when a record shows they are one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, insert, select, update

from outreach.records import CandidateIn
from outreach.store.bulk import bulk_write
from outreach.store.schema import (
    CandidateRecord,
    ContactPoint,
    Enrollment,
    Event,
    Person,
    Task,
    Touch,
)

__all__ = ["UpsertStats", "dialect_insert", "upsert_candidates"]

_records = CandidateRecord.__table__
_contacts = ContactPoint.__table__
_people = Person.__table__
_events = Event.__table__
_PERSON_TABLES = (
    CandidateRecord.__table__,
    ContactPoint.__table__,
    Enrollment.__table__,
    Touch.__table__,
    Event.__table__,
    Task.__table__,
)
_LOOKUP_CHUNK = 500
_SUPPRESSION = ("suppressed", "suppressed_reason", "suppressed_at")


@dataclass
class UpsertStats:
    """What one or more upserts did."""

    new: int = 0
    updated: int = 0
    merged: int = 0
    stage_changes: int = 0
    record_ids: list[int] = field(default_factory=list)

    def add(self, other: UpsertStats) -> None:
        """Accumulate ``other`` into this summary."""
        self.new += other.new
        self.updated += other.updated
        self.merged += other.merged
        self.stage_changes += other.stage_changes


def dialect_insert(conn: Connection, table):
    """An INSERT supporting ``on_conflict_do_update`` on this connection's dialect."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    if conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)
    raise NotImplementedError(f"no upsert support for {conn.dialect.name}")


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _tokens(record: CandidateIn) -> list[tuple[str, str]]:
    tokens = []
    if record.email:
        tokens.append(("email", record.email))
    if record.phone:
        tokens.append(("phone", record.phone.e164))
    if record.linkedin_url:
        tokens.append(("linkedin", record.linkedin_url))
    return tokens


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[Any, Any] = {}

    def find(self, item: Any) -> Any:
        parent = self.parent.setdefault(item, item)
        if parent != item:
            root = self.find(parent)
            self.parent[item] = root
            return root
        return item

    def union(self, a: Any, b: Any) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[ra] = rb


def upsert_candidates(conn: Connection, batch: Sequence[CandidateIn], now: datetime) -> UpsertStats:
    """Write ``batch`` in the caller's transaction; return what changed.

    Later records in the batch win over earlier ones with the same key. A changed
    canonical stage (or a new record with a stage) writes a ``stage_change`` event that
    the cadence engine consumes. Suppression and validity of contact points are never
    cleared here.
    """
    stats = UpsertStats()
    records = list({r.key: r for r in batch}.values())
    if not records:
        return stats

    existing = _existing_records(conn, records)
    owners = _existing_owners(conn, records)

    # People: one union-find component per human in this batch.
    uf = _UnionFind()
    for index, record in enumerate(records):
        node = ("r", index)
        uf.find(node)
        row = existing.get(record.key)
        if row is not None:
            uf.union(node, ("p", row["person_id"]))
        for token in _tokens(record):
            uf.union(node, ("c", *token))
            owner = owners.get(token)
            if owner is not None:
                uf.union(("c", *token), ("p", owner))

    components: dict[Any, list[Any]] = defaultdict(list)
    for node in list(uf.parent):
        components[uf.find(node)].append(node)

    person_of_root: dict[Any, int] = {}
    merges: list[tuple[int, int]] = []  # (loser, winner)
    needs_person: list[Any] = []
    for root, nodes in components.items():
        persons = sorted(node[1] for node in nodes if node[0] == "p")
        if persons:
            winner = persons[0]
            person_of_root[root] = winner
            merges.extend((loser, winner) for loser in persons[1:])
        else:
            needs_person.append(root)

    if needs_person:
        result = conn.execute(
            # New people are blank rows, so any id can go to any component: no need to
            # ask for RETURNING in parameter order (which SQLite can only do row by row).
            insert(_people).returning(_people.c.id),
            [{"global_opt_out": False, "created_at": now, "updated_at": now} for _ in needs_person],
        )
        for root, new_id in zip(needs_person, result.scalars(), strict=True):
            person_of_root[root] = new_id

    if merges:
        _merge_people(conn, merges, now)
        stats.merged += len(merges)

    # Records.
    rows: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    changed_keys: dict[tuple[str, str], dict[str, Any]] = {}
    for index, record in enumerate(records):
        person_id = person_of_root[uf.find(("r", index))]
        old = existing.get(record.key)
        entered = record.stage_entered_at
        if old is None:
            stats.new += 1
            if record.stage is not None:
                entered = entered or now
                changed_keys[record.key] = {"from": None, "to": record.stage}
        else:
            stats.updated += 1
            if old["stage"] != record.stage:
                entered = entered or now
                changed_keys[record.key] = {"from": old["stage"], "to": record.stage}
            else:
                entered = old["stage_entered_at"] or entered or (now if record.stage else None)
        rows.append(
            {
                "person_id": person_id,
                "source": record.source,
                "external_id": record.external_id,
                "first_name": record.first_name,
                "last_name": record.last_name,
                "email": record.email,
                "phone": record.phone.e164 if record.phone else None,
                "linkedin_url": record.linkedin_url,
                "source_stage": record.source_stage,
                "stage": record.stage,
                "stage_entered_at": entered,
                "timezone": record.timezone,
                "job_title": record.job_title,
                "job_department": record.job_department,
                "recruiter_name": record.recruiter_name,
                "recruiter_email": record.recruiter_email,
                "recruiter_phone": record.recruiter_phone,
                "owner_id": record.owner_id,
                "preferred_channel": record.preferred_channel,
                "tags": record.tags,
                "custom": record.custom,
                "source_updated_at": record.source_updated_at,
                "created_at": now,
                "updated_at": now,
            }
        )

    updatable = [c for c in rows[0] if c not in ("source", "external_id", "created_at")]
    bulk_write(
        conn,
        _records,
        rows,
        conflict=("source", "external_id"),
        update={name: f"excluded.{name}" for name in updatable},
    )
    id_of = _record_ids(conn, records)
    stats.record_ids = [id_of[record.key] for record in records]

    for record, row in zip(records, rows, strict=True):
        change = changed_keys.get(record.key)
        if change is None:
            continue
        record_id = id_of[record.key]
        stats.stage_changes += 1
        events.append(
            {
                "type": "stage_change",
                "channel": None,
                "person_id": row["person_id"],
                "record_id": record_id,
                "source": record.source,
                "external_id": record.external_id,
                "at": row["stage_entered_at"],
                "payload": {**change, "source_stage": record.source_stage},
                "created_at": now,
            }
        )
    if events:
        bulk_write(conn, _events, events)

    _upsert_contacts(conn, records, rows, now)
    return stats


def _existing_records(
    conn: Connection, records: Sequence[CandidateIn]
) -> dict[tuple[str, str], dict[str, Any]]:
    return _by_key(
        conn, records, _records.c.person_id, _records.c.stage, _records.c.stage_entered_at
    )


def _record_ids(conn: Connection, records: Sequence[CandidateIn]) -> dict[tuple[str, str], int]:
    return {key: row["id"] for key, row in _by_key(conn, records, _records.c.id).items()}


def _by_key(
    conn: Connection, records: Sequence[CandidateIn], *columns: Any
) -> dict[tuple[str, str], dict[str, Any]]:
    """Stored records by ``(source, external_id)``: one query per source and chunk."""
    by_source: dict[str, list[str]] = defaultdict(list)
    for record in records:
        by_source[record.source].append(record.external_id)
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for source, ids in by_source.items():
        for chunk in _chunks(ids, _LOOKUP_CHUNK):
            result = conn.execute(
                select(_records.c.external_id, *columns).where(
                    _records.c.source == source, _records.c.external_id.in_(chunk)
                )
            )
            for row in result.mappings():
                found[(source, row["external_id"])] = dict(row)
    return found


def _existing_owners(
    conn: Connection, records: Sequence[CandidateIn]
) -> dict[tuple[str, str], int]:
    by_kind: dict[str, set[str]] = defaultdict(set)
    for record in records:
        for kind, value in _tokens(record):
            by_kind[kind].add(value)
    owners: dict[tuple[str, str], int] = {}
    for kind, values in by_kind.items():
        for chunk in _chunks(sorted(values), _LOOKUP_CHUNK):
            result = conn.execute(
                select(_contacts.c.value, _contacts.c.person_id).where(
                    _contacts.c.kind == kind, _contacts.c.value.in_(chunk)
                )
            )
            for value, person_id in result:
                owners[(kind, value)] = person_id
    return owners


def _merge_people(conn: Connection, merges: list[tuple[int, int]], now: datetime) -> None:
    params = [{"loser": loser, "winner": winner} for loser, winner in merges]
    for table in _PERSON_TABLES:
        conn.execute(
            update(table)
            .where(table.c.person_id == bindparam("loser"))
            .values(person_id=bindparam("winner")),
            params,
        )
    # A global opt-out of any merged person is an opt-out of the merged person.
    for winner in {w for _, w in merges}:
        losers = [loser for loser, w in merges if w == winner]
        opted_count, opted_at = conn.execute(
            select(func.count(), func.min(_people.c.opted_out_at)).where(
                _people.c.id.in_([winner, *losers]), _people.c.global_opt_out.is_(True)
            )
        ).one()
        if opted_count:
            conn.execute(
                update(_people)
                .where(_people.c.id == winner)
                .values(global_opt_out=True, opted_out_at=opted_at, updated_at=now)
            )
        conn.execute(
            insert(_events).values(
                type="merge",
                person_id=winner,
                at=now,
                payload={"merged_people": losers},
                created_at=now,
            )
        )
    conn.execute(delete(_people).where(_people.c.id.in_([loser for loser, _ in merges])))


def _upsert_contacts(
    conn: Connection,
    records: Sequence[CandidateIn],
    rows: Sequence[dict[str, Any]],
    now: datetime,
) -> None:
    contacts: dict[tuple[str, str], dict[str, Any]] = {}
    for record, row in zip(records, rows, strict=True):
        for kind, value in _tokens(record):
            contact = {
                "person_id": row["person_id"],
                "kind": kind,
                "value": value,
                "phone_type": record.phone.type if kind == "phone" and record.phone else None,
                "sms_consent": record.sms_consent if kind == "phone" else None,
                "valid": True,
                # An opt-out the CRM reports is recorded; nothing here ever clears one.
                "suppressed": kind == "email" and record.email_opt_out,
                "suppressed_reason": "opted out (CRM)"
                if kind == "email" and record.email_opt_out
                else None,
                "suppressed_at": now if kind == "email" and record.email_opt_out else None,
                "created_at": now,
                "updated_at": now,
            }
            previous = contacts.get((kind, value))
            if previous is not None:
                if contact["sms_consent"] is None:
                    contact["sms_consent"] = previous["sms_consent"]
                if previous["suppressed"] and not contact["suppressed"]:
                    contact.update({k: previous[k] for k in _SUPPRESSION})
            contacts[(kind, value)] = contact
    if not contacts:
        return
    bulk_write(
        conn,
        _contacts,
        list(contacts.values()),
        conflict=("kind", "value"),
        update={
            "person_id": "excluded.person_id",
            "phone_type": "COALESCE(excluded.phone_type, contact_points.phone_type)",
            "sms_consent": "COALESCE(excluded.sms_consent, contact_points.sms_consent)",
            "suppressed": "CASE WHEN contact_points.suppressed THEN contact_points.suppressed "
            "ELSE excluded.suppressed END",
            "suppressed_reason": "CASE WHEN contact_points.suppressed "
            "THEN contact_points.suppressed_reason ELSE excluded.suppressed_reason END",
            "suppressed_at": "CASE WHEN contact_points.suppressed "
            "THEN contact_points.suppressed_at ELSE excluded.suppressed_at END",
            "updated_at": "excluded.updated_at",
        },
    )
