"""Benchmark: one ``outreach run`` tick with the dry-run channel, SQLite and PostgreSQL.

Run: ``python benchmarks/tick.py`` (both scenarios on both databases) or
``python benchmarks/tick.py --database sqlite --enrolled 1000000 --due 100000``.

Seeds a fresh store straight through the driver (people, records, email addresses,
enrollments in the default cadences; ``--due`` of them due now, the rest weeks away: SQLite
by ``executemany``, PostgreSQL by ``COPY`` into a throwaway database on
``OUTREACH_BENCH_POSTGRES_URL``), then times one tick in a child process and prints seconds,
µs and touches per second and the tick's peak RSS. Without ``--enrolled`` it runs 1,000,000
enrolled / 100,000 due and 100,000 / 100,000 and prints the ratio: the cost of a tick should
follow the due touches, not the enrolled people. It prints the machine (cores, load before
and after) and, from a separate smaller pass under cProfile (``--profile-due``, 20,000 due on
SQLite), the top five functions by own time.
Aims (issue 15): <= 5 s for 100,000 due on SQLite (3 s hoped for), ratio <= 1.2.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from profiling import print_top, profiled, top_functions  # benchmarks/ is on the path

NOW = datetime(2026, 11, 3, 14, 0, tzinfo=UTC)  # Tuesday 09:00 in New York
CHUNK = 50_000
POSTGRES_URL = os.environ.get(
    "OUTREACH_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
_TABLES = ("people", "candidate_records", "contact_points", "enrollments")
_COLUMNS = {
    "people": ("id", "global_opt_out", "created_at", "updated_at"),
    "candidate_records": (
        "id",
        "person_id",
        "source",
        "external_id",
        "first_name",
        "last_name",
        "email",
        "stage",
        "stage_entered_at",
        "timezone",
        "job_title",
        "recruiter_name",
        "owner_id",
        "tags",
        "custom",
        "created_at",
        "updated_at",
    ),
    "contact_points": (
        "id",
        "person_id",
        "kind",
        "value",
        "valid",
        "shared",
        "suppressed",
        "created_at",
        "updated_at",
    ),
    "enrollments": (
        "id",
        "person_id",
        "record_id",
        "cadence_id",
        "trigger_stage",
        "triggered_at",
        "status",
        "next_step",
        "next_occurrence",
        "step_due_at",
        "next_due_at",
        "last_touch_at",
        "created_at",
        "updated_at",
    ),
}


def _rows(table: str, ids: range, enrolled: int, due: int, postgres: bool) -> Iterator[tuple]:
    """The rows of ``table`` for people ``ids``: every value as the driver takes it."""

    def ts(value: datetime) -> str:
        text = value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
        return text + "+00" if postgres else text

    now, entered = ts(NOW), ts(NOW - timedelta(days=8))
    due_at, later = ts(NOW - timedelta(hours=1)), ts(NOW + timedelta(days=20))
    yes, no = (True, False) if postgres else (1, 0)
    # Due people are spread over the id range, so the due rows are not one block.
    stride = max(1, enrolled // max(due, 1))
    for i in ids:
        if table == "people":
            yield (i, no, now, now)
        elif table == "candidate_records":
            yield (
                *(i, i, "import", f"b{i}", "Ann", "Lee", f"p{i}@example.com", "applied"),
                *(entered, "America/New_York", "Data Engineer", "Jo Smith", "rec-1"),
                *("[]", "{}", now, now),
            )
        elif table == "contact_points":
            yield (i, i, "email", f"p{i}@example.com", yes, no, no, now, now)
        else:
            is_due = (i - 1) % stride == 0 and (i - 1) // stride < due
            when = due_at if is_due else later
            yield (
                *(i, i, i, "application-follow-up", "applied", entered, "active", 1, 0),
                *(when, when, entered, now, now),
            )


def seed(url: str, enrolled: int, due: int) -> None:
    """Create the schema with Alembic, then bulk-load the rows straight through the driver."""
    from outreach.store import make_engine, upgrade

    engine = make_engine(url)
    upgrade(engine)
    postgres = engine.dialect.name == "postgresql"
    if not postgres:
        engine.dispose()
        _seed_sqlite(Path(url.removeprefix("sqlite:///")), enrolled, due)
        return
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        for start in range(0, enrolled, CHUNK):
            ids = range(start + 1, min(start + CHUNK, enrolled) + 1)
            for table in _TABLES:
                columns = ", ".join(_COLUMNS[table])
                with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                    for row in _rows(table, ids, enrolled, due, postgres=True):
                        copy.write_row(row)
            raw.commit()
        for table in _TABLES:
            # ids were given explicitly: move the sequences past them
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT COALESCE(MAX(id), 1) FROM {table}))"
            )
        raw.commit()
        raw.driver_connection.autocommit = True
        cursor.execute("VACUUM ANALYZE")
    finally:
        raw.close()
        engine.dispose()


def _seed_sqlite(path: Path, enrolled: int, due: int) -> None:
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    for start in range(0, enrolled, CHUNK):
        ids = range(start + 1, min(start + CHUNK, enrolled) + 1)
        for table in _TABLES:
            columns = _COLUMNS[table]
            marks = ", ".join("?" for _ in columns)
            db.executemany(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                _rows(table, ids, enrolled, due, postgres=False),
            )
        db.commit()
    db.execute("ANALYZE")
    db.commit()
    db.close()


def _make_tick(url: str):
    from channels import DryRunChannel
    from outreach.cadence import load_cadence_file
    from outreach.clock import FixedClock
    from outreach.engine.tick import Tick, engine_transactions
    from outreach.paths import default_config_dir
    from outreach.store import make_engine

    engine = make_engine(url)
    config = load_cadence_file(default_config_dir() / "cadences.yaml")
    tick = Tick(
        config,
        FixedClock(NOW),
        {"email": DryRunChannel("email"), "sms": DryRunChannel("sms")},
        engine_transactions(engine),
        dialect=engine.dialect.name,
    )
    return engine, tick


def run_tick(url: str, profile: bool = False) -> dict[str, Any]:
    """Time one tick on the seeded store (in this process); profile it when asked."""
    engine, tick = _make_tick(url)
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    if profile:
        with profiled() as profiler:
            summary = tick.run()
        rows = top_functions(profiler)
    else:
        summary = tick.run()
    elapsed = time.perf_counter() - started
    engine.dispose()
    return {
        "seconds": elapsed,
        "sent": summary.total("sent"),
        "rss_mb": _peak_rss_mb(),
        "profile": rows,
    }


def _peak_rss_mb() -> float:
    """This process's peak RSS (``VmHWM``: a ``getrusage`` maximum survives ``exec``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def _database(database: str) -> Iterator[str]:
    """The URL of an empty database of the kind asked for, dropped afterwards."""
    if database == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            yield f"sqlite:///{Path(folder) / 'tick.db'}"
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"outreach_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def scenario(database: str, enrolled: int, due: int, profile: bool = False) -> dict[str, Any]:
    """Seed a store and time (or profile) a tick on it in a fresh child process."""
    with _database(database) as url:
        started = time.perf_counter()
        seed(url, enrolled, due)
        seeded = time.perf_counter() - started
        command = [sys.executable, __file__, "--tick-only", url]
        if profile:
            command.append("--profile-child")
        child = subprocess.run(command, capture_output=True, text=True)
        if child.returncode != 0:
            raise SystemExit(f"the tick failed:\n{child.stderr[-4000:]}")
        result = json.loads(child.stdout.strip().splitlines()[-1])
    result.update(database=database, enrolled=enrolled, due=due, seed_seconds=seeded)
    return result


def report(result: dict[str, Any]) -> None:
    """Print one scenario's figures."""
    per_touch = result["seconds"] / max(result["sent"], 1) * 1e6
    print(
        f"{result['database']:<10} enrolled {result['enrolled']:>9,}  due {result['due']:>7,}: "
        f"tick {result['seconds']:.2f} s ({per_touch:,.0f} µs/touch, "
        f"{result['sent'] / result['seconds']:,.0f} touches/s), sent {result['sent']:,}, "
        f"peak RSS {result['rss_mb']:.0f} MB  (seeding took {result['seed_seconds']:.0f} s)",
        flush=True,
    )


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def main() -> None:
    """Run the scenarios and print the figures, the machine and the profile."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--enrolled", type=int)
    parser.add_argument("--due", type=int)
    parser.add_argument(
        "--profile-due",
        type=int,
        default=20_000,
        help="due touches of the profiled pass (10x as many enrolled, SQLite); 0: none",
    )
    parser.add_argument("--tick-only", help=argparse.SUPPRESS)
    parser.add_argument("--profile-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tick_only:
        print(json.dumps(run_tick(args.tick_only, profile=args.profile_child)))
        return
    print(f"machine: {os.cpu_count()} cores, load average {_load()} (1, 5, 15 min)", flush=True)
    databases = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    for database in databases:
        if args.enrolled:
            report(scenario(database, args.enrolled, args.due or args.enrolled // 10))
            continue
        big = scenario(database, 1_000_000, 100_000)
        report(big)
        small = scenario(database, 100_000, 100_000)
        report(small)
        ratio = big["seconds"] / small["seconds"]
        print(
            f"{database:<10} ratio (1,000,000 enrolled / 100,000 enrolled, same due): {ratio:.2f}"
        )
    print(f"machine: load average after the timed runs {_load()}", flush=True)
    if args.profile_due:
        due = args.profile_due
        profiled_run = scenario("sqlite", due * 10, due, profile=True)
        print_top(profiled_run["profile"], f"SQLite tick, {due:,} due of {due * 10:,} enrolled")


if __name__ == "__main__":
    main()
