"""Suppressions that stick and strangers on one phone, through the tick (DESIGN.md 1 and 4).

An opt-out, unsubscribe, bounce or STOP for an address no one has yet holds when that
person is imported later; an email unsubscribe covers every email address of the person;
two people with different names on one phone are two people, both contacted, and a STOP
from that phone silences it for both.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from engine_world import World, write_config
from sqlalchemy import func, select

from outreach.events import InboundEvent, ingest_events
from outreach.store.schema import CandidateRecord, ContactPoint, Event, Person, Suppression

NY = ZoneInfo("America/New_York")
START = datetime(2026, 11, 2, 9, 0, tzinfo=NY)

CONFIG = """\
policy:
  default_timezone: America/New_York
  send_window: {start: "08:00", end: "19:00", days: [mon, tue, wed, thu, fri, sat, sun]}
  holidays: none
  max_touches: {count: 2, per: 7d}
  min_gap: 1d
  channel_order: [email, sms, linkedin]
cadences:
  - id: c
    trigger: {stage: applied}
    stop_on: [reply, stage_change]   # an opt-out stops nothing: suppression alone must hold
    steps:
      - {id: one, after: 0m, channel: email, fallback: sms, template: t}
      - {id: two, after: 2d, from: previous, channel: email, fallback: sms, template: t}
"""
TEMPLATES = {
    "t.email.j2": "Subject: Hi {{ candidate.first_name }}\n\nHello {{ candidate.first_name }}",
    "t.sms.j2": "Hi {{ candidate.first_name }}",
    "t.task.j2": "Title: Reach {{ candidate.first_name }}\n\nSay hi",
}
ANN = {
    "external_id": "ann",
    "first_name": "Ann",
    "last_name": "Lee",
    "email": "ann@example.com",
    "phone": "+1 212 555 0101",
    "sms_consent": "true",
    "owner_id": "rec-1",
    "stage": "applied",
}


@pytest.fixture
def world(engine, tmp_path: Path) -> World:
    return World(engine, write_config(tmp_path, CONFIG, TEMPLATES), START)


def ingest(world: World, *events: dict) -> None:
    report = ingest_events(
        world.engine,
        [(f"test:{i}", InboundEvent(**e)) for i, e in enumerate(events, start=1)],
        now=world.clock.now(),
    )
    assert report.bad == []


def sent_to(world: World) -> set[str]:
    return {message.to for message in world.sent_messages()}


@pytest.mark.parametrize(
    ("event", "left_channel"),
    [
        ({"type": "bounce", "channel": "email", "address": "ANN@example.com"}, "sms"),
        ({"type": "unsubscribe", "channel": "email", "address": "ann@example.com"}, "sms"),
        ({"type": "opt_out", "address": "ann@example.com"}, "sms"),
        ({"type": "opt_out", "channel": "sms", "address": "(212) 555-0101"}, "email"),
    ],
    ids=["bounce", "unsubscribe", "opt_out", "stop"],
)
def test_a_suppression_before_the_person_exists_holds_when_they_are_imported(
    world: World, event: dict, left_channel: str
) -> None:
    ingest(world, {**event, "at": START - timedelta(days=30)})
    world.add(ANN)
    world.nightly(START, 4)
    suppressed = "ann@example.com" if left_channel == "sms" else "+12125550101"
    assert suppressed not in sent_to(world)
    # The person is still reached, on what is left.
    assert [t.channel for t in world.touches()] == [left_channel, left_channel]


def test_a_stop_before_import_leaves_a_person_without_email_only_a_task(world: World) -> None:
    ingest(world, {"type": "opt_out", "channel": "sms", "address": "+12125550101", "at": START})
    world.add({**ANN, "email": ""})
    world.tick()
    assert sent_to(world) == set()
    (touch,) = world.touches()
    assert touch.status == "task" and "phone suppressed (opted out)" in touch.reason


def test_an_email_unsubscribe_covers_the_persons_other_email(world: World) -> None:
    # Ann in two CRMs: the same phone under the same name, two email addresses.
    world.add(ANN, {**ANN, "source": "lever", "email": "ann.lee@work.example.com"})
    with world.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Person)) == 1
    ingest(world, {"type": "unsubscribe", "channel": "email", "address": ANN["email"], "at": START})
    world.nightly(START, 4)
    assert not any("@" in to for to in sent_to(world))
    assert [t.channel for t in world.touches()] == ["sms", "sms"]


def test_an_unsubscribe_covers_an_email_address_the_person_gets_later(world: World) -> None:
    world.add(ANN)
    ingest(world, {"type": "unsubscribe", "channel": "email", "address": ANN["email"], "at": START})
    world.tick()
    # A later record of the same person brings another address: it is covered too.
    world.add({**ANN, "source": "lever", "email": "ann.lee@work.example.com"})
    world.nightly(START + timedelta(days=1), 4)
    assert not any("@" in to for to in sent_to(world))


def test_a_bounce_stays_with_its_address(world: World) -> None:
    world.add(ANN, {**ANN, "source": "lever", "email": "ann.lee@work.example.com"})
    ingest(world, {"type": "bounce", "channel": "email", "address": ANN["email"], "at": START})
    world.tick()
    assert sent_to(world) == {"ann.lee@work.example.com"}


def test_strangers_on_one_phone_stay_two_people_and_both_are_contacted(world: World) -> None:
    office = "+1 212 555 0199"
    world.add(
        {**ANN, "external_id": "a", "phone": office},
        {**ANN, "external_id": "b", "first_name": "Bo", "last_name": "Kim",
         "email": "bo@example.com", "phone": office},
    )  # fmt: skip
    with world.engine.connect() as conn:
        points = conn.execute(
            select(ContactPoint.person_id, ContactPoint.shared).where(ContactPoint.kind == "phone")
        ).all()
    assert len({person for person, _ in points}) == 2 and all(shared for _, shared in points)
    world.tick()
    assert sent_to(world) == {"ann@example.com", "bo@example.com"}


def test_a_stop_from_a_shared_phone_silences_it_for_both_and_stops_no_one(world: World) -> None:
    office = "+1 212 555 0199"
    world.add(
        {**ANN, "external_id": "a", "phone": office, "email": ""},
        {**ANN, "external_id": "b", "first_name": "Bo", "last_name": "Kim",
         "email": "bo@example.com", "phone": office},
    )  # fmt: skip
    report = ingest_events(
        world.engine,
        [("twilio", InboundEvent(type="opt_out", channel="sms", address=office, at=START))],
        now=START,
    )
    assert report.unmatched == [
        "twilio: the phone number is shared by 2 people: suppressed for all of them, "
        "no one's cadence stopped"
    ]
    world.nightly(START, 4)
    assert sent_to(world) == {"bo@example.com"}  # Ann's only channel was the phone
    assert [t.status for t in world.touches() if t.channel is None] == ["task", "task"]
    with world.engine.connect() as conn:
        assert (
            conn.scalar(select(func.count()).select_from(Event).where(Event.type == "opt_out")) == 0
        )
        assert conn.execute(select(Suppression.scope, Suppression.source)).all() == [
            ("address", "events")
        ]


def test_a_reply_from_a_shared_phone_goes_only_to_the_one_who_was_texted(world: World) -> None:
    office = "+1 212 555 0199"
    world.add(
        {**ANN, "external_id": "a", "phone": office, "email": ""},
        {**ANN, "external_id": "b", "first_name": "Bo", "last_name": "Kim",
         "email": "bo@example.com", "phone": office},
    )  # fmt: skip
    reply = {"type": "reply", "channel": "sms", "address": office}
    report = ingest_events(world.engine, [("sms:1", InboundEvent(**reply, at=START))], now=START)
    assert report.unmatched == [
        "sms:1: the phone number is shared by 2 people and nothing tells whose message this is"
    ]
    world.tick()  # Ann is texted (no email), Bo emailed
    report = ingest_events(
        world.engine,
        [("sms:2", InboundEvent(**reply, at=START + timedelta(hours=1)))],
        now=START + timedelta(hours=1),
    )
    assert report.recorded == 1
    with world.engine.connect() as conn:
        ann = conn.scalar(
            select(CandidateRecord.person_id).where(CandidateRecord.external_id == "a")
        )
        replied = conn.scalar(select(Event.person_id).where(Event.type == "reply"))
    assert replied == ann


def test_a_consent_withdrawal_is_not_undone_by_an_older_consent(world: World) -> None:
    ann = {**ANN, "email": ""}
    world.add({**ann, "source": "lever", "sms_consent": "false", "updated_at": "2026-10-02T12:00Z"})
    world.add({**ann, "sms_consent": "true", "updated_at": "2026-10-01T12:00Z"})
    world.tick()
    assert sent_to(world) == set()
    (touch,) = world.touches()
    assert touch.status == "task" and "no SMS consent (withdrawn in lever)" in touch.reason
