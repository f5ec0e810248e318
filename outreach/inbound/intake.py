"""Intake: parse, classify, match and store incoming mail, and turn it into events.

Every way in (Inbound Parse, ``replies import``, ``replies poll``) hands
:func:`ingest_messages` a stream of :class:`~outreach.inbound.raw.RawMessage`. Per batch,
in one transaction:

* each message is parsed and classified (human reply, auto-reply, bounce, unsubscribe);
  one that is not mail at all is kept as ``invalid`` with its error;
* it is matched to the touch it answers (:mod:`outreach.inbound.match`) and stored in
  ``inbound_messages`` under a dedupe key (its Message-ID, else a hash of its bytes), so a
  message fetched, posted or imported twice counts once; what matches nothing is kept;
* what it means becomes an ``events`` row that the engine applies
  (:func:`outreach.engine.enroll.process_events`): a human reply stops cadences and is
  the response to its touch; every auto-reply is an ``auto_reply`` event (payload
  ``out_of_office``), never a reply, and only an out-of-office notice (with ``until``)
  pauses the person, until the return date it names, else a week; an unsubscribe
  suppresses the person's email addresses; a hard bounce (5.x.x) suppresses the address,
  soft bounces (4.x.x) are counted and the third suppresses it;
* a human reply also becomes a recruiter task and, for CRM records, a note with its new
  text and a task in the CRM (``write_backs``, sent by ``outreach run``).

Errors name the message's place (``INBOX uid 42: ...``), never an address; the batch goes
on. Logs carry candidate ids only.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, func, select

from outreach.cadence import CadenceConfig
from outreach.contacts import ContactError, normalize_email
from outreach.inbound.classify import Classification, classify
from outreach.inbound.match import NO_MATCH, Clues, Match, clues_for, match_batch
from outreach.inbound.message import Mail, MailError, parse_mail
from outreach.inbound.raw import RawMessage
from outreach.store import suppressions
from outreach.store.bulk import bulk_write
from outreach.store.schema import (
    CandidateRecord,
    Enrollment,
    Event,
    InboundMessage,
    Task,
    WriteBack,
)
from outreach.writeback import CRM_SOURCES

__all__ = [
    "OOO_DEFAULT_PAUSE",
    "REPLY_TASK_TITLE",
    "SOFT_BOUNCE_LIMIT",
    "IntakeReport",
    "ingest_messages",
]

log = logging.getLogger("outreach.inbound")
_T = TypeVar("_T")

_inbound = InboundMessage.__table__
_events = Event.__table__
_tasks = Task.__table__
_write_backs = WriteBack.__table__
_records = CandidateRecord.__table__
_enrollments = Enrollment.__table__

BATCH_SIZE = 500
#: soft bounces (4.x.x) of one address that suppress it like a hard bounce
SOFT_BOUNCE_LIMIT = 3
#: how long an out-of-office notice that names no return date pauses the person
OOO_DEFAULT_PAUSE = timedelta(days=7)
REPLY_TASK_TITLE = "replied: answer within one business day"
#: the longest new text kept for a note or task; a reply is rarely longer
_TEXT_LIMIT = 8000


@dataclass
class IntakeReport:
    """What one intake did: counts by kind, duplicates, unmatched, and per-message errors.

    ``errors`` are ``"<where>: <what>"`` lines for messages that could not be read as mail
    (they are still stored as ``invalid``); ``stored`` counts new rows, ``duplicates``
    messages seen before.
    """

    read: int = 0
    stored: int = 0
    duplicates: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    out_of_office: int = 0
    unmatched: int = 0
    soft_bounces: int = 0
    errors: list[str] = field(default_factory=list)
    person_ids: set[int] = field(default_factory=set)

    def merge(self, other: IntakeReport) -> None:
        """Add ``other``'s counts to this report."""
        self.read += other.read
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.kinds.update(other.kinds)
        self.out_of_office += other.out_of_office
        self.unmatched += other.unmatched
        self.soft_bounces += other.soft_bounces
        self.errors.extend(other.errors)
        self.person_ids |= other.person_ids


@dataclass
class _Item:
    message: RawMessage
    key: str
    received_at: datetime
    mail: Mail | None = None
    verdict: Classification | None = None
    error: str | None = None
    clues: Clues = field(default_factory=Clues)
    match: Match = NO_MATCH


def ingest_messages(
    engine: Engine,
    messages: Iterable[RawMessage],
    *,
    now: datetime,
    config: CadenceConfig | None = None,
    batch_size: int = BATCH_SIZE,
) -> IntakeReport:
    """Store and classify ``messages``; record the events they mean (the next tick applies
    them). ``config`` gives the policy's time zone: an out-of-office return date starts at
    midnight there."""
    zone = config.policy.zone if config is not None else None
    report = IntakeReport()
    batch: list[RawMessage] = []
    for message in messages:
        batch.append(message)
        if len(batch) >= batch_size:
            report.merge(ingest_batch(engine, batch, now=now, zone=zone))
            batch = []
    if batch:
        report.merge(ingest_batch(engine, batch, now=now, zone=zone))
    return report


def ingest_batch(
    engine: Engine,
    batch: Sequence[RawMessage],
    *,
    now: datetime,
    zone: ZoneInfo | None = None,
    also: Any = None,
) -> IntakeReport:
    """One batch in one transaction; ``also(conn)`` runs inside it before the commit (the
    IMAP poller moves its cursor there, so cursor and messages commit together)."""
    report = IntakeReport(read=len(batch))
    items = _prepare(batch, now, report)
    with engine.begin() as conn:
        fresh = _fresh(conn, items, report)
        if fresh:
            for item, found in zip(fresh, match_batch(conn, [i.clues for i in fresh]), strict=True):
                item.match = found
            _store(conn, fresh, now, zone or ZoneInfo("UTC"), report)
        if also is not None:
            also(conn)
    return report


# -- reading -----------------------------------------------------------------------------


def _prepare(batch: Sequence[RawMessage], now: datetime, report: IntakeReport) -> list[_Item]:
    items = []
    for message in batch:
        received = _received(message.received_at, None, now)
        if message.raw is None:
            error = message.error or "could not be read"
            report.errors.append(f"{message.where}: {error}")
            key = "unread:" + hashlib.sha256(message.where.encode()).hexdigest()
            items.append(_Item(message, key, received, error=error))
            continue
        try:
            mail = parse_mail(message.raw)
            verdict = classify(mail, received_at=_received(message.received_at, mail.date, now))
            mail, verdict = _without_nul(mail), _without_nul(verdict)
        except MailError as exc:
            report.errors.append(f"{message.where}: not a usable email: {exc}")
            items.append(_Item(message, _hash_key(message.raw), received, error=str(exc)))
            continue
        except Exception as exc:  # a parser bug must not lose the rest of the batch
            log.exception("intake: %s could not be classified", message.where)
            report.errors.append(f"{message.where}: could not be classified ({type(exc).__name__})")
            items.append(_Item(message, _hash_key(message.raw), received, error=type(exc).__name__))
            continue
        key = _mail_key(mail) or _hash_key(message.raw)
        item = _Item(
            message,
            key,
            _received(message.received_at, mail.date, now),
            mail=mail,
            verdict=verdict,
        )
        item.clues = clues_for(mail, verdict)
        items.append(item)
    return items


def _without_nul(value: _T) -> _T:
    """``value`` (a parsed mail or its verdict) with NUL characters removed from its text
    and tuples of text: a message may carry them (raw bytes, encoded words, a decoded
    body), and PostgreSQL refuses them in text columns and query parameters, which would
    fail the whole batch."""
    changes: dict[str, Any] = {}
    for name in (f.name for f in fields(value)):  # type: ignore[arg-type]
        current = getattr(value, name)
        if isinstance(current, str) and "\x00" in current:
            changes[name] = current.replace("\x00", "")
        elif isinstance(current, tuple) and any(
            isinstance(v, str) and "\x00" in v for v in current
        ):
            changes[name] = tuple(
                v.replace("\x00", "") if isinstance(v, str) else v for v in current
            )
    return replace(value, **changes) if changes else value  # type: ignore[type-var]


def _received(arrived: datetime | None, dated: datetime | None, now: datetime) -> datetime:
    """When the message came in: the mailbox's or poster's time, else its Date header, never
    later than ``now`` (a replayed day, a sender's clock ahead)."""
    at = arrived or dated or now
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return min(at.astimezone(UTC), now)


def _mail_key(mail: Mail) -> str | None:
    if not mail.message_id:
        return None
    key = "mid:" + mail.message_id.strip()
    if len(key) > 200:
        key = "mid:sha256:" + hashlib.sha256(mail.message_id.encode()).hexdigest()
    return key


def _hash_key(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _fresh(conn: Connection, items: list[_Item], report: IntakeReport) -> list[_Item]:
    """Items not stored before nor earlier in this batch."""
    keys = sorted({item.key for item in items})
    seen: set[str] = set()
    for start in range(0, len(keys), 500):
        seen.update(
            conn.execute(
                select(_inbound.c.dedupe_key).where(
                    _inbound.c.dedupe_key.in_(keys[start : start + 500])
                )
            ).scalars()
        )
    fresh = []
    for item in items:
        if item.key in seen:
            report.duplicates += 1
            continue
        seen.add(item.key)
        fresh.append(item)
    return fresh


# -- storing and effects -----------------------------------------------------------------


def _store(
    conn: Connection, items: list[_Item], now: datetime, zone: ZoneInfo, report: IntakeReport
) -> None:
    dialect = conn.dialect.name
    rows = [_inbound_row(item, now, dialect) for item in items]
    bulk_write(conn, _inbound, rows, conflict=("dedupe_key",))
    ids: dict[str, int] = {}
    keys = [item.key for item in items]
    for start in range(0, len(keys), 500):
        ids.update(
            (key, id_)
            for id_, key in conn.execute(
                select(_inbound.c.id, _inbound.c.dedupe_key).where(
                    _inbound.c.dedupe_key.in_(keys[start : start + 500]),
                    _inbound.c.created_at == now,
                )
            )
        )
    soft = _soft_bounce_counts(conn, items)
    records = _records_for(conn, [item.match for item in items if item.match.person_id])
    events: list[dict[str, Any]] = []
    listed: list[dict[str, Any]] = []
    replies: list[tuple[_Item, int, dict[str, Any] | None]] = []
    for item in items:
        inbound_id = ids.get(item.key)
        if inbound_id is None:
            report.duplicates += 1  # another worker stored it a moment ago
            continue
        report.stored += 1
        kind = _kind(item)
        report.kinds[kind] += 1
        found = item.match
        if kind == "invalid":
            continue
        verdict = item.verdict
        assert verdict is not None
        # What came in is counted whether or not it matched anyone.
        report.out_of_office += verdict.out_of_office
        soft_bounce = kind == "bounce" and not any(b.permanent for b in verdict.bounces)
        report.soft_bounces += soft_bounce
        if found.person_id is None:
            # No one has the address yet: the list keeps it for when they arrive.
            listed.extend(_listed(item, kind, verdict))
            report.unmatched += 1
            continue
        report.person_ids.add(found.person_id)
        base = {
            "channel": "email",
            "person_id": found.person_id,
            "record_id": None,
            "contact_point_id": found.contact_point_id,
            "touch_id": found.touch_id,
            "source": None,
            "external_id": None,
            "at": item.received_at,
            "processed_at": None,
            "created_at": now,
        }
        payload = {"inbound_id": inbound_id, "matched_by": found.by, "rule": verdict.reason}
        if kind == "human":
            events.append(
                {
                    **base,
                    "type": "reply",
                    "dedupe_key": f"mail:{item.key}"[:200],
                    "payload": payload,
                }
            )
            record = records.get(found.enrollment_id) or records.get(("person", found.person_id))
            replies.append((item, inbound_id, record))
        elif kind == "auto":
            # Every auto-reply is kept (the report counts them apart from replies); only
            # an out-of-office notice carries ``until``, the one thing that pauses.
            auto = {**payload, "out_of_office": verdict.out_of_office}
            if verdict.out_of_office:
                until = _pause_until(verdict.returns_on, item.received_at, zone)
                auto["until"] = until.isoformat()
                auto["returns_on"] = _iso(verdict.returns_on)
            events.append(
                {
                    **base,
                    "type": "auto_reply",
                    "dedupe_key": f"mail:{item.key}"[:200],
                    "payload": auto,
                }
            )
        elif kind == "unsubscribe":
            # An email unsubscribe covers every email address of the person (invariant 4).
            events.append(
                {
                    **base,
                    "type": "unsubscribe",
                    "contact_point_id": None,
                    "dedupe_key": f"mail:{item.key}"[:200],
                    "payload": payload,
                }
            )
        elif kind == "bounce":
            if any(b.permanent for b in verdict.bounces):
                events.append(
                    {
                        **base,
                        "type": "bounce",
                        "dedupe_key": f"mail:{item.key}"[:200],
                        "payload": {**payload, "status": _status(verdict)},
                    }
                )
            elif found.contact_point_id is not None:
                count = soft.get(found.contact_point_id, 0) + 1
                soft[found.contact_point_id] = count
                if count >= SOFT_BOUNCE_LIMIT:
                    events.append(
                        {
                            **base,
                            "type": "bounce",
                            "dedupe_key": f"mail:{item.key}"[:200],
                            "payload": {
                                **payload,
                                "status": _status(verdict),
                                "soft_bounces": count,
                            },
                        }
                    )
    bulk_write(conn, _events, events, conflict=("dedupe_key",))
    if listed:
        suppressions.record(conn, listed, now)
    _reply_tasks(conn, replies, now, zone)


def _listed(item: _Item, kind: str, verdict: Classification) -> list[dict[str, Any]]:
    """Suppression list entries for an unmatched permanent bounce or unsubscribe."""
    if kind == "bounce":
        addresses = _normalised(b.address for b in verdict.bounces if b.permanent)
        scope, reason = "address", "bounced"
    elif kind == "unsubscribe":
        addresses, scope, reason = list(item.clues.addresses), "channel", "unsubscribed"
    else:
        return []
    return [
        {
            "kind": "email",
            "value": address,
            "scope": scope,
            "reason": reason,
            "source": f"mail {item.message.source}",
            "at": item.received_at,
        }
        for address in addresses
    ]


def _normalised(values: Iterable[str]) -> list[str]:
    found = []
    for value in values:
        try:
            found.append(normalize_email(value))
        except ContactError:
            continue
    return found


def _kind(item: _Item) -> str:
    return "invalid" if item.verdict is None else item.verdict.kind


def _inbound_row(item: _Item, now: datetime, dialect: str) -> dict[str, Any]:
    mail, verdict, found = item.mail, item.verdict, item.match
    returns_on = verdict.returns_on if verdict is not None else None
    return {
        "dedupe_key": item.key,
        "source": item.message.source[:16],
        "origin": item.message.where,
        "message_id": (mail.message_id or "")[:250] or None if mail else None,
        "kind": _kind(item),
        "out_of_office": bool(verdict and verdict.out_of_office),
        "rule": verdict.reason if verdict else None,
        "from_address": (mail.from_address or "")[:500] or None if mail else None,
        "subject": mail.subject[:500] if mail else None,
        "new_text": verdict.new_text[:_TEXT_LIMIT] if verdict else None,
        "returns_on": _iso(returns_on) if dialect == "sqlite" else returns_on,
        "bounce_status": _status(verdict) if verdict and verdict.kind == "bounce" else None,
        "matched_by": found.by,
        "person_id": found.person_id,
        "touch_id": found.touch_id,
        "contact_point_id": found.contact_point_id,
        "size": mail.size if mail else len(item.message.raw or b""),
        "error": item.error,
        "received_at": item.received_at,
        "created_at": now,
    }


def _status(verdict: Classification | None) -> str | None:
    if verdict is None or not verdict.bounces:
        return None
    permanent = [b for b in verdict.bounces if b.permanent]
    return (permanent or list(verdict.bounces))[0].status[:16]


def _iso(day: date | None) -> str | None:
    return day.isoformat() if day is not None else None


def _pause_until(returns_on: date | None, received: datetime, zone: ZoneInfo) -> datetime:
    if returns_on is None:
        return received + OOO_DEFAULT_PAUSE
    return datetime.combine(returns_on, time(0), tzinfo=zone).astimezone(UTC)


def _soft_bounce_counts(conn: Connection, items: list[_Item]) -> dict[int, int]:
    """Soft bounces already stored per contact point, for the points this batch bounces."""
    points = sorted(
        {
            item.match.contact_point_id
            for item in items
            if item.verdict is not None
            and item.verdict.kind == "bounce"
            and item.match.contact_point_id is not None
            and not any(b.permanent for b in item.verdict.bounces)
        }
    )
    counts: dict[int, int] = {}
    for start in range(0, len(points), 500):
        counts.update(
            conn.execute(
                select(_inbound.c.contact_point_id, func.count())
                .where(
                    _inbound.c.contact_point_id.in_(points[start : start + 500]),
                    _inbound.c.kind == "bounce",
                    _inbound.c.bounce_status.like("4.%"),
                    _inbound.c.dedupe_key.not_in([i.key for i in items]),
                )
                .group_by(_inbound.c.contact_point_id)
            ).all()
        )
    return counts


def _records_for(conn: Connection, matches: list[Match]) -> dict[Any, dict[str, Any]]:
    """The CRM record behind each match: its enrollment's record, else the person's newest."""
    columns = (
        _records.c.id,
        _records.c.person_id,
        _records.c.source,
        _records.c.external_id,
        _records.c.owner_id,
        _records.c.first_name,
        _records.c.last_name,
    )
    found: dict[Any, dict[str, Any]] = {}
    enrollments = sorted({m.enrollment_id for m in matches if m.enrollment_id is not None})
    for start in range(0, len(enrollments), 500):
        for row in conn.execute(
            select(_enrollments.c.id.label("enrollment_id"), *columns)
            .join(_records, _records.c.id == _enrollments.c.record_id)
            .where(_enrollments.c.id.in_(enrollments[start : start + 500]))
        ).mappings():
            found[row["enrollment_id"]] = dict(row)
    people = sorted({m.person_id for m in matches if m.enrollment_id not in found})
    for start in range(0, len(people), 500):
        for row in conn.execute(
            select(*columns, _records.c.updated_at)
            .where(_records.c.person_id.in_(people[start : start + 500]))
            .order_by(_records.c.updated_at)
        ).mappings():
            found[("person", row["person_id"])] = dict(row)  # the newest wins
    return found


def _reply_tasks(
    conn: Connection,
    replies: list[tuple[_Item, int, dict[str, Any] | None]],
    now: datetime,
    zone: ZoneInfo,
) -> None:
    """A recruiter task per human reply, and for CRM records a note and a CRM task."""
    if not replies:
        return
    tasks = []
    for item, inbound_id, record in replies:
        verdict = item.verdict
        assert verdict is not None
        text = verdict.new_text[:_TEXT_LIMIT] or "(no new text)"
        subject = item.mail.subject if item.mail else ""
        tasks.append(
            {
                "person_id": item.match.person_id,
                "record_id": record["id"] if record else None,
                "touch_id": None,
                "source": record["source"] if record else None,
                "owner_id": record["owner_id"] if record else None,
                "kind": "reply",
                "title": REPLY_TASK_TITLE,
                "body": f"Subject: {subject}\n\n{text}" if subject else text,
                "reason": f"inbound {inbound_id}",
                "due_at": _one_business_day(item.received_at, zone),
                "status": "open",
                "external_id": None,
                "created_at": now,
            }
        )
    bulk_write(conn, _tasks, tasks)
    reasons = [t["reason"] for t in tasks]
    task_ids = dict(
        conn.execute(
            select(_tasks.c.reason, _tasks.c.id).where(
                _tasks.c.kind == "reply", _tasks.c.reason.in_(reasons)
            )
        ).all()
    )
    owed = []
    for (item, inbound_id, record), task in zip(replies, tasks, strict=True):
        if record is None or record["source"] not in CRM_SOURCES:
            continue
        when = item.received_at.astimezone(zone)
        note = (
            f"Candidate replied by email on {when:%Y-%m-%d %H:%M %Z}"
            + (f" (subject: {item.mail.subject})" if item.mail and item.mail.subject else "")
            + f":\n\n{item.verdict.new_text[:_TEXT_LIMIT] or '(no new text)'}"
        )
        common = {
            "touch_id": None,
            "inbound_id": inbound_id,
            "source": record["source"],
            "external_id": record["external_id"],
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
            "updated_at": now,
        }
        owed.append({**common, "task_id": None, "kind": "note", "text": note})
        owed.append(
            {
                **common,
                "task_id": task_ids.get(task["reason"]),
                "kind": "task",
                "text": f"{REPLY_TASK_TITLE}\n\n{task['body']}",
            }
        )
    bulk_write(conn, _write_backs, owed, conflict=("inbound_id", "kind"))


def _one_business_day(at: datetime, zone: ZoneInfo) -> datetime:
    """``at`` plus one day, moved past Saturday and Sunday in ``zone``."""
    local = at.astimezone(zone) + timedelta(days=1)
    while local.weekday() >= 5:
        local += timedelta(days=1)
    return local.astimezone(UTC)
