"""The Mailchimp Transactional email channel: the real SDK against the sandbox fake, over loopback."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from channels.base import Inquiry, OutgoingMessage, Recall, SendResult
from channels.mailchimp import MailchimpEmail, mandrill_time
from outreach.clock import FixedClock, ManualTimer
from outreach.sandbox.base import SandboxServer
from outreach.sandbox.mailchimp import FakeMailchimp

KEY = "md-test-key-123"
FROM = "jobs@acme.example"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[SandboxServer, dict]]:
    """One loopback server; each test plugs in its own fake. ``hits`` counts every request
    that reached the server, including those answered before the fake's log (429, 5xx)."""
    current: dict = {"hits": []}

    def app(environ, start_response):
        current["hits"].append(environ["PATH_INFO"])
        return current["fake"](environ, start_response)

    with SandboxServer(app) as running:
        yield running, current


@pytest.fixture
def fake(server) -> FakeMailchimp:
    fake = FakeMailchimp(
        api_key=KEY,
        clock=FixedClock(NOW),
        rejected={
            "bounced@example.com": "hard-bounce",
            "spammy@example.com": "spam",
            "gone@example.com": "unsub",
            "soft@example.com": "soft-bounce",
            "sender@example.com": "invalid-sender",
        },
    )
    server[1]["fake"] = fake
    server[1]["hits"].clear()
    return fake


@pytest.fixture
def hits(server, fake) -> list[str]:
    return server[1]["hits"]


@pytest.fixture
def timer() -> ManualTimer:
    return ManualTimer()


def make_channel(server, timer: ManualTimer, **overrides: Any) -> MailchimpEmail:
    options: dict[str, Any] = {
        "base_url": server[0].url + "/api/1.3",
        "company_name": "Acme",
        "clock": FixedClock(NOW),
        "sleep": timer.sleep,
    }
    options.update(overrides)
    return MailchimpEmail(options.pop("api_key", KEY), FROM, **options)


@pytest.fixture
def channel(server, fake, timer) -> MailchimpEmail:
    return make_channel(server, timer)


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


def by_touch(results: list[SendResult]) -> dict[int, SendResult]:
    assert len({r.touch_id for r in results}) == len(results)
    return {r.touch_id: r for r in results}


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- sending ------------------------------------------------------------------------------


def test_a_message_arrives_with_every_field_and_the_key_in_the_body(fake, channel) -> None:
    m = message(
        recruiter_name="Grace Hopper",
        recruiter_email="grace@acme.example",
        reply_to="replies+tok41@reply.acme.example",
        message_id="touch-41@acme.example",
    )

    [result] = channel.send([m])

    assert result.status == "sent" and result.recall_ref is None
    [request] = fake.requests_to("POST", "/messages/send.json")
    body = request.json()
    assert body["key"] == KEY and body["async"] is False and "send_at" not in body
    sent = body["message"]
    assert sent["to"] == [{"email": "ada@example.com", "type": "to"}]
    assert sent["from_email"] == FROM and sent["from_name"] == "Grace Hopper"
    assert sent["subject"] == "A role you might like"
    assert sent["text"] == m.body and sent["html"] == "<p>Hi Ada,</p>\n<p>A role at Acme.</p>"
    assert sent["metadata"] == {"touch_id": "41"}
    assert sent["tags"] == ["backend", "intro"]
    assert sent["headers"]["Reply-To"] == "replies+tok41@reply.acme.example"
    assert sent["headers"]["Message-Id"] == "<touch-41@acme.example>"
    assert sent["headers"]["List-Unsubscribe"] == f"<mailto:{FROM}?subject=unsubscribe>"
    assert result.provider_message_id == fake.sent_to("ada@example.com")[0].id


def test_without_a_recruiter_the_company_names_the_sender_and_there_is_no_reply_to(
    fake, channel
) -> None:
    channel.send([message()])
    sent = fake.requests_to("POST", "/messages/send.json")[0].json()["message"]
    assert sent["from_name"] == "Acme" and "Reply-To" not in sent["headers"]


def test_a_later_message_is_scheduled_with_send_at_rounded_up_and_can_be_recalled(
    fake, channel
) -> None:
    due = NOW + timedelta(hours=5, microseconds=1)

    [result] = channel.send([message(send_at=due)])

    body = fake.requests_to("POST", "/messages/send.json")[0].json()
    assert body["send_at"] == "2026-11-25 17:00:01"
    assert result.status == "sent" and result.recall_ref == result.provider_message_id
    assert fake.messages[result.recall_ref].state == "scheduled"


def test_mandrill_time_is_utc_and_never_early() -> None:
    from zoneinfo import ZoneInfo

    local = datetime(2026, 11, 25, 9, 30, 0, tzinfo=ZoneInfo("America/New_York"))
    assert mandrill_time(local) == "2026-11-25 14:30:00"
    assert mandrill_time(local + timedelta(milliseconds=1)) == "2026-11-25 14:30:01"


def test_a_message_more_than_a_week_ahead_waits_without_a_request(fake, hits, channel) -> None:
    [result] = channel.send([message(send_at=NOW + timedelta(days=8))])
    assert result.status == "failed" and not result.permanent
    assert result.retry_after == pytest.approx(timedelta(days=1).total_seconds())
    assert hits == []


def test_a_sendgrid_template_step_is_refused_without_a_request(fake, hits, channel) -> None:
    [result] = channel.send([message(sendgrid_template_id="d-abc")])
    assert result.status == "failed" and "OUTREACH_EMAIL_PROVIDER" in result.reason
    assert hits == []


@pytest.mark.parametrize(
    ("to", "permanent", "suppress"),
    [
        ("bounced@example.com", True, "bounced"),
        ("spammy@example.com", True, "opted_out"),
        ("gone@example.com", True, "opted_out"),
        ("soft@example.com", False, None),
    ],
)
def test_a_rejected_recipient_fails_with_its_reject_reason(
    fake, channel, to, permanent, suppress
) -> None:
    results = by_touch(channel.send([message(1, to), message(2, "ok@example.com")]))
    assert results[1].status == "failed"
    assert results[1].permanent is permanent and results[1].suppress == suppress
    assert fake.rejected[to] in results[1].reason
    assert results[2].status == "sent"


def test_an_invalid_recipient_is_suppressed_as_invalid(fake, channel) -> None:
    [result] = channel.send([message(to="not-an-address")])
    assert result.status == "failed" and result.permanent and result.suppress == "invalid"


def test_a_rejected_sender_is_configuration_and_stops_the_batch(fake, hits, channel) -> None:
    results = by_touch(
        channel.send([message(1, "sender@example.com"), message(2, "b@example.com")])
    )
    assert all(r.status == "failed" and not r.permanent for r in results.values())
    assert "MAILCHIMP_FROM_EMAIL" in results[2].reason
    assert len(hits) == 1


def test_many_messages_go_one_request_each(fake, channel) -> None:
    batch = [message(i, f"p{i}@example.com") for i in range(1, 21)]
    results = by_touch(channel.send(batch))
    assert all(r.status == "sent" for r in results.values())
    assert len(fake.requests_to("POST", "/messages/send.json")) == 20
    assert {m.metadata["touch_id"] for m in fake.messages.values()} == {
        str(i) for i in range(1, 21)
    }


def test_each_request_is_recorded_in_flight_before_it_leaves(fake, channel) -> None:
    departed: list[list[int]] = []

    def departing(messages) -> None:
        assert len(fake.messages) == sum(len(d) for d in departed)  # nothing sent ahead
        departed.append([m.touch_id for m in messages])

    batch = [message(i, f"p{i}@example.com") for i in range(1, 6)]
    channel.send(batch, departing=departing)
    assert departed[0] == [1]
    assert sorted(t for d in departed for t in d) == [1, 2, 3, 4, 5]


def test_a_request_that_cannot_be_recorded_in_flight_is_not_made(fake, hits, channel) -> None:
    def departing(messages) -> None:
        raise RuntimeError("database is locked")

    [result] = channel.send([message()], departing=departing)
    assert result.status == "failed" and not result.permanent
    assert hits == []


# -- retries: 429, 503, no connection -----------------------------------------------------


def test_a_429_waits_for_retry_after_then_sends_once(fake, hits, channel, timer) -> None:
    fake.faults.rate_limited(1, retry_after=7)
    [result] = channel.send([message()])
    assert result.status == "sent"
    assert timer.slept == [7.0]
    assert len(hits) == 2 and len(fake.messages) == 1


def test_a_retry_after_too_far_ahead_is_left_to_the_engine(fake, hits, channel, timer) -> None:
    fake.faults.rate_limited(1, retry_after=600)
    [result] = channel.send([message()])
    assert result.status == "failed" and not result.permanent
    assert result.retry_after == 600.0 and timer.slept == [] and len(hits) == 1


def test_503s_are_retried_with_backoff_then_fail_for_a_later_run(
    fake, hits, channel, timer
) -> None:
    fake.faults.server_errors(4, status=503)
    [result] = channel.send([message()])
    assert result.status == "failed" and not result.permanent
    assert "after 4 attempts" in result.reason
    assert timer.slept == [0.5, 1.0, 2.0] and len(hits) == 4 and fake.messages == {}


def test_a_503_then_success_sends_once(fake, hits, channel, timer) -> None:
    fake.faults.server_errors(1, status=503)
    [result] = channel.send([message()])
    assert result.status == "sent" and len(fake.messages) == 1 and timer.slept == [0.5]


def test_a_refused_connection_is_retried_then_fails_for_a_later_run(timer) -> None:
    channel = MailchimpEmail(
        KEY, FROM, base_url=closed_port_url(), clock=FixedClock(NOW), sleep=timer.sleep
    )
    [result] = channel.send([message()])
    assert result.status == "failed" and not result.permanent
    assert "cannot connect" in result.reason and len(timer.slept) == 3


# -- ambiguous: timeouts after sending, 500 ------------------------------------------------


def test_a_timeout_after_receipt_is_ambiguous_then_reconciled_without_a_second_send(
    server, fake, hits, timer, lost_answers
) -> None:
    channel = make_channel(server, timer, timeout=7.5)
    fake.faults.timeouts(1, seconds=0)

    [result] = channel.send([message()])

    assert result.status == "ambiguous" and "did not answer within 7.5 s" in result.reason
    assert len(fake.messages) == 1 and len(hits) == 1 and timer.slept == []
    [answer] = channel.reconcile(
        [Inquiry(41, "ada@example.com", NOW, NOW)], NOW + timedelta(minutes=1)
    )
    assert answer.status == "delivered"
    assert answer.provider_message_id == fake.sent_to("ada@example.com")[0].id
    assert len(fake.requests_to("POST", "/messages/send.json")) == 1


def test_a_lost_answer_for_a_scheduled_message_is_reconciled_with_its_recall_ref(
    server, fake, timer, lost_answers
) -> None:
    channel = make_channel(server, timer)
    fake.faults.timeouts(1, seconds=0)
    due = NOW + timedelta(hours=6)
    [result] = channel.send([message(send_at=due)])
    assert result.status == "ambiguous"

    [answer] = channel.reconcile([Inquiry(41, "ada@example.com", NOW, due)], NOW)

    held = fake.sent_to("ada@example.com")[0]
    assert answer.status == "delivered" and answer.recall_ref == held.id
    [other] = channel.reconcile(
        [Inquiry(42, "ada@example.com", NOW, due, known_ids=frozenset({held.id}))], NOW
    )
    assert other.status == "later"  # not that one; its send time is still ahead


def test_two_lost_scheduled_sends_to_one_address_are_told_apart_by_their_metadata(
    server, fake, timer, lost_answers
) -> None:
    channel = make_channel(server, timer)
    fake.faults.timeouts(2, seconds=0)
    due = NOW + timedelta(hours=6)
    sent = channel.send([message(1, send_at=due), message(2, send_at=due)])
    assert [r.status for r in sent] == ["ambiguous", "ambiguous"]

    answers = channel.reconcile(
        [Inquiry(1, "ada@example.com", NOW, due), Inquiry(2, "ada@example.com", NOW, due)], NOW
    )

    held = {m.metadata["touch_id"]: m.id for m in fake.messages.values()}
    assert {a.touch_id: a.recall_ref for a in answers} == {1: held["1"], 2: held["2"]}
    assert all(a.status == "delivered" for a in answers)


def test_a_request_that_never_arrived_is_absent_once_search_has_caught_up(fake, channel) -> None:
    inquiry = Inquiry(77, "ada@example.com", NOW, NOW)
    [early] = channel.reconcile([inquiry], NOW + timedelta(minutes=2))
    [late] = channel.reconcile([inquiry], NOW + timedelta(minutes=11))
    assert early.status == "later" and late.status == "absent"


def test_reconciliation_matches_the_touch_in_the_recipients_messages(fake, channel) -> None:
    channel.send([message(1, "ada@example.com"), message(2, "ada@example.com")])

    answers = channel.reconcile(
        [Inquiry(2, "ada@example.com", NOW, NOW), Inquiry(3, "ada@example.com", NOW, NOW)],
        NOW + timedelta(minutes=11),
    )

    [search, *_] = fake.requests_to("POST", "/messages/search.json")
    assert search.json()["query"] == 'email:"ada@example.com"'
    by_id = {a.touch_id: a for a in answers}
    assert by_id[2].status == "delivered"
    assert by_id[2].provider_message_id == next(
        m.id for m in fake.messages.values() if m.metadata["touch_id"] == "2"
    )
    assert by_id[3].status == "absent"


def test_a_full_page_of_other_messages_proves_nothing(fake, channel, monkeypatch) -> None:
    monkeypatch.setattr(MailchimpEmail, "search_limit", 3)
    channel.send([message(i, "ada@example.com") for i in range(1, 4)])
    [answer] = channel.reconcile(
        [Inquiry(9, "ada@example.com", NOW, NOW)], NOW + timedelta(hours=1)
    )
    assert answer.status == "later"


def test_a_500_is_ambiguous_after_one_request(fake, hits, channel, timer) -> None:
    fake.faults.server_errors(1, status=500)
    [result] = channel.send([message()])
    assert result.status == "ambiguous" and len(hits) == 1 and timer.slept == []


def test_a_wrong_key_fails_the_batch_after_one_request(server, fake, hits, timer) -> None:
    channel = make_channel(server, timer, api_key="md-wrong")
    results = channel.send([message(i, f"p{i}@example.com") for i in range(1, 6)])
    assert all(r.status == "failed" and not r.permanent for r in results)
    assert all("MAILCHIMP_TRANSACTIONAL_API_KEY" in r.reason for r in results)
    assert len(hits) == 1 and fake.messages == {}


def test_a_wrong_base_url_is_configuration(server, fake, hits, timer) -> None:
    channel = make_channel(server, timer, base_url=server[0].url + "/api/9.9")
    results = channel.send([message(1), message(2, "b@example.com")])
    assert all("MAILCHIMP_TRANSACTIONAL_BASE_URL" in r.reason for r in results)
    assert len(hits) == 1


def test_the_key_is_not_in_repr_or_reasons(server, fake, timer) -> None:
    channel = make_channel(server, timer, api_key="md-wrong")
    [result] = channel.send([message()])
    assert "md-wrong" not in repr(channel) and "md-wrong" not in result.reason


# -- recall -------------------------------------------------------------------------------


def test_cancel_takes_a_scheduled_message_back(fake, channel) -> None:
    due = NOW + timedelta(hours=2)
    [sent] = channel.send([message(send_at=due)])

    [cancelled] = channel.cancel([Recall(41, sent.recall_ref, due)], NOW)

    assert cancelled.status == "cancelled" and fake.messages == {}
    fake.clock.set(due)
    assert fake.deliver_due() == 0


def test_a_repeated_cancel_whose_first_answer_was_lost_is_cancelled(fake, channel) -> None:
    due = NOW + timedelta(hours=2)
    [sent] = channel.send([message(send_at=due)])
    channel.cancel([Recall(41, sent.recall_ref, due)], NOW)
    [again] = channel.cancel([Recall(41, sent.recall_ref, due)], NOW)
    assert again.status == "cancelled"


def test_a_message_already_sent_is_too_late(fake, channel) -> None:
    due = NOW + timedelta(hours=2)
    [sent] = channel.send([message(send_at=due)])
    fake.clock.set(due)
    fake.deliver_due()
    [answer] = channel.cancel([Recall(41, sent.recall_ref, due)], NOW + timedelta(hours=1))
    assert answer.status == "too_late" and "already sent" in answer.reason


def test_past_its_send_time_no_cancel_is_asked(fake, hits, channel) -> None:
    [answer] = channel.cancel([Recall(41, "abc", NOW - timedelta(minutes=1))], NOW)
    assert answer.status == "too_late" and hits == []


def test_a_rate_limited_cancel_fails_the_rest_with_retry_after(fake, hits, channel, timer) -> None:
    fake.faults.rate_limited(4, retry_after=2)
    due = NOW + timedelta(hours=2)
    answers = channel.cancel([Recall(1, "a", due), Recall(2, "b", due)], NOW)
    assert [a.status for a in answers] == ["failed", "failed"]
    assert all(a.retry_after == 2.0 for a in answers)
    assert len(hits) == 4  # the first recall's attempts only
