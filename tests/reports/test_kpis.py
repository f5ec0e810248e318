"""Every KPI of the totals and the groups against figures worked out by hand.

The store (SQLite, or PostgreSQL with ``OUTREACH_TEST_DATABASE=postgresql``):

* P1 (New York, tags python+remote, owner o1): s1 variant a by email Mon Nov 2 14:00 and
  s2 Thu Nov 5 14:00, both delivered; T1 opened by a person and by a machine, clicked,
  answered after 24 h; T2 opened by a machine only, answered after 26 h; moved
  applied -> screening on Nov 10 (within 14 days of both touches).
* P2 (Berlin, untagged, owner o2, lever): s1 variant b by SMS Tue Nov 3 09:00, bounced;
  an auto-reply after it; a reply on Nov 2 *before* the touch (unattributed); opted out
  Nov 4; moved to rejected (never forward).
* P3 (no zone, New York phone, tag python): s1 variant b Fri Nov 20 (younger than 14 days
  at the end of the window: not counted for conversion), a reply after ``until`` (not
  counted); a failed s2 (variant a) on Nov 21 and a cancelled one on Nov 25.
* P4: an ``interview`` holdout row due Nov 10, moved interview -> offer on Nov 12.
* P5: touched Oct 30 (before the window), replied Nov 1: not contacted, reply not counted.
* An unattributed bounce on Nov 15.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from report_ledger import ReportLedger, cadence_config

from outreach.errors import InputError
from outreach.reports import build_report

SINCE = datetime(2026, 11, 1, tzinfo=UTC)
UNTIL = datetime(2026, 11, 30, tzinfo=UTC)
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)

CADENCES = """
policy: {default_timezone: America/Chicago}
cadences:
  - id: apply
    trigger: {stage: applied}
    steps:
      - {id: s1, after: 0m, within: 48h, template: t, variants: [{template: u, weight: 50}],
         min_sample: 2}
      - {id: s2, after: 3d, from: previous, template: t}
  - id: interview
    trigger: {stage: interview}
    steps:
      - {id: thanks, after: 2h, template: t, holdout: 20}
"""


def at(day: int, hour: int = 0, minute: int = 0, month: int = 11) -> datetime:
    """An instant of 2026 in UTC."""
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


@pytest.fixture
def config(tmp_path: Path):
    return cadence_config(tmp_path, CADENCES)


@pytest.fixture
def store(engine):
    ledger = ReportLedger(engine)
    p1 = ledger.person(timezone="America/New_York", tags=["python", "remote"], owner="o1")
    e1 = ledger.enrollment(p1)
    t1 = ledger.touch(e1, "s1", at(2, 14))
    t2 = ledger.touch(e1, "s2", at(5, 14))
    for touch in (t1, t2):
        ledger.event("delivered", p1[0], at(5, 15), touch=touch)
    ledger.event("open", p1[0], at(2, 15), touch=t1, payload={"machine": False})
    ledger.event("open", p1[0], at(2, 14, 1), touch=t1, payload={"machine": True})
    ledger.event("open", p1[0], at(5, 14, 1), touch=t2, payload={"machine": True})
    ledger.event("click", p1[0], at(2, 15, 5), touch=t1)
    ledger.event("reply", p1[0], at(3, 14))
    ledger.event("reply", p1[0], at(6, 16))
    ledger.stage_change(p1[0], at(10), "applied", "screening")

    p2 = ledger.person(timezone="Europe/Berlin", owner="o2", source="lever")
    e2 = ledger.enrollment(p2)
    t3 = ledger.touch(e2, "s1", at(3, 9), channel="sms", variant="b")
    ledger.event("bounce", p2[0], at(3, 9, 1), touch=t3)
    ledger.event("auto_reply", p2[0], at(3, 10), payload={"out_of_office": False})
    ledger.event("reply", p2[0], at(2, 10))
    ledger.event("opt_out", p2[0], at(4))
    ledger.stage_change(p2[0], at(5), "applied", "rejected")

    p3 = ledger.person(phone="+12125550100", tags=["python"], owner=None)
    e3 = ledger.enrollment(p3)
    ledger.touch(e3, "s1", at(20, 14), variant="b")
    ledger.touch(e3, "s2", at(21), status="failed", channel=None)
    ledger.touch(e3, "s2", at(25), status="cancelled")
    ledger.event("reply", p3[0], at(30, 1))

    p4 = ledger.person(stage="interview")
    e4 = ledger.enrollment(p4, cadence="interview", stage="interview")
    ledger.touch(e4, "thanks", at(10), cadence="interview", status="holdout", channel=None)
    ledger.stage_change(p4[0], at(12), "interview", "offer")

    p5 = ledger.person()
    e5 = ledger.enrollment(p5)
    ledger.touch(e5, "s1", at(30, 12, month=10))
    ledger.event("reply", p5[0], at(1, 5))

    ledger.event("bounce", None, at(15))
    return engine


def report(engine, config, **options):
    return build_report(engine, config, since=SINCE, until=UNTIL, now=NOW, **options)


def test_totals_match_hand_counts(store, config):
    totals = report(store, config)["totals"]
    assert {k: totals[k] for k in totals if not isinstance(totals[k], dict)} == {
        "people_contacted": 3,
        "touches_sent": 4,
        "delivered": 2,
        "bounced": 1,
        "failed": 1,
        "cancelled": 1,
        "opens": 1,
        "machine_opens": 2,
        "clicks": 1,
        "replies": 2,
        "auto_replies": 1,
        "response_rate": pytest.approx(1 / 3),
        "engagement_rate": pytest.approx(1 / 3),
        "conversion_rate": pytest.approx(1 / 2),
        "opt_out_rate": pytest.approx(1 / 3),
        "bounce_rate": pytest.approx(1 / 4),
        "people_replied": 1,
        "people_engaged": 1,
        "people_converted": 1,
        "conversion_people": 2,
        "people_opted_out": 1,
        "open_events": 3,
        "ambiguous": 0,
        "skipped": 0,
        "holdout": 1,
        "bounced_unattributed": 1,
        "tasks_created": 0,
        "tasks_done": 0,
        "conversion_control_rate": 1.0,
    }
    assert totals["time_to_response_hours"] == {"median": 24.0, "p90": 24.0}


def test_groups_by_variant(store, config):
    groups = {g["by"]["variant"]: g for g in report(store, config, by="variant")["groups"]}
    assert sorted(groups) == ["a", "b"]
    a, b = groups["a"], groups["b"]
    assert (a["people_contacted"], a["touches_sent"], a["replies"], a["failed"]) == (1, 2, 2, 1)
    assert (a["cancelled"], a["response_rate"], a["conversion_rate"]) == (1, 1.0, 1.0)
    assert a["time_to_response_hours"] == {"median": 24.0, "p90": 24.0}
    assert (b["people_contacted"], b["touches_sent"], b["bounced"], b["auto_replies"]) == (
        2,
        2,
        1,
        1,
    )
    assert (b["replies"], b["response_rate"], b["opt_out_rate"]) == (0, 0.0, 0.5)
    assert (b["people_converted"], b["conversion_people"], b["conversion_rate"]) == (0, 1, 0.0)
    assert b["time_to_response_hours"] == {"median": None, "p90": None}
    assert a["small"] and b["small"]


def test_groups_by_tag_explode_the_list(store, config):
    groups = {g["by"]["tag"]: g for g in report(store, config, by=["tag"])["groups"]}
    assert {tag: (g["people_contacted"], g["touches_sent"]) for tag, g in groups.items()} == {
        "(none)": (1, 1),
        "python": (2, 3),
        "remote": (1, 2),
    }


def test_groups_cross_product_and_record_keys(store, config):
    groups = report(store, config, by="owner,channel", min_cell=1)["groups"]
    cells = {tuple(g["by"].values()): g["touches_sent"] for g in groups}
    assert cells == {
        ("(none)", "email"): 1,
        ("o1", "email"): 2,
        ("o2", "sms"): 1,
        ("(none)", "(none)"): 0,
    }
    assert not any(g["small"] for g in groups if g["people_contacted"])
    stages = report(store, config, by="stage,source")["groups"]
    assert {tuple(g["by"].values()): g["people_contacted"] for g in stages} == {
        ("applied", "greenhouse"): 2,
        ("applied", "lever"): 1,
    }


def test_steps_with_wilson_intervals(store, config):
    steps = report(store, config)["steps"]
    rows = [(s["cadence"], s["step"], s["channel"], s["sent"], s["replies"]) for s in steps]
    assert rows == [
        ("apply", "s1", None, 3, 1),
        ("apply", "s1", "email", 2, 1),
        ("apply", "s1", "sms", 1, 0),
        ("apply", "s2", None, 1, 1),
    ]
    first = steps[0]
    assert first["rate"] == pytest.approx(1 / 3)
    # Wilson 95 % for 1 of 3, worked out by hand: (0.0615, 0.7923)
    assert first["ci_low"] == pytest.approx(0.06149, abs=1e-4)
    assert first["ci_high"] == pytest.approx(0.79234, abs=1e-4)
    assert first["small"]


def test_ab_arms_and_holdout(store, config):
    entries = {(e["cadence"], e["step"], e["metric"]): e for e in report(store, config)["ab"]}
    assert sorted(entries) == [
        ("apply", "s1", "conversion"),
        ("apply", "s1", "replies"),
        ("interview", "thanks", "conversion"),
    ]
    replies = entries[("apply", "s1", "replies")]
    assert [(a["variant"], a["sent"], a["responses"]) for a in replies["arms"]] == [
        ("a", 1, 1),
        ("b", 2, 0),
    ]
    assert replies["status"] == "collecting" and replies["winner"] is None
    conversion = entries[("apply", "s1", "conversion")]
    assert [(a["variant"], a["sent"], a["responses"]) for a in conversion["arms"]] == [
        ("a", 1, 1),
        ("b", 1, 0),
    ]
    held = entries[("interview", "thanks", "conversion")]
    assert [(a["variant"], a["sent"], a["responses"], a["holdout"]) for a in held["arms"]] == [
        ("a", 0, 0, False),
        ("holdout", 1, 1, True),
    ]
    assert held["status"] == "collecting"


def test_heatmap_in_local_time(store, config):
    cells = {
        (c["dow"], c["hour"]): (c["sent"], c["replies"]) for c in report(store, config)["heatmap"]
    }
    # T1 Mon 09:00 and T2 Thu 09:00 New York; T3 Tue 10:00 Berlin; T4 Fri 09:00 by the phone
    assert cells == {(0, 9): (1, 1), (3, 9): (1, 1), (1, 10): (1, 0), (4, 9): (1, 0)}


def test_time_to_response_buckets(store, config):
    buckets = report(store, config)["time_to_response"]["buckets"]
    assert [b["from_hours"] for b in buckets] == [0, 1, 4, 12, 24, 48, 72, 168, 336]
    assert buckets[-1]["to_hours"] is None
    assert {b["from_hours"]: b["count"] for b in buckets if b["count"]} == {24: 1}


def test_empty_window_has_zero_counts_and_null_rates(store, config):
    result = build_report(
        store, config, since=at(1, month=1), until=at(2, month=1), now=NOW, by="cadence"
    )
    totals = result["totals"]
    assert totals["people_contacted"] == totals["touches_sent"] == totals["replies"] == 0
    for key in ("response_rate", "engagement_rate", "conversion_rate", "opt_out_rate"):
        assert totals[key] is None
    assert totals["time_to_response_hours"] == {"median": None, "p90": None}
    assert result["groups"] == [] and result["steps"] == [] and result["heatmap"] == []
    assert [e["status"] for e in result["ab"]] == ["collecting"] * 3
    assert all(arm["sent"] == 0 for e in result["ab"] for arm in e["arms"])


def test_default_window_is_thirty_days_to_now(store, config):
    result = build_report(store, config, since=None, until=None, now=NOW)
    assert result["window"] == {
        "since": (NOW - timedelta(days=30)).isoformat(),
        "until": NOW.isoformat(),
    }
    # P3's reply at Nov 30 01:00 falls inside this window and answers T4.
    assert result["totals"]["replies"] == 3


def test_ties_go_to_the_later_ledger_row(engine, config):
    ledger = ReportLedger(engine)
    who = ledger.person()
    enrolled = ledger.enrollment(who)
    ledger.touch(enrolled, "s1", at(2, 14))
    ledger.touch(enrolled, "s2", at(2, 14))
    ledger.event("reply", who[0], at(2, 14))  # same instant as both touches: counts
    steps = {s["step"]: s["replies"] for s in report(engine, config)["steps"]}
    assert steps == {"s1": 0, "s2": 1}


def test_bad_input(engine, config):
    with pytest.raises(InputError, match="valid keys are cadence, step"):
        report(engine, config, by="cadence,weekday")
    with pytest.raises(InputError, match="must be before --until"):
        build_report(engine, config, since=UNTIL, until=SINCE, now=NOW)
    with pytest.raises(ValueError, match="naive"):
        build_report(engine, config, since=datetime(2026, 11, 1), until=UNTIL, now=NOW)


def test_tasks_created_and_done(engine, config):
    ledger = ReportLedger(engine)
    person, _ = ledger.person()
    ledger.task(person, at(3), due=at(4), done=at(5))
    ledger.task(person, at(3), due=at(4))
    ledger.task(person, at(20, month=10), due=at(4), done=at(30, 1))
    totals = report(engine, config)["totals"]
    assert (totals["tasks_created"], totals["tasks_done"]) == (2, 1)


def test_ratings_reach_the_report(engine, config):
    ledger = ReportLedger(engine)
    who = ledger.person(owner="o1")
    touch = ledger.touch(ledger.enrollment(who), "s2", at(3))
    ledger.event("rating", who[0], at(4), touch=touch, payload={"score": 2})
    ledger.event("rating", who[0], at(5), touch=touch, payload={"score": 5})  # replaces it
    ratings = report(engine, config)["ratings"]
    assert (ratings["count"], ratings["mean"]) == (1, 5.0)
    assert ratings["by_stage"] == {"applied": {"count": 1, "mean": 5.0}}
