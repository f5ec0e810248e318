"""ActiveCampaign settings: on with both variables, off naming what is missing, token secret."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors.activecampaign import ActiveCampaign
from connectors.factory import build_connectors
from outreach.clock import FixedClock
from outreach.settings import Settings

NAMES = ("ACTIVECAMPAIGN_API_URL", "ACTIVECAMPAIGN_API_TOKEN")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)


def activecampaign(settings: Settings):
    return {i.name: i for i in settings.integrations()}["activecampaign"]


def test_off_names_each_missing_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    item = activecampaign(Settings())
    assert item.kind == "source" and not item.on
    assert "ACTIVECAMPAIGN_API_URL and ACTIVECAMPAIGN_API_TOKEN" in item.detail
    monkeypatch.setenv("ACTIVECAMPAIGN_API_URL", "https://acme.api-us1.com")
    item = activecampaign(Settings())
    assert not item.on and item.detail == "no ACTIVECAMPAIGN_API_TOKEN"


def test_on_builds_the_connector_and_keeps_the_token_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ACTIVECAMPAIGN_API_URL", "https://acme.api-us1.com")
    monkeypatch.setenv("ACTIVECAMPAIGN_API_TOKEN", "very-secret-token")
    settings = Settings()
    assert activecampaign(settings).on
    assert "very-secret-token" not in repr(settings) + str(settings.integrations())
    built, off = build_connectors(
        settings, ["activecampaign"], FixedClock(datetime(2026, 11, 25, 12, tzinfo=UTC))
    )
    assert off == {} and isinstance(built[0], ActiveCampaign)
    assert str(built[0].client.base_url) == "https://acme.api-us1.com"
    built[0].close()
