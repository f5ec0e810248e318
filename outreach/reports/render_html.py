"""The report as one self-contained HTML page: KPI cards, six Plotly charts and tables.

``write_html(report, path)`` renders ``templates/report.html.j2`` (autoescaped: every value
from the data is text, never markup) with Plotly's JavaScript inlined once and each figure
as a ``data-chart`` div, so the file opens offline and makes no request at view time. Once
every chart has drawn, the page sets ``document.body.dataset.chartsDrawn`` to their number
(the headless Chromium check waits for it).

The file is written to a temporary file beside ``path`` and renamed over it, so a reader never
sees half a report.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import plotly.io as pio
import plotly.offline
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from outreach.errors import InputError
from outreach.reports.charts import ab_status, build_figures, p_best_text

TEMPLATES = Path(__file__).parent / "templates"

PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}
"""Plotly's options for every chart: no logo link to plotly.com; redrawn when the window resizes."""


def _pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value * 100:.{digits}f} %"


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}" if digits or isinstance(value, float) else f"{value:,}"


def _hours(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value / 24:.1f} d" if value >= 48 else f"{value:.1f} h"


def _p(value: float | None) -> str:
    if value is None:
        return "–"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


@cache
def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(pct=_pct, num=_num, hours=_hours, p=_p, p_best=p_best_text)
    env.globals["ab_status"] = ab_status
    return env


@cache
def _plotly_js() -> str:
    # An inline script ends at the first "</script"; the bundle has none today, but a
    # future one must not be able to end it early.
    return plotly.offline.get_plotlyjs().replace("</script", "<\\/script")


def render_html(report: Mapping[str, Any]) -> str:
    """The page as a string (``write_html`` writes it)."""
    charts = {
        name: pio.to_html(fig, full_html=False, include_plotlyjs=False, config=PLOTLY_CONFIG)
        for name, fig in build_figures(report).items()
    }
    by_keys: list[str] = []
    for group in report.get("groups", []):
        by_keys.extend(key for key in group["by"] if key not in by_keys)
    return (
        _environment()
        .get_template("report.html.j2")
        .render(report=report, charts=charts, plotly_js=_plotly_js(), by_keys=by_keys)
    )


def write_html(report: Mapping[str, Any], path: Path) -> None:
    """Write the report page to ``path`` atomically.

    Raises ``InputError`` naming the path when its folder is missing or not writable, and
    ``ValueError`` naming the key when the report lacks something a chart needs.
    """
    page = render_html(report)
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise InputError(f"cannot write the HTML report to {path}: it is a folder")
    if not folder.is_dir():
        raise InputError(f"cannot write the HTML report to {path}: folder {folder} does not exist")
    try:
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise InputError(f"cannot write the HTML report to {path}: {exc.strerror}") from exc
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(page)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise InputError(f"cannot write the HTML report to {path}: {exc.strerror}") from exc
