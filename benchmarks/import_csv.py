"""Benchmark: ``outreach import`` of a large CSV into SQLite, and into PostgreSQL beside it.

Run: ``python benchmarks/import_csv.py [--rows 100000] [--profile-rows 20000]
[--postgres-url URL | --no-postgres]``

Prints the machine (cores, load), then for each database the rows/s of the import by the
wall clock and by the importing process's own CPU time (user + system: what the import
costs whatever else the machine is doing), and the peak resident memory of the import on
SQLite (it streams: memory stays flat whatever the file size). The file is generated
first (realistic rows: unique emails and US phone numbers, mixed stages, custom fields)
and is not part of the timing. PostgreSQL runs in a throwaway database created on the
server at ``--postgres-url`` and dropped afterwards; an unreachable server is skipped with
a note. Last, a top-5 profile of a separate, smaller pass (``--profile-rows``) on SQLite.
Aim: >= 20,000 rows/s on SQLite.
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import os
import random
import resource
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from profiling import print_top, top_functions
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from outreach.cadence import load_cadence_file
from outreach.clock import SystemClock
from outreach.importer import import_file
from outreach.paths import default_config_dir
from outreach.store import make_engine, upgrade

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@contextmanager
def cpu_profiled() -> Iterator[cProfile.Profile]:
    """Profile the ``with`` block by CPU time, not wall time: on a shared machine a wall
    clock profile charges whatever function was running when the process was descheduled
    (and time spent waiting for a server) as if it had worked all that time."""
    profile = cProfile.Profile(time.process_time)
    profile.enable()
    try:
        yield profile
    finally:
        profile.disable()


STAGES = ["prospect", "applied", "screening", "interview", "offer", "hired", "rejected"]
AREA_CODES = ["212", "415", "312", "206", "617", "303", "512", "646", "718", "213"]
FIRST = ["Ann", "Ben", "Cara", "Dev", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jia"]
LAST = ["Lee", "Okafor", "Schmidt", "Garcia", "Nguyen", "Rossi", "Khan", "Silva"]
HEADER = [
    "source",
    "external_id",
    "first_name",
    "last_name",
    "email",
    "phone",
    "linkedin_url",
    "timezone",
    "stage",
    "stage_entered_at",
    "job_title",
    "recruiter_name",
    "recruiter_email",
    "owner_id",
    "sms_consent",
    "preferred_channel",
    "highlight",
]


def generate(path: Path, rows: int, seed: int = 7) -> None:
    """Write ``rows`` realistic candidate rows to ``path``."""
    rng = random.Random(seed)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for i in range(rows):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            area = AREA_CODES[i % len(AREA_CODES)]
            phone = f"({area}) {200 + (i // 10000) % 700:03d}-{i % 10000:04d}" if i % 3 else ""
            writer.writerow(
                [
                    "import",
                    f"bench-{i}",
                    first,
                    last,
                    f"{first}.{last}.{i}@example.com".lower(),
                    phone,
                    f"https://www.linkedin.com/in/{first}-{last}-{i}".lower() if i % 5 == 0 else "",
                    "America/New_York" if i % 2 else "",
                    rng.choice(STAGES),
                    "2026-11-20T09:00:00-05:00",
                    "Software Engineer",
                    "Jo Smith",
                    "jo.smith@example.com",
                    f"rec-{i % 40}",
                    "true" if i % 4 == 0 else "",
                    "",
                    "the payments migration" if i % 7 == 0 else "",
                ]
            )


def machine() -> str:
    """The machine the figures come from: cores and load."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"machine: {os.cpu_count()} cores, load average {load}"


@contextmanager
def postgres_database(server_url: str) -> Iterator[str]:
    """The URL of a throwaway PostgreSQL database, dropped after the ``with`` block."""
    name = f"outreach_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def run(data: Path, url: str, *, profile: bool = False) -> dict[str, Any]:
    """Import ``data`` into the empty database at ``url``; return the figures."""
    engine = make_engine(url)
    upgrade(engine)
    config = load_cadence_file(default_config_dir() / "cadences.yaml")
    top: list[dict[str, Any]] = []
    try:
        if profile:
            with cpu_profiled() as profiler:
                report = import_file(data, engine, config, SystemClock())
            top = top_functions(profiler)
            cpu = elapsed = 0.0
        else:
            cpu_started = time.process_time()
            started = time.perf_counter()
            report = import_file(data, engine, config, SystemClock())
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu_started
    finally:
        engine.dispose()
    if report.errors:
        print(
            f"unexpected bad rows: {len(report.errors)}; first: {report.errors[0]}",
            file=sys.stderr,
        )
        raise SystemExit(1)
    return {"rows": report.loaded, "seconds": elapsed, "cpu": cpu, "top": top}


def _line(name: str, figures: dict[str, Any]) -> str:
    rows, seconds, cpu = figures["rows"], figures["seconds"], figures["cpu"]
    return (
        f"import, {name}: {rows:,} rows in {seconds:.2f} s = {rows / seconds:,.0f} rows/s "
        f"(process CPU {cpu:.2f} s = {rows / cpu:,.0f} rows per CPU second, "
        f"{cpu / rows * 1e6:.0f} us a row)"
    )


def main() -> None:
    """Generate, import, print figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--profile-rows", type=int, default=20_000, help="0: no profile")
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--postgres-url", default=POSTGRES_URL, help="server for a throwaway DB")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()

    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = folder / "candidates.csv"
        generate(data, args.rows)
        url = args.database_url or f"sqlite:///{folder / 'bench.db'}"
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        figures = run(data, url)
        rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(_line(make_url(url).get_backend_name(), figures))
        print(f"peak RSS: {rss_peak / 1024:.0f} MB (before import: {rss_before / 1024:.0f} MB)")
        if not args.no_postgres and args.database_url is None:
            try:
                with postgres_database(args.postgres_url) as pg_url:
                    print(_line("postgresql", run(data, pg_url)))
            except OperationalError as exc:
                print(f"import, postgresql: skipped, server unreachable ({exc.orig})")
        if args.profile_rows:
            small = folder / "profile.csv"
            generate(small, args.profile_rows)
            profile = run(small, f"sqlite:///{folder / 'profile.db'}", profile=True)
            print_top(profile["top"], f"import of {args.profile_rows:,} rows into SQLite, CPU time")
    print(machine())


if __name__ == "__main__":
    main()
