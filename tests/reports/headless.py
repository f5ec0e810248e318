"""Whether the headless-browser tests can run here: skip with the reason, or fail under CI."""

from __future__ import annotations

import os

import pytest

from outreach.errors import InputError
from outreach.reports.screenshot import find_browser


def browser_or_skip() -> None:
    """Skip (or fail when ``CI`` is set) if Selenium, Chromium or chromedriver is missing."""
    try:
        import selenium  # noqa: F401

        find_browser()
    except (ImportError, InputError) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the headless browser: {exc}")
        pytest.skip(f"{exc} (apt-get install chromium chromium-driver; required when CI is set)")
