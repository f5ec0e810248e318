"""Shared fixtures: a throwaway database per test (SQLite, or PostgreSQL when asked).

``OUTREACH_TEST_DATABASE=postgresql`` runs every store test against a fresh database on
the PostgreSQL server at ``OUTREACH_TEST_POSTGRES_URL`` (default: the local server, trust
auth); each test gets its own database, dropped afterwards.
"""

from __future__ import annotations

import http.client
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine
from throwaway_db import BACKEND, throwaway_database
from typer.testing import CliRunner

from outreach.clock import FixedClock
from outreach.sandbox.base import FAULT_HEADER
from outreach.store import make_engine, upgrade

REPO = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


def pytest_report_header(config) -> str:
    """Say which database the store tests use."""
    return f"outreach test database: {BACKEND}"


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database that exists only for this test."""
    with throwaway_database(tmp_path) as url:
        yield url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on a freshly migrated database."""
    eng = make_engine(database_url)
    upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def clock() -> FixedClock:
    """A clock standing at Wednesday 2026-11-25 15:00 UTC."""
    return FixedClock(NOW)


@pytest.fixture
def cli(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch):
    """Run the ``outreach`` CLI in a clean working directory against the test database."""
    from outreach.cli import app

    monkeypatch.chdir(tmp_path)
    prefixes = (
        "OUTREACH_", "GREENHOUSE_", "LEVER_", "HUBSPOT_", "BULLHORN_", "ACTIVECAMPAIGN_",
        "MAILCHIMP_", "SENDGRID_", "TWILIO_",
    )  # fmt: skip
    keep = ("OUTREACH_TEST_DATABASE", "OUTREACH_TEST_POSTGRES_URL")
    for name in list(os.environ):
        if name.startswith(prefixes) and name not in keep:
            monkeypatch.delenv(name)
    monkeypatch.setenv("OUTREACH_DATABASE_URL", database_url)
    runner = CliRunner()

    def run(*args: str, env: dict[str, str] | None = None):
        return runner.invoke(app, list(args), env=env, catch_exceptions=False)

    return run


@pytest.fixture
def lost_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Answers a sandbox fake marks as lost (a ``timeout`` fault) time out in the client.

    The fake has processed the request; reading the answer then raises ``TimeoutError``
    where a socket read that waited too long would (``http.client``, under urllib and
    urllib3 alike, so the SendGrid and Twilio SDKs see their own timeout errors). Nothing
    waits: pair it with ``faults.timeouts(n, seconds=0)``.
    """
    begin = http.client.HTTPResponse.begin

    def begin_or_time_out(response: http.client.HTTPResponse) -> None:
        begin(response)
        if response.getheader(FAULT_HEADER) == "timeout":
            raise TimeoutError("timed out")

    monkeypatch.setattr(http.client.HTTPResponse, "begin", begin_or_time_out)
