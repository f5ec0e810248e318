"""Benchmark: ``outreach import`` of a large CSV into SQLite.

Run: ``python benchmarks/import_csv.py [--rows 100000] [--database-url URL]``

Prints rows/s and the peak resident memory of the import. The file is generated first
(realistic rows: unique emails and US phone numbers, mixed stages, custom fields) and is
not part of the timing. Aim: >= 20,000 rows/s on SQLite.
"""

from __future__ import annotations

import argparse
import csv
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

from outreach.cadence import load_cadence_file
from outreach.clock import SystemClock
from outreach.importer import import_file
from outreach.paths import default_config_dir
from outreach.store import make_engine, upgrade

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


def main() -> None:
    """Generate, import, print figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = folder / "candidates.csv"
        generate(data, args.rows)
        url = args.database_url or f"sqlite:///{folder / 'bench.db'}"
        engine = make_engine(url)
        upgrade(engine)
        config = load_cadence_file(default_config_dir() / "cadences.yaml")
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        report = import_file(data, engine, config, SystemClock())
        elapsed = time.perf_counter() - started
        rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        engine.dispose()

    if report.errors:
        print(
            f"unexpected bad rows: {len(report.errors)}; first: {report.errors[0]}", file=sys.stderr
        )
        raise SystemExit(1)
    print(
        f"import: {report.loaded} rows in {elapsed:.2f} s = {report.loaded / elapsed:,.0f} rows/s"
    )
    print(f"peak RSS: {rss_peak / 1024:.0f} MB (before import: {rss_before / 1024:.0f} MB)")


if __name__ == "__main__":
    main()
