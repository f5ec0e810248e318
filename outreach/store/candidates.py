"""Bulk upsert of candidate records: one person across sources, stage changes as events.

:func:`upsert_candidates` takes a batch (a page from a CRM, a chunk of an import file)
and writes it with a constant number of statements per batch, never a round trip per
row. Records are matched on ``(source, external_id)``. People are matched by
:func:`same_person_by_phone` and the rules it documents: the same email address or
LinkedIn profile is one person; the same phone joins two records only when their names
agree (or one of them has neither a name nor an email address), so strangers sharing an
office line stay apart, each holding the phone as a contact point flagged ``shared``.
Records that show two stored people are one merge them.

SMS consent is a statement with a source and a time: each record keeps what it says and
since when (:data:`CandidateRecord.sms_consent_at`), and a person's phone takes the
newest statement of any of their records, a withdrawal winning a tie. Suppressions on
the addresses of the batch's people (:mod:`outreach.store.suppressions`) are applied
before the batch commits.
"""

from __future__ import annotations

import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, insert, select, update

from outreach.records import CandidateIn
from outreach.store.bulk import bulk_update, bulk_write
from outreach.store.schema import (
    CandidateRecord,
    ContactPoint,
    Enrollment,
    Event,
    InboundMessage,
    Person,
    Task,
    Touch,
)
from outreach.store.suppressions import apply_to_people

__all__ = [
    "UpsertStats",
    "dialect_insert",
    "name_key",
    "same_person_by_phone",
    "upsert_candidates",
]

_records = CandidateRecord.__table__
_contacts = ContactPoint.__table__
_people = Person.__table__
_events = Event.__table__
_touches = Touch.__table__
_inbound = InboundMessage.__table__
_PERSON_TABLES = (
    CandidateRecord.__table__,
    ContactPoint.__table__,
    Enrollment.__table__,
    Touch.__table__,
    Event.__table__,
    Task.__table__,
    InboundMessage.__table__,
)
#: tables that name a contact point (repointed when two people's points become one)
_POINT_TABLES = (Touch.__table__, Event.__table__, InboundMessage.__table__)
_LOOKUP_CHUNK = 500
_SUPPRESSION = ("suppressed", "suppressed_reason", "suppressed_at")
_CONSENT = ("sms_consent", "consent_at", "consent_source")


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


def _identity_tokens(record: CandidateIn) -> list[tuple[str, str]]:
    """The addresses that alone make two records one person (not the phone)."""
    return [token for token in _tokens(record) if token[0] != "phone"]


@lru_cache(maxsize=65536)
def _fold(text: str | None) -> str:
    if not text:
        return ""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(bare.casefold().split())


def name_key(first_name: str | None, last_name: str | None) -> tuple[str, str] | None:
    """A name as compared for matching (case, accents and spacing ignored); None if blank.

    >>> name_key("Zoë ", "DE  la Cruz") == name_key("zoe", "de la cruz")
    True
    """
    key = (_fold(first_name), _fold(last_name))
    return key if any(key) else None


def same_person_by_phone(
    a: tuple[tuple[str, str] | None, bool], b: tuple[tuple[str, str] | None, bool]
) -> bool:
    """Whether two records sharing a phone are one person, by (name key, has email) each.

    They are when their names agree, or when one of them has neither a name nor an email
    address (nothing says it is someone else). Two named records with different names
    are strangers on one line (an office phone, a family phone). Across more than two
    records the store applies this per pair, but joins a record with neither name nor
    email only when the phone's named holders are all one person.
    """
    (name_a, email_a), (name_b, email_b) = a, b
    if name_a is not None and name_b is not None:
        return name_a == name_b
    return (name_a is None and not email_a) or (name_b is None and not email_b)


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
    holders = _phone_holders(conn, records)

    # People: one union-find component per human in this batch.
    uf = _UnionFind()
    # phone -> [(node, name key, has email)] of the batch's records and stored holders
    by_phone: dict[str, list[tuple[Any, tuple[str, str] | None, bool]]] = defaultdict(list)
    for index, record in enumerate(records):
        node = ("r", index)
        uf.find(node)
        row = existing.get(record.key)
        if row is not None:
            uf.union(node, ("p", row["person_id"]))
        for token in _identity_tokens(record):
            uf.union(node, ("c", *token))
            for owner in owners.get(token, ()):
                uf.union(("c", *token), ("p", owner))
        if record.phone is not None:
            by_phone[record.phone.e164].append(
                (node, name_key(record.first_name, record.last_name), bool(record.email))
            )
    for phone, found in holders.items():
        by_phone[phone].extend(found)
    _join_by_phone(uf, by_phone)

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

    merged_phones: set[str] = set()
    if merges:
        merged_phones = _merge_people(conn, merges, now)
        stats.merged += len(merges)

    # Records.
    rows: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    changed_keys: dict[tuple[str, str], dict[str, Any]] = {}
    for index, record in enumerate(records):
        person_id = person_of_root[uf.find(("r", index))]
        old = existing.get(record.key)
        entered = record.stage_entered_at
        consent_at = None
        if record.sms_consent is not None:
            # A statement keeps the time it was first made; a changed one is new.
            unchanged = old is not None and old["sms_consent"] == record.sms_consent
            consent_at = (
                old["sms_consent_at"]
                if unchanged and old["sms_consent_at"] is not None
                else record.source_updated_at or now
            )
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
                "sms_consent": record.sms_consent,
                "sms_consent_at": consent_at,
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
    # Only a phone with two holders in sight (or one a merge touched) can change its flag.
    phone_people: dict[str, set[int]] = defaultdict(set)
    for record, row in zip(records, rows, strict=True):
        if record.phone is not None:
            phone_people[record.phone.e164].add(row["person_id"])
    for phone, found in holders.items():
        for node, _, _ in found:
            phone_people[phone].add(person_of_root.get(uf.find(node), node[1]))
    suspects = {phone for phone, people in phone_people.items() if len(people) > 1}
    _flag_shared(conn, suspects | merged_phones, now)
    apply_to_people(conn, sorted({row["person_id"] for row in rows}), now)
    return stats


def _existing_records(
    conn: Connection, records: Sequence[CandidateIn]
) -> dict[tuple[str, str], dict[str, Any]]:
    return _by_key(
        conn,
        records,
        _records.c.person_id,
        _records.c.stage,
        _records.c.stage_entered_at,
        _records.c.sms_consent,
        _records.c.sms_consent_at,
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
) -> dict[tuple[str, str], set[int]]:
    """Who holds each email address and LinkedIn profile of the batch already."""
    by_kind: dict[str, set[str]] = defaultdict(set)
    for record in records:
        for kind, value in _identity_tokens(record):
            by_kind[kind].add(value)
    owners: dict[tuple[str, str], set[int]] = defaultdict(set)
    for kind, values in by_kind.items():
        for chunk in _chunks(sorted(values), _LOOKUP_CHUNK):
            result = conn.execute(
                select(_contacts.c.value, _contacts.c.person_id).where(
                    _contacts.c.kind == kind, _contacts.c.value.in_(chunk)
                )
            )
            for value, person_id in result:
                owners[(kind, value)].add(person_id)
    return owners


def _phone_holders(
    conn: Connection, records: Sequence[CandidateIn]
) -> dict[str, list[tuple[Any, tuple[str, str] | None, bool]]]:
    """Stored records (other than the batch's own) with a phone of the batch, by phone:
    ``(("p", person_id), name key, has email)`` each."""
    keys = {record.key for record in records}
    phones = sorted({record.phone.e164 for record in records if record.phone is not None})
    holders: dict[str, list[tuple[Any, tuple[str, str] | None, bool]]] = defaultdict(list)
    for chunk in _chunks(phones, _LOOKUP_CHUNK):
        result = conn.execute(
            select(
                _records.c.source,
                _records.c.external_id,
                _records.c.phone,
                _records.c.person_id,
                _records.c.first_name,
                _records.c.last_name,
                _records.c.email,
            ).where(_records.c.phone.in_(chunk))
        )
        for row in result:
            if (row.source, row.external_id) in keys:
                continue  # the batch says what this record is now
            holders[row.phone].append(
                (("p", row.person_id), name_key(row.first_name, row.last_name), bool(row.email))
            )
    return holders


def _join_by_phone(
    uf: _UnionFind, by_phone: dict[str, list[tuple[Any, tuple[str, str] | None, bool]]]
) -> None:
    """Join records on one phone whose names agree; then the nameless ones without an
    email address, but only into a phone whose named holders are all one person."""
    nameless: list[tuple[list[Any], list[Any]]] = []
    for members in by_phone.values():
        named: dict[tuple[str, str], list[Any]] = defaultdict(list)
        blank = []
        for node, key, has_email in members:
            if key is not None:
                named[key].append(node)
            elif not has_email:
                blank.append(node)
            else:
                uf.find(node)  # an email but no name: its own person unless the email joins
        for nodes in named.values():
            for node in nodes[1:]:
                uf.union(nodes[0], node)
        if blank:
            nameless.append(([nodes[0] for nodes in named.values()], blank))
    for heads, blank in nameless:
        roots = {uf.find(node) for node in heads}
        if len(roots) > 1:
            continue  # strangers share this phone: a blank record could be any of them
        anchor = next(iter(roots)) if roots else blank[0]
        for node in blank:
            uf.union(anchor, node)


def _merge_people(conn: Connection, merges: list[tuple[int, int]], now: datetime) -> set[str]:
    """Move everything of each loser to its winner; return the phones involved.

    Both people may hold the same address (two strangers' phone, until a record showed
    they are one): the loser's point folds into the winner's, keeping any suppression,
    invalidity and the newest consent, and whatever named it is repointed.
    """
    winner_of = dict(merges)
    involved = sorted({*winner_of, *winner_of.values()})
    points: dict[tuple[int, str, str], dict[str, Any]] = {}
    for chunk in _chunks(involved, _LOOKUP_CHUNK):
        for row in conn.execute(
            select(_contacts).where(_contacts.c.person_id.in_(chunk))
        ).mappings():
            points[(row["person_id"], row["kind"], row["value"])] = dict(row)
    phones = {value for (_, kind, value) in points if kind == "phone"}
    folds: list[dict[str, Any]] = []  # loser point -> the point it becomes part of
    kept: dict[int, dict[str, Any]] = {}
    # The winner's own point, else the first loser's that moves over, takes the others in.
    targets = {key: point for key, point in points.items() if key[0] not in winner_of}
    for (person_id, kind, value), point in sorted(points.items(), key=lambda kv: kv[1]["id"]):
        winner = winner_of.get(person_id)
        if winner is None:
            continue
        target = targets.setdefault((winner, kind, value), point)
        if target is point:
            continue
        folds.append({"b_old": point["id"], "b_new": target["id"]})
        merged = kept.setdefault(target["id"], dict(target))
        if point["suppressed"] and not merged["suppressed"]:
            merged.update({k: point[k] for k in _SUPPRESSION})
        if not point["valid"]:
            merged["valid"], merged["invalid_reason"] = False, point["invalid_reason"]
        if _consent_wins(point["sms_consent"], point["consent_at"], merged):
            merged.update({k: point[k] for k in _CONSENT})
    if folds:
        for table in _POINT_TABLES:
            conn.execute(
                update(table)
                .where(table.c.contact_point_id == bindparam("b_old"))
                .values(contact_point_id=bindparam("b_new")),
                folds,
            )
        bulk_update(
            conn,
            _contacts,
            [
                {
                    "id": point["id"],
                    **{k: point[k] for k in (*_SUPPRESSION, *_CONSENT)},
                    "valid": point["valid"],
                    "invalid_reason": point["invalid_reason"],
                    "updated_at": now,
                }
                for point in kept.values()
            ],
        )
        conn.execute(delete(_contacts).where(_contacts.c.id.in_([f["b_old"] for f in folds])))
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
    return phones


def _consent_wins(value: bool | None, at: datetime | None, current: dict[str, Any]) -> bool:
    """Whether the statement ``value`` made at ``at`` replaces ``current``'s consent.

    The newest statement wins and a withdrawal wins a tie: a withdrawal from any source
    beats older consent, and only a newer explicit consent restores it.
    """
    if value is None:
        return False
    if current["sms_consent"] is None or current["consent_at"] is None:
        return True
    if at is None:
        return False
    return at > current["consent_at"] or (at == current["consent_at"] and not value)


#: the SQL of :func:`_consent_wins` for the contact upsert (``excluded``: the incoming row)
_CONSENT_WINS = (
    "excluded.sms_consent IS NOT NULL AND (contact_points.sms_consent IS NULL "
    "OR contact_points.consent_at IS NULL "
    "OR excluded.consent_at > contact_points.consent_at "
    "OR (excluded.consent_at = contact_points.consent_at AND NOT excluded.sms_consent))"
)


def _upsert_contacts(
    conn: Connection,
    records: Sequence[CandidateIn],
    rows: Sequence[dict[str, Any]],
    now: datetime,
) -> None:
    contacts: dict[tuple[int, str, str], dict[str, Any]] = {}
    for record, row in zip(records, rows, strict=True):
        for kind, value in _tokens(record):
            phone = kind == "phone"
            opted_out = kind == "email" and record.email_opt_out
            contact = {
                "person_id": row["person_id"],
                "kind": kind,
                "value": value,
                "phone_type": record.phone.type if phone and record.phone else None,
                "sms_consent": row["sms_consent"] if phone else None,
                "consent_at": row["sms_consent_at"] if phone else None,
                "consent_source": record.source
                if phone and row["sms_consent"] is not None
                else None,
                "valid": True,
                "shared": False,
                # An opt-out the CRM reports is recorded; nothing here ever clears one.
                "suppressed": opted_out,
                "suppressed_reason": "opted out (CRM)" if opted_out else None,
                "suppressed_at": now if opted_out else None,
                "created_at": now,
                "updated_at": now,
            }
            key = (row["person_id"], kind, value)
            previous = contacts.get(key)
            if previous is not None:
                if not _consent_wins(contact["sms_consent"], contact["consent_at"], previous):
                    contact.update({k: previous[k] for k in _CONSENT})
                if previous["suppressed"] and not contact["suppressed"]:
                    contact.update({k: previous[k] for k in _SUPPRESSION})
            contacts[key] = contact
    if not contacts:
        return
    bulk_write(
        conn,
        _contacts,
        list(contacts.values()),
        conflict=("person_id", "kind", "value"),
        update={
            "phone_type": "COALESCE(excluded.phone_type, contact_points.phone_type)",
            **{
                name: f"CASE WHEN {_CONSENT_WINS} THEN excluded.{name} "
                f"ELSE contact_points.{name} END"
                for name in _CONSENT
            },
            "suppressed": "CASE WHEN contact_points.suppressed THEN contact_points.suppressed "
            "ELSE excluded.suppressed END",
            "suppressed_reason": "CASE WHEN contact_points.suppressed "
            "THEN contact_points.suppressed_reason ELSE excluded.suppressed_reason END",
            "suppressed_at": "CASE WHEN contact_points.suppressed "
            "THEN contact_points.suppressed_at ELSE excluded.suppressed_at END",
            "updated_at": "excluded.updated_at",
        },
    )


def _flag_shared(conn: Connection, phones: set[str], now: datetime) -> None:
    """Flag each phone point whose number another person holds too; unflag the rest."""
    shared: list[str] = []
    alone: list[str] = []
    for chunk in _chunks(sorted(phones), _LOOKUP_CHUNK):
        holders: dict[str, set[int]] = defaultdict(set)
        for value, person_id in conn.execute(
            select(_contacts.c.value, _contacts.c.person_id).where(
                _contacts.c.kind == "phone", _contacts.c.value.in_(chunk)
            )
        ):
            holders[value].add(person_id)
        for value, people in holders.items():
            (shared if len(people) > 1 else alone).append(value)
    for values, flag in ((shared, True), (alone, False)):
        for chunk in _chunks(values, _LOOKUP_CHUNK):
            conn.execute(
                update(_contacts)
                .where(
                    _contacts.c.kind == "phone",
                    _contacts.c.value.in_(chunk),
                    _contacts.c.shared.is_(not flag),
                )
                .values(shared=flag, updated_at=now)
            )
