"""KPI figures: aggregates over ``report_touches``, for the totals and for each group.

People figures are counted per group in two steps in SQL: first per (group, person), then
per group, so "people with two or more interactions" or "replied" never needs a person in
Python. A person touched in two groups counts in both (sums of groups exceed the totals).
Rates are fractions, ``None`` when the denominator is 0 (report-plan §3).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, select
from sqlalchemy.sql.elements import ColumnElement

from outreach.reports.breakdown import grouping
from outreach.reports.query import WorkTables
from outreach.store.schema import Event, Task

__all__ = [
    "COUNT_FIELDS",
    "TTR_EDGES",
    "extra_totals",
    "people_figures",
    "rate",
    "ttr_buckets",
    "ttr_quantiles",
]

#: integer fields each group (and the totals) carries, in output order
COUNT_FIELDS = (
    "people_contacted",
    "touches_sent",
    "delivered",
    "bounced",
    "failed",
    "cancelled",
    "opens",
    "machine_opens",
    "clicks",
    "open_events",
    "replies",
    "auto_replies",
    "people_replied",
    "people_engaged",
    "people_converted",
    "conversion_people",
    "people_opted_out",
)

#: time-to-response histogram edges in hours (the last bucket is open-ended)
TTR_EDGES = (0, 1, 4, 12, 24, 48, 72, 168, 336)


def rate(numerator: int | None, denominator: int | None) -> float | None:
    """``numerator / denominator``, ``None`` when the denominator is 0."""
    if not denominator:
        return None
    return (numerator or 0) / denominator


def _flag_sum(condition: ColumnElement[bool]):
    return func.sum(case((condition, 1), else_=0))


def people_figures(work: WorkTables, keys: tuple[str, ...]) -> list[tuple[dict[str, str], dict]]:
    """One ``(by, figures)`` pair per group of ``keys`` (one pair, ``by = {}``, without keys).

    ``figures`` holds :data:`COUNT_FIELDS`, the rates and ``time_to_response_hours``.
    """
    rt, oo = work.touches, work.opt_outs
    group = grouping(work, keys)
    sent = rt.c.sent == 1
    per_person = (
        select(
            *group.columns,
            rt.c.person_id.label("person_id"),
            func.sum(rt.c.sent).label("touches_sent"),
            func.sum(rt.c.delivered).label("delivered"),
            func.sum(rt.c.bounced).label("bounced"),
            _flag_sum(rt.c.status == "failed").label("failed"),
            _flag_sum(rt.c.status == "cancelled").label("cancelled"),
            func.sum(rt.c.opened).label("opens"),
            func.sum(rt.c.machine_opened).label("machine_opens"),
            func.sum(rt.c.clicked).label("clicks"),
            func.sum(rt.c.open_events).label("open_events"),
            func.sum(rt.c.replies).label("replies"),
            func.sum(rt.c.auto_replies).label("auto_replies"),
            func.sum(rt.c.opened + rt.c.clicked + rt.c.replies).label("interactions"),
            func.max(rt.c.converted * rt.c.sent).label("converted"),
            func.max(case((and_(sent, (rt.c.mature + rt.c.converted) > 0), 1), else_=0)).label(
                "conversion_eligible"
            ),
            func.min(case((sent, rt.c.anchor_at), else_=None)).label("first_at"),
        )
        .select_from(group.source)
        .where(rt.c.status.in_(("sent", "failed", "cancelled")))
        .group_by(*group.columns, rt.c.person_id)
        .subquery()
    )
    by_columns = [per_person.c[f"by_{key}"] for key in keys]
    pp = per_person.c
    contacted = pp.touches_sent > 0
    rows = work.conn.execute(
        select(
            *by_columns,
            _flag_sum(contacted).label("people_contacted"),
            func.sum(pp.touches_sent).label("touches_sent"),
            func.sum(pp.delivered).label("delivered"),
            func.sum(pp.bounced).label("bounced"),
            func.sum(pp.failed).label("failed"),
            func.sum(pp.cancelled).label("cancelled"),
            func.sum(pp.opens).label("opens"),
            func.sum(pp.machine_opens).label("machine_opens"),
            func.sum(pp.clicks).label("clicks"),
            func.sum(pp.open_events).label("open_events"),
            func.sum(pp.replies).label("replies"),
            func.sum(pp.auto_replies).label("auto_replies"),
            _flag_sum(pp.replies > 0).label("people_replied"),
            _flag_sum(and_(contacted, pp.interactions >= 2)).label("people_engaged"),
            func.sum(pp.converted).label("people_converted"),
            func.sum(pp.conversion_eligible).label("conversion_people"),
            _flag_sum(and_(contacted, oo.c.last_at > pp.first_at)).label("people_opted_out"),
        )
        .select_from(per_person.outerjoin(oo, oo.c.person_id == pp.person_id))
        .group_by(*by_columns)
        .order_by(*by_columns)
    ).all()
    quantiles = ttr_quantiles(work, keys)
    result = []
    for row in rows:
        by = {key: str(getattr(row, f"by_{key}")) for key in keys}
        counts = {name: int(getattr(row, name) or 0) for name in COUNT_FIELDS}
        median, p90 = quantiles.get(tuple(by.values()), (None, None))
        result.append((by, _with_rates(counts, median, p90)))
    if not keys and not result:
        result.append(({}, _with_rates(dict.fromkeys(COUNT_FIELDS, 0), None, None)))
    return result


def _with_rates(counts: dict[str, int], median: float | None, p90: float | None) -> dict:
    people = counts["people_contacted"]
    return {
        **counts,
        "response_rate": rate(counts["people_replied"], people),
        "time_to_response_hours": {"median": median, "p90": p90},
        "engagement_rate": rate(counts["people_engaged"], people),
        "conversion_rate": rate(counts["people_converted"], counts["conversion_people"]),
        "opt_out_rate": rate(counts["people_opted_out"], people),
        "bounce_rate": rate(counts["bounced"], counts["touches_sent"]),
    }


def _first_replies(work: WorkTables, keys: tuple[str, ...]):
    """Per (group, replying person): hours from their attributed touch to their first reply."""
    rt = work.touches
    group = grouping(work, keys)
    order = func.row_number().over(
        partition_by=[*group.columns, rt.c.person_id],
        order_by=[rt.c.first_reply_at, rt.c.id],
    )
    ranked = (
        select(*group.columns, rt.c.ttr_hours.label("hours"), order.label("nth"))
        .select_from(group.source)
        .where(rt.c.sent == 1, rt.c.replies > 0)
        .subquery()
    )
    return (
        select(*[ranked.c[f"by_{k}"] for k in keys], ranked.c.hours)
        .where(ranked.c.nth == 1)
        .subquery()
    )


def ttr_quantiles(
    work: WorkTables, keys: tuple[str, ...]
) -> dict[tuple[str, ...], tuple[float | None, float | None]]:
    """Median and p90 (nearest rank: the ``ceil(q * n)``-th smallest) of each group's
    per-person time to first response, in hours, computed in SQL."""
    first = _first_replies(work, keys)
    by_columns = [first.c[f"by_{key}"] for key in keys]
    position = func.row_number().over(partition_by=by_columns, order_by=first.c.hours)
    size = func.count().over(partition_by=by_columns)
    ranked = select(*by_columns, first.c.hours, position.label("nth"), size.label("n")).subquery()
    r = ranked.c
    # ceil(n / 2) and ceil(9n / 10) in integer arithmetic (SQLite has no CEIL before 3.44)
    median_rank = (r.n + 1) // 2
    p90_rank = (r.n * 9 + 9) // 10
    rows = work.conn.execute(
        select(
            *[r[f"by_{k}"] for k in keys],
            r.hours,
            (r.nth == median_rank).label("is_median"),
            (r.nth == p90_rank).label("is_p90"),
        ).where((r.nth == median_rank) | (r.nth == p90_rank))
    )
    found: dict[tuple[str, ...], list[float | None]] = {}
    for row in rows:
        group_key = tuple(str(getattr(row, f"by_{k}")) for k in keys)
        cell = found.setdefault(group_key, [None, None])
        hours = round(float(row.hours), 4)
        if row.is_median:
            cell[0] = hours
        if row.is_p90:
            cell[1] = hours
    return {key: (value[0], value[1]) for key, value in found.items()}


def ttr_buckets(work: WorkTables) -> list[dict[str, Any]]:
    """How many replying people answered within each :data:`TTR_EDGES` bucket."""
    first = _first_replies(work, ())
    edges = TTR_EDGES
    whens = [(first.c.hours < upper, index) for index, upper in enumerate(edges[1:])]
    bucket = case(*whens, else_=len(edges) - 1).label("bucket")
    counts = dict(
        work.conn.execute(select(bucket, func.count()).group_by(bucket)).all()  # type: ignore[arg-type]
    )
    return [
        {
            "from_hours": edges[index],
            "to_hours": edges[index + 1] if index + 1 < len(edges) else None,
            "count": int(counts.get(index, 0)),
        }
        for index in range(len(edges))
    ]


def extra_totals(work: WorkTables, since: datetime, until: datetime) -> dict[str, Any]:
    """Totals beyond the per-group figures: ambiguous, skipped and holdout rows, unattributed
    bounces, tasks created and done, and the conversion of the no-contact control."""
    rt, conn = work.touches, work.conn
    statuses = dict(
        conn.execute(
            select(rt.c.status, func.count())
            .where(rt.c.status.in_(("ambiguous", "skipped", "holdout")))
            .group_by(rt.c.status)
        ).all()
    )
    unattributed = conn.execute(
        select(func.count()).where(
            Event.type == "bounce", Event.touch_id.is_(None), Event.at >= since, Event.at < until
        )
    ).scalar_one()
    created = conn.execute(
        select(func.count()).where(Task.created_at >= since, Task.created_at < until)
    ).scalar_one()
    done = conn.execute(
        select(func.count()).where(
            Task.status == "done", Task.completed_at >= since, Task.completed_at < until
        )
    ).scalar_one()
    holdout = rt.c.status == "holdout"
    control = conn.execute(
        select(
            _flag_sum(and_(holdout, rt.c.converted == 1)),
            _flag_sum(and_(holdout, (rt.c.mature + rt.c.converted) > 0)),
        )
    ).one()
    return {
        "ambiguous": int(statuses.get("ambiguous", 0)),
        "skipped": int(statuses.get("skipped", 0)),
        "holdout": int(statuses.get("holdout", 0)),
        "bounced_unattributed": int(unattributed),
        "tasks_created": int(created),
        "tasks_done": int(done),
        "conversion_control_rate": rate(control[0], control[1]),
    }
