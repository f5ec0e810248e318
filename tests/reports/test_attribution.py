"""Attribution edge cases: quantiles, engagement without machine opens, conversion windows,
one-arm variants and the heat map across a daylight-saving change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from report_ledger import ReportLedger, cadence_config

from outreach.reports import build_report

SINCE = datetime(2026, 10, 20, tzinfo=UTC)
UNTIL = datetime(2026, 11, 30, tzinfo=UTC)
NOW = UNTIL

CADENCES = """
policy: {default_timezone: UTC}
cadences:
  - id: apply
    trigger: {stage: applied}
    steps:
      - {id: s1, after: 0m, template: t, variants: [{template: u, weight: 30},
         {template: v, weight: 30}], min_sample: 1}
"""


@pytest.fixture
def config(tmp_path: Path):
    return cadence_config(tmp_path, CADENCES)


def run(engine, config, **options):
    return build_report(engine, config, since=SINCE, until=UNTIL, now=NOW, **options)


def test_median_and_p90_are_nearest_rank(engine, config):
    ledger = ReportLedger(engine)
    start = datetime(2026, 11, 2, 12, tzinfo=UTC)
    # ten people answering after 1..10 hours: median = 5th (5 h), p90 = 9th (9 h)
    for hours in range(1, 11):
        who = ledger.person()
        ledger.touch(ledger.enrollment(who), "s1", start)
        ledger.event("reply", who[0], start + timedelta(hours=hours))
        ledger.event("reply", who[0], start + timedelta(hours=hours + 50))  # not the first
    totals = run(engine, config)["totals"]
    assert totals["time_to_response_hours"] == {"median": 5.0, "p90": 9.0}
    assert totals["replies"] == 20 and totals["people_replied"] == 10
    buckets = {
        b["from_hours"]: b["count"] for b in run(engine, config)["time_to_response"]["buckets"]
    }
    assert (buckets[1], buckets[4]) == (3, 7)  # 1-3 h, then 4-10 h


def test_machine_opens_and_auto_replies_never_engage(engine, config):
    ledger = ReportLedger(engine)
    start = datetime(2026, 11, 2, 12, tzinfo=UTC)
    machine = ledger.person()
    touch = ledger.touch(ledger.enrollment(machine), "s1", start)
    ledger.event("open", machine[0], start, touch=touch, payload={"machine": True})
    ledger.event("auto_reply", machine[0], start + timedelta(hours=1))
    ledger.event("reply", machine[0], start + timedelta(hours=2))
    human = ledger.person()
    touch = ledger.touch(ledger.enrollment(human), "s1", start)
    ledger.event("open", human[0], start, touch=touch, payload={"machine": False})
    ledger.event("click", human[0], start, touch=touch)
    totals = run(engine, config)["totals"]
    assert (totals["people_engaged"], totals["engagement_rate"]) == (1, 0.5)
    assert (totals["replies"], totals["auto_replies"], totals["machine_opens"]) == (1, 1, 1)


def test_conversion_window_is_fourteen_days_inclusive(engine, config):
    ledger = ReportLedger(engine)
    sent = datetime(2026, 11, 2, 12, 0, 0, 250000, tzinfo=UTC)
    cases = {
        timedelta(days=14): True,
        timedelta(days=14, microseconds=1): False,
        timedelta(0): False,  # not after the touch
        timedelta(seconds=1): True,
    }
    for offset in cases:
        who = ledger.person()
        ledger.touch(ledger.enrollment(who), "s1", sent)
        ledger.stage_change(who[0], sent + offset, "applied", "interview")
    skipped = ledger.person()
    ledger.touch(ledger.enrollment(skipped), "s1", sent)
    ledger.stage_change(skipped[0], sent + timedelta(days=1), "screening", "interview")
    totals = run(engine, config)["totals"]
    assert totals["people_converted"] == 2  # the +14d and +1s cases; wrong `from` stage: no
    assert totals["conversion_people"] == 5


def test_one_arm_and_zero_sends(engine, config):
    ledger = ReportLedger(engine)
    start = datetime(2026, 11, 2, 12, tzinfo=UTC)
    for n in range(3):
        who = ledger.person()
        ledger.touch(ledger.enrollment(who), "s1", start, variant="b")
        if n == 0:
            ledger.event("reply", who[0], start + timedelta(hours=1))
    (replies, _conversion) = run(engine, config)["ab"]
    assert [(a["variant"], a["sent"], a["responses"]) for a in replies["arms"]] == [
        ("a", 0, 0),
        ("b", 3, 1),
        ("c", 0, 0),
    ]
    assert replies["status"] == "collecting" and replies["winner"] is None


def test_heatmap_across_daylight_saving_change(engine, config):
    ledger = ReportLedger(engine)
    who = ledger.person(timezone="America/New_York")
    enrolled = ledger.enrollment(who)
    # 13:00 UTC is 09:00 EDT on Friday Oct 30 and 08:00 EST on Monday Nov 2 (DST ends Nov 1)
    ledger.touch(enrolled, "s1", datetime(2026, 10, 30, 13, tzinfo=UTC))
    ledger.touch(enrolled, "s1", datetime(2026, 11, 2, 13, tzinfo=UTC))
    # a record without a zone or phone falls back to the policy default (UTC here)
    plain = ledger.person()
    ledger.touch(ledger.enrollment(plain), "s1", datetime(2026, 11, 2, 13, tzinfo=UTC))
    cells = {(c["dow"], c["hour"]): c["sent"] for c in run(engine, config)["heatmap"]}
    assert cells == {(4, 9): 1, (0, 8): 1, (0, 13): 1}


def test_heatmap_places_half_and_quarter_hour_zones_in_their_local_hour(engine, config):
    ledger = ReportLedger(engine)
    india = ledger.person(timezone="Asia/Kolkata")  # UTC+5:30
    nepal = ledger.person(timezone="Asia/Kathmandu")  # UTC+5:45
    # Monday Nov 2: 03:20 UTC is 08:50 in Kolkata, 03:40 UTC is 09:10 there;
    # 03:10 UTC is 08:55 in Kathmandu, 03:20 UTC is 09:05 there
    india_enrolled, nepal_enrolled = ledger.enrollment(india), ledger.enrollment(nepal)
    ledger.touch(india_enrolled, "s1", datetime(2026, 11, 2, 3, 20, tzinfo=UTC))
    ledger.touch(india_enrolled, "s1", datetime(2026, 11, 2, 3, 40, tzinfo=UTC))
    ledger.touch(nepal_enrolled, "s1", datetime(2026, 11, 2, 3, 10, tzinfo=UTC))
    ledger.touch(nepal_enrolled, "s1", datetime(2026, 11, 2, 3, 20, tzinfo=UTC))
    cells = {(c["dow"], c["hour"]): c["sent"] for c in run(engine, config)["heatmap"]}
    assert cells == {(0, 8): 2, (0, 9): 2}
