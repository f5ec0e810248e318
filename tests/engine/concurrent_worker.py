"""A worker process for the concurrency test: one tick, messages appended to a file.

Usage: python concurrent_worker.py DATABASE_URL OUTFILE NOW; prints "ready", then waits for a
line on stdin before it starts, so a test can start several workers at the same moment.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta

from channels.base import Channel, SendResult
from outreach.cadence import load_cadence_file
from outreach.clock import FixedClock, parse_instant
from outreach.engine.tick import Tick, engine_transactions
from outreach.paths import default_config_dir
from outreach.store import make_engine


class FileChannel(Channel):
    """Records every message it is given, one JSON line each, with this process's pid."""

    max_batch = 50
    max_schedule_ahead = timedelta(hours=72)

    def __init__(self, name: str, path: str) -> None:
        self.name = name  # type: ignore[misc]
        self.path = path

    def send(self, batch):
        with open(self.path, "a", encoding="utf-8") as handle:
            for message in batch:
                handle.write(
                    json.dumps({"key": message.idempotency_key, "pid": os.getpid()}) + "\n"
                )
        return [SendResult.sent(m, f"file:{m.idempotency_key}") for m in batch]


def main() -> None:
    url, outfile, now = sys.argv[1:4]
    engine = make_engine(url)
    config = load_cadence_file(default_config_dir() / "cadences.yaml")
    channels = {"email": FileChannel("email", outfile), "sms": FileChannel("sms", outfile)}
    # A barrier: say we are ready, start when the test says go (both at once).
    print("ready", flush=True)
    sys.stdin.readline()
    # Small batches, so the two workers interleave batch by batch.
    clock = FixedClock(parse_instant(now))
    tick = Tick(
        config,
        clock,
        channels,
        engine_transactions(engine),
        wall_clock=clock,
        batch_size=25,
        dialect=engine.dialect.name,
    )
    summary = tick.run()
    print(json.dumps({"sent": summary.total("sent"), "tasks": summary.total("tasks")}))


if __name__ == "__main__":
    main()
