"""``OUTREACH_EMAIL_PROVIDER`` chooses SendGrid or Mailchimp Transactional for email."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from channels.email import SendGridEmail
from channels.factory import build_channels
from channels.mailchimp import MailchimpEmail
from outreach.cadence import load_cadence_file
from outreach.clock import SystemClock
from outreach.paths import default_config_dir
from outreach.settings import Settings

MAILCHIMP = {
    "OUTREACH_EMAIL_PROVIDER": "mailchimp",
    "MAILCHIMP_TRANSACTIONAL_API_KEY": "md-secret-value",
    "MAILCHIMP_TRANSACTIONAL_BASE_URL": "http://127.0.0.1:9/api/1.3",
    "MAILCHIMP_FROM_EMAIL": "jobs@acme.example",
    "MAILCHIMP_WEBHOOK_KEY": "webhook-secret-value",
}
SENDGRID = {"SENDGRID_API_KEY": "SG.secret", "SENDGRID_FROM_EMAIL": "jobs@acme.example"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in [*MAILCHIMP, *SENDGRID]:
        monkeypatch.delenv(name, raising=False)


def email(settings: Settings):
    return next(i for i in settings.integrations() if i.name == "email")


def test_sendgrid_is_the_default_provider() -> None:
    settings = Settings(_env_file=None, **SENDGRID, MAILCHIMP_TRANSACTIONAL_API_KEY="md-x")
    assert settings.email_provider == "sendgrid"
    assert email(settings).on and email(settings).detail == "SendGrid"


def test_mailchimp_variables_are_read_and_secrets_hidden(monkeypatch) -> None:
    for name, value in MAILCHIMP.items():
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)
    assert settings.email_provider == "mailchimp"
    assert settings.mailchimp_transactional_api_key.get_secret_value() == "md-secret-value"
    assert settings.mailchimp_webhook_key.get_secret_value() == "webhook-secret-value"
    assert settings.mailchimp_transactional_base_url == "http://127.0.0.1:9/api/1.3"
    assert "secret-value" not in repr(settings)
    assert email(settings).on and email(settings).detail == "Mailchimp Transactional"


def test_the_base_url_defaults_to_mandrill_and_the_name_is_case_insensitive() -> None:
    settings = Settings(_env_file=None, OUTREACH_EMAIL_PROVIDER="MailChimp")
    assert settings.email_provider == "mailchimp"
    assert settings.mailchimp_transactional_base_url == "https://mandrillapp.com/api/1.3"


def test_mailchimp_without_its_key_is_off_naming_what_is_missing() -> None:
    settings = Settings(_env_file=None, **SENDGRID, OUTREACH_EMAIL_PROVIDER="mailchimp")
    item = email(settings)
    assert not item.on
    assert (
        "MAILCHIMP_TRANSACTIONAL_API_KEY" in item.detail and "MAILCHIMP_FROM_EMAIL" in item.detail
    )


def test_an_unknown_provider_is_refused() -> None:
    with pytest.raises(ValidationError, match="OUTREACH_EMAIL_PROVIDER"):
        Settings(_env_file=None, OUTREACH_EMAIL_PROVIDER="mailgun")


@pytest.mark.parametrize(("env", "kind"), [(MAILCHIMP, MailchimpEmail), (SENDGRID, SendGridEmail)])
def test_the_factory_builds_the_chosen_provider(env, kind) -> None:
    config = load_cadence_file(default_config_dir() / "cadences.yaml")
    settings = Settings(_env_file=None, **env)
    built, off = build_channels(settings, config, SystemClock(), timeout=1.0)
    try:
        assert isinstance(built["email"], kind) and "email" not in off
        assert "secret" not in repr(built["email"])
    finally:
        for channel in built.values():
            getattr(channel, "close", lambda: None)()
