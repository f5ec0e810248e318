"""Send windows on daylight-saving nights, checked against an independent oracle.

The oracle (``window_oracle``) reads the candidate's wall clock from each UTC instant's
offset and scans minute by minute; the product places windows from local wall times. They
must agree on every night below: the spring-forward and fall-back nights of New York,
London, Lord Howe (a 30-minute shift) and Santiago (clocks change at midnight).

What the window means on those nights (an instant is inside when the candidate's clock,
at that instant, shows an allowed day and a time in ``[start, end)``):

* a start that does not exist that day (skipped hour) opens the window at the first
  instant after it, when the clock jumps (a 02:30 start in New York opens at 03:00 EDT);
  an end that does not exist closes it at the jump;
* a time that exists twice (repeated hour): a start opens at its first occurrence, and
  when the clock goes back before the start the window is closed again until the start
  comes round the second time; an end closes at its first occurrence and, when the clock
  goes back inside the window, the window is open again until the end's second occurrence.
  Nothing is ever delivered while the candidate's clock shows a time outside the window.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import holidays as holidays_lib
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from window_oracle import MINUTE, Scan, inside, wall_clock

from outreach.cadence import Policy
from outreach.engine.window import SendCalendar

ALL_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def calendar(start: str, end: str, days: list[str] = ALL_DAYS, hols: str = "none"):
    policy = Policy.model_validate(
        {"send_window": {"start": start, "end": end, "days": days}, "holidays": hols}
    )
    return SendCalendar(policy)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def hm(text: str) -> time:
    return time.fromisoformat(text)


NY = ZoneInfo("America/New_York")
LONDON = ZoneInfo("Europe/London")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")
SANTIAGO = ZoneInfo("America/Santiago")


def transition_on(zone: ZoneInfo, day: date) -> datetime:
    """The UTC instant of ``zone``'s one offset change during local ``day`` (oracle side)."""
    at = datetime.combine(day, time(0), tzinfo=UTC) - timedelta(hours=16)
    before = wall_clock(at, zone) - at.replace(tzinfo=None)
    for _ in range(56 * 60):
        at += MINUTE
        if wall_clock(at, zone) - at.replace(tzinfo=None) != before:
            return at
    raise AssertionError(f"no offset change near {day} in {zone}")


def test_the_nights_are_what_tzdata_says() -> None:
    # Guards the cases below: each night really shifts the clock as the tests assume.
    def jump(zone: ZoneInfo, day: date) -> tuple[str, str]:
        t = transition_on(zone, day)
        fmt = "%Y-%m-%d %H:%M"
        return (wall_clock(t - MINUTE, zone).strftime(fmt), wall_clock(t, zone).strftime(fmt))

    assert jump(NY, date(2026, 3, 8)) == ("2026-03-08 01:59", "2026-03-08 03:00")
    assert jump(NY, date(2026, 11, 1)) == ("2026-11-01 01:59", "2026-11-01 01:00")
    assert jump(LONDON, date(2026, 3, 29)) == ("2026-03-29 00:59", "2026-03-29 02:00")
    assert jump(LONDON, date(2026, 10, 25)) == ("2026-10-25 01:59", "2026-10-25 01:00")
    assert jump(LORD_HOWE, date(2026, 10, 4)) == ("2026-10-04 01:59", "2026-10-04 02:30")
    assert jump(LORD_HOWE, date(2026, 4, 5)) == ("2026-04-05 01:59", "2026-04-05 01:30")
    assert jump(SANTIAGO, date(2026, 9, 6)) == ("2026-09-05 23:59", "2026-09-06 01:00")
    assert jump(SANTIAGO, date(2026, 4, 5)) == ("2026-04-04 23:59", "2026-04-04 23:00")


# -- the decisions, spelled out -----------------------------------------------------------


def test_a_start_in_the_skipped_hour_opens_when_the_clock_jumps() -> None:
    cal = calendar("02:30", "19:00")
    # Sunday 8 March 2026, 00:00 EST: the window opens at 03:00 EDT (07:00 UTC), not at
    # 01:30 EST (an hour early, before the candidate's clock reached 02:30).
    assert cal.next_allowed(utc(2026, 3, 8, 5, 0), NY) == (utc(2026, 3, 8, 7, 0), "send window")
    assert not cal.allowed(utc(2026, 3, 8, 6, 45), NY)  # 01:45 EST


def test_an_end_in_the_skipped_hour_closes_at_the_jump() -> None:
    cal = calendar("00:30", "02:30")
    assert cal.allowed(utc(2026, 3, 8, 6, 59), NY)  # 01:59 EST
    # 03:00 EDT is past 02:30: next opening is Monday 00:30 EDT.
    assert cal.next_allowed(utc(2026, 3, 8, 7, 0), NY) == (utc(2026, 3, 9, 4, 30), "send window")


def test_a_window_inside_the_skipped_hour_does_not_open_that_day() -> None:
    cal = calendar("02:00", "03:00")
    assert cal.next_allowed(utc(2026, 3, 8, 5, 0), NY) == (utc(2026, 3, 9, 6, 0), "send window")


def test_a_start_in_the_repeated_hour_opens_at_its_first_occurrence() -> None:
    cal = calendar("01:30", "19:00")
    # 01:00 EDT: opens at the first 01:30 (EDT, 05:30 UTC).
    assert cal.next_allowed(utc(2026, 11, 1, 5, 0), NY) == (utc(2026, 11, 1, 5, 30), "send window")
    # The clock goes back to 01:00 EST: 01:10 is before the start again, so the window
    # waits for the second 01:30 (EST, 06:30 UTC).
    assert not cal.allowed(utc(2026, 11, 1, 6, 10), NY)
    assert cal.next_allowed(utc(2026, 11, 1, 6, 10), NY) == (
        utc(2026, 11, 1, 6, 30),
        "send window",
    )


def test_an_end_in_the_repeated_hour_closes_at_its_first_occurrence() -> None:
    cal = calendar("00:30", "01:30")
    assert cal.allowed(utc(2026, 11, 1, 5, 29), NY)  # 01:29 EDT
    # 01:40 EDT is past the end; the candidate's clock shows 01:00 again at 06:00 UTC
    # (EST), inside the window, until the second 01:30.
    assert not cal.allowed(utc(2026, 11, 1, 5, 40), NY)
    assert cal.next_allowed(utc(2026, 11, 1, 5, 40), NY) == (
        utc(2026, 11, 1, 6, 0),
        "send window",
    )
    assert cal.allowed(utc(2026, 11, 1, 6, 29), NY)
    assert cal.next_allowed(utc(2026, 11, 1, 6, 30), NY) == (
        utc(2026, 11, 2, 5, 30),
        "send window",
    )


def test_lord_howe_half_hour_jump() -> None:
    cal = calendar("02:15", "19:00")
    # Sunday 4 October 2026, 00:30 LHST (+10:30): 02:00 jumps to 02:30 LHDT (+11).
    assert cal.next_allowed(utc(2026, 10, 3, 14, 0), LORD_HOWE) == (
        utc(2026, 10, 3, 15, 30),
        "send window",
    )


def test_santiago_midnight_jump() -> None:
    cal = calendar("00:30", "19:00")
    # Saturday 5 September 2026, 23:50 -04: Sunday's 00:30 does not exist (00:00 jumps to
    # 01:00 -03); the window opens at the jump, on Sunday, never on Saturday night.
    assert cal.next_allowed(utc(2026, 9, 6, 3, 50), SANTIAGO) == (
        utc(2026, 9, 6, 4, 0),
        "send window",
    )
    # Santiago, Saturday 4 April 2026: 24:00 -03 goes back to 23:00 -04.
    late = calendar("23:30", "23:59")
    assert late.next_allowed(utc(2026, 4, 5, 2, 58), SANTIAGO) == (utc(2026, 4, 5, 2, 58), None)
    assert late.next_allowed(utc(2026, 4, 5, 3, 0), SANTIAGO) == (
        utc(2026, 4, 5, 3, 30),
        "send window",
    )


# -- every due time of each night, against the oracle -------------------------------------

NIGHTS = [
    (NY, date(2026, 3, 8), ["02:30-19:00", "00:30-02:30", "02:15-02:45", "01:30-02:30"]),
    (NY, date(2026, 11, 1), ["01:30-19:00", "00:30-01:30", "01:15-01:45", "01:00-02:00"]),
    (NY, date(2027, 3, 14), ["02:00-03:00", "08:00-19:00"]),
    (LONDON, date(2026, 3, 29), ["01:30-19:00", "00:30-01:30", "01:15-01:45"]),
    (LONDON, date(2026, 10, 25), ["01:30-19:00", "00:30-01:30", "01:15-01:45"]),
    (LORD_HOWE, date(2026, 10, 4), ["02:15-19:00", "00:30-02:15", "02:05-02:25", "02:00-02:30"]),
    (LORD_HOWE, date(2026, 4, 5), ["01:45-19:00", "00:30-01:45", "01:35-01:55", "01:30-02:00"]),
    (SANTIAGO, date(2026, 9, 6), ["00:30-19:00", "00:00-00:30", "00:15-08:00", "23:30-23:59"]),
    (SANTIAGO, date(2026, 4, 5), ["23:30-23:59", "08:00-23:30", "23:15-23:45", "00:30-19:00"]),
]
CASES = [
    pytest.param(zone, day, window, id=f"{zone.key}-{day}-{window}")
    for zone, day, windows in NIGHTS
    for window in windows
]


@pytest.mark.parametrize(("zone", "day", "window"), CASES)
def test_every_placement_on_a_dst_night_is_the_oracles_earliest(
    zone: ZoneInfo, day: date, window: str
) -> None:
    start, end = window.split("-")
    cal = calendar(start, end)
    shift = transition_on(zone, day)
    scan = Scan(
        shift - timedelta(hours=30),
        shift + timedelta(days=3),
        zone,
        hm(start),
        hm(end),
        frozenset(range(7)),
    )
    due = shift - timedelta(hours=26)
    while due < shift + timedelta(hours=26):
        expected = scan.earliest(due)
        placed, _ = cal.next_allowed(due, zone)
        assert placed == expected, (
            f"due {due:%Y-%m-%d %H:%M:%S} UTC ({wall_clock(due, zone):%a %H:%M} local): "
            f"placed {placed:%Y-%m-%d %H:%M} UTC ({wall_clock(placed, zone):%a %H:%M}), "
            f"oracle {expected:%Y-%m-%d %H:%M} UTC"
        )
        due += timedelta(minutes=7, seconds=13)


# -- random windows, days and due times around every shift of 2026-2027 -------------------

HAVANA = ZoneInfo("America/Havana")
BEIRUT = ZoneInfo("Asia/Beirut")
SHIFTS = [
    (zone, transition_on(zone, day))
    for zone, days in {
        NY: [date(2026, 3, 8), date(2026, 11, 1), date(2027, 3, 14), date(2027, 11, 7)],
        LONDON: [date(2026, 3, 29), date(2026, 10, 25), date(2027, 3, 28), date(2027, 10, 31)],
        LORD_HOWE: [date(2026, 4, 5), date(2026, 10, 4), date(2027, 4, 4), date(2027, 10, 3)],
        SANTIAGO: [date(2026, 4, 5), date(2026, 9, 6), date(2027, 4, 4), date(2027, 9, 5)],
        HAVANA: [date(2026, 3, 8), date(2026, 11, 1)],
        BEIRUT: [date(2026, 3, 29), date(2026, 10, 25)],
    }.items()
    for day in days
]
US_HOLIDAYS = holidays_lib.country_holidays("US")


def earliest_by_scan(due, zone, start, end, days, is_holiday) -> datetime:
    at = due
    if inside(at, zone, start, end, days, is_holiday):
        return at
    at = at.replace(second=0, microsecond=0) + MINUTE
    for _ in range(16 * 24 * 60):
        if inside(at, zone, start, end, days, is_holiday):
            return at
        at += MINUTE
    raise AssertionError("no allowed minute within 16 days")


@settings(max_examples=150, deadline=None)
@given(
    which=st.integers(0, len(SHIFTS) - 1),
    start=st.integers(0, 24 * 4 - 2),
    length=st.integers(1, 24 * 4 - 1),
    days=st.sets(st.sampled_from(WEEKDAYS), min_size=1),
    hols=st.sampled_from(["none", "US"]),
    before=st.integers(-36 * 60 * 60, 36 * 60 * 60),
)
def test_random_windows_near_a_shift_agree_with_the_oracle(
    which: int, start: int, length: int, days: set[str], hols: str, before: int
) -> None:
    zone, shift = SHIFTS[which]
    opens = time(start // 4, start % 4 * 15)
    end_minutes = min(start * 15 + length * 15, 23 * 60 + 59)
    closes = time(end_minutes // 60, end_minutes % 60)
    cal = calendar(opens.strftime("%H:%M"), closes.strftime("%H:%M"), sorted(days), hols)
    due = shift + timedelta(seconds=before)
    numbers = frozenset(WEEKDAYS.index(d) for d in days)
    is_holiday = (lambda d: d in US_HOLIDAYS) if hols == "US" else (lambda d: False)
    expected = earliest_by_scan(due, zone, opens, closes, numbers, is_holiday)
    placed, why = cal.next_allowed(due, zone)
    assert placed == expected, (wall_clock(due, zone), wall_clock(placed, zone), expected)
    assert (why is None) == (placed == due)


@settings(max_examples=100, deadline=None)
@given(
    questions=st.lists(
        st.tuples(
            st.integers(0, len(SHIFTS) - 1),
            st.integers(-36 * 60 * 60, 36 * 60 * 60),
            st.sampled_from([UTC, NY, LONDON, SANTIAGO]),
        ),
        min_size=1,
        max_size=30,
    ),
    repeat=st.integers(1, 3),
)
def test_one_calendar_asked_again_answers_as_a_fresh_one(
    questions: list[tuple[int, int, object]], repeat: int
) -> None:
    """The calendar remembers its answers; asked again, in any order, for the same instant
    written in another zone, it answers what a calendar asked once does, object for object
    when the instant is allowed."""
    kept = calendar("09:00", "17:00", ["mon", "tue", "wed", "thu", "fri"], "US")
    for _ in range(repeat):
        for which, seconds, shown_in in questions:
            zone, shift = SHIFTS[which]
            due = (shift + timedelta(seconds=seconds)).astimezone(shown_in)
            fresh = calendar("09:00", "17:00", ["mon", "tue", "wed", "thu", "fri"], "US")
            placed, why = kept.next_allowed(due, zone)
            assert (placed, why) == fresh.next_allowed(due, zone)
            if why is None:
                assert placed is due


# -- through the engine --------------------------------------------------------------------

SPRING_NIGHT = """\
policy:
  default_timezone: America/New_York
  send_window: {start: "02:30", end: "19:00", days: [mon, tue, wed, thu, fri, sat, sun]}
  holidays: none
  max_touches: {count: 3, per: 7d}
  min_gap: 0m
cadences:
  - id: c
    trigger: {stage: applied}
    steps:
      - {id: one, after: 0m, channel: email, template: t}
"""


def test_a_tick_on_the_spring_forward_night_delivers_when_the_clock_jumps(engine, tmp_path) -> None:
    from engine_world import World, write_config

    config = write_config(tmp_path, SPRING_NIGHT, {"t.email.j2": "Subject: Hi\n\nHello"})
    world = World(engine, config, datetime(2027, 3, 13, 23, 0, tzinfo=NY))
    world.add(
        {
            "external_id": "p1",
            "first_name": "Ann",
            "email": "ann@example.com",
            "timezone": "America/New_York",
            "stage": "applied",
        }
    )
    world.tick()
    (touch,) = world.touches()
    (message,) = world.email.sent
    assert touch.status == "sent"
    assert touch.planned_at == message.send_at == utc(2027, 3, 14, 7, 0)  # 03:00 EDT
    assert inside(touch.planned_at, NY, hm("02:30"), hm("19:00"), frozenset(range(7)))
