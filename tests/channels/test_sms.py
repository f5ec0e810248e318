"""The Twilio SMS channel: the real ``twilio`` SDK against the Twilio sandbox over loopback."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from werkzeug.wrappers import Response

from channels.base import OutgoingMessage, SendResult
from channels.sms import TwilioSMS, _Sender
from outreach.clock import FixedClock, ManualTimer
from outreach.errors import ConfigError
from outreach.sandbox.base import SandboxServer, json_response
from outreach.sandbox.twilio import FakeTwilio, SandboxHttpClient

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
FROM = "+15005550006"
ADA = "+14155550100"
OPTED_OUT = "+14155550111"
INVALID = "+14155550122"
LANDLINE = "+14155550133"
PUBLIC_URL = "https://engine.example/"
CALLBACK = "https://engine.example/webhooks/twilio/status"


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[SandboxServer, dict]]:
    """One loopback server for the module; each test plugs in its own fake.

    ``hits`` counts every request that reaches the server, including those the fake
    refuses before logging them (401s, injected 429s and 5xx).
    """
    current: dict = {"hits": []}

    def app(environ, start_response):
        current["hits"].append(environ["PATH_INFO"])
        return current["fake"](environ, start_response)

    with SandboxServer(app) as running:
        yield running, current


def use(server, fake: FakeTwilio) -> FakeTwilio:
    server[1]["fake"] = fake
    server[1]["hits"] = []
    return fake


def hits(server) -> int:
    return len(server[1]["hits"])


@pytest.fixture
def fake(server) -> FakeTwilio:
    return use(
        server,
        FakeTwilio(
            clock=FixedClock(NOW), opted_out={OPTED_OUT}, invalid={INVALID}, landlines={LANDLINE}
        ),
    )


@pytest.fixture
def timer() -> ManualTimer:
    return ManualTimer()


def sms_for(server, fake: FakeTwilio, timer: ManualTimer, **options) -> TwilioSMS:
    token = options.pop("token", fake.auth_token)
    settings = {
        "from_number": FROM,
        "base_url": server[0].url,
        "clock": FixedClock(NOW),
        "sleep": timer.sleep,
        "timeout": 5.0,
        **options,
    }
    return TwilioSMS(fake.account_sid, token, **settings)


@pytest.fixture
def sms(server, fake, timer) -> Iterator[TwilioSMS]:
    channel = sms_for(server, fake, timer)
    yield channel
    channel.close()


@pytest.fixture
def scheduler(server, fake, timer) -> Iterator[TwilioSMS]:
    """Sends through the fake's Messaging Service, with a public URL for status callbacks."""
    channel = sms_for(
        server,
        fake,
        timer,
        from_number=None,
        messaging_service_sid=fake.messaging_service_sid,
        public_url=PUBLIC_URL,
    )
    yield channel
    channel.close()


def message(
    touch_id: int = 1,
    *,
    to: str = ADA,
    body: str = "Hi Ada, a role you might like",
    send_at: datetime = NOW,
) -> OutgoingMessage:
    return OutgoingMessage(
        touch_id=touch_id,
        idempotency_key=f"touch-{touch_id}",
        person_id=touch_id,
        channel="sms",
        to=to,
        body=body,
        send_at=send_at,
        cadence_id="default",
        step_id="sms-1",
        template="sms_intro",
        variant="a",
    )


def only(results: list[SendResult]) -> SendResult:
    [result] = results
    return result


# -- sending ---------------------------------------------------------------------------


def test_a_send_from_a_number_is_created_and_its_sid_kept(fake, sms, server) -> None:
    result = only(sms.send([message(7)]))

    [created] = fake.messages
    assert result == SendResult.sent(message(7), provider_message_id=created["sid"])
    assert created["to"] == ADA and created["from"] == FROM
    assert created["body"] == "Hi Ada, a role you might like"
    assert created["messaging_service_sid"] is None and created["status"] == "queued"
    assert created["status_callback"] is None and created["send_at"] is None
    assert hits(server) == 1
    assert sms.max_schedule_ahead == timedelta(0)
    assert sms.min_schedule_ahead == timedelta(0)


def test_a_messaging_service_sends_with_the_status_callback(fake, scheduler) -> None:
    result = only(scheduler.send([message()]))

    [created] = fake.messages
    assert result.status == "sent" and result.provider_message_id == created["sid"]
    assert created["from"] is None
    assert created["messaging_service_sid"] == fake.messaging_service_sid
    assert created["status_callback"] == CALLBACK
    assert scheduler.max_schedule_ahead == timedelta(days=35)
    assert scheduler.min_schedule_ahead == timedelta(minutes=16)
    assert TwilioSMS.max_schedule_ahead == timedelta(0)
    assert TwilioSMS.min_schedule_ahead == timedelta(0)


def test_without_a_public_url_there_is_no_status_callback(fake, server, timer) -> None:
    channel = sms_for(server, fake, timer, messaging_service_sid=fake.messaging_service_sid)

    channel.send([message()])

    [created] = fake.messages
    assert created["status_callback"] is None
    # Given both, the channel prefers the Messaging Service.
    assert created["from"] is None
    assert created["messaging_service_sid"] == fake.messaging_service_sid


def test_an_injected_http_client_is_used_one_request_at_a_time(fake, server, timer) -> None:
    http = SandboxHttpClient(server[0].url, timeout=5)
    channel = sms_for(server, fake, timer, base_url="https://unused.example", http_client=http)

    results = channel.send([message(i) for i in range(1, 4)])

    assert channel.workers == 1
    assert sorted(r.touch_id for r in results) == [1, 2, 3]
    assert all(r.status == "sent" for r in results) and len(fake.messages) == 3


def test_a_channel_without_a_sender_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        TwilioSMS("AC" + "0" * 32, "token")

    assert "TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID" in str(caught.value)


# -- scheduling ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "send_at",
    [
        NOW + timedelta(days=2),
        # the SDK formats SendAt as UTC whatever its offset: the channel converts first
        (NOW + timedelta(days=2)).astimezone(timezone(timedelta(hours=-5))),
    ],
)
def test_a_message_two_days_ahead_is_scheduled(fake, scheduler, send_at) -> None:
    result = only(scheduler.send([message(send_at=send_at)]))

    [created] = fake.messages
    assert result.status == "sent" and result.provider_message_id == created["sid"]
    assert created["status"] == "scheduled"
    assert created["send_at"] == NOW + timedelta(days=2)


@pytest.mark.parametrize(
    ("ahead", "scheduled"),
    [
        (timedelta(0), False),
        (-timedelta(hours=1), False),
        (timedelta(minutes=16), True),
        (timedelta(minutes=20), True),
        (timedelta(days=35), True),
    ],
)
def test_a_due_message_is_sent_now_and_a_later_one_scheduled(
    fake, scheduler, ahead, scheduled
) -> None:
    result = only(scheduler.send([message(send_at=NOW + ahead)]))

    [created] = fake.messages
    assert result.status == "sent"
    assert created["status"] == ("scheduled" if scheduled else "queued")
    assert created["send_at"] == (NOW + ahead if scheduled else None)


@pytest.mark.parametrize(
    ("ahead", "minutes"),
    [
        (timedelta(seconds=1), "1 minute,"),
        (timedelta(minutes=5), "5 minutes,"),
        # Twilio checks the 15-minute minimum on arrival: too close to it is not scheduled.
        (timedelta(minutes=15), "15 minutes,"),
        (timedelta(minutes=15, seconds=59), "16 minutes,"),
    ],
)
def test_a_message_due_under_16_minutes_ahead_is_never_sent_early(
    fake, scheduler, server, ahead, minutes
) -> None:
    result = only(scheduler.send([message(send_at=NOW + ahead)]))

    assert result.status == "failed" and not result.permanent and result.suppress is None
    assert result.retry_after == ahead.total_seconds()
    assert f"due in {minutes} sooner than Twilio can schedule; not sent early" in result.reason
    assert hits(server) == 0 and not fake.messages


class SteppingClock:
    """Ten seconds later each time it is read."""

    def __init__(self) -> None:
        self.at = NOW

    def now(self) -> datetime:
        self.at += timedelta(seconds=10)
        return self.at


def test_a_retry_that_brings_send_at_under_the_minimum_is_not_sent_early(server, timer) -> None:
    fake = use(server, FakeTwilio(clock=FixedClock(NOW)))
    fake.faults.rate_limited(1)
    channel = sms_for(
        server,
        fake,
        timer,
        from_number=None,
        messaging_service_sid=fake.messaging_service_sid,
        clock=SteppingClock(),
    )

    result = only(channel.send([message(send_at=NOW + timedelta(minutes=16, seconds=25))]))

    # Read at +10 s (the batch) and +20 s (the first attempt, answered 429): 16 minutes
    # ahead or more; at +30 s (the retry) only 15m55s: refused, not sent at once.
    assert result.status == "failed" and not result.permanent
    assert "not sent early" in result.reason and result.retry_after == 955
    assert hits(server) == 1 and not fake.messages


def test_without_a_messaging_service_a_later_message_is_not_sent_early(fake, sms, server) -> None:
    later = only(sms.send([message(1, send_at=NOW + timedelta(days=2))]))
    soon = only(sms.send([message(2, send_at=NOW + timedelta(seconds=61))]))
    within = only(sms.send([message(3, send_at=NOW + timedelta(seconds=60))]))

    for result, ahead in ((later, timedelta(days=2)), (soon, timedelta(seconds=61))):
        assert result.status == "failed" and not result.permanent
        assert result.retry_after == ahead.total_seconds() and "not sent early" in result.reason
        assert "TWILIO_MESSAGING_SERVICE_SID" in result.reason
    assert within.status == "sent"
    [created] = fake.messages
    assert created["status"] == "queued" and created["send_at"] is None
    assert hits(server) == 1


def test_beyond_35_days_is_refused_without_a_request(fake, scheduler, server) -> None:
    result = only(scheduler.send([message(send_at=NOW + timedelta(days=36))]))

    assert result.status == "failed" and not result.permanent
    assert result.retry_after == timedelta(days=1).total_seconds()
    assert hits(server) == 0


# -- segments --------------------------------------------------------------------------


def test_a_ucs2_body_over_the_cap_fails_permanently_without_a_request(fake, sms, server) -> None:
    result = only(sms.send([message(body="ж" * 202)]))

    assert result == SendResult.failed(
        message(body="ж" * 202),
        "SMS is 4 segments (UCS-2: 'ж' is not GSM-7), the policy allows 3",
        permanent=True,
    )
    assert hits(server) == 0 and not fake.messages


def test_a_gsm7_body_over_the_cap_names_its_length(fake, sms, server) -> None:
    result = only(sms.send([message(body="a" * 460)]))

    assert result.status == "failed" and result.permanent
    assert result.reason == "SMS is 4 segments (GSM-7, 460 characters), the policy allows 3"
    assert hits(server) == 0


def test_the_cap_is_a_setting(fake, server, timer) -> None:
    channel = sms_for(server, fake, timer, max_segments=4)

    assert only(channel.send([message(body="a" * 460)])).status == "sent"
    assert fake.messages[0]["num_segments"] == 4


# -- refusals --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("to", "code", "suppress"),
    [
        (OPTED_OUT, 21610, "opted_out"),
        (INVALID, 21211, "invalid"),
        ("4155550100", 21211, "invalid"),
        (LANDLINE, 21614, "invalid"),
    ],
)
def test_a_refused_recipient_is_suppressed(fake, sms, server, timer, to, code, suppress) -> None:
    result = only(sms.send([message(to=to)]))

    assert result.status == "failed" and result.permanent
    assert result.suppress == suppress
    assert f"twilio error {code}" in result.reason and "HTTP 400" in result.reason
    assert to not in result.reason and "4155550" not in result.reason
    assert hits(server) == 1 and not timer.slept and not fake.messages


def test_another_4xx_is_permanent_with_its_code_and_no_suppression(fake, server, timer) -> None:
    channel = sms_for(server, fake, timer, max_segments=20)

    result = only(channel.send([message(body="a" * 1700)]))

    assert result.status == "failed" and result.permanent and result.suppress is None
    assert result.reason.startswith("twilio error 21617: The concatenated message body")
    assert hits(server) == 1


class MisconfiguredTwilio(FakeTwilio):
    """Answers every create with the Twilio error ``code`` (HTTP ``status``)."""

    def __init__(self, code: int, status: int = 400) -> None:
        super().__init__(clock=FixedClock(NOW))
        self.code, self.status = code, status

    def create_message(self, request, account_sid: str) -> object:
        body = {"code": self.code, "message": "Refused", "more_info": "", "status": self.status}
        return json_response(body, self.status)


@pytest.mark.parametrize(
    ("code", "status", "fix"),
    [
        (21212, 400, "TWILIO_FROM_NUMBER / TWILIO_MESSAGING_SERVICE_SID"),
        (21702, 400, "TWILIO_MESSAGING_SERVICE_SID"),
        (21704, 400, "TWILIO_MESSAGING_SERVICE_SID"),
        (20404, 404, "TWILIO_ACCOUNT_SID and TWILIO_BASE_URL"),
    ],
)
def test_a_configuration_code_fails_the_batch_after_one_request(
    server, timer, code, status, fix
) -> None:
    fake = use(server, MisconfiguredTwilio(code, status))
    channel = sms_for(server, fake, timer, workers=4)

    results = channel.send([message(i) for i in range(1, 5)])

    assert sorted(r.touch_id for r in results) == [1, 2, 3, 4]
    for result in results:
        assert result.status == "failed" and not result.permanent and result.suppress is None
        assert f"twilio error {code}" in result.reason and f"check {fix}" in result.reason
    assert hits(server) == 1 and not timer.slept


def test_a_from_number_not_on_the_account_fails_the_batch_after_one_request(
    fake, server, timer
) -> None:
    channel = sms_for(server, fake, timer, from_number="+15005550001", workers=4)

    results = channel.send([message(i) for i in range(1, 5)])

    for result in results:
        assert result.status == "failed" and not result.permanent and result.suppress is None
        assert result.reason.startswith("twilio error 21606: The From phone number <number> is")
        assert "TWILIO_FROM_NUMBER" in result.reason and "5005550001" not in result.reason
    assert hits(server) == 1 and not fake.messages


def test_an_unknown_messaging_service_fails_the_batch_after_one_request(
    fake, server, timer
) -> None:
    channel = sms_for(server, fake, timer, from_number=None, messaging_service_sid="MG" + "0" * 32)

    results = channel.send([message(i) for i in range(1, 4)])

    for result in results:
        assert result.status == "failed" and not result.permanent
        assert "twilio error 21701" in result.reason
        assert "check TWILIO_MESSAGING_SERVICE_SID" in result.reason
    assert hits(server) == 1 and not fake.messages


def test_a_wrong_base_url_fails_the_batch_after_one_request(fake, server, timer) -> None:
    channel = sms_for(server, fake, timer, base_url=server[0].url + "/not-twilio")

    results = channel.send([message(i) for i in range(1, 4)])

    for result in results:
        assert result.status == "failed" and not result.permanent
        assert "HTTP 404" in result.reason and "TWILIO_BASE_URL" in result.reason
    assert hits(server) == 1 and not fake.messages


def test_reasons_never_carry_a_phone_number_or_the_token(fake, sms) -> None:
    batch = [message(1, to=OPTED_OUT), message(2, to=INVALID), message(3, to=LANDLINE)]

    results = sms.send(batch)

    assert len(results) == 3
    for result in results:
        assert "+1" not in result.reason and "555" not in result.reason
        assert fake.auth_token not in result.reason


# -- retries ---------------------------------------------------------------------------


def test_a_429_is_retried_with_backoff_then_sent(fake, sms, server, timer) -> None:
    fake.faults.rate_limited(2)

    result = only(sms.send([message()]))

    assert result.status == "sent" and result.provider_message_id == fake.messages[0]["sid"]
    assert timer.slept == [0.5, 1.0]
    assert hits(server) == 3 and len(fake.messages) == 1


class RetryAfterTwilio(FakeTwilio):
    """Twilio documents no ``Retry-After``; should it send one, the channel honours it."""

    retry_after = "7"

    def too_many_requests(self, retry_after: float | None) -> object:
        response = json_response(
            {"code": 20429, "message": "Too Many Requests", "more_info": "", "status": 429}, 429
        )
        response.headers["Retry-After"] = self.retry_after
        return response


def test_a_retry_after_header_sets_the_wait(server, timer) -> None:
    fake = use(server, RetryAfterTwilio(clock=FixedClock(NOW)))
    fake.faults.rate_limited(1)

    result = only(sms_for(server, fake, timer).send([message()]))

    assert result.status == "sent" and timer.slept == [7.0]


def test_a_retry_after_over_a_minute_is_left_to_the_engine(server, timer) -> None:
    fake = use(server, RetryAfterTwilio(clock=FixedClock(NOW)))
    fake.retry_after = "3600"
    fake.faults.rate_limited(1)

    result = only(sms_for(server, fake, timer).send([message()]))

    assert result.status == "failed" and not result.permanent
    assert result.retry_after == 3600.0 and "twilio error 20429" in result.reason
    assert timer.slept == [] and hits(server) == 1 and not fake.messages


def test_a_503_is_retried(fake, sms, server, timer) -> None:
    fake.faults.server_errors(1, status=503)

    result = only(sms.send([message()]))

    assert result.status == "sent" and timer.slept == [0.5]
    assert hits(server) == 2 and len(fake.messages) == 1


def test_exhausted_retries_fail_for_now_with_a_retry_after(fake, sms, server, timer) -> None:
    fake.faults.rate_limited(4)

    result = only(sms.send([message()]))

    assert result.status == "failed" and not result.permanent
    assert result.retry_after == 4.0
    assert "twilio error 20429" in result.reason and "after 4 attempts" in result.reason
    assert timer.slept == [0.5, 1.0, 2.0]
    assert hits(server) == 4 and not fake.messages


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_refused_connection_is_retried_then_fails_for_now(fake, timer) -> None:
    channel = TwilioSMS(
        fake.account_sid,
        fake.auth_token,
        from_number=FROM,
        base_url=f"http://127.0.0.1:{_closed_port()}",
        max_attempts=3,
        sleep=timer.sleep,
        clock=FixedClock(NOW),
    )

    result = only(channel.send([message()]))

    assert result.status == "failed" and not result.permanent
    assert "cannot connect" in result.reason and result.retry_after == 2.0
    assert timer.slept == [0.5, 1.0]


# -- ambiguity -------------------------------------------------------------------------


def test_a_timeout_after_receipt_is_ambiguous_and_sent_once(
    fake, server, timer, lost_answers
) -> None:
    channel = sms_for(server, fake, timer)
    fake.faults.timeouts(1, seconds=0)

    result = only(channel.send([message()]))

    assert result.status == "ambiguous" and "may have been processed" in result.reason
    assert len(fake.messages) == 1 and hits(server) == 1 and not timer.slept


@pytest.mark.parametrize("status", [500, 502, 504])
def test_a_5xx_other_than_503_is_ambiguous_after_one_request(
    fake, sms, server, timer, status
) -> None:
    fake.faults.server_errors(1, status=status)

    result = only(sms.send([message()]))

    assert result.status == "ambiguous" and f"HTTP {status}" in result.reason
    assert hits(server) == 1 and not timer.slept


@pytest.fixture
def hang_up() -> Iterator[tuple[str, list[bytes]]]:
    """A server that reads each whole request, then closes the connection without answering."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    received: list[bytes] = []
    stop = threading.Event()

    def read_request(conn: socket.socket) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(body) < length:
            body += conn.recv(65536)
        return data

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                received.append(read_request(conn))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", received
    stop.set()
    thread.join(timeout=5)
    listener.close()


def test_a_connection_lost_after_sending_is_ambiguous_and_not_resent(hang_up, timer) -> None:
    url, received = hang_up
    channel = TwilioSMS("AC" + "0" * 32, "token", from_number=FROM, base_url=url, sleep=timer.sleep)

    result = only(channel.send([message()]))

    assert result.status == "ambiguous" and "not retried" in result.reason
    assert len(received) == 1 and received[0].startswith(b"POST /2010-04-01/Accounts/")
    assert not timer.slept


# -- exceptions the translator does not know -------------------------------------------


def test_an_unknown_exception_after_the_request_is_ambiguous_for_that_message_only(
    fake, sms, caplog
) -> None:
    accepted = sms._accepted

    def explode(message: OutgoingMessage, created: object) -> SendResult:
        if message.touch_id == 2:
            raise RuntimeError(f"boom for {message.to} with {fake.auth_token}")
        return accepted(message, created)

    sms._accepted = explode  # type: ignore[method-assign]
    caplog.set_level(logging.DEBUG, logger="outreach")

    results = {r.touch_id: r for r in sms.send([message(i) for i in (1, 2, 3)])}

    assert results[2] == SendResult.ambiguous(
        message(2), "unexpected RuntimeError from the Twilio SDK"
    )
    assert results[1].status == results[3].status == "sent"
    assert "RuntimeError" in caplog.text and "touch 2" in caplog.text
    assert ADA not in caplog.text and fake.auth_token not in caplog.text


class GarbledTwilio(FakeTwilio):
    """Creates the message, then answers with a body that is not JSON."""

    def create_message(self, request, account_sid: str) -> object:
        super().create_message(request, account_sid)
        return Response(b"<html>proxy page</html>", status=201)


def test_an_unexpected_sdk_error_is_ambiguous_and_names_only_its_type(server, timer) -> None:
    fake = use(server, GarbledTwilio(clock=FixedClock(NOW)))

    result = only(sms_for(server, fake, timer).send([message()]))

    assert result.status == "ambiguous"
    assert result.reason.startswith("unexpected JSONDecodeError from the Twilio SDK")
    assert len(fake.messages) == 1 and hits(server) == 1 and not timer.slept


def test_a_client_that_cannot_be_set_up_fails_without_a_request(fake, timer) -> None:
    channel = TwilioSMS(
        fake.account_sid,
        fake.auth_token,
        from_number=FROM,
        base_url="http://[::1",
        sleep=timer.sleep,
    )

    result = only(channel.send([message()]))

    assert result.status == "failed" and not result.permanent
    assert "ValueError" in result.reason and "not sent" in result.reason


def test_a_token_that_cannot_be_encoded_fails_before_anything_is_sent(fake, server, timer) -> None:
    # requests encodes Basic credentials as Latin-1 while preparing the request.
    channel = sms_for(server, fake, timer, token="t\u20acken")

    result = only(channel.send([message()]))

    assert result.status == "failed" and not result.permanent
    assert "UnicodeEncodeError" in result.reason and "nothing was sent" in result.reason
    assert "t\u20acken" not in result.reason
    assert hits(server) == 0 and not timer.slept


# -- closing ---------------------------------------------------------------------------


class ClosingHttp:
    def __init__(self, fails: bool = False) -> None:
        self.fails = fails
        self.closed = 0

    def close(self) -> None:
        self.closed += 1
        if self.fails:
            raise OSError("cannot close")


def test_close_is_idempotent_and_closes_every_client_even_if_one_fails(fake, server, timer) -> None:
    channel = sms_for(server, fake, timer)
    assert only(channel.send([message()])).status == "sent"
    broken, fine = ClosingHttp(fails=True), ClosingHttp()
    for http in (broken, fine):
        channel._idle.put(_Sender(client=None, http=http))  # type: ignore[arg-type]

    channel.close()
    channel.close()

    assert broken.closed == 1 and fine.closed == 1
    assert channel._idle.empty()
    # A later send opens a new client.
    assert only(channel.send([message(2)])).status == "sent"
    channel.close()


# -- credentials -----------------------------------------------------------------------


def test_a_wrong_token_fails_the_batch_after_one_request(fake, server, timer) -> None:
    channel = sms_for(server, fake, timer, token="not-the-token", workers=4)

    results = channel.send([message(i) for i in range(1, 6)])

    assert sorted(r.touch_id for r in results) == [1, 2, 3, 4, 5]
    assert all(r.status == "failed" and not r.permanent for r in results)
    assert len({r.reason for r in results}) == 1
    reason = results[0].reason
    assert "TWILIO_ACCOUNT_SID" in reason and "TWILIO_AUTH_TOKEN" in reason
    assert "not-the-token" not in reason
    assert hits(server) == 1 and not timer.slept and not fake.messages

    channel.send([message(i) for i in range(6, 11)])

    assert hits(server) == 2  # the next batch tries once again


# -- batches ---------------------------------------------------------------------------


def test_a_batch_of_20_returns_one_result_per_touch(fake, sms, server) -> None:
    batch = [message(100 + i, to=f"+1415555{i:04d}") for i in range(20)]

    results = sms.send(batch)

    assert sorted(r.touch_id for r in results) == list(range(100, 120))
    assert all(r.status == "sent" for r in results)
    assert {r.provider_message_id for r in results} == {m["sid"] for m in fake.messages}
    assert len(fake.messages) == 20 and hits(server) == 20


def test_a_mixed_batch_maps_each_message(fake, sms) -> None:
    batch = [
        message(1),
        message(2, to=OPTED_OUT),
        message(3, body="ж" * 202),
        message(4, to=LANDLINE),
    ]

    results = {r.touch_id: r for r in sms.send(batch)}

    assert results[1].status == "sent"
    assert (results[2].status, results[2].suppress) == ("failed", "opted_out")
    assert (results[3].status, results[3].permanent, results[3].suppress) == ("failed", True, None)
    assert (results[4].status, results[4].suppress) == ("failed", "invalid")


def test_messages_of_a_batch_go_out_concurrently(server, fake, sms) -> None:
    sms.send([message(0)])  # the credentials are known good from here on
    # Each request waits at the server until another one is in flight too: a batch sent one
    # request at a time never gets past its first (which fails after the safety timeout).
    meet = threading.Barrier(2, timeout=60)
    inner = server[1]["fake"]

    def in_pairs(environ, start_response):
        meet.wait()
        return inner(environ, start_response)

    server[1]["fake"] = in_pairs
    results = sms.send([message(i) for i in range(1, 9)])

    assert [r.status for r in results] == ["sent"] * 8
    assert len(fake.messages) == 9
