"""Plotly figures of the report, built from the report dict (the JSON contract plus its extras).

``build_figures(report)`` returns the six charts of the HTML page, in page order:

- ``funnel``: touches sent → delivered → opened (people's opens, machine opens left out) →
  replied → people advanced a stage (``totals``);
- ``response_by_step``: response rate per step with Wilson 95 % error bars (``steps``);
- ``time_to_response``: replies per time-to-response bucket (``time_to_response.buckets``);
- ``heatmap``: response rate by day of week × hour in the candidate's local time (``heatmap``);
- ``sla``: occurrences met / late / never per step with a deadline, stacked (``sla``);
- ``ab``: per A/B entry, each arm's rate with its interval and P(best), titled by the status
  (``collecting n/min_sample`` while collecting).

A chart with nothing to show is still drawn, with a "no data in this window" note, so the page
has the same shape for every window. Names from the data (cadences, steps, variants) are
escaped before Plotly sees them: Plotly reads a few HTML tags in its labels (``<a href>``,
``<b>``), and a name is data, never markup.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

CHART_NAMES = ("funnel", "response_by_step", "time_to_response", "heatmap", "sla", "ab")
"""The charts of the page, in order; each is a ``data-chart`` div in the HTML."""

NO_DATA = "no data in this window"
"""The note on a chart with nothing to draw."""

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

_SMALL_COLOUR = "#b8c4d6"
_COLOUR = "#3366aa"
_SLA_COLOURS = {"met": "#2e8540", "late": "#e0a800", "never": "#c0392b"}


def _at(report: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted ``path`` of the report; a ValueError naming the path if absent."""
    value: Any = report
    walked = []
    for part in path.split("."):
        walked.append(part)
        if not isinstance(value, Mapping) or part not in value:
            raise ValueError(f"report has no {'.'.join(walked)} (needed for the charts)")
        value = value[part]
    return value


def _list_at(report: Mapping[str, Any], path: str) -> Sequence[Mapping[str, Any]]:
    value = _at(report, path)
    if not isinstance(value, list) or not all(isinstance(item, Mapping) for item in value):
        raise ValueError(f"report {path} must be a list of objects, got {type(value).__name__}")
    return value


def _text(value: object) -> str:
    """A data value as Plotly label text: shown as written, never read as markup."""
    return html.escape(str(value), quote=False)


def _step_label(row: Mapping[str, Any], with_channel: bool = False) -> str:
    label = f"{_text(row['cadence'])} / {_text(row['step'])}"
    if with_channel and row.get("channel"):
        label += f" ({_text(row['channel'])})"
    return label


def _base(fig: go.Figure, title: str, height: int = 380) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0.01},
        height=height,
        margin={"l": 60, "r": 20, "t": 60, "b": 60},
        template="plotly_white",
        font={"family": "system-ui, -apple-system, 'Segoe UI', sans-serif", "size": 13},
    )
    return fig


def _empty(title: str, note: str = NO_DATA) -> go.Figure:
    """A drawn chart that says it has nothing to show."""
    fig = _base(go.Figure(), title, height=260)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.add_annotation(
        text=note,
        showarrow=False,
        xref="paper",
        yref="paper",
        x=0.5,
        y=0.5,
        font={"size": 16, "color": "#777"},
    )
    return fig


def funnel(report: Mapping[str, Any]) -> go.Figure:
    """Touches sent → delivered → opened → replied, and people who advanced a stage."""
    title = "Funnel"
    stages = [
        ("Sent", "totals.touches_sent"),
        ("Delivered", "totals.delivered"),
        ("Opened (people, not machines)", "totals.opens"),
        ("Replied", "totals.replies"),
        ("People who advanced a stage", "totals.people_converted"),
    ]
    values = [_at(report, path) or 0 for _, path in stages]
    if not values[0]:
        return _empty(title)
    fig = go.Figure(
        go.Funnel(
            y=[name for name, _ in stages],
            x=values,
            textinfo="value+percent initial",
            marker={"color": ["#3366aa", "#4a7fc1", "#6c9bd2", "#2e8540", "#7b5ea7"]},
        )
    )
    return _base(fig, title)


def response_by_step(report: Mapping[str, Any]) -> go.Figure:
    """Response rate per step with Wilson 95 % intervals; small cells paler and marked †."""
    title = "Response rate by step (95 % Wilson interval)"
    rows = [row for row in _list_at(report, "steps") if row.get("rate") is not None]
    if not rows:
        return _empty(title)
    labels = [
        _step_label(row, with_channel=True) + (" †" if row.get("small") else "") for row in rows
    ]
    rates = [row["rate"] for row in rows]
    fig = go.Figure(
        go.Bar(
            x=labels,
            y=rates,
            error_y={
                "type": "data",
                "symmetric": False,
                "array": [row["ci_high"] - row["rate"] for row in rows],
                "arrayminus": [row["rate"] - row["ci_low"] for row in rows],
            },
            marker={"color": [_SMALL_COLOUR if row.get("small") else _COLOUR for row in rows]},
            customdata=[[row["replies"], row["sent"]] for row in rows],
            hovertemplate="%{x}<br>%{y:.1%}: %{customdata[0]} of %{customdata[1]}<extra></extra>",
        )
    )
    fig.update_yaxes(tickformat=".0%", rangemode="tozero", title="replies per touch")
    return _base(fig, title)


def _bucket_label(bucket: Mapping[str, Any]) -> str:
    low, high = bucket["from_hours"], bucket["to_hours"]
    return f"{low:g} h +" if high is None else f"{low:g}–{high:g} h"


def time_to_response(report: Mapping[str, Any]) -> go.Figure:
    """Replies by time from the attributed touch to the first reply."""
    title = "Time to response"
    buckets = _list_at(report, "time_to_response.buckets")
    if not any(bucket["count"] for bucket in buckets):
        return _empty(title)
    fig = go.Figure(
        go.Bar(
            x=[_bucket_label(bucket) for bucket in buckets],
            y=[bucket["count"] for bucket in buckets],
            marker={"color": _COLOUR},
            hovertemplate="%{x}: %{y} replies<extra></extra>",
        )
    )
    fig.update_xaxes(type="category", title="hours from touch to first reply")
    fig.update_yaxes(title="people who replied")
    return _base(fig, title)


def heatmap(report: Mapping[str, Any]) -> go.Figure:
    """Response rate by day of week × hour, candidate local time; empty cells left blank."""
    title = "Response rate by day and hour (candidate's local time)"
    cells = _list_at(report, "heatmap")
    if not cells:
        return _empty(title)
    rates: list[list[float | None]] = [[None] * 24 for _ in DAYS]
    hover: list[list[str]] = [["no touches"] * 24 for _ in DAYS]
    for i, cell in enumerate(cells):
        dow, hour = cell["dow"], cell["hour"]
        if not (
            isinstance(dow, int) and 0 <= dow <= 6 and isinstance(hour, int) and 0 <= hour <= 23
        ):
            raise ValueError(
                f"report heatmap[{i}]: dow must be 0..6 and hour 0..23, got {dow}, {hour}"
            )
        rates[dow][hour] = cell["rate"]
        hover[dow][hour] = f"{cell['replies']} replies of {cell['sent']} touches"
    fig = go.Figure(
        go.Heatmap(
            z=rates,
            x=list(range(24)),
            y=list(DAYS),
            text=hover,
            # Starts at a visible blue so a 0 % cell differs from a cell with no touches (grey).
            colorscale=[[0.0, "#dbe7f5"], [1.0, "#08306b"]],
            zmin=0,
            colorbar={"tickformat": ".0%", "title": {"text": "rate"}},
            hovertemplate="%{y} %{x}:00: %{z:.1%}<br>%{text}<extra></extra>",
            hoverongaps=False,
        )
    )
    fig.update_xaxes(title="hour", dtick=2, showgrid=False, range=[-0.5, 23.5])
    fig.update_yaxes(autorange="reversed", showgrid=False)
    _base(fig, title)
    fig.update_layout(plot_bgcolor="#eeeeee")
    return fig


def sla(report: Mapping[str, Any]) -> go.Figure:
    """Occurrences delivered by the deadline, late, or never, per step with a deadline."""
    title = "SLA per step"
    rows = _list_at(report, "sla")
    if not any(row["due"] for row in rows):
        return _empty(title)
    labels = [f"{_step_label(row)} (≤ {row['within_hours']:g} h)" for row in rows]
    fig = go.Figure(
        [
            go.Bar(
                name=part,
                y=labels,
                x=[row[part] for row in rows],
                orientation="h",
                marker={"color": colour},
                hovertemplate=f"%{{y}}: %{{x}} {part}<extra></extra>",
            )
            for part, colour in _SLA_COLOURS.items()
        ]
    )
    fig.update_layout(
        barmode="stack",
        legend={"orientation": "h", "x": 1, "xanchor": "right", "y": 1.02, "yanchor": "bottom"},
    )
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title="occurrences due")
    return _base(fig, title, height=max(260, 120 + 40 * len(rows)))


def p_best_text(p: float) -> str:
    """P(best) as a whole percentage that never rounds a live arm to 0 % or 100 %."""
    if 0 < p < 0.005:
        return "< 1 %"
    if 0.995 < p < 1:
        return "> 99 %"
    return f"{p:.0%}".replace("%", " %")


def ab_status(entry: Mapping[str, Any]) -> str:
    """The status line of an A/B entry, e.g. ``collecting 42/100`` or ``winner: b (p = 0.003)``."""
    status = entry["status"]
    if status == "collecting":
        touched = [arm["sent"] for arm in entry["arms"] if not arm.get("holdout")]
        return f"collecting {min(touched, default=0)}/{entry['min_sample']}"
    p = entry.get("p_value")
    p_text = "" if p is None else f" (p = {p:.3g}, {entry.get('test')})"
    if status == "winner":
        return f"winner: {entry['winner']}{p_text}"
    return f"no difference{p_text}"


def ab(report: Mapping[str, Any]) -> go.Figure:
    """Each A/B entry's arms: rate with Wilson interval, P(best) beside it, status in the title."""
    title = "A/B tests"
    entries = _list_at(report, "ab")
    if not entries:
        return _empty(title, "no A/B tests in this window")
    titles = [
        f"{_step_label(entry)} · {_text(entry['metric'])} · {_text(ab_status(entry))}"
        for entry in entries
    ]
    fig = make_subplots(
        rows=len(entries), cols=1, subplot_titles=titles, vertical_spacing=0.5 / len(entries)
    )
    for i, entry in enumerate(entries, start=1):
        arms = entry["arms"]
        labels = [
            _text(arm["variant"])
            + (" (held back)" if arm.get("holdout") else "")
            + f" · P(best) {p_best_text(arm['p_best'])}"
            for arm in arms
        ]
        rates = [arm["rate"] or 0 for arm in arms]
        fig.add_trace(
            go.Bar(
                y=labels,
                x=rates,
                orientation="h",
                showlegend=False,
                marker={
                    "color": [
                        "#2e8540" if arm["variant"] == entry.get("winner") else _COLOUR
                        for arm in arms
                    ]
                },
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "array": [
                        0 if arm["rate"] is None else arm["ci_high"] - arm["rate"] for arm in arms
                    ],
                    "arrayminus": [
                        0 if arm["rate"] is None else arm["rate"] - arm["ci_low"] for arm in arms
                    ],
                },
                customdata=[[arm["responses"], arm["sent"]] for arm in arms],
                hovertemplate="%{y}: %{x:.1%} (%{customdata[0]} of %{customdata[1]})"
                "<extra></extra>",
            ),
            row=i,
            col=1,
        )
        fig.update_xaxes(tickformat=".0%", rangemode="tozero", row=i, col=1)
        fig.update_yaxes(autorange="reversed", row=i, col=1)
    fig.update_annotations(font={"size": 13})
    return _base(fig, title, height=120 + 170 * len(entries))


def build_figures(report: Mapping[str, Any]) -> dict[str, go.Figure]:
    """All charts of the page by name (``CHART_NAMES`` order)."""
    builders = {
        "funnel": funnel,
        "response_by_step": response_by_step,
        "time_to_response": time_to_response,
        "heatmap": heatmap,
        "sla": sla,
        "ab": ab,
    }
    return {name: builders[name](report) for name in CHART_NAMES}
