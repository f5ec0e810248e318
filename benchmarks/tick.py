"""Benchmark: one ``outreach run`` tick with the dry-run channel on SQLite.

Run: ``python benchmarks/tick.py`` (both scenarios) or
``python benchmarks/tick.py --enrolled 1000000 --due 100000``.

Seeds a fresh SQLite store straight through the driver (people, records, email addresses,
enrollments in the default cadences; ``--due`` of them due now, the rest weeks away), then
times one tick in a child process and prints seconds, touches/s and the tick's peak RSS.
Without arguments it runs 1,000,000 enrolled / 100,000 due and 100,000 / 100,000 and prints
the ratio: the cost of a tick should follow the due touches, not the enrolled people.
Aims: <= 10 s for 100,000 due, ratio <= 1.5.
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

NOW = datetime(2026, 11, 3, 14, 0, tzinfo=UTC)  # Tuesday 09:00 in New York
CHUNK = 50_000


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def seed(path: Path, enrolled: int, due: int) -> None:
    """Create the schema with Alembic, then bulk-load the rows with sqlite3."""
    from outreach.store import make_engine, upgrade

    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    now = _ts(NOW)
    entered = NOW - timedelta(days=8)
    due_at = _ts(NOW - timedelta(hours=1))
    later = _ts(NOW + timedelta(days=20))
    for start in range(0, enrolled, CHUNK):
        ids = range(start + 1, min(start + CHUNK, enrolled) + 1)
        db.executemany(
            "INSERT INTO people (id, global_opt_out, created_at, updated_at) VALUES (?, 0, ?, ?)",
            ((i, now, now) for i in ids),
        )
        db.executemany(
            "INSERT INTO candidate_records (id, person_id, source, external_id, first_name, "
            "last_name, email, stage, stage_entered_at, timezone, job_title, recruiter_name, "
            "owner_id, tags, custom, created_at, updated_at) VALUES "
            "(?, ?, 'import', ?, 'Ann', 'Lee', ?, 'applied', ?, 'America/New_York', "
            "'Data Engineer', 'Jo Smith', 'rec-1', '[]', '{}', ?, ?)",
            ((i, i, f"b{i}", f"p{i}@example.com", _ts(entered), now, now) for i in ids),
        )
        db.executemany(
            "INSERT INTO contact_points (id, person_id, kind, value, valid, suppressed, "
            "shared, created_at, updated_at) VALUES (?, ?, 'email', ?, 1, 0, 0, ?, ?)",
            ((i, i, f"p{i}@example.com", now, now) for i in ids),
        )
        # Due people are spread over the id range, so the due rows are not one block.
        stride = max(1, enrolled // max(due, 1))
        db.executemany(
            "INSERT INTO enrollments (id, person_id, record_id, cadence_id, trigger_stage, "
            "triggered_at, status, next_step, next_occurrence, step_due_at, next_due_at, "
            "last_touch_at, created_at, updated_at) VALUES "
            "(?, ?, ?, 'application-follow-up', 'applied', ?, 'active', 1, 0, ?, ?, ?, ?, ?)",
            (
                (
                    i,
                    i,
                    i,
                    _ts(entered),
                    due_at if (i - 1) % stride == 0 and (i - 1) // stride < due else later,
                    due_at if (i - 1) % stride == 0 and (i - 1) // stride < due else later,
                    _ts(entered),
                    now,
                    now,
                )
                for i in ids
            ),
        )
        db.commit()
    db.execute("ANALYZE")
    db.commit()
    db.close()


def run_tick(path: Path) -> dict[str, float]:
    """Time one tick on the seeded store (in this process)."""
    from channels import DryRunChannel
    from outreach.cadence import load_cadence_file
    from outreach.clock import FixedClock
    from outreach.engine.tick import Tick, engine_transactions
    from outreach.paths import default_config_dir
    from outreach.store import make_engine

    engine = make_engine(f"sqlite:///{path}")
    config = load_cadence_file(default_config_dir() / "cadences.yaml")
    channel = DryRunChannel("email")
    tick = Tick(
        config,
        FixedClock(NOW),
        {"email": channel, "sms": DryRunChannel("sms")},
        engine_transactions(engine),
        dialect="sqlite",
    )
    started = time.perf_counter()
    summary = tick.run()
    elapsed = time.perf_counter() - started
    engine.dispose()
    return {
        "seconds": elapsed,
        "sent": summary.total("sent"),
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def scenario(enrolled: int, due: int) -> dict[str, float]:
    """Seed a store and time a tick on it in a fresh child process."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tick.db"
        started = time.perf_counter()
        seed(path, enrolled, due)
        seeded = time.perf_counter() - started
        child = subprocess.run(
            [sys.executable, __file__, "--tick-only", str(path)],
            capture_output=True,
            text=True,
        )
        if child.returncode != 0:
            raise SystemExit(f"the tick failed:\n{child.stderr[-4000:]}")
        result = json.loads(child.stdout.strip().splitlines()[-1])
    result.update(enrolled=enrolled, due=due, seed_seconds=seeded)
    return result


def report(result: dict[str, float]) -> None:
    """Print one scenario's figures."""
    print(
        f"enrolled {result['enrolled']:>9,}  due {result['due']:>7,}: "
        f"tick {result['seconds']:.1f} s "
        f"({result['sent'] / result['seconds']:,.0f} touches/s), sent {result['sent']:,}, "
        f"peak RSS {result['rss_mb']:.0f} MB  (seeding took {result['seed_seconds']:.0f} s)"
    )


def main() -> None:
    """Run the scenarios and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--enrolled", type=int)
    parser.add_argument("--due", type=int)
    parser.add_argument("--tick-only", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tick_only:
        print(json.dumps(run_tick(args.tick_only)))
        return
    if args.enrolled:
        report(scenario(args.enrolled, args.due or args.enrolled // 10))
        return
    big = scenario(1_000_000, 100_000)
    report(big)
    small = scenario(100_000, 100_000)
    report(small)
    ratio = big["seconds"] / small["seconds"]
    print(f"ratio (1,000,000 enrolled / 100,000 enrolled, same due): {ratio:.2f}")


if __name__ == "__main__":
    main()
