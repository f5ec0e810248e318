"""Write CRM webhook changes the way a sync writes the same change.

Each :class:`~outreach.crm_webhooks.change.CrmChange` becomes a record for
:func:`outreach.records.normalize_record` and :func:`outreach.store.candidates.upsert_candidates`,
the path every sync page takes: the stored record is the base, what the webhook says is
laid over it, and a changed canonical stage writes the ``stage_change`` event that the next
``outreach run`` (or :func:`outreach.engine.enroll.process_events` right away) enrolls or
stops on. A later sync that reads the same stage finds nothing changed: no second event,
no second enrollment, no second stop.

Rules:

* Idempotent on ``(source, delivery_id)``: the id is claimed in ``crm_deliveries`` in the
  same transaction as the change, so a retry or replay (even after a restart, even on
  another worker) answers 2xx and changes nothing.
* Ordering: an event older than the stored record's change time (``source_updated_at``,
  which a sync sets from the CRM and a webhook from the event's time) is ``stale`` and
  changes nothing; a webhook never rolls a newer state back.
* A ``stage`` change for a record the store does not have yet is ``unknown`` (the next
  sync brings the whole record); a ``record`` change creates it.
* ``delete`` stops every running enrollment of the record (whatever its ``stop_on``: the
  person is gone from that CRM) and clears its stage; ``merge`` folds the record into the
  surviving one: the people become one (as the store merges people), a running
  enrollment moves to the surviving record unless that person already runs the cadence.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, select, update

from outreach.cadence import CadenceConfig
from outreach.crm_webhooks.change import CrmChange
from outreach.errors import RecordError
from outreach.records import normalize_record
from outreach.store.candidates import _merge_people, dialect_insert, upsert_candidates
from outreach.store.schema import CandidateRecord, CrmDelivery, Enrollment, Event

__all__ = ["ApplyReport", "apply_changes"]

_records = CandidateRecord.__table__
_deliveries = CrmDelivery.__table__
_enrollments = Enrollment.__table__
_events = Event.__table__

#: stored columns carried over into the rebuilt record (the import keys of the same name)
_CARRIED = (
    "first_name",
    "last_name",
    "email",
    "phone",
    "linkedin_url",
    "x_url",
    "facebook_url",
    "timezone",
    "job_title",
    "job_department",
    "recruiter_name",
    "recruiter_email",
    "recruiter_phone",
    "owner_id",
    "preferred_channel",
    "sms_consent",
)


@dataclass
class ApplyReport:
    """What one delivery did: outcomes by name, and the people whose state changed."""

    outcomes: Counter[str] = field(default_factory=Counter)
    person_ids: set[int] = field(default_factory=set)
    #: per-event notes for the log (ids and reasons, never an address)
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, int]:
        """The answer's body: how many events ended how."""
        names = ("applied", "unchanged", "stale", "unknown", "ignored", "bad", "duplicates")
        return {name: self.outcomes.get(name, 0) for name in names}


def apply_changes(
    engine: Engine, config: CadenceConfig, changes: list[CrmChange], now: datetime
) -> ApplyReport:
    """Apply ``changes`` in order, in one transaction; see the module docstring."""
    report = ApplyReport()
    with engine.begin() as conn:
        for change in changes:
            if not _claim(conn, change, now):
                report.outcomes["duplicates"] += 1
                continue
            outcome = _apply(conn, config, change, now, report)
            report.outcomes[outcome] += 1
            conn.execute(
                update(_deliveries)
                .where(
                    _deliveries.c.source == change.source,
                    _deliveries.c.delivery_id == change.delivery_id,
                )
                .values(outcome=outcome)
            )
    return report


def seen(engine: Engine, source: str, delivery_ids: list[str]) -> set[str]:
    """Which of ``delivery_ids`` were taken in before (to skip work a duplicate needs not)."""
    if not delivery_ids:
        return set()
    with engine.connect() as conn:
        return set(
            conn.execute(
                select(_deliveries.c.delivery_id).where(
                    _deliveries.c.source == source, _deliveries.c.delivery_id.in_(delivery_ids)
                )
            ).scalars()
        )


def _claim(conn: Connection, change: CrmChange, now: datetime) -> bool:
    """Record the delivery id; ``False`` when it was recorded before (a duplicate)."""
    statement = (
        dialect_insert(conn, _deliveries)
        .values(
            source=change.source,
            delivery_id=change.delivery_id,
            external_id=change.external_id,
            outcome="pending",
            received_at=now,
        )
        .on_conflict_do_nothing(index_elements=["source", "delivery_id"])
        .returning(_deliveries.c.delivery_id)
    )
    # RETURNING, not rowcount: the driver's rowcount of an upsert is not portable.
    return conn.execute(statement).first() is not None


def _apply(
    conn: Connection, config: CadenceConfig, change: CrmChange, now: datetime, report: ApplyReport
) -> str:
    label = f"{change.source} {change.what or change.kind} {change.delivery_id}"
    if change.kind == "ignore" or change.external_id is None:
        return "ignored"
    stored = _stored(conn, change.source, change.external_id)
    if stored is None and change.kind != "record":
        report.notes.append(f"{label}: record {change.external_id} not in the store yet")
        return "unknown"
    if change.kind == "delete":
        assert stored is not None
        return _delete(conn, stored, change, now, report)
    if change.kind == "merge":
        assert stored is not None
        return _merge(conn, stored, change, now, report)
    changed_at = stored["source_updated_at"] if stored is not None else None
    stale = (
        change.occurred_at is not None
        and changed_at is not None
        and change.occurred_at < _utc(changed_at)
    )
    if stale:
        assert change.occurred_at is not None and changed_at is not None
        report.notes.append(
            f"{label}: happened {change.occurred_at.isoformat()}, before the stored "
            f"state of record {change.external_id} ({_utc(changed_at).isoformat()}); "
            "nothing rolled back"
        )
        return "stale"
    raw = _rebuild(stored, change, now)
    try:
        record = normalize_record(
            raw,
            where=f"{change.source} webhook record",
            default_region=config.policy.default_region,
            canonical_stage=config.canonical_stage,
            default_source=change.source,
            strict_contacts=False,
        )
    except RecordError as exc:
        # What is wrong, not the value: a validator's detail may quote the address.
        problems = "; ".join(part.split(":", 1)[0] for part in exc.reason.split("; "))
        report.notes.append(f"{label}: record {change.external_id} not written ({problems})")
        return "bad"
    stats = upsert_candidates(conn, [record], now)
    person_id = conn.execute(
        select(_records.c.person_id).where(
            _records.c.source == change.source, _records.c.external_id == change.external_id
        )
    ).scalar_one()
    if stats.stage_changes:
        report.person_ids.add(person_id)
        return "applied"
    return "applied" if stats.new else "unchanged"


def _rebuild(stored: dict[str, Any] | None, change: CrmChange, now: datetime) -> dict[str, Any]:
    """The import keys to write: the stored record, then what the webhook says on top."""
    raw: dict[str, Any] = {}
    if stored is not None:
        raw.update(stored["custom"] or {})
        raw.update({name: stored[name] for name in _CARRIED if stored[name] is not None})
        raw["tags"] = list(stored["tags"] or [])
        raw["stage"] = stored["source_stage"] or stored["stage"]
    raw.update({k: v for k, v in change.record.items() if v is not None and v != [] and v != ""})
    if change.kind == "stage":
        raw["stage"] = change.stage
    elif "stage" in change.record:
        raw["stage"] = change.record["stage"]  # a webhook's "no stage" is news too
    when = change.occurred_at or now
    raw["stage_entered_at"] = change.record.get("stage_entered_at") or when
    raw["updated_at"] = change.record.get("updated_at") or when
    raw["source"], raw["external_id"] = change.source, change.external_id
    return raw


def _delete(
    conn: Connection, stored: dict[str, Any], change: CrmChange, now: datetime, report: ApplyReport
) -> str:
    stopped = _stop_record(conn, stored["id"], f"deleted in {change.source}", now)
    _clear_stage(conn, stored["id"], now)
    _retire(conn, stored, change, now)
    report.person_ids.add(stored["person_id"])
    report.notes.append(
        f"{change.source} record {change.external_id} deleted: {stopped} enrollments stopped"
    )
    return "applied"


def _merge(
    conn: Connection, stored: dict[str, Any], change: CrmChange, now: datetime, report: ApplyReport
) -> str:
    assert change.into is not None
    survivor = _stored(conn, change.source, change.into)
    if survivor is None:
        # The surviving id is new to the store: it is the same record under its new id.
        conn.execute(
            update(_records)
            .where(_records.c.id == stored["id"])
            .values(external_id=change.into, updated_at=now)
        )
        report.notes.append(
            f"{change.source} record {change.external_id} merged into {change.into} "
            "(not in the store yet): renamed"
        )
        return "applied"
    winner = survivor["person_id"]
    if stored["person_id"] != winner:
        _merge_people(conn, [(stored["person_id"], winner)], now)
    running = conn.execute(
        select(_enrollments.c.id, _enrollments.c.cadence_id, _enrollments.c.record_id).where(
            _enrollments.c.person_id == winner, _enrollments.c.status == "active"
        )
    ).all()
    kept = {row.cadence_id for row in running if row.record_id != stored["id"]}
    moved = stopped = 0
    for row in running:
        if row.record_id != stored["id"]:
            continue
        if row.cadence_id in kept:
            _stop_ids(conn, [row.id], f"merged into {change.source} {change.into}", now)
            stopped += 1
            continue
        conn.execute(
            update(_enrollments)
            .where(_enrollments.c.id == row.id)
            .values(record_id=survivor["id"], updated_at=now)
        )
        kept.add(row.cadence_id)
        moved += 1
    _clear_stage(conn, stored["id"], now)
    _retire(conn, stored, change, now)
    report.person_ids.add(winner)
    report.notes.append(
        f"{change.source} record {change.external_id} merged into {change.into}: "
        f"{moved} enrollments moved, {stopped} stopped (already running)"
    )
    return "applied"


def _stop_record(conn: Connection, record_id: int, reason: str, now: datetime) -> int:
    ids = list(
        conn.execute(
            select(_enrollments.c.id).where(
                and_(_enrollments.c.record_id == record_id, _enrollments.c.status == "active")
            )
        ).scalars()
    )
    _stop_ids(conn, ids, reason, now)
    return len(ids)


def _stop_ids(conn: Connection, ids: list[int], reason: str, now: datetime) -> None:
    if ids:
        conn.execute(
            update(_enrollments)
            .where(_enrollments.c.id.in_(ids), _enrollments.c.status == "active")
            .values(
                status="stopped",
                stop_reason=reason,
                stopped_at=now,
                next_due_at=None,
                updated_at=now,
            )
        )


def _retire(conn: Connection, stored: dict[str, Any], change: CrmChange, now: datetime) -> None:
    """After a deletion or a merge away: the record's stage changes not yet applied are
    dropped (they would enroll a record that is gone), and its change time moves up to the
    event's, so a stage change from before it that arrives later is stale."""
    conn.execute(
        update(_events)
        .where(
            _events.c.record_id == stored["id"],
            _events.c.type == "stage_change",
            _events.c.processed_at.is_(None),
        )
        .values(processed_at=now)
    )
    at = change.occurred_at or now
    current = stored["source_updated_at"]
    if current is None or _utc(current) < at:
        conn.execute(
            update(_records).where(_records.c.id == stored["id"]).values(source_updated_at=at)
        )


def _clear_stage(conn: Connection, record_id: int, now: datetime) -> None:
    conn.execute(
        update(_records)
        .where(_records.c.id == record_id)
        .values(stage=None, source_stage=None, updated_at=now)
    )


def _stored(conn: Connection, source: str, external_id: str) -> dict[str, Any] | None:
    row = (
        conn.execute(
            select(_records).where(
                _records.c.source == source, _records.c.external_id == external_id
            )
        )
        .mappings()
        .first()
    )
    return dict(row) if row is not None else None


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
