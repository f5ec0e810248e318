"""Slot buckets kept in PostgreSQL: one row per bucket in ``rate_buckets`` (migration 0007).

A reservation is one statement: it reads the database server's ``clock_timestamp()``,
takes the row's lock (``INSERT … ON CONFLICT DO UPDATE``: concurrent workers queue on the
row for the few microseconds the update takes) and moves the bucket's next free slot on
by the units taken, with :func:`outreach.engine.ratelimit.reserve`'s arithmetic. Every
worker on the database shares the one clock and the one row, so the slots they are given
never overlap, whichever machine they run on.

Example::

    buckets = PostgresBuckets(engine)
    wait = buckets.reserve("sms", 1, slot_interval(20.0))   # then sleep ``wait`` seconds
"""

from __future__ import annotations

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from outreach.engine.shared_limits import BucketUnavailable

__all__ = ["PostgresBuckets"]

_RESERVE = text(
    """
    WITH clock AS (SELECT extract(epoch FROM clock_timestamp())::float8 AS now)
    INSERT INTO rate_buckets AS b (name, tat)
    SELECT :name, clock.now + :cost FROM clock
    ON CONFLICT (name) DO UPDATE SET tat = GREATEST(b.tat, EXCLUDED.tat - :cost) + :cost
    RETURNING b.tat - :interval - (SELECT now FROM clock) AS wait
    """
)


class PostgresBuckets:
    """Reserve slots of named buckets in the ``rate_buckets`` table of ``engine``."""

    backend = "postgresql"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # One statement is its own transaction: no BEGIN and COMMIT round trips.
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    def reserve(self, name: str, units: float, interval: float) -> float:
        """Take ``units`` slots of bucket ``name``; return the seconds to wait before going.

        Raises :class:`BucketUnavailable` when the database cannot be asked.
        """
        try:
            with self._autocommit.connect() as conn:
                wait = conn.execute(
                    _RESERVE, {"name": name, "cost": units * interval, "interval": interval}
                ).scalar_one()
        except SQLAlchemyError as exc:
            raise BucketUnavailable(f"{self.backend}: {type(exc).__name__}") from exc
        return max(0.0, float(wait))
