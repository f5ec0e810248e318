"""The route stage alone, on plain data: channel, consent, suppression, fallback candidates."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from engine_world import World
from sqlalchemy import insert, select
from stage_data import NOW, config, occurrence, person
from tick_world import (
    PERSON,
    ny,
    tick_without_channels,
)

from channels.base import Channel
from channels.dryrun import DryRunChannel
from outreach.engine.route import (
    NO_CHANNEL,
    can_deliver,
    choose_variant,
    fallback_candidates,
    route_batch,
)
from outreach.store.schema import ContactPoint, Event, Person

CHANNELS = {"email": DryRunChannel("email"), "sms": DryRunChannel("sms")}


def test_each_occurrence_gets_its_channel_and_contact(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    items = route_batch(
        [occurrence(cfg, person(1)), occurrence(cfg, person(2), "a", 1, seq=1)], cfg, set(CHANNELS)
    )
    assert [(o.route.channel, o.route.contact.id) for o in items] == [
        ("email", 11),
        ("linkedin", 23),
    ]


def test_a_suppressed_address_is_never_chosen_the_fallback_is(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    ann = person(phone=True)
    ann.contacts[0].suppressed = True
    [occ] = route_batch([occurrence(cfg, ann)], cfg, set(CHANNELS))
    assert occ.route.channel == "sms" and "email" in occ.route.reason


def test_sms_without_consent_is_never_chosen(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    ann = person(email=False, phone=True, consent=False)
    [occ] = route_batch([occurrence(cfg, ann)], cfg, set(CHANNELS))
    assert occ.route.channel is None and occ.route.reason.startswith(NO_CHANNEL)


def test_a_channel_that_is_off_is_flagged_not_replaced_by_a_task(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    [occ] = route_batch([occurrence(cfg, person())], cfg, set())
    assert occ.route.channel is None and occ.route.blocked_by_off_channel


def test_fallback_candidates_skip_tried_and_task_channels(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    ann = person(phone=True)
    step = cfg.cadence("a").steps[0]
    candidates, later = fallback_candidates(step, ann, cfg, CHANNELS, ["email"], NOW, NOW)
    assert [(name, contact.id) for name, contact in candidates] == [("sms", 12)] and not later
    nothing, later = fallback_candidates(step, ann, cfg, CHANNELS, ["email", "sms"], NOW, NOW)
    assert nothing == [] and not later


class Immediate(Channel):
    name = "sms"


def test_a_fallback_that_cannot_deliver_at_the_planned_time_says_later(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    step = cfg.cadence("a").steps[0]
    send_at = NOW + timedelta(hours=5)
    candidates, later = fallback_candidates(
        step, person(phone=True), cfg, {"sms": Immediate()}, ["email"], send_at, NOW
    )
    assert candidates == [] and later
    assert not can_deliver(Immediate(), send_at, NOW) and can_deliver(Immediate(), NOW, NOW)
    assert can_deliver(CHANNELS["sms"], send_at, NOW)


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
    tick_summary = tick_without_channels(off)
    assert tick_summary.total_reasons("deferred") == {"channel off": 1}
    assert off.tasks() == []


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


def test_variants_are_stable_per_person_and_follow_the_weights(default_config) -> None:
    step = default_config.cadence("interview-follow-up").steps[0]
    picks = [choose_variant(i, "interview-follow-up", step)[0] for i in range(2000)]
    assert picks == [choose_variant(i, "interview-follow-up", step)[0] for i in range(2000)]
    share = picks.count("b") / len(picks)
    assert 0.45 < share < 0.55


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
