"""Incremental, resumable sync of one CRM into the store.

Each page from :meth:`connectors.base.Connector.pages` is normalised and written in one
transaction *together with the cursor that follows it*, so a crash (or a kill) resumes at
the first page not committed and nothing is lost or counted twice (DESIGN.md invariant 6).
A malformed record is reported with its source id and reason; its page goes on. Stage
changes are written as events that the next ``outreach run`` enrolls on.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, select

from connectors.base import Connector, Page
from outreach.cadence import CadenceConfig
from outreach.clock import Clock
from outreach.errors import RecordError
from outreach.records import CandidateIn, normalize_record
from outreach.store.bulk import bulk_write
from outreach.store.candidates import upsert_candidates
from outreach.store.schema import SyncState

__all__ = ["SyncReport", "prefetch", "sync_source"]

_state = SyncState.__table__


@dataclass
class SyncReport:
    """What one source's sync did."""

    source: str
    fetched: int = 0
    new: int = 0
    updated: int = 0
    merged: int = 0
    stage_changes: int = 0
    pages: int = 0
    bad: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unmapped_stages: set[str] = field(default_factory=set)
    complete: bool = False


def sync_source(
    connector: Connector,
    engine: Engine,
    config: CadenceConfig,
    clock: Clock,
    *,
    full: bool = False,
    progress: Callable[[SyncReport], None] | None = None,
) -> SyncReport:
    """Sync ``connector`` from its committed cursor (from scratch with ``full``)."""
    report = SyncReport(source=connector.name)
    with engine.connect() as conn:
        row = conn.execute(select(_state).where(_state.c.source == connector.name)).first()
    # A --full run that was interrupted resumes as a full run from its own cursor.
    cursor = (row.full_cursor if full else row.cursor) if row else None
    column = "full_cursor" if full else "cursor"
    for page in prefetch(connector.pages(cursor, full=full)):
        records: list[CandidateIn] = []
        for source_id, reason in page.problems:
            report.bad.append(f"{connector.name} {source_id}: {reason}")
        for raw in page.records:
            report.fetched += 1
            try:
                record = normalize_record(
                    raw,
                    where=f"{connector.name} record",
                    default_region=config.policy.default_region,
                    canonical_stage=config.canonical_stage,
                    default_source=connector.name,
                    strict_contacts=False,
                )
            except RecordError as exc:
                report.bad.append(str(exc))
                continue
            report.warnings.extend(
                f"{record.source} {record.external_id}: {w}" for w in record.warnings
            )
            if record.source_stage and record.stage is None:
                report.unmapped_stages.add(record.source_stage)
            records.append(record)
        now = clock.now()
        with engine.begin() as conn:
            stats = upsert_candidates(conn, records, now)
            state = {"source": connector.name, column: page.cursor, "updated_at": now}
            if page.done:
                state["last_completed_at"] = now
                if full:
                    # A completed full read is also the new incremental starting point.
                    state["cursor"] = page.cursor
                    state["full_cursor"] = None
            bulk_write(
                conn,
                _state,
                [state],
                conflict=("source",),
                update={name: f"excluded.{name}" for name in state if name != "source"},
            )
        report.pages += 1
        report.new += stats.new
        report.updated += stats.updated
        report.merged += stats.merged
        report.stage_changes += stats.stage_changes
        report.complete = page.done
        if progress is not None:
            progress(report)
    return report


_DONE = object()


def prefetch(pages: Iterator[Page], depth: int = 1) -> Iterator[Page]:
    """Fetch up to ``depth`` pages ahead in a thread while the caller writes the last one.

    Order is kept, and a page is only ever committed by the caller, so a crash loses at
    most the prefetched pages, which the committed cursor fetches again. An error in the
    fetching thread is raised here, in order, after the pages before it.
    """
    buffer: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for page in pages:
                while not stop.is_set():
                    try:
                        buffer.put(page, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            buffer.put(exc)

    worker = threading.Thread(target=produce, name="sync-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():
            try:
                buffer.get_nowait()
            except queue.Empty:
                worker.join(timeout=0.1)
        close = getattr(pages, "close", None)
        if close is not None:
            close()
