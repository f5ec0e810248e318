"""Clocks: every decision in the engine takes ``now`` from one of these.

``SystemClock`` is the only place that reads the wall clock. ``FixedClock`` is what
``--now`` and the tests use; it can be moved forward explicitly, never by sleeping.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["Clock", "FixedClock", "ManualTimer", "SystemClock", "parse_instant", "parse_iso"]


class Clock(Protocol):
    """Something that says what time it is, always timezone-aware (UTC)."""

    def now(self) -> datetime:
        """Return the current instant as an aware UTC datetime."""
        ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> datetime:
        """Return the current UTC time."""
        return datetime.now(UTC)


class FixedClock:
    """A clock that stands still until told to move (``--now`` and tests)."""

    def __init__(self, at: datetime) -> None:
        self._at = _aware(at)

    def now(self) -> datetime:
        """Return the simulated instant."""
        return self._at

    def set(self, at: datetime) -> None:
        """Jump to ``at``."""
        self._at = _aware(at)

    def advance(self, delta: timedelta) -> None:
        """Move forward by ``delta``."""
        self._at = self._at + delta


class ManualTimer:
    """A monotonic clock and a ``sleep`` that advances it: pacing and retries, no waiting.

    Pass ``timer.monotonic`` and ``timer.sleep`` wherever a rate limiter or an HTTP
    client takes them; ``slept`` lists every pause asked for.
    """

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        """Seconds on the manual clock."""
        return self.now

    def sleep(self, seconds: float) -> None:
        """Advance the clock instead of waiting."""
        self.slept.append(seconds)
        self.now += seconds


def _aware(at: datetime) -> datetime:
    if at.tzinfo is None:
        return at.replace(tzinfo=UTC)
    return at.astimezone(UTC)


def parse_iso(text: str) -> datetime:
    """Parse ISO-8601 text (``Z`` for UTC) as written: naive when it has no offset.

    Raises ``ValueError`` with the offending text when it is not ISO-8601.
    """
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{text!r} is not an ISO-8601 time; use e.g. 2026-11-25T09:00:00-05:00"
        ) from None


def parse_instant(text: str) -> datetime:
    """Parse an ISO-8601 instant; a value without an offset is read as UTC.

    Raises ``ValueError`` with the offending text when it is not ISO-8601.
    """
    return _aware(parse_iso(text))
