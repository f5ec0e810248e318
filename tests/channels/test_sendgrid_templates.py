"""Reading dynamic templates: the real SDK against the SendGrid fake, errors translated."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from channels.email import SendGridEmail
from channels.sendgrid_templates import SendGridTemplates
from outreach.clock import FixedClock, ManualTimer
from outreach.errors import ConfigError, RetryableError
from outreach.sandbox.base import SandboxServer
from outreach.sandbox.sendgrid import FakeSendGrid

KEY = "SG.sandbox-key"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TEMPLATE = "d-0123456789abcdef0123456789abcdef"


@pytest.fixture
def fake() -> FakeSendGrid:
    return FakeSendGrid(api_key=KEY, clock=FixedClock(NOW))


@pytest.fixture
def server(fake: FakeSendGrid) -> Iterator[SandboxServer]:
    with SandboxServer(fake) as running:
        yield running


def reader(server: SandboxServer, timer: ManualTimer, key: str = KEY) -> SendGridTemplates:
    return SendGridTemplates(key, base_url=server.url, clock=FixedClock(NOW), sleep=timer.sleep)


def test_the_active_version_is_read_through_the_channels_base_url(fake, server) -> None:
    fake.add_template(TEMPLATE, name="Offer", subject="Old", html_content="<p>old</p>")
    fake.add_template(
        TEMPLATE,
        subject="News for {{candidate.first_name}}",
        html_content="<p>{{job.title}}</p>",
        plain_content="{{job.title}}",
        version_name="v2",
    )
    channel = SendGridEmail(KEY, "jobs@acme.example", base_url=server.url, clock=FixedClock(NOW))
    active = channel.read_template(TEMPLATE)
    assert (active.template_id, active.name, active.version) == (TEMPLATE, "Offer", "v2")
    assert active.subject == "News for {{candidate.first_name}}"
    assert (active.html_content, active.plain_content) == ("<p>{{job.title}}</p>", "{{job.title}}")
    assert [u.path for u in active.variables().required] == ["candidate.first_name", "job.title"]
    assert fake.requests[-1].path == f"/v3/templates/{TEMPLATE}"


def test_an_unknown_template_is_a_configuration_error_naming_the_id(server) -> None:
    with pytest.raises(ConfigError) as info:
        reader(server, ManualTimer()).read(TEMPLATE)
    message = str(info.value)
    assert f"SendGrid has no template {TEMPLATE}" in message
    assert "resource not found" in message and "sendgrid_template_id" in message


def test_a_refused_key_names_the_variable_and_never_the_key(fake, server) -> None:
    fake.add_template(TEMPLATE, subject="x", html_content="y")
    with pytest.raises(ConfigError) as info:
        reader(server, ManualTimer(), key="SG.revoked-secret").read(TEMPLATE)
    assert "SENDGRID_API_KEY" in str(info.value)
    assert "SG.revoked-secret" not in str(info.value)


def test_a_key_without_the_templates_scope_says_which_scope(fake, server) -> None:
    class NoScope(FakeSendGrid):
        def get_template(self, request, template_id):
            from outreach.sandbox.base import json_response

            return json_response(
                {"errors": [{"field": None, "message": "access forbidden"}]}, status=403
            )

    with (
        SandboxServer(NoScope(api_key=KEY)) as other,
        pytest.raises(ConfigError, match=r"templates\.read"),
    ):
        reader(other, ManualTimer()).read(TEMPLATE)


def test_a_template_without_an_active_version_is_a_configuration_error(fake, server) -> None:
    fake.add_template(TEMPLATE, subject="x", html_content="y")
    fake.templates[TEMPLATE]["versions"][0]["active"] = 0
    with pytest.raises(ConfigError, match="no active version"):
        reader(server, ManualTimer()).read(TEMPLATE)


def test_503_and_429_are_retried_on_the_injected_clock(fake, server) -> None:
    fake.add_template(TEMPLATE, subject="x", html_content="{{a}}")
    fake.faults.server_errors(1, status=503)
    fake.faults.rate_limited(1, retry_after=3.0)
    timer = ManualTimer()
    active = reader(server, timer).read(TEMPLATE)
    assert active.html_content == "{{a}}"
    assert len(timer.slept) == 2 and timer.slept[1] >= 3.0


def test_an_outage_is_retryable_after_the_attempts(fake, server) -> None:
    fake.add_template(TEMPLATE, subject="x", html_content="y")
    fake.faults.server_errors(3, status=503)
    with pytest.raises(RetryableError, match=r"SendGrid 503 .* after 3 attempts"):
        reader(server, ManualTimer()).read(TEMPLATE)


def test_no_connection_is_retryable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    templates = SendGridTemplates(
        KEY, base_url=f"http://127.0.0.1:{port}", max_attempts=2, sleep=ManualTimer().sleep
    )
    with pytest.raises(RetryableError, match="cannot connect to SendGrid"):
        templates.read(TEMPLATE)
