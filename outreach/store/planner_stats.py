"""Planner statistics for tables that grow from empty inside one import or sync.

PostgreSQL plans a query from the statistics ``ANALYZE`` leaves in ``pg_class`` and
``pg_statistic``. A table that an import fills from empty has none until autovacuum gets
round to it (after 50 rows plus 10% of the table changed, and only once it wakes up and
the importing transactions have committed), so during the import the planner guesses.
Its guess for ``source = 'import'`` on a never-analysed table is a couple of rows, so the
lookup ``WHERE source = ? AND external_id IN (500 values)`` scans every row of the source
through the index on ``source`` and compares each with all 500 values: work that grows
with the table on every batch, an import that slows down as it grows (1,148 rows/s at
10,000 rows, 530 at 60,000). With statistics the same statement descends the unique index
``(source, external_id)`` once per value.

:func:`refresh_statistics` analyses a table when it has grown by a factor since its last
``ANALYZE`` (or was never analysed and is no longer tiny), judged by its size on disk
against ``pg_class.relpages``: one cheap catalogue query per batch, a handful of
``ANALYZE`` runs over a whole import (at 2x, 4x, 8x ... the first size), and nothing
on SQLite, whose planner reads the unique index without statistics.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import Connection

__all__ = ["GROWTH_FACTOR", "MIN_PAGES", "needs_analyze", "refresh_statistics"]

log = logging.getLogger(__name__)

#: analyse again once a table has this many times the pages of its last ``ANALYZE``
GROWTH_FACTOR = 2.0
#: below this many 8 kB pages (~300 candidate records) any plan is fast: leave it be
MIN_PAGES = 8


def needs_analyze(
    reltuples: float,
    relpages: int,
    pages: int,
    *,
    factor: float = GROWTH_FACTOR,
    min_pages: int = MIN_PAGES,
) -> bool:
    """Whether a table of ``pages`` pages now, whose last ``ANALYZE`` saw ``relpages``
    pages (``reltuples`` < 0: never analysed, PostgreSQL 14+), needs a fresh one.

    >>> needs_analyze(-1, 0, 40), needs_analyze(2000, 60, 100), needs_analyze(2000, 60, 120)
    (True, False, True)
    """
    if factor <= 1:
        raise ValueError(f"growth factor must be above 1, not {factor}")
    if pages < min_pages:
        return False
    if reltuples < 0 or relpages <= 0:
        return True
    return pages >= factor * relpages


def refresh_statistics(
    conn: Connection,
    tables: Sequence[str],
    *,
    factor: float = GROWTH_FACTOR,
    min_pages: int = MIN_PAGES,
) -> list[str]:
    """``ANALYZE`` those of ``tables`` that grew by ``factor`` since their last one; return
    their names. In the caller's transaction (so the statements after it plan with the
    new figures); a no-op on other databases than PostgreSQL.

    ``SKIP_LOCKED``: a table another transaction is analysing (a second worker, autovacuum)
    is skipped rather than waited for; that other run refreshes it anyway.
    """
    if conn.dialect.name != "postgresql" or not tables:
        return []
    rows = conn.exec_driver_sql(
        "SELECT c.relname, c.reltuples, c.relpages, "
        "pg_relation_size(c.oid) / current_setting('block_size')::int "
        "FROM pg_class c WHERE c.oid = ANY(CAST(%s AS regclass[]))",
        (list(tables),),
    ).all()
    stale = [
        name
        for name, reltuples, relpages, pages in rows
        if needs_analyze(reltuples, relpages, pages, factor=factor, min_pages=min_pages)
    ]
    for name in sorted(stale):
        # Names come from pg_class for the tables the caller named, never from input.
        conn.exec_driver_sql(f'ANALYZE (SKIP_LOCKED) "{name}"')
        log.info("analysed %s: it grew by %sx since its last statistics", name, factor)
    return sorted(stale)
