"""The throttle stage alone, on plain data: caps within a batch, windows, pauses, task caps."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from engine_world import World, write_config
from sqlalchemy import func, select
from stage_data import NOW, NY, config, occurrence, person
from tick_world import (
    ONE_STEP,
    PERSON,
    ScheduledSMS,
    ny,
)
from tick_world import (
    TEMPLATES as TICK_TEMPLATES,
)

from channels.dryrun import DryRunChannel
from outreach.engine.route import route_batch
from outreach.engine.throttle import TaskCounts, Throttle, settle, waves
from outreach.store.schema import Enrollment, Person

CHANNELS = {"email": DryRunChannel("email"), "sms": DryRunChannel("sms")}


def no_tasks(owner: str | None, kind: str, start: datetime) -> int:
    return 0


def routed(cfg, items):
    return route_batch(items, cfg, set(CHANNELS))


def run_waves(throttle: Throttle, items, outcome: str = "claimed"):
    """Throttle wave by wave; each undecided occurrence ends ``outcome`` (as render would)."""
    done = []
    for wave in waves(items):
        for occ in throttle(wave, NOW, no_tasks):
            if not occ.outcome:
                occ.kind = occ.chosen.channel
                occ.decide(outcome)
        done.extend(settle(wave, throttle.task_counts))
    return done


def test_a_later_occurrence_counts_the_touch_decided_earlier_in_the_batch(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    ann = person()
    first = occurrence(cfg, ann, "a", 0, seq=0)
    second = occurrence(cfg, ann, "b", 0, seq=1)
    assert [len(w) for w in waves(routed(cfg, [first, second]))] == [1, 1]
    run_waves(Throttle(cfg, CHANNELS, timedelta(days=5)), [first, second])
    assert first.at == NOW and first.outcome == "claimed"
    # min_gap 1d after the first, across cadences (invariant 1)
    assert second.at >= first.at + timedelta(days=1)
    assert "min_gap" in second.reasons and ann.history == [first.at, second.at]


def test_an_occurrence_that_ends_skipped_does_not_count(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    ann = person()
    first = occurrence(cfg, ann, "a", 0, seq=0)
    second = occurrence(cfg, ann, "b", 0, seq=1)
    throttle = Throttle(cfg, CHANNELS, timedelta(days=5))
    run_waves(throttle, routed(cfg, [first, second]), outcome="skipped")
    assert first.at == NOW and second.at == NOW and ann.history == []


def test_max_touches_in_the_window_holds_with_the_history(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    ann = person(history=[NOW - timedelta(days=3), NOW - timedelta(days=2)])
    occ = occurrence(cfg, ann)
    Throttle(cfg, CHANNELS, timedelta(days=10))(routed(cfg, [occ]), NOW, no_tasks)
    assert "max_touches" in occ.reasons
    # beyond what the email channel schedules (72 h): deferred to the first allowed instant
    assert occ.outcome == "deferred" and occ.reason == "email cannot schedule ahead"
    assert occ.defer_until >= NOW - timedelta(days=3) + timedelta(days=7)


def test_nothing_is_planned_outside_the_send_window(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    night = datetime(2026, 11, 3, 23, 30, tzinfo=NY)
    occ = occurrence(cfg, person(), due=night)
    Throttle(cfg, CHANNELS, timedelta(days=3))(routed(cfg, [occ]), night, no_tasks)
    local = occ.at.astimezone(NY)
    assert local == datetime(2026, 11, 4, 8, 0, tzinfo=NY) and occ.outcome == ""


def test_out_of_office_beyond_the_horizon_defers_to_the_return(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    back = NOW + timedelta(days=4)
    occ = occurrence(cfg, person(paused_until=back))
    Throttle(cfg, CHANNELS, timedelta(hours=24))(routed(cfg, [occ]), NOW, no_tasks)
    assert (occ.outcome, occ.defer_until) == ("deferred", back)
    assert occ.tally == "out of office"  # the record stage counts it


def test_a_transactional_step_is_not_held_by_the_caps_or_a_pause(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    ann = person(history=[NOW - timedelta(hours=1)], paused_until=NOW + timedelta(days=4))
    occ = occurrence(cfg, ann, "a", 4)
    Throttle(cfg, CHANNELS, timedelta(hours=24))(routed(cfg, [occ]), NOW, no_tasks)
    assert (occ.outcome, occ.at) == ("", NOW)


def test_a_late_step_with_on_late_skip_is_skipped(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    occ = occurrence(cfg, person(), "a", 2, due=NOW - timedelta(hours=3))
    Throttle(cfg, CHANNELS, timedelta(hours=24))(routed(cfg, [occ]), NOW, no_tasks)
    assert occ.outcome == "skipped" and occ.reason.startswith("late: due by")
    assert occ.tally == "late"


def test_the_owner_task_cap_moves_tasks_to_the_next_allowed_day(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    people = [person(i) for i in (1, 2, 3)]
    items = routed(cfg, [occurrence(cfg, p, "a", 1, seq=i) for i, p in enumerate(people)])
    # One task queue (owner rec-1, linkedin): each waits for the one before it.
    assert [len(w) for w in waves(items)] == [1, 1, 1]
    loaded = []

    def one_stored(owner, kind, start):
        loaded.append((owner, kind, start))
        return 1 if start.day == 3 else 0

    throttle = Throttle(cfg, CHANNELS, timedelta(days=5))
    for wave in waves(items):
        for occ in throttle(wave, NOW, one_stored):
            occ.kind = occ.chosen.channel
            occ.decide("task")
        settle(wave, throttle.task_counts)
    days = [occ.at.astimezone(NY).date().isoformat() for occ in items]
    # 2 per day, one already stored today: one more today, then two tomorrow
    assert days == ["2026-11-03", "2026-11-04", "2026-11-04"]
    assert "task cap" in items[1].reasons and "task cap" not in items[0].reasons
    assert [day.date().isoformat() for _, _, day in loaded] == ["2026-11-03", "2026-11-04"]


def test_tasks_of_different_owners_are_independent(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    items = routed(
        cfg, [occurrence(cfg, person(i, owner=f"rec-{i}"), "a", 1, seq=i) for i in (1, 2)]
    )
    assert [len(w) for w in waves(items)] == [2]


def test_task_counts_load_a_day_once_and_count_new_tasks() -> None:
    counts = TaskCounts()
    calls = []

    def load(owner, kind, start):
        calls.append(start)
        return 3

    assert counts.count("rec-1", "linkedin", "2026-11-03", NY, load) == 3
    counts.add("rec-1", "linkedin", "2026-11-03")
    assert counts.count("rec-1", "linkedin", "2026-11-03", NY, load) == 4
    assert calls == [datetime(2026, 11, 3, tzinfo=NY)]


def test_an_occurrence_not_routed_is_refused(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    with pytest.raises(ValueError, match="was not routed"):
        Throttle(cfg, CHANNELS, timedelta(hours=24))([occurrence(cfg, person())], NOW, no_tasks)


def test_one_person_in_two_crms_and_two_cadences_is_capped_as_one(world: World) -> None:
    world.add(
        {**PERSON, "source": "greenhouse", "external_id": "g1", "stage": "Application Review"},
        {
            **PERSON,
            "source": "lever",
            "external_id": "l1",
            "stage": "On-site interview",
            "phone": "",
        },
    )
    with world.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Person)) == 1
        assert conn.scalar(select(func.count()).select_from(Enrollment)) == 0
    world.nightly(ny(2026, 11, 2, 9, 0), 21)
    touches = [t for t in world.touches() if t.status in ("sent", "task")]
    assert {t.cadence_id for t in touches} == {"application-follow-up", "interview-follow-up"}
    times = [t.planned_at for t in touches]
    # Invariant 1 for every non-transactional touch, against everything before it: the
    # transactional answers (acknowledgement, interview thanks) count toward the caps but
    # are never held by them.
    checked = 0
    for index, touch in enumerate(touches):
        if touch.transactional:
            continue
        checked += 1
        at = touch.planned_at
        assert all(at - earlier >= timedelta(hours=48) for earlier in times[:index])
        assert sum(1 for u in times if at - timedelta(days=7) < u <= at) <= 2
    assert checked >= 2
    # Both answers went first, at once; the check-ins waited behind them.
    assert {t.step_id for t in touches[:2]} == {"acknowledge", "thank-you"}
    assert all(t.transactional for t in touches[:2])
    assert any(s.total_reasons("deferred").get("min_gap") for s in world.summaries)


def test_linkedin_tasks_respect_the_owner_daily_cap(small: World) -> None:
    people = [
        {
            **PERSON,
            "external_id": f"p{i}",
            "email": f"p{i}@example.com",
            "phone": "",
            "linkedin_url": f"https://www.linkedin.com/in/p{i}",
            "stage": "applied",
        }
        for i in range(2)
    ]
    small.add(*people)
    small.nightly(ny(2026, 11, 2, 9, 0), 12)
    tasks = [t for t in small.tasks() if t.kind == "linkedin"]
    assert len(tasks) == 2
    assert tasks[0].due_at.astimezone(NY).date() != tasks[1].due_at.astimezone(NY).date()
    # The cap moved the second task to a later day: either decided tonight for tomorrow,
    # or deferred to a later night (which of the two depends on where the step falls
    # against the horizon's edge).
    assert any(
        t.due_at.astimezone(NY).date() > t.created_at.astimezone(NY).date() for t in tasks
    ) or any(s.total_reasons("deferred").get("task cap") for s in small.summaries)


def test_the_owner_daily_cap_holds_across_batches_of_one_tick(small: World) -> None:
    # Batches of one: each batch reads the day's count again from the store (where the
    # previous batch, or another worker, committed its task), and the cap still holds.
    people = [
        {
            **PERSON,
            "external_id": f"p{i}",
            "email": f"p{i}@example.com",
            "phone": "",
            "linkedin_url": f"https://www.linkedin.com/in/p{i}",
            "stage": "applied",
        }
        for i in range(3)
    ]
    small.add(*people)
    for day in range(12):
        small.tick(ny(2026, 11, 2, 9, 0) + timedelta(days=day), batch_size=1)
    tasks = [t for t in small.tasks() if t.kind == "linkedin"]
    assert len(tasks) == 3
    days = [t.due_at.astimezone(NY).date() for t in tasks]
    assert len(set(days)) == 3, days


def test_a_touch_due_sooner_than_the_provider_can_schedule_waits(engine, tmp_path: Path) -> None:
    config = write_config(
        tmp_path, ONE_STEP.replace("channel: email, fallback: sms", "channel: sms"), TICK_TEMPLATES
    )
    world = World(engine, config, ny(2026, 11, 2, 7, 50))
    world.sms = ScheduledSMS()  # type: ignore[assignment]
    world.add({**PERSON, "stage": "applied"})
    summary = world.tick()  # 07:50: the window opens at 08:00, ten minutes away
    assert world.sms.sent == []
    assert summary.total_reasons("deferred") == {"sms cannot schedule that soon": 1}
    world.tick(ny(2026, 11, 2, 8, 5))
    (message,) = world.sms.sent
    assert message.send_at.astimezone(NY) >= ny(2026, 11, 2, 8, 0)
