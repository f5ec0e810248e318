"""Rating links in sent messages: the token exists before rendering and follows the touch."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from engine_world import World, write_config
from sqlalchemy import select

from channels.base import Channel, SendResult
from outreach.engine.runner import preview
from outreach.store.schema import Touch

NY = ZoneInfo("America/New_York")
START = datetime(2026, 11, 2, 9, 0, tzinfo=NY)
PUBLIC = "https://hooks.example.org/outreach/"
PERSON = {
    "external_id": "p1",
    "first_name": "Ann",
    "email": "ann@example.com",
    "phone": "+1 212 555 0101",
    "sms_consent": "true",
    "recruiter_name": "Jo",
    "timezone": "America/New_York",
    "stage": "hired",
}
CADENCES = """\
policy:
  default_timezone: America/New_York
  send_window: {start: "08:00", end: "19:00", days: [mon, tue, wed, thu, fri, sat, sun]}
  holidays: none
  max_touches: {count: 5, per: 7d}
  min_gap: 1h
  channel_order: [email, sms]
cadences:
  - id: onboard
    trigger: {stage: hired}
    steps:
      - {id: feedback, after: 0m, channel: email, fallback: sms, template: rate}
"""
TEMPLATES = {
    "rate.email.j2": (
        "Subject: How did we do?\n\n"
        "{% for url in touch.rating_urls %}{{ loop.index }}: {{ url }}\n{% endfor %}"
    ),
    "rate.sms.j2": "Loved it? {{ touch.rating_urls[4] }}",
}
LINK = re.compile(r"https://hooks\.example\.org/outreach/r/([A-Za-z0-9_-]{22})/([1-5])")


@pytest.fixture
def world(engine, tmp_path: Path) -> World:
    return World(engine, write_config(tmp_path, CADENCES, TEMPLATES), START)


def test_the_message_carries_five_links_with_the_touchs_own_token(world: World) -> None:
    world.add(PERSON)
    summary = world.tick(public_url=PUBLIC)
    assert summary.total("sent") == 1
    (message,) = world.email.sent
    links = LINK.findall(message.body)
    assert [score for _, score in links] == ["1", "2", "3", "4", "5"]
    tokens = {token for token, _ in links}
    (touch,) = world.touches()
    assert tokens == {touch.rating_token}
    assert touch.rating_token != touch.reply_token


def test_each_touch_gets_a_different_token(world: World) -> None:
    world.add(PERSON, {**PERSON, "external_id": "p2", "email": "bo@example.com", "phone": ""})
    world.tick(public_url=PUBLIC)
    tokens = [t.rating_token for t in world.touches()]
    assert len(tokens) == 2 and len(set(tokens)) == 2 and None not in tokens


def test_without_a_public_url_the_step_is_skipped_naming_the_setting(world: World) -> None:
    world.add(PERSON)
    summary = world.tick()
    assert not world.email.sent and not world.sms.sent
    (touch,) = world.touches()
    assert touch.status == "skipped"
    assert "touch.rating_urls" in touch.reason and "OUTREACH_PUBLIC_URL" in touch.reason
    assert summary.total_reasons("skipped") == {"template error": 1}


class _Bouncing(Channel):
    name = "email"
    max_batch = 10

    def send(self, batch):
        return [
            SendResult.failed(m, "550 mailbox unknown", permanent=True, suppress="bounced")
            for m in batch
        ]


def test_a_fallback_channel_keeps_the_same_token(world: World) -> None:
    world.add(PERSON)
    world.email = _Bouncing()  # type: ignore[assignment]
    world.tick(public_url=PUBLIC)
    (sms,) = world.sms.sent
    (touch,) = world.touches()
    assert touch.channel == "sms"
    assert f"/r/{touch.rating_token}/" in sms.body


def test_preview_renders_links_when_the_public_url_is_known(world: World) -> None:
    world.add(PERSON)
    with_url = preview(world.engine, world.config, world.clock, days=1, public_url=PUBLIC)
    without = preview(world.engine, world.config, world.clock, days=1)
    assert [e.status for e in with_url] == ["scheduled"]
    assert [e.status for e in without] == ["skipped"]
    with world.engine.connect() as conn:  # a preview writes nothing
        assert conn.execute(select(Touch)).first() is None
