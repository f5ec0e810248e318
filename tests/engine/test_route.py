"""The route stage alone, on plain data: channel, consent, suppression, fallback candidates."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from stage_data import NOW, config, occurrence, person

from channels.base import Channel
from channels.dryrun import DryRunChannel
from outreach.engine.route import NO_CHANNEL, can_deliver, fallback_candidates, route_batch

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
