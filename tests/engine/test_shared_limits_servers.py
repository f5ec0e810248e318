"""The shared buckets on real servers: PostgreSQL (``rate_buckets``) and Redis.

PostgreSQL tests run in the PostgreSQL pass (``OUTREACH_TEST_DATABASE=postgresql``);
Redis tests use the server at ``OUTREACH_TEST_REDIS_URL`` (default: the local one) and
skip where none answers. Only the threads test waits in real time (about two seconds):
the rest read the waits the servers compute, or sleep on a fake clock.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from test_shared_limits import max_in_window
from throwaway_db import BACKEND, POSTGRES_URL

from outreach.clock import ManualTimer
from outreach.engine.limits_pg import PostgresBuckets
from outreach.engine.limits_redis import RedisBuckets
from outreach.engine.ratelimit import DEFAULT_JITTER, slot_interval
from outreach.engine.shared_limits import (
    BucketStore,
    BucketUnavailable,
    SharedLimiter,
    SharedLimits,
    limiters_for,
)
from outreach.store import make_engine

REDIS_URL = os.environ.get("OUTREACH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _redis_answers() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


needs_redis = pytest.mark.skipif(not _redis_answers(), reason=f"no Redis at {REDIS_URL}")


@pytest.fixture
def redis_buckets() -> Iterator[RedisBuckets]:
    """Buckets on the test Redis under a prefix of this test's own, deleted afterwards."""
    prefix = f"outreach-test:{uuid.uuid4().hex[:12]}:"
    buckets = RedisBuckets.from_url(REDIS_URL, prefix=prefix)
    yield buckets
    for key in buckets.client.scan_iter(match=prefix + "*"):
        buckets.client.delete(key)
    buckets.close()


def _consecutive_slots(store: BucketStore) -> None:
    # Slots one second apart, taken at once: each wait is its slot minus the time passed.
    start = time.monotonic()
    for k in range(5):
        wait = store.reserve("sms", 1, 1.0)
        assert wait + (time.monotonic() - start) == pytest.approx(k, abs=0.15)
    # Three units together go at the last of their three slots (5, 6, 7).
    wait = store.reserve("sms", 3, 1.0)
    assert wait + (time.monotonic() - start) == pytest.approx(7, abs=0.15)
    # Another bucket is another limit.
    assert store.reserve("email", 1, 1.0) == pytest.approx(0, abs=0.05)


def _threads_share_the_rate(stores: list[BucketStore]) -> None:
    # Four workers (threads, each with its own connection) send 20 requests each as fast
    # as the shared bucket lets them: together never more than 40 in any second.
    rate = 40.0
    sends: list[float] = []
    lock = threading.Lock()

    def work(store: BucketStore) -> None:
        limiter = SharedLimiter(store, "sms", rate)
        for _ in range(20):
            limiter.acquire()
            with lock:
                sends.append(time.monotonic())

    threads = [threading.Thread(target=work, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(sends) == 80
    assert max_in_window(sends) <= rate
    # The slots are spaced (1 + jitter) / rate: 79 intervals from the first to the last.
    assert max(sends) - min(sends) >= 79 * slot_interval(rate) - 0.05


# -- PostgreSQL ------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.skipif(BACKEND != "postgresql", reason="PostgreSQL pass only")
def test_postgres_bucket_gives_consecutive_slots(engine) -> None:
    _consecutive_slots(PostgresBuckets(engine))


@pytest.mark.postgres
@pytest.mark.skipif(BACKEND != "postgresql", reason="PostgreSQL pass only")
def test_postgres_bucket_is_shared_by_workers(engine, database_url: str) -> None:
    engines = [make_engine(database_url) for _ in range(4)]
    try:
        _threads_share_the_rate([PostgresBuckets(e) for e in engines])
    finally:
        for e in engines:
            e.dispose()


@pytest.mark.postgres
@pytest.mark.skipif(BACKEND != "postgresql", reason="PostgreSQL pass only")
def test_factory_picks_postgres_for_a_postgres_store(engine) -> None:
    limits = limiters_for(engine, workers=2)
    assert isinstance(limits, SharedLimits)
    assert (limits.backend, limits.workers) == ("postgresql", 2)
    # Unlogged: a reservation waits for no WAL flush.
    with engine.connect() as conn:
        persistence = conn.execute(
            text("SELECT relpersistence FROM pg_class WHERE relname = 'rate_buckets'")
        ).scalar_one()
    assert persistence == "u"


@pytest.mark.postgres
@pytest.mark.skipif(BACKEND != "postgresql", reason="PostgreSQL pass only")
def test_postgres_unreachable_mid_run_falls_back(engine, database_url: str) -> None:
    timer = ManualTimer()
    limits = SharedLimits(
        PostgresBuckets(engine), workers=2, monotonic=timer.monotonic, sleep=timer.sleep
    )
    limiter = limits("sms", 20.0)
    limiter.acquire()
    name = make_url(database_url).database
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        # The database goes away under the run: its connections are cut, new ones refused.
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
        before = timer.now
        limiter.acquire()
        limiter.acquire()
        assert "postgresql" in limits.faults["sms"]
        # 10/s alone (20/s over 2 workers), after the window and the workers' slots.
        span = 1 + DEFAULT_JITTER  # the window, with its margin
        assert timer.now - before == pytest.approx(span + 2 * span / 20 + span / 10)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        admin.dispose()


# -- Redis -----------------------------------------------------------------------------


@needs_redis
def test_redis_bucket_gives_consecutive_slots(redis_buckets: RedisBuckets) -> None:
    _consecutive_slots(redis_buckets)


@needs_redis
def test_redis_bucket_is_shared_by_workers(redis_buckets: RedisBuckets) -> None:
    stores = [RedisBuckets.from_url(REDIS_URL, prefix=redis_buckets.prefix) for _ in range(4)]
    try:
        _threads_share_the_rate(stores)
    finally:
        for store in stores:
            store.close()


@needs_redis
def test_an_idle_redis_bucket_expires(redis_buckets: RedisBuckets) -> None:
    redis_buckets.reserve("sms", 1, 0.5)
    ttl = redis_buckets.client.pttl(redis_buckets.prefix + "sms")
    assert 60_000 < ttl <= 61_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server binary")
def test_redis_unreachable_mid_run_falls_back(tmp_path) -> None:
    port = _free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port, socket_connect_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        client.close()
        timer = ManualTimer()
        limits = SharedLimits(
            RedisBuckets.from_url(f"redis://127.0.0.1:{port}/0", timeout=1.0),
            workers=4,
            monotonic=timer.monotonic,
            sleep=timer.sleep,
        )
        sms, email = limits("sms", 8.0), limits("email", 2.0)
        assert sms.acquire() == 0.0
        assert email.acquire() == 0.0
        server.terminate()
        server.wait(timeout=10)
        before = timer.now
        sms.acquire()
        sms.acquire()
        # 2/s alone (8/s over 4 workers), after the window and the workers' slots.
        span = 1 + DEFAULT_JITTER  # the window, with its margin
        assert timer.now - before == pytest.approx(span + 4 * span / 8 + span / 2)
        # 2/s over 4 workers leaves none: this worker stops sending email.
        with pytest.raises(BucketUnavailable, match="stopped sending"):
            email.acquire()
        assert set(limits.faults) == {"sms", "email"}
        assert "redis: ConnectionError" in limits.faults["sms"]
        limits.close()
    finally:
        server.kill()
        server.wait(timeout=10)
