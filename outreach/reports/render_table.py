"""``--format table``: the report as Rich tables (summary, SLA, A/B, groups).

Cells whose denominator is below ``--min-cell`` (groups) or an arm below ``min_sample``
(A/B) are dimmed and marked ``†``, with a footnote: flagged, never hidden.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["SMALL_MARK", "print_report"]

#: the mark of a small cell (its footnote says what it means)
SMALL_MARK = "†"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _hours(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} h"


def _summary(report: dict[str, Any]) -> Table:
    t = report["totals"]
    ttr = t["time_to_response_hours"]
    table = Table(title="Summary", header_style="bold", show_header=False)
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows = [
        ("people contacted", f"{t['people_contacted']:,}"),
        ("touches sent", f"{t['touches_sent']:,}"),
        ("delivered", f"{t['delivered']:,}"),
        ("bounced", f"{t['bounced']:,} ({_pct(t['bounce_rate'])})"),
        ("bounced, no touch known", f"{t['bounced_unattributed']:,}"),
        ("failed / ambiguous / cancelled", f"{t['failed']} / {t['ambiguous']} / {t['cancelled']}"),
        ("opens (people) / machine opens", f"{t['opens']:,} / {t['machine_opens']:,}"),
        ("clicks", f"{t['clicks']:,}"),
        ("replies / auto-replies", f"{t['replies']:,} / {t['auto_replies']:,}"),
        ("response rate", _pct(t["response_rate"])),
        ("time to response median / p90", f"{_hours(ttr['median'])} / {_hours(ttr['p90'])}"),
        ("engagement rate (2+ interactions)", _pct(t["engagement_rate"])),
        ("conversion rate (14 days)", _pct(t["conversion_rate"])),
        ("conversion without contact (holdout)", _pct(t["conversion_control_rate"])),
        ("opt-out rate", _pct(t["opt_out_rate"])),
        ("tasks created / done", f"{t['tasks_created']:,} / {t['tasks_done']:,}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def _sla(report: dict[str, Any]) -> Table:
    table = Table(title="SLA per step", header_style="bold")
    for column in ("cadence / step", "within", "due", "met", "late", "never", "met rate"):
        table.add_column(column, justify="left" if column == "cadence / step" else "right")
    for row in report["sla"]:
        never = str(row["never"])
        if row.get("never_by_reason"):
            reasons = ", ".join(f"{k} {v}" for k, v in row["never_by_reason"].items())
            never += f" ({reasons})"
        table.add_row(
            f"{row['cadence']} / {row['step']}",
            f"{row['within_hours']:g} h",
            str(row["due"]),
            str(row["met"]),
            str(row["late"]),
            never,
            _pct(row["met_rate"]),
        )
    return table


def _ab(report: dict[str, Any]) -> Table:
    table = Table(title="A/B tests", header_style="bold")
    for column in ("cadence / step", "metric", "arm", "sent", "responses", "rate (95% CI)"):
        table.add_column(column)
    table.add_column("P(best)", justify="right")
    table.add_column("result")
    for entry in report["ab"]:
        if entry["status"] == "winner":
            result = f"winner: {entry['winner']} (p={entry['p_value']:.3g})"
        elif entry["status"] == "no_difference":
            p = entry["p_value"]
            result = "no difference" + (f" (p={p:.3g})" if p is not None else "")
        else:
            result = f"collecting (min {entry['min_sample']} per arm)"
        for index, arm in enumerate(entry["arms"]):
            small = not arm["holdout"] and arm["sent"] < entry["min_sample"]
            rate = _pct(arm["rate"])
            if arm["ci_low"] is not None:
                rate += f" ({_pct(arm['ci_low'])}-{_pct(arm['ci_high'])})"
            table.add_row(
                f"{entry['cadence']} / {entry['step']}" if index == 0 else "",
                entry["metric"] if index == 0 else "",
                arm["variant"] + (" (no contact)" if arm["holdout"] else ""),
                f"{arm['sent']:,}" + (f" {SMALL_MARK}" if small else ""),
                f"{arm['responses']:,}",
                rate,
                _pct(arm["p_best"]),
                result if index == 0 else "",
                style="dim" if small else None,
            )
    return table


def _groups(report: dict[str, Any]) -> Table:
    table = Table(title="Groups: " + ", ".join(report["by"]), header_style="bold")
    for key in report["by"]:
        table.add_column(key)
    for column in ("people", "sent", "replies", "response", "engaged", "converted", "bounce"):
        table.add_column(column, justify="right")
    for group in report["groups"]:
        mark = f" {SMALL_MARK}" if group["small"] else ""
        table.add_row(
            *(group["by"][key] for key in report["by"]),
            f"{group['people_contacted']:,}{mark}",
            f"{group['touches_sent']:,}",
            f"{group['replies']:,}",
            _pct(group["response_rate"]),
            _pct(group["engagement_rate"]),
            _pct(group["conversion_rate"]),
            _pct(group["bounce_rate"]),
            style="dim" if group["small"] else None,
        )
    return table


def print_report(report: dict[str, Any], console: Console) -> None:
    """Print the report's tables on ``console``."""
    window = report["window"]
    console.print(f"Report for {window['since']} to {window['until']}", highlight=False)
    console.print(_summary(report))
    if report["sla"]:
        console.print(_sla(report))
    if report["ab"]:
        console.print(_ab(report))
    if report["by"]:
        console.print(_groups(report))
    small_groups = any(g["small"] for g in report["groups"])
    small_arms = any(
        not arm["holdout"] and arm["sent"] < entry["min_sample"]
        for entry in report["ab"]
        for arm in entry["arms"]
    )
    if small_groups:
        console.print(
            f"{SMALL_MARK} fewer than {report['min_cell']} people: read the rates with care",
            highlight=False,
        )
    if small_arms:
        console.print(
            f"{SMALL_MARK} arm below the step's min_sample: no winner is named yet",
            highlight=False,
        )
    tasks = report["tasks"]
    console.print(
        f"Open recruiter tasks at the end of the window: {tasks['open']:,} "
        f"({tasks['overdue']:,} overdue, oldest {_hours(tasks['max_age_hours'])})",
        highlight=False,
    )
    ratings = report["ratings"]
    if ratings["count"]:
        console.print(
            f"Candidate ratings: {ratings['count']:,}, mean {ratings['mean']:.2f} of 5",
            highlight=False,
        )
