"""Benchmark: ``outreach sync`` from the CRM sandbox fakes into SQLite.

Run: ``python benchmarks/sync.py [--cpu 20000] [--records 100000] [--million] [--limited 25000]``

Each fake runs in its own process (as a real CRM is another machine), serving a seeded
population built on demand. Figures:

1. **CPU per connector**, limits off (``--cpu`` records, 0 skips): for each connector
   (Greenhouse Harvest v3, the legacy Harvest v1, Lever, HubSpot, Bullhorn, ActiveCampaign)
   the syncing process's
   own CPU time (user + system, all its threads, from ``time.process_time``; the fake's
   is not counted) per 1,000 records, beside wall time. Aim: <= 0.2 CPU s per 1,000.
   Then a top-5 profile (by CPU time) of a smaller pass of each (``--profile-records``), with page
   prefetching off so that fetching and writing run in the one profiled thread.
2. **Throughput** (Greenhouse v3), limits off: ``--records`` candidates through the real
   connector (token, cursor pages of 500, the application join) and the sync into a fresh
   SQLite store. Prints records/s and the sync process's peak RSS.
3. **Memory at a million** (``--million``): the same with 1,000,000 candidates; peak RSS
   must stay flat (aim <= 300 MB) because pages stream and nothing is held per record.
4. **Rate-limit use**, Greenhouse-style limits on (50 requests per 10 s, 429 with
   Retry-After): ``--limited`` candidates. Prints the share of the allowed request rate
   actually used and the number of 429s. Aim: >= 95 % and no 429s.
"""

from __future__ import annotations

import argparse
import cProfile
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from profiling import print_top, top_functions

import outreach.sync
from connectors.base import Connector
from outreach.cadence import load_cadence_file
from outreach.clock import FixedClock
from outreach.paths import default_config_dir
from outreach.store import make_engine, upgrade
from outreach.sync import sync_source

NOW = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)


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


#: the connectors measured: name -> the fake that serves it
CONNECTORS = {
    "greenhouse-v3": "greenhouse",
    "greenhouse-v1": "greenhouse",
    "lever": "lever",
    "hubspot": "hubspot",
    "bullhorn": "bullhorn",
    "activecampaign": "activecampaign",
}


def _serve(kind: str, count: int, limited: bool, ready: multiprocessing.Queue, stats) -> None:
    from outreach.sandbox.base import RateWindow, SandboxServer
    from outreach.sandbox.seed import Population

    rate = RateWindow(50, 10.0) if limited else None
    if limited and kind == "activecampaign":
        rate = RateWindow(5, 1.0)  # ActiveCampaign's own: 5 requests per second per account
    people = Population(count)
    if kind == "greenhouse":
        from outreach.sandbox.greenhouse import FakeGreenhouse

        fake: Any = FakeGreenhouse(people, clock=FixedClock(NOW), rate=rate)
    elif kind == "lever":
        from outreach.sandbox.lever import FakeLever

        fake = FakeLever(people, clock=FixedClock(NOW), rate=rate)
    elif kind == "bullhorn":
        from outreach.sandbox.bullhorn import FakeBullhorn

        fake = FakeBullhorn(people, clock=FixedClock(NOW), rate=rate)
    elif kind == "activecampaign":
        from outreach.sandbox.activecampaign import FakeActiveCampaign

        fake = FakeActiveCampaign(people, clock=FixedClock(NOW), rate=rate)
    else:
        from outreach.sandbox.hubspot import FakeHubSpot

        fake = FakeHubSpot(people, clock=FixedClock(NOW), rate=rate)
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


def _connector(
    name: str, url: str, clock: FixedClock, *, limited: bool, private: Path | None = None
) -> Connector:
    """The real connector for ``name``, pointed at the fake at ``url`` (``private``: a
    folder for the Bullhorn refresh token)."""
    if name == "greenhouse-v3":
        from connectors.greenhouse import GreenhouseV3

        connector: Any = GreenhouseV3(
            "sandbox-greenhouse-client",
            "sandbox-greenhouse-secret",
            "4080",
            base_url=url + "/v3",
            auth_url=url + "/token",
            clock=clock,
        )
    elif name == "greenhouse-v1":
        from connectors.greenhouse import GreenhouseV1

        connector = GreenhouseV1("sandbox-greenhouse-key", base_url=url + "/v1", clock=clock)
    elif name == "lever":
        from connectors.lever import Lever

        connector = Lever("sandbox-lever-key", base_url=url + "/v1", clock=clock)
    elif name == "bullhorn":
        from connectors.bullhorn import Bullhorn
        from connectors.bullhorn_auth import BullhornLogin, RefreshTokenFile

        refresh = "sandbox-bullhorn-refresh"
        login = BullhornLogin(
            "sandbox-bullhorn-client",
            "sandbox-bullhorn-secret",
            auth_url=url + "/oauth",
            login_url=url + "/rest-services",
            refresh_token=refresh,
            token_file=RefreshTokenFile((private or Path(".")) / "bullhorn-token", refresh),
        )
        connector = Bullhorn(login, clock=clock)
    elif name == "activecampaign":
        from connectors.activecampaign import ActiveCampaign

        connector = ActiveCampaign(url, "sandbox-activecampaign-token", clock=clock)
    else:
        from connectors.hubspot import HubSpot

        connector = HubSpot("sandbox-hubspot-token", base_url=url, clock=clock)
    if not limited:  # limits off: as fast as it goes
        connector.client.pacer.limiter = None
        search = getattr(connector.client.pacer, "search", None)
        if search is not None:
            search.limiter = None
    return connector


def _no_prefetch(pages, depth: int = 1):
    """Stand-in for :func:`outreach.sync.prefetch` in the profiled pass (one thread)."""
    return pages


def run(
    count: int,
    *,
    limited: bool = False,
    name: str = "greenhouse-v3",
    profile: bool = False,
) -> dict[str, Any]:
    """Sync ``count`` candidates with connector ``name`` from a fake in another process.

    Returns the figures: records, bad, wall seconds, this process's CPU seconds for the
    sync, retries, peak RSS, the fake's request counts and, with ``profile``, the top
    functions of a profiled pass (prefetch off, so everything runs in this thread).
    """
    ctx = multiprocessing.get_context("fork")
    ready, ask = ctx.Queue(), ctx.Queue()
    kind = CONNECTORS[name]
    process = ctx.Process(target=_serve, args=(kind, count, limited, ready, ask), daemon=True)
    process.start()
    url = ready.get(timeout=120)
    config = load_cadence_file(default_config_dir() / "cadences.yaml")
    top: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'bench.db'}")
        upgrade(engine)
        clock = FixedClock(NOW)
        connector = _connector(name, url, clock, limited=limited, private=Path(tmp))
        original = outreach.sync.prefetch
        if profile:
            outreach.sync.prefetch = _no_prefetch
        try:
            with cpu_profiled() if profile else nullcontext() as profiler:
                cpu_started = time.process_time()
                started = time.perf_counter()
                report = sync_source(connector, engine, config, clock)
                elapsed = time.perf_counter() - started
                cpu = time.process_time() - cpu_started
        finally:
            outreach.sync.prefetch = original
        if profiler is not None:
            top = top_functions(profiler)
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
        "cpu": cpu,
        "retries": retries,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "top": top,
        **served,
    }


def machine() -> str:
    """The machine the figures come from: cores and load."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"machine: {os.cpu_count()} cores, load average {load}"


def cpu_per_connector(count: int, profile_count: int, names: list[str]) -> None:
    """Print CPU seconds per 1,000 records for each connector, then their profiles."""
    print(f"CPU per 1,000 records, {count:,} records each, limits off (aim <= 0.2 s):")
    for name in names:
        figures = run(count, name=name)
        per_thousand = figures["cpu"] / figures["records"] * 1000 if figures["records"] else 0
        print(
            f"  {name:14} {per_thousand:.3f} CPU s / 1,000  "
            f"({figures['cpu']:.2f} CPU s, {figures['seconds']:.2f} s wall, "
            f"{figures['records']:,} records, {figures['requests']} requests, "
            f"{figures['bad']} bad)"
        )
    if profile_count:
        for name in names:
            figures = run(profile_count, name=name, profile=True)
            print_top(
                figures["top"],
                f"sync {name}, {figures['records']:,} records, no prefetch, CPU time",
            )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks and print their figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", type=int, default=20_000, help="records per connector; 0 skips")
    parser.add_argument("--profile-records", type=int, default=5_000, help="0: no profiles")
    parser.add_argument(
        "--connectors",
        default=",".join(CONNECTORS),
        help=f"comma-separated, of {', '.join(CONNECTORS)}",
    )
    parser.add_argument("--records", type=int, default=100_000, help="0 skips")
    parser.add_argument("--million", action="store_true", help="also sync 1,000,000")
    parser.add_argument("--limited", type=int, default=25_000, help="0 skips the limits run")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.connectors.split(",") if n.strip()]
    unknown = sorted(set(names) - set(CONNECTORS))
    if unknown:
        parser.error(f"unknown connector(s) {', '.join(unknown)}; use {', '.join(CONNECTORS)}")

    print(machine())
    if args.cpu:
        cpu_per_connector(args.cpu, args.profile_records, names)
    if args.records:
        figures = run(args.records)
        print(
            f"throughput (greenhouse-v3): {figures['records']:,} records in "
            f"{figures['seconds']:.1f} s = {figures['records'] / figures['seconds']:,.0f} "
            f"records/s ({figures['requests']} requests, {figures['bad']} bad); "
            f"peak RSS {figures['rss_mb']:.0f} MB"
        )
    if args.million:
        big = run(1_000_000)
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
    print(machine())
    return 0


if __name__ == "__main__":
    sys.exit(main())
