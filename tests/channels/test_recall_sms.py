"""Recalling scheduled SMS: Twilio scheduled messages cancelled by SID, through the real
``twilio`` SDK against the Twilio sandbox over loopback, on one fake clock."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from channels.base import OutgoingMessage, Recall
from channels.sms import TwilioSMS
from outreach.clock import FixedClock, ManualTimer
from outreach.sandbox.base import SandboxServer
from outreach.sandbox.twilio import FakeTwilio

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=2)
ADA = "+14155550100"


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[SandboxServer, dict]]:
    """One loopback server for the module; each test plugs in its own fake.

    ``hits`` lists (method, path) of every request that reached the server.
    """
    current: dict = {"hits": []}

    def app(environ, start_response):
        current["hits"].append((environ["REQUEST_METHOD"], environ["PATH_INFO"]))
        return current["fake"](environ, start_response)

    with SandboxServer(app) as running:
        yield running, current


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def fake(server, clock) -> FakeTwilio:
    server[1]["fake"] = fake = FakeTwilio(clock=clock)
    server[1]["hits"].clear()
    return fake


@pytest.fixture
def hits(server, fake) -> list[tuple[str, str]]:
    return server[1]["hits"]


@pytest.fixture
def timer() -> ManualTimer:
    return ManualTimer()


def sms_for(base_url: str, fake: FakeTwilio, clock, timer, **options: Any) -> TwilioSMS:
    settings: dict[str, Any] = {
        "messaging_service_sid": fake.messaging_service_sid,
        "base_url": base_url,
        "clock": clock,
        "sleep": timer.sleep,
        "timeout": 5.0,
        **options,
    }
    return TwilioSMS(fake.account_sid, settings.pop("token", fake.auth_token), **settings)


@pytest.fixture
def sms(server, fake, clock, timer) -> Iterator[TwilioSMS]:
    channel = sms_for(server[0].url, fake, clock, timer)
    yield channel
    channel.close()


def message(touch_id: int, send_at: datetime = LATER, *, recallable: bool = True):
    return OutgoingMessage(
        touch_id=touch_id,
        idempotency_key=f"touch-{touch_id}",
        person_id=touch_id,
        channel="sms",
        to=ADA,
        body="Hi Ada, a role you might like",
        send_at=send_at,
        cadence_id="default",
        step_id="sms-1",
        template="sms_intro",
        variant="a",
        recallable=recallable,
    )


def schedule(sms: TwilioSMS, *touch_ids: int, send_at: datetime = LATER) -> list[Recall]:
    results = {r.touch_id: r for r in sms.send([message(t, send_at) for t in touch_ids])}
    assert all(r.status == "sent" and r.recall_ref for r in results.values())
    return [Recall(t, results[t].recall_ref, send_at) for t in touch_ids]


def updates(hits: list[tuple[str, str]]) -> int:
    """POSTs to one message (cancels), not to the Messages list (creates)."""
    return sum(1 for m, p in hits if m == "POST" and not p.endswith("/Messages.json"))


# -- the recall reference --------------------------------------------------------------


def test_a_recallable_scheduled_message_reports_its_sid(fake, sms) -> None:
    results = {
        r.touch_id: r
        for r in sms.send(
            [
                message(1),
                message(2, recallable=False),
                message(3, NOW),  # due now: sent at once, nothing to recall
            ]
        )
    }

    assert results[1].recall_ref == results[1].provider_message_id
    assert fake.message(results[1].recall_ref)["status"] == "scheduled"
    assert results[2].recall_ref is None and results[2].status == "sent"
    assert results[3].recall_ref is None and results[3].status == "sent"


# -- cancelling ------------------------------------------------------------------------


def test_a_cancelled_message_never_goes_out_while_the_other_does(fake, clock, hits, sms) -> None:
    first, second = schedule(sms, 1, 2)
    hits.clear()

    [result] = sms.cancel([first], NOW + timedelta(minutes=30))

    assert result.status == "cancelled" and updates(hits) == 1
    clock.set(LATER + timedelta(minutes=1))
    assert fake.message(first.ref)["status"] == "canceled"
    assert fake.message(second.ref)["status"] == "delivered"  # went out a minute ago


def test_after_send_time_it_is_too_late_without_a_request(fake, hits, sms) -> None:
    [recall] = schedule(sms, 1)
    hits.clear()

    [result] = sms.cancel([recall], LATER)

    assert result.status == "too_late" and "send time has passed" in result.reason
    assert hits == []


def test_a_message_twilio_already_sent_is_too_late(fake, clock, sms) -> None:
    [recall] = schedule(sms, 1)
    clock.set(LATER + timedelta(seconds=5))  # Twilio's clock is past send_at, ours is not

    [result] = sms.cancel([recall], LATER - timedelta(seconds=5))

    assert result.status == "too_late"
    assert "30409" in result.reason and "delivered" in result.reason  # 4 s after it left


def test_a_repeated_cancel_whose_first_answer_was_lost_is_cancelled(fake, hits, sms) -> None:
    [recall] = schedule(sms, 1)
    assert sms.cancel([recall], NOW)[0].status == "cancelled"

    [again] = sms.cancel([recall], NOW)

    assert again.status == "cancelled" and "already canceled" in again.reason


def test_a_lost_answer_to_the_cancel_is_retried_safely(
    server, fake, clock, timer, lost_answers
) -> None:
    channel = sms_for(server[0].url, fake, clock, timer)
    [recall] = schedule(channel, 1)
    fake.faults.timeouts(1, seconds=0)  # the cancel is processed, its answer lost

    [first] = channel.cancel([recall], NOW)

    assert first.status == "failed" and first.retry_after
    assert fake.message(recall.ref)["status"] == "canceled"
    assert channel.cancel([recall], NOW)[0].status == "cancelled"
    channel.close()


def test_a_429_is_retried_in_process(fake, timer, sms) -> None:
    recalls = schedule(sms, 1, 2)
    fake.faults.rate_limited(1)

    results = sms.cancel(recalls, NOW)

    assert [r.status for r in results] == ["cancelled", "cancelled"]
    assert timer.slept == [0.5]


def test_503s_past_the_last_attempt_fail_every_recall_for_a_retry(fake, hits, sms) -> None:
    recalls = schedule(sms, 1, 2, 3)
    fake.faults.server_errors(10, status=503)
    hits.clear()

    results = sms.cancel(recalls, NOW)

    assert [r.status for r in results] == ["failed"] * 3
    assert all("503" in r.reason and r.retry_after for r in results)
    assert updates(hits) == 4  # the first recall's attempts only
    assert all(fake.message(r.ref)["status"] == "scheduled" for r in recalls)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_no_connection_fails_for_a_retry(fake, clock, timer) -> None:
    channel = sms_for(f"http://127.0.0.1:{_closed_port()}", fake, clock, timer, max_attempts=2)

    results = channel.cancel([Recall(1, "SM" + "1" * 32, LATER), Recall(2, "SM2", LATER)], NOW)

    assert [r.status for r in results] == ["failed", "failed"]
    assert all("cannot connect" in r.reason and r.retry_after == 1.0 for r in results)
    assert timer.slept == [0.5]


def test_an_unknown_sid_fails_with_a_clear_reason(fake, sms) -> None:
    [recall] = schedule(sms, 1)
    unknown = replace(recall, touch_id=2, ref="SM" + "0" * 32)

    results = {r.touch_id: r for r in sms.cancel([unknown, recall], NOW)}

    assert results[2].status == "failed" and "no message" in results[2].reason
    assert results[2].retry_after is None
    assert results[1].status == "cancelled"


def test_a_wrong_token_fails_every_recall_without_the_token_in_the_reason(
    server, fake, clock, timer
) -> None:
    channel = sms_for(server[0].url, fake, clock, timer, token="wrong-token-123")

    results = channel.cancel([Recall(1, "SM" + "1" * 32, LATER), Recall(2, "SM2", LATER)], NOW)

    assert [r.status for r in results] == ["failed", "failed"]
    assert all("TWILIO_AUTH_TOKEN" in r.reason for r in results)
    assert all("wrong-token-123" not in r.reason for r in results)
    channel.close()
