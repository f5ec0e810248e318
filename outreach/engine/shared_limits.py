"""Provider rate limits shared by every worker on one database, and the factory choosing them.

Two workers on one PostgreSQL each pacing SMS at Twilio's rate in their own process would
send at twice that rate together. So where several workers may run, a channel's limiter
takes its slots from a bucket all of them share:

* **Redis**, where ``OUTREACH_REDIS_URL`` is set (whatever the database);
* else **PostgreSQL**, when the store is PostgreSQL (``rate_buckets``, one row a bucket);
* else (SQLite: one writer, one worker) the in-process :class:`RateLimiter`, as before.

A shared bucket hands out slots ``(1 + jitter) / rate`` seconds apart (see
:func:`slot_interval`): summed over all workers, the provider sees at most ``rate``
requests in any one-second window, as long as a request reaches it within ``jitter``
seconds of its slot. Each request takes its own slot (``chunk`` is 1).

**Fail-safe.** If the shared bucket cannot be asked mid-run (the database or Redis is
unreachable, the table is gone), the worker does not guess. It logs a warning once and,
for the rest of the run, paces itself with an in-process :class:`SlotLimiter` at its
share, ``floor(rate / workers)`` per second (``workers``: how many ``outreach run
--workers N`` started, or ``--worker-of N`` for runs started separately; else 1), after
first waiting out one window plus the slots the other workers may still hold (one request
each), so no window holds both shared and fallback slots. The workers' shares add up to
no more than the limit. Where the share is zero (a limit of 1/s over 4 workers), it stops
sending instead: ``acquire`` raises :class:`BucketUnavailable`, the tick ends, and what it had
claimed but not sent is due again at the next run. It never goes back to the shared
bucket within the run: its own fallback slots are not recorded there.

Example::

    limits = limiters_for(engine, redis_url=None, workers=4)
    tick = Tick(config, clock, channels, transactions, limiters=limits)
    ...
    limits.close()
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Protocol

from sqlalchemy import Engine

from outreach.engine.ratelimit import (
    DEFAULT_JITTER,
    Limiter,
    SlotLimiter,
    in_process_limiters,
    slot_interval,
)
from outreach.errors import StoreError

__all__ = [
    "BucketStore",
    "BucketUnavailable",
    "SharedLimiter",
    "SharedLimits",
    "limiters_for",
]

log = logging.getLogger("outreach.ratelimit")


class BucketUnavailable(StoreError):
    """The server that keeps the shared buckets could not be asked (names the backend)."""


class BucketStore(Protocol):
    """Where shared buckets live: one atomic reservation per call, on the server's clock."""

    backend: str

    def reserve(self, name: str, units: float, interval: float) -> float:
        """Take ``units`` slots ``interval`` apart of bucket ``name``; return seconds to wait.

        Raises :class:`BucketUnavailable` when the server cannot be asked.
        """
        ...


class SharedLimiter:
    """A channel's limiter whose slots come from a :class:`BucketStore` (thread-safe).

    Falls back, once and for the rest of its life, to an in-process :class:`SlotLimiter`
    at ``floor(rate / workers)`` when the store fails, or stops (raises
    :class:`BucketUnavailable`) where that share is zero; see the module docstring.
    """

    def __init__(
        self,
        store: BucketStore,
        name: str,
        rate: float,
        *,
        workers: int = 1,
        jitter: float = DEFAULT_JITTER,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.store = store
        self.name = name
        self.rate = rate
        self.workers = workers
        self.jitter = jitter
        self.interval = slot_interval(rate, jitter)
        self._monotonic = monotonic
        self._sleep = sleep
        self._lock = threading.Lock()
        self.fallback: SlotLimiter | None = None
        #: why the shared bucket was given up (None while it serves)
        self.fault: str | None = None
        #: the most units one reservation took: how far ahead a worker's slot may lie
        self._largest = 1.0
        self.waited = 0.0

    @property
    def chunk(self) -> int:
        """One unit per acquire: each request takes its own shared slot."""
        return 1

    def acquire(self, units: float = 1.0) -> float:
        """Take ``units`` slots (shared, or the fallback's); sleep until the last one."""
        fallback = self.fallback
        if fallback is None and self.fault is None:
            try:
                self._largest = max(self._largest, units)
                wait = self.store.reserve(self.name, units, self.interval)
            except BucketUnavailable as exc:
                fallback = self._fall_back(str(exc))
            else:
                if wait > 0:
                    self._sleep(wait)
                with self._lock:
                    self.waited += wait
                return wait
        if fallback is None:
            raise BucketUnavailable(self._stopped())
        waited = fallback.acquire(units)
        with self._lock:
            self.waited += waited
        return waited

    def _fall_back(self, why: str) -> SlotLimiter:
        with self._lock:
            if self.fault is None:
                self.fault = why
                share = math.floor(self.rate / self.workers)
                if share < 1:
                    log.warning("%s", self._stopped())
                else:
                    # Past every slot the shared bucket may have given: one window, plus
                    # one request of each worker still waiting for its slot.
                    held = self.workers * self._largest * self.interval
                    self.fallback = SlotLimiter(
                        share,
                        jitter=self.jitter,
                        start_after=1.0 + self.jitter + held,
                        monotonic=self._monotonic,
                        sleep=self._sleep,
                    )
                    log.warning(
                        "shared rate limit %r unreachable (%s): this worker paces it alone "
                        "at %d/s (its share of %.3g/s over %d workers) for the rest of the run",
                        self.name,
                        why,
                        share,
                        self.rate,
                        self.workers,
                    )
            if self.fallback is None:
                raise BucketUnavailable(self._stopped())
            return self.fallback

    def _stopped(self) -> str:
        return (
            f"shared rate limit {self.name!r} unreachable ({self.fault}) and "
            f"{self.rate:g}/s over {self.workers} workers leaves this one no safe share: "
            "stopped sending; what was claimed and not sent is due again at the next run"
        )


class SharedLimits:
    """A :data:`LimiterFactory` over one :class:`BucketStore`; remembers its limiters.

    Call it as ``limits(name, rate)``; :attr:`limiters` lists what it made (a run's
    summary says which fell back), :meth:`close` releases the store's connections.
    """

    def __init__(
        self,
        store: BucketStore,
        *,
        workers: int = 1,
        jitter: float = DEFAULT_JITTER,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.backend = store.backend
        self.workers = workers
        self.jitter = jitter
        self._monotonic = monotonic
        self._sleep = sleep
        self.limiters: list[SharedLimiter] = []

    def __call__(self, name: str, rate: float) -> Limiter:
        """The shared limiter of bucket ``name`` at ``rate`` per second."""
        limiter = SharedLimiter(
            self.store,
            name,
            rate,
            workers=self.workers,
            jitter=self.jitter,
            monotonic=self._monotonic,
            sleep=self._sleep,
        )
        self.limiters.append(limiter)
        return limiter

    @property
    def faults(self) -> dict[str, str]:
        """Bucket name -> why this process paces it alone (buckets that fell back)."""
        return {lim.name: lim.fault for lim in self.limiters if lim.fault is not None}

    def close(self) -> None:
        """Release the store's connections, if it holds any of its own."""
        close = getattr(self.store, "close", None)
        if close is not None:
            close()


def limiters_for(
    engine: Engine,
    *,
    redis_url: str | None = None,
    workers: int = 1,
    jitter: float = DEFAULT_JITTER,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Callable[[str, float], Limiter]:
    """The limiter factory for a run on ``engine``: Redis, PostgreSQL or in-process.

    ``workers`` is how many workers share the limits (what the fallback divides by).
    """
    if redis_url:
        from outreach.engine.limits_redis import RedisBuckets

        store: BucketStore = RedisBuckets.from_url(redis_url)
    elif engine.dialect.name == "postgresql":
        from outreach.engine.limits_pg import PostgresBuckets

        store = PostgresBuckets(engine)
    else:
        return in_process_limiters(monotonic=monotonic, sleep=sleep)
    return SharedLimits(store, workers=workers, jitter=jitter, monotonic=monotonic, sleep=sleep)
