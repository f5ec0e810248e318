"""Recruiter tasks: list the open ones, see which the CRM says are done, flag stale ones.

A LinkedIn, call or manual step becomes a row in ``tasks`` (and, through write-back, a
task in the CRM when it has a task API: HubSpot). :func:`refresh_task_status` asks the
source's connector about the open tasks it created, in batches, and marks those the
recruiter completed there as done: the touch counts as done. Greenhouse and Lever have no
task API, so their tasks live in the engine's queue and are completed with
:func:`complete_tasks` (``outreach tasks --done ID``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select, update

from connectors.base import Connector
from outreach.store.schema import CandidateRecord, Task

__all__ = ["OpenTask", "complete_tasks", "open_tasks", "refresh_task_status"]

_tasks = Task.__table__
_records = CandidateRecord.__table__
BATCH = 100


@dataclass(frozen=True)
class OpenTask:
    """One open task as ``outreach tasks`` shows it (no contact details beyond the name)."""

    id: int
    person_id: int
    candidate: str
    source: str | None
    owner_id: str | None
    kind: str
    title: str
    due_at: datetime
    created_at: datetime
    crm_task_id: str | None
    age_days: float
    stale: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "id": self.id,
            "person_id": self.person_id,
            "candidate": self.candidate,
            "source": self.source,
            "owner_id": self.owner_id,
            "kind": self.kind,
            "title": self.title,
            "due_at": self.due_at.isoformat(),
            "created_at": self.created_at.isoformat(),
            "crm_task_id": self.crm_task_id,
            "age_days": round(self.age_days, 1),
            "stale": self.stale,
        }


def open_tasks(
    engine: Engine, *, now: datetime, owner: str | None = None, stale_after: timedelta
) -> list[OpenTask]:
    """Open tasks, oldest due first; ``stale`` when open longer than ``stale_after``."""
    query = (
        select(
            _tasks,
            _records.c.first_name,
            _records.c.last_name,
        )
        .outerjoin(_records, _records.c.id == _tasks.c.record_id)
        .where(_tasks.c.status == "open")
        .order_by(_tasks.c.due_at, _tasks.c.id)
    )
    if owner is not None:
        query = query.where(_tasks.c.owner_id == owner)
    out = []
    with engine.connect() as conn:
        for row in conn.execute(query):
            name = " ".join(p for p in (row.first_name, row.last_name) if p) or (
                f"person {row.person_id}"
            )
            age = now - max(row.created_at, min(row.due_at, now))
            out.append(
                OpenTask(
                    id=row.id,
                    person_id=row.person_id,
                    candidate=name,
                    source=row.source,
                    owner_id=row.owner_id,
                    kind=row.kind,
                    title=row.title,
                    due_at=row.due_at,
                    created_at=row.created_at,
                    crm_task_id=row.external_id,
                    age_days=age.total_seconds() / 86400,
                    stale=age > stale_after,
                )
            )
    return out


def refresh_task_status(engine: Engine, connector: Connector, now: datetime) -> int:
    """Mark open tasks the CRM reports done; return how many were completed."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(_tasks.c.id, _tasks.c.external_id).where(
                _tasks.c.status == "open",
                _tasks.c.source == connector.name,
                _tasks.c.external_id.is_not(None),
            )
        ).all()
    by_ref = {row.external_id: row.id for row in rows}
    refs = list(by_ref)
    completed = 0
    for start in range(0, len(refs), BATCH):
        statuses = connector.task_status(refs[start : start + BATCH])
        done = [
            by_ref[ref] for ref, status in statuses.items() if status == "done" and ref in by_ref
        ]
        if done:
            completed += _complete(engine, done, now)
    return completed


def complete_tasks(engine: Engine, ids: Iterable[int], now: datetime) -> int:
    """Mark tasks done by engine id (tasks without a CRM task); return how many changed."""
    return _complete(engine, list(ids), now)


def _complete(engine: Engine, ids: list[int], now: datetime) -> int:
    with engine.begin() as conn:
        result = conn.execute(
            update(_tasks)
            .where(_tasks.c.id.in_(ids), _tasks.c.status == "open")
            .values(status="done", completed_at=now)
        )
    return result.rowcount or 0
