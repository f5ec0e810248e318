"""The claim's ledger writer: one batch's touches, tasks and enrollment updates, at once.

The record stage (:mod:`outreach.engine.record`) hands each decided occurrence to a
:class:`BatchWriter`; :meth:`BatchWriter.flush` writes them in the claim's transaction.

Invariant carried: a touch is in the ledger (``claimed``, with its idempotency key, reply
token and lease) and its enrollment has moved on before any provider is called; a
conflicting claim by another worker keeps its run id and this run's copy is not dispatched
(invariant 2).
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, select

from outreach.cadence import TASK_CHANNELS
from outreach.engine.batch import (
    REPLAN_FIELDS,
    Occurrence,
    Pending,
    ReplyAddress,
    digest_of,
    outgoing_message,
)
from outreach.store.bulk import bulk_update, bulk_write
from outreach.store.schema import Enrollment, Task, Touch, WriteBack
from outreach.templates import RenderedMessage
from outreach.writeback import CRM_SOURCES

__all__ = ["BatchWriter", "count_tasks"]

_enrollments = Enrollment.__table__
_touches = Touch.__table__
_tasks = Task.__table__
_write_backs = WriteBack.__table__


class BatchWriter:
    """Collects a claim batch's ledger rows, tasks and enrollment updates; writes them at once."""

    def __init__(
        self,
        now: datetime,
        run_id: str,
        lease_until: datetime,
        replies: ReplyAddress | None = None,
    ) -> None:
        self.replies = replies or ReplyAddress(None, None, None)
        self.now = now
        self.run_id = run_id
        self.lease_until = lease_until
        self.touches: list[dict[str, Any]] = []
        self.tasks: list[dict[str, Any]] = []
        self.enrollments: dict[int, dict[str, Any]] = {}
        self.pending: list[
            tuple[dict[str, Any], Occurrence, RenderedMessage, str, str, dict[str, Any]]
        ] = []
        self.deferred: set[int] = set()

    def _enrollment(self, enrollment: dict[str, Any]) -> dict[str, Any]:
        return self.enrollments.setdefault(enrollment["id"], enrollment)

    def touch(
        self,
        occ: Occurrence,
        status: str,
        *,
        reason: str | None = None,
        channel: str | None = None,
        contact_id: int | None = None,
        template: str | None = None,
        variant: str | None = None,
        subject: str | None = None,
        message: RenderedMessage | None = None,
        rating_token: str | None = None,
    ) -> dict[str, Any]:
        """Add a ledger row for this step occurrence."""
        # A claim gets its reply token and Message-ID now, so the ledger has them before
        # the provider call and an answer finds the touch whatever channel it went out on.
        token = secrets.token_hex(8) if status == "claimed" else None
        row = {
            "idempotency_key": occ.key,
            "enrollment_id": occ.enrollment["id"],
            "person_id": occ.enrollment["person_id"],
            "cadence_id": occ.cadence.id,
            "step_id": occ.step.id,
            "occurrence": occ.occurrence,
            "status": status,
            "channel": channel,
            "contact_point_id": contact_id,
            "template": template,
            "variant": variant,
            "subject": subject,
            "transactional": occ.step.transactional,
            "due_at": occ.due,
            "planned_at": occ.at,
            "claimed_at": self.now,
            "lease_until": self.lease_until if status == "claimed" else None,
            "run_id": self.run_id,
            "reason": reason,
            "body_digest": digest_of(channel, message) if message is not None else None,
            "reply_token": token,
            "rating_token": rating_token,
            "message_id": self.replies.message_id(token) if token else None,
            "updated_at": self.now,
        }
        self.touches.append(row)
        return row

    def claim(
        self,
        occ: Occurrence,
        channel: str,
        contact_id: int | None,
        *,
        message: RenderedMessage,
        template: str,
        variant: str,
        reason: str,
        rating_token: str | None = None,
    ) -> None:
        """Claim the occurrence for a channel; it is dispatched after the batch commits."""
        before = {name: occ.enrollment.get(name) for name in REPLAN_FIELDS}
        row = self.touch(
            occ,
            "claimed",
            reason=reason,
            channel=channel,
            contact_id=contact_id,
            template=template,
            variant=variant,
            subject=message.subject,
            message=message,
            rating_token=rating_token,
        )
        self.pending.append((row, occ, message, template, variant, before))

    def task(
        self,
        occ: Occurrence,
        kind: str,
        *,
        title: str,
        body: str,
        reason: str,
        template: str,
        variant: str,
        contact_id: int | None,
        rating_token: str | None = None,
    ) -> None:
        """Record the occurrence as a recruiter task."""
        row = self.touch(
            occ,
            "task",
            reason=reason,
            channel=kind if kind in TASK_CHANNELS else None,
            contact_id=contact_id,
            template=template,
            variant=variant,
            rating_token=rating_token,
        )
        self.tasks.append(
            {
                "key": row["idempotency_key"],
                "external_id": occ.record.get("external_id"),
                "person_id": occ.enrollment["person_id"],
                "record_id": occ.enrollment["record_id"],
                "source": occ.record.get("source"),
                "owner_id": occ.record.get("owner_id"),
                "kind": kind,
                "title": title[:500],
                "body": body,
                "reason": reason,
                "due_at": occ.at,
                "status": "open",
                "created_at": self.now,
            }
        )

    def defer(self, enrollment: dict[str, Any], at: datetime, reason: str) -> None:
        """Look at the enrollment again at ``at``, saying why."""
        self.deferred.add(enrollment["id"])
        row = self._enrollment(enrollment)
        row["next_due_at"] = at
        row["defer_reason"] = reason

    def end(self, enrollment: dict[str, Any], status: str, reason: str | None) -> None:
        """End the enrollment (``stopped`` or ``completed``)."""
        row = self._enrollment(enrollment)
        row.update(status=status, stop_reason=reason, stopped_at=self.now, next_due_at=None)

    def advance(self, occ: Occurrence) -> None:
        """Move the enrollment past this occurrence: the next repeat, step, or the end."""
        cadence, at = occ.cadence, occ.at
        row = self._enrollment(occ.enrollment)
        row["last_touch_at"] = at
        row["defer_reason"] = None
        step = cadence.steps[row["next_step"]]
        if step.repeat and row["next_occurrence"] < step.repeat.max:
            row["next_occurrence"] += 1
            due = at + step.repeat.every
        else:
            row["next_step"] += 1
            row["next_occurrence"] = 0
            if row["next_step"] >= len(cadence.steps):
                row.update(
                    status="completed",
                    stop_reason=None,
                    stopped_at=self.now,
                    next_due_at=None,
                    step_due_at=None,
                )
                return
            anchor = (
                at if cadence.step_anchor(row["next_step"]) == "previous" else row["triggered_at"]
            )
            due = anchor + cadence.steps[row["next_step"]].after
        row["step_due_at"] = due
        row["next_due_at"] = due

    def flush(self, conn: Connection) -> list[Pending]:
        """Write the batch; return the claims this run won, ready for their channels."""
        ids: dict[str, int] = {}
        if self.touches:
            bulk_write(conn, _touches, self.touches, conflict=("idempotency_key",))
            keys = [row["idempotency_key"] for row in self.touches]
            # Only rows this run wrote: a conflicting claim by another worker keeps its run id.
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                ids.update(
                    (key, id_)
                    for id_, key in conn.execute(
                        select(_touches.c.id, _touches.c.idempotency_key).where(
                            _touches.c.idempotency_key.in_(chunk),
                            _touches.c.run_id == self.run_id,
                        )
                    )
                )
        tasks = [
            {
                **{k: v for k, v in task.items() if k not in ("key", "external_id")},
                "touch_id": ids[task["key"]],
            }
            for task in self.tasks
            if task["key"] in ids
        ]
        if tasks:
            bulk_write(conn, _tasks, tasks)
            owed = [t for t in self.tasks if t["key"] in ids and t["source"] in CRM_SOURCES]
            if owed:
                task_ids = dict(
                    conn.execute(
                        select(_tasks.c.touch_id, _tasks.c.id).where(
                            _tasks.c.touch_id.in_([ids[t["key"]] for t in owed])
                        )
                    ).all()
                )
                bulk_write(
                    conn,
                    _write_backs,
                    [
                        {
                            "touch_id": ids[t["key"]],
                            "task_id": task_ids[ids[t["key"]]],
                            "source": t["source"],
                            "external_id": t["external_id"],
                            "kind": "task",
                            "text": f"{t['title']}\n\n{t['body']}",
                            "status": "pending",
                            "attempts": 0,
                            "next_attempt_at": self.now,
                            "created_at": self.now,
                            "updated_at": self.now,
                        }
                        for t in owed
                    ],
                    conflict=("touch_id", "kind"),
                )
        bulk_update(
            conn,
            _enrollments,
            [
                {
                    "id": row["id"],
                    "status": row["status"],
                    "stop_reason": row["stop_reason"],
                    "stopped_at": row["stopped_at"],
                    "next_step": row["next_step"],
                    "next_occurrence": row["next_occurrence"],
                    "step_due_at": row["step_due_at"],
                    "next_due_at": row["next_due_at"],
                    "defer_reason": row["defer_reason"],
                    "last_touch_at": row["last_touch_at"],
                    "updated_at": self.now,
                }
                for row in self.enrollments.values()
            ],
        )
        pending: list[Pending] = []
        for row, occ, rendered, template, variant, before in self.pending:
            touch_id = ids.get(row["idempotency_key"])
            if touch_id is None:
                continue  # another worker claimed this occurrence first
            contact = next(c for c in occ.person.contacts if c.id == row["contact_point_id"])
            message = outgoing_message(
                touch_id,
                row["idempotency_key"],
                occ.person,
                occ.record,
                occ.cadence,
                occ.step,
                row["channel"],
                contact.value,
                row["planned_at"],
                rendered,
                template,
                variant,
                reply_to=self.replies.address(row["reply_token"]),
                message_id=row["message_id"],
                recallable=row["planned_at"] > self.now,
            )
            pending.append(
                Pending(
                    touch_id,
                    message,
                    occ.person,
                    occ.record,
                    occ.cadence,
                    occ.step,
                    variant,
                    template,
                    contact.id,
                    [row["channel"]],
                    row["reason"] or "",
                    due=occ.due,
                    before=before,
                    after={
                        name: self.enrollments[occ.enrollment["id"]].get(name)
                        for name in REPLAN_FIELDS
                    },
                    token=row["reply_token"],
                    rating_token=row["rating_token"],
                )
            )
        return pending


def count_tasks(conn: Connection, owner: str | None, kind: str, start: datetime) -> int:
    """Stored tasks of ``owner`` and ``kind`` due in the day that begins at ``start``."""
    return conn.execute(
        select(func.count())
        .select_from(_tasks)
        .where(
            _tasks.c.owner_id.is_(None) if owner is None else _tasks.c.owner_id == owner,
            _tasks.c.kind == kind,
            _tasks.c.due_at >= start,
            _tasks.c.due_at < start + timedelta(days=1),
        )
    ).scalar_one()
