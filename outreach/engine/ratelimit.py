"""Rate limiters for provider calls: one small interface, in-process and shared backends.

The tick paces each paced channel to ``min(policy.rate_limits[channel], channel's own
rate)`` through a :class:`Limiter`: ``acquire(units)`` waits until ``units`` may go and
returns the seconds it waited. Which limiter a tick gets is a :data:`LimiterFactory`'s
choice (``factory(bucket_name, rate)``):

* :class:`RateLimiter`, in this process (SQLite: one writer, one worker): a token bucket
  that allows a burst of one second's worth, as it always has;
* a bucket shared by every worker on one database (PostgreSQL, or Redis where
  ``OUTREACH_REDIS_URL`` is set): see :mod:`outreach.engine.shared_limits`. Shared buckets
  hand out *slots* (:func:`reserve`), so the provider sees no more than ``rate`` requests
  in any one-second window, summed over all workers.

Tests pass a fake ``sleep`` that advances a fake monotonic clock, so nothing in the test
suite ever waits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

__all__ = [
    "DEFAULT_JITTER",
    "Limiter",
    "LimiterFactory",
    "RateLimiter",
    "SlotLimiter",
    "in_process_limiters",
    "reserve",
    "slot_interval",
]

#: Seconds by which one request's trip from its slot to the provider may differ from
#: another's (the database answer, the in-flight mark's commit, the wake-up, the HTTP
#: request; up to ~0.1 s measured on a loaded 2-core machine): slots are spaced so that a
#: window at the provider still holds at most ``rate`` of them. The price: a shared bucket
#: runs at ``rate / 1.2`` on average.
DEFAULT_JITTER = 0.2


class Limiter(Protocol):
    """What the tick needs of a rate limiter (thread-safe).

    ``rate`` is units per second; ``chunk`` the most units one ``acquire`` should cover,
    so the tick groups single-message requests by it (a shared limiter says 1: every
    request takes its own slot).
    """

    rate: float

    @property
    def chunk(self) -> int:
        """The most units the caller should take in one ``acquire``."""
        ...

    def acquire(self, units: float = 1.0) -> float:
        """Wait until ``units`` may go; return the seconds waited."""
        ...


#: ``factory(bucket_name, rate)``: the limiter a tick uses for one channel (``"sms"``).
LimiterFactory = Callable[[str, float], Limiter]


class RateLimiter:
    """Allows ``rate`` units per second on average, bursts up to ``burst`` units.

    Thread-safe: concurrent callers queue on a lock (the one holding it sleeps).

    Example::

        limiter = RateLimiter(50.0)          # 50 messages per second
        limiter.acquire(len(batch))          # waits as long as needed, then returns
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self._monotonic = monotonic
        self._sleep = sleep
        self._tokens = self.burst
        self._last = monotonic()
        self._lock = threading.Lock()
        self.waited = 0.0

    @property
    def chunk(self) -> int:
        """One second's worth: a 1/s policy hands over one message at a time."""
        return max(1, int(self.rate))

    def acquire(self, units: float = 1.0) -> float:
        """Take ``units`` (a batch may be larger than the burst); return seconds waited."""
        with self._lock:
            waited = 0.0
            remaining = units
            while remaining > 0:
                now = self._monotonic()
                self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
                self._last = now
                take = min(remaining, self.burst)
                # The tolerance keeps float rounding from leaving a token forever 1e-16 short.
                if self._tokens + 1e-9 >= take:
                    self._tokens = max(0.0, self._tokens - take)
                    remaining -= take
                    continue
                pause = (take - self._tokens) / self.rate
                self._sleep(pause)
                waited += pause
            self.waited += waited
            return waited


def in_process_limiters(
    *,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> LimiterFactory:
    """The factory of today's per-process limiters (one :class:`RateLimiter` per channel)."""

    def make(name: str, rate: float) -> Limiter:
        return RateLimiter(rate, monotonic=monotonic, sleep=sleep)

    return make


def slot_interval(rate: float, jitter: float = DEFAULT_JITTER) -> float:
    """Seconds between two slots of a bucket of ``rate`` per second.

    ``rate`` slots span ``1 + jitter`` seconds, so requests that each arrive within
    ``jitter`` of their slot put at most ``rate`` into any one-second window.
    """
    if rate <= 0:
        raise ValueError("rate must be positive")
    if jitter < 0:
        raise ValueError("jitter must not be negative")
    return (1.0 + jitter) / rate


def reserve(tat: float, now: float, units: float, interval: float) -> tuple[float, float]:
    """Take ``units`` slots of a bucket; return ``(new_tat, wait)``.

    ``tat`` is the bucket's next free slot (any time in the past means: free now). The
    units take the next ``units`` slots and go together at the last of them, ``wait``
    seconds after ``now``; the slot after that is the new ``tat``. The shared backends
    run this same arithmetic on their server (SQL, Lua) with the server's clock.
    """
    new_tat = max(tat, now) + units * interval
    return new_tat, max(0.0, new_tat - interval - now)


class SlotLimiter:
    """The slot bucket of :func:`reserve`, kept in this process.

    What a shared bucket does, without the server: the in-process fallback of a worker
    whose shared bucket became unreachable (at its share of the rate), and the reference
    the shared backends are tested against. ``start_after`` holds the first slot back
    (a fallback waits out the window of the slots the shared bucket already gave).

    Example::

        limiter = SlotLimiter(20.0)          # at most 20 in any one-second window
        limiter.acquire()                    # one request, paced
    """

    def __init__(
        self,
        rate: float,
        *,
        jitter: float = DEFAULT_JITTER,
        start_after: float = 0.0,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self.interval = slot_interval(rate, jitter)
        self._monotonic = monotonic
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tat = monotonic() + start_after
        self.waited = 0.0

    @property
    def chunk(self) -> int:
        """One unit per acquire: each request takes its own slot."""
        return 1

    def acquire(self, units: float = 1.0) -> float:
        """Take the next ``units`` slots, sleep until the last one; return seconds waited."""
        with self._lock:
            self._tat, wait = reserve(self._tat, self._monotonic(), units, self.interval)
        # Slept outside the lock: the slots are taken, other threads may reserve theirs.
        if wait > 0:
            self._sleep(wait)
        with self._lock:
            self.waited += wait
        return wait
