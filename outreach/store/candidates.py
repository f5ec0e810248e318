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

import json
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, String, bindparam, delete, func, insert, select, update

from outreach.records import CandidateIn
from outreach.store.bulk import bulk_update
from outreach.store.planner_stats import refresh_statistics
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
from outreach.store.types import sqlite_text

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
#: people inserted per statement (SQLAlchemy's own page size for such inserts)
_PEOPLE_CHUNK = 1000
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
    if record.x_url:
        tokens.append(("x", record.x_url))
    if record.facebook_url:
        tokens.append(("facebook", record.facebook_url))
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
    latest = {(r.source, r.external_id): r for r in batch}
    records = list(latest.values())
    if not records:
        return stats
    keys = list(latest)
    # The lookups below plan badly on PostgreSQL tables that grew since their statistics.
    # A single record (a webhook, an importer's row-by-row retry) looks up one key: it
    # plans well either way and should not pay for the check, nor for an ANALYZE.
    if len(records) > 1:
        refresh_statistics(conn, (_records.name, _contacts.name))

    tokens = [_tokens(record) for record in records]
    existing = _existing_records(conn, records)
    owners = _existing_owners(conn, tokens)
    holders = _phone_holders(conn, records)

    # People: one union-find component per human in this batch. A record that shares
    # nothing with any other record, stored or in the batch (the usual case of a new
    # import), is a component of its own and skips the union-find.
    seen: dict[tuple[str, str], int] = defaultdict(int)
    for found in tokens:
        for token in found:
            seen[token] += 1
    alone = [
        key not in existing
        and all(seen[token] == 1 and token not in owners for token in found)
        and (record.phone is None or record.phone.e164 not in holders)
        for key, record, found in zip(keys, records, tokens, strict=True)
    ]
    uf = _UnionFind()
    # phone -> [(node, name key, has email)] of the batch's records and stored holders
    by_phone: dict[str, list[tuple[Any, tuple[str, str] | None, bool]]] = defaultdict(list)
    for index, record in enumerate(records):
        if alone[index]:
            continue
        node = ("r", index)
        uf.find(node)
        row = existing.get(keys[index])
        if row is not None:
            uf.union(node, ("p", row["person_id"]))
        for token in tokens[index]:
            if token[0] == "phone":
                continue
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
    for root, nodes in components.items():
        persons = sorted(node[1] for node in nodes if node[0] == "p")
        if persons:
            winner = persons[0]
            person_of_root[root] = winner
            merges.extend((loser, winner) for loser in persons[1:])
    # Components without a stored person get new people, in the order of their records.
    roots: list[Any] = []
    needs_person: list[Any] = []
    for index in range(len(records)):
        root = ("r", index) if alone[index] else uf.find(("r", index))
        roots.append(root)
        if root not in person_of_root:
            person_of_root[root] = -1
            needs_person.append(root)
    if needs_person:
        for root, new_id in zip(
            needs_person, _new_people(conn, len(needs_person), now), strict=True
        ):
            person_of_root[root] = new_id

    merged_phones: set[str] = set()
    if merges:
        merged_phones = _merge_people(conn, merges, now)
        stats.merged += len(merges)

    # Records, as the driver's parameter tuples in _RECORD_COLUMNS order.
    sqlite = conn.dialect.name == "sqlite"
    instant = _sqlite_instant if sqlite else _pg_instant
    flag = _same  # sqlite3 binds a bool as the integer 1 or 0 itself
    now_value = instant(now)
    params: list[tuple[Any, ...]] = []
    person_ids: list[int] = []
    entered_at: list[datetime | None] = []
    consent_times: list[datetime | None] = []
    changed: dict[int, dict[str, Any]] = {}
    for index, record in enumerate(records):
        person_id = person_of_root[roots[index]]
        old = existing.get(keys[index])
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
                changed[index] = {"from": None, "to": record.stage}
        else:
            stats.updated += 1
            if old["stage"] != record.stage:
                entered = entered or now
                changed[index] = {"from": old["stage"], "to": record.stage}
            else:
                entered = old["stage_entered_at"] or entered or (now if record.stage else None)
        person_ids.append(person_id)
        entered_at.append(entered)
        consent_times.append(consent_at)
        params.append(
            (
                person_id,
                record.source,
                record.external_id,
                record.first_name,
                record.last_name,
                record.email,
                record.phone.e164 if record.phone else None,
                record.linkedin_url,
                record.x_url,
                record.facebook_url,
                record.source_stage,
                record.stage,
                instant(entered),
                record.timezone,
                record.job_title,
                record.job_department,
                record.recruiter_name,
                record.recruiter_email,
                record.recruiter_phone,
                record.owner_id,
                record.preferred_channel,
                flag(record.sms_consent),
                instant(consent_at),
                _json_list(record.tags),
                _json_object(record.custom),
                instant(record.source_updated_at),
                now_value,
                now_value,
            )
        )
    _insert_rows(conn, "candidate_records", _RECORD_COLUMNS, params, *_RECORD_CONFLICT)
    id_of = _record_ids(conn, records)
    stats.record_ids = [id_of[key] for key in keys]

    events: list[tuple[Any, ...]] = []
    for index, change in changed.items():
        record = records[index]
        stats.stage_changes += 1
        events.append(
            (
                "stage_change",
                person_ids[index],
                id_of[keys[index]],
                record.source,
                record.external_id,
                instant(entered_at[index]),
                _stage_payload(change["from"], change["to"], record.source_stage),
                now_value,
            )
        )
    if events:
        _insert_rows(conn, "events", _EVENT_COLUMNS, events)

    _upsert_contacts(conn, records, tokens, person_ids, consent_times, now)
    # Only a phone with two holders in sight (or one a merge touched) can change its flag.
    phone_people: dict[str, set[int]] = defaultdict(set)
    for record, person_id in zip(records, person_ids, strict=True):
        if record.phone is not None:
            phone_people[record.phone.e164].add(person_id)
    for phone, found in holders.items():
        for node, _, _ in found:
            phone_people[phone].add(person_of_root.get(uf.find(node), node[1]))
    suspects = {phone for phone, people in phone_people.items() if len(people) > 1}
    _flag_shared(conn, suspects | merged_phones, now)
    apply_to_people(conn, sorted(set(person_ids)), now)
    return stats


#: the columns of a candidate record as :func:`upsert_candidates` writes them, in order
_RECORD_COLUMNS = (
    "person_id",
    "source",
    "external_id",
    "first_name",
    "last_name",
    "email",
    "phone",
    "linkedin_url",
    "x_url",
    "facebook_url",
    "source_stage",
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
    "sms_consent",
    "sms_consent_at",
    "tags",
    "custom",
    "source_updated_at",
    "created_at",
    "updated_at",
)


#: the columns of a stage change event as :func:`upsert_candidates` writes them, in order
_EVENT_COLUMNS = (
    "type",
    "person_id",
    "record_id",
    "source",
    "external_id",
    "at",
    "payload",
    "created_at",
)
_JSON_COLUMNS = frozenset({"tags", "custom", "payload"})


_RECORD_CONFLICT = (
    ("source", "external_id"),
    tuple(
        (name, f"excluded.{name}")
        for name in _RECORD_COLUMNS
        if name not in ("source", "external_id", "created_at")
    ),
)


@lru_cache(maxsize=64)
def _insert_sql(
    dialect: str,
    paramstyle: str,
    table: str,
    columns: tuple[str, ...],
    conflict: tuple[str, ...] = (),
    update: tuple[tuple[str, str], ...] = (),
) -> str:
    """``INSERT INTO table (columns) VALUES (...)``, and ``ON CONFLICT (conflict) DO
    UPDATE SET column = expression`` when given; rendered once per dialect."""
    if dialect not in ("sqlite", "postgresql"):
        raise NotImplementedError(f"bulk writes are not supported on {dialect}")
    marker = "?" if paramstyle == "qmark" else "%s"
    json_marker = f"CAST({marker} AS JSON)" if dialect == "postgresql" else marker
    values = ", ".join(json_marker if name in _JSON_COLUMNS else marker for name in columns)
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({values})"
    if conflict:
        sets = ", ".join(f"{name} = {expression}" for name, expression in update)
        sql += f" ON CONFLICT ({', '.join(conflict)}) DO UPDATE SET {sets}"
    return sql


def _insert_rows(
    conn: Connection,
    table: str,
    columns: tuple[str, ...],
    rows: Sequence[tuple[Any, ...]],
    conflict: tuple[str, ...] = (),
    update: tuple[tuple[str, str], ...] = (),
) -> None:
    """Insert prebuilt driver tuples in one ``executemany``; on PostgreSQL, where it can,
    as one ``INSERT ... SELECT FROM unnest(arrays)``: one statement the server plans and
    runs once, instead of one execution per row."""
    dialect, paramstyle = conn.dialect.name, conn.dialect.paramstyle
    if dialect == "postgresql" and _unnest_fits(columns, rows, conflict):
        conn.exec_driver_sql(
            _unnest_sql(conn.dialect, table, columns, conflict, update), _arrays(rows)
        )
        return
    conn.exec_driver_sql(_insert_sql(dialect, paramstyle, table, columns, conflict, update), rows)


def _unnest_fits(
    columns: tuple[str, ...], rows: Sequence[tuple[Any, ...]], conflict: tuple[str, ...]
) -> bool:
    """Whether ``rows`` can go as arrays: no conflict key twice (one statement may not
    update a row twice; the upsert's batches never repeat one, but a caller might)."""
    if len(rows) < 2:
        return False
    if not conflict:
        return True
    at = [columns.index(name) for name in conflict]
    return len({tuple(row[i] for i in at) for row in rows}) == len(rows)


@lru_cache(maxsize=16)
def _unnest_sql(
    dialect: Any,
    table: str,
    columns: tuple[str, ...],
    conflict: tuple[str, ...],
    update: tuple[tuple[str, str], ...],
) -> str:
    """``INSERT INTO table (columns) SELECT ... FROM unnest(CAST(%b AS type[]), ...)``,
    with the ``ON CONFLICT`` clause of :func:`_insert_sql`. JSON columns travel as text
    (the rows carry them rendered) and are cast back in the ``SELECT``."""
    found = CandidateRecord.metadata.tables[table]
    arrays, picks = [], []
    for name in columns:
        if name in _JSON_COLUMNS:
            arrays.append("CAST(%b AS TEXT[])")
            picks.append(f"CAST(v.{name} AS JSON)")
        elif isinstance(found.c[name].type, String):
            # TEXT[], not VARCHAR(n)[]: an explicit cast to varchar(n) cuts long text off
            # silently, where the assignment to the column refuses it as executemany does.
            arrays.append("CAST(%b AS TEXT[])")
            picks.append(f"v.{name}")
        else:
            arrays.append(f"CAST(%b AS {found.c[name].type.compile(dialect=dialect)}[])")
            picks.append(f"v.{name}")
    sql = (
        f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(picks)} "
        f"FROM unnest({', '.join(arrays)}) AS v({', '.join(columns)})"
    )
    if conflict:
        sets = ", ".join(f"{name} = {expression}" for name, expression in update)
        sql += f" ON CONFLICT ({', '.join(conflict)}) DO UPDATE SET {sets}"
    return sql


def _arrays(rows: Sequence[tuple[Any, ...]]) -> tuple[list[Any], ...]:
    """Row tuples as one list per column: the arrays ``unnest`` reads."""
    return tuple(list(column) for column in zip(*rows, strict=True))


# Cached: a batch carries the same few instants (its `now`, an import's entry times).
_sqlite_instant = lru_cache(maxsize=8192)(sqlite_text)


def _pg_instant(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r} cannot be stored; give it a time zone")
    return value


@lru_cache(maxsize=4096)
def _stage_payload(old: str | None, new: str | None, source_stage: str | None) -> str:
    # Cached: an import carries a handful of stage names, so a handful of payloads.
    return json.dumps({"from": old, "to": new, "source_stage": source_stage}, separators=(",", ":"))


def _same(value: Any) -> Any:
    return value


def _json_list(value: list[Any]) -> str:
    return json.dumps(value, separators=(",", ":")) if value else "[]"


def _json_object(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":")) if value else "{}"


def _new_people(conn: Connection, count: int, now: datetime) -> list[int]:
    """Insert ``count`` blank people; their ids (in no particular order: blank rows)."""
    sqlite = conn.dialect.name == "sqlite"
    marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    at = _sqlite_instant(now) if sqlite else now
    ids: list[int] = []
    for start in range(0, count, _PEOPLE_CHUNK):
        size = min(_PEOPLE_CHUNK, count - start)
        row = f"({marker}, {marker}, {marker})"
        result = conn.exec_driver_sql(
            f"INSERT INTO {_people.name} (global_opt_out, created_at, updated_at) "
            f"VALUES {', '.join([row] * size)} RETURNING id",
            tuple(value for _ in range(size) for value in (0 if sqlite else False, at, at)),
        )
        ids.extend(result.scalars())
    return ids


def _select_in(
    conn: Connection, sql: str, values: Sequence[Any], *before: Any
) -> Iterable[tuple[Any, ...]]:
    """Rows of ``sql`` (its ``{in}`` an IN list) for ``values``, in chunks, straight from
    the driver: no statement to compile per chunk. ``before`` are the parameters that come
    ahead of the IN list."""
    marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    for chunk in _chunks(values, _LOOKUP_CHUNK):
        statement = sql.format(marker=marker, into=", ".join([marker] * len(chunk)))
        yield from conn.exec_driver_sql(statement, (*before, *chunk)).all()


def _existing_records(
    conn: Connection, records: Sequence[CandidateIn]
) -> dict[tuple[str, str], dict[str, Any]]:
    """Stored records of the batch by ``(source, external_id)``: what the upsert compares."""
    by_source: dict[str, list[str]] = defaultdict(list)
    for record in records:
        by_source[record.source].append(record.external_id)
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for source, ids in by_source.items():
        for external_id, person_id, stage, entered, consent, consent_at in _select_in(
            conn,
            "SELECT external_id, person_id, stage, stage_entered_at, sms_consent, "
            f"sms_consent_at FROM {_records.name} "
            "WHERE source = {marker} AND external_id IN ({into})",
            ids,
            source,
        ):
            found[(source, external_id)] = {
                "person_id": person_id,
                "stage": stage,
                "stage_entered_at": _read_instant(entered),
                "sms_consent": None if consent is None else bool(consent),
                "sms_consent_at": _read_instant(consent_at),
            }
    return found


def _read_instant(value: datetime | str | None) -> datetime | None:
    """A stored instant as an aware UTC datetime, as :class:`UTCDateTime` reads it (SQLite
    hands back text, PostgreSQL an aware datetime)."""
    if value is None:
        return None
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _record_ids(conn: Connection, records: Sequence[CandidateIn]) -> dict[tuple[str, str], int]:
    by_source: dict[str, list[str]] = defaultdict(list)
    for record in records:
        by_source[record.source].append(record.external_id)
    found: dict[tuple[str, str], int] = {}
    for source, ids in by_source.items():
        for external_id, record_id in _select_in(
            conn,
            f"SELECT external_id, id FROM {_records.name} "
            "WHERE source = {marker} AND external_id IN ({into})",
            ids,
            source,
        ):
            found[(source, external_id)] = record_id
    return found


def _existing_owners(
    conn: Connection, tokens: Sequence[list[tuple[str, str]]]
) -> dict[tuple[str, str], set[int]]:
    """Who holds each email address and social profile of the batch already."""
    by_kind: dict[str, set[str]] = defaultdict(set)
    for found in tokens:
        for kind, value in found:
            if kind != "phone":
                by_kind[kind].add(value)
    owners: dict[tuple[str, str], set[int]] = defaultdict(set)
    for kind, values in by_kind.items():
        for value, person_id in _select_in(
            conn,
            f"SELECT value, person_id FROM {_contacts.name} "
            "WHERE kind = {marker} AND value IN ({into})",
            sorted(values),
            kind,
        ):
            owners[(kind, value)].add(person_id)
    return owners


def _phone_holders(
    conn: Connection, records: Sequence[CandidateIn]
) -> dict[str, list[tuple[Any, tuple[str, str] | None, bool]]]:
    """Stored records (other than the batch's own) with a phone of the batch, by phone:
    ``(("p", person_id), name key, has email)`` each."""
    keys = {(record.source, record.external_id) for record in records}
    phones = sorted({record.phone.e164 for record in records if record.phone is not None})
    holders: dict[str, list[tuple[Any, tuple[str, str] | None, bool]]] = defaultdict(list)
    for source, external_id, phone, person_id, first_name, last_name, email in _select_in(
        conn,
        "SELECT source, external_id, phone, person_id, first_name, last_name, email "
        f"FROM {_records.name} WHERE phone IN ({{into}})",
        phones,
    ):
        if (source, external_id) in keys:
            continue  # the batch says what this record is now
        holders[phone].append((("p", person_id), name_key(first_name, last_name), bool(email)))
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


#: the columns of a contact point as :func:`_upsert_contacts` writes them, in order
_CONTACT_COLUMNS = (
    "person_id",
    "kind",
    "value",
    "phone_type",
    "sms_consent",
    "consent_at",
    "consent_source",
    "valid",
    "shared",
    "suppressed",
    "suppressed_reason",
    "suppressed_at",
    "created_at",
    "updated_at",
)
#: what an incoming contact point changes on a stored one
_CONTACT_UPDATE = {
    "phone_type": "COALESCE(excluded.phone_type, contact_points.phone_type)",
    **{
        name: f"CASE WHEN {_CONSENT_WINS} THEN excluded.{name} ELSE contact_points.{name} END"
        for name in _CONSENT
    },
    "suppressed": "CASE WHEN contact_points.suppressed THEN contact_points.suppressed "
    "ELSE excluded.suppressed END",
    "suppressed_reason": "CASE WHEN contact_points.suppressed "
    "THEN contact_points.suppressed_reason ELSE excluded.suppressed_reason END",
    "suppressed_at": "CASE WHEN contact_points.suppressed "
    "THEN contact_points.suppressed_at ELSE excluded.suppressed_at END",
    "updated_at": "excluded.updated_at",
}


def _upsert_contacts(
    conn: Connection,
    records: Sequence[CandidateIn],
    tokens: Sequence[list[tuple[str, str]]],
    person_ids: Sequence[int],
    consent_times: Sequence[datetime | None],
    now: datetime,
) -> None:
    """Write the contact points of the batch's records, one row per (person, address).

    Two records of one person with the same address make one row: the newer consent
    statement wins (a withdrawal a tie), and a suppression stays.
    """
    sqlite = conn.dialect.name == "sqlite"
    instant = _sqlite_instant if sqlite else _pg_instant
    flag = _same  # sqlite3 binds a bool as the integer 1 or 0 itself
    yes, no, now_value = flag(True), flag(False), instant(now)
    contacts: dict[tuple[int, str, str], tuple[Any, ...]] = {}
    for record, found, person_id, consent_at in zip(
        records, tokens, person_ids, consent_times, strict=True
    ):
        for kind, value in found:
            phone = kind == "phone"
            opted_out = kind == "email" and record.email_opt_out
            consent = record.sms_consent if phone else None
            contact = (
                person_id,
                kind,
                value,
                record.phone.type if phone and record.phone else None,
                consent,
                consent_at if phone else None,
                record.source if consent is not None else None,
                # An opt-out the CRM reports is recorded; nothing here ever clears one.
                opted_out,
                "opted out (CRM)" if opted_out else None,
                now if opted_out else None,
            )
            key = (person_id, kind, value)
            previous = contacts.get(key)
            if previous is not None:
                contact = _fold_contact(previous, contact)
            contacts[key] = contact
    if not contacts:
        return
    _insert_rows(
        conn,
        "contact_points",
        _CONTACT_COLUMNS,
        [
            (
                person_id,
                kind,
                value,
                phone_type,
                flag(consent),
                instant(consent_at),
                consent_source,
                yes,  # valid
                no,  # shared
                flag(suppressed),
                suppressed_reason,
                instant(suppressed_at),
                now_value,
                now_value,
            )
            for (
                person_id,
                kind,
                value,
                phone_type,
                consent,
                consent_at,
                consent_source,
                suppressed,
                suppressed_reason,
                suppressed_at,
            ) in contacts.values()
        ],
        ("person_id", "kind", "value"),
        tuple(_CONTACT_UPDATE.items()),
    )


def _fold_contact(previous: tuple[Any, ...], contact: tuple[Any, ...]) -> tuple[Any, ...]:
    """One point from two records of one person with the same address: the later record's,
    keeping the earlier one's consent when it is newer (a withdrawal wins a tie) and its
    suppression when the later has none."""
    merged = list(contact)
    current = {"sms_consent": previous[4], "consent_at": previous[5]}
    if not _consent_wins(contact[4], contact[5], current):
        merged[4:7] = previous[4:7]
    if previous[7] and not contact[7]:
        merged[7:10] = previous[7:10]
    return tuple(merged)


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
