"""Shared data for the tick's store-backed tests: a person, small cadence files, channels."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from engine_world import World
from sqlalchemy import select

from channels.base import Channel, OutgoingMessage, SendResult
from outreach.store.schema import Enrollment

NY = ZoneInfo("America/New_York")


def ny(*args: int) -> datetime:
    """A time in New York."""
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


class SchedulingBouncer(BouncingChannel):
    """Schedules like SendGrid (72 h ahead), and refuses every address."""

    max_schedule_ahead = timedelta(hours=72)


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


class ScheduledSMS(CountingSMS):
    """A provider that schedules 16 minutes to 35 days ahead, like Twilio with a service."""

    max_schedule_ahead = timedelta(days=35)
    min_schedule_ahead = timedelta(minutes=16)


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


def tick_without_channels(world: World):
    from outreach.engine.tick import Tick, engine_transactions

    return Tick(
        world.config,
        world.clock,
        {},
        engine_transactions(world.engine),
        wall_clock=world.clock,
        dialect=world.engine.dialect.name,
    ).run()
