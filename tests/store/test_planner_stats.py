"""The upsert's lookups plan as index lookups once the tables are large (issue 15).

On PostgreSQL a table filled from empty has no planner statistics until autovacuum
analyses it; the planner then guessed that ``source = 'import'`` matches a couple of rows
and compared every stored record of the source with the batch's 500 external ids, on
every batch: an import that slowed down as it grew. These tests fill the tables (by SQL,
quickly), run a real upsert on them, and ask the database how it plans the lookups the
upsert just ran; no timing.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, event

from outreach.records import CandidateIn
from outreach.store.candidates import upsert_candidates
from outreach.store.planner_stats import needs_analyze, refresh_statistics

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
STORED = 20_000


def _seed(engine: Engine, count: int) -> None:
    """``count`` people, each with one record of source ``import`` and one email point."""
    at = "2026-11-20 09:00:00"
    with engine.begin() as conn:
        postgres = conn.dialect.name == "postgresql"
        mark = "%s" if postgres else "?"
        yes, no = (True, False) if postgres else (1, 0)
        if postgres:
            # An autovacuum pass in the middle of the test would hide what it looks for.
            for table in ("candidate_records", "contact_points", "people"):
                conn.exec_driver_sql(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        conn.exec_driver_sql(
            f"INSERT INTO people (id, global_opt_out, created_at, updated_at) "
            f"VALUES ({mark}, {mark}, {mark}, {mark})",
            [(i, no, at, at) for i in range(1, count + 1)],
        )
        conn.exec_driver_sql(
            "INSERT INTO candidate_records (person_id, source, external_id, first_name, "
            "email, stage, tags, custom, created_at, updated_at) "
            f"VALUES ({mark}, 'import', {mark}, 'Ann', {mark}, 'applied', '[]', '{{}}', "
            f"{mark}, {mark})",
            [(i, f"seed-{i}", f"seed.{i}@example.com", at, at) for i in range(1, count + 1)],
        )
        conn.exec_driver_sql(
            "INSERT INTO contact_points (person_id, kind, value, valid, shared, suppressed, "
            f"created_at, updated_at) VALUES ({mark}, 'email', {mark}, {mark}, {mark}, {mark}, "
            f"{mark}, {mark})",
            [(i, f"seed.{i}@example.com", yes, no, no, at, at) for i in range(1, count + 1)],
        )
        if postgres:
            conn.exec_driver_sql(
                "SELECT setval(pg_get_serial_sequence('people', 'id'), %s)", (count,)
            )


def _lookups(engine: Engine, batch: list[CandidateIn]) -> dict[str, tuple[str, Any]]:
    """Run the upsert of ``batch``; return the lookups it ran, by the table they read."""
    seen: dict[str, tuple[str, Any]] = {}

    def capture(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.startswith("SELECT external_id, person_id, stage"):
            seen["candidate_records"] = (statement, parameters)
        elif statement.startswith("SELECT value, person_id FROM contact_points"):
            seen["contact_points"] = (statement, parameters)

    event.listen(engine, "before_cursor_execute", capture)
    try:
        with engine.begin() as conn:
            stats = upsert_candidates(conn, batch, NOW)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    assert stats.updated == len(batch) and stats.new == 0
    return seen


def _plan_conditions(engine: Engine, statement: str, parameters: Any) -> tuple[str, str]:
    """(index conditions, filters) of the plan of ``statement``, each joined into one text."""
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
            details = " | ".join(row[-1] for row in rows)
            # SQLite names what an index search binds: "USING INDEX x (source=? AND ...)".
            return details if "USING INDEX" in details else "", details
        (plan,) = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", parameters).one()
    plan = plan if isinstance(plan, list) else json.loads(plan)
    index, filters = [], []

    def walk(node: dict[str, Any]) -> None:
        index.append(node.get("Index Cond", ""))
        filters.append(node.get("Filter", ""))
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    return " | ".join(index), " | ".join(filters)


def test_lookups_use_the_unique_indexes_once_the_tables_are_large(engine: Engine) -> None:
    _seed(engine, STORED)
    batch = [
        CandidateIn(
            source="import",
            external_id=f"seed-{i}",
            first_name="Ann",
            email=f"seed.{i}@example.com",
            stage="screening",
        )
        for i in range(1, STORED, STORED // 50)
    ]
    seen = _lookups(engine, batch)
    assert set(seen) == {"candidate_records", "contact_points"}

    index, filters = _plan_conditions(engine, *seen["candidate_records"])
    # Each external id is an index descent; never a filter over every record of the source.
    assert "external_id" in index, (index, filters)
    if engine.dialect.name == "postgresql":
        assert "external_id" not in filters, (index, filters)
    index, filters = _plan_conditions(engine, *seen["contact_points"])
    assert "value" in index, (index, filters)
    if engine.dialect.name == "postgresql":
        assert "value" not in filters, (index, filters)


def test_refresh_statistics_analyses_a_grown_table_once(engine: Engine) -> None:
    _seed(engine, 2_000)
    with engine.begin() as conn:
        first = refresh_statistics(conn, ("candidate_records", "contact_points", "people"))
        again = refresh_statistics(conn, ("candidate_records", "contact_points", "people"))
    if engine.dialect.name != "postgresql":
        assert first == again == []
        return
    assert first == ["candidate_records", "contact_points", "people"]
    assert again == []  # nothing grew since
    with engine.connect() as conn:
        tuples = dict(
            conn.exec_driver_sql(
                "SELECT relname, reltuples FROM pg_class WHERE relname = ANY(%s)",
                (["candidate_records", "contact_points"],),
            ).all()
        )
    assert tuples == {"candidate_records": 2_000, "contact_points": 2_000}


@pytest.mark.parametrize(
    ("reltuples", "relpages", "pages", "expected"),
    [
        (-1, 0, 7, False),  # never analysed, but tiny: any plan is fast
        (-1, 0, 8, True),  # never analysed and no longer tiny
        (0, 0, 50, True),  # analysed while empty
        (2_000, 60, 119, False),  # grew, but less than twice
        (2_000, 60, 120, True),  # doubled
        (2_000, 60, 30, False),  # shrank
    ],
)
def test_needs_analyze(reltuples: float, relpages: int, pages: int, expected: bool) -> None:
    assert needs_analyze(reltuples, relpages, pages) is expected


@pytest.mark.parametrize("factor", [1.0, 0.5, -2])
def test_needs_analyze_refuses_a_factor_that_never_stops(factor: float) -> None:
    with pytest.raises(ValueError, match="above 1"):
        needs_analyze(-1, 0, 100, factor=factor)
