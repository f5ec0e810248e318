"""Property tests: DESIGN.md invariants 1, 2, 3 and 5 hold on the ledger for random worlds.

Hypothesis draws a policy, cadences, people (some sharing an address across two CRM
records), stage changes and tick times; the engine runs with dry-run channels; the
resulting ledger and the messages the channels received are checked.
"""

from __future__ import annotations

import tempfile
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml
from engine_world import World, write_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outreach.cadence import format_duration
from outreach.engine.people import COUNTED_STATUSES, load_people
from outreach.engine.window import SendCalendar
from outreach.store import make_engine
from outreach.store.schema import Base

START = datetime(2026, 10, 26, 0, 0, tzinfo=ZoneInfo("UTC"))  # spans the DST change
ZONES = ["America/New_York", "America/Los_Angeles", "Europe/London", "Asia/Tokyo", ""]
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
    channel = draw(st.sampled_from(["email", "sms", "auto", "linkedin", "call"]))
    step["channel"] = channel
    if channel in ("email", "sms") and draw(st.booleans()):
        step["fallback"] = "sms" if channel == "email" else "email"
    step["transactional"] = draw(st.integers(0, 4)) == 0
    return step


@st.composite
def worlds(draw):
    days = draw(
        st.sets(st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]), min_size=1)
    )
    policy = {
        "default_timezone": "America/New_York",
        "send_window": {
            "start": f"{draw(st.integers(6, 10)):02d}:00",
            "end": f"{draw(st.integers(15, 21)):02d}:00",
            "days": sorted(days),
        },
        "holidays": draw(st.sampled_from(["US", "none"])),
        "max_touches": {
            "count": draw(st.integers(1, 3)),
            "per": draw(st.sampled_from(["1d", "3d", "7d"])),
        },
        "min_gap": draw(st.sampled_from(["0m", "12h", "1d", "2d"])),
        "sms_requires_consent": draw(st.booleans()),
        "rate_limits": {"linkedin": f"{draw(st.integers(1, 3))}/d", "call": "2/d"},
    }
    cadences = []
    for index in range(draw(st.integers(1, 3))):
        count = draw(st.integers(1, 4))
        cadence_steps = [draw(steps(first=i == 0)) for i in range(count)]
        for i, step in enumerate(cadence_steps):
            step["id"] = f"s{i}"
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
            "sms_consent": draw(st.sampled_from(["true", "false", ""])),
            "timezone": draw(st.sampled_from(ZONES)),
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
    ticks = sorted(draw(st.lists(st.floats(0, 24), min_size=3, max_size=12)))
    return {"policy": policy, "cadences": cadences}, sorted(changes, key=lambda c: c[0]), ticks


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(worlds())
def test_invariants_hold_on_the_ledger(scenario) -> None:
    document, changes, ticks = scenario
    with tempfile.TemporaryDirectory() as folder:
        config = write_config(Path(folder), yaml.safe_dump(document), TEMPLATES)
        engine = make_engine(f"sqlite:///{folder}/prop.db")
        Base.metadata.create_all(engine)
        world = World(engine, config, START)
        pending = list(changes)
        for offset in ticks:
            now = START + timedelta(days=offset)
            while pending and START + timedelta(days=pending[0][0]) <= now:
                at, person, stage = pending.pop(0)
                world.add({**person, "stage": stage}, at=START + timedelta(days=at))
            world.tick(now)
            if offset == ticks[0]:
                again = world.tick(now)  # invariant 2: a second run at the same moment
                assert again.total("sent") == 0 and again.total("tasks") == 0
        check(world, config)
        engine.dispose()


def check(world: World, config) -> None:
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
        for text in (message.body, message.subject or ""):
            assert "{{" not in text and "{%" not in text and "Undefined" not in text
        assert message.template != "bad"
    for touch in touches:
        if touch.template == "bad":
            assert touch.status == "skipped" and "missing_field" in touch.reason

    counted = [t for t in touches if t.status in COUNTED_STATUSES]
    with world.engine.connect() as conn:
        people = load_people(
            conn,
            {t.person_id for t in counted},
            history_since=START,
            default_timezone=config.policy.default_timezone,
        )
    calendar = SendCalendar(config.policy)
    policy = config.policy
    by_person = defaultdict(list)
    for touch in counted:
        by_person[touch.person_id].append(touch)
    for person_id, items in by_person.items():
        zone = people[person_id].zone
        for touch in items:
            # Invariant 5: inside the send window in the person's local time.
            assert calendar.allowed(touch.planned_at, zone), (
                touch.planned_at.astimezone(zone),
                touch.step_id,
            )
            assert touch.planned_at >= touch.claimed_at
            if touch.transactional:
                continue
            # Invariant 1, as each decision saw it: every touch recorded before this one.
            earlier = [u.planned_at for u in items if u.id < touch.id]
            assert all(touch.planned_at - u >= policy.min_gap for u in earlier), touch.step_id
            window = [
                u
                for u in earlier
                if touch.planned_at - policy.max_touches.per < u <= touch.planned_at
            ]
            assert len(window) < policy.max_touches.count
