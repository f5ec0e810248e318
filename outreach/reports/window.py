"""The report's time window: ``[since, until)`` in UTC, parsed from ISO-8601 with an offset.

A time without an offset is refused rather than guessed (a report read in New York and in
Berlin must mean the same instants). The default window is the 30 days up to ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from outreach.clock import parse_iso
from outreach.errors import InputError

__all__ = ["DEFAULT_DAYS", "Window", "parse_time", "resolve_window"]

#: length of the window when ``--since`` is not given
DEFAULT_DAYS = 30


@dataclass(frozen=True)
class Window:
    """Instants ``since <= t < until``, both aware UTC datetimes."""

    since: datetime
    until: datetime

    def as_dict(self) -> dict[str, str]:
        """The contract's ``window`` object (ISO-8601 with offset)."""
        return {"since": self.since.isoformat(), "until": self.until.isoformat()}


def parse_time(text: str, option: str) -> datetime:
    """``text`` as an aware UTC instant; ``InputError`` naming ``option`` otherwise.

    >>> parse_time("2026-11-25T09:00:00-05:00", "--since").isoformat()
    '2026-11-25T14:00:00+00:00'
    """
    try:
        parsed = parse_iso(text)
    except ValueError as exc:
        raise InputError(f"{option}: {exc}") from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        value = text.strip()
        raise InputError(
            f"{option}: {text!r} has no UTC offset; add one, e.g. {value}Z or {value}-05:00"
        )
    return parsed.astimezone(UTC)


def resolve_window(since: datetime | None, until: datetime | None, now: datetime) -> Window:
    """The window from optional bounds: ``until`` defaults to ``now``, ``since`` to 30 days
    before ``until``. ``InputError`` when ``since`` is not before ``until``."""
    end = (until or now).astimezone(UTC)
    start = since.astimezone(UTC) if since else end - timedelta(days=DEFAULT_DAYS)
    if start >= end:
        raise InputError(
            f"--since ({start.isoformat()}) must be before --until ({end.isoformat()})"
        )
    return Window(start, end)
