"""Strict dynamic templates in ``outreach config check``: the SendGrid fake on loopback,
read through the real SDK, compared with the data the engine sends."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from outreach.dynamic_templates import DynamicTemplate, DynamicTemplateCheck
from outreach.errors import ConfigError, RetryableError
from outreach.sandbox.base import SandboxServer
from outreach.sandbox.sendgrid import FakeSendGrid
from outreach.templates import TemplateRenderError

KEY = "SG.sandbox-key"
OFFER = "d-0123456789abcdef0123456789abcdef"
NUDGE = "d-fedcba9876543210fedcba9876543210"

CONFIG = f"""\
policy:
  default_timezone: America/New_York
cadences:
  - id: offer
    trigger: {{stage: offer}}
    steps:
      - {{id: news, after: 0m, channel: email, template: news, sendgrid_template_id: {OFFER}}}
      - {{id: nudge, after: 2d, channel: email, template: news, sendgrid_template_id: {NUDGE}}}
"""

GOOD_HTML = """
<p>Hi {{candidate.first_name}},</p>
<p>{{#if job.title}}Your offer for {{job.title}} is ready.{{else}}Your offer is ready.{{/if}}</p>
{{#each candidate.tags}}<span>{{this}}</span>{{/each}}
<p>Note: {{insert candidate.custom.note "default=none"}} {{candidate.custom.start_date}}</p>
<p>{{recruiter.name}}, {{company.name}}</p>"""


@pytest.fixture
def sendgrid() -> Iterator[tuple[FakeSendGrid, SandboxServer]]:
    fake = FakeSendGrid(api_key=KEY)
    with SandboxServer(fake) as server:
        yield fake, server


def config_file(tmp_path: Path) -> Path:
    (tmp_path / "templates").mkdir(exist_ok=True)
    path = tmp_path / "cadences.yaml"
    path.write_text(CONFIG)
    return path


def env(server: SandboxServer) -> dict[str, str]:
    return {"SENDGRID_API_KEY": KEY, "SENDGRID_BASE_URL": server.url}


def test_config_check_lists_every_variable_the_data_never_provides(cli, tmp_path, sendgrid):
    fake, server = sendgrid
    fake.add_template(
        OFFER, name="Offer", subject="Offer for {{candidate.first_name}}", html_content=GOOD_HTML
    )
    fake.add_template(
        NUDGE,
        name="Nudge",
        subject="{{firstName}}, a reminder",
        html_content="<p>{{#if user.suspended}}x{{/if}}Salary: {{job.salary}}</p>\n<p>{{formatDate touch.at 'MMM D'}}</p>",
    )
    result = cli("config", "check", str(config_file(tmp_path)), env=env(server))
    assert result.exit_code == 2, result.stdout + result.stderr
    assert "1 problem(s) in templates" in result.stderr
    line = next(line for line in result.stderr.splitlines() if "never provides" in line)
    assert NUDGE in line
    assert "cadences[0].steps[1] (offer/nudge)" in line
    assert "'firstName' (subject line 1)" in line
    assert "'job.salary' (html_content line 1)" in line
    assert "'touch.at' (html_content line 2)" in line
    assert OFFER not in result.stderr
    assert "'user.suspended'" in result.stderr and "always empty or false" in result.stderr
    assert KEY not in result.stdout + result.stderr


def test_config_check_passes_when_every_variable_is_provided(cli, tmp_path, sendgrid):
    fake, server = sendgrid
    for template_id in (OFFER, NUDGE):
        fake.add_template(
            template_id, subject="Offer for {{candidate.first_name}}", html_content=GOOD_HTML
        )
    result = cli("config", "check", str(config_file(tmp_path)), env=env(server))
    assert result.exit_code == 0, result.stderr
    assert "2 dynamic templates" in result.stdout
    assert len([r for r in fake.requests if r.path.startswith("/v3/templates/")]) == 2


def test_an_unknown_template_id_is_a_configuration_error(cli, tmp_path, sendgrid):
    fake, server = sendgrid
    fake.add_template(OFFER, subject="x", html_content=GOOD_HTML)
    result = cli("config", "check", str(config_file(tmp_path)), env=env(server))
    assert result.exit_code == 2
    assert (
        f"(offer/nudge), sendgrid_template_id {NUDGE}: SendGrid has no template {NUDGE}"
        in result.stderr
    )


def test_without_credentials_dynamic_templates_are_not_checked_and_it_says_so(cli, tmp_path):
    result = cli("config", "check", str(config_file(tmp_path)))
    assert result.exit_code == 0, result.stderr
    assert result.stderr.count("not checked") == 1
    assert "set SENDGRID_API_KEY" in result.stderr


def test_sendgrid_unreachable_is_a_partial_failure(cli, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = cli(
        "config",
        "check",
        str(config_file(tmp_path)),
        env={"SENDGRID_API_KEY": KEY, "SENDGRID_BASE_URL": f"http://127.0.0.1:{port}"},
    )
    assert result.exit_code == 1
    assert "could not be read" in result.stderr and "cannot connect to SendGrid" in result.stderr


# -- the per-run check the tick uses ----------------------------------------------------------


def test_the_check_reads_each_template_once_and_names_what_is_missing() -> None:
    reads: list[str] = []

    def read(template_id: str) -> DynamicTemplate:
        reads.append(template_id)
        return DynamicTemplate(
            template_id,
            "Offer",
            "v2",
            subject="Hi {{candidate.first_name}}",
            html_content="{{job.title}}",
        )

    check = DynamicTemplateCheck(read)
    check.check(OFFER, {"candidate": {"first_name": "Ann"}, "job": {"title": "Engineer"}})
    with pytest.raises(TemplateRenderError) as info:
        check.check(OFFER, {"candidate": {"first_name": "Ann"}, "job": {}})
    assert info.value.template == OFFER
    assert "'job.title' (html_content line 1)" in info.value.reason
    assert "'Offer', active version 'v2'" in info.value.reason
    assert reads == [OFFER]


@pytest.mark.parametrize("error", [ConfigError("SendGrid 401"), RetryableError("SendGrid 503")])
def test_a_template_that_cannot_be_read_is_unavailable_once_per_run(error) -> None:
    from outreach.dynamic_templates import TemplateUnavailable

    reads: list[str] = []

    def read(template_id: str) -> DynamicTemplate:
        reads.append(template_id)
        raise error

    check = DynamicTemplateCheck(read)
    for _ in range(3):
        with pytest.raises(TemplateUnavailable, match=str(error)):
            check.check(OFFER, {})
    assert reads == [OFFER]
