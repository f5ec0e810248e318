"""Report dicts for the renderer tests: a realistic 30-day window and an empty one.

They carry every key of the contract and of report-plan §11, with counts that agree with one
another (sent ≥ delivered ≥ opens, SLA due = met + late + never, rates = numerator ÷
denominator), so the page is built against the shape the report core produces.
"""

from __future__ import annotations

import copy
from typing import Any

from outreach.reports.ab import Arm, judge
from outreach.reports.stats import wilson

TTR_EDGES = (0, 1, 4, 12, 24, 48, 72, 168, 336, None)


def _rate(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _totals(
    people: int,
    sent: int,
    delivered: int,
    opens: int,
    replies: int,
    replied: int,
    engaged: int,
    converted: int,
    opted_out: int,
    bounced: int,
) -> dict[str, Any]:
    return {
        "people_contacted": people,
        "touches_sent": sent,
        "delivered": delivered,
        "bounced": bounced,
        "failed": 3 if sent else 0,
        "cancelled": 2 if sent else 0,
        "opens": opens,
        "machine_opens": opens // 3,
        "clicks": opens // 4,
        "replies": replies,
        "auto_replies": replies // 5,
        "response_rate": _rate(replied, people),
        "time_to_response_hours": {"median": 19.5, "p90": 96.0}
        if replies
        else {"median": None, "p90": None},
        "engagement_rate": _rate(engaged, people),
        "conversion_rate": _rate(converted, people),
        "opt_out_rate": _rate(opted_out, people),
        "bounce_rate": _rate(bounced, sent),
        "people_replied": replied,
        "people_engaged": engaged,
        "people_converted": converted,
        "people_opted_out": opted_out,
        "bounced_unattributed": 1 if sent else 0,
        "ambiguous": 1 if sent else 0,
        "skipped": 7 if sent else 0,
        "holdout": 40 if sent else 0,
        "open_events": opens + opens // 2,
        "conversion_control_rate": 0.05 if sent else None,
        "tasks_created": 30 if sent else 0,
        "tasks_done": 22 if sent else 0,
    }


def _step(cadence: str, step: str, channel: str | None, sent: int, replies: int) -> dict[str, Any]:
    low, high = wilson(replies, sent)
    return {
        "cadence": cadence,
        "step": step,
        "channel": channel,
        "sent": sent,
        "replies": replies,
        "rate": _rate(replies, sent),
        "ci_low": low,
        "ci_high": high,
        "small": sent < 30,
    }


def _sla(
    cadence: str,
    step: str,
    within: float,
    after: float,
    met: int,
    late: int,
    never: dict[str, int],
    pending: int,
) -> dict[str, Any]:
    never_total = sum(never.values())
    due = met + late + never_total
    return {
        "cadence": cadence,
        "step": step,
        "within_hours": within,
        "after_hours": after,
        "due": due,
        "met": met,
        "late": late,
        "never": never_total,
        "met_rate": _rate(met, due),
        "never_by_reason": never,
        "pending": pending,
    }


def sample_report() -> dict[str, Any]:
    """A report of a busy 30-day window: three cadences, two A/B tests, ratings and tasks."""
    totals = _totals(
        people=412,
        sent=1034,
        delivered=998,
        opens=540,
        replies=131,
        replied=118,
        engaged=160,
        converted=57,
        opted_out=9,
        bounced=21,
    )
    groups = [
        {
            "by": {"cadence": "interview-follow-up", "channel": "email"},
            **_totals(190, 420, 409, 260, 70, 64, 80, 31, 3, 6),
            "small": False,
        },
        {
            "by": {"cadence": "interview-follow-up", "channel": "sms"},
            **_totals(22, 25, 25, 0, 6, 6, 6, 2, 1, 0),
            "small": True,
        },
        {
            "by": {"cadence": "applied-acknowledge", "channel": "email"},
            **_totals(240, 589, 564, 280, 55, 48, 74, 24, 5, 15),
            "small": False,
        },
    ]
    heat = []
    for dow in range(7):
        for hour in range(8, 19):
            sent = 3 + (dow * 7 + hour * 5) % 17 if dow < 5 else (hour % 3)
            if sent:
                replies = (sent * (hour % 5)) // 9
                heat.append(
                    {
                        "dow": dow,
                        "hour": hour,
                        "sent": sent,
                        "replies": replies,
                        "rate": replies / sent,
                    }
                )
    counts = [12, 21, 19, 24, 20, 14, 9, 7, 5]
    buckets = [
        {"from_hours": TTR_EDGES[i], "to_hours": TTR_EDGES[i + 1], "count": counts[i]}
        for i in range(len(counts))
    ]
    return {
        "generated_at": "2026-11-25T15:00:00+00:00",
        "window": {"since": "2026-10-26T15:00:00+00:00", "until": "2026-11-25T15:00:00+00:00"},
        "min_cell": 30,
        "totals": totals,
        "sla": [
            _sla(
                "applied-acknowledge",
                "acknowledge",
                48,
                0.5,
                231,
                6,
                {"skipped": 2, "failed": 1},
                4,
            ),
            _sla("interview-follow-up", "thank-you", 24, 2, 98, 3, {"holdout": 5, "task": 1}, 2),
            _sla("screening-reminder", "reminder", 12, 0, 0, 0, {}, 0),
        ],
        "groups": groups,
        "steps": [
            _step("applied-acknowledge", "acknowledge", None, 240, 31),
            _step("applied-acknowledge", "check-in", "email", 180, 17),
            _step("interview-follow-up", "thank-you", None, 250, 52),
            _step("interview-follow-up", "check-in", "sms", 22, 5),
            _step("offer-nudge", "final", None, 0, 0),
        ],
        "time_to_response": {"buckets": buckets},
        "heatmap": heat,
        "ab": [
            judge(
                "interview-follow-up",
                "thank-you",
                "replies",
                [Arm("a", 130, 18), Arm("b", 120, 34)],
                100,
            ),
            judge(
                "interview-follow-up",
                "thank-you",
                "conversion",
                [Arm("a", 130, 14), Arm("b", 120, 17), Arm("holdout", 25, 1, holdout=True)],
                100,
            ),
            judge(
                "applied-acknowledge",
                "check-in",
                "replies",
                [Arm("a", 61, 6), Arm("b", 58, 9), Arm("c", 61, 4)],
                100,
            ),
        ],
        "tasks": {
            "open": 14,
            "overdue": 5,
            "median_age_hours": 30.0,
            "max_age_hours": 190.5,
            "by_owner": [
                {
                    "owner": "Dana Reyes",
                    "kind": "linkedin",
                    "open": 9,
                    "overdue": 3,
                    "median_age_hours": 26.0,
                    "max_age_hours": 120.0,
                },
                {
                    "owner": "Sam Okafor",
                    "kind": "call",
                    "open": 5,
                    "overdue": 2,
                    "median_age_hours": 41.0,
                    "max_age_hours": 190.5,
                },
            ],
        },
        "ratings": {
            "count": 37,
            "mean": 4.27,
            "by_stage": {
                "interview": {"count": 25, "mean": 4.4},
                "screening": {"count": 12, "mean": 4.0},
            },
            "by_recruiter": {
                "Dana Reyes": {"count": 20, "mean": 4.5},
                "Sam Okafor": {"count": 17, "mean": 4.0},
            },
            "by_cadence": {"interview-follow-up": {"count": 37, "mean": 4.27}},
            "distribution": {"1": 1, "2": 1, "3": 4, "4": 11, "5": 20},
        },
    }


def empty_report() -> dict[str, Any]:
    """The same window with nothing in it: zero counts, null rates, empty lists."""
    report = sample_report()
    report["totals"] = _totals(0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    report["sla"] = []
    report["groups"] = []
    report["steps"] = []
    report["time_to_response"] = {
        "buckets": [{**bucket, "count": 0} for bucket in report["time_to_response"]["buckets"]]
    }
    report["heatmap"] = []
    report["ab"] = []
    report["tasks"] = {
        "open": 0,
        "overdue": 0,
        "median_age_hours": None,
        "max_age_hours": None,
        "by_owner": [],
    }
    report["ratings"] = {
        "count": 0,
        "mean": None,
        "by_stage": {},
        "by_recruiter": {},
        "by_cadence": {},
        "distribution": {str(score): 0 for score in range(1, 6)},
    }
    return copy.deepcopy(report)
