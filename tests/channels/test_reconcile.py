"""Reconciling ambiguous sends with the provider, through the real SDKs against the
sandbox fakes: Twilio by the messages to the number (matched by the body's digest),
SendGrid by the Email Activity API (by the touch's ``custom_args``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from werkzeug.test import Client

from channels.base import Inquiry, OutgoingMessage, body_digest
from channels.email import SendGridEmail
from channels.sms import TwilioSMS
from outreach.clock import FixedClock, ManualTimer
from outreach.sandbox.base import SandboxServer
from outreach.sandbox.sendgrid import FakeSendGrid
from outreach.sandbox.twilio import FakeTwilio

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
ADA = "+14155550100"
BEN = "+14155550101"


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[SandboxServer, dict]]:
    current: dict = {}

    def app(environ, start_response):
        return current["fake"](environ, start_response)

    with SandboxServer(app) as running:
        yield running, current


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


def message(touch_id: int, channel: str, to: str, body: str) -> OutgoingMessage:
    return OutgoingMessage(
        touch_id=touch_id,
        idempotency_key=f"k-{touch_id}",
        person_id=touch_id,
        channel=channel,
        to=to,
        body=body,
        subject="Hello" if channel == "email" else None,
        send_at=NOW,
        cadence_id="c",
        step_id="s",
        template="t",
        variant="a",
    )


def inquiry(m: OutgoingMessage, since: datetime = NOW) -> Inquiry:
    return Inquiry(
        touch_id=m.touch_id,
        to=m.to,
        since=since,
        send_at=m.send_at,
        body_digest=body_digest(m.channel, m.subject, m.body),
    )


@pytest.fixture
def twilio(server, clock) -> Iterator[tuple[FakeTwilio, TwilioSMS]]:
    server[1]["fake"] = fake = FakeTwilio(clock=clock)
    sms = TwilioSMS(
        fake.account_sid,
        fake.auth_token,
        from_number=fake.from_numbers[0],
        base_url=server[0].url,
        clock=clock,
        sleep=ManualTimer().sleep,
        timeout=5.0,
    )
    yield fake, sms
    sms.close()


def test_twilio_finds_what_it_holds_and_proves_what_it_never_received(twilio) -> None:
    _fake, sms = twilio
    sent = message(1, "sms", ADA, "Hi Ada, thanks for applying")
    (result,) = sms.send([sent])
    assert result.status == "sent"
    never = message(2, "sms", ADA, "Hi Ada, a different text")
    other_number = message(3, "sms", BEN, "Hi Ada, thanks for applying")
    asked = [inquiry(sent), inquiry(never), inquiry(other_number)]
    answers = {a.touch_id: a for a in sms.reconcile(asked, NOW)}
    assert answers[1].status == "delivered"
    assert answers[1].provider_message_id == result.provider_message_id
    assert answers[2].status == "absent"
    assert answers[3].status == "absent"


def test_twilio_leaves_out_an_identical_text_the_ledger_gives_another_touch(twilio) -> None:
    _fake, sms = twilio
    (earlier,) = sms.send([message(1, "sms", ADA, "Hi Ada, thanks for applying")])
    again = inquiry(message(2, "sms", ADA, "Hi Ada, thanks for applying"))
    (answer,) = sms.reconcile(
        [replace(again, known_ids=frozenset({earlier.provider_message_id}))], NOW
    )
    assert answer.status == "absent"


def test_twilio_finds_the_message_whatever_the_engine_s_clock_says(twilio, clock) -> None:
    """A run replayed with --now ahead of Twilio's clock: the message Twilio stamped
    "earlier" than the claim is still the touch (a wrong "absent" would send it twice)."""
    _fake, sms = twilio
    sent = message(1, "sms", ADA, "Hi Ada, thanks for applying")
    (result,) = sms.send([sent])
    ahead = NOW + timedelta(days=3)
    (answer,) = sms.reconcile([inquiry(sent, since=ahead)], ahead)
    assert answer.status == "delivered"
    assert answer.provider_message_id == result.provider_message_id


def test_twilio_unreachable_means_ask_again_later(twilio) -> None:
    fake, sms = twilio
    fake.faults.server_errors(10)
    (answer,) = sms.reconcile([inquiry(message(1, "sms", ADA, "x"))], NOW)
    assert answer.status == "later"


@pytest.fixture
def sendgrid(server, clock) -> tuple[FakeSendGrid, SendGridEmail]:
    server[1]["fake"] = fake = FakeSendGrid(clock=clock)
    email = SendGridEmail(
        "SG.sandbox-key",
        "jobs@acme.example",
        base_url=server[0].url,
        clock=clock,
        sleep=ManualTimer().sleep,
    )
    return fake, email


def test_sendgrid_activity_finds_the_touch_by_its_custom_args(sendgrid, clock) -> None:
    _fake, email = sendgrid
    sent = message(7, "email", "ada@example.com", "Hi Ada")
    (result,) = email.send([sent])
    assert result.status == "sent"
    missing = message(8, "email", "ada@example.com", "Hi Ada")
    answers = {a.touch_id: a for a in email.reconcile([inquiry(sent), inquiry(missing)], NOW)}
    assert answers[7].status == "delivered" and answers[7].provider_message_id
    # Not in the feed yet, but the feed may still be indexing it: no conclusion.
    assert answers[8].status == "later"
    clock.set(NOW + SendGridEmail.activity_delay)
    (late,) = email.reconcile([inquiry(missing)], clock.now())
    assert late.status == "absent"


def test_sendgrid_without_the_activity_add_on_hands_over(sendgrid) -> None:
    fake, email = sendgrid
    fake.email_activity = False
    answers = email.reconcile(
        [inquiry(message(i, "email", "ada@example.com", "Hi")) for i in (1, 2, 3)], NOW
    )
    assert [a.status for a in answers] == ["unknown"] * 3
    assert "Email Activity" in (answers[0].reason or "")


def test_sendgrid_activity_query_language_in_the_fake(sendgrid, clock) -> None:
    fake, email = sendgrid
    email.send(
        [message(1, "email", "ada@example.com", "Hi"), message(2, "email", "ben@example.com", "Hi")]
    )
    client = Client(fake)
    auth = {"Authorization": "Bearer SG.sandbox-key"}
    both = client.get(
        "/v3/messages",
        query_string={"query": 'unique_args[\'touch_id\']="1" OR to_email="ben@example.com"'},
        headers=auth,
    )
    assert sorted(m["to_email"] for m in both.get_json()["messages"]) == [
        "ada@example.com",
        "ben@example.com",
    ]
    bad = client.get("/v3/messages", query_string={"query": "touch_id=1"}, headers=auth)
    assert bad.status_code == 400
    assert client.get("/v3/messages").status_code == 401


def activity_queries(fake: FakeSendGrid) -> int:
    return sum(1 for r in fake.requests if r.path == "/v3/messages")


def test_sendgrid_asks_for_many_touches_in_one_query_within_the_feed_s_limit(sendgrid) -> None:
    """The feed allows 6 queries a minute: touches to distinct recipients share a query,
    two to one address never do (the answer is matched by recipient), and a run asks at
    most ``activity_queries_per_run`` times."""
    fake, email = sendgrid
    sent = [message(i, "email", f"p{i}@example.com", "Hi") for i in range(1, 4)]
    email.send(sent)
    same_address = message(4, "email", "p1@example.com", "Hi")
    answers = {
        a.touch_id: a for a in email.reconcile([*map(inquiry, sent), inquiry(same_address)], NOW)
    }
    assert [answers[i].status for i in (1, 2, 3)] == ["delivered"] * 3
    assert answers[4].status == "later"  # not in the feed yet: no conclusion
    assert activity_queries(fake) == 2  # p1..p3 together; the second p1 touch alone

    fake.requests.clear()
    many = [
        inquiry(message(100 + i, "email", "same@example.com", "Hi"))
        for i in range(SendGridEmail.activity_queries_per_run + 3)
    ]
    answers = email.reconcile(many, NOW)
    assert activity_queries(fake) == SendGridEmail.activity_queries_per_run
    left = [a for a in answers if "6 queries a minute" in (a.reason or "")]
    assert len(left) == 3 and all(a.status == "later" for a in left)


def test_sendgrid_rate_limited_activity_waits_for_the_next_run(server, sendgrid, clock) -> None:
    fake, _ = sendgrid
    timer = ManualTimer()
    email = SendGridEmail(
        "SG.sandbox-key",
        "jobs@acme.example",
        base_url=server[0].url,
        clock=clock,
        sleep=timer.sleep,
    )
    fake.faults.rate_limited(1, retry_after=30.0)
    asked = [inquiry(message(i, "email", "ada@example.com", "Hi")) for i in (1, 2)]
    answers = email.reconcile(asked, NOW)
    assert [a.status for a in answers] == ["later", "later"]
    assert "429" in (answers[0].reason or "")
    assert not timer.slept  # no retry inside the run; the second query waits too
    assert activity_queries(fake) == 0  # the 429 came before the fake's request log
