"""Slot buckets kept in Redis (``OUTREACH_REDIS_URL``): one key per bucket.

A reservation is one Lua script, atomic on the server: it reads the server's ``TIME``,
moves the bucket's next free slot on by the units taken (the arithmetic of
:func:`outreach.engine.ratelimit.reserve`) and returns how long the caller waits. Every
worker that shares the Redis server shares the bucket, whichever database or machine it
runs on; a bucket idle for a minute expires.

Example::

    buckets = RedisBuckets.from_url("redis://127.0.0.1:6379/0")
    wait = buckets.reserve("sms", 1, slot_interval(20.0))   # then sleep ``wait`` seconds
"""

from __future__ import annotations

from typing import Any

import redis
from redis.exceptions import RedisError

from outreach.engine.shared_limits import BucketUnavailable

__all__ = ["RedisBuckets"]

# Numbers cross the Lua boundary as strings: a Lua number returned to Redis is truncated
# to an integer, which would round every wait down to whole seconds.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cost = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local new = math.max(tat, now) + cost
local ttl = math.ceil((new - now + 60) * 1000)
redis.call('SET', KEYS[1], string.format('%.6f', new), 'PX', ttl)
return string.format('%.6f', new - interval - now)
"""


class RedisBuckets:
    """Reserve slots of named buckets, keys ``<prefix><name>`` on one Redis server."""

    backend = "redis"

    def __init__(self, client: redis.Redis, *, prefix: str = "outreach:rate:") -> None:
        self.client = client
        self.prefix = prefix
        self._script: Any = client.register_script(_RESERVE)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "outreach:rate:", timeout: float = 2.0):
        """Buckets on the server at ``url``; a call gives up after ``timeout`` seconds."""
        client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=30
        )
        return cls(client, prefix=prefix)

    def reserve(self, name: str, units: float, interval: float) -> float:
        """Take ``units`` slots of bucket ``name``; return the seconds to wait before going.

        Raises :class:`BucketUnavailable` when the server cannot be asked.
        """
        try:
            wait = self._script(keys=[self.prefix + name], args=[units * interval, interval])
        except RedisError as exc:
            raise BucketUnavailable(f"{self.backend}: {type(exc).__name__}") from exc
        return max(0.0, float(wait))

    def close(self) -> None:
        """Release the client's connections."""
        self.client.close()
