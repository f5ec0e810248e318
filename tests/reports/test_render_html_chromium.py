"""The HTML report in a real headless Chromium: it draws every chart, offline, without errors.

Needs the Debian ``chromium`` and ``chromium-driver`` packages. Without them the tests are
skipped with the reason, except under CI (``CI`` set), where a missing browser is a failure:
``.ci/run`` installs it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from headless import browser_or_skip
from sample_report import empty_report, sample_report

from outreach.reports.render_html import write_html
from outreach.reports.screenshot import offline_options, start_browser, wait_for_charts

LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")
HOSTILE = "<img src=x onerror=alert(1)><script>alert(2)</script>"


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module, offline, keeping browser and network logs."""
    browser_or_skip()
    options = offline_options(1280, 900)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = start_browser(options)
    yield driver
    driver.quit()


def open_page(driver, path: Path) -> None:
    """Load ``path`` with the logs of earlier pages drained first."""
    driver.get_log("browser")
    driver.get_log("performance")
    driver.get(path.as_uri())


def requested_urls(driver) -> list[str]:
    """Every URL the page asked for (Chrome DevTools ``Network.requestWillBeSent``)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def severe_entries(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def chart_sizes(driver) -> list[dict]:
    return driver.execute_script(
        """
        return Array.from(document.querySelectorAll('[data-chart]')).map(function (div) {
          var svg = div.querySelector('svg.main-svg');
          var box = svg ? svg.getBoundingClientRect() : null;
          var outer = div.getBoundingClientRect();
          return {name: div.dataset.chart, svg: !!svg,
                  width: box ? box.width : 0, height: box ? box.height : 0,
                  room: outer.width};
        });
        """
    )


@pytest.mark.parametrize("make", [sample_report, empty_report], ids=["sample", "empty"])
def test_the_report_draws_every_chart_offline_without_errors(browser, tmp_path: Path, make) -> None:
    page = tmp_path / "report.html"
    write_html(make(), page)
    open_page(browser, page)
    drawn = wait_for_charts(browser, timeout=60)

    charts = chart_sizes(browser)
    assert drawn == len(charts) == 6
    for chart in charts:
        assert chart["svg"], f"{chart['name']}: no svg.main-svg"
        assert chart["width"] > 100 and chart["height"] > 100, chart
        assert chart["width"] <= chart["room"] + 1, f"{chart['name']} overflows its box: {chart}"
    assert severe_entries(browser) == []
    urls = requested_urls(browser)
    assert urls, "the performance log recorded no request at all (not even the page)"
    assert [url for url in urls if not url.startswith(LOCAL_SCHEMES)] == []


def test_names_show_as_text_and_run_nothing(browser, tmp_path: Path) -> None:
    report = sample_report()
    report["sla"][0]["cadence"] = HOSTILE
    report["ab"][0]["arms"][0]["variant"] = HOSTILE
    report["steps"][0]["cadence"] = HOSTILE
    page = tmp_path / "report.html"
    write_html(report, page)
    open_page(browser, page)
    wait_for_charts(browser, timeout=60)
    cells = browser.execute_script(
        "return Array.from(document.querySelectorAll('td')).map(function (td) {"
        " return td.textContent; });"
    )
    assert f"{HOSTILE} / acknowledge" in cells
    assert HOSTILE in cells
    labels = browser.execute_script(
        "return Array.from(document.querySelectorAll('[data-chart=response_by_step] .xtick text'))"
        ".map(function (t) { return t.textContent; });"
    )
    assert f"{HOSTILE} / acknowledge" in labels
    assert browser.execute_script("return document.querySelectorAll('img').length") == 0
    assert severe_entries(browser) == []


def test_the_checks_catch_an_outside_request_and_a_console_error(browser, tmp_path: Path) -> None:
    # The same checks on a page that breaks the rules must fail, or they prove nothing.
    page = tmp_path / "bad.html"
    page.write_text(
        "<!DOCTYPE html><html><body>"
        '<img src="https://cdn.example.com/pixel.png">'
        '<script>console.error("broken")</script>'
        "</body></html>",
        encoding="utf-8",
    )
    open_page(browser, page)
    outside = [url for url in requested_urls(browser) if not url.startswith(LOCAL_SCHEMES)]
    assert outside == ["https://cdn.example.com/pixel.png"]
    assert any("broken" in message for message in severe_entries(browser))
