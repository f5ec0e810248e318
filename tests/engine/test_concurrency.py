"""Two ``run`` processes started together on one database send each touch exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import select

from outreach.cadence import load_cadence_file
from outreach.engine.enroll import process_events
from outreach.engine.tick import engine_transactions
from outreach.paths import default_config_dir
from outreach.records import normalize_record
from outreach.store.candidates import upsert_candidates
from outreach.store.schema import Task, Touch

WORKER = Path(__file__).with_name("concurrent_worker.py")
NOW = datetime(2026, 11, 3, 14, 0, tzinfo=ZoneInfo("UTC"))


def test_two_processes_send_each_touch_exactly_once(
    engine, database_url: str, tmp_path: Path
) -> None:
    config = load_cadence_file(default_config_dir() / "cadences.yaml")
    stages = ["applied", "screening", "interview", "offer", "hired", "rejected", "prospect"]
    records = [
        normalize_record(
            {
                "source": "import",
                "external_id": f"c{i}",
                "first_name": f"P{i}",
                "email": f"p{i}@example.com",
                "phone": f"+1 212 555 {i:04d}" if i % 2 else "",
                "sms_consent": "true",
                "linkedin_url": f"https://www.linkedin.com/in/p{i}" if i % 3 == 0 else "",
                "stage": stages[i % len(stages)],
                "owner_id": f"rec-{i % 4}",
            },
            where=f"row {i}",
            default_region="US",
            canonical_stage=config.canonical_stage,
        )
        for i in range(600)
    ]
    with engine.begin() as conn:
        upsert_candidates(conn, records, NOW)
    # Enroll first, so both workers find the same 600 due enrollments to fight over.
    process_events(engine_transactions(engine), config, NOW)

    outfile = tmp_path / "delivered.jsonl"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])
        ),
    }
    args = [sys.executable, str(WORKER), database_url, str(outfile), NOW.isoformat()]
    workers = [
        subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    for worker in workers:
        assert worker.stdout.readline().strip() == "ready", worker.stderr.read()[-3000:]
    for worker in workers:
        worker.stdin.write("go\n")
        worker.stdin.flush()
    outputs = [w.communicate(timeout=300) for w in workers]
    for worker, (_stdout, stderr) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, stderr[-3000:]
    summaries = [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs]

    delivered = [json.loads(line) for line in outfile.read_text().splitlines()]
    counts = Counter(d["key"] for d in delivered)
    assert counts and max(counts.values()) == 1, counts.most_common(3)
    with engine.connect() as conn:
        sent = set(
            conn.execute(select(Touch.idempotency_key).where(Touch.status == "sent")).scalars()
        )
        task_touches = conn.execute(select(Touch.id).where(Touch.status == "task")).all()
        tasks = conn.execute(select(Task.touch_id)).scalars().all()
    assert sent == set(counts)
    assert len(tasks) == len(set(tasks)) == len(task_touches)
    assert sum(s["sent"] for s in summaries) == len(delivered)
    assert sum(s["tasks"] for s in summaries) == len(tasks)
    per_process = Counter(d["pid"] for d in delivered)
    print("delivered per process:", per_process)
    if engine.dialect.name == "postgresql":
        # SKIP LOCKED shares the work; on SQLite one writer at a time may take it all.
        assert len(per_process) == 2, "both workers should have sent part of the touches"
