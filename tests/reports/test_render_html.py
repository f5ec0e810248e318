"""The HTML page: self-contained, escaped, written atomically, with every chart and table.

Whether the page really makes no request and draws every chart is checked in a headless
Chromium (``test_render_html_chromium.py``); here the text is checked.
"""

from __future__ import annotations

import re
from pathlib import Path

import plotly.offline
import pytest
from sample_report import empty_report, sample_report

from outreach.errors import InputError
from outreach.reports.charts import CHART_NAMES
from outreach.reports.render_html import render_html, write_html

HOSTILE = "<script>alert('x')</script>"


def without_plotly_bundle(page: str) -> str:
    """The page minus Plotly's inlined library, which must appear exactly once.

    The bundle holds URL strings of its own (SVG namespaces, links in its licence comments)
    that the browser never fetches; everything else in the page is ours and must hold none.
    """
    bundle = plotly.offline.get_plotlyjs()
    assert page.count(bundle) == 1
    return page.replace(bundle, "")


def test_the_page_is_self_contained(tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    write_html(sample_report(), out)
    ours = without_plotly_bundle(out.read_text(encoding="utf-8"))
    assert not re.search(r"(?i)https?://|//[a-z0-9.-]+\.[a-z]{2,}/", ours)
    assert not re.search(r"(?i)<link\b|\bsrc\s*=|@import|url\(|@font-face", ours)
    assert ours.count("<script") == ours.count("</script>")


def test_the_checker_would_notice_an_outside_url() -> None:
    # A name with a URL is shown as text; the test above must still see it as a URL.
    report = sample_report()
    report["groups"][0]["by"]["cadence"] = "see https://cdn.example.com/x.js"
    ours = without_plotly_bundle(render_html(report))
    assert re.search(r"(?i)https?://", ours)


def test_each_chart_has_its_div_and_one_plot_call() -> None:
    page = render_html(sample_report())
    for name in CHART_NAMES:
        assert page.count(f'data-chart="{name}"') == 1
    assert len(re.findall(r"\bPlotly\.newPlot\(\s*\"", page)) == len(CHART_NAMES)
    assert "document.body.dataset.chartsDrawn" in page


def test_values_from_the_data_are_escaped() -> None:
    report = sample_report()
    report["sla"][0]["cadence"] = HOSTILE
    report["ab"][0]["cadence"] = HOSTILE
    report["ab"][0]["arms"][0]["variant"] = HOSTILE
    report["groups"][0]["by"]["cadence"] = HOSTILE
    report["ratings"]["by_recruiter"][HOSTILE] = {"count": 1, "mean": 5.0}
    report["tasks"]["by_owner"][0]["owner"] = HOSTILE
    page = render_html(report)
    assert HOSTILE not in page
    # In tables: HTML-escaped text; in the charts' JSON: entities Plotly shows as text.
    assert page.count("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;") >= 6
    assert "&lt;script&gt;alert('x')&lt;\\u002fscript&gt;" in page


def test_kpis_tables_and_small_cells_are_shown() -> None:
    page = render_html(sample_report())
    assert "28.6 %" in page  # 118 of 412 people replied
    assert "96.2 %" in page  # acknowledge: 231 met of 240 due
    assert "collecting 58/100" in page
    assert "winner: b" in page
    assert re.search(
        r"<tr class=\"small\">\s*<td class=\"name\">interview-follow-up</td><td class=\"name\">sms †</td>",
        page,
    )
    assert "37 ratings, mean 4.27 of 5." in page
    assert "Dana Reyes" in page and "7.9 d" in page  # the oldest task: 190.5 h


def test_an_empty_window_renders_with_notes() -> None:
    page = render_html(empty_report())
    assert page.count("no data in this window") == len(CHART_NAMES) - 1
    assert "no A\\u002fB tests in this window" in page  # Plotly's JSON escapes "/"
    assert "No ratings in this window." in page
    assert "No step with a deadline was due in this window." in page


def test_write_replaces_the_file_atomically(tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    out.write_text("old", encoding="utf-8")
    write_html(empty_report(), out)
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temporary file left


def test_a_report_the_page_cannot_draw_leaves_the_old_file(tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    out.write_text("old", encoding="utf-8")
    report = sample_report()
    del report["heatmap"]
    with pytest.raises(ValueError, match="report has no heatmap"):
        write_html(report, out)
    assert out.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_an_unwritable_path_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder" / "report.html"
    with pytest.raises(
        InputError,
        match=r"cannot write the HTML report to .*no-such-folder/report\.html: folder .* does not exist",
    ):
        write_html(empty_report(), missing)
    with pytest.raises(InputError, match="it is a folder"):
        write_html(empty_report(), tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    with pytest.raises(InputError, match=r"file/report\.html"):
        write_html(empty_report(), blocker / "report.html")
