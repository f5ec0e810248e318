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

Every address suppressed goes on the suppression list too, and the list is then applied
to everyone who has it: an email unsubscribe or opt-out covers all of the person's email
addresses, a STOP covers the phone for every person sharing it, and a global opt-out's
email addresses opt out whoever has them later.
* ``auto_reply``: no stop, no opt-out, never a reply. An out-of-office notice carries
  ``payload["until"]`` (the return date it names, else a week) and the person's touches
  wait until then; another auto-reply (``out_of_office: false``) changes nothing. A later
  human reply ends the pause: they are back.
* ``delivered``, ``open``, ``click`` (:func:`outreach.events.ingest_deliveries`) are
  stored already processed and never reach this module.

Events are processed in id order, in batches, each batch in one transaction with its
``processed_at`` stamp, so a crash never applies an event twice or loses one.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select, update

from outreach.cadence import CadenceConfig
from outreach.engine.enroll_write import chunks as _chunks
from outreach.engine.enroll_write import write_changes
from outreach.store.schema import ContactPoint, Enrollment, Event, Person, Touch

__all__ = ["EnrollStats", "process_events"]

_events = Event.__table__
_enrollments = Enrollment.__table__
_contacts = ContactPoint.__table__
_people = Person.__table__
_touches = Touch.__table__
BATCH = 1000
#: the PostgreSQL advisory lock that serialises event processing across workers
_EVENTS_LOCK = 0x6F757472_65616368  # "outreach"
_SUPPRESSING = {"opt_out": "opted out", "unsubscribe": "unsubscribed", "bounce": "bounced"}
_CHANNEL_KIND = {
    "email": "email",
    "sms": "phone",
    "call": "phone",
    "linkedin": "linkedin",
    "x": "x",
    "facebook": "facebook",
}


@dataclass
class EnrollStats:
    """What event processing changed."""

    events: int = 0
    enrolled: Counter[str] = field(default_factory=Counter)
    stopped: Counter[str] = field(default_factory=Counter)
    suppressed: int = 0
    opted_out: int = 0
    already_enrolled: int = 0
    paused: int = 0


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
                # One worker applies events at a time: a batch reads the people's
                # enrollments once, so two workers holding events of one person (a reply
                # and a stage change) must not both act on the same view. Batches are fast.
                conn.execute(select(func.pg_advisory_xact_lock(_EVENTS_LOCK)))
                query = query.with_for_update(skip_locked=True)
            rows = list(conn.execute(query).mappings())
            if not rows:
                return stats
            batch = _Batch(conn, config, now, stats, rows)
            for row in rows:
                batch.apply(row)
            batch.write()
            conn.execute(
                update(_events)
                .where(_events.c.id.in_([row["id"] for row in rows]))
                .values(processed_at=now)
            )
            stats.events += len(rows)
            after = rows[-1]["id"]


class _Batch:
    """One batch of events applied in order to an in-memory view, then written at once.

    The people's running enrollments, opt-outs and (when needed) contact points are read
    with one query each for the whole batch; ends, new enrollments, suppressions and
    opt-outs are written with one statement each. An event sees every earlier event of the
    batch, exactly as if each had been written on its own.
    """

    def __init__(
        self,
        conn: Connection,
        config: CadenceConfig,
        now: datetime,
        stats: EnrollStats,
        events: list[Any],
    ) -> None:
        self.conn, self.config, self.now, self.stats = conn, config, now, stats
        self.people = sorted({e["person_id"] for e in events if e["person_id"] is not None})
        #: person -> running enrollments: {"id" (None until written), "record_id",
        #: "cadence_id", "trigger_stage", "row" (the new row, for one made in this batch)}
        self.active: dict[int, list[dict[str, Any]]] = defaultdict(list)
        self.opted_out: set[int] = set()
        for chunk in _chunks(self.people):
            for row in conn.execute(
                select(
                    _enrollments.c.id,
                    _enrollments.c.person_id,
                    _enrollments.c.record_id,
                    _enrollments.c.cadence_id,
                    _enrollments.c.trigger_stage,
                )
                .where(
                    _enrollments.c.person_id.in_(chunk),
                    or_(
                        _enrollments.c.status == "active",
                        # Its last step claimed, but still held by a provider for later:
                        # a stop now must still reach it (and recall that delivery).
                        and_(
                            _enrollments.c.status == "completed",
                            select(_touches.c.id)
                            .where(
                                _touches.c.enrollment_id == _enrollments.c.id,
                                _touches.c.status.in_(
                                    ("claimed", "in_flight", "sent", "ambiguous")
                                ),
                                _touches.c.planned_at > now,
                            )
                            .exists(),
                        ),
                    ),
                )
                .order_by(_enrollments.c.id)
            ).mappings():
                self.active[row["person_id"]].append({**row, "row": None})
            self.opted_out.update(
                conn.execute(
                    select(_people.c.id).where(
                        _people.c.id.in_(chunk), _people.c.global_opt_out.is_(True)
                    )
                ).scalars()
            )
        # Enrollments of these records that exist in any state: an entry seen before (a
        # CRM repeating an old stage date) must not start a phantom that blocks others.
        records = sorted({e["record_id"] for e in events if e["record_id"] is not None})
        self.existing: set[tuple[int, str, datetime]] = set()
        for chunk in _chunks(records):
            self.existing.update(
                (record_id, cadence_id, _utc(triggered_at))
                for record_id, cadence_id, triggered_at in conn.execute(
                    select(
                        _enrollments.c.record_id,
                        _enrollments.c.cadence_id,
                        _enrollments.c.triggered_at,
                    ).where(_enrollments.c.record_id.in_(chunk))
                )
            )
        self._contacts: dict[tuple[int, str], list[int]] | None = None
        self.new_rows: list[dict[str, Any]] = []
        self.ends: dict[int, str] = {}
        self.opt_outs: list[dict[str, Any]] = []
        self.suppressions: list[dict[str, Any]] = []
        #: person -> the latest "until" of their out-of-office notices in this batch;
        #: None: a human reply in this batch ended the pause
        self.pauses: dict[int, datetime | None] = {}

    # -- the events ----------------------------------------------------------------------

    def apply(self, event: Any) -> None:
        kind = event["type"]
        person_id = event["person_id"]
        if person_id is None:
            return
        if kind == "stage_change":
            payload = event["payload"] or {}
            self._stage_change(event, payload.get("to"))
        elif kind == "reply":
            self._stop(person_id, "reply", f"reply on {event['channel'] or 'a channel'}")
            self.pauses[person_id] = None
        elif kind == "auto_reply":
            until = _until((event["payload"] or {}).get("until"))
            if until is not None and until > self.now:
                current = self.pauses.get(person_id)
                self.pauses[person_id] = until if current is None else max(current, until)
                self.stats.paused += 1
        elif kind in _SUPPRESSING:
            reason = _SUPPRESSING[kind]
            email = _CHANNEL_KIND.get(event["channel"] or "") == "email"
            if event["contact_point_id"] is not None and email and kind != "bounce":
                # An email opt-out or unsubscribe covers every email address of the person.
                ids = sorted({event["contact_point_id"], *self._contact_ids(person_id, "email")})
                self._suppress(ids, reason, event)
                self.stats.suppressed += len(ids)
            elif event["contact_point_id"] is not None:
                self._suppress([event["contact_point_id"]], reason, event)
                self.stats.suppressed += 1
            elif kind in ("opt_out", "unsubscribe") and not event["channel"]:
                self.opt_outs.append(
                    {
                        "id": person_id,
                        "global_opt_out": True,
                        "opted_out_at": event["at"],
                        "updated_at": self.now,
                    }
                )
                self.opted_out.add(person_id)
                self.stats.opted_out += 1
            elif event["channel"] in _CHANNEL_KIND:
                ids = self._contact_ids(person_id, _CHANNEL_KIND[event["channel"]])
                self._suppress(ids, reason, event)
                self.stats.suppressed += len(ids)
            if kind != "bounce":
                self._stop(person_id, "opt_out", reason)

    def _stage_change(self, event: Any, to: str | None) -> None:
        person_id, record_id, at = event["person_id"], event["record_id"], event["at"]
        # Leaving a stage: end this record's enrollments from other stages.
        for enrollment in list(self.active[person_id]):
            if enrollment["record_id"] != record_id or enrollment["trigger_stage"] == (to or ""):
                continue
            if "stage_change" in _stop_on(self.config, enrollment["cadence_id"]):
                reason = f"stage_change: {enrollment['trigger_stage']} -> {to or 'unmapped stage'}"
                self._end(person_id, enrollment, reason)
                self.stats.stopped["stage_change"] += 1
        if to is None or person_id in self.opted_out:
            return
        # One person, one running enrollment per cadence: the same application seen in two
        # CRMs (or a record merged into a person already enrolled) does not start it twice.
        running = {e["cadence_id"] for e in self.active[person_id]}
        for cadence in self.config.cadences:
            if cadence.trigger.stage != to:
                continue
            if cadence.id in running:
                self.stats.already_enrolled += 1
                continue
            key = (record_id, cadence.id, _utc(at))
            if key in self.existing:
                continue  # this very entry was enrolled before (and has ended since)
            self.existing.add(key)
            due = at + cadence.steps[0].after
            row = {
                "person_id": person_id,
                "record_id": record_id,
                "cadence_id": cadence.id,
                "trigger_stage": to,
                "triggered_at": at,
                "status": "active",
                "stop_reason": None,
                "stopped_at": None,
                "next_step": 0,
                "next_occurrence": 0,
                "step_due_at": due,
                "next_due_at": due,
                "created_at": self.now,
                "updated_at": self.now,
            }
            self.new_rows.append(row)
            self.active[person_id].append(
                {
                    "id": None,
                    "person_id": person_id,
                    "record_id": record_id,
                    "cadence_id": cadence.id,
                    "trigger_stage": to,
                    "row": row,
                }
            )
            running.add(cadence.id)
            self.stats.enrolled[cadence.id] += 1

    def _stop(self, person_id: int, trigger: str, reason: str) -> None:
        for enrollment in list(self.active[person_id]):
            if trigger in _stop_on(self.config, enrollment["cadence_id"]):
                self._end(person_id, enrollment, f"{trigger}: {reason}")
                self.stats.stopped[trigger] += 1

    def _end(self, person_id: int, enrollment: dict[str, Any], reason: str) -> None:
        self.active[person_id].remove(enrollment)
        if enrollment["row"] is not None:  # started and ended within this batch
            enrollment["row"].update(
                status="stopped", stop_reason=reason, stopped_at=self.now, next_due_at=None
            )
        else:
            self.ends[enrollment["id"]] = reason

    def _contact_ids(self, person_id: int, kind: str) -> list[int]:
        if self._contacts is None:
            self._contacts = defaultdict(list)
            for chunk in _chunks(self.people):
                for cid, pid, ckind in self.conn.execute(
                    select(_contacts.c.id, _contacts.c.person_id, _contacts.c.kind).where(
                        _contacts.c.person_id.in_(chunk)
                    )
                ):
                    self._contacts[(pid, ckind)].append(cid)
        return list(self._contacts.get((person_id, kind), []))

    def _suppress(self, ids: list[int], reason: str, event: Any) -> None:
        source = event["source"] or str((event["payload"] or {}).get("detail") or "events")
        self.suppressions.extend(
            {
                "b_id": cid,
                "reason": reason,
                "at": event["at"],
                "now": self.now,
                "type": event["type"],
                "source": source.split()[0] if source else "events",
            }
            for cid in ids
        )

    def write(self) -> None:
        """Every change of the batch, one statement per kind (see :mod:`.enroll_write`)."""
        write_changes(self)


def _until(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def _utc(at: datetime) -> datetime:
    return at.astimezone(UTC)


def _stop_on(config: CadenceConfig, cadence_id: str) -> list[str]:
    try:
        return list(config.cadence(cadence_id).stop_on)
    except KeyError:
        return ["reply", "stage_change", "opt_out"]
