"""Write-back: the notes and tasks the engine owes each CRM, sent after the fact.

The tick queues a note for every touch it hands to a channel and a task for every
LinkedIn, call or manual step, for records that came from a CRM. :func:`process_write_backs`
sends them through the source's connector, paced by its limits; each CRM has its own
limits, so the CRMs are written to side by side (one thread each). A failure never blocks
sending: the row is retried later with backoff; a permanent refusal is recorded as failed
with the reason; a credential problem leaves the source's rows waiting.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select, update

from connectors.base import Connector, NoteRef, TaskSpec
from outreach.clock import Clock
from outreach.errors import ConfigError, PermanentError, ProviderError
from outreach.store.schema import Task, WriteBack

__all__ = ["CRM_SOURCES", "WriteBackReport", "process_write_backs"]

#: sources whose records get notes and tasks written back
CRM_SOURCES = frozenset({"greenhouse", "lever", "hubspot"})
MAX_ATTEMPTS = 8
_rows = WriteBack.__table__
_tasks = Task.__table__


@dataclass
class WriteBackReport:
    """What one pass of write-back did."""

    done: Counter[str] = field(default_factory=Counter)
    retrying: Counter[str] = field(default_factory=Counter)
    failed: list[str] = field(default_factory=list)
    blocked: dict[str, str] = field(default_factory=dict)


def process_write_backs(
    engine: Engine, connectors: Mapping[str, Connector], clock: Clock, *, limit: int = 1000
) -> WriteBackReport:
    """Send pending write-backs that are due, for the sources with a connector."""
    report = WriteBackReport()
    now = clock.now()
    if not connectors:
        return report
    with engine.connect() as conn:
        rows = conn.execute(
            select(_rows, _tasks.c.owner_id, _tasks.c.title, _tasks.c.body, _tasks.c.due_at)
            .outerjoin(_tasks, _tasks.c.id == _rows.c.task_id)
            .where(
                _rows.c.status == "pending",
                _rows.c.next_attempt_at <= now,
                _rows.c.source.in_(list(connectors)),
            )
            .order_by(_rows.c.id)
            .limit(limit)
        ).all()
    by_source: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        by_source[row.source].append(row)
    with ThreadPoolExecutor(max_workers=max(1, len(by_source))) as pool:
        parts = [
            pool.submit(_write_source, engine, connectors[source], items, now)
            for source, items in by_source.items()
        ]
        for part in parts:
            done = part.result()
            report.done.update(done.done)
            report.retrying.update(done.retrying)
            report.failed.extend(done.failed)
            report.blocked.update(done.blocked)
    return report


def _write_source(
    engine: Engine, connector: Connector, rows: Sequence[Any], now: datetime
) -> WriteBackReport:
    """One CRM's due rows, in order, through its own connector (one thread per CRM)."""
    report = WriteBackReport()
    for row in rows:
        if row.source in report.blocked:
            break
        values: dict[str, object] = {"attempts": row.attempts + 1, "updated_at": now}
        try:
            if row.kind == "task":
                ref = connector.create_task(
                    TaskSpec(row.external_id, row.owner_id, row.title, row.body, row.due_at)
                )
            else:
                ref = connector.write_note(NoteRef(row.external_id), row.text)
        except ConfigError as exc:
            report.blocked[row.source] = str(exc)
            continue
        except PermanentError as exc:
            values.update(status="failed", last_error=str(exc))
            report.failed.append(f"{row.source} {row.external_id}: {exc}")
        except ProviderError as exc:
            if row.attempts + 1 >= MAX_ATTEMPTS:
                values.update(status="failed", last_error=f"gave up: {exc}")
                report.failed.append(f"{row.source} {row.external_id}: gave up: {exc}")
            else:
                wait = timedelta(minutes=min(360, 2**row.attempts))
                values.update(last_error=str(exc), next_attempt_at=now + wait)
                report.retrying[row.source] += 1
        else:
            values.update(status="done", external_ref=ref, last_error=None)
            report.done[row.source] += 1
        with engine.begin() as conn:
            conn.execute(update(_rows).where(_rows.c.id == row.id).values(**values))
            if values.get("status") == "done" and row.task_id is not None and ref is not None:
                conn.execute(
                    update(_tasks).where(_tasks.c.id == row.task_id).values(external_id=ref)
                )
    return report
