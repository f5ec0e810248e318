"""An independent oracle for send windows: wall clocks read from UTC offsets, nothing else.

The product places windows by turning local wall times into UTC instants. The oracle goes
the other way only: for a UTC instant it asks zoneinfo for that instant's UTC offset
(``fromutc``), adds it, and reads the candidate's wall clock. An instant is inside the
window when that wall clock shows an allowed weekday, not a holiday, and a time in
``[start, end)``. The earliest allowed instant is found by brute force, minute by minute
(every boundary of the allowed set is a whole minute: window edges are ``HH:MM`` and zone
transitions fall on whole minutes).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

MINUTE = timedelta(minutes=1)


def wall_clock(at: datetime, zone: ZoneInfo) -> datetime:
    """What a clock in ``zone`` shows at the UTC instant ``at`` (naive)."""
    utc = at.astimezone(UTC).replace(tzinfo=None)
    offset = zone.fromutc(utc.replace(tzinfo=zone)).utcoffset()
    assert offset is not None
    return utc + offset


def inside(
    at: datetime,
    zone: ZoneInfo,
    start: time,
    end: time,
    days: frozenset[int],
    is_holiday: Callable[[date], bool] = lambda day: False,
) -> bool:
    """Whether the candidate's wall clock at ``at`` is inside the window."""
    wall = wall_clock(at, zone)
    return wall.weekday() in days and not is_holiday(wall.date()) and start <= wall.time() < end


class Scan:
    """The allowed minutes of ``[since, until)``, precomputed, for many earliest-instant look-ups."""

    def __init__(
        self,
        since: datetime,
        until: datetime,
        zone: ZoneInfo,
        start: time,
        end: time,
        days: frozenset[int],
        is_holiday: Callable[[date], bool] = lambda day: False,
    ) -> None:
        self.since = since.replace(second=0, microsecond=0)
        self.zone, self.start, self.end, self.days = zone, start, end, days
        self.is_holiday = is_holiday
        count = int((until - self.since) / MINUTE)
        allowed = [
            inside(self.since + i * MINUTE, zone, start, end, days, is_holiday)
            for i in range(count)
        ]
        # next_ok[i]: the first allowed minute index >= i, or None.
        self.next_ok: list[int | None] = [None] * (count + 1)
        for i in range(count - 1, -1, -1):
            self.next_ok[i] = i if allowed[i] else self.next_ok[i + 1]

    def earliest(self, due: datetime) -> datetime | None:
        """The earliest allowed instant ``>= due`` inside the scanned range, or None."""
        if inside(due, self.zone, self.start, self.end, self.days, self.is_holiday):
            return due
        index = -(-(due - self.since) // MINUTE)  # the first whole minute at or after due
        if index < 0 or index >= len(self.next_ok):
            raise ValueError(f"{due} is outside the scanned range")
        found = self.next_ok[index]
        return None if found is None else self.since + found * MINUTE
