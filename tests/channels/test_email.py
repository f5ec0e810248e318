"""The SendGrid email channel: the real SDK against the SendGrid sandbox fake, over loopback."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from python_http_client.exceptions import BadRequestsError, TooManyRequestsError, UnauthorizedError

from channels.base import OutgoingMessage, SendResult
from channels.email import SendGridEmail, plain_to_html
from outreach.clock import FixedClock, ManualTimer
from outreach.sandbox.base import SandboxServer
from outreach.sandbox.sendgrid import FakeSendGrid

KEY = "SG.sandbox-key"
FROM = "jobs@acme.example"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TEMPLATE = "d-0123456789abcdef0123456789abcdef"
UNSUBSCRIBE = "<mailto:jobs@acme.example?subject=unsubscribe>"


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[SandboxServer, dict]]:
    """One loopback server for the module; each test plugs in its own fake.

    ``hits`` counts every request that reached the server, including those the fake
    answers before its request log (401, injected 429 and 5xx).
    """
    current: dict = {"hits": []}

    def app(environ, start_response):
        current["hits"].append(environ["PATH_INFO"])
        return current["fake"](environ, start_response)

    with SandboxServer(app) as running:
        yield running, current


@pytest.fixture
def fake(server) -> FakeSendGrid:
    return use(server, FakeSendGrid(clock=FixedClock(NOW)))


@pytest.fixture
def hits(server, fake) -> list[str]:
    return server[1]["hits"]


@pytest.fixture
def timer() -> ManualTimer:
    return ManualTimer()


@pytest.fixture
def channel(server, fake, timer) -> SendGridEmail:
    return make_channel(server, timer)


def use(server, fake: FakeSendGrid) -> FakeSendGrid:
    server[1]["fake"] = fake
    server[1]["hits"].clear()
    return fake


def make_channel(server, timer: ManualTimer, **overrides: Any) -> SendGridEmail:
    options: dict[str, Any] = {
        "base_url": server[0].url,
        "company_name": "Acme",
        "asm_group_id": 42,
        "clock": FixedClock(NOW),
        "sleep": timer.sleep,
    }
    options.update(overrides)
    return SendGridEmail(options.pop("api_key", KEY), FROM, **options)


def message(touch_id: int = 41, to: str = "ada@example.com", **extra: Any) -> OutgoingMessage:
    fields: dict[str, Any] = {
        "touch_id": touch_id,
        "idempotency_key": f"key-{touch_id}",
        "person_id": touch_id,
        "channel": "email",
        "to": to,
        "body": "Hi Ada,\n\nA role at Acme.",
        "send_at": NOW,
        "cadence_id": "backend",
        "step_id": "intro",
        "template": "intro",
        "variant": "a",
        "subject": "A role you might like",
    }
    fields.update(extra)
    return OutgoingMessage(**fields)


def templated(touch_id: int, to: str | None = None, **extra: Any) -> OutgoingMessage:
    fields: dict[str, Any] = {
        "sendgrid_template_id": TEMPLATE,
        "template_data": {"first_name": f"P{touch_id}"},
    }
    fields.update(extra)
    return message(touch_id, to or f"person{touch_id}@example.com", **fields)


def by_touch(results: list[SendResult]) -> dict[int, SendResult]:
    assert len({r.touch_id for r in results}) == len(results)
    return {r.touch_id: r for r in results}


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class StubSendGrid:
    """Stands in for ``SendGridAPIClient``: ``client.mail.send.post`` answers from a script."""

    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)
        self.bodies: list[dict] = []
        self.client = SimpleNamespace(mail=SimpleNamespace(send=SimpleNamespace(post=self.post)))

    def post(self, request_body: dict, timeout: float) -> Any:
        self.bodies.append(request_body)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def accepted(message_id: str = "stub-id") -> SimpleNamespace:
    return SimpleNamespace(status_code=202, body=b"", headers={"X-Message-Id": message_id})


def errors_body(*errors: dict) -> bytes:
    return json.dumps({"errors": list(errors)}).encode()


# -- what SendGrid receives ------------------------------------------------------------


def test_a_rendered_email_arrives_with_every_field(fake, hits, channel) -> None:
    sent = message(
        body='Hi Ada & <co>,\n\nA "role" at Acme.\nReply any time.\r\n\r\n\r\nGrace',
        recruiter_name="Grace Hopper",
        recruiter_email="grace@acme.example",
    )

    [result] = channel.send([sent])

    [request] = fake.mail_requests
    [recorded] = fake.messages
    assert result == SendResult.sent(sent, provider_message_id=request["message_id"])
    assert recorded["to"] == ["ada@example.com"]
    assert recorded["subject"] == "A role you might like"
    assert recorded["template_id"] is None
    assert recorded["custom_args"] == {"touch_id": "41"}
    assert recorded["categories"] == ["backend", "intro"]
    assert recorded["from"] == {"email": FROM, "name": "Grace Hopper"}
    assert recorded["reply_to"] == {"email": "grace@acme.example", "name": "Grace Hopper"}
    assert recorded["asm"] == {"group_id": 42}
    assert recorded["headers"] == {"List-Unsubscribe": UNSUBSCRIBE}
    assert recorded["send_at"] is None
    assert recorded["content"] == [
        {"type": "text/plain", "value": sent.body},
        {
            "type": "text/html",
            "value": "<p>Hi Ada &amp; &lt;co&gt;,</p>\n"
            "<p>A &quot;role&quot; at Acme.<br>\nReply any time.</p>\n<p>Grace</p>",
        },
    ]
    assert len(hits) == 1


def test_without_a_recruiter_the_company_names_the_sender_and_there_is_no_reply_to(
    server, fake, timer
) -> None:
    make_channel(server, timer).send([message(1)])
    make_channel(server, timer, company_name=None, asm_group_id=None).send([message(2)])

    first, second = sorted(fake.messages, key=lambda m: m["custom_args"]["touch_id"])
    assert first["from"] == {"email": FROM, "name": "Acme"} and first["reply_to"] is None
    assert second["from"] == {"email": FROM} and second["asm"] is None


def test_categories_are_deduplicated_and_kept_ascii(fake, channel) -> None:
    [result] = channel.send([message(cadence_id="café-intro", step_id="café-intro")])

    assert result.status == "sent"
    assert fake.messages[0]["categories"] == ["caf-intro"]


def test_2500_template_messages_go_as_three_requests_each_person_with_their_data(
    fake, hits, channel
) -> None:
    batch = [templated(i) for i in range(2500)]

    results = channel.send(batch)

    assert sorted(len(r["body"]["personalizations"]) for r in fake.mail_requests) == [
        500,
        1000,
        1000,
    ]
    assert len(hits) == 3
    for request in fake.mail_requests:
        body = request["body"]
        assert body["template_id"] == TEMPLATE
        assert "subject" not in body and "content" not in body
        assert body["from"] == {"email": FROM, "name": "Acme"}
        assert body["asm"] == {"group_id": 42}
        assert body["categories"] == ["backend", "intro"]
    received = {m["to"][0]: m for m in fake.messages}
    assert len(received) == 2500
    for i in (0, 999, 1000, 2499):
        person = received[f"person{i}@example.com"]
        assert person["dynamic_template_data"] == {"first_name": f"P{i}"}
        assert person["custom_args"] == {"touch_id": str(i)}
        assert person["headers"] == {"List-Unsubscribe": UNSUBSCRIBE}
    ids = {m["to"][0]: m["message_id"] for m in fake.messages}
    outcome = by_touch(results)
    assert all(r.status == "sent" for r in results)
    assert {outcome[i].provider_message_id for i in range(2500)} == {
        r["message_id"] for r in fake.mail_requests
    }
    assert all(outcome[i].provider_message_id == ids[f"person{i}@example.com"] for i in range(2500))


def test_template_messages_are_grouped_by_step_and_reply_to(fake, channel) -> None:
    batch = [
        templated(1),
        templated(2),
        templated(3, step_id="follow-up"),
        templated(4, recruiter_name="Grace", recruiter_email="grace@acme.example"),
    ]

    results = channel.send(batch)

    assert all(r.status == "sent" for r in results)
    groups = sorted(
        sorted(p["custom_args"]["touch_id"] for p in r["body"]["personalizations"])
        for r in fake.mail_requests
    )
    assert groups == [["1", "2"], ["3"], ["4"]]
    reply = next(r["body"] for r in fake.mail_requests if "reply_to" in r["body"])
    assert reply["from"]["name"] == "Grace" and reply["reply_to"]["email"] == "grace@acme.example"


def test_a_touchs_reply_to_and_message_id_reach_sendgrid(fake, channel) -> None:
    sent = message(
        reply_to="replies+t41k@acme.example",
        message_id="t41.k3y@acme.example",
        recruiter_name="Grace Hopper",
        recruiter_email="grace@acme.example",
    )

    [result] = channel.send([sent])

    assert result.status == "sent"
    [request] = fake.mail_requests
    body = request["body"]
    assert body["reply_to"] == {"email": "replies+t41k@acme.example", "name": "Grace Hopper"}
    [personalization] = body["personalizations"]
    assert personalization["headers"] == {
        "List-Unsubscribe": UNSUBSCRIBE,
        "Message-ID": "<t41.k3y@acme.example>",
    }
    assert fake.messages[0]["headers"]["Message-ID"] == "<t41.k3y@acme.example>"


def test_a_message_id_given_with_angle_brackets_is_not_doubled(fake, channel) -> None:
    channel.send([message(message_id="<t41@acme.example>")])

    assert fake.messages[0]["headers"]["Message-ID"] == "<t41@acme.example>"


@pytest.mark.parametrize("bad", ["no-at-sign", "a b@acme.example", "t41@acme.example\r\nBcc: x"])
def test_a_malformed_message_id_fails_without_a_request(fake, hits, channel, bad) -> None:
    [result] = channel.send([message(message_id=bad)])

    assert result.status == "failed" and result.permanent and "Message-ID" in result.reason
    assert hits == []


def test_template_messages_each_with_their_own_reply_to_go_apart(fake, channel) -> None:
    batch = [
        templated(1, reply_to="replies+a@acme.example"),
        templated(2, reply_to="replies+b@acme.example"),
        templated(3, reply_to="replies+a@acme.example"),
        templated(4),
    ]

    results = channel.send(batch)

    assert all(r.status == "sent" for r in results)
    requests = {
        tuple(p["custom_args"]["touch_id"] for p in r["body"]["personalizations"]): r["body"]
        for r in fake.mail_requests
    }
    assert set(requests) == {("1", "3"), ("2",), ("4",)}
    assert requests[("1", "3")]["reply_to"] == {"email": "replies+a@acme.example"}
    assert requests[("2",)]["reply_to"] == {"email": "replies+b@acme.example"}
    assert "reply_to" not in requests[("4",)]
    keys = [channel.batch_key(m) for m in batch]
    assert keys[0] == keys[2] and len({keys[0], keys[1], keys[3]}) == 3


def test_a_touchs_reply_to_wins_over_the_recruiters_address_in_the_batch_key(channel) -> None:
    recruiter = {"recruiter_name": "Grace", "recruiter_email": "grace@acme.example"}
    own = templated(1, reply_to="replies+a@acme.example", **recruiter)
    plain = templated(2, **recruiter)

    assert channel.batch_key(own) != channel.batch_key(plain)
    assert "replies+a@acme.example" in channel.batch_key(own)


def test_rendered_messages_go_one_request_each_concurrently(fake, hits, channel) -> None:
    results = channel.send([message(i, f"p{i}@example.com") for i in range(20)])

    assert len(hits) == 20 and len(fake.mail_requests) == 20
    assert all(r.status == "sent" for r in results)
    assert len({r.provider_message_id for r in results}) == 20


def test_send_at_is_set_for_every_later_message_however_near(fake, hits, channel) -> None:
    later = NOW + timedelta(hours=2)
    batch = [
        message(1, "due@example.com"),
        message(2, "soon@example.com", send_at=NOW + timedelta(seconds=30)),
        message(3, "later@example.com", send_at=later),
        templated(4, send_at=later),
        templated(5),
        message(6, "far@example.com", send_at=NOW + timedelta(hours=73)),
        # Rounded up to the second: never before the chosen instant.
        message(7, "next@example.com", send_at=NOW + timedelta(milliseconds=200)),
        message(8, "past@example.com", send_at=NOW - timedelta(minutes=5)),
    ]

    results = by_touch(channel.send(batch))

    send_at = {m["custom_args"]["touch_id"]: m["send_at"] for m in fake.messages}
    assert send_at == {
        "1": None,
        "2": int(NOW.timestamp()) + 30,
        "3": int(later.timestamp()),
        "4": int(later.timestamp()),
        "5": None,
        "7": int(NOW.timestamp()) + 1,
        "8": None,
    }
    assert [results[i].status for i in (1, 2, 3, 4, 5, 7, 8)] == ["sent"] * 7
    assert results[6].status == "failed" and not results[6].permanent
    assert results[6].retry_after == 3600
    assert len(hits) == 6


# -- retryable: 429, 503, no connection ------------------------------------------------


def test_a_429_waits_until_the_rate_limit_resets_then_sends(fake, hits, channel, timer) -> None:
    fake.faults.rate_limited(1, retry_after=7)

    [result] = channel.send([message()])

    assert result.status == "sent"
    assert timer.slept == [7.0]
    assert len(hits) == 2 and len(fake.messages) == 1


def test_a_retry_after_header_is_honoured() -> None:
    timer = ManualTimer()
    limited = TooManyRequestsError(
        429,
        "Too Many Requests",
        errors_body({"message": "too many requests"}),
        {"Retry-After": "12"},
    )
    stub = StubSendGrid(limited, accepted("m-1"))
    channel = SendGridEmail(KEY, FROM, clock=FixedClock(NOW), sleep=timer.sleep, client=stub)

    [result] = channel.send([message()])

    assert result == SendResult.sent(message(), "m-1")
    assert timer.slept == [12.0] and len(stub.bodies) == 2


def test_a_rate_limit_reset_too_far_ahead_is_left_to_the_engine(fake, hits, channel, timer) -> None:
    fake.faults.rate_limited(1, retry_after=3600)

    [result] = channel.send([message()])

    assert result.status == "failed" and not result.permanent
    assert result.retry_after == 3600
    assert "429" in result.reason
    assert timer.slept == [] and len(hits) == 1


def test_a_503_is_retried_with_backoff(fake, hits, channel, timer) -> None:
    fake.faults.server_errors(2, status=503)

    [result] = channel.send([message()])

    assert result.status == "sent"
    assert timer.slept == [0.5, 1.0]
    assert len(hits) == 3 and len(fake.messages) == 1


def test_503s_past_the_last_attempt_fail_for_a_later_retry(fake, hits, channel, timer) -> None:
    fake.faults.server_errors(4, status=503)

    results = channel.send([templated(1), templated(2)])

    for result in results:
        assert result.status == "failed" and not result.permanent and result.suppress is None
        assert "SendGrid 503" in result.reason and "after 4 attempts" in result.reason
        assert result.retry_after == 4.0
    assert timer.slept == [0.5, 1.0, 2.0]
    assert len(hits) == 4 and not fake.messages


def test_a_refused_connection_is_retried_then_fails_for_a_later_retry(timer) -> None:
    channel = SendGridEmail(
        KEY, FROM, base_url=closed_port_url(), clock=FixedClock(NOW), sleep=timer.sleep
    )

    [result] = channel.send([message()])

    assert result.status == "failed" and not result.permanent
    assert "cannot connect to SendGrid" in result.reason and "after 4 attempts" in result.reason
    assert timer.slept == [0.5, 1.0, 2.0]


# -- ambiguous: timeouts after sending, 500 --------------------------------------------


def test_a_timeout_after_receipt_is_ambiguous_and_never_resent(
    server, fake, hits, timer, lost_answers
) -> None:
    channel = make_channel(server, timer, timeout=7.5)
    fake.faults.timeouts(1, seconds=0)

    [result] = channel.send([message()])

    assert result.status == "ambiguous"
    assert "did not answer within 7.5 s" in result.reason
    assert len(fake.messages) == 1 and len(fake.mail_requests) == 1
    assert len(hits) == 1 and timer.slept == []


def test_a_500_is_ambiguous_after_one_request(fake, hits, channel, timer) -> None:
    fake.faults.server_errors(1, status=500)

    results = channel.send([templated(1), templated(2)])

    assert [r.status for r in results] == ["ambiguous", "ambiguous"]
    assert all("SendGrid 500" in r.reason for r in results)
    assert len(hits) == 1 and timer.slept == []


# -- permanent: 400, 413 ---------------------------------------------------------------


def test_an_invalid_recipient_fails_alone_and_the_rest_of_the_batch_is_resent(
    fake, hits, channel
) -> None:
    batch = [templated(1), templated(2, "ada(at)example.com"), templated(3)]

    results = by_touch(channel.send(batch))

    bad = results[2]
    assert bad.status == "failed" and bad.permanent and bad.suppress == "invalid"
    assert "Does not contain a valid address" in bad.reason
    assert "@" not in bad.reason and "ada" not in bad.reason
    assert results[1].status == results[3].status == "sent"
    assert len(hits) == 2
    assert sorted(m["to"][0] for m in fake.messages) == [
        "person1@example.com",
        "person3@example.com",
    ]


def test_an_invalid_single_recipient_is_suppressed(fake, hits, channel) -> None:
    [result] = channel.send([message(to="ada@example")])

    assert result.status == "failed" and result.permanent and result.suppress == "invalid"
    assert len(hits) == 1


def test_a_bad_template_id_is_configuration_and_stops_the_batch(fake, hits, channel) -> None:
    batch = [
        templated(1, sendgrid_template_id=7),
        templated(2, sendgrid_template_id=7),
        templated(3, step_id="follow-up"),
    ]

    results = by_touch(channel.send(batch))

    for result in results.values():
        assert result.status == "failed" and not result.permanent and result.suppress is None
        assert "the step's sendgrid_template_id" in result.reason
    assert "template_id: The template ID must be a string" in results[1].reason
    assert len(hits) == 1 and not fake.messages


def test_an_unknown_template_id_is_configuration() -> None:
    # The fake does not know which template ids exist; the live API answers this 400.
    unknown = BadRequestsError(
        400,
        "Bad Request",
        errors_body({"field": "template_id", "message": "The template_id must be a valid ID"}),
        {},
    )
    stub = StubSendGrid(unknown)
    channel = SendGridEmail(KEY, FROM, clock=FixedClock(NOW), client=stub)

    results = channel.send([templated(1), templated(2)])

    for result in results:
        assert result.status == "failed" and not result.permanent and result.suppress is None
        assert "sendgrid_template_id" in result.reason
    assert len(stub.bodies) == 1


@pytest.mark.parametrize(
    ("overrides", "field", "fix"),
    [
        ({"from_email": "jobs(at)acme.example"}, "from.email", "SENDGRID_FROM_EMAIL"),
        ({"asm_group_id": "unsubscribe"}, "asm.group_id", "policy.sendgrid_unsubscribe_group"),
    ],
)
def test_a_bad_sender_or_unsubscribe_group_is_configuration_and_stops_the_batch(
    server, fake, hits, timer, overrides, field, fix
) -> None:
    from_email = overrides.pop("from_email", FROM)
    channel = SendGridEmail(
        KEY,
        from_email,
        base_url=server[0].url,
        clock=FixedClock(NOW),
        sleep=timer.sleep,
        **overrides,
    )

    results = channel.send([message(i, f"p{i}@example.com") for i in range(4)])

    assert len(results) == 4
    for result in results:
        assert result.status == "failed" and not result.permanent and result.suppress is None
        assert f"check {fix}" in result.reason and field in result.reason
        assert "@" not in result.reason
    assert len(hits) == 1 and not fake.messages


def test_a_recipient_and_a_sender_error_in_one_400(fake, hits, server, timer) -> None:
    channel = SendGridEmail(
        KEY, "jobs(at)acme.example", base_url=server[0].url, clock=FixedClock(NOW)
    )

    results = by_touch(channel.send([templated(1), templated(2, "ada(at)example.com")]))

    assert (results[2].status, results[2].permanent, results[2].suppress) == (
        "failed",
        True,
        "invalid",
    )
    assert results[1].status == "failed" and not results[1].permanent
    assert "SENDGRID_FROM_EMAIL" in results[1].reason
    assert len(hits) == 1


def test_a_wrong_base_url_is_configuration_and_stops_the_batch(fake, hits, server, timer) -> None:
    channel = make_channel(server, timer, base_url=server[0].url + "/not-sendgrid")

    results = channel.send([message(i, f"p{i}@example.com") for i in range(3)] + [templated(9)])

    assert len(results) == 4
    for result in results:
        assert result.status == "failed" and not result.permanent
        assert "SendGrid 404" in result.reason and "SENDGRID_BASE_URL" in result.reason
    assert len(hits) == 1 and not fake.messages


def test_a_body_over_the_size_limit_is_permanent(fake, channel) -> None:
    fake.max_body_bytes = 200

    [result] = channel.send([message(body="x" * 500)])

    assert result.status == "failed" and result.permanent and result.suppress is None
    assert "SendGrid 413" in result.reason


def test_addresses_and_the_key_echoed_by_sendgrid_are_scrubbed_from_reasons() -> None:
    duplicate = BadRequestsError(
        400,
        "Bad Request",
        errors_body(
            {
                "field": "personalizations.0",
                "message": "We found the first duplicate instance of [ada@example.com]",
            },
            {"field": "from.email", "message": f"key {KEY} for jobs@acme.example"},
        ),
        {},
    )
    stub = StubSendGrid(duplicate)
    channel = SendGridEmail(KEY, FROM, clock=FixedClock(NOW), client=stub)

    results = by_touch(channel.send([templated(1), templated(2)]))

    assert results[1].permanent
    assert not results[2].permanent and "SENDGRID_FROM_EMAIL" in results[2].reason
    for result in results.values():
        assert "@" not in result.reason and KEY not in result.reason
    assert "[address]" in results[1].reason and "[api key]" in results[2].reason
    assert len(stub.bodies) == 1  # a general error too: nothing is re-sent


# -- credentials: 401, 403 -------------------------------------------------------------


def test_a_wrong_key_fails_the_batch_after_one_request(server, fake, hits, timer) -> None:
    channel = make_channel(server, timer, api_key="SG.wrong-key")
    batch = [message(i, f"p{i}@example.com") for i in range(5)] + [templated(9)]

    results = channel.send(batch)

    assert len(results) == 6
    for result in results:
        assert result.status == "failed" and not result.permanent
        assert "SENDGRID_API_KEY" in result.reason and "401" in result.reason
        assert "SG.wrong-key" not in result.reason
    assert len(hits) == 1 and timer.slept == []


def test_a_key_echoed_in_a_401_is_not_in_the_reason() -> None:
    rejected = UnauthorizedError(
        401, "Unauthorized", errors_body({"message": f"bad key {KEY}"}), {}
    )
    channel = SendGridEmail(KEY, FROM, clock=FixedClock(NOW), client=StubSendGrid(rejected))

    [result] = channel.send([message()])

    assert KEY not in result.reason and "SENDGRID_API_KEY" in result.reason


def test_an_unverified_sender_fails_the_batch_after_one_request(server, timer) -> None:
    fake = use(server, FakeSendGrid(clock=FixedClock(NOW), verified_senders={"other@acme.example"}))
    channel = make_channel(server, timer)

    results = channel.send([message(1), message(2, "bob@example.com")])

    for result in results:
        assert result.status == "failed" and not result.permanent
        assert "SendGrid 403" in result.reason and "verified Sender Identity" in result.reason
        assert "@" not in result.reason
    assert len(server[1]["hits"]) == 1 and not fake.messages


# -- exceptions the translator does not know -------------------------------------------


class ExplodingSendGrid(StubSendGrid):
    """Accepts every request except those carrying ``touch_id`` 2, which raise ``error``."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error

    def post(self, request_body: dict, timeout: float) -> Any:
        self.bodies.append(request_body)
        touches = {p["custom_args"]["touch_id"] for p in request_body["personalizations"]}
        if "2" in touches:
            raise self.error
        return accepted(f"m-{min(touches)}")


def test_an_unknown_exception_is_ambiguous_for_its_request_only(caplog) -> None:
    error = RuntimeError(f"boom with {KEY} for p2@example.com")
    stub = ExplodingSendGrid(error)
    channel = SendGridEmail(KEY, FROM, clock=FixedClock(NOW), client=stub)
    caplog.set_level(logging.DEBUG)

    results = by_touch(channel.send([message(i, f"p{i}@example.com") for i in (1, 2, 3)]))

    assert results[2] == SendResult.ambiguous(
        message(2, "p2@example.com"), "unexpected RuntimeError from the SendGrid SDK"
    )
    assert results[1].status == results[3].status == "sent"
    assert len(stub.bodies) == 3
    assert "RuntimeError" in caplog.text and "touches 2" in caplog.text
    assert KEY not in caplog.text and "@" not in caplog.text


def test_an_invalid_header_value_fails_before_anything_is_sent(server, fake, hits, timer) -> None:
    # A key with a line break (a stray newline from a secrets file): http.client refuses
    # the Authorization header while buffering it, before the connection is used; its
    # ValueError carries the key.
    channel = make_channel(server, timer, api_key=KEY + "\n")

    results = channel.send([message(1), message(2, "bob@example.com")])

    for result in results:
        assert result.status == "failed" and not result.permanent
        assert "SENDGRID_API_KEY" in result.reason and "ValueError" in result.reason
        assert KEY not in result.reason
    assert len(hits) == 0 and timer.slept == []


# -- helpers ---------------------------------------------------------------------------


def test_plain_text_becomes_paragraphs_and_line_breaks() -> None:
    assert plain_to_html("a < b\nc\n\n\n  \nd & e\n") == "<p>a &lt; b<br>\nc</p>\n<p>d &amp; e</p>"
    assert plain_to_html("one line") == "<p>one line</p>"


def test_the_key_is_not_in_the_channels_repr() -> None:
    assert KEY not in repr(SendGridEmail(KEY, FROM))
