"""A token-bucket rate limiter for provider calls, with an injected clock and sleep.

The tick paces each paced channel to ``min(policy.rate_limits[channel], channel's own
rate)``. Tests pass a fake ``sleep`` that advances a fake monotonic clock, so nothing in
the test suite ever waits.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["RateLimiter"]


class RateLimiter:
    """Allows ``rate`` units per second on average, bursts up to ``burst`` units.

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
        self.waited = 0.0

    def acquire(self, units: float = 1.0) -> float:
        """Take ``units`` (a batch may be larger than the burst); return seconds waited."""
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
