"""Slot buckets, the fail-safe fallback and the limiter factory, on a fake clock.

The shared backends run :func:`reserve`'s arithmetic on their servers; here it runs in
this process (``LocalStore`` is the same arithmetic behind the :class:`BucketStore`
interface, with a switch that makes it unreachable), so no test waits. The backends
themselves are tested on real servers in ``test_shared_limits_servers.py``.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from engine_world import World
from hypothesis import given, settings
from hypothesis import strategies as st

from channels.base import Channel, SendResult
from outreach.clock import ManualTimer
from outreach.engine.ratelimit import (
    RateLimiter,
    SlotLimiter,
    in_process_limiters,
    reserve,
    slot_interval,
)
from outreach.engine.shared_limits import (
    BucketUnavailable,
    SharedLimiter,
    SharedLimits,
    limiters_for,
)
from outreach.store import make_engine


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """The most instants in any half-open window ``[t, t + window)``."""
    times = sorted(times)
    best = start = 0
    for end, at in enumerate(times):
        while times[start] <= at - window:
            start += 1
        best = max(best, end - start + 1)
    return best


class LocalStore:
    """:func:`reserve` behind the BucketStore interface, on a manual clock; can go down."""

    backend = "local"

    def __init__(self, timer: ManualTimer) -> None:
        self.timer = timer
        self.tats: dict[str, float] = {}
        self.down = False
        self.calls = 0

    def reserve(self, name: str, units: float, interval: float) -> float:
        self.calls += 1
        if self.down:
            raise BucketUnavailable("local: ConnectionError")
        self.tats[name], wait = reserve(self.tats.get(name, 0.0), self.timer.now, units, interval)
        return wait


def test_max_in_window_counts_a_half_open_window() -> None:
    assert max_in_window([0.0, 0.5, 1.0, 1.5]) == 2
    assert max_in_window([0.0, 0.2, 0.4, 0.99]) == 4
    assert max_in_window([]) == 0


def test_reserve_gives_consecutive_slots_and_a_batch_goes_at_its_last() -> None:
    tat, wait = reserve(0.0, 10.0, 1, 0.5)  # an idle bucket: now
    assert (tat, wait) == (10.5, 0.0)
    tat, wait = reserve(tat, 10.0, 1, 0.5)
    assert (tat, wait) == (11.0, 0.5)
    tat, wait = reserve(tat, 10.2, 3, 0.5)  # slots 11.0, 11.5, 12.0: all go at 12.0
    assert tat == pytest.approx(12.5)
    assert wait == pytest.approx(1.8)
    # Idle for a while: no credit is saved up beyond the present.
    assert reserve(tat, 100.0, 1, 0.5) == (100.5, 0.0)


def test_slot_interval_keeps_a_margin_for_jitter() -> None:
    assert slot_interval(20.0, 0.0) == pytest.approx(0.05)
    assert slot_interval(20.0, 0.1) == pytest.approx(0.055)
    with pytest.raises(ValueError):
        slot_interval(0.0)
    with pytest.raises(ValueError):
        slot_interval(1.0, -0.1)


def test_slot_limiter_paces_each_request_to_its_own_slot() -> None:
    timer = ManualTimer()
    limiter = SlotLimiter(10.0, jitter=0.0, monotonic=timer.monotonic, sleep=timer.sleep)
    assert limiter.chunk == 1
    waits = [limiter.acquire() for _ in range(4)]
    assert waits == pytest.approx([0.0, 0.1, 0.1, 0.1])
    assert timer.now == pytest.approx(0.3)
    assert limiter.waited == pytest.approx(0.3)


@settings(max_examples=100, deadline=None)
@given(
    rate=st.integers(1, 200),
    jitter=st.floats(0.01, 0.3),  # with no margin at all, float rounding decides
    gaps=st.lists(st.floats(0, 0.5), min_size=1, max_size=300),
    delays=st.lists(st.floats(0, 0.99), min_size=300, max_size=300),  # of the jitter
)
def test_no_window_at_the_provider_holds_more_than_the_rate(
    rate: int, jitter: float, gaps: list[float], delays: list[float]
) -> None:
    # Requests arrive anywhere within ``jitter`` after their slot: still at most ``rate``
    # in any one-second window.
    timer = ManualTimer()
    limiter = SlotLimiter(rate, jitter=jitter, monotonic=timer.monotonic, sleep=timer.sleep)
    arrivals = []
    for gap, delay in zip(gaps, delays, strict=False):
        timer.now += gap
        limiter.acquire()
        arrivals.append(timer.now + delay * jitter)
    assert max_in_window(arrivals) <= rate


def test_the_in_process_limiter_keeps_its_burst_and_chunk() -> None:
    timer = ManualTimer()
    make = in_process_limiters(monotonic=timer.monotonic, sleep=timer.sleep)
    limiter = make("sms", 2.5)
    assert isinstance(limiter, RateLimiter)
    assert limiter.chunk == 2
    assert RateLimiter(0.5).chunk == 1
    assert [limiter.acquire() for _ in range(3)] == pytest.approx([0.0, 0.0, 0.2])


def test_the_in_process_limiter_is_thread_safe() -> None:
    # Real threads, fake time: the bucket's arithmetic is never interleaved, so eight
    # threads taking 50 units each wait exactly as one thread taking 400 would.
    timer = ManualTimer()
    lock = threading.Lock()

    def sleep(seconds: float) -> None:
        with lock:
            timer.sleep(seconds)

    limiter = RateLimiter(100.0, monotonic=timer.monotonic, sleep=sleep)
    threads = [
        threading.Thread(target=lambda: [limiter.acquire() for _ in range(50)]) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert timer.now == pytest.approx(3.0)  # 400 units, 100 of them the burst


def test_workers_sharing_a_bucket_share_its_rate() -> None:
    timer = ManualTimer()
    store = LocalStore(timer)
    workers = [
        SharedLimiter(
            store, "sms", 20.0, jitter=0.0, monotonic=timer.monotonic, sleep=lambda s: None
        )
        for _ in range(4)
    ]
    waits = [workers[i % 4].acquire() for i in range(40)]
    # 40 requests of four workers at one instant: one slot each, 1/20 s apart.
    assert waits == pytest.approx([i * 0.05 for i in range(40)])
    assert all(w.chunk == 1 for w in workers)


def test_an_unreachable_bucket_falls_back_to_this_workers_share() -> None:
    timer = ManualTimer()
    store = LocalStore(timer)
    limits = SharedLimits(
        store, workers=4, jitter=0.0, monotonic=timer.monotonic, sleep=timer.sleep
    )
    limiter = limits("sms", 20.0)
    assert limiter.acquire() == 0.0
    assert limits.faults == {}
    store.down = True
    # First one window passes, and the slots the other three workers may still hold
    # (4 x 1/20 s); then this worker's share, 5/s.
    assert limiter.acquire() == pytest.approx(1.2)
    assert limiter.acquire() == pytest.approx(0.2)
    assert limiter.acquire() == pytest.approx(0.2)
    assert timer.now == pytest.approx(1.6)
    assert limits.faults == {"sms": "local: ConnectionError"}
    # For the rest of the run: the store is not asked again, even once it is back.
    store.down = False
    calls = store.calls
    limiter.acquire()
    assert store.calls == calls


def test_a_limit_too_small_to_share_stops_sending() -> None:
    timer = ManualTimer()
    store = LocalStore(timer)
    limiter = SharedLimiter(
        store, "sms", 1.0, workers=4, monotonic=timer.monotonic, sleep=timer.sleep
    )
    limiter.acquire()
    store.down = True
    for _ in range(2):
        with pytest.raises(BucketUnavailable, match="no safe share: stopped sending"):
            limiter.acquire()
    assert limiter.fault == "local: ConnectionError"


@settings(max_examples=100, deadline=None)
@given(
    workers=st.integers(1, 6),
    rate=st.integers(1, 60),
    jitter=st.sampled_from([0.01, 0.1]),
    fail_after=st.integers(0, 300),
    gaps=st.lists(st.floats(0, 0.3), min_size=300, max_size=300),
)
def test_the_fallback_keeps_all_workers_within_the_limit(
    workers: int, rate: int, jitter: float, fail_after: int, gaps: list[float]
) -> None:
    # Workers ask for slots as real time goes (the one whose clock is earliest acts next,
    # after a random pause of its own); the store goes down mid-run. All their sends
    # together, before and after the fault, never put more than ``rate`` in a window.
    timer = ManualTimer()
    store = LocalStore(timer)
    clocks = [0.0] * workers

    def limiter(i: int) -> SharedLimiter:
        return SharedLimiter(
            store,
            "sms",
            rate,
            workers=workers,
            jitter=jitter,
            monotonic=lambda: clocks[i],
            sleep=lambda s: clocks.__setitem__(i, clocks[i] + s),
        )

    limiters = {i: limiter(i) for i in range(workers)}
    sends = []
    for n, gap in enumerate(gaps):
        if not limiters:
            break
        i = min(limiters, key=lambda k: (clocks[k], k))
        timer.now = clocks[i]
        store.down = n >= fail_after
        try:
            limiters[i].acquire()
        except BucketUnavailable:
            del limiters[i]  # this worker stopped sending
            continue
        sends.append(clocks[i])
        clocks[i] += gap
    assert max_in_window(sends) <= rate


class PacedSms(Channel):
    name = "sms"
    max_batch = 10
    max_schedule_ahead = timedelta(days=35)

    def __init__(self) -> None:
        self.requests: list[int] = []

    def send(self, batch):
        self.requests.append(len(batch))
        return [SendResult.sent(m, f"SM{i}") for i, m in enumerate(batch)]


def test_the_tick_takes_its_limiters_from_the_factory(world: World) -> None:
    timer = ManualTimer()
    store = LocalStore(timer)
    limits = SharedLimits(store, jitter=0.0, monotonic=timer.monotonic, sleep=timer.sleep)
    world.sms = PacedSms()  # type: ignore[assignment]
    world.add(
        *(
            {
                "external_id": f"s{i}",
                "phone": f"+1 212 555 01{i:02d}",
                "sms_consent": "true",
                "preferred_channel": "sms",
                "stage": "applied",
                "timezone": "America/New_York",
            }
            for i in range(5)
        )
    )
    world.tick(
        datetime(2026, 11, 3, 9, 0, tzinfo=ZoneInfo("America/New_York")),
        sleep=timer.sleep,
        monotonic=timer.monotonic,
        limiters=limits,
    )
    # policy.rate_limits.sms is 1/s: five requests of one message, one shared slot each.
    assert world.sms.requests == [1, 1, 1, 1, 1]
    assert [lim.name for lim in limits.limiters] == ["sms"]
    assert store.calls == 5
    assert sum(timer.slept) == pytest.approx(4.0)


def test_the_factory_keeps_sqlite_in_process(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'one.db'}")
    make = limiters_for(engine)
    assert isinstance(make("sms", 1.0), RateLimiter)
    engine.dispose()


def test_the_factory_prefers_redis_when_it_is_set(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'one.db'}")
    # Nothing is asked of the server until a limiter acquires.
    limits = limiters_for(engine, redis_url="redis://127.0.0.1:1/0", workers=3)
    assert isinstance(limits, SharedLimits)
    assert (limits.backend, limits.workers) == ("redis", 3)
    limits.close()
    with pytest.raises(ValueError):
        limiters_for(engine, redis_url="http://not-redis")
    engine.dispose()


def test_a_worker_that_stops_leaves_its_claims_to_the_next_run(world: World) -> None:
    # 1/s over 4 workers has no safe share: once the store is down this worker's tick
    # ends with the error; nothing was lost, and the next run sends every touch once.
    timer = ManualTimer()
    store = LocalStore(timer)
    world.sms = PacedSms()  # type: ignore[assignment]
    world.add(
        *(
            {
                "external_id": f"s{i}",
                "phone": f"+1 212 555 01{i:02d}",
                "sms_consent": "true",
                "preferred_channel": "sms",
                "stage": "applied",
                "timezone": "America/New_York",
            }
            for i in range(5)
        )
    )
    limits = SharedLimits(store, workers=4, monotonic=timer.monotonic, sleep=timer.sleep)
    limiter = limits("sms", 1.0)
    limiter.acquire()
    store.down = True
    at = datetime(2026, 11, 3, 9, 0, tzinfo=ZoneInfo("America/New_York"))
    with pytest.raises(BucketUnavailable, match="stopped sending"):
        world.tick(at, sleep=timer.sleep, monotonic=timer.monotonic, limiters=lambda n, r: limiter)
    assert world.sms.requests == []
    # The next run (past the dead run's lease), with the store back: all five, once each.
    store.down = False
    world.tick(
        at + timedelta(minutes=20),
        sleep=timer.sleep,
        monotonic=timer.monotonic,
        limiters=SharedLimits(store, monotonic=timer.monotonic, sleep=timer.sleep),
    )
    assert world.sms.requests == [1, 1, 1, 1, 1]
    statuses = Counter(t.status for t in world.touches())
    assert statuses["sent"] == 5
    assert not statuses["claimed"] and not statuses["in_flight"]
