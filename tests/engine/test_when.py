"""Steps with ``when:``: sent or skipped by what the candidate did with the cadence so far."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from engine_world import World, write_config
from sqlalchemy import event

from outreach.clock import FixedClock
from outreach.engine import engagement as engagement_module
from outreach.engine.batch import engine_transactions
from outreach.engine.plan import claim_due
from outreach.engine.runner import preview
from outreach.events import DeliveryEvent, InboundEvent, ingest_deliveries, ingest_events

NY = ZoneInfo("America/New_York")
START = datetime(2026, 11, 2, 9, 0, tzinfo=NY)  # a Monday
DUE = START + timedelta(days=3)  # the check-in step's due time

CONFIG = """\
policy:
  default_timezone: America/New_York
  send_window: {start: "08:00", end: "19:00", days: [mon, tue, wed, thu, fri, sat, sun]}
  holidays: none
  max_touches: {count: 10, per: 1d}
  min_gap: 1m
  channel_order: [email, sms]
  sms_requires_consent: false
cadences:
  - id: nurture
    trigger: {stage: applied}
    stop_on: [stage_change, opt_out]
    steps:
      - {id: hello, after: 0m, channel: auto, template: t}
      - {id: check-in, after: 3d, from: previous, channel: auto, template: t, when: WHEN}
      - {id: final, after: 1d, from: previous, channel: auto, template: t}
"""
OTHER = """\
  - id: other
    trigger: {stage: applied}
    stop_on: [stage_change, opt_out]
    steps:
      - {id: note, after: 0m, channel: email, template: t}
"""
TEMPLATES = {
    "t.email.j2": "Subject: Hi {{ candidate.first_name }}\n\nHello",
    "t.sms.j2": "Hello {{ candidate.first_name }}",
}


def person(i: int, **extra: str) -> dict[str, str]:
    row = {
        "external_id": f"p{i}",
        "first_name": "Ann",
        "email": f"p{i}@example.com",
        "stage": "applied",
        "timezone": "America/New_York",
    }
    row.update(extra)
    return row


def started(engine, tmp_path, when: str, *people: dict[str, str], extra: str = "") -> World:
    """A world with ``people`` enrolled at START and their first step sent."""
    config = write_config(tmp_path, CONFIG.replace("WHEN", when) + extra, TEMPLATES)
    world = World(engine, config, START)
    world.add(*people)
    world.tick(START)
    return world


def touch(world: World, person_id: int, step: str = "hello", cadence: str = "nurture"):
    (found,) = world.touches(person_id=person_id, step_id=step, cadence_id=cadence)
    return found


def deliveries(world: World, *items: tuple[str, int, datetime] | tuple[str, int, datetime, bool]):
    """Record delivery-side events ``(type, touch id, at[, machine])`` as the webhook does."""
    events = []
    for n, item in enumerate(items):
        kind, touch_id, at = item[:3]
        machine = item[3] if len(item) > 3 else None
        events.append(
            (
                f"test:{n}",
                DeliveryEvent(
                    type=kind, channel="email", touch_id=touch_id, at=at, machine=machine
                ),
            )
        )
    report = ingest_deliveries(world.engine, events, now=max(i[2] for i in items))
    assert not report.ignored, report.ignored


def reply(world: World, at: datetime, *, touch_id: int | None = None, address: str | None = None):
    """Record a human reply, by the touch it answers or by the sender's address."""
    channel = "sms" if address and address.startswith("+") else "email"
    found = InboundEvent(type="reply", channel=channel, touch_id=touch_id, address=address, at=at)
    report = ingest_events(world.engine, [("test", found)], now=at)
    assert report.recorded == 1, report


def outcome(world: World, person_id: int, step: str = "check-in"):
    row = touch(world, person_id, step)
    return row.status, row.reason


# -- each condition ----------------------------------------------------------------------------


def test_no_reply_sends_to_the_silent_and_skips_who_replied(engine, tmp_path) -> None:
    world = started(engine, tmp_path, "{no: reply}", person(1), person(2))
    reply(world, START + timedelta(days=1), touch_id=touch(world, 2).id)
    summary = world.tick(DUE)
    assert outcome(world, 1)[0] == "sent"
    status, reason = outcome(world, 2)
    assert status == "skipped" and reason == "when no reply: not met (replied)"
    assert summary.steps[("nurture", "check-in")].skipped == {"when: not met": 1}
    # The cadence goes on: the final step a day after the check-in, for both.
    world.tick(DUE + timedelta(days=1))
    assert touch(world, 1, "final").status == "sent"
    assert touch(world, 2, "final").status == "sent"
    assert touch(world, 2, "final").due_at == DUE + timedelta(days=1)


def test_event_opened_counts_human_opens_only(engine, tmp_path) -> None:
    world = started(engine, tmp_path, "{event: opened}", *(person(i) for i in range(1, 6)))
    day = START + timedelta(days=1)
    deliveries(
        world,
        ("delivered", touch(world, 1).id, day),
        ("open", touch(world, 1).id, day, False),  # a person opened it
        ("delivered", touch(world, 2).id, day),
        ("open", touch(world, 2).id, day, True),  # only the privacy proxy fetched the pixel
        ("click", touch(world, 3).id, day),  # a click without an open: images were off
        ("delivered", touch(world, 4).id, day),
    )
    world.tick(DUE)
    assert outcome(world, 1)[0] == "sent"
    assert outcome(world, 2) == ("skipped", "when opened: not met (not opened)")
    assert outcome(world, 3)[0] == "sent"
    assert outcome(world, 4) == ("skipped", "when opened: not met (not opened)")
    assert outcome(world, 5) == ("skipped", "when opened: not met (not opened)")


def test_opened_but_did_not_answer(engine, tmp_path) -> None:
    world = started(engine, tmp_path, "{event: opened, no: reply}", person(1), person(2), person(3))
    day = START + timedelta(days=1)
    deliveries(world, *(("open", touch(world, i).id, day, False) for i in (1, 2)))
    reply(world, day + timedelta(hours=2), touch_id=touch(world, 2).id)
    summary = world.tick(DUE, journal=True)
    assert outcome(world, 1)[0] == "sent"
    assert outcome(world, 2) == ("skipped", "when opened and no reply: not met (replied)")
    rules = {(e.person_id, e.step_id): (e.status, e.rule) for e in summary.journal}
    status, rule = rules[(1, "check-in")]
    assert status == "scheduled"
    assert rule.startswith("3d after the previous touch; when opened and no reply: met; ")
    assert rules[(2, "check-in")] == (
        "skipped",
        "3d after the previous touch; when opened and no reply: not met (replied)",
    )
    assert outcome(world, 3) == ("skipped", "when opened and no reply: not met (not opened)")


def test_event_clicked_needs_a_click_not_an_open(engine, tmp_path) -> None:
    world = started(engine, tmp_path, "{event: clicked}", person(1), person(2))
    day = START + timedelta(days=1)
    deliveries(world, ("open", touch(world, 1).id, day, False), ("click", touch(world, 2).id, day))
    world.tick(DUE)
    assert outcome(world, 1) == ("skipped", "when clicked: not met (not clicked)")
    assert outcome(world, 2)[0] == "sent"


def test_an_opened_condition_on_a_person_reached_by_sms_only_is_not_met(engine, tmp_path) -> None:
    sms_only = {**person(1, phone="+1 202 555 0143"), "email": ""}
    world = started(engine, tmp_path, "{event: opened}", sms_only)
    assert touch(world, 1).channel == "sms"
    world.tick(DUE)
    status, reason = outcome(world, 1)
    assert status == "skipped"
    assert reason == (
        "when opened: not met (cannot tell whether opened: no email touch of this enrollment "
        "went out)"
    )


# -- whose events, and when ------------------------------------------------------------------


def test_a_reply_naming_no_touch_counts_from_the_enrollment_on(engine, tmp_path) -> None:
    world = started(
        engine,
        tmp_path,
        "{no: reply}",
        person(1, phone="+1 202 555 0143"),
        person(2, phone="+1 202 555 0187"),
    )
    # An SMS reply (no touch named), and one that came before the person was enrolled.
    reply(world, START + timedelta(days=1), address="+12025550143")
    reply(world, START - timedelta(days=5), address="+12025550187")
    world.tick(DUE)
    assert outcome(world, 1) == ("skipped", "when no reply: not met (replied)")
    assert outcome(world, 2)[0] == "sent"


def test_events_on_another_enrollment_or_person_do_not_count(engine, tmp_path) -> None:
    world = started(engine, tmp_path, "{event: opened}", person(1), person(2), extra=OTHER)
    day = START + timedelta(days=1)
    # Person 1 opened the other cadence's mail only; person 2 opened their own hello.
    deliveries(
        world,
        ("open", touch(world, 1, "note", cadence="other").id, day, False),
        ("open", touch(world, 2).id, day, False),
    )
    world.tick(DUE)
    assert outcome(world, 1) == ("skipped", "when opened: not met (not opened)")
    assert outcome(world, 2)[0] == "sent"


def test_decided_by_the_run_that_schedules_it_with_the_events_known_then(engine, tmp_path) -> None:
    world = started(engine, tmp_path, "{event: opened, no: reply}", person(1))
    hello = touch(world, 1).id
    # Opened before the night's run, which schedules the step for its due time the next
    # day; a reply stamped after that run (already in the store) does not count.
    deliveries(world, ("open", hello, DUE - timedelta(hours=22), False))
    reply(world, DUE - timedelta(hours=10), touch_id=hello)
    world.tick(DUE - timedelta(hours=20))
    status, _ = outcome(world, 1)
    assert status == "sent", status  # handed to SendGrid with send_at at the due time
    assert touch(world, 1, "check-in").planned_at == DUE


def test_an_open_after_the_run_that_skipped_it_does_not_count(engine, tmp_path) -> None:
    world = started(engine, tmp_path, "{event: opened}", person(1))
    world.tick(DUE - timedelta(hours=20))  # the night before: not opened yet
    assert outcome(world, 1)[0] == "skipped"
    deliveries(world, ("open", touch(world, 1).id, DUE - timedelta(hours=2), False))
    world.tick(DUE)
    assert [t.status for t in world.touches(step_id="check-in")] == ["skipped"]
    # The cadence goes on from the skipped step.
    world.tick(DUE + timedelta(days=1))
    assert touch(world, 1, "final").status == "sent"


def test_a_skipped_when_step_is_recorded_once_and_not_retried(engine, tmp_path) -> None:
    world = started(engine, tmp_path, "{event: opened}", person(1))
    world.tick(DUE)
    assert outcome(world, 1)[0] == "skipped"
    # An open arriving later does not bring the skipped step back.
    deliveries(world, ("open", touch(world, 1).id, DUE + timedelta(hours=1), False))
    world.tick(DUE + timedelta(hours=2))
    assert [t.status for t in world.touches(step_id="check-in")] == ["skipped"]


# -- preview and cost --------------------------------------------------------------------------


def test_preview_shows_the_skip_and_why(engine, tmp_path) -> None:
    world = started(engine, tmp_path, "{event: opened, no: reply}", person(1))
    entries = preview(engine, world.config, FixedClock(START + timedelta(hours=1)), days=5)
    by_step = {entry.step_id: entry for entry in entries}
    skipped = by_step["check-in"]
    assert skipped.status == "skipped" and skipped.channel is None
    assert skipped.at == DUE
    assert skipped.rule == (
        "3d after the previous touch; when opened and no reply: not met (not opened)"
    )
    assert by_step["final"].status == "scheduled" and "when" not in by_step["final"].rule
    assert by_step["final"].at == DUE + timedelta(days=1)
    assert world.touches(step_id="check-in") == []  # the preview wrote nothing


@pytest.mark.parametrize("people", [1, 25])
def test_engagement_is_one_statement_per_batch_and_none_without_when(
    engine, tmp_path, people
) -> None:
    def statements(text: str) -> int:
        config = write_config(tmp_path, text, TEMPLATES)
        world = World(engine, config, START)
        seen: list[str] = []

        def count(conn, cursor, statement, *args) -> None:
            seen.append(statement)

        with engine_transactions(engine)() as conn:
            event.listen(engine, "before_cursor_execute", count)
            try:
                due = claim_due(
                    conn, world.config, DUE, DUE + timedelta(hours=1), None, batch_size=1000
                )
            finally:
                event.remove(engine, "before_cursor_execute", count)
        assert due is not None and len(due.enrollments) == people
        return len(seen), due.engagement

    world = started(engine, tmp_path, "{no: reply}", *(person(i) for i in range(1, people + 1)))
    with_when, engagement = statements(CONFIG.replace("WHEN", "{no: reply}"))
    assert sorted(engagement) == sorted(r.enrollment_id for r in world.touches(step_id="hello"))
    assert all(e.channels == {"email"} for e in engagement.values())
    without, engagement = statements(CONFIG.replace(", when: WHEN", ""))
    assert engagement == {}
    assert with_when == without + 1


def test_engagement_read_in_chunks_is_the_same(engine, tmp_path, monkeypatch) -> None:
    world = started(engine, tmp_path, "{event: opened}", *(person(i) for i in range(1, 6)))
    day = START + timedelta(days=1)
    deliveries(world, *(("open", touch(world, i).id, day, False) for i in (2, 3, 5)))
    with engine.connect() as conn:
        rows = [{"id": t.enrollment_id} for t in world.touches(step_id="hello")]
        whole = engagement_module.load_engagement(conn, rows, DUE)
        monkeypatch.setattr(engagement_module, "_CHUNK", 2)
        chunked = engagement_module.load_engagement(conn, rows, DUE)
    assert whole == chunked
    opened = sorted(e for e, found in chunked.items() if "opened" in found.seen)
    assert opened == sorted(touch(world, i).enrollment_id for i in (2, 3, 5))


def test_sqlite_reads_engagement_by_index_never_by_scanning(engine, tmp_path) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's planner: PostgreSQL plans by its statistics")
    world = started(engine, tmp_path, "{no: reply}", person(1), person(2))
    ids = [t.enrollment_id for t in world.touches(step_id="hello")]
    statement = engagement_module._statement(ids, DUE)
    sql = str(statement.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
    with engine.connect() as conn:
        plan = [row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql)]
    assert not [step for step in plan if step.startswith("SCAN")], plan
    assert any("ix_events_touch_type (touch_id=?)" in step for step in plan), plan
    assert any("ix_events_person (person_id=?)" in step for step in plan), plan
