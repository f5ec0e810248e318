"""The report object: runs the builders on one connection and names the contract keys.

This is the one place that spells the JSON contract of DESIGN.md (``window``, ``totals``,
``sla``, ``groups``, ``ab``, ``ratings``) and the extra keys of report-plan §11 (``steps``,
``time_to_response``, ``heatmap``, ``tasks``…). Every figure comes from SQL aggregates; what
reaches Python is bounded by the number of groups, steps and heat-map cells.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine

from outreach.cadence import CadenceConfig
from outreach.reports import ab, ratings, sla, stats
from outreach.reports.arms import step_arms, step_cells, step_rates
from outreach.reports.breakdown import heatmap, is_small, parse_by
from outreach.reports.kpis import extra_totals, people_figures, ttr_buckets
from outreach.reports.query import (
    WorkTables,
    collect_moves,
    collect_opt_outs,
    collect_replies,
    collect_touches,
)
from outreach.reports.window import Window, resolve_window

__all__ = ["CONTRACT_TOTALS", "build_report", "to_json"]

log = logging.getLogger("outreach.report")

#: the ``totals`` keys DESIGN.md names, in its order (groups carry the same)
CONTRACT_TOTALS = (
    "people_contacted",
    "touches_sent",
    "delivered",
    "bounced",
    "failed",
    "cancelled",
    "opens",
    "machine_opens",
    "clicks",
    "replies",
    "auto_replies",
    "response_rate",
    "time_to_response_hours",
    "engagement_rate",
    "conversion_rate",
    "opt_out_rate",
    "bounce_rate",
)

#: extra per-group keys (report-plan §11), after the contract keys
_EXTRA_GROUP = (
    "people_replied",
    "people_engaged",
    "people_converted",
    "conversion_people",
    "people_opted_out",
    "open_events",
)


def _ordered(figures: dict[str, Any]) -> dict[str, Any]:
    return {key: figures[key] for key in (*CONTRACT_TOTALS, *_EXTRA_GROUP)}


def build_report(
    bind: Engine | Connection,
    config: CadenceConfig,
    *,
    since: datetime | None,
    until: datetime | None,
    now: datetime,
    by: tuple[str, ...] | str | None = (),
    min_cell: int = 30,
) -> dict[str, Any]:
    """The report object for ``[since, until)`` (default: the 30 days up to ``now``).

    ``by`` is a tuple of ``--by`` keys (or the comma text); ``min_cell`` flags groups and
    steps whose denominator is smaller (``small: true``). Raises ``InputError`` for an
    unknown key, a naive time, or ``since`` not before ``until``.

    Example::

        report = build_report(engine, config, since=None, until=None, now=clock.now(),
                              by=("cadence", "step"))
        report["totals"]["response_rate"]
    """
    keys = parse_by(by)
    if min_cell < 0:
        raise ValueError(f"min_cell must be >= 0, got {min_cell}")
    for name, value in (("since", since), ("until", until), ("now", now)):
        if value is not None and value.tzinfo is None:
            raise ValueError(f"{name} {value!r} is naive; give it a time zone")
    window = resolve_window(since, until, now)
    if isinstance(bind, Engine):
        with bind.connect() as conn:
            report = _build(conn, config, window, now.astimezone(UTC), keys, min_cell)
            conn.rollback()
            return report
    return _build(bind, config, window, now.astimezone(UTC), keys, min_cell)


def _build(
    conn: Connection,
    config: CadenceConfig,
    window: Window,
    now: datetime,
    keys: tuple[str, ...],
    min_cell: int,
) -> dict[str, Any]:
    started = time.perf_counter()
    since, until = window.since, window.until
    work = WorkTables(conn)
    try:
        collect_replies(work, since, until)
        collect_moves(work, since, until)
        collect_touches(work, since, until, now)
        collect_opt_outs(work, since, until)
        (_, overall), *_ = people_figures(work, ())
        totals = {**_ordered(overall), **extra_totals(work, since, until)}
        groups = []
        if keys:
            for group_by, figures in people_figures(work, keys):
                groups.append(
                    {
                        "by": group_by,
                        **_ordered(figures),
                        "small": is_small(figures["people_contacted"], min_cell),
                    }
                )
        cells_by_step = step_cells(work)
        steps = []
        for cadence, step, channel, sent, replied in step_rates(cells_by_step):
            low, high = stats.wilson(replied, sent)
            steps.append(
                {
                    "cadence": cadence,
                    "step": step,
                    "channel": channel,
                    "sent": sent,
                    "replies": replied,
                    "rate": replied / sent if sent else None,
                    "ci_low": low,
                    "ci_high": high,
                    "small": is_small(sent, min_cell),
                }
            )
        ab_entries = []
        for entry in step_arms(cells_by_step, config):
            if len(entry.arms) > 1:
                replies = [ab.Arm(a.variant, a.sent, a.replied) for a in entry.arms]
                ab_entries.append(
                    ab.judge(entry.cadence, entry.step, "replies", replies, entry.min_sample)
                )
            conversion = [ab.Arm(a.variant, a.conversion_sent, a.converted) for a in entry.arms]
            if entry.holdout is not None:
                held = entry.holdout
                conversion.append(ab.Arm("holdout", held.conversion_sent, held.converted, True))
            if len(conversion) > 1:
                ab_entries.append(
                    ab.judge(entry.cadence, entry.step, "conversion", conversion, entry.min_sample)
                )
        buckets = ttr_buckets(work)
        cells = heatmap(work, config.policy.default_timezone)
    finally:
        work.drop()
    report = {
        "generated_at": now.isoformat(),
        "window": window.as_dict(),
        "min_cell": min_cell,
        "by": list(keys),
        "totals": totals,
        "sla": sla.per_step(conn, config, since, until, now),
        "groups": groups,
        "steps": steps,
        "time_to_response": {"buckets": buckets},
        "heatmap": cells,
        "ab": ab_entries,
        "tasks": sla.task_backlog(conn, until),
        "ratings": ratings.summarize(conn, since, until),
    }
    log.info(
        "report built: %d touches sent, %d groups, %.2f s",
        totals["touches_sent"],
        len(groups),
        time.perf_counter() - started,
    )
    return report


def to_json(report: dict[str, Any]) -> str:
    """The report object as JSON text (what ``--format json`` prints)."""
    return json.dumps(report, indent=2, ensure_ascii=False) + "\n"
