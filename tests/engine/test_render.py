"""The render stage alone, on plain data: messages, tasks, strict templates, fallbacks."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from engine_world import World, write_config
from stage_data import NOW, config, occurrence, person
from tick_world import (
    PERSON,
    SMALL,
    ny,
)
from tick_world import (
    TEMPLATES as TICK_TEMPLATES,
)

from channels.base import SendResult
from channels.dryrun import DryRunChannel
from outreach.engine.batch import Pending, ReplyAddress, outgoing_message
from outreach.engine.render import Renderer
from outreach.engine.route import Route, route_batch
from outreach.templates import RenderedMessage, TemplateStore

CHANNELS = {"email": DryRunChannel("email"), "sms": DryRunChannel("sms")}


def throttled(cfg, occ):
    """An occurrence as the throttle stage hands it on: routed, with its instant and rule."""
    [occ] = route_batch([occ], cfg, set(CHANNELS))
    occ.chosen = occ.route
    occ.rule = "0m after entering applied"
    return occ


def renderer(cfg) -> Renderer:
    return Renderer(cfg, TemplateStore(cfg.template_dir), public_url=None)


def test_a_message_is_rendered_for_its_channel_and_claimed(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    occ = throttled(cfg, occurrence(cfg, person()))
    [out] = renderer(cfg)([occ], NOW)
    assert out.outcome == "claimed" and out.kind == "email"
    assert (out.message.subject, out.message.body) == ("Hi Ann", "Hello Ann")
    assert (out.template, out.variant) == ("t", "a") and out.rating_token


def test_a_task_channel_gets_the_task_text(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    occ = throttled(cfg, occurrence(cfg, person(), "a", 1))
    [out] = renderer(cfg)([occ], NOW)
    assert (out.outcome, out.kind, out.title) == ("task", "linkedin", "Connect with Ann")


def test_a_late_step_for_the_recruiter_shows_the_message_it_stands_for(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    occ = throttled(cfg, occurrence(cfg, person()))
    occ.chosen = Route(None, None, "late: the recruiter takes it over")
    [out] = renderer(cfg)([occ], NOW)
    assert (out.outcome, out.kind) == ("task", "manual")
    assert "Suggested message:\nSubject: Hi Ann\n\nHello Ann" in out.body


def test_a_missing_variable_skips_the_occurrence_naming_the_template(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    occ = throttled(cfg, occurrence(cfg, person(), "a", 3))
    [out] = renderer(cfg)([occ], NOW)
    assert out.outcome == "skipped" and out.message is None
    assert out.reason.startswith("template broken") and "portfolio" in out.reason
    assert out.journal_rule == f"{out.rule}; {out.reason}"
    assert out.tally == "template error"


def test_decided_occurrences_pass_untouched_and_unthrottled_ones_are_refused(
    tmp_path: Path,
) -> None:
    cfg = config(tmp_path)
    done = occurrence(cfg, person())
    done.decide("deferred", "channel off", NOW + timedelta(days=1))
    assert renderer(cfg)([done], NOW)[0].outcome == "deferred"
    with pytest.raises(ValueError, match="was not throttled"):
        renderer(cfg)([occurrence(cfg, person())], NOW)


def test_a_fallback_renders_the_same_touch_for_the_next_channel(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    ann = person(phone=True)
    cadence = cfg.cadence("a")
    rendered = RenderedMessage("t", "email", "Hello Ann", subject="Hi Ann")
    message = outgoing_message(
        7,
        "100:one:0",
        ann,
        ann.records[0],
        cadence,
        cadence.steps[0],
        "email",
        "p1@example.com",
        NOW,
        rendered,
        "t",
        "a",
    )
    item = Pending(
        7,
        message,
        ann,
        ann.records[0],
        cadence,
        cadence.steps[0],
        "a",
        "t",
        11,
        ["email"],
        token="abc",
    )
    bounce = SendResult.failed(message, "bounced", permanent=True)
    replies = Renderer(cfg, TemplateStore(cfg.template_dir), replies=ReplyAddress(None, None, None))
    retry, later = replies.fallback(item, bounce, NOW, CHANNELS)
    assert retry is not None and not later
    assert (retry.message.channel, retry.message.to, retry.message.body) == (
        "sms",
        "+12125550101",
        "Hi Ann",
    )
    assert retry.tried == ["email", "sms"] and retry.reason == "sms after email failed: bounced"
    none, later = replies.fallback(retry, bounce, NOW, CHANNELS)
    assert none is None and not later


def test_a_missing_variable_skips_the_touch_naming_it(engine, tmp_path: Path) -> None:
    config = write_config(
        tmp_path, SMALL.replace("template: t}", "template: broken}", 1), TICK_TEMPLATES
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
