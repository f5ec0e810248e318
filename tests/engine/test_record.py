"""The record stage: outcomes into the ledger in planning order; results after a send."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from engine_world import World, write_config
from sqlalchemy import insert, select, update
from stage_data import NOW, config, occurrence, person
from tick_world import (
    NY,
    ONE_STEP,
    PERSON,
    SMALL,
    BouncingChannel,
    CountingSMS,
    MidFlight,
    SchedulingBouncer,
    enrollment_rows,
    ny,
)
from tick_world import (
    TEMPLATES as TICK_TEMPLATES,
)

from channels.base import Channel, SendResult
from outreach.engine.batch import PlannedTouch, TickSummary
from outreach.engine.ledger import BatchWriter
from outreach.engine.record import record
from outreach.engine.route import route_batch
from outreach.store.schema import ContactPoint, Enrollment, Event, Person, Touch
from outreach.templates import RenderedMessage


def decided(cfg, who, outcome, *, seq, step=0, cadence="a"):
    """An occurrence as the render stage hands it on, with ``outcome``."""
    [occ] = route_batch([occurrence(cfg, who, cadence, step, seq=seq)], cfg, {"email", "sms"})
    occ.chosen = occ.route
    occ.rule = f"rule {seq}"
    if outcome == "claimed":
        occ.kind, occ.template, occ.variant = "email", "t", "a"
        occ.message = RenderedMessage("t", "email", "Hello Ann", subject="Hi Ann")
    elif outcome == "task":
        occ.kind, occ.template, occ.variant = "linkedin", "t", "a"
        occ.title, occ.body = "Connect with Ann", "Say hi"
    occ.decide(outcome, "why" if outcome in ("skipped", "holdout") else "")
    if outcome == "deferred":
        occ.decide("deferred", "channel off", NOW + timedelta(days=1))
    return occ


def test_outcomes_are_written_in_planning_order(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    writer = BatchWriter(NOW, "run-1", NOW + timedelta(minutes=15))
    items = [
        decided(cfg, person(3), "task", seq=2, step=1),
        decided(cfg, person(1), "claimed", seq=0),
        decided(cfg, person(2), "skipped", seq=1),
        decided(cfg, person(4), "deferred", seq=3),
    ]
    summary = TickSummary(now=NOW)
    record(items, writer, summary)
    assert [(row["person_id"], row["status"]) for row in writer.touches] == [
        (1, "claimed"),
        (2, "skipped"),
        (3, "task"),
    ]
    claimed = writer.touches[0]
    # the claim carries its lease, reply token and digest before any provider is called
    assert claimed["lease_until"] == NOW + timedelta(minutes=15) and claimed["reply_token"]
    assert claimed["idempotency_key"] == "100:one:0" and claimed["body_digest"]
    assert len(writer.pending) == 1 and len(writer.tasks) == 1
    assert writer.enrollments[403]["next_due_at"] == NOW + timedelta(days=1)
    assert writer.deferred == {403}
    # the claimed, skipped and task occurrences moved their enrollments on
    assert [writer.enrollments[i]["next_step"] for i in (100, 201, 302)] == [1, 1, 2]
    assert [(t.person_id, t.status) for t in summary.journal] == [
        (1, "scheduled"),
        (2, "skipped"),
        (3, "task"),
    ]
    assert isinstance(summary.journal[0], PlannedTouch)


def test_tallies_are_counted_in_planning_order(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    writer = BatchWriter(NOW, "run-1", NOW)
    late = decided(cfg, person(2), "skipped", seq=1)
    late.tally = "late"
    gap = decided(cfg, person(3), "deferred", seq=2)
    gap.tally = "min_gap"
    off = decided(cfg, person(1), "deferred", seq=0)
    off.tally = "channel off"
    opted = decided(cfg, person(4), "claimed", seq=3)
    opted.decide("ended", "opted out", tally="opted out")
    counts = late.counts
    for occ in (gap, off, opted):
        occ.counts = counts  # one step: one counter, as in a tick
    record([late, gap, opted, off], writer, None)
    assert list(counts.deferred.items()) == [("channel off", 1), ("min_gap", 1)]
    assert list(counts.skipped.items()) == [("late", 1), ("opted out", 1)]
    # an ended occurrence writes nothing more: the plan stage ended its enrollment
    assert [row["person_id"] for row in writer.touches] == [2]


def test_no_journal_without_a_summary(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    writer = BatchWriter(NOW, "run-1", NOW)
    record([decided(cfg, person(1), "holdout", seq=0)], writer, None)
    assert writer.touches[0]["status"] == "holdout" and writer.touches[0]["lease_until"] is None


def test_an_undecided_occurrence_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    writer = BatchWriter(NOW, "run-1", NOW)
    fine = decided(cfg, person(1), "claimed", seq=0)
    [undecided] = route_batch([occurrence(cfg, person(2), seq=1)], cfg, {"email"})
    with pytest.raises(ValueError, match="has no outcome"):
        record([fine, undecided], writer, None)
    assert writer.touches == [] and writer.enrollments == {}


def test_a_permanent_failure_suppresses_and_falls_back(small: World) -> None:
    small.add({**PERSON, "stage": "applied"})
    small.email = BouncingChannel()  # type: ignore[assignment]
    summary = small.tick()
    (touch,) = small.touches()
    assert touch.status == "sent" and touch.channel == "sms"
    assert "sms after email failed: 550 mailbox unknown" in touch.reason
    assert len(small.sms.sent) == 1 and summary.total("failed") == 0
    with small.engine.connect() as conn:
        email = conn.execute(select(ContactPoint).where(ContactPoint.kind == "email")).one()
        assert email.suppressed and email.suppressed_reason == "bounced"


def test_ambiguous_and_failed_are_counted(small: World) -> None:
    small.add({**PERSON, "stage": "applied"})

    class Flaky(Channel):
        name = "email"
        max_batch = 10

        def send(self, batch):
            return [SendResult.ambiguous(m, "timeout after the request left") for m in batch]

    small.email = Flaky()  # type: ignore[assignment]
    summary = small.tick()
    assert summary.total("ambiguous") == 1
    (touch,) = small.touches()
    assert touch.status == "ambiguous" and "timeout" in touch.reason
    with small.engine.begin() as conn:
        conn.execute(update(Touch).values(status="ambiguous"))
    assert small.tick().total("sent") == 0


def test_a_reply_during_a_failed_send_of_the_last_step_is_not_undone(
    engine, tmp_path: Path
) -> None:
    from outreach.engine.enroll import process_events
    from outreach.engine.tick import engine_transactions

    world = World(engine, write_config(tmp_path, ONE_STEP, TICK_TEMPLATES), ny(2026, 11, 2, 9, 0))
    world.add({**PERSON, "stage": "applied"})

    def reply_arrives() -> None:  # another worker applies a reply while the send is out
        with world.engine.begin() as conn:
            person = conn.execute(select(Person.id)).scalar_one()
            conn.execute(
                insert(Event).values(
                    type="reply",
                    channel="email",
                    person_id=person,
                    at=world.clock.now(),
                    payload={},
                    created_at=world.clock.now(),
                )
            )
        process_events(engine_transactions(world.engine), world.config, world.clock.now())

    world.email = MidFlight(reply_arrives)  # type: ignore[assignment]
    summary = world.tick()
    (touch,) = world.touches()
    assert touch.status == "failed" and "re-planned" not in touch.reason
    assert summary.total("replanned") == 0
    assert enrollment_rows(world) == [("completed", 1)]
    from channels import DryRunChannel

    world.email = DryRunChannel("email")  # type: ignore[assignment]
    world.tick(ny(2026, 11, 2, 12, 0))
    assert not world.email.sent  # nothing after the reply


def test_a_failed_send_whose_enrollment_moved_on_is_not_marked_re_planned(
    engine, tmp_path: Path
) -> None:
    world = World(engine, write_config(tmp_path, SMALL, TICK_TEMPLATES), ny(2026, 11, 2, 9, 0))
    world.add({**PERSON, "stage": "applied"})

    def another_worker_moves_it_on() -> None:
        with world.engine.begin() as conn:
            conn.execute(update(Enrollment).values(next_step=Enrollment.next_step + 1))

    world.email = MidFlight(another_worker_moves_it_on)  # type: ignore[assignment]
    summary = world.tick()
    (touch,) = world.touches()
    assert touch.status == "failed" and "re-planned" not in touch.reason
    assert "#" not in touch.idempotency_key and summary.total("replanned") == 0


def test_a_fallback_that_cannot_deliver_at_the_planned_time_is_re_planned(
    engine, tmp_path: Path
) -> None:
    world = World(engine, write_config(tmp_path, ONE_STEP, TICK_TEMPLATES), ny(2026, 11, 2, 22, 0))
    world.add({**PERSON, "stage": "applied"})
    world.email = SchedulingBouncer()  # type: ignore[assignment]
    world.sms = CountingSMS()  # type: ignore[assignment]  (sends only when due)
    world.tick()  # 22:00: email planned for 08:00 tomorrow, refused; SMS cannot wait
    assert world.sms.sent == []
    (touch,) = world.touches()
    assert touch.status == "failed" and "re-planned" in touch.reason
    world.tick(ny(2026, 11, 3, 8, 30))
    sms = [t for t in world.touches() if t.status == "sent"]
    assert [t.channel for t in sms] == ["sms"]
    (message,) = world.sms.sent
    assert message.send_at.astimezone(NY).hour >= 8  # inside the window, not at 22:00
