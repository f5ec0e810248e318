"""The report's Plotly figures: values taken from the report dict, empty data still drawn."""

from __future__ import annotations

import pytest
from sample_report import empty_report, sample_report

from outreach.reports.charts import CHART_NAMES, NO_DATA, ab_status, build_figures, p_best_text
from outreach.reports.stats import wilson


def annotations(fig) -> list[str]:
    return [annotation.text for annotation in fig.layout.annotations]


def test_every_chart_is_built_in_page_order() -> None:
    figures = build_figures(sample_report())
    assert tuple(figures) == CHART_NAMES
    for fig in figures.values():
        assert NO_DATA not in annotations(fig)


def test_funnel_follows_the_totals() -> None:
    fig = build_figures(sample_report())["funnel"]
    assert list(fig.data[0].x) == [1034, 998, 540, 131, 57]


def test_response_by_step_has_wilson_error_bars_and_marks_small_cells() -> None:
    fig = build_figures(sample_report())["response_by_step"]
    bar = fig.data[0]
    # The step with nothing sent has no rate and no bar.
    assert list(bar.x) == [
        "applied-acknowledge / acknowledge",
        "applied-acknowledge / check-in (email)",
        "interview-follow-up / thank-you",
        "interview-follow-up / check-in (sms) †",
    ]
    assert bar.y[0] == pytest.approx(31 / 240)
    low, high = wilson(31, 240)
    assert bar.error_y.array[0] == pytest.approx(high - 31 / 240)
    assert bar.error_y.arrayminus[0] == pytest.approx(31 / 240 - low)
    colours = list(bar.marker.color)
    assert colours[3] != colours[0]  # the small cell is drawn paler


def test_heatmap_places_cells_by_day_and_hour() -> None:
    report = sample_report()
    report["heatmap"] = [
        {"dow": 0, "hour": 9, "sent": 10, "replies": 3, "rate": 0.3},
        {"dow": 6, "hour": 23, "sent": 4, "replies": 1, "rate": 0.25},
    ]
    z = build_figures(report)["heatmap"].data[0].z
    assert z[0][9] == 0.3 and z[6][23] == 0.25
    assert z[0][10] is None and z[3][12] is None


def test_heatmap_refuses_a_cell_outside_the_week() -> None:
    report = sample_report()
    report["heatmap"] = [{"dow": 7, "hour": 9, "sent": 1, "replies": 0, "rate": 0.0}]
    with pytest.raises(ValueError, match=r"heatmap\[0\]: dow must be 0..6"):
        build_figures(report)


def test_sla_stacks_met_late_never() -> None:
    fig = build_figures(sample_report())["sla"]
    assert [trace.name for trace in fig.data] == ["met", "late", "never"]
    assert list(fig.data[0].x) == [231, 98, 0]
    assert list(fig.data[1].x) == [6, 3, 0]
    assert list(fig.data[2].x) == [3, 6, 0]
    assert fig.layout.barmode == "stack"


def test_time_to_response_labels_its_buckets() -> None:
    bar = build_figures(sample_report())["time_to_response"].data[0]
    assert bar.x[0] == "0–1 h" and bar.x[-1] == "336 h +"
    assert list(bar.y) == [12, 21, 19, 24, 20, 14, 9, 7, 5]


def test_ab_panel_shows_each_entry_with_status_and_p_best() -> None:
    report = sample_report()
    fig = build_figures(report)["ab"]
    titles = annotations(fig)
    assert titles[0].startswith("interview-follow-up / thank-you · replies · winner: b (p = ")
    assert titles[2] == "applied-acknowledge / check-in · replies · collecting 58/100"
    assert len(fig.data) == 3
    first = report["ab"][0]["arms"]
    assert [arm["p_best"] for arm in first] == [
        pytest.approx(0, abs=0.01),
        pytest.approx(1, abs=0.01),
    ]
    assert list(fig.data[0].y) == ["a · P(best) < 1 %", "b · P(best) > 99 %"]
    assert list(fig.data[1].y)[-1].startswith("holdout (held back) · P(best) ")


def test_p_best_text_never_rounds_a_live_arm_away() -> None:
    assert [p_best_text(p) for p in (0.0, 0.004, 0.5, 0.996, 1.0)] == [
        "0 %",
        "< 1 %",
        "50 %",
        "> 99 %",
        "100 %",
    ]


def test_ab_status_texts() -> None:
    entry = {"status": "collecting", "min_sample": 100, "arms": [{"sent": 40}, {"sent": 99}]}
    assert ab_status(entry) == "collecting 40/100"
    entry = {"status": "no_difference", "p_value": 0.2345, "test": "z", "arms": []}
    assert ab_status(entry) == "no difference (p = 0.234, z)"


def test_an_empty_window_still_draws_every_chart_with_a_note() -> None:
    figures = build_figures(empty_report())
    assert tuple(figures) == CHART_NAMES
    for name, fig in figures.items():
        note = "no A/B tests in this window" if name == "ab" else NO_DATA
        assert annotations(fig) == [note], name


def test_names_from_the_data_are_text_not_plotly_markup() -> None:
    report = sample_report()
    report["steps"][0]["cadence"] = '<a href="https://example.com">x</a>'
    bar = build_figures(report)["response_by_step"].data[0]
    assert bar.x[0] == '&lt;a href="https://example.com"&gt;x&lt;/a&gt; / acknowledge'


def test_a_missing_key_is_named() -> None:
    report = sample_report()
    del report["steps"]
    with pytest.raises(ValueError, match="report has no steps"):
        build_figures(report)
    report = sample_report()
    del report["totals"]["delivered"]
    with pytest.raises(ValueError, match=r"report has no totals\.delivered"):
        build_figures(report)
