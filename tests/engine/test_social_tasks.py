"""X and Facebook steps: recruiter tasks like LinkedIn's, routed by profile, capped per owner."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from engine_world import World, write_config
from sqlalchemy import select
from tick_world import PERSON, ny

from outreach.engine.route import NO_CHANNEL
from outreach.events import ingest_events
from outreach.store.schema import ContactPoint, Touch
from outreach.tasks import open_tasks

SOCIAL = """\
policy:
  default_timezone: America/New_York
  send_window: {start: "08:00", end: "19:00", days: [mon, tue, wed, thu, fri, sat, sun]}
  holidays: none
  max_touches: {count: 5, per: 7d}
  min_gap: 1h
  channel_order: [email, sms, linkedin, x, facebook]
  rate_limits: {email: 50/s, x: 1/d, facebook: 2/d}
cadences:
  - id: c
    trigger: {stage: applied}
    steps:
      - {id: social, after: 0m, channel: x, fallback: facebook, template: t}
"""
TEMPLATES = {
    "t.task.j2": (
        "Title: Follow up with {{ candidate.first_name }}\n\n"
        "X: {{ candidate.x_url | default('none') }}\n"
        "Facebook: {{ candidate.facebook_url | default('none') }}"
    ),
}


@pytest.fixture
def social(engine, tmp_path: Path) -> World:
    config = write_config(tmp_path, SOCIAL, TEMPLATES)
    return World(engine, config, ny(2026, 11, 2, 9, 0))


def row(index: int, **extra: str) -> dict[str, str]:
    return {
        **PERSON,
        "external_id": f"p{index}",
        "email": f"p{index}@example.com",
        "phone": "",
        "stage": "applied",
        **extra,
    }


def test_an_x_step_is_a_task_for_the_owner_with_the_profile(social: World) -> None:
    social.add(row(1, x_url="twitter.com/Ann_Codes"))
    social.tick()
    [task] = social.tasks()
    assert task.kind == "x" and task.owner_id == "rec-1"
    assert task.title == "Follow up with Ann"
    assert "X: https://x.com/ann_codes" in task.body and "Facebook: none" in task.body
    [touch] = social.touches()
    assert touch.status == "task" and touch.channel == "x"
    assert touch.reason == "fixed: x"
    assert social.email.sent == []  # a task channel sends nothing


def test_without_an_x_profile_the_step_falls_back_to_facebook(social: World) -> None:
    social.add(row(1, facebook_url="https://m.facebook.com/ann.codes/"))
    social.tick()
    [task] = social.tasks()
    assert task.kind == "facebook"
    assert "Facebook: https://www.facebook.com/ann.codes" in task.body
    [touch] = social.touches()
    assert touch.channel == "facebook"
    assert touch.reason == "fixed: facebook after x: no X profile"


def test_without_either_profile_the_recruiter_gets_a_manual_task_saying_why(
    social: World,
) -> None:
    social.add(row(1, linkedin_url="https://www.linkedin.com/in/ann"))
    social.tick()
    [task] = social.tasks()
    assert task.kind == "manual"
    assert task.reason == f"{NO_CHANNEL}: x: no X profile; facebook: no Facebook profile"


def test_a_suppressed_x_profile_is_not_used(social: World, engine) -> None:
    social.add(row(1, x_url="@ann", facebook_url="fb.com/ann.codes"))
    with engine.begin() as conn:
        conn.execute(
            ContactPoint.__table__.update()
            .where(ContactPoint.kind == "x")
            .values(suppressed=True, suppressed_reason="opted out")
        )
    social.tick()
    [task] = social.tasks()
    assert task.kind == "facebook"
    assert "x: x suppressed (opted out)" in social.touches()[0].reason


def test_x_tasks_respect_the_owner_daily_cap_per_channel(social: World) -> None:
    social.add(*(row(i, x_url=f"@p{i}") for i in range(3)))
    social.add(*(row(10 + i, facebook_url=f"facebook.com/person.{i}") for i in range(2)))
    social.nightly(ny(2026, 11, 2, 9, 0), 4)
    by_kind: dict[str, list[datetime]] = {}
    for task in social.tasks():
        by_kind.setdefault(task.kind, []).append(task.due_at.astimezone(ny(2026, 1, 1).tzinfo))
    # x: 1/d, so three tasks on three days; facebook: 2/d, so both on the first day
    assert len(by_kind["x"]) == 3 and len({d.date() for d in by_kind["x"]}) == 3
    assert len(by_kind["facebook"]) == 2 and len({d.date() for d in by_kind["facebook"]}) == 1
    capped = sum(s.total_reasons("deferred").get("task cap", 0) for s in social.summaries)
    late = [d for d in by_kind["x"] if d.date() > ny(2026, 11, 2, 9, 0).date()]
    assert capped or len(late) == 2


def test_another_owner_has_a_cap_of_their_own(social: World) -> None:
    social.add(row(1, x_url="@one"), row(2, x_url="@two", owner_id="rec-2"))
    social.tick()
    assert sorted((t.kind, t.owner_id) for t in social.tasks()) == [("x", "rec-1"), ("x", "rec-2")]


def test_open_tasks_list_x_and_facebook_tasks_by_kind(social: World, engine) -> None:
    social.add(row(1, x_url="@ann"), row(2, facebook_url="facebook.com/bo.bo.bo", first_name="Bo"))
    social.tick()
    tasks = open_tasks(engine, now=social.clock.now(), stale_after=timedelta(days=7))
    assert sorted((t.kind, t.candidate) for t in tasks) == [("facebook", "Bo"), ("x", "Ann")]


def test_an_opt_out_on_the_x_channel_suppresses_the_x_profile(social: World, engine) -> None:
    social.add(row(1, x_url="@ann", facebook_url="facebook.com/ann.codes"))
    event = {
        "type": "opt_out",
        "channel": "x",
        "address": "https://twitter.com/ANN",
        "at": "2026-11-02T08:00:00-05:00",
    }
    unknown = {**event, "address": "https://x.com/home"}
    report = ingest_events(engine, [("a:1", event), ("a:2", unknown)], now=social.clock.now())
    assert report.bad == ["a:2: address: not a valid X profile"]
    social.tick()
    with engine.connect() as conn:
        x = conn.execute(select(ContactPoint).where(ContactPoint.kind == "x")).one()
        facebook = conn.execute(select(ContactPoint).where(ContactPoint.kind == "facebook")).one()
    assert x.suppressed and x.suppressed_reason == "opted out" and not facebook.suppressed
    assert social.tasks() == []  # the cadence stops on opt_out


def test_touch_rows_name_the_social_channel(social: World, engine) -> None:
    social.add(row(1, x_url="@ann"))
    social.tick()
    with engine.connect() as conn:
        channels = conn.execute(select(Touch.channel, Touch.status)).all()
    assert [tuple(c) for c in channels] == [("x", "task")]


def test_the_report_counts_x_and_facebook_as_tasks_not_sends(social: World, engine) -> None:
    from outreach.reports.model import build_report

    social.add(row(1, x_url="@ann"), row(2, facebook_url="facebook.com/bo.bo.bo"))
    social.add(row(3, email="cy@example.com"))  # no profile: a manual task, no channel
    social.tick()
    now = social.clock.now() + timedelta(hours=1)
    report = build_report(
        engine, social.config, since=now - timedelta(days=1), until=now, now=now, by="channel"
    )
    assert report["totals"]["touches_sent"] == 0 and report["totals"]["people_contacted"] == 0
    assert report["groups"] == []  # channel groups are sends; a task is none
    assert report["totals"]["tasks_created"] == 3
    backlog = {(t["kind"], t["open"]) for t in report["tasks"]["by_owner"]}
    assert backlog == {("x", 1), ("facebook", 1), ("manual", 1)}
