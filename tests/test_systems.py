"""``outreach config check`` names the systems a setup uses: sources, channels, task
channels and webhook routes, on or off and why, with the cadence file's use of each."""

from __future__ import annotations

import os
from pathlib import Path

from outreach.cadence import load_cadence_file
from outreach.settings import Settings
from outreach.systems import systems

CONFIG = """\
policy:
  default_timezone: America/New_York
  channel_order: [email, sms]
stage_map:
  lever: {"Phone screen": screening}
  referrals: {"Intro": applied}
cadences:
  - id: screen
    trigger: {stage: screening}
    steps:
      - {id: text, after: 0m, channel: sms, template: t}
      - {id: note, after: 1d, channel: email, template: t}
      - {id: connect, after: 2d, channel: linkedin, template: t}
"""


def _config(tmp_path: Path):
    (tmp_path / "templates").mkdir(exist_ok=True)
    (tmp_path / "templates" / "t.sms.j2").write_text("Hi {{ candidate.first_name }}")
    (tmp_path / "templates" / "t.email.j2").write_text("Subject: Hi\n\nHello")
    (tmp_path / "templates" / "t.task.j2").write_text("Connect with {{ candidate.first_name }}")
    path = tmp_path / "cadences.yaml"
    path.write_text(CONFIG)
    return load_cadence_file(path)


def _settings(**env: str) -> Settings:
    return Settings(_env_file=None, **env)  # type: ignore[call-arg]


def _by_name(lines):
    return {line.name: line for line in lines}


def test_nothing_configured_says_what_is_missing_and_which_steps_need_it(
    tmp_path: Path, monkeypatch
) -> None:
    for name in list(os.environ):
        if name.split("_")[0] in {"SENDGRID", "TWILIO", "LEVER", "OUTREACH", "MAILCHIMP"}:
            monkeypatch.delenv(name)
    lines = _by_name(systems(_settings(), _config(tmp_path)))
    sms = lines["sms"]
    assert not sms.on and "TWILIO_ACCOUNT_SID" in sms.detail
    assert sms.note == "steps that may use it: screen.text"
    assert lines["email"].note == "steps that may use it: screen.note"
    assert not lines["lever"].on and lines["lever"].kind == "source"
    # A stage_map for a source no connector serves: imported rows carry it.
    assert "imported rows whose source is 'referrals'" in lines["referrals"].detail
    # Task channels the file uses are always on; one it does not use is not listed.
    assert lines["linkedin"].kind == "tasks" and lines["linkedin"].on
    assert "call" not in lines
    hooks = {n: line for n, line in lines.items() if line.kind == "webhook"}
    assert len(hooks) == 7 and not any(line.on for line in hooks.values())
    assert hooks["/webhooks/lever"].detail == "no LEVER_WEBHOOK_TOKEN: refused"


def test_configured_systems_are_on_and_secrets_never_shown(tmp_path: Path, monkeypatch) -> None:
    for name in list(os.environ):
        if name.split("_")[0] in {"SENDGRID", "TWILIO", "LEVER", "OUTREACH", "MAILCHIMP"}:
            monkeypatch.delenv(name)
    secrets = {
        "LEVER_API_KEY": "lever-secret-1",
        "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
        "TWILIO_AUTH_TOKEN": "twilio-secret-2",
        "TWILIO_FROM_NUMBER": "+15005550006",
        "SENDGRID_INBOUND_TOKEN": "inbound-secret-3",
        "MAILCHIMP_WEBHOOK_KEY": "mandrill-secret-4",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    lines = _by_name(systems(_settings(), _config(tmp_path)))
    assert lines["lever"].on and lines["sms"].on and lines["sms"].note is None
    assert lines["/webhooks/sendgrid/inbound"].on
    # Twilio and Mailchimp sign over the URL they posted to: without OUTREACH_PUBLIC_URL
    # their routes cannot verify anything.
    assert not lines["/webhooks/twilio/*"].on
    assert "OUTREACH_PUBLIC_URL" in lines["/webhooks/mailchimp"].detail
    monkeypatch.setenv("OUTREACH_PUBLIC_URL", "https://hooks.example.com")
    lines = _by_name(systems(_settings(), _config(tmp_path)))
    assert lines["/webhooks/twilio/*"].on and lines["/webhooks/mailchimp"].on
    # Lever's webhooks name an opportunity the engine reads with the API key.
    monkeypatch.setenv("LEVER_WEBHOOK_TOKEN", "lever-hook-secret-5")
    assert _by_name(systems(_settings(), _config(tmp_path)))["/webhooks/lever"].on
    monkeypatch.delenv("LEVER_API_KEY")
    lever = _by_name(systems(_settings(), _config(tmp_path)))["/webhooks/lever"]
    assert not lever.on and "LEVER_API_KEY" in lever.detail
    text = repr(list(lines.values()))
    assert not any(value in text for value in secrets.values() if "secret" in value)


def test_config_check_prints_the_systems(cli, tmp_path: Path) -> None:
    _config(tmp_path)
    result = cli(
        "config",
        "check",
        str(tmp_path / "cadences.yaml"),
        env={"TWILIO_AUTH_TOKEN": "t-secret", "COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "systems" in result.stdout
    assert "steps that may use it: screen.text" in result.stdout
    assert "/webhooks/greenhouse" in result.stdout
    assert "t-secret" not in result.output
