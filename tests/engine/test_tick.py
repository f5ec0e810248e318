"""The tick: idempotency, per-person caps across records, crashes, events, routing, rendering."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from engine_world import World, write_config
from sqlalchemy import func, insert, select, update

from channels.base import Channel, OutgoingMessage, SendResult
from outreach.clock import FixedClock, ManualTimer
from outreach.engine.route import choose_variant
from outreach.store.schema import ContactPoint, Enrollment, Event, Person, Touch

NY = ZoneInfo("America/New_York")


def ny(*args: int) -> datetime:
    return datetime(*args, tzinfo=NY)


PERSON = {
    "external_id": "p1",
    "first_name": "Ann",
    "email": "ann@example.com",
    "phone": "+1 212 555 0101",
    "sms_consent": "true",
    "job_title": "SRE",
    "recruiter_name": "Jo",
    "owner_id": "rec-1",
    "timezone": "America/New_York",
}

SMALL = """\
policy:
  default_timezone: America/New_York
  send_window: {start: "08:00", end: "19:00", days: [mon, tue, wed, thu, fri, sat, sun]}
  holidays: none
  max_touches: {count: 2, per: 7d}
  min_gap: 1d
  channel_order: [email, sms, linkedin]
  rate_limits: {linkedin: 1/d}
cadences:
  - id: c
    trigger: {stage: applied}
    steps:
      - {id: one, after: 0m, channel: email, fallback: sms, template: t}
      - {id: two, after: 2d, from: previous, channel: auto, template: t}
      - {id: three, after: 2d, from: previous, channel: linkedin, template: t}
"""
TEMPLATES = {
    "t.email.j2": "Subject: Hi {{ candidate.first_name }}\n\nHello {{ candidate.first_name }}",
    "t.sms.j2": "Hi {{ candidate.first_name }}",
    "t.task.j2": "Title: Connect with {{ candidate.first_name }}\n\nSay hi",
    "broken.email.j2": "Subject: Hi\n\nYour {{ candidate.custom.portfolio }} is great",
    "broken.sms.j2": "Your {{ candidate.custom.portfolio }} is great",
}


@pytest.fixture
def small(engine, tmp_path: Path) -> World:
    config = write_config(tmp_path, SMALL, TEMPLATES)
    return World(engine, config, ny(2026, 11, 2, 9, 0))


def test_running_twice_at_the_same_moment_sends_nothing_the_second_time(world: World) -> None:
    world.add({**PERSON, "stage": "applied"})
    first = world.tick(ny(2026, 11, 2, 9, 0))
    assert first.total("sent") == 1
    second = world.tick(ny(2026, 11, 2, 9, 0))
    assert second.total("sent") == 0 and second.total("tasks") == 0
    assert len(world.email.sent) == 1


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


def test_reply_stops_and_bounce_moves_to_the_fallback_channel(small: World) -> None:
    small.add({**PERSON, "stage": "applied"})
    small.tick()
    with small.engine.begin() as conn:
        person_id = conn.scalar(select(Person.id))
        email_id = conn.scalar(select(ContactPoint.id).where(ContactPoint.kind == "email"))
        conn.execute(
            insert(Event).values(
                type="bounce",
                channel="email",
                person_id=person_id,
                contact_point_id=email_id,
                at=small.clock.now(),
                payload={},
                created_at=small.clock.now(),
            )
        )
    small.tick(ny(2026, 11, 4, 9, 0))
    two = small.touches(step_id="two")[0]
    assert two.channel == "sms" and "email suppressed (bounced)" in two.reason
    with small.engine.begin() as conn:
        conn.execute(
            insert(Event).values(
                type="reply",
                channel="sms",
                person_id=person_id,
                at=small.clock.now(),
                payload={},
                created_at=small.clock.now(),
            )
        )
    summary = small.tick(ny(2026, 11, 5, 9, 0))
    assert summary.enroll.stopped["reply"] == 1
    assert not small.touches(step_id="three")


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


def test_no_usable_channel_becomes_a_task_with_the_reason(small: World) -> None:
    small.add({**PERSON, "stage": "applied", "email": "", "sms_consent": "false"})
    small.tick()
    (touch,) = small.touches()
    assert touch.status == "task"
    (task,) = small.tasks()
    assert task.kind == "manual" and task.owner_id == "rec-1"
    assert "email: no email address" in task.reason and "sms: no SMS consent" in task.reason
    assert "Suggested message" in task.body


def test_a_channel_that_is_off_defers_instead_of_making_tasks(small: World) -> None:
    small.add({**PERSON, "stage": "applied"})
    summary = small.tick(ny(2026, 11, 2, 9, 0), **{})
    assert summary.total("sent") == 1
    off = World(small.engine, small.config, small.clock.now())
    off.add(
        {**PERSON, "external_id": "p2", "email": "bo@example.com", "phone": "", "stage": "applied"}
    )
    tick_summary = _tick_without_channels(off)
    assert tick_summary.total_reasons("deferred") == {"channel off": 1}
    assert off.tasks() == []


def _tick_without_channels(world: World):
    from outreach.engine.tick import Tick, engine_transactions

    return Tick(
        world.config,
        world.clock,
        {},
        engine_transactions(world.engine),
        wall_clock=world.clock,
        dialect=world.engine.dialect.name,
    ).run()


def test_auto_uses_the_preferred_channel(small: World) -> None:
    small.add({**PERSON, "stage": "applied", "preferred_channel": "sms"})
    small.nightly(ny(2026, 11, 2, 9, 0), 3)
    two = small.touches(step_id="two")[0]
    assert two.channel == "sms" and "(preferred)" in two.reason


def test_sms_needs_a_mobile_number(small: World) -> None:
    small.add({**PERSON, "stage": "applied", "email": "", "phone": "+1 800 555 0199"})
    small.tick()
    (task,) = small.tasks()
    assert "phone is toll_free, not mobile" in task.reason


def test_a_missing_variable_skips_the_touch_naming_it(engine, tmp_path: Path) -> None:
    config = write_config(
        tmp_path, SMALL.replace("template: t}", "template: broken}", 1), TEMPLATES
    )
    world = World(engine, config, ny(2026, 11, 2, 9, 0))
    world.add({**PERSON, "stage": "applied"})
    summary = world.tick()
    (touch,) = world.touches()
    assert touch.status == "skipped"
    assert "candidate.custom.portfolio" in touch.reason and "broken.email.j2" in touch.reason
    assert summary.total_reasons("skipped") == {"template error": 1}
    assert not world.email.sent
    world.add(
        {
            **PERSON,
            "external_id": "p2",
            "email": "b@example.com",
            "phone": "",
            "stage": "applied",
            "portfolio": "{{ 7*7 }} portfolio",
        }
    )
    world.tick()
    assert world.email.sent[0].body == "Your {{ 7*7 }} portfolio is great"


class BouncingChannel(Channel):
    name = "email"
    max_batch = 10

    def __init__(self) -> None:
        self.sent: list[OutgoingMessage] = []

    def send(self, batch):
        return [
            SendResult.failed(m, "550 mailbox unknown", permanent=True, suppress="bounced")
            for m in batch
        ]


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
    assert any(s.total_reasons("deferred").get("task cap") for s in small.summaries)


def test_variants_are_stable_per_person_and_follow_the_weights(default_config) -> None:
    step = default_config.cadence("interview-follow-up").steps[0]
    picks = [choose_variant(i, "interview-follow-up", step)[0] for i in range(2000)]
    assert picks == [choose_variant(i, "interview-follow-up", step)[0] for i in range(2000)]
    share = picks.count("b") / len(picks)
    assert 0.45 < share < 0.55


def test_leaving_the_stage_stops_only_stage_change_cadences(world: World) -> None:
    world.add({**PERSON, "stage": "screening"})
    world.tick(ny(2026, 11, 2, 9, 0))
    world.add({**PERSON, "stage": "interview"})
    summary = world.tick(ny(2026, 11, 3, 9, 0))
    assert summary.enroll.stopped["stage_change"] == 1
    with world.engine.connect() as conn:
        statuses = dict(conn.execute(select(Enrollment.cadence_id, Enrollment.status)).all())
    assert statuses == {"interview-scheduling": "stopped", "interview-follow-up": "active"}


def test_re_entering_a_stage_enrolls_again(world: World) -> None:
    world.add({**PERSON, "stage": "applied"})
    world.tick(ny(2026, 11, 2, 9, 0))
    world.add({**PERSON, "stage": "screening"}, at=ny(2026, 11, 5, 9, 0))
    world.add({**PERSON, "stage": "applied"}, at=ny(2026, 11, 20, 9, 0))
    world.tick(ny(2026, 11, 20, 10, 0))
    with world.engine.connect() as conn:
        rows = (
            conn.execute(
                select(Enrollment.status)
                .where(Enrollment.cadence_id == "application-follow-up")
                .order_by(Enrollment.id)
            )
            .scalars()
            .all()
        )
    assert rows == ["stopped", "active"]  # the new enrollment has steps to come


def test_dry_run_writes_nothing(cli, tmp_path: Path) -> None:
    csv = tmp_path / "c.csv"
    csv.write_text("source,external_id,email,stage\nimport,1,a@example.com,applied\n")
    assert cli("import", str(csv), "--now", "2026-11-02T14:00:00Z").exit_code == 0
    result = cli("run", "--dry-run", "--now", "2026-11-02T14:00:00Z")
    assert result.exit_code == 0, result.output
    assert "dry run" in result.stdout and "sent 1" in result.stdout
    again = cli("run", "--dry-run", "--now", "2026-11-02T14:00:00Z")
    assert "sent 1" in again.stdout  # nothing was recorded the first time
    live = cli("run", "--now", "2026-11-02T14:00:00Z")
    assert live.exit_code == 0
    assert "email: off" in live.stderr and "deferred 1" in live.stdout


def test_enrollments_store_the_next_due_time(world: World) -> None:
    world.add({**PERSON, "stage": "applied"})
    world.tick(ny(2026, 11, 2, 9, 0))
    with world.engine.connect() as conn:
        row = conn.execute(
            select(Enrollment).where(Enrollment.cadence_id == "application-follow-up")
        ).one()
    assert row.next_step == 1 and row.next_due_at == ny(2026, 11, 9, 9, 0)


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


class CountingSMS(Channel):
    """An SMS provider that takes one request per message and records each batch."""

    name = "sms"
    max_batch = 20

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.sent: list[OutgoingMessage] = []

    def send(self, batch):
        self.batches.append(len(batch))
        self.sent.extend(batch)
        return [SendResult.sent(m) for m in batch]


def test_sms_is_handed_over_no_faster_than_the_policy_rate(engine, tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        SMALL.replace("rate_limits: {linkedin: 1/d}", "rate_limits: {linkedin: 1/d, sms: 2/s}"),
        TEMPLATES,
    )
    world = World(engine, config, ny(2026, 11, 2, 9, 0))
    world.sms = CountingSMS()  # type: ignore[assignment]
    world.add(
        *[
            {
                **PERSON,
                "external_id": f"p{i}",
                "email": "",
                "phone": f"+1 212 555 01{i:02d}",
                "stage": "applied",
            }
            for i in range(7)
        ]
    )
    timer = ManualTimer()
    summary = world.tick(sleep=timer.sleep, monotonic=timer.monotonic)
    assert summary.total("sent") == 7
    # Two a second: never a burst of twenty requests at a 2/s provider limit.
    assert max(world.sms.batches) <= 2 and sum(world.sms.batches) == 7
    assert timer.now >= 2.5  # 7 messages at 2/s after a burst of 2


ONE_STEP = """\
policy:
  default_timezone: America/New_York
  send_window: {start: "08:00", end: "19:00", days: [mon, tue, wed, thu, fri, sat, sun]}
  holidays: none
  max_touches: {count: 5, per: 7d}
  min_gap: 1h
  channel_order: [email, sms, linkedin]
cadences:
  - id: c
    trigger: {stage: applied}
    steps:
      - {id: one, after: 0m, channel: email, fallback: sms, template: t}
"""


class MidFlight(Channel):
    """An email provider that fails non-permanently; ``during`` runs while the send is out."""

    name = "email"
    max_batch = 10
    max_schedule_ahead = timedelta(hours=72)

    def __init__(self, during=None) -> None:
        self.during = during
        self.sent: list[OutgoingMessage] = []

    def send(self, batch):
        if self.during is not None:
            self.during()
        return [
            SendResult.failed(m, "SendGrid 503 after 4 attempts", permanent=False) for m in batch
        ]


def enrollment_rows(world: World) -> list:
    with world.engine.connect() as conn:
        return list(conn.execute(select(Enrollment.status, Enrollment.next_step)).all())


def test_a_reply_during_a_failed_send_of_the_last_step_is_not_undone(
    engine, tmp_path: Path
) -> None:
    from outreach.engine.enroll import process_events
    from outreach.engine.tick import engine_transactions

    world = World(engine, write_config(tmp_path, ONE_STEP, TEMPLATES), ny(2026, 11, 2, 9, 0))
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
    world = World(engine, write_config(tmp_path, SMALL, TEMPLATES), ny(2026, 11, 2, 9, 0))
    world.add({**PERSON, "stage": "applied"})

    def another_worker_moves_it_on() -> None:
        with world.engine.begin() as conn:
            conn.execute(update(Enrollment).values(next_step=Enrollment.next_step + 1))

    world.email = MidFlight(another_worker_moves_it_on)  # type: ignore[assignment]
    summary = world.tick()
    (touch,) = world.touches()
    assert touch.status == "failed" and "re-planned" not in touch.reason
    assert "#" not in touch.idempotency_key and summary.total("replanned") == 0


class SchedulingBouncer(BouncingChannel):
    """Schedules like SendGrid (72 h ahead), and refuses every address."""

    max_schedule_ahead = timedelta(hours=72)


def test_a_fallback_that_cannot_deliver_at_the_planned_time_is_re_planned(
    engine, tmp_path: Path
) -> None:
    world = World(engine, write_config(tmp_path, ONE_STEP, TEMPLATES), ny(2026, 11, 2, 22, 0))
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


class ScheduledSMS(CountingSMS):
    """A provider that schedules 16 minutes to 35 days ahead, like Twilio with a service."""

    max_schedule_ahead = timedelta(days=35)
    min_schedule_ahead = timedelta(minutes=16)


def test_a_touch_due_sooner_than_the_provider_can_schedule_waits(engine, tmp_path: Path) -> None:
    config = write_config(
        tmp_path, ONE_STEP.replace("channel: email, fallback: sms", "channel: sms"), TEMPLATES
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


def test_claims_of_a_long_paced_dispatch_keep_their_lease(engine, tmp_path: Path) -> None:
    config = write_config(
        tmp_path, ONE_STEP.replace("channel: email, fallback: sms", "channel: sms") + "", TEMPLATES
    )
    world = World(engine, config, ny(2026, 11, 2, 9, 0))
    wall = FixedClock(datetime(2026, 11, 2, 14, 0, tzinfo=ZoneInfo("UTC")))
    seen: list[bool] = []

    class SlowSMS(CountingSMS):
        def send(self, batch):
            wall.advance(timedelta(minutes=5))  # a slow provider: five minutes a message
            with world.engine.connect() as conn:
                leases = (
                    conn.execute(select(Touch.lease_until).where(Touch.status == "claimed"))
                    .scalars()
                    .all()
                )
            seen.append(all(lease > wall.now() for lease in leases))
            return super().send(batch)

    world.sms = SlowSMS()  # type: ignore[assignment]
    world.add(
        *[
            {
                **PERSON,
                "external_id": f"p{i}",
                "email": "",
                "phone": f"+1 212 555 01{i:02d}",
                "stage": "applied",
            }
            for i in range(8)
        ]
    )
    timer = ManualTimer()
    world.tick(wall_clock=wall, sleep=timer.sleep, monotonic=timer.monotonic)
    assert len(world.sms.sent) == 8  # 40 minutes of sending against a 15-minute lease
    assert all(seen)


class CountingEmail(Channel):
    """Email where ``grouped`` messages share one request (a dynamic template)."""

    name = "email"
    max_batch = 1000

    def __init__(self, grouped: bool) -> None:
        self.grouped = grouped
        self.batches: list[int] = []

    def batch_key(self, message):
        return ("template",) if self.grouped else ()

    def send(self, batch):
        self.batches.append(len(batch))
        return [SendResult.sent(m) for m in batch]


@pytest.mark.parametrize(("grouped", "largest"), [(False, 3), (True, 9)])
def test_requests_are_paced_and_shared_requests_are_not_split(
    engine, tmp_path: Path, grouped: bool, largest: int
) -> None:
    config = write_config(
        tmp_path,
        SMALL.replace("rate_limits: {linkedin: 1/d}", "rate_limits: {linkedin: 1/d, email: 3/s}"),
        TEMPLATES,
    )
    world = World(engine, config, ny(2026, 11, 2, 9, 0))
    world.email = CountingEmail(grouped)  # type: ignore[assignment]
    world.add(
        *[
            {
                **PERSON,
                "external_id": f"p{i}",
                "email": f"p{i}@example.com",
                "phone": "",
                "stage": "applied",
            }
            for i in range(9)
        ]
    )
    timer = ManualTimer()
    world.tick(sleep=timer.sleep, monotonic=timer.monotonic)
    assert sum(world.email.batches) == 9
    # One message per request: three at a time at 3/s. One shared request: all nine at once.
    assert max(world.email.batches) == largest
