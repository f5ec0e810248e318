"""``Step.holdout``: a stable share of enrollments gets no touch on the step, and no cap counts it."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from engine_world import World, write_config
from sqlalchemy import select

from outreach.cadence import load_cadence_file
from outreach.clock import FixedClock
from outreach.engine.route import choose_variant, held_out
from outreach.engine.runner import preview
from outreach.errors import ConfigError
from outreach.store.schema import CandidateRecord, Enrollment

NY = ZoneInfo("America/New_York")
START = datetime(2026, 11, 2, 9, 0, tzinfo=NY)  # a Monday

HELD = """\
policy:
  default_timezone: America/New_York
  send_window: {start: "08:00", end: "19:00", days: [mon, tue, wed, thu, fri, sat, sun]}
  holidays: none
  max_touches: {count: 2, per: 7d}
  min_gap: 1d
cadences:
  - id: c
    trigger: {stage: applied}
    steps:
      - {id: one, after: 0m, channel: email, template: t, holdout: 50}
      - {id: two, after: 1h, from: previous, channel: email, template: t}
"""
TEMPLATES = {"t.email.j2": "Subject: Hi {{ candidate.first_name }}\n\nHello"}


def test_holdout_share_is_close_to_the_percentage_and_stable(default_config) -> None:
    step = default_config.cadence("interview-follow-up").steps[0].model_copy(update={"holdout": 20})
    picks = [held_out(i, "interview-follow-up", step) for i in range(20_000)]
    assert picks == [held_out(i, "interview-follow-up", step) for i in range(20_000)]
    assert 0.19 < sum(picks) / len(picks) < 0.21
    # Independent of the A/B arm: about half of the held-out people are in arm b, too.
    arms = [choose_variant(i, "interview-follow-up", step)[0] for i, h in enumerate(picks) if h]
    assert 0.46 < arms.count("b") / len(arms) < 0.54
    # Another step or cadence draws its own group.
    other = [held_out(i, "application-follow-up", step) for i in range(20_000)]
    both = sum(a and b for a, b in zip(picks, other, strict=True))
    assert 0.15 < both / sum(picks) < 0.25


def test_no_holdout_holds_nobody(default_config) -> None:
    step = default_config.cadence("interview-follow-up").steps[0]
    assert step.holdout == 0
    assert not any(held_out(i, "interview-follow-up", step) for i in range(2_000))


def _people(world: World, n: int) -> None:
    world.add(
        *(
            {
                "external_id": f"p{i}",
                "first_name": f"P{i}",
                "email": f"p{i}@example.com",
                "stage": "applied",
                "timezone": "America/New_York",
            }
            for i in range(n)
        ),
        at=START,
    )


def test_a_held_out_occurrence_sends_nothing_and_leaves_the_caps_alone(
    engine, tmp_path: Path
) -> None:
    world = World(engine, write_config(tmp_path, HELD, TEMPLATES), START)
    _people(world, 40)
    world.tick(START)
    world.tick(START + timedelta(hours=2))
    with engine.connect() as conn:
        person_of = dict(
            conn.execute(select(CandidateRecord.person_id, CandidateRecord.email)).all()
        )
        steps = dict(conn.execute(select(Enrollment.person_id, Enrollment.next_step)).all())
    step = world.config.cadence("c").steps[0]
    held = {p for p in person_of if held_out(p, "c", step)}
    assert 8 < len(held) < 32  # 50 % of 40, give or take
    rows = world.touches(step_id="one")
    assert {r.person_id for r in rows if r.status == "holdout"} == held
    assert {r.person_id for r in rows if r.status == "claimed" or r.status == "sent"} == (
        set(person_of) - held
    )
    for row in rows:
        if row.status == "holdout":
            assert (row.channel, row.delivery_at, row.template, row.variant) == (
                None,
                None,
                None,
                None,
            )
            assert row.due_at == START
            assert row.reason.startswith("holdout: 50%")
    one_to = {m.to for m in world.email.sent if m.step_id == "one"}
    assert one_to == {person_of[p] for p in set(person_of) - held}
    # The held-out move on at once: step two goes 1 h later, no min_gap behind a touch
    # that never left; the others' step two waits out the 1-day gap (scheduled ahead).
    two = {r.person_id: r for r in world.touches(step_id="two")}
    assert set(two) == set(person_of)
    for person in person_of:
        expected = timedelta(hours=1) if person in held else timedelta(days=1)
        assert two[person].planned_at == START + expected
        assert steps[person] == 2


def test_preview_shows_held_out_occurrences(engine, tmp_path: Path) -> None:
    world = World(engine, write_config(tmp_path, HELD, TEMPLATES), START)
    _people(world, 20)
    plan = preview(engine, world.config, FixedClock(START), days=1)
    held = [entry for entry in plan if entry.status == "holdout"]
    assert held and all(entry.channel is None and entry.step_id == "one" for entry in held)
    assert all("holdout: 50%" in entry.rule for entry in held)
    assert world.touches() == []  # a preview writes nothing


@pytest.mark.parametrize(("value", "ok"), [(0, True), (50, True), (51, False), (-1, False)])
def test_config_check_bounds_the_holdout(tmp_path: Path, value: int, ok: bool) -> None:
    path = tmp_path / "cadences.yaml"
    path.write_text(HELD.replace("holdout: 50", f"holdout: {value}"))
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "t.email.j2").write_text(TEMPLATES["t.email.j2"])
    if ok:
        assert load_cadence_file(path).cadence("c").steps[0].holdout == value
    else:
        with pytest.raises(ConfigError, match=r"cadences\[0\]\.steps\[0\]\.holdout"):
            load_cadence_file(path)


def test_config_check_refuses_a_holdout_on_a_transactional_step(tmp_path: Path) -> None:
    path = tmp_path / "cadences.yaml"
    path.write_text(HELD.replace("holdout: 50}", "holdout: 10, transactional: true}"))
    with pytest.raises(ConfigError, match=r"cadences\[0\]\.steps\[0\].*transactional"):
        load_cadence_file(path)
