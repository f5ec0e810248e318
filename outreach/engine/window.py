"""Send windows in the candidate's local time, DST-correct, with a holiday calendar.

:class:`SendCalendar` answers one question: the earliest instant at or after ``t`` at which
a person in zone ``Z`` may be contacted (allowed weekday, not a holiday, between the
window's start and end on their wall clock).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays as holidays_lib
import phonenumbers
from phonenumbers import timezone as phone_timezones

from outreach.cadence import Policy

__all__ = ["SendCalendar", "zone_for"]

_MAX_DAYS = 400


class SendCalendar:
    """The policy's send window and holiday calendar, evaluated per time zone."""

    def __init__(self, policy: Policy) -> None:
        self.window = policy.send_window
        self.days = policy.send_window.weekday_numbers
        self.holidays = holidays_lib.country_holidays(policy.holidays) if policy.holidays else None
        self._holiday_cache: dict[date, bool] = {}

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
        local = at.astimezone(zone)
        reason: str | None = None
        day = local.date()
        for _ in range(_MAX_DAYS):
            if day.weekday() not in self.days:
                reason = reason or "weekend"
            elif self.is_holiday(day):
                reason = reason or "holiday"
            else:
                start = _local(day, self.window.start, zone)
                end = _local(day, self.window.end, zone)
                if at < start:
                    return start, reason or "send window"
                if at < end:
                    return at, reason
                reason = reason or "send window"
            day += timedelta(days=1)
            at = max(at, _local(day, time(0, 0), zone))
        raise ValueError("no allowed send time within 400 days; check send_window and holidays")


@lru_cache(maxsize=65536)
def _local(day: date, clock: time, zone: ZoneInfo) -> datetime:
    # A wall time that does not exist (spring-forward gap) is moved past the gap;
    # an ambiguous one (fall-back) takes its first occurrence.
    naive = datetime.combine(day, clock)
    aware = naive.replace(tzinfo=zone, fold=0)
    round_trip = aware.astimezone(UTC).astimezone(zone)
    if round_trip.replace(tzinfo=None) != naive:
        aware = naive.replace(tzinfo=zone, fold=1)
    return aware.astimezone(UTC)


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
