"""Recalling scheduled email: SendGrid batch ids and scheduled sends, through the real SDK
against the SendGrid sandbox fake over loopback, on one fake clock."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from channels.base import OutgoingMessage, Recall, RecallResult, SendResult
from channels.email import SendGridEmail
from outreach.clock import FixedClock, ManualTimer
from outreach.sandbox.base import Fault, SandboxServer, json_response
from outreach.sandbox.sendgrid import FakeSendGrid

KEY = "SG.sandbox-key"
FROM = "jobs@acme.example"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=2)
TEMPLATE = "d-0123456789abcdef0123456789abcdef"
SCHEDULED_SENDS = "/v3/user/scheduled_sends"


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[SandboxServer, dict]]:
    """One loopback server for the module; each test plugs in its own fake.

    ``hits`` lists (method, path) of every request that reached the server, including
    those the fake answers before its request log (401, injected 429 and 5xx).
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
def fake(server, clock) -> FakeSendGrid:
    return use(server, FakeSendGrid(clock=clock))


@pytest.fixture
def hits(server, fake) -> list[tuple[str, str]]:
    return server[1]["hits"]


@pytest.fixture
def timer() -> ManualTimer:
    return ManualTimer()


@pytest.fixture
def channel(server, fake, clock, timer) -> SendGridEmail:
    return make_channel(server, clock, timer)


def use(server, fake: FakeSendGrid) -> FakeSendGrid:
    server[1]["fake"] = fake
    server[1]["hits"].clear()
    return fake


class StaleListing(FakeSendGrid):
    """Lists no scheduled sends, as a listing read just before another attempt set them."""

    def list_scheduled_sends(self, request):
        return json_response([])


def make_channel(server, clock: FixedClock, timer: ManualTimer, **overrides: Any) -> SendGridEmail:
    options: dict[str, Any] = {
        "base_url": server[0].url if server else None,
        "company_name": "Acme",
        "clock": clock,
        "sleep": timer.sleep,
    }
    options.update(overrides)
    return SendGridEmail(options.pop("api_key", KEY), FROM, **options)


def message(touch_id: int, send_at: datetime = LATER, **extra: Any) -> OutgoingMessage:
    fields: dict[str, Any] = {
        "touch_id": touch_id,
        "idempotency_key": f"key-{touch_id}",
        "person_id": touch_id,
        "channel": "email",
        "to": f"person{touch_id}@example.com",
        "body": "Hi,\n\nA role at Acme.",
        "send_at": send_at,
        "cadence_id": "backend",
        "step_id": "intro",
        "template": "intro",
        "variant": "a",
        "subject": "A role you might like",
        "recallable": True,
    }
    fields.update(extra)
    return OutgoingMessage(**fields)


def by_touch(results: list[SendResult] | list[RecallResult]) -> dict[int, Any]:
    assert len({r.touch_id for r in results}) == len(results)
    return {r.touch_id: r for r in results}


def schedule(channel: SendGridEmail, *touch_ids: int, send_at: datetime = LATER) -> list[Recall]:
    """Send recallable messages; the recalls the engine would keep for them."""
    results = by_touch(channel.send([message(t, send_at) for t in touch_ids]))
    assert all(r.status == "sent" and r.recall_ref for r in results.values())
    return [Recall(t, results[t].recall_ref, send_at) for t in touch_ids]


def delivered_to(fake: FakeSendGrid) -> set[str]:
    return {e["email"] for e in fake.drain_events() if e["event"] == "delivered"}


def requests_to(hits: list[tuple[str, str]], method: str, path: str) -> int:
    return sum(1 for m, p in hits if m == method and p.startswith(path))


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- sending with a batch id -----------------------------------------------------------


def test_a_recallable_message_goes_alone_with_a_batch_id_of_its_own(fake, channel) -> None:
    batch = [
        message(1, sendgrid_template_id=TEMPLATE),
        message(2, sendgrid_template_id=TEMPLATE),
        message(3, sendgrid_template_id=TEMPLATE, recallable=False),
        message(4, sendgrid_template_id=TEMPLATE, recallable=False),
    ]

    results = by_touch(channel.send(batch))

    bodies = {
        tuple(p["custom_args"]["touch_id"] for p in r["body"]["personalizations"]): r["body"]
        for r in fake.mail_requests
    }
    assert set(bodies) == {("1",), ("2",), ("3", "4")}
    assert bodies[("1",)]["batch_id"] == results[1].recall_ref
    assert bodies[("2",)]["batch_id"] == results[2].recall_ref
    assert results[1].recall_ref != results[2].recall_ref
    assert {results[1].recall_ref, results[2].recall_ref} <= set(fake.batches)
    assert "batch_id" not in bodies[("3", "4")]
    assert results[3].recall_ref is None and results[4].recall_ref is None


def test_batch_key_sends_recallable_template_messages_alone(channel) -> None:
    assert channel.batch_key(message(1, sendgrid_template_id=TEMPLATE)) == ()
    plain = message(2, sendgrid_template_id=TEMPLATE, recallable=False)
    assert channel.batch_key(plain) != ()


@pytest.mark.parametrize("ahead", [timedelta(0), timedelta(minutes=10), timedelta(minutes=5)])
def test_a_message_inside_the_cut_off_gets_no_batch_since_it_could_never_be_cancelled(
    fake, hits, channel, ahead
) -> None:
    [result] = channel.send([message(1, NOW + ahead)])

    assert result.status == "sent" and result.recall_ref is None
    assert "batch_id" not in fake.mail_requests[0]["body"]
    assert requests_to(hits, "POST", "/v3/mail/batch") == 0


def test_no_batch_id_means_no_mail_and_a_later_retry(fake, hits, channel, timer) -> None:
    fake.faults.server_errors(4, status=503)

    [result] = channel.send([message(1)])

    assert result.status == "failed" and not result.permanent
    assert "batch id" in result.reason and "not sent" in result.reason
    assert result.retry_after is not None
    assert not fake.mail_requests and requests_to(hits, "POST", "/v3/mail/send") == 0
    assert len(timer.slept) == 3


def test_a_timeout_after_the_batch_keeps_the_batch_id_for_a_recall(
    server, fake, clock, lost_answers
) -> None:
    channel = make_channel(server, clock, ManualTimer())
    fake.faults.add(Fault("slow", seconds=0))  # POST /v3/mail/batch goes through
    fake.faults.timeouts(1, seconds=0)  # POST /v3/mail/send is processed, not answered

    [result] = channel.send([message(1)])

    assert result.status == "ambiguous"
    assert result.recall_ref == fake.mail_requests[0]["body"]["batch_id"]
    [recall_result] = channel.cancel([Recall(1, result.recall_ref, LATER)], NOW)
    assert recall_result.status == "cancelled"
    clock.set(LATER)
    assert delivered_to(fake) == set()


# -- cancelling ------------------------------------------------------------------------


def test_a_cancelled_email_is_not_delivered_while_the_others_are(fake, clock, channel) -> None:
    first, _, third = schedule(channel, 1, 2, 3)

    results = channel.cancel([first, third], NOW + timedelta(hours=1))

    assert [r.status for r in results] == ["cancelled", "cancelled"]
    assert {b: e["status"] for b, e in fake.scheduled_sends.items()} == {
        first.ref: "cancel",
        third.ref: "cancel",
    }
    clock.set(LATER + timedelta(minutes=1))
    assert delivered_to(fake) == {"person2@example.com"}
    assert {m["custom_args"]["touch_id"] for m in fake.messages_in("cancelled")} == {"1", "3"}


def test_one_listing_per_call_counts_the_slots(fake, hits, channel) -> None:
    recalls = schedule(channel, 1, 2, 3)
    hits.clear()

    channel.cancel(recalls, NOW)

    assert requests_to(hits, "GET", SCHEDULED_SENDS) == 1
    assert requests_to(hits, "POST", SCHEDULED_SENDS) == 3


@pytest.mark.parametrize(
    ("before", "phrase"),
    [
        (timedelta(minutes=9, seconds=59), "due in 10 minutes"),
        (timedelta(0), "send time has passed"),
        (-timedelta(hours=1), "send time has passed"),
    ],
)
def test_inside_the_10_minute_cut_off_it_is_too_late_without_a_request(
    fake, hits, channel, before, phrase
) -> None:
    [recall] = schedule(channel, 1)
    hits.clear()

    [result] = channel.cancel([recall], LATER - before)

    assert result.status == "too_late"
    assert "10 minutes before send_at" in result.reason and phrase in result.reason
    assert hits == [] and not fake.scheduled_sends


def test_exactly_10_minutes_before_send_at_is_still_in_time(fake, channel) -> None:
    [recall] = schedule(channel, 1)

    [result] = channel.cancel([recall], LATER - timedelta(minutes=10))

    assert result.status == "cancelled"


def test_the_eleventh_cancel_fails_for_a_retry_while_ten_are_held(fake, hits, channel) -> None:
    recalls = schedule(channel, *range(1, 12))
    hits.clear()

    results = by_touch(channel.cancel(recalls, NOW))

    assert [results[t].status for t in range(1, 11)] == ["cancelled"] * 10
    eleventh = results[11]
    assert eleventh.status == "failed"
    assert "at most 10 batches paused or cancelled" in eleventh.reason
    assert eleventh.retry_after == SendGridEmail.slot_wait
    assert requests_to(hits, "POST", SCHEDULED_SENDS) == 10  # the full slots were counted
    assert len(fake.scheduled_sends) == 10


def test_a_slot_wait_never_runs_past_the_cut_off(fake, channel) -> None:
    recalls = schedule(channel, *range(1, 12), send_at=NOW + timedelta(minutes=12))

    results = by_touch(channel.cancel(recalls, NOW))

    assert results[11].status == "failed" and results[11].retry_after == 120


def test_a_max_limit_answer_fails_the_rest_without_more_posts(server, clock, hits, channel) -> None:
    fake = use(server, StaleListing(clock=clock))
    for recall in schedule(channel, *range(1, 11)):
        fake.scheduled_sends[recall.ref] = {"status": "cancel", "since": NOW.timestamp()}
    mine = schedule(channel, 11, 12)
    hits.clear()

    results = channel.cancel(mine, NOW)

    assert [r.status for r in results] == ["failed", "failed"]
    assert all("at most 10" in r.reason and r.retry_after for r in results)
    assert requests_to(hits, "POST", SCHEDULED_SENDS) == 1


def test_release_after_send_time_frees_slots_for_new_cancels(fake, hits, clock, channel) -> None:
    held = schedule(channel, *range(1, 11))
    assert [r.status for r in channel.cancel(held, NOW)] == ["cancelled"] * 10
    clock.set(LATER)
    waiting = schedule(channel, 11, send_at=LATER + timedelta(hours=2))
    assert channel.cancel(waiting, LATER)[0].status == "failed"

    assert channel.release(held, LATER + timedelta(minutes=59)) == []  # not yet safe
    hits.clear()
    released = channel.release(held, LATER + timedelta(hours=1))

    assert sorted(released) == list(range(1, 11))
    assert requests_to(hits, "DELETE", SCHEDULED_SENDS) == 10
    assert not fake.scheduled_sends
    assert delivered_to(fake) == set()  # deleting after send time dropped nothing back in
    assert channel.cancel(waiting, LATER + timedelta(hours=1))[0].status == "cancelled"


def test_release_skips_what_is_not_due_and_reports_what_sendgrid_no_longer_holds(
    fake, hits, channel
) -> None:
    due, later = schedule(channel, 1, 2)
    gone = Recall(3, "no-such-batch", LATER)
    channel.cancel([due, later], NOW)
    later = Recall(later.touch_id, later.ref, LATER + timedelta(hours=3))
    hits.clear()

    released = channel.release([due, later, gone], LATER + timedelta(hours=2))

    assert sorted(released) == [1, 3]
    assert requests_to(hits, "DELETE", SCHEDULED_SENDS) == 1
    assert set(fake.scheduled_sends) == {later.ref}


def test_release_never_deletes_a_pause(fake, channel) -> None:
    [recall] = schedule(channel, 1)
    fake.scheduled_sends[recall.ref] = {"status": "pause", "since": NOW.timestamp()}

    assert channel.release([recall], LATER + timedelta(hours=2)) == []

    assert fake.scheduled_sends[recall.ref]["status"] == "pause"


def test_release_errors_leave_the_recalls_for_the_next_run(fake, channel, timer) -> None:
    held = schedule(channel, 1, 2)
    channel.cancel(held, NOW)
    fake.faults.add(Fault("slow", seconds=0))  # the listing goes through
    fake.faults.server_errors(4, status=503)  # the first DELETE never does

    assert channel.release(held, LATER + timedelta(hours=2)) == []
    assert len(fake.scheduled_sends) == 2
    assert sorted(channel.release(held, LATER + timedelta(hours=2))) == [1, 2]


# -- retries and lost answers ----------------------------------------------------------


def test_a_lost_answer_is_found_cancelled_on_the_next_attempt(
    server, fake, clock, lost_answers
) -> None:
    channel = make_channel(server, clock, ManualTimer())
    [recall] = schedule(channel, 1)
    fake.faults.add(Fault("slow", seconds=0))  # the listing
    fake.faults.timeouts(1, seconds=0)  # the POST is processed, its answer is lost

    [first] = channel.cancel([recall], NOW)

    assert first.status == "failed" and first.retry_after
    assert fake.scheduled_sends[recall.ref]["status"] == "cancel"
    [second] = channel.cancel([recall], NOW + timedelta(minutes=1))
    assert second.status == "cancelled"
    clock.set(LATER)
    assert delivered_to(fake) == set()


def test_an_existing_status_the_listing_missed_is_read_and_settled(
    server, clock, hits, channel
) -> None:
    fake = use(server, StaleListing(clock=clock))
    cancelled, paused = schedule(channel, 1, 2)
    fake.scheduled_sends[cancelled.ref] = {"status": "cancel", "since": NOW.timestamp()}
    fake.scheduled_sends[paused.ref] = {"status": "pause", "since": NOW.timestamp()}
    hits.clear()

    results = channel.cancel([cancelled, paused], NOW)

    assert [r.status for r in results] == ["cancelled", "cancelled"]
    assert fake.scheduled_sends[paused.ref]["status"] == "cancel"
    assert requests_to(hits, "PATCH", SCHEDULED_SENDS) == 1


def test_a_paused_batch_is_changed_to_cancel(fake, hits, clock, channel) -> None:
    [recall] = schedule(channel, 1)
    fake.scheduled_sends[recall.ref] = {"status": "pause", "since": NOW.timestamp()}
    hits.clear()

    [result] = channel.cancel([recall], NOW)

    assert result.status == "cancelled"
    assert requests_to(hits, "PATCH", SCHEDULED_SENDS) == 1
    assert requests_to(hits, "POST", SCHEDULED_SENDS) == 0
    clock.set(LATER + timedelta(days=4))
    assert fake.messages_in("cancelled") and delivered_to(fake) == set()


def test_a_429_is_waited_out_in_process(fake, channel, timer) -> None:
    recalls = schedule(channel, 1, 2)
    fake.faults.rate_limited(1, retry_after=3)

    results = channel.cancel(recalls, NOW)

    assert [r.status for r in results] == ["cancelled", "cancelled"]
    assert timer.slept == [3.0]


def test_503s_past_the_last_attempt_fail_every_recall_for_a_retry(fake, hits, channel) -> None:
    recalls = schedule(channel, 1, 2, 3)
    fake.faults.add(Fault("slow", seconds=0))  # the listing
    fake.faults.server_errors(10, status=503)
    hits.clear()

    results = channel.cancel(recalls, NOW)

    assert [r.status for r in results] == ["failed"] * 3
    assert all("503" in r.reason and r.retry_after for r in results)
    assert requests_to(hits, "POST", SCHEDULED_SENDS) == 4  # the first recall's attempts only


def test_a_500_fails_that_recall_for_a_retry_and_the_rest_go_on(fake, channel) -> None:
    first, second = schedule(channel, 1, 2)
    fake.faults.add(Fault("slow", seconds=0))  # the listing
    fake.faults.server_errors(1, status=500)

    results = by_touch(channel.cancel([first, second], NOW))

    assert results[1].status == "failed" and results[1].retry_after == 60
    assert results[2].status == "cancelled"


def test_no_connection_fails_for_a_retry(clock, timer) -> None:
    channel = make_channel(None, clock, timer, base_url=closed_port_url())

    [result] = channel.cancel([Recall(1, "some-batch", LATER)], NOW)

    assert result.status == "failed" and "cannot connect" in result.reason
    assert result.retry_after is not None and len(timer.slept) == 3


def test_an_unknown_batch_id_fails_with_a_clear_reason(fake, channel) -> None:
    [result] = channel.cancel([Recall(1, "never-created", LATER)], NOW)

    assert result.status == "failed"
    assert "does not know this batch id" in result.reason and "invalid batch id" in result.reason
    assert not fake.scheduled_sends


def test_a_wrong_key_fails_every_recall_without_the_key_in_the_reason(server, fake, clock) -> None:
    channel = make_channel(server, clock, ManualTimer(), api_key="SG.wrong-key-123")

    results = channel.cancel([Recall(1, "a", LATER), Recall(2, "b", LATER)], NOW)

    assert [r.status for r in results] == ["failed", "failed"]
    assert all("401" in r.reason and "SENDGRID_API_KEY" in r.reason for r in results)
    assert all("SG.wrong-key-123" not in r.reason for r in results)
    assert all(r.retry_after is None for r in results)
