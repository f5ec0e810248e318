"""Settings: contract variable names, .env support, secrets never shown, sources off."""

from __future__ import annotations

from pathlib import Path

import pytest

from outreach.settings import Settings

CONTRACT_VARIABLES = [
    "OUTREACH_DATABASE_URL",
    "OUTREACH_CONFIG",
    "OUTREACH_PUBLIC_URL",
    "GREENHOUSE_CLIENT_ID",
    "GREENHOUSE_CLIENT_SECRET",
    "GREENHOUSE_USER_ID",
    "GREENHOUSE_BASE_URL",
    "GREENHOUSE_AUTH_URL",
    "GREENHOUSE_API_KEY",
    "LEVER_API_KEY",
    "LEVER_BASE_URL",
    "LEVER_USER_ID",
    "HUBSPOT_ACCESS_TOKEN",
    "HUBSPOT_BASE_URL",
    "BULLHORN_CLIENT_ID",
    "BULLHORN_CLIENT_SECRET",
    "BULLHORN_REFRESH_TOKEN",
    "BULLHORN_USERNAME",
    "BULLHORN_PASSWORD",
    "BULLHORN_AUTH_URL",
    "BULLHORN_REST_URL",
    "BULLHORN_TOKEN_FILE",
    "SENDGRID_API_KEY",
    "SENDGRID_BASE_URL",
    "SENDGRID_FROM_EMAIL",
    "SENDGRID_WEBHOOK_PUBLIC_KEY",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_FROM_NUMBER",
    "TWILIO_MESSAGING_SERVICE_SID",
    "TWILIO_BASE_URL",
    "OUTREACH_REDIS_URL",
]
SECRETS = {
    "GREENHOUSE_CLIENT_SECRET",
    "GREENHOUSE_API_KEY",
    "LEVER_API_KEY",
    "HUBSPOT_ACCESS_TOKEN",
    "BULLHORN_CLIENT_SECRET",
    "BULLHORN_REFRESH_TOKEN",
    "BULLHORN_PASSWORD",
    "SENDGRID_API_KEY",
    "SENDGRID_WEBHOOK_PUBLIC_KEY",
    "TWILIO_AUTH_TOKEN",
    "OUTREACH_REDIS_URL",  # may carry a password
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in CONTRACT_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_every_contract_variable_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CONTRACT_VARIABLES:
        monkeypatch.setenv(name, f"value-of-{name.lower()}")
    settings = Settings()
    for name in CONTRACT_VARIABLES:
        value = getattr(settings, name.lower().removeprefix("outreach_"))
        if name in SECRETS:
            assert value.get_secret_value() == f"value-of-{name.lower()}"
        else:
            assert value == f"value-of-{name.lower()}"


def test_defaults() -> None:
    settings = Settings()
    assert settings.database_url == "sqlite:///outreach.db"
    assert settings.config == "config/cadences.yaml"
    assert settings.public_url is None
    assert settings.greenhouse_auth_url == "https://auth.greenhouse.io/token"
    assert settings.greenhouse_v3_base_url == "https://harvest.greenhouse.io/v3"
    assert settings.greenhouse_v1_base_url == "https://harvest.greenhouse.io/v1"
    assert settings.lever_base_url == "https://api.lever.co/v1"
    assert settings.hubspot_base_url == "https://api.hubapi.com"
    assert settings.sendgrid_base_url == "https://api.sendgrid.com"
    assert settings.twilio_base_url == "https://api.twilio.com"
    assert settings.config_path.is_file()


def test_dotenv_file_is_read_and_blank_means_unset(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "OUTREACH_DATABASE_URL=sqlite:///from-dotenv.db\nLEVER_API_KEY=\nHUBSPOT_ACCESS_TOKEN=pat-1\n"
    )
    settings = Settings()
    assert settings.database_url == "sqlite:///from-dotenv.db"
    assert settings.lever_api_key is None
    assert settings.hubspot_access_token.get_secret_value() == "pat-1"


def test_prefixed_or_lowercase_names_are_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("lever_api_key", "nope")
    monkeypatch.setenv("OUTREACH_LEVER_API_KEY", "nope")
    assert Settings().lever_api_key is None


def test_secrets_never_appear_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SECRETS:
        monkeypatch.setenv(name, "super-secret-value")
    settings = Settings()
    assert "super-secret-value" not in repr(settings)
    assert "super-secret-value" not in str(settings.model_dump())
    assert "super-secret-value" not in str(settings.integrations())


def test_without_credentials_everything_is_off_not_an_error() -> None:
    items = {i.name: i for i in Settings().integrations()}
    assert set(items) == {
        "greenhouse",
        "lever",
        "hubspot",
        "bullhorn",
        "activecampaign",
        "email",
        "sms",
    }
    assert not any(i.on for i in items.values())
    assert "GREENHOUSE_API_KEY" in items["greenhouse"].detail
    assert "TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID" in items["sms"].detail


def test_greenhouse_v3_wins_over_legacy_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GREENHOUSE_API_KEY", "legacy")
    assert {i.name: i for i in Settings().integrations()}["greenhouse"].detail.startswith(
        "Harvest v1"
    )
    for name in ("GREENHOUSE_CLIENT_ID", "GREENHOUSE_CLIENT_SECRET", "GREENHOUSE_USER_ID"):
        monkeypatch.setenv(name, "x")
    assert {i.name: i for i in Settings().integrations()}["greenhouse"].detail.startswith(
        "Harvest v3"
    )


def test_incomplete_v3_credentials_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GREENHOUSE_CLIENT_ID", "x")
    greenhouse = {i.name: i for i in Settings().integrations()}["greenhouse"]
    assert not greenhouse.on and "GREENHOUSE_USER_ID" in greenhouse.detail


def test_channels_on_with_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.x")
    monkeypatch.setenv("SENDGRID_FROM_EMAIL", "talent@example.com")
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC1")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "t")
    monkeypatch.setenv("TWILIO_MESSAGING_SERVICE_SID", "MG1")
    items = {i.name: i for i in Settings().integrations()}
    assert items["email"].on and items["sms"].on


def test_values_are_stripped_so_a_pasted_newline_never_reaches_a_header() -> None:
    settings = Settings(_env_file=None, SENDGRID_API_KEY="SG.key\n", SENDGRID_FROM_EMAIL=" a@b.co ")
    assert settings.sendgrid_api_key is not None
    assert settings.sendgrid_api_key.get_secret_value() == "SG.key"
    assert settings.sendgrid_from_email == "a@b.co"


def test_sdk_request_logs_stay_off_even_when_verbose() -> None:
    import logging

    from typer.testing import CliRunner

    from outreach.cli import app

    assert CliRunner().invoke(app, ["--verbose", "--version"]).exit_code == 0
    for sdk in ("python_http_client", "twilio", "sendgrid"):
        assert logging.getLogger(sdk).getEffectiveLevel() >= logging.WARNING
    assert logging.getLogger("httpx").getEffectiveLevel() == logging.DEBUG


REPLY_VARIABLES = {
    "OUTREACH_REPLY_TO": "replies@reply.example.com",
    "OUTREACH_IMAP_HOST": "imap.example.com",
    "OUTREACH_IMAP_PORT": "1143",
    "OUTREACH_IMAP_USER": "replies",
    "OUTREACH_IMAP_PASSWORD": "imap-secret-value",
    "OUTREACH_IMAP_FOLDER": "Replies",
    "OUTREACH_IMAP_SSL": "false",
    "SENDGRID_INBOUND_TOKEN": "inbound-secret-value",
    "SENDGRID_INBOUND_PUBLIC_KEY": "inbound-key-value",
}


def test_the_reply_mailbox_and_inbound_parse_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in REPLY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (defaults.imap_host, defaults.imap_port, defaults.imap_folder, defaults.imap_ssl) == (
        None,
        993,
        "INBOX",
        True,
    )
    assert defaults.reply_to is None and defaults.sendgrid_inbound_token is None
    for name, value in REPLY_VARIABLES.items():
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.reply_to == "replies@reply.example.com"
    assert (settings.imap_host, settings.imap_port, settings.imap_user) == (
        "imap.example.com",
        1143,
        "replies",
    )
    assert settings.imap_folder == "Replies" and settings.imap_ssl is False
    assert settings.imap_password.get_secret_value() == "imap-secret-value"
    assert settings.sendgrid_inbound_token.get_secret_value() == "inbound-secret-value"
    shown = repr(settings) + str(settings)
    assert "imap-secret-value" not in shown and "inbound-secret-value" not in shown
    monkeypatch.setenv("OUTREACH_IMAP_PORT", "")
    assert Settings(_env_file=None).imap_port == 993  # type: ignore[call-arg]


def test_bullhorn_is_on_with_a_refresh_token_or_a_user(monkeypatch: pytest.MonkeyPatch) -> None:
    def bullhorn():
        return {i.name: i for i in Settings().integrations()}["bullhorn"]

    assert not bullhorn().on and "BULLHORN_REFRESH_TOKEN" in bullhorn().detail
    monkeypatch.setenv("BULLHORN_CLIENT_ID", "c")
    assert not bullhorn().on and bullhorn().detail.startswith("incomplete")
    monkeypatch.setenv("BULLHORN_CLIENT_SECRET", "s")
    monkeypatch.setenv("BULLHORN_USERNAME", "api.user")
    assert not bullhorn().on  # a user without a password
    monkeypatch.setenv("BULLHORN_PASSWORD", "pw")
    assert bullhorn().on and "API user" in bullhorn().detail
    monkeypatch.setenv("BULLHORN_REFRESH_TOKEN", "rt-distinct-secret")
    assert bullhorn().on and "refresh token" in bullhorn().detail
    settings = Settings()
    assert settings.bullhorn_auth_url == "https://auth.bullhornstaffing.com/oauth"
    assert settings.bullhorn_token_file == ".bullhorn-token"
    assert "rt-distinct-secret" not in repr(settings)
