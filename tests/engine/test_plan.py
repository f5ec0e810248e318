"""The plan stage on a small store: the due batch, its people, occurrences in priority order."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from engine_world import World, write_config
from sqlalchemy import insert, select, update
from tick_world import (
    PERSON,
    ny,
)

from outreach.engine.batch import TickSummary, engine_transactions
from outreach.engine.enroll import process_events
from outreach.engine.ledger import BatchWriter
from outreach.engine.plan import claim_due, plan
from outreach.store.schema import Enrollment, Event, Person

NY = ZoneInfo("America/New_York")
NOW = datetime(2026, 11, 2, 9, 0, tzinfo=NY)

CONFIG = """\
policy:
  default_timezone: America/New_York
  send_window: {start: "08:00", end: "19:00", days: [mon, tue, wed, thu, fri, sat, sun]}
  holidays: none
  max_touches: {count: 2, per: 7d}
  min_gap: 1d
cadences:
  - id: nurture
    trigger: {stage: applied}
    steps:
      - {id: hello, after: 0m, channel: email, template: t}
  - id: ack
    trigger: {stage: applied}
    steps:
      - {id: thanks, after: 0m, channel: email, template: t, transactional: true}
"""
TEMPLATES = {"t.email.j2": "Subject: Hi\n\nHello {{ candidate.first_name }}"}


def person(i: int) -> dict[str, str]:
    return {
        "external_id": f"p{i}",
        "first_name": "Ann",
        "email": f"p{i}@example.com",
        "stage": "applied",
        "timezone": "America/New_York",
    }


def enrolled(engine, tmp_path: Path, count: int, text: str = CONFIG) -> World:
    world = World(engine, write_config(tmp_path, text, TEMPLATES), NOW)
    world.add(*(person(i) for i in range(1, count + 1)))
    process_events(engine_transactions(engine), world.config, NOW)
    return world


def planned(world: World, config=None, **options):
    config = config or world.config
    summary = TickSummary(now=NOW)
    with engine_transactions(world.engine)() as conn:
        due = claim_due(conn, config, NOW, NOW + timedelta(hours=24), None, batch_size=100)
        writer = BatchWriter(NOW, "run-1", NOW)
        items = plan(due, config, writer, summary, **options) if due else []
    return due, items, writer, summary


def test_each_person_s_occurrences_come_together_transactional_first(engine, tmp_path) -> None:
    world = enrolled(engine, tmp_path, 2)
    due, items, writer, _ = planned(world)
    assert len(due.enrollments) == 4 and set(due.people) == {1, 2}
    assert [(o.person.id, o.cadence.id) for o in items] == [
        (1, "ack"),
        (1, "nurture"),
        (2, "ack"),
        (2, "nurture"),
    ]
    assert [o.seq for o in items] == [0, 1, 2, 3] and writer.enrollments == {}
    first = items[0]
    assert first.key == f"{first.enrollment['id']}:thanks:0" and first.not_before == first.due


def test_an_enrollment_already_deferred_this_tick_is_left_alone(engine, tmp_path) -> None:
    world = enrolled(engine, tmp_path, 1)
    _, items, _, _ = planned(world)
    _, again, _, _ = planned(world, deferred={items[0].enrollment["id"]})
    assert [o.cadence.id for o in again] == ["nurture"]


def test_a_cadence_gone_from_the_file_ends_its_enrollments(engine, tmp_path) -> None:
    world = enrolled(engine, tmp_path, 1)
    (tmp_path / "edited").mkdir()
    shorter = write_config(tmp_path / "edited", CONFIG.split("  - id: ack")[0], TEMPLATES)
    _, items, writer, _ = planned(world, shorter)
    assert [o.cadence.id for o in items] == ["nurture"]
    [ended] = writer.enrollments.values()
    assert (ended["status"], ended["stop_reason"]) == (
        "stopped",
        "cadence no longer in the cadence file",
    )


def test_a_person_who_opted_out_of_everything_is_stopped_not_planned(engine, tmp_path) -> None:
    world = enrolled(engine, tmp_path, 1)
    with engine.begin() as conn:
        conn.execute(update(Person).values(global_opt_out=True))
    _, items, writer, _ = planned(world)
    assert [(o.outcome, o.tally) for o in items] == [("ended", "opted out")] * 2
    assert len(writer.enrollments) == 2
    assert all(row["status"] == "stopped" for row in writer.enrollments.values())


def test_nothing_due_is_none(engine, tmp_path) -> None:
    world = World(engine, write_config(tmp_path, CONFIG, TEMPLATES), NOW)
    due, items, _, _ = planned(world)
    assert due is None and items == []


def test_the_same_application_in_two_crms_runs_the_cadence_once(world: World) -> None:
    world.add(
        {**PERSON, "source": "greenhouse", "external_id": "g1", "stage": "Application Review"},
        {**PERSON, "source": "lever", "external_id": "l1", "stage": "New applicant"},
    )
    summary = world.tick(ny(2026, 11, 2, 9, 0))
    assert summary.enroll.enrolled["application-follow-up"] == 1
    assert summary.enroll.already_enrolled == 1
    assert len(world.touches(step_id="acknowledge")) == 1


def test_people_merged_while_enrolled_keep_one_enrollment_per_cadence(world: World) -> None:
    world.add(
        {**PERSON, "external_id": "a", "phone": "", "stage": "applied"},
        {**PERSON, "external_id": "b", "email": "other@example.com", "stage": "applied"},
    )
    # 02:00: both enrolled as two people; the acknowledgements wait for 08:00.
    world.tick(ny(2026, 11, 2, 2, 0), horizon=timedelta(hours=1))
    # A third record carries a's email and b's phone: one person with two enrollments.
    world.add({**PERSON, "external_id": "c"})
    world.tick(ny(2026, 11, 2, 9, 0))
    acks = world.touches(step_id="acknowledge")
    assert len(acks) == 1
    with world.engine.connect() as conn:
        reasons = (
            conn.execute(select(Enrollment.stop_reason).where(Enrollment.status == "stopped"))
            .scalars()
            .all()
        )
    assert reasons == ["duplicate: the person runs this cadence already"]


def test_global_opt_out_stops_everything_even_tasks(small: World) -> None:
    small.add({**PERSON, "stage": "applied"})
    small.tick()
    with small.engine.begin() as conn:
        person_id = conn.scalar(select(Person.id))
        conn.execute(
            insert(Event).values(
                type="opt_out",
                person_id=person_id,
                at=small.clock.now(),
                payload={},
                created_at=small.clock.now(),
            )
        )
    small.nightly(ny(2026, 11, 3, 9, 0), 5)
    assert [t.step_id for t in small.touches()] == ["one"]
    assert small.tasks() == []
