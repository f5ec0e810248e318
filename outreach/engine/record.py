"""The record stage: what the tick decided and what the providers answered, into the ledger.

At claim time :func:`record` takes the decided :class:`~outreach.engine.batch.Occurrence`
batch and writes each outcome through a :class:`~outreach.engine.ledger.BatchWriter`, in
the order the occurrences were planned (ledger ids and previews do not depend on how the
stages batched). After a send, :class:`Confirmer` writes each result back: ``sent``,
``failed``, ``ambiguous``, suppressions, fallbacks, re-plans and the CRM write-back queue.

Invariant carried: every occurrence the tick decided is recorded before any provider is
called, skipped ones with the reason; a send whose outcome is unknown stays ``ambiguous``
and is never re-sent blindly; only a send that provably did not leave is re-planned, and
only while nothing (a reply, a stage change, an opt-out) moved its enrollment on
(invariant 2).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select, update

from channels.base import SendResult
from outreach.engine.batch import (
    REPLAN_AFTER,
    REPLAN_FIELDS,
    REPLAN_WITHIN,
    Occurrence,
    Pending,
    PlannedTouch,
    StepCounts,
    TickSummary,
    Transactions,
    digest,
    person_name,
)
from outreach.engine.ledger import BatchWriter
from outreach.store import suppressions as suppression_list
from outreach.store.bulk import bulk_update, bulk_write
from outreach.store.schema import ContactPoint, Enrollment, Event, Touch, WriteBack
from outreach.writeback import CRM_SOURCES

__all__ = ["STOPPING_EVENTS", "Confirmer", "journal", "note_for", "record"]

_enrollments = Enrollment.__table__
_touches = Touch.__table__
_events = Event.__table__
_contacts = ContactPoint.__table__
_write_backs = WriteBack.__table__
#: events that end cadences: one arriving while a send is in flight blocks its re-plan
STOPPING_EVENTS = ("reply", "stage_change", "opt_out", "unsubscribe")


def record(
    items: Iterable[Occurrence], writer: BatchWriter, summary: TickSummary | None
) -> list[Occurrence]:
    """Write each decided occurrence's outcome, in planning order; return them.

    ``summary`` collects the preview journal (None: no journal). An undecided occurrence
    is a bug upstream and raises ``ValueError`` before anything of it is written.
    """
    ordered = sorted(items, key=lambda occ: occ.seq)
    for occ in ordered:
        if occ.outcome not in ("deferred", "holdout", "skipped", "task", "claimed", "ended"):
            raise ValueError(f"occurrence {occ.key} has no outcome ({occ.outcome!r})")
    for occ in ordered:
        if occ.tally:
            tally = occ.counts.deferred if occ.outcome == "deferred" else occ.counts.skipped
            tally[occ.tally] += 1
        if occ.outcome == "ended":
            continue  # the plan stage ended its enrollment already
        if occ.outcome == "deferred":
            assert occ.defer_until is not None
            writer.defer(occ.enrollment, occ.defer_until, occ.reason)
            continue
        if occ.outcome in ("holdout", "skipped"):
            writer.touch(occ, occ.outcome, reason=occ.reason)
            writer.advance(occ)
            journal(summary, occ, None, None, None, occ.outcome, occ.journal_rule or occ.rule)
            continue
        chosen = occ.chosen
        assert chosen is not None and occ.kind is not None
        assert occ.template is not None and occ.variant is not None
        contact_id = chosen.contact.id if chosen.contact else None
        if occ.outcome == "task":
            occ.counts.tasks += 1
            writer.task(
                occ,
                occ.kind,
                title=occ.title,
                body=occ.body,
                reason=chosen.reason,
                template=occ.template,
                variant=occ.variant,
                contact_id=contact_id,
                rating_token=occ.rating_token,
            )
            rule = occ.rule if chosen is occ.route else f"{occ.rule}; {chosen.reason}"
            journal(summary, occ, occ.kind, occ.template, occ.variant, "task", rule)
        else:
            assert occ.message is not None
            writer.claim(
                occ,
                occ.kind,
                contact_id,
                message=occ.message,
                template=occ.template,
                variant=occ.variant,
                reason=chosen.reason + ("; late" if occ.late else ""),
                rating_token=occ.rating_token,
            )
            journal(summary, occ, occ.kind, occ.template, occ.variant, "scheduled", occ.rule)
        writer.advance(occ)
    return ordered


def journal(
    summary: TickSummary | None,
    occ: Occurrence,
    channel: str | None,
    template: str | None,
    variant: str | None,
    status: str,
    rule: str,
) -> None:
    """Add one decision to the preview journal (when the tick keeps one)."""
    if summary is None:
        return
    summary.journal.append(
        PlannedTouch(
            person_id=occ.person.id,
            name=person_name(occ.record),
            cadence_id=occ.cadence.id,
            step_id=occ.step.id,
            occurrence=occ.occurrence,
            at=occ.at,
            timezone=str(occ.person.zone),
            channel=channel,
            template=template,
            variant=variant,
            status=status,
            rule=rule,
        )
    )


#: what a failed send tries next: ``(the same touch on another channel or None, later)``
Fallback = Callable[[Pending, SendResult, datetime], tuple[Pending | None, bool]]


class Confirmer:
    """The record stage after a send: each result into the ledger, in one transaction.

    A sent touch owes its CRM a note (the write-back queue); a refused address is
    suppressed for everyone holding it; a permanent failure tries ``fallback`` (the next
    channel); a send that provably did not leave is re-planned (:meth:`replan`). An
    ambiguous result stays ambiguous: it is reconciled, never re-sent blindly (invariant 2).
    """

    def __init__(
        self,
        transaction: Transactions,
        fallback: Fallback,
        lease_until: Callable[[], datetime],
        deferred: set[int],
    ) -> None:
        self.transaction = transaction
        self.fallback = fallback
        self.lease_until = lease_until
        #: enrollments this tick already deferred (a re-planned one joins them)
        self.deferred = deferred
        #: the newest event id when the tick applied events (a later stopping event blocks
        #: a re-plan)
        self.events_seen = 0

    def confirm(
        self, results: list[tuple[Pending, SendResult]], now: datetime, summary: TickSummary
    ) -> list[Pending]:
        """Write each send's result; return the touches to try again on another channel."""
        again: list[Pending] = []
        replans: list[tuple[Pending, SendResult, dict[str, Any], StepCounts]] = []
        notes: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        suppress: list[dict[str, Any]] = []
        for item, result in results:
            counts = summary.steps[(item.cadence.id, item.step.id)]
            row = {
                "b_id": item.touch_id,
                "status": result.status,
                "channel": item.message.channel,
                "contact_point_id": item.contact_id,
                "provider_message_id": result.provider_message_id,
                "recall_ref": result.recall_ref,
                "reason": "; ".join(r for r in (item.reason, result.reason) if r) or None,
                "body_digest": digest(item.message),
                "sent_at": now if result.status == "sent" else None,
                "delivery_at": (
                    max(now, item.message.send_at) if result.status == "sent" else None
                ),
                "lease_until": None,
                "updated_at": now,
            }
            if result.status == "sent":
                counts.sent += 1
                note = note_for(item, now)
                if note is not None:
                    notes.append(note)
            elif result.status == "ambiguous":
                counts.ambiguous += 1
            else:
                if result.suppress:
                    suppress.append(
                        {
                            "b_id": item.contact_id,
                            "reason": result.suppress,
                            "now": now,
                            "kind": "email" if item.message.channel == "email" else "phone",
                            "value": item.message.to,
                            "source": item.message.channel,
                        }
                    )
                    for contact in item.person.contacts:
                        if contact.id == item.contact_id:
                            contact.suppressed = True
                            contact.suppressed_reason = result.suppress
                retry, later = (
                    self.fallback(item, result, now) if result.permanent else (None, False)
                )
                counts.failed += retry is None
                if retry is None and (later or not result.permanent):
                    # Provably not delivered: the step is planned again (window, caps and
                    # lateness re-apply), on the next channel when this one refused.
                    replans.append((item, result, row, counts))
                elif retry is not None:
                    row.update(
                        status="claimed",
                        channel=retry.message.channel,
                        contact_point_id=retry.contact_id,
                        reason=f"{retry.message.channel} after {item.message.channel} "
                        f"failed: {result.reason}",
                        body_digest=digest(retry.message),
                        lease_until=self.lease_until(),
                        sent_at=None,
                        delivery_at=None,
                    )
                    again.append(retry)
            updates.append(row)
        with self.transaction() as conn:
            bulk_update(
                conn,
                _contacts,
                [
                    {
                        "id": item["b_id"],
                        "suppressed": True,
                        "suppressed_reason": item["reason"],
                        "suppressed_at": item["now"],
                        "updated_at": item["now"],
                    }
                    for item in suppress
                ],
            )
            # The provider's refusal names the address, not the person: it goes on the
            # suppression list, so everyone holding it (and whoever has it later) is spared.
            suppression_list.record(
                conn,
                [
                    {
                        "kind": item["kind"],
                        "value": item["value"],
                        "scope": "address",
                        "reason": item["reason"],
                        "source": item["source"],
                        "at": now,
                    }
                    for item in suppress
                ],
                now,
            )
            # Re-plan first: only an occurrence actually put back is marked so in the ledger.
            for item, _result, row, counts in self.replan(conn, replans, now):
                row["reason"] = f"{row['reason']}; re-planned for a later run"
                row["idempotency_key"] = f"{item.message.idempotency_key}#failed{item.touch_id}"
                counts.replanned += 1
            renamed = [row for row in updates if "idempotency_key" in row]
            for group in (renamed, [row for row in updates if "idempotency_key" not in row]):
                bulk_update(conn, _touches, [{"id": row.pop("b_id"), **row} for row in group])
            bulk_write(conn, _write_backs, notes, conflict=("touch_id", "kind"))
        return again

    def replan(
        self,
        conn: Connection,
        replans: list[tuple[Pending, SendResult, dict[str, Any], StepCounts]],
        now: datetime,
    ) -> list[tuple[Pending, SendResult, dict[str, Any], StepCounts]]:
        """Put failed occurrences back in their enrollments; return those put back.

        A step is re-planned while it is at most ``REPLAN_WITHIN`` late, and only if its
        enrollment is still where this claim left it and no reply, stage change or opt-out
        for the person arrived since this tick applied events: whatever moved it on wins.
        Failures are rare, so this is one guarded statement per failed send.
        """
        done = []
        for entry in replans:
            item, result = entry[0], entry[1]
            before, after = item.before, item.after
            if before is None or after is None or item.due is None:
                continue
            if now - item.due > REPLAN_WITHIN:
                continue
            pause = max(REPLAN_AFTER, timedelta(seconds=result.retry_after or 0))
            stopped_since = (
                select(_events.c.id)
                .where(
                    _events.c.person_id == item.person.id,
                    _events.c.id > self.events_seen,
                    _events.c.type.in_(STOPPING_EVENTS),
                )
                .exists()
            )
            changed = conn.execute(
                update(_enrollments)
                .where(
                    _enrollments.c.id == before["id"],
                    _enrollments.c.next_step == after["next_step"],
                    _enrollments.c.next_occurrence == after["next_occurrence"],
                    _enrollments.c.status == after["status"],
                    ~stopped_since,
                )
                .values(
                    **{name: before[name] for name in REPLAN_FIELDS[1:]},
                    next_due_at=now + pause,
                    defer_reason=f"re-planned: {item.message.channel} failed",
                    updated_at=now,
                )
            ).rowcount
            if changed:
                self.deferred.add(before["id"])
                done.append(entry)
        return done


def note_for(item: Pending, now: datetime) -> dict[str, Any] | None:
    """The CRM note owed for a sent touch (records from a CRM only)."""
    source, external_id = item.record.get("source"), item.record.get("external_id")
    if source not in CRM_SOURCES or not external_id:
        return None
    message = item.message
    if message.channel != "email":
        what = message.channel.upper()
    elif message.subject:
        what = f"Email '{message.subject}'"
    else:
        what = f"Email (SendGrid template {message.sendgrid_template_id})"
    when = f", scheduled for {message.send_at:%Y-%m-%d %H:%M} UTC" if message.send_at > now else ""
    return {
        "touch_id": item.touch_id,
        "task_id": None,
        "source": source,
        "external_id": external_id,
        "kind": "note",
        "text": f"{what} sent by the outreach engine{when} "
        f"({item.cadence.id}/{item.step.id}, variant {item.variant})",
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        "updated_at": now,
    }
