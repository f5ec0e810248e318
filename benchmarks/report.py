"""Benchmark: ``outreach report`` over a ledger of 1,000,000 touches.

Run: ``python benchmarks/report.py`` (100,000 then 1,000,000 touches, SQLite) or
``python benchmarks/report.py --touches 1000000 --database postgresql``.

Seeds a fresh store with :func:`outreach.store.bulk.bulk_write` (one person per five
touches, the default cadences, ~3 events per touch: deliveries, opens (a fifth of them
machine opens), clicks, replies, auto-replies, bounces, opt-outs, stage changes), runs
``ANALYZE``, then times the report end to end (``build_report`` plus the JSON rendering,
not the load) in a fresh child process, without ``--by`` (the default report) and then
with ``--by cadence,step,variant``, and prints seconds and the child's peak RSS.
Aims: <= 5 s on SQLite, <= 3 s on PostgreSQL at 1,000,000 touches, and a peak RSS that
does not grow with the ledger (every aggregate runs in the database).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SINCE = NOW - timedelta(days=30)
CHUNK = 20_000
TOUCHES_PER_PERSON = 5
POSTGRES_URL = os.environ.get(
    "OUTREACH_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
ZONES = ["America/New_York", "America/Chicago", "America/Los_Angeles", "Europe/Berlin", None]
TAGS = [[], ["python"], ["python", "remote"], ["sales"], ["remote"]]
STAGES = ["prospect", "applied", "screening", "interview", "offer", "hired"]
# person's cadence -> its trigger stage
CADENCES = {
    "application-follow-up": "applied",
    "interview-follow-up": "interview",
    "passive-nurture": "prospect",
}


def _steps() -> dict[str, list[tuple[str, int]]]:
    """Each benchmark cadence's steps and how many arms they have (from the shipped file)."""
    from outreach.cadence import load_cadence_file
    from outreach.paths import default_config_dir

    config = load_cadence_file(default_config_dir() / "cadences.yaml", check_templates=False)
    return {
        cadence: [(s.id, 1 + len(s.variants)) for s in config.cadence(cadence).steps]
        for cadence in CADENCES
    }


def _event(
    rows: list[dict],
    ids: Iterator[int],
    type_: str,
    person: int,
    at: datetime,
    touch: int | None,
    payload: dict | None = None,
) -> None:
    id_ = next(ids)
    rows.append(
        {
            "id": id_,
            "type": type_,
            "person_id": person,
            "touch_id": touch,
            "at": at,
            "dedupe_key": f"b{id_}",
            "payload": payload or {},
            "processed_at": at,
            "created_at": at,
        }
    )


def seed(url: str, touches: int, span_days: int = 30) -> None:
    """Migrate an empty database at ``url`` and load the ledger: people's first touches
    spread over the ``span_days`` before ``NOW`` (30: the whole ledger is in the default
    report window, the worst case)."""
    from sqlalchemy import text

    from outreach.store import make_engine, upgrade
    from outreach.store.bulk import bulk_write
    from outreach.store.schema import CandidateRecord, Enrollment, Event, Person, Touch

    engine = make_engine(url)
    upgrade(engine)
    rng = random.Random(14)
    steps = _steps()
    people = max(1, touches // TOUCHES_PER_PERSON)
    ledger_start = NOW - timedelta(days=span_days)
    span = (NOW - ledger_start).total_seconds()
    touch_id = 0
    event_ids = itertools.count(1)
    for start in range(0, people, CHUNK):
        ids = range(start + 1, min(start + CHUNK, people) + 1)
        rows: dict[str, list[dict]] = {"people": [], "records": [], "enrollments": []}
        touch_rows: list[dict] = []
        event_rows: list[dict] = []
        event = functools.partial(_event, event_rows, event_ids)

        for person in ids:
            cadence = list(CADENCES)[person % len(CADENCES)]
            stage = CADENCES[cadence]
            zone = ZONES[person % len(ZONES)]
            rows["people"].append(
                {
                    "id": person,
                    "global_opt_out": False,
                    "created_at": ledger_start,
                    "updated_at": ledger_start,
                }
            )
            rows["records"].append(
                {
                    "id": person,
                    "person_id": person,
                    "source": ("greenhouse", "lever", "hubspot")[person % 3],
                    "external_id": f"b{person}",
                    "phone": None if zone else f"+1212555{person % 10000:04d}",
                    "stage": stage,
                    "timezone": zone,
                    "job_title": f"Job {person % 10}",
                    "owner_id": f"rec-{person % 20}",
                    "tags": TAGS[person % len(TAGS)],
                    "custom": {},
                    "created_at": ledger_start,
                    "updated_at": ledger_start,
                }
            )
            rows["enrollments"].append(
                {
                    "id": person,
                    "person_id": person,
                    "record_id": person,
                    "cadence_id": cadence,
                    "trigger_stage": stage,
                    "triggered_at": ledger_start,
                    "status": "active",
                    "next_step": 0,
                    "next_occurrence": 0,
                    "created_at": ledger_start,
                    "updated_at": ledger_start,
                }
            )
            first = ledger_start + timedelta(seconds=rng.random() * (span - 6 * 86_400))
            for n in range(TOUCHES_PER_PERSON):
                touch_id += 1
                step, arms = steps[cadence][n % len(steps[cadence])]
                at = min(first + timedelta(days=2 * n, hours=rng.random()), NOW)
                roll = rng.random()
                status = (
                    "sent"
                    if roll < 0.94
                    else ("failed", "cancelled", "skipped", "holdout")[int((roll - 0.94) / 0.015)]
                )
                touch_rows.append(
                    {
                        "id": touch_id,
                        "idempotency_key": f"{person}:{step}:{n}",
                        "enrollment_id": person,
                        "person_id": person,
                        "cadence_id": cadence,
                        "step_id": step,
                        "occurrence": n,
                        "status": status,
                        "channel": None if status == "holdout" else "email",
                        "variant": "ab"[rng.randrange(arms)] if arms > 1 else "a",
                        "transactional": False,
                        "due_at": at,
                        "planned_at": at,
                        "claimed_at": at,
                        "sent_at": at if status == "sent" else None,
                        "delivery_at": at if status == "sent" else None,
                        "updated_at": at,
                    }
                )
                if status != "sent":
                    continue
                event("delivered", person, at + timedelta(minutes=1), touch_id)
                if rng.random() < 0.03:
                    event("bounce", person, at + timedelta(minutes=2), touch_id)
                if rng.random() < 0.9:
                    machine = rng.random() < 0.2
                    event("open", person, at + timedelta(hours=1), touch_id, {"machine": machine})
                    if rng.random() < 0.7:
                        event("open", person, at + timedelta(hours=5), touch_id, {"machine": False})
                if rng.random() < 0.3:
                    event("click", person, at + timedelta(hours=2), touch_id)
                if rng.random() < 0.1:
                    event("reply", person, at + timedelta(hours=rng.random() * 72), None)
                if rng.random() < 0.02:
                    event("auto_reply", person, at + timedelta(minutes=5), None)
            if rng.random() < 0.02:
                event("opt_out", person, first + timedelta(days=3), None)
            nxt = STAGES[min(STAGES.index(stage) + 1, len(STAGES) - 1)]
            event(
                "stage_change",
                person,
                first + timedelta(days=rng.random() * 20),
                None,
                {"from": stage, "to": nxt if rng.random() < 0.5 else "rejected"},
            )
        with engine.begin() as conn:
            bulk_write(conn, Person.__table__, rows["people"])
            bulk_write(conn, CandidateRecord.__table__, rows["records"])
            bulk_write(conn, Enrollment.__table__, rows["enrollments"])
            bulk_write(conn, Touch.__table__, touch_rows)
            bulk_write(conn, Event.__table__, event_rows)
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))
        if engine.dialect.name == "postgresql":
            # ids were given explicitly: move the sequences past them
            for table in ("people", "candidate_records", "enrollments", "touches", "events"):
                conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"(SELECT COALESCE(MAX(id), 1) FROM {table}))"
                    )
                )
    events = next(event_ids) - 1
    print(f"seeded {touch_id:,} touches, {events:,} events, {people:,} people", flush=True)
    engine.dispose()


def run_report(url: str) -> dict[str, float]:
    """Build the report and render it as JSON (in this process), first as a plain
    ``outreach report`` (no ``--by``), then with ``--by cadence,step,variant``; seconds of
    each and the peak RSS over both."""
    from outreach.cadence import load_cadence_file
    from outreach.paths import default_config_dir
    from outreach.reports import build_report
    from outreach.reports.model import to_json
    from outreach.store import make_engine

    engine = make_engine(url)
    config = load_cadence_file(default_config_dir() / "cadences.yaml", check_templates=False)
    result: dict[str, float] = {}
    for suffix, by in (("", ()), ("_by", ("cadence", "step", "variant"))):
        started = time.perf_counter()
        cpu = time.process_time()
        report = build_report(engine, config, since=SINCE, until=NOW, now=NOW, by=by)
        text = to_json(report)
        result[f"seconds{suffix}"] = time.perf_counter() - started
        result[f"cpu_seconds{suffix}"] = time.process_time() - cpu
        result["touches_sent"] = report["totals"]["touches_sent"]
        result["json_bytes"] = len(text)
    engine.dispose()
    result["rss_mb"] = _peak_rss_mb()
    return result


def _peak_rss_mb() -> float:
    """This process's peak RSS. ``VmHWM`` belongs to the process image (a ``getrusage``
    maximum survives ``exec`` and would report the seeding parent's peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def scenario(touches: int, database: str, span_days: int = 30) -> dict[str, float]:
    """Seed a store of ``touches`` and time the report on it in a fresh child process."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    with tempfile.TemporaryDirectory() as folder:
        admin = None
        if database == "sqlite":
            url = f"sqlite:///{Path(folder) / 'report.db'}"
        else:
            name = f"outreach_bench_{uuid.uuid4().hex[:10]}"
            admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
        try:
            started = time.perf_counter()
            seed(url, touches, span_days)
            seeded = time.perf_counter() - started
            child = subprocess.run(
                [sys.executable, __file__, "--report-only", url],
                capture_output=True,
                text=True,
            )
            if child.returncode != 0:
                raise SystemExit(f"the report failed:\n{child.stderr[-4000:]}")
            result = json.loads(child.stdout.strip().splitlines()[-1])
        finally:
            if admin is not None:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                admin.dispose()
    result.update(touches=touches, seed_seconds=seeded, database=database, span_days=span_days)
    return result


def report(result: dict) -> None:
    """Print one scenario's figures."""
    print(
        f"{result['database']:<10} touches {result['touches']:>9,} "
        f"over {result['span_days']} days: "
        f"report {result['seconds']:.2f} s (this process's CPU {result['cpu_seconds']:.2f} s; "
        f"build + JSON, {result['touches_sent']:,} sent), "
        f"with --by cadence,step,variant {result['seconds_by']:.2f} s "
        f"(CPU {result['cpu_seconds_by']:.2f} s), "
        f"peak RSS {result['rss_mb']:.0f} MB  (seeding took {result['seed_seconds']:.0f} s)",
        flush=True,
    )


def main() -> None:
    """Run the scenarios and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--touches", type=int)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--span-days",
        type=int,
        default=30,
        help="days the ledger spans before the report's 30-day window ends (30: all of it in "
        "the window, the worst case; 365: a year of history, the default window holds a month)",
    )
    parser.add_argument("--report-only", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.report_only:
        print(json.dumps(run_report(args.report_only)))
        return
    sizes = [args.touches] if args.touches else [100_000, 1_000_000]
    if args.span_days < 30:
        parser.error("--span-days must be at least 30 (the report window)")
    results = [scenario(size, args.database, args.span_days) for size in sizes]
    for result in results:
        report(result)
    if len(results) == 2:
        growth = results[1]["rss_mb"] - results[0]["rss_mb"]
        print(f"peak RSS growth from 100,000 to 1,000,000 touches: {growth:+.0f} MB")


if __name__ == "__main__":
    main()
