"""Recall end to end: what a provider holds for later is cancelled when it must not go out.

The tick hands SendGrid and Twilio touches with a future delivery time (real SDKs, loopback
fakes); a reply, an opt-out or an out-of-office notice arrives before that time; the next
tick cancels them at the provider, marks them cancelled in the ledger, and the fakes never
deliver them. The cut-off, the slot limit and failing cancel calls are exercised too.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from test_delivery import KEY, Harness, person

from outreach.cadence import CadenceConfig, load_cadence_file
from outreach.clock import FixedClock
from outreach.engine.tick import Tick, TickSummary, engine_transactions
from outreach.events import InboundEvent, ingest_events
from outreach.sandbox.sendgrid import FakeSendGrid
from outreach.sandbox.twilio import SANDBOX_MESSAGING_SERVICE_SID, FakeTwilio
from outreach.store.schema import Enrollment, Event, Recall, Touch

NOW = datetime(2026, 11, 2, 15, 0, tzinfo=UTC)  # Monday 10:00 in New York
REPLY_TO = "replies@reply.northwind.example"

CONFIG = """\
policy:
  default_timezone: America/New_York
  send_window: {start: "00:00", end: "23:59", days: [mon, tue, wed, thu, fri, sat, sun]}
  holidays: none
  max_touches: {count: 9, per: 7d}
  min_gap: 1h
  channel_order: [email, sms, linkedin]
  rate_limits: {email: 100000/s, sms: 100000/s}
cadences:
  - id: apply
    trigger: {stage: applied}
    stop_on: [reply, stage_change, opt_out]
    steps:
      - {id: hello, after: 0m, channel: email, template: t}
      - {id: later, after: 6h, channel: email, template: t}
  - id: screen
    trigger: {stage: screening}
    stop_on: [reply, stage_change, opt_out]
    steps:
      - {id: text, after: 0m, channel: sms, template: t}
      - {id: again, after: 6h, channel: sms, template: t}
"""
TEMPLATES = {
    "t.email.j2": "Subject: Hello {{ candidate.first_name }}\n\nHi {{ candidate.first_name }}.",
    "t.sms.j2": "Hi {{ candidate.first_name }}, thanks for applying.",
}


def recall_config(tmp_path: Path) -> CadenceConfig:
    folder = tmp_path / "templates"
    folder.mkdir(exist_ok=True)
    for name, text in TEMPLATES.items():
        (folder / name).write_text(text)
    (tmp_path / "cadences.yaml").write_text(CONFIG)
    return load_cadence_file(tmp_path / "cadences.yaml")


class RecallHarness(Harness):
    """The delivery harness with a reply address and a Messaging Service (Twilio only
    schedules through one)."""

    def __init__(self, engine, config, sendgrid, twilio) -> None:
        super().__init__(engine, config, sendgrid, twilio)
        from channels.sms import TwilioSMS

        self.sms.close()
        self.sms = TwilioSMS(
            twilio.account_sid,
            twilio.auth_token,
            messaging_service_sid=SANDBOX_MESSAGING_SERVICE_SID,
            base_url=self.servers[1].url,
            clock=self.clock,
            sleep=self.timer.sleep,
        )
        self.clock.set(NOW)

    def tick(self, at: datetime | None = None) -> TickSummary:
        if at is not None:
            self.clock.set(at)
        return Tick(
            self.config,
            self.clock,
            {"email": self.email, "sms": self.sms},
            engine_transactions(self.engine),
            wall_clock=self.clock,
            sleep=self.timer.sleep,
            monotonic=self.timer.monotonic,
            dialect=self.engine.dialect.name,
            reply_to=REPLY_TO,
        ).run()

    def event(self, kind: str, touch_id: int, at: datetime, **payload: Any) -> None:
        if kind == "auto_reply":
            with self.engine.begin() as conn:
                touch = conn.execute(select(Touch).where(Touch.id == touch_id)).one()
                conn.execute(
                    Event.__table__.insert().values(
                        type="auto_reply",
                        channel="email",
                        person_id=touch.person_id,
                        touch_id=touch_id,
                        at=at,
                        dedupe_key=f"test:{touch_id}:{at.isoformat()}",
                        payload=payload,
                        created_at=at,
                    )
                )
            return
        report = ingest_events(
            self.engine,
            [("test", InboundEvent(type=kind, touch_id=touch_id, at=at, channel="email"))],
            now=at,
        )
        assert report.recorded == 1

    def touch(self, step: str) -> Any:
        rows = [t for t in self.touches() if t.step_id == step]
        assert rows, f"no touch for {step}"
        return rows[-1]

    def recalls(self) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(Recall).order_by(Recall.id)).all())


@pytest.fixture
def harness(engine, tmp_path: Path) -> Iterator[RecallHarness]:
    clock = FixedClock(NOW)
    h = RecallHarness(
        engine,
        recall_config(tmp_path),
        FakeSendGrid(api_key=KEY, clock=clock),
        FakeTwilio(clock=clock),
    )
    h.sendgrid.clock = h.clock
    h.twilio.clock = h.clock
    yield h
    h.close()


def _delivered(h: RecallHarness) -> list[dict[str, Any]]:
    h.sendgrid.deliver_due()
    return [m for m in h.sendgrid.messages if m["state"] == "processed"]


def test_a_reply_cancels_the_email_sendgrid_holds_for_later(harness) -> None:
    h = harness
    h.add([person(1, "applied")])
    first = h.tick()
    assert first.total("sent") == 2  # the hello now, the follow-up scheduled for 16:00 UTC
    later = h.touch("later")
    assert later.planned_at == NOW + timedelta(hours=6)
    assert later.recall_ref, "a scheduled email carries its own SendGrid batch id"
    (held,) = [m for m in h.sendgrid.messages if m["batch_id"]]
    assert held["batch_id"] == later.recall_ref
    assert held["reply_to"]["email"] == f"replies+{later.reply_token}@reply.northwind.example"
    assert held["headers"]["Message-ID"] == f"<{later.message_id}>"

    h.event("reply", h.touch("hello").id, NOW + timedelta(hours=1))
    summary = h.tick(NOW + timedelta(hours=2))
    assert summary.recall.cancelled == 1 and not summary.recall.unrecallable
    assert h.touch("later").status == "cancelled"
    (recall,) = h.recalls()
    assert recall.status == "cancelled" and recall.why.startswith("cadence stopped: reply")

    h.clock.set(NOW + timedelta(hours=7))
    assert [m["to"] for m in _delivered(h)] == [["person1@example.com"]]  # the hello only
    assert held["state"] == "cancelled"
    # The slot SendGrid counts against its ten is freed once the send time is past.
    freed = h.tick(NOW + timedelta(hours=8))
    assert freed.recall.released == 1
    assert h.recalls()[0].status == "released"
    assert later.recall_ref not in h.sendgrid.scheduled_sends


def test_inside_the_cutoff_the_touch_is_counted_unrecallable(harness) -> None:
    h = harness
    h.add([person(1, "applied")])
    h.tick()
    later = h.touch("later")
    h.event("reply", h.touch("hello").id, later.planned_at - timedelta(minutes=8))
    summary = h.tick(later.planned_at - timedelta(minutes=5))
    assert summary.recall.cancelled == 0
    assert summary.recall.unrecallable["too_late"] == 1
    assert h.touch("later").status == "sent"
    assert h.recalls()[0].status == "too_late"


def test_a_failing_cancel_is_retried_at_the_next_tick(harness) -> None:
    h = harness
    h.add([person(1, "applied")])
    h.tick()
    h.event("reply", h.touch("hello").id, NOW + timedelta(minutes=30))
    h.sendgrid.faults.paths = ("scheduled_sends",)
    h.sendgrid.faults.server_errors(50)
    failing = h.tick(NOW + timedelta(hours=1))
    assert failing.recall.retrying == 1 and failing.recall.cancelled == 0
    (recall,) = h.recalls()
    assert recall.status == "pending" and recall.attempts == 1
    h.sendgrid.faults = type(h.sendgrid.faults)()
    again = h.tick(recall.next_attempt_at)
    assert again.recall.cancelled == 1
    assert h.touch("later").status == "cancelled"


def test_an_opt_out_cancels_a_scheduled_text_at_twilio(harness) -> None:
    h = harness
    h.add([person(2, "screening")])
    h.tick()
    again = h.touch("again")
    assert again.recall_ref and again.recall_ref.startswith("SM")
    h.event("opt_out", h.touch("text").id, NOW + timedelta(hours=1))
    summary = h.tick(NOW + timedelta(hours=1, minutes=5))
    assert summary.recall.cancelled == 1
    assert h.touch("again").status == "cancelled"
    (held,) = [m for m in h.twilio.messages if m["sid"] == again.recall_ref]
    assert held["status"] == "canceled"


def test_out_of_office_recalls_and_sends_again_after_the_return(harness) -> None:
    h = harness
    h.add([person(1, "applied")])
    h.tick()
    later = h.touch("later")
    back = NOW + timedelta(days=3)
    h.event("auto_reply", h.touch("hello").id, NOW + timedelta(hours=1), until=back.isoformat())
    summary = h.tick(NOW + timedelta(hours=2))
    assert summary.recall.cancelled == 1 and summary.recall.replanned == 1
    old = h.touch("later")
    assert old.status == "cancelled" and old.idempotency_key.endswith(f"#recalled{later.id}")
    with h.engine.connect() as conn:
        enrollment = conn.execute(select(Enrollment)).one()
    assert enrollment.status == "active" and enrollment.next_due_at == back
    # Nothing goes out while the person is away, not even after a night.
    quiet = h.tick(NOW + timedelta(days=1))
    assert quiet.total("sent") == 0
    resumed = h.tick(back)
    assert resumed.total("sent") == 1
    fresh = h.touch("later")
    assert fresh.id != later.id and fresh.status == "sent"
    assert fresh.idempotency_key == later.idempotency_key  # the same step occurrence, once
    assert fresh.planned_at >= back


def test_out_of_office_leaves_a_transactional_answer_where_it_is(engine, tmp_path: Path) -> None:
    """An auto-reply holds follow-ups; an answer to the person's own move keeps its time."""
    clock = FixedClock(NOW)
    recall_config(tmp_path)  # writes the templates
    (tmp_path / "cadences.yaml").write_text(
        CONFIG.replace(
            "{id: later, after: 6h, channel: email, template: t}",
            "{id: later, after: 6h, channel: email, template: t, transactional: true}",
        )
    )
    config = load_cadence_file(tmp_path / "cadences.yaml")
    h = RecallHarness(
        engine, config, FakeSendGrid(api_key=KEY, clock=clock), FakeTwilio(clock=clock)
    )
    h.sendgrid.clock = h.clock
    h.twilio.clock = h.clock
    try:
        h.add([person(1, "applied")])
        h.tick()
        later = h.touch("later")
        back = NOW + timedelta(days=3)
        h.event("auto_reply", h.touch("hello").id, NOW + timedelta(hours=1), until=back.isoformat())
        summary = h.tick(NOW + timedelta(hours=2))
        assert summary.recall.cancelled == 0 and h.recalls() == []
        assert h.touch("later").status == "sent" and h.touch("later").id == later.id
        h.clock.set(NOW + timedelta(hours=7))
        assert any(m["categories"][1] == "later" for m in _delivered(h))
    finally:
        h.close()


def test_ten_held_cancellations_make_the_eleventh_wait(harness) -> None:
    h = harness
    h.add([person(i, "applied") for i in range(1, 12)])
    h.tick()
    hellos = [t for t in h.touches() if t.step_id == "hello"]
    assert len(hellos) == 11
    for touch in hellos:
        h.event("reply", touch.id, NOW + timedelta(minutes=30))
    summary = h.tick(NOW + timedelta(hours=1))
    assert summary.recall.cancelled == 10
    assert summary.recall.retrying == 1  # SendGrid holds ten cancellations at once
    waiting = [r for r in h.recalls() if r.status == "pending"]
    assert len(waiting) == 1


def test_nothing_is_recalled_when_nothing_stopped(harness) -> None:
    h = harness
    h.add([person(1, "applied")])
    h.tick()
    summary = h.tick(NOW + timedelta(hours=1))
    assert summary.recall.requested == 0 and h.recalls() == []
    with h.engine.begin() as conn:
        conn.execute(update(Touch.__table__).values(recall_ref=None))
    h.event("reply", h.touch("hello").id, NOW + timedelta(hours=2))
    unrecallable = h.tick(NOW + timedelta(hours=3))
    # A held touch without a recall reference cannot be cancelled and is not tried.
    assert unrecallable.recall.requested == 0


def test_a_recall_waiting_for_a_channel_that_stays_off_ends_too_late(harness) -> None:
    h = harness
    h.add([person(1, "applied")])
    h.tick()
    later = h.touch("later")
    h.event("reply", h.touch("hello").id, NOW + timedelta(minutes=30))
    off = Tick(
        h.config,
        h.clock,
        {},
        engine_transactions(h.engine),
        wall_clock=h.clock,
        dialect=h.engine.dialect.name,
    )
    h.clock.set(NOW + timedelta(hours=1))
    assert off.run().recall.requested == 1
    assert h.recalls()[0].status == "pending"  # waits for email to be on again
    h.clock.set(later.planned_at + timedelta(minutes=1))
    late = Tick(
        h.config,
        h.clock,
        {},
        engine_transactions(h.engine),
        wall_clock=h.clock,
        dialect=h.engine.dialect.name,
    ).run()
    assert late.recall.unrecallable["too_late"] == 1
    assert h.recalls()[0].status == "too_late"
