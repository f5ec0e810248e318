"""Write-back: the notes and tasks the engine owes each CRM, sent after the fact.

The tick queues a note for every touch it hands to a channel and a task for every
LinkedIn, call or manual step, for records that came from a CRM. :func:`process_write_backs`
claims the due rows (so two runs at once never write one twice), then sends them through
the source's connector, paced by its limits; each CRM has its own limits, so the CRMs are
written to side by side (one thread each). A failure never blocks sending: the row is
retried later with backoff; a permanent refusal is recorded as failed with the reason; a
credential problem, a used-up quota or a long Retry-After leaves the source's rows waiting
for the next run without counting an attempt.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, select, update
from sqlalchemy.pool import SingletonThreadPool, StaticPool

from connectors.base import Connector, NoteRef, TaskSpec
from outreach.clock import Clock
from outreach.errors import ConfigError, PermanentError, ProviderError, RetryableError
from outreach.store.schema import Task, WriteBack

__all__ = ["CRM_SOURCES", "WriteBackReport", "process_write_backs"]

log = logging.getLogger(__name__)

#: sources whose records get notes and tasks written back
CRM_SOURCES = frozenset({"greenhouse", "lever", "hubspot", "bullhorn", "activecampaign"})
MAX_ATTEMPTS = 8
#: how long a claimed row belongs to the run that claimed it (a crashed run's rows are
#: taken up again after this; a note may then be written twice, never lost)
LEASE = timedelta(minutes=15)
#: a provider asking to wait longer than this is left for the next run (not an attempt)
LONG_WAIT = 120.0
_rows = WriteBack.__table__
_tasks = Task.__table__


@dataclass
class WriteBackReport:
    """What one pass of write-back did."""

    done: Counter[str] = field(default_factory=Counter)
    retrying: Counter[str] = field(default_factory=Counter)
    failed: list[str] = field(default_factory=list)
    blocked: dict[str, str] = field(default_factory=dict)

    def merge(self, other: WriteBackReport) -> None:
        """Add ``other``'s counts to this report."""
        self.done.update(other.done)
        self.retrying.update(other.retrying)
        self.failed.extend(other.failed)
        self.blocked.update(other.blocked)


def process_write_backs(
    engine: Engine, connectors: Mapping[str, Connector], clock: Clock, *, limit: int = 1000
) -> WriteBackReport:
    """Send pending write-backs that are due, for the sources with a connector."""
    report = WriteBackReport()
    now = clock.now()
    if not connectors:
        return report
    rows = _claim(engine, list(connectors), now, limit)
    by_source: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        by_source[row.source].append(row)
    if len(by_source) <= 1 or isinstance(engine.pool, SingletonThreadPool | StaticPool):
        # One CRM, or an in-memory SQLite database that exists only in this thread.
        for source, items in by_source.items():
            report.merge(_write_source(engine, connectors[source], items, now))
        return report
    with ThreadPoolExecutor(max_workers=len(by_source)) as pool:
        parts = [
            pool.submit(_write_source, engine, connectors[source], items, now)
            for source, items in by_source.items()
        ]
        for part in parts:
            report.merge(part.result())
    return report


def _claim(engine: Engine, sources: list[str], now: datetime, limit: int) -> list[Any]:
    """Take the due rows for this run: pending ones, and claims of a run that died."""
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn.info["sqlite_begin"] = "BEGIN IMMEDIATE"  # read and claim under one lock
        with conn.begin():
            query = (
                select(_rows, _tasks.c.owner_id, _tasks.c.title, _tasks.c.body, _tasks.c.due_at)
                .outerjoin(_tasks, _tasks.c.id == _rows.c.task_id)
                .where(
                    _rows.c.status.in_(("pending", "sending")),
                    _rows.c.next_attempt_at <= now,
                    _rows.c.source.in_(sources),
                )
                .order_by(_rows.c.id)
                .limit(limit)
            )
            if conn.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True, of=_rows)
            rows = conn.execute(query).all()
            ids = [row.id for row in rows]
            for start in range(0, len(ids), 500):
                conn.execute(
                    update(_rows)
                    .where(_rows.c.id.in_(ids[start : start + 500]))
                    .values(status="sending", next_attempt_at=now + LEASE, updated_at=now)
                )
    return rows


def _write_source(
    engine: Engine, connector: Connector, rows: Sequence[Any], now: datetime
) -> WriteBackReport:
    """One CRM's claimed rows, in order, through its own connector (one thread per CRM)."""
    report = WriteBackReport()
    for index, row in enumerate(rows):
        values: dict[str, object] = {"attempts": row.attempts + 1, "updated_at": now}
        ref = None
        try:
            if row.kind == "task":
                ref = connector.create_task(
                    TaskSpec(row.external_id, row.owner_id, row.title, row.body, row.due_at)
                )
            else:
                ref = connector.write_note(NoteRef(row.external_id), row.text)
        except ConfigError as exc:
            report.blocked[row.source] = str(exc)
        except RetryableError as exc:
            if exc.retry_after is not None and exc.retry_after > LONG_WAIT:
                report.blocked[row.source] = str(exc)
            else:
                _retry_later(values, row, str(exc), now, report)
        except PermanentError as exc:
            values.update(status="failed", last_error=str(exc))
            report.failed.append(f"{row.source} {row.external_id}: {exc}")
        except ProviderError as exc:
            _retry_later(values, row, str(exc), now, report)
        except Exception as exc:  # an untranslated transport error must not end the pass
            log.warning("write-back to %s: unexpected %s", row.source, type(exc).__name__)
            _retry_later(values, row, f"unexpected {type(exc).__name__}", now, report)
        else:
            values.update(status="done", external_ref=ref, last_error=None)
            report.done[row.source] += 1
        with engine.begin() as conn:
            if row.source in report.blocked:
                # Nothing was written and nothing is wrong with the rows: they wait, as they
                # were, for the next run.
                _release(conn, [r.id for r in rows[index:]], now)
                break
            conn.execute(update(_rows).where(_rows.c.id == row.id).values(**values))
            if values.get("status") == "done" and row.task_id is not None and ref is not None:
                conn.execute(
                    update(_tasks).where(_tasks.c.id == row.task_id).values(external_id=ref)
                )
    return report


def _retry_later(
    values: dict[str, object], row: Any, error: str, now: datetime, report: WriteBackReport
) -> None:
    if row.attempts + 1 >= MAX_ATTEMPTS:
        values.update(status="failed", last_error=f"gave up: {error}")
        report.failed.append(f"{row.source} {row.external_id}: gave up: {error}")
    else:
        wait = timedelta(minutes=min(360, 2**row.attempts))
        values.update(status="pending", last_error=error, next_attempt_at=now + wait)
        report.retrying[row.source] += 1


def _release(conn: Connection, ids: list[int], now: datetime) -> None:
    for start in range(0, len(ids), 500):
        conn.execute(
            update(_rows)
            .where(_rows.c.id.in_(ids[start : start + 500]), _rows.c.status == "sending")
            .values(status="pending", next_attempt_at=now, updated_at=now)
        )
