"""Send windows in the candidate's local time, DST-correct, with a holiday calendar.

:class:`SendCalendar` answers one question: the earliest instant at or after ``t`` at which
a person in zone ``Z`` may be contacted (allowed weekday, not a holiday, between the
window's start and end on their wall clock).

An instant is inside the window when the candidate's clock, at that instant, shows an
allowed day and a time in ``[start, end)``. On the nights clocks change this decides:

* a start that does not exist that day (skipped hour) opens the window when the clock
  jumps past it (a 02:30 start opens at 03:00 EDT in New York); an end that does not exist
  closes it at the jump;
* a time that exists twice (repeated hour): a start opens at its first occurrence, an end
  closes at its first occurrence; when the clock then goes back, the window follows the
  clock (closed again while it shows a time before the start, open again while it shows a
  time before the end), so nothing is sent while the candidate's clock reads outside it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays as holidays_lib
import phonenumbers
from phonenumbers import timezone as phone_timezones

from outreach.cadence import Policy, SendWindow, Step, StepWindow

__all__ = ["SendCalendar", "zone_for"]

_MAX_DAYS = 400
#: answers a calendar remembers before it starts afresh (a tick asks about a few instants)
_ANSWERS_KEPT = 65536


class SendCalendar:
    """The policy's send window and holiday calendar, evaluated per time zone.

    ``window`` (a transactional step's own :class:`~outreach.cadence.StepWindow`) replaces
    the policy's hours and days; its ``holidays: false`` drops the holiday calendar too.
    """

    def __init__(self, policy: Policy, window: StepWindow | None = None) -> None:
        self.window: SendWindow = window or policy.send_window
        self.days = self.window.weekday_numbers
        keep_holidays = window is None or window.holidays
        self.holidays = (
            holidays_lib.country_holidays(policy.holidays)
            if policy.holidays and keep_holidays
            else None
        )
        self._holiday_cache: dict[date, bool] = {}
        # Answers by (instant, zone): in a tick most due touches are overdue, so they ask
        # about the same `now` in the same few zones.
        self._answers: dict[tuple[datetime, ZoneInfo], tuple[datetime, str | None]] = {}

    @classmethod
    def for_step(cls, policy: Policy, step: Step, default: SendCalendar) -> SendCalendar:
        """The calendar a step's touches follow: its own window, else ``default``."""
        return default if step.send_window is None else cls(policy, step.send_window)

    def is_holiday(self, day: date) -> bool:
        """Whether ``day`` is a holiday in the policy's calendar."""
        if self.holidays is None:
            return False
        known = self._holiday_cache.get(day)
        if known is None:
            known = self._holiday_cache[day] = day in self.holidays
        return known

    def allowed(self, at: datetime, zone: ZoneInfo) -> bool:
        """Whether ``at`` falls inside the window in ``zone``."""
        return self.next_allowed(at, zone)[0] == at

    def next_allowed(self, at: datetime, zone: ZoneInfo) -> tuple[datetime, str | None]:
        """The earliest allowed instant ``>= at`` (UTC) and why ``at`` itself was not.

        The reason is ``None`` when ``at`` is allowed, else ``holiday``, ``weekend`` (a day
        outside ``send_window.days``) or ``send window`` (outside the hours).
        """
        key = (at, zone)
        known = self._answers.get(key)
        if known is None:
            if len(self._answers) >= _ANSWERS_KEPT:
                self._answers.clear()
            known = self._answers[key] = self._next_allowed(at, zone)
        # An allowed instant is answered with the caller's own object (its tzinfo too).
        return (at, known[1]) if known[0] == at else known

    def _next_allowed(self, at: datetime, zone: ZoneInfo) -> tuple[datetime, str | None]:
        # A clock set back across midnight shows the day before again, so that day's hours
        # may still lie ahead of `at`; reasons are given from `at`'s own day on.
        day = at.astimezone(zone).date() - timedelta(days=1)
        reason: str | None = None
        for index in range(_MAX_DAYS):
            counts = index > 0
            if day.weekday() not in self.days:
                reason = reason or ("weekend" if counts else None)
            elif self.is_holiday(day):
                reason = reason or ("holiday" if counts else None)
            else:
                for open_, close in _spans(day, self.window.start, self.window.end, zone):
                    if at < open_:
                        return open_, reason or "send window"
                    if at < close:
                        return at, reason
                reason = reason or ("send window" if counts else None)
            day += timedelta(days=1)
        raise ValueError("no allowed send time within 400 days; check send_window and holidays")


#: Every zone's UTC offset lies within these bounds (tzdata: -12:00 to +14:00).
_LOWEST_OFFSET = timedelta(hours=-13)
_HIGHEST_OFFSET = timedelta(hours=15)
#: Offsets are probed this far apart: no zone changes its offset twice within an hour (in
#: tzdata since 1970 two changes of one zone are never less than six days apart).
_PROBE = timedelta(hours=1)
_SECOND = timedelta(seconds=1)


@lru_cache(maxsize=65536)
def _spans(
    day: date, start: time, end: time, zone: ZoneInfo
) -> tuple[tuple[datetime, datetime], ...]:
    """The UTC intervals during which a clock in ``zone`` shows ``day`` between ``start``
    and ``end``: one on most days, none when those hours are skipped, two when the clock
    is set back across an edge of the window."""
    opens = datetime.combine(day, start, tzinfo=UTC)
    closes = datetime.combine(day, end, tzinfo=UTC)
    spans: list[tuple[datetime, datetime]] = []
    for begin, finish, offset in _segments(opens - _HIGHEST_OFFSET, closes - _LOWEST_OFFSET, zone):
        # While the offset stays the same, the clock shows utc + offset.
        low, high = max(begin, opens - offset), min(finish, closes - offset)
        if low >= high:
            continue
        if spans and spans[-1][1] == low:
            low = spans.pop()[0]
        spans.append((low, high))
    return tuple(spans)


def _segments(
    begin: datetime, finish: datetime, zone: ZoneInfo
) -> list[tuple[datetime, datetime, timedelta]]:
    """``[begin, finish)`` cut where ``zone``'s UTC offset changes, with each piece's offset."""
    pieces: list[tuple[datetime, datetime, timedelta]] = []
    low, offset = begin, _offset(begin, zone)
    probe = begin
    while probe < finish:
        ahead = min(probe + _PROBE, finish)
        if _offset(ahead, zone) != offset:
            # The change happens in (probe, ahead]: find its first second.
            same, changed = probe, ahead
            while changed - same > _SECOND:
                middle = same + (changed - same) / 2
                middle = max(middle.replace(microsecond=0), same + _SECOND)
                if _offset(middle, zone) == offset:
                    same = middle
                else:
                    changed = middle
            pieces.append((low, changed, offset))
            low, offset = changed, _offset(changed, zone)
        probe = ahead
    pieces.append((low, finish, offset))
    return pieces


def _offset(at: datetime, zone: ZoneInfo) -> timedelta:
    offset = at.astimezone(zone).utcoffset()
    assert offset is not None
    return offset


@lru_cache(maxsize=4096)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@lru_cache(maxsize=65536)
def _phone_zone(e164: str) -> str | None:
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return None
    zones = [z for z in phone_timezones.time_zones_for_number(number) if z != "Etc/Unknown"]
    return zones[0] if len(zones) == 1 else None


def zone_for(timezone: str | None, phone: str | None, default: str) -> tuple[ZoneInfo, str]:
    """A person's zone: from the record, else the phone number, else the policy default.

    Returns the zone and where it came from (``record``, ``phone`` or ``default``).
    """
    if timezone:
        try:
            return _zone(timezone), "record"
        except (ValueError, KeyError):
            pass
    if phone:
        name = _phone_zone(phone)
        if name:
            return _zone(name), "phone"
    return _zone(default), "default"
