"""A full-page PNG of an HTML report, taken by headless Chromium (for README's screenshot).

    python -m outreach.reports.screenshot report.html report.png [--width 1280]

The browser runs offline (every request goes to a dead proxy and no host name resolves), waits
until the page says all its charts have drawn (``document.body.dataset.chartsDrawn``), and
captures the whole page, not only the first screen. Needs the ``chromium`` and
``chromium-driver`` packages (Debian) and Selenium; exit 2 names what is missing.
"""

from __future__ import annotations

import argparse
import base64
import shutil
import sys
from pathlib import Path

from outreach.errors import InputError

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DEAD_PROXY = "127.0.0.1:9"
"""The discard port on loopback: nothing listens there, so a proxied request fails at once."""


def find_browser() -> tuple[str, str]:
    """Paths of a Chromium binary and its chromedriver; InputError naming what is missing."""
    browser = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    driver = shutil.which("chromedriver")
    missing = [
        what
        for what, path in (("chromium", browser), ("chromedriver (chromium-driver)", driver))
        if path is None
    ]
    if missing:
        raise InputError(f"headless browser not found: install {' and '.join(missing)}")
    return browser, driver  # type: ignore[return-value]


def _require_selenium() -> None:
    try:
        import selenium  # noqa: F401
    except ImportError as exc:
        raise InputError("Selenium is not installed: pip install 'outreach-engine[test]'") from exc


def offline_options(width: int = 1280, height: int = 900):
    """Chrome options for a headless browser that cannot reach any network."""
    _require_selenium()
    from selenium.webdriver.chrome.options import Options

    options = Options()
    options.binary_location = find_browser()[0]
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        f"--window-size={width},{height}",
        f"--proxy-server={DEAD_PROXY}",
        "--proxy-bypass-list=<-loopback>",
        "--host-resolver-rules=MAP * ~NOTFOUND",
    ):
        options.add_argument(argument)
    return options


def start_browser(options):
    """A Chrome WebDriver on the system chromedriver (Selenium Manager never downloads one)."""
    _require_selenium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    return webdriver.Chrome(service=Service(executable_path=find_browser()[1]), options=options)


def wait_for_charts(driver, timeout: float) -> int:
    """Wait until the report page says all charts drew; their number. Raises on a chart error."""
    from selenium.webdriver.support.ui import WebDriverWait

    def settled(drv):
        state = drv.execute_script(
            "return [document.body && document.body.dataset.chartsDrawn,"
            " document.body && document.body.dataset.chartsError];"
        )
        return state if any(state) else False

    drawn, error = WebDriverWait(driver, timeout).until(settled)
    if error:
        raise RuntimeError(f"a chart failed to draw: {error}")
    return int(drawn)


def screenshot(
    report: Path,
    out: Path,
    width: int = 1280,
    timeout: float = 60,
    max_height: int | None = None,
) -> int:
    """Write a full-page PNG of ``report`` to ``out`` (its top ``max_height`` CSS pixels when
    given); returns the number of charts drawn."""
    report = Path(report).resolve()
    if not report.is_file():
        raise InputError(f"no HTML report at {report}")
    out = Path(out)
    if not out.resolve().parent.is_dir():
        raise InputError(f"cannot write {out}: folder {out.resolve().parent} does not exist")
    driver = start_browser(offline_options(width))
    try:
        driver.get(report.as_uri())
        drawn = wait_for_charts(driver, timeout)
        content = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        height = int(content["height"]) + 1
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        capture: dict[str, object] = {"format": "png", "captureBeyondViewport": True}
        if max_height is not None and max_height < height:
            capture["clip"] = {"x": 0, "y": 0, "width": width, "height": max_height, "scale": 1}
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", capture)
    finally:
        driver.quit()
    try:
        out.write_bytes(base64.b64decode(shot["data"]))
    except OSError as exc:
        raise InputError(f"cannot write {out}: {exc.strerror}") from exc
    return drawn


def main(argv: list[str] | None = None) -> int:
    """Command line: ``REPORT.html OUT.png [--width N]``; exit 0 done, 2 bad input."""
    parser = argparse.ArgumentParser(
        prog="python -m outreach.reports.screenshot",
        description="Full-page PNG of an HTML report, by headless Chromium, offline.",
    )
    parser.add_argument("report", type=Path, help="the HTML report (outreach report --format html)")
    parser.add_argument("out", type=Path, help="where to write the PNG")
    parser.add_argument("--width", type=int, default=1280, help="page width in CSS pixels")
    parser.add_argument("--timeout", type=float, default=60, help="seconds to wait for the charts")
    parser.add_argument(
        "--max-height", type=int, default=None, help="keep only the page's top N CSS pixels"
    )
    args = parser.parse_args(argv)
    if args.width < 320:
        parser.error(f"--width must be at least 320, got {args.width}")
    if args.max_height is not None and args.max_height < 100:
        parser.error(f"--max-height must be at least 100, got {args.max_height}")
    try:
        drawn = screenshot(args.report, args.out, args.width, args.timeout, args.max_height)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({drawn} charts)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
