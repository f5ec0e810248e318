"""What a shared rate limit costs and how well it paces, per backend.

Run: ``python benchmarks/shared_limits.py [--reserves 2000] [--workers 4] [--rate 200]
[--seconds 3] [--postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
[--redis-url redis://127.0.0.1:6379/0]``

For each backend (in-process slots, PostgreSQL ``rate_buckets`` in a throwaway database,
Redis under a throwaway key prefix), printed by the benchmark itself:

* **reserve**: one thread takes ``--reserves`` slots of a bucket with no wait (a rate so
  high nothing sleeps): microseconds per reservation, i.e. the round trip each request
  adds before it leaves, and the most requests per second one thread could pace;
* **pacing**: ``--workers`` threads, each with its own connection, acquire as fast as a
  ``--rate``/s bucket lets them for ``--seconds``: the rate achieved (the slots are
  ``1.2 / rate`` apart, so about ``rate / 1.2``) and the busiest one-second window, which
  must not exceed ``--rate``;
* a profile of the reservation pass (top five functions by own time).

A backend that does not answer is reported and skipped. The figures are on whatever load
the machine has: the load average is printed with them.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from profiling import print_top, profiled, top_functions

from outreach.engine.ratelimit import reserve
from outreach.engine.shared_limits import BucketStore, SharedLimiter


class _LocalStore:
    """The in-process slot arithmetic behind the store interface (the baseline)."""

    backend = "in-process"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tats: dict[str, float] = {}

    def reserve(self, name: str, units: float, interval: float) -> float:
        with self._lock:
            self._tats[name], wait = reserve(
                self._tats.get(name, 0.0), time.monotonic(), units, interval
            )
        return wait


def _max_in_window(times: list[float]) -> int:
    times = sorted(times)
    best = start = 0
    for end, at in enumerate(times):
        while times[start] <= at - 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


def _reserve_cost(store: BucketStore, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        store.reserve("bench-reserve", 1, 1e-9)
    return (time.perf_counter() - started) / count


def _pacing(stores: list[BucketStore], rate: float, seconds: float) -> tuple[int, float, int]:
    sends: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    name = f"bench-pace-{uuid.uuid4().hex[:8]}"

    def work(store: BucketStore) -> None:
        limiter = SharedLimiter(store, name, rate)
        while time.monotonic() < stop:
            limiter.acquire()
            with lock:
                sends.append(time.monotonic())

    threads = [threading.Thread(target=work, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    span = max(sends) - min(sends)
    return len(sends), (len(sends) - 1) / span if span else 0.0, _max_in_window(sends)


def _bench(label: str, make_store: Callable[[], BucketStore], args: argparse.Namespace) -> None:
    store = make_store()
    store.reserve("bench-warm", 1, 1e-9)
    per = _reserve_cost(store, args.reserves)
    stores = [make_store() for _ in range(args.workers)]
    count, achieved, busiest = _pacing(stores, args.rate, args.seconds)
    print(
        f"{label}: reserve {per * 1e6:,.0f} µs each ({1 / per:,.0f}/s on one thread); "
        f"pacing {args.workers} workers at {args.rate:g}/s for {args.seconds:g} s: {count} "
        f"requests, {achieved:,.1f}/s achieved (slots allow {args.rate / 1.2:,.1f}/s), busiest "
        f"second {busiest} (limit {args.rate:g}){' OVER' if busiest > args.rate else ''}"
    )
    with profiled() as profile:
        _reserve_cost(store, max(1, args.reserves // 4))
    print_top(top_functions(profile), f"{label}, {max(1, args.reserves // 4)} reservations")
    for each in {id(s): s for s in [store, *stores]}.values():
        close = getattr(each, "close", None)
        if close is not None:
            close()


def _postgres(url: str, args: argparse.Namespace) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from outreach.engine.limits_pg import PostgresBuckets
    from outreach.store import make_engine, upgrade

    name = f"outreach_bench_{uuid.uuid4().hex[:10]}"
    try:
        admin = create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        print(f"postgresql: skipped ({type(exc).__name__}: no server at the --postgres-url)")
        return
    engines: list[Any] = []
    try:
        db_url = make_url(url).set(database=name).render_as_string(hide_password=False)
        first = make_engine(db_url)
        upgrade(first)
        engines.append(first)

        def make() -> BucketStore:
            engine = make_engine(db_url)
            engines.append(engine)
            return PostgresBuckets(engine)

        _bench("postgresql", make, args)
    finally:
        for engine in engines:
            engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _redis(url: str, args: argparse.Namespace) -> None:
    import redis

    from outreach.engine.limits_redis import RedisBuckets

    prefix = f"outreach-bench:{uuid.uuid4().hex[:10]}:"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        print(f"redis: skipped ({type(exc).__name__}: no server at the --redis-url)")
        return
    try:
        _bench("redis", lambda: RedisBuckets.from_url(url, prefix=prefix), args)
    finally:
        client = redis.Redis.from_url(url)
        for key in client.scan_iter(match=prefix + "*"):
            client.delete(key)
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reserves", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "OUTREACH_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("OUTREACH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    args = parser.parse_args()
    print(f"load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs")
    local = _LocalStore()  # one process: every thread shares the one store
    _bench("in-process", lambda: local, args)
    _postgres(args.postgres_url, args)
    _redis(args.redis_url, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
