"""Benchmark: ``outreach sync`` from the Greenhouse sandbox (Harvest v3) into SQLite.

Run: ``python benchmarks/sync.py [--records 100000] [--million] [--limited 25000]``

The fake runs in its own process (as a real CRM is another machine), serving a seeded
population built on demand. Three figures:

1. **Throughput**, limits off: ``--records`` candidates through the real v3 connector
   (token, cursor pages of 500, the application join) and the sync into a fresh SQLite
   store. Prints records/s and the sync process's peak RSS. Aim: >= 20,000 records/s.
2. **Memory at a million** (``--million``): the same with 1,000,000 candidates; peak RSS
   must stay flat (aim <= 300 MB) because pages stream and nothing is held per record.
3. **Rate-limit use**, Greenhouse-style limits on (50 requests per 10 s, 429 with
   Retry-After): ``--limited`` candidates. Prints the share of the allowed request rate
   actually used and the number of 429s. Aim: >= 95 % and no 429s.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from connectors.greenhouse import GreenhouseV3
from outreach.cadence import load_cadence_file
from outreach.clock import FixedClock
from outreach.paths import default_config_dir
from outreach.store import make_engine, upgrade
from outreach.sync import sync_source

NOW = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)


def _serve(count: int, limited: bool, ready: multiprocessing.Queue, stats) -> None:
    from outreach.sandbox.base import RateWindow, SandboxServer
    from outreach.sandbox.greenhouse import FakeGreenhouse
    from outreach.sandbox.seed import Population

    rate = RateWindow(50, 10.0) if limited else None
    fake = FakeGreenhouse(Population(count), clock=FixedClock(NOW), rate=rate)
    fake.log_bodies = False
    server = SandboxServer(fake).start()
    ready.put(server.url)
    stats.get()  # wait for the benchmark to ask
    ready.put(
        {
            "requests": len(fake.requests),
            "allowed": rate.allowed if rate else None,
            "rejected": rate.rejected if rate else 0,
        }
    )
    server.stop()


def run(count: int, *, limited: bool) -> dict:
    """Sync ``count`` candidates from a fake in another process; return the figures."""
    ctx = multiprocessing.get_context("fork")
    ready, ask = ctx.Queue(), ctx.Queue()
    process = ctx.Process(target=_serve, args=(count, limited, ready, ask), daemon=True)
    process.start()
    url = ready.get(timeout=60)
    config = load_cadence_file(default_config_dir() / "cadences.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'bench.db'}")
        upgrade(engine)
        clock = FixedClock(NOW)
        connector = GreenhouseV3(
            "sandbox-greenhouse-client",
            "sandbox-greenhouse-secret",
            "4080",
            base_url=url + "/v3",
            auth_url=url + "/token",
            clock=clock,
        )
        if not limited:
            connector.client.pacer.limiter = None  # limits off: as fast as it goes
        started = time.perf_counter()
        report = sync_source(connector, engine, config, clock)
        elapsed = time.perf_counter() - started
        retries = connector.client.retries
        connector.close()
        engine.dispose()
    ask.put("stats")
    served = ready.get(timeout=60)
    process.join(timeout=30)
    return {
        "records": report.fetched,
        "bad": len(report.bad),
        "seconds": elapsed,
        "retries": retries,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **served,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks and print their figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--million", action="store_true", help="also sync 1,000,000")
    parser.add_argument("--limited", type=int, default=25_000, help="0 skips the limits run")
    args = parser.parse_args(argv)

    figures = run(args.records, limited=False)
    print(
        f"throughput: {figures['records']:,} records in {figures['seconds']:.1f} s = "
        f"{figures['records'] / figures['seconds']:,.0f} records/s "
        f"({figures['requests']} requests, {figures['bad']} bad); "
        f"peak RSS {figures['rss_mb']:.0f} MB"
    )
    if args.million:
        big = run(1_000_000, limited=False)
        print(
            f"a million: {big['records']:,} records in {big['seconds']:.1f} s = "
            f"{big['records'] / big['seconds']:,.0f} records/s; peak RSS {big['rss_mb']:.0f} MB"
        )
    if args.limited:
        limited = run(args.limited, limited=True)
        allowed_rate = 50 / 10.0
        used = limited["requests"] / limited["seconds"]
        print(
            f"limits on (50 per 10 s): {limited['requests']} requests in "
            f"{limited['seconds']:.1f} s = {used:.2f}/s of {allowed_rate:.0f}/s allowed "
            f"= {used / allowed_rate:.1%} used; 429s: {limited['rejected']}; "
            f"{limited['records'] / limited['seconds']:,.0f} records/s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
