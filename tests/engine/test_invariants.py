"""Property tests: DESIGN.md invariants 1, 2, 3 and 5 hold on the ledger for random worlds.

Hypothesis draws a policy, cadences, people (some sharing an address across two CRM
records), stage changes and tick times; the engine runs with dry-run channels; the
resulting ledger and the messages the channels received are checked. The store is the one
the suite runs on (SQLite, or PostgreSQL with ``OUTREACH_TEST_DATABASE=postgresql``): one
migrated database for the module, emptied before each example. Send windows are checked
with the oracle of ``window_oracle`` (the wall clock read from UTC offsets), not with the
engine's own calendar, and the caps over every pair of deliveries of a person.
"""

from __future__ import annotations

import itertools
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import holidays as holidays_lib
import pytest
import yaml
from engine_world import World, write_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, inspect, select, text
from throwaway_db import BACKEND, throwaway_database
from window_oracle import inside, wall_clock

from outreach.cadence import format_duration
from outreach.engine.person_state import COUNTED_STATUSES
from outreach.store import make_engine, upgrade
from outreach.store.schema import CandidateRecord

UTC = ZoneInfo("UTC")
# Each start's 24 days take in clock changes: New York and Havana fall back on 1 November
# 2026, Santiago springs forward at midnight on 6 September 2026, Lord Howe by half an hour
# on 4 October 2026, New York springs forward on 14 March 2027 and London, Beirut on 28 March.
STARTS = [
    datetime(2026, 10, 26, 0, 0, tzinfo=UTC),
    datetime(2026, 9, 1, 0, 0, tzinfo=UTC),
    datetime(2026, 9, 28, 0, 0, tzinfo=UTC),
    datetime(2027, 3, 8, 0, 0, tzinfo=UTC),
]
ZONES = [
    "America/New_York",
    "America/Los_Angeles",
    "Europe/London",
    "Asia/Tokyo",
    "Australia/Lord_Howe",
    "America/Santiago",
    "America/Havana",
    "Asia/Beirut",
    "",
]


def _shifts(start: datetime) -> list[tuple[float, str]]:
    """When (days after ``start``, within 24) and where a clock in one of ``ZONES`` changes."""
    found = []
    naive = start.replace(tzinfo=None)
    for name in filter(None, ZONES):
        zone = ZoneInfo(name)
        offsets = [
            wall_clock(start + timedelta(hours=h), zone) - (naive + timedelta(hours=h))
            for h in range(24 * 24 + 1)
        ]
        found += [(h / 24, name) for h in range(1, len(offsets)) if offsets[h] != offsets[h - 1]]
    return sorted(found)


SHIFTS = {start: _shifts(start) for start in STARTS}
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
# Window edges in and around the hours clocks skip or repeat (00:00-03:00), and usual ones.
STARTS_OF_DAY = ["00:00", "00:30", "01:15", "01:45", "02:15", "02:30", "06:00", "08:00", "10:00"]
ENDS_OF_DAY = ["01:30", "02:15", "02:45", "15:00", "19:00", "21:00", "23:30"]
STAGES = ["applied", "screening", "interview"]
TEMPLATES = {
    "t.email.j2": "Subject: Hi {{ candidate.first_name | default('there') }}\n\n"
    "About {{ job.title | default('the role') }} at {{ company.name }}",
    "t.sms.j2": "Hi {{ candidate.first_name | default('there') }}, {{ company.name }}",
    "t.task.j2": "Title: Reach {{ candidate.first_name | default('them') }}\n\nSay hi",
    "bad.email.j2": "Subject: Hi\n\n{{ candidate.custom.missing_field }}",
    "bad.sms.j2": "{{ candidate.custom.missing_field }}",
    "bad.task.j2": "Title: x\n\n{{ candidate.custom.missing_field }}",
}

durations = st.sampled_from(
    [timedelta(0), timedelta(hours=2), timedelta(hours=20), timedelta(days=1), timedelta(days=3)]
)


@st.composite
def steps(draw, first: bool):
    after = draw(durations)
    step = {
        "id": None,
        "after": format_duration(after),
        "template": draw(st.sampled_from(["t"] * 5 + ["bad"])),
    }
    if draw(st.booleans()):
        step["within"] = format_duration(
            after + draw(st.sampled_from([timedelta(0), timedelta(hours=12), timedelta(days=2)]))
        )
        step["on_late"] = draw(st.sampled_from(["send", "skip", "task"]))
    if not first and draw(st.booleans()):
        step["from"] = "previous"
    if draw(st.integers(0, 3)) == 0:
        step["repeat"] = {
            "every": draw(st.sampled_from(["1d", "2d", "5d"])),
            "max": draw(st.integers(1, 3)),
        }
    channel = draw(st.sampled_from(["email", "sms", "auto", "linkedin", "call", "x", "facebook"]))
    step["channel"] = channel
    if channel in ("email", "sms") and draw(st.booleans()):
        step["fallback"] = "sms" if channel == "email" else "email"
    elif channel in ("x", "facebook") and draw(st.booleans()):
        step["fallback"] = draw(st.sampled_from(["facebook" if channel == "x" else "x", "email"]))
    step["transactional"] = draw(st.integers(0, 4)) == 0
    return step


def conditions(earlier: list[dict]) -> list[dict]:
    """The ``when:`` conditions a step after ``earlier`` may have (config check accepts)."""
    channels = set()
    for step in earlier:
        auto = step["channel"] == "auto"
        channels |= (
            {"email", "sms", "linkedin"} if auto else {step["channel"], step.get("fallback")}
        )
    found: list[dict] = [{"no": "reply"}]
    if "email" in channels:
        found += [{"event": "opened", "no": "reply"}, {"no": ["clicked", "reply"]}]
    if channels & {"email", "sms"}:
        found.append({"event": "delivered"})
    return found


@st.composite
def worlds(draw):
    start = draw(st.sampled_from(STARTS))
    # People often live where a clock changes during the run.
    zones = st.sampled_from(ZONES) | st.sampled_from(sorted({name for _, name in SHIFTS[start]}))
    days = draw(st.sets(st.sampled_from(WEEKDAYS), min_size=1))
    opens = draw(st.sampled_from(STARTS_OF_DAY))
    policy = {
        "default_timezone": "America/New_York",
        "send_window": {
            "start": opens,
            "end": draw(st.sampled_from([end for end in ENDS_OF_DAY if end > opens])),
            "days": sorted(days),
        },
        "holidays": draw(st.sampled_from(["US", "none"])),
        "max_touches": {
            "count": draw(st.integers(1, 3)),
            "per": draw(st.sampled_from(["1d", "3d", "7d"])),
        },
        "min_gap": draw(st.sampled_from(["0m", "12h", "1d", "2d"])),
        "sms_requires_consent": draw(st.booleans()),
        "rate_limits": {
            "linkedin": f"{draw(st.integers(1, 3))}/d",
            "call": "2/d",
            "x": f"{draw(st.integers(1, 2))}/d",
        },  # facebook left out: its default cap
    }
    cadences = []
    for index in range(draw(st.integers(1, 3))):
        count = draw(st.integers(1, 4))
        cadence_steps = [draw(steps(first=i == 0)) for i in range(count)]
        for i, step in enumerate(cadence_steps):
            step["id"] = f"s{i}"
            if i and not step["transactional"] and draw(st.integers(0, 3)) == 0:
                step["when"] = draw(st.sampled_from(conditions(cadence_steps[:i])))
        cadences.append(
            {
                "id": f"c{index}",
                "trigger": {"stage": draw(st.sampled_from(STAGES))},
                "steps": cadence_steps,
            }
        )
    people = []
    for index in range(draw(st.integers(1, 5))):
        person = {
            "external_id": f"p{index}",
            "first_name": draw(st.sampled_from(["Ann", "", "Bo"])),
            "email": f"p{index}@example.com" if draw(st.integers(0, 4)) else "",
            "phone": f"+1 212 555 01{index:02d}" if draw(st.booleans()) else "",
            "linkedin_url": f"https://www.linkedin.com/in/p{index}" if draw(st.booleans()) else "",
            "x_url": f"@p{index}" if draw(st.booleans()) else "",
            "facebook_url": f"facebook.com/person.{index}" if draw(st.booleans()) else "",
            "sms_consent": draw(st.sampled_from(["true", "false", ""])),
            "timezone": draw(zones),
            "owner_id": draw(st.sampled_from(["rec-1", "rec-2"])),
        }
        if not (person["email"] or person["phone"] or person["linkedin_url"]):
            person["email"] = f"p{index}@example.com"
        people.append(person)
    if len(people) > 1 and draw(st.booleans()):
        # The same human in a second CRM: same email, another record.
        twin = dict(people[0], external_id="twin", email=people[0]["email"] or "p0@example.com")
        people.append({**twin, "source": "lever"})
    changes = []
    for person in people:
        for _ in range(draw(st.integers(1, 3))):
            changes.append((draw(st.floats(0, 18)), person, draw(st.sampled_from(STAGES))))
    ticks = draw(st.lists(st.floats(0, 24), min_size=3, max_size=12))
    # Some ticks in the hours before a clock changes, so touches land on the night itself.
    for shift, _ in draw(st.lists(st.sampled_from(SHIFTS[start]), max_size=3)):
        ticks.append(max(0.0, shift - draw(st.floats(0, 0.5))))
    document = {"policy": policy, "cadences": cadences}
    return start, document, sorted(changes, key=lambda c: c[0]), sorted(ticks)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """One migrated database for every example of the module."""
    with throwaway_database(tmp_path_factory.mktemp("invariants")) as url:
        engine = make_engine(url)
        # The suite's two passes (SQLite, PostgreSQL) each check the invariants on their own
        # database: a pass that silently fell back to the other one would prove nothing.
        assert engine.dialect.name == BACKEND
        upgrade(engine)
        yield engine
        engine.dispose()


def emptied(engine: Engine) -> Engine:
    """``engine`` with every table emptied (the schema and its version kept)."""
    tables = [name for name in inspect(engine).get_table_names() if name != "alembic_version"]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            names = ", ".join(f'"{name}"' for name in tables)
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            conn.execute(text("PRAGMA defer_foreign_keys = ON"))
            for name in tables:
                conn.execute(text(f'DELETE FROM "{name}"'))
    return engine


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(worlds())
def test_invariants_hold_on_the_ledger(store: Engine, scenario) -> None:
    start, document, changes, ticks = scenario
    with tempfile.TemporaryDirectory() as folder:
        config = write_config(Path(folder), yaml.safe_dump(document), TEMPLATES)
        world = World(emptied(store), config, start)
        pending = list(changes)
        for offset in ticks:
            now = start + timedelta(days=offset)
            while pending and start + timedelta(days=pending[0][0]) <= now:
                at, person, stage = pending.pop(0)
                world.add({**person, "stage": stage}, at=start + timedelta(days=at))
            world.tick(now)
            if offset == ticks[0]:
                again = world.tick(now)  # invariant 2: a second run at the same moment
                assert again.total("sent") == 0 and again.total("tasks") == 0
        check(world, config, document["policy"])


def check(world: World, config, policy_document: dict) -> None:
    touches = world.touches()
    messages = list(world.sent_messages())

    # Invariant 2: one ledger row per step occurrence, each delivered at most once.
    keys = Counter(t.idempotency_key for t in touches)
    assert max(keys.values(), default=0) <= 1
    delivered = Counter(m.idempotency_key for m in messages)
    assert max(delivered.values(), default=0) <= 1
    assert {t.idempotency_key for t in touches if t.status == "sent"} == set(delivered)

    # Invariant 3: nothing left with an unfilled placeholder; bad templates never send.
    for message in messages:
        for text_ in (message.body, message.subject or ""):
            assert "{{" not in text_ and "{%" not in text_ and "Undefined" not in text_
        assert message.template != "bad"
    for touch in touches:
        if touch.template == "bad":
            assert touch.status == "skipped" and "missing_field" in touch.reason

    # Nobody engages in these worlds (no opens, deliveries or replies come back): a step
    # that needs an event is always skipped by its when:, and no step is skipped for a reply.
    for touch in touches:
        when = config.cadence(touch.cadence_id).steps[int(touch.step_id[1:])].when
        if when is not None and when.event:
            assert touch.status == "skipped" and touch.reason.startswith("when "), touch
        elif when is not None and touch.status == "skipped" and touch.reason.startswith("when "):
            assert "(replied)" not in touch.reason, touch

    counted = [t for t in touches if t.status in COUNTED_STATUSES]
    zones = person_zones(world.engine)
    window = policy_document["send_window"]
    start, end = time.fromisoformat(window["start"]), time.fromisoformat(window["end"])
    days = frozenset(WEEKDAYS.index(day) for day in window["days"])
    calendar = (
        holidays_lib.country_holidays(policy_document["holidays"])
        if policy_document["holidays"] != "none"
        else {}
    )
    policy = config.policy
    by_person = defaultdict(list)
    for touch in counted:
        by_person[touch.person_id].append(touch)
    for person_id, items in by_person.items():
        zone = zones[person_id]
        for touch in items:
            # Invariant 5: inside the send window on the person's own clock.
            assert inside(touch.planned_at, zone, start, end, days, lambda day: day in calendar), (
                f"{wall_clock(touch.planned_at, zone):%a %Y-%m-%d %H:%M} in {zone.key}",
                touch.step_id,
            )
            assert touch.planned_at >= touch.claimed_at
        # Invariant 1 over every pair of the person's deliveries. A transactional touch is
        # held only by the window, so it may land close to a touch decided before it; every
        # other pair is min_gap apart.
        for a, b in itertools.combinations(items, 2):
            if max((a, b), key=lambda t: t.id).transactional:  # decided last, caps aside
                continue
            assert abs(a.planned_at - b.planned_at) >= policy.min_gap, (
                a.step_id,
                a.planned_at,
                b.step_id,
                b.planned_at,
            )
        # At most max_touches in any window of `per`: in the window ending at each delivery,
        # every non-transactional touch, and every transactional one decided before the
        # last non-transactional touch in it (which saw it and counted it).
        for closing in items:
            inside_window = [
                t
                for t in items
                if closing.planned_at - policy.max_touches.per < t.planned_at <= closing.planned_at
            ]
            deciders = [t for t in inside_window if not t.transactional]
            if not deciders:
                continue
            last = max(t.id for t in deciders)
            seen = [t for t in inside_window if not t.transactional or t.id < last]
            assert len(seen) <= policy.max_touches.count, [
                (t.step_id, t.planned_at, t.transactional) for t in inside_window
            ]


def person_zones(engine: Engine) -> dict[int, ZoneInfo]:
    """Each person's zone from their records' ``timezone``; the policy default (New York,
    which every test phone number is in too) without one."""
    found: dict[int, set[str]] = defaultdict(set)
    with engine.connect() as conn:
        for person_id, name in conn.execute(
            select(CandidateRecord.person_id, CandidateRecord.timezone)
        ):
            if name:
                found[person_id].add(name)
            else:
                found.setdefault(person_id, set())
    zones = {}
    for person_id, names in found.items():
        assert len(names) <= 1, names
        zones[person_id] = ZoneInfo(next(iter(names), "America/New_York"))
    return zones
