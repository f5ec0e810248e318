"""The real ``twilio`` SDK against the Twilio Messaging sandbox fake, over loopback HTTP."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import requests
from ledger_rows import person_of, point, sent_touch, walkthrough_store
from sqlalchemy import select
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from outreach.cadence import load_cadence_file
from outreach.clock import FixedClock
from outreach.paths import default_config_dir
from outreach.sandbox.base import RateWindow, SandboxServer
from outreach.sandbox.twilio import FakeTwilio, SandboxHttpClient
from outreach.serve import make_app
from outreach.settings import Settings
from outreach.store.schema import Event

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
FROM = "+15005550006"
ADA = "+14155550100"
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "twilio"
SID = re.compile(r"^SM[0-9a-f]{32}$")


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[SandboxServer, dict]]:
    """One loopback server for the module; each test plugs in its own fake."""
    current: dict = {}

    def app(environ, start_response):
        return current["fake"](environ, start_response)

    with SandboxServer(app) as running:
        yield running, current


def use(server, fake: FakeTwilio) -> FakeTwilio:
    server[1]["fake"] = fake
    return fake


@pytest.fixture
def fake(server) -> FakeTwilio:
    return use(
        server,
        FakeTwilio(
            clock=FixedClock(NOW),
            opted_out={"+14155550111"},
            invalid={"+14155550122"},
            landlines={"+14155550133"},
        ),
    )


def client_for(server, fake: FakeTwilio, *, token: str | None = None, timeout: float = 5.0):
    http = SandboxHttpClient(server[0].url, timeout=timeout)
    return Client(fake.account_sid, token or fake.auth_token, http_client=http)


@pytest.fixture
def client(server, fake: FakeTwilio) -> Client:
    return client_for(server, fake)


def refused(call) -> TwilioRestException:
    with pytest.raises(TwilioRestException) as caught:
        call()
    return caught.value


# -- sending and reading back ----------------------------------------------------------


def test_a_send_from_a_number_answers_the_published_message_shape(fake, client) -> None:
    message = client.messages.create(to=ADA, from_=FROM, body="Hello! 👍")

    published = fixture("message_create_response.json")
    [request] = fake.requests
    resource = fake.message(message.sid)
    assert list(resource) == list(published)
    assert request.status == 201
    assert SID.match(message.sid)
    assert message.status == "queued" and message.direction == "outbound-api"
    assert message.to == ADA and message.from_ == FROM
    assert message.messaging_service_sid is None
    assert message.num_segments == "1" and message.num_media == "0"
    assert message.price is None and message.error_code is None
    assert message.date_created == NOW and message.date_sent is None
    assert message.uri == f"/2010-04-01/Accounts/{fake.account_sid}/Messages/{message.sid}.json"
    assert resource["date_created"] == "Wed, 25 Nov 2026 12:00:00 +0000"
    assert fake.messages == [
        {
            "sid": message.sid,
            "to": ADA,
            "from": FROM,
            "messaging_service_sid": None,
            "body": "Hello! 👍",
            "media_urls": [],
            "num_segments": 1,
            "encoding": "UCS-2",
            "status": "queued",
            "status_callback": None,
            "send_at": None,
            "date_created": NOW,
        }
    ]


def test_a_send_from_a_messaging_service_with_a_status_callback_reads_back(fake, client) -> None:
    callback = "https://engine.example/hooks/twilio/status"

    created = client.messages.create(
        to=ADA,
        messaging_service_sid=fake.messaging_service_sid,
        body="Hi Ada, a role you might like",
        status_callback=callback,
    )
    fetched = client.messages(created.sid).fetch()

    assert set(fake.message(created.sid)) == set(
        fixture("message_create_response_with_messaging_service.json")
    )
    assert created.from_ is None and created.messaging_service_sid == fake.messaging_service_sid
    assert fetched.sid == created.sid and fetched.body == "Hi Ada, a role you might like"
    assert fetched.status == "queued"
    assert fake.messages[0]["status_callback"] == callback
    assert [r.method for r in fake.requests] == ["POST", "GET"]


def test_reading_an_unknown_message_is_a_20404(fake, client) -> None:
    error = refused(lambda: client.messages("SM" + "0" * 32).fetch())

    assert (error.status, error.code) == (404, 20404)


def test_messages_list_newest_first_across_pages(fake, client, server) -> None:
    sids = [client.messages.create(to=ADA, from_=FROM, body=f"m{i}").sid for i in range(3)]
    client.messages.create(to="+14155550199", from_=FROM, body="other")

    listed = client.messages.list(to=ADA, page_size=2)

    assert [m.sid for m in listed] == list(reversed(sids))
    page = requests.get(
        f"{server[0].url}/2010-04-01/Accounts/{fake.account_sid}/Messages.json",
        params={"To": ADA, "PageSize": 2},
        auth=(fake.account_sid, fake.auth_token),
        timeout=5,
    ).json()
    assert set(page) == set(fixture("messages_list_response.json"))
    assert page["next_page_uri"].endswith("PageSize=2&Page=1") and "To=%2B1415" in page["uri"]


# -- refusals --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("to", "kwargs", "status", "code", "message"),
    [
        ("+14155550111", {}, 400, 21610, "Attempt to send to unsubscribed recipient"),
        ("+14155550122", {}, 400, 21211, "is not a valid phone number"),
        ("4155550100", {}, 400, 21211, "is not a valid phone number"),
        ("+1415555O100", {}, 400, 21211, "is not a valid phone number"),
        ("+14155550133", {}, 400, 21614, "is not a valid mobile number"),
        ("", {}, 400, 21604, "A 'To' phone number is required."),
        (ADA, {"body": None}, 400, 21602, "Message body is required."),
        (ADA, {"body": "x" * 1601}, 400, 21617, "exceeds the 1600 character limit"),
        (ADA, {"from_": "+14155550000"}, 400, 21606, "not a valid, SMS-capable"),
        (ADA, {"from_": None}, 400, 21603, "A 'From' phone number is required."),
        (
            ADA,
            {"from_": None, "messaging_service_sid": "MG" + "1" * 32},
            400,
            21701,
            "is invalid",
        ),
    ],
)
def test_refusals_raise_twilio_rest_exception_with_the_code(
    fake, client, to, kwargs, status, code, message
) -> None:
    arguments = {"body": "Hi", "from_": FROM, **kwargs}
    arguments = {k: v for k, v in arguments.items() if v is not None}

    error = refused(lambda: client.messages.create(to=to, **arguments))

    assert (error.status, error.code) == (status, code)
    assert error.msg.startswith("Unable to create record: ") and message in error.msg
    assert error.method == "POST" and error.uri.endswith("/Messages.json")
    assert not fake.messages


def test_a_1600_character_body_is_accepted_in_11_segments(fake, client) -> None:
    message = client.messages.create(to=ADA, from_=FROM, body="x" * 1600)

    assert message.num_segments == "11"


def test_a_wrong_token_is_a_20003(fake, server) -> None:
    client = client_for(server, fake, token="not-the-token")

    error = refused(lambda: client.messages.create(to=ADA, from_=FROM, body="Hi"))

    assert (error.status, error.code) == (401, 20003)
    assert "Authenticate" in error.msg
    assert not fake.messages and not fake.requests


def test_another_accounts_path_is_a_20404(fake, client) -> None:
    other = client.api.v2010.accounts("AC" + "0" * 32)

    error = refused(lambda: other.messages.create(to=ADA, from_=FROM, body="Hi"))

    assert (error.status, error.code) == (404, 20404)
    assert not fake.messages


def test_an_injected_429_is_a_20429_without_rate_headers(fake, client, server) -> None:
    fake.faults.rate_limited(1)

    error = refused(lambda: client.messages.create(to=ADA, from_=FROM, body="Hi"))

    assert (error.status, error.code) == (429, 20429)
    assert not fake.messages
    fake.faults.rate_limited(1)
    raw = requests.post(
        f"{server[0].url}/2010-04-01/Accounts/{fake.account_sid}/Messages.json",
        data={"To": ADA, "From": FROM, "Body": "Hi"},
        auth=(fake.account_sid, fake.auth_token),
        timeout=5,
    )
    assert raw.status_code == 429
    assert raw.json() == {
        "code": 20429,
        "message": "Too Many Requests",
        "more_info": "https://www.twilio.com/docs/errors/20429",
        "status": 429,
    }
    assert not any(h.lower().startswith(("x-ratelimit", "retry-after")) for h in raw.headers)


def test_a_rate_window_answers_20429_once_spent(server) -> None:
    fake = use(server, FakeTwilio(clock=FixedClock(NOW), rate=RateWindow(1, 60)))
    client = client_for(server, fake)
    client.messages.create(to=ADA, from_=FROM, body="Hi")

    error = refused(lambda: client.messages.create(to=ADA, from_=FROM, body="Hi"))

    assert error.code == 20429 and len(fake.messages) == 1


def test_an_injected_503_is_a_20503(fake, client) -> None:
    fake.faults.server_errors(1, status=503)

    error = refused(lambda: client.messages.create(to=ADA, from_=FROM, body="Hi"))

    assert (error.status, error.code) == (503, 20503) and not fake.messages


def test_a_timeout_after_receipt_leaves_the_message_sent_once(fake, server, lost_answers) -> None:
    client = client_for(server, fake)
    fake.faults.timeouts(1, seconds=0)

    with pytest.raises(requests.exceptions.ReadTimeout):
        client.messages.create(to=ADA, from_=FROM, body="Hi")

    assert len(fake.messages) == 1
    assert [m.sid for m in client.messages.list(to=ADA)] == [fake.messages[0]["sid"]]


# -- scheduling ------------------------------------------------------------------------


def test_a_scheduled_send_is_status_scheduled(fake, client) -> None:
    send_at = NOW + timedelta(days=1)

    message = client.messages.create(
        to=ADA,
        messaging_service_sid=fake.messaging_service_sid,
        body="Tomorrow morning",
        schedule_type="fixed",
        send_at=send_at,
    )

    assert message.status == "scheduled"
    assert fake.messages[0]["send_at"] == send_at
    assert fake.messages[0]["status"] == "scheduled"


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"send_at": NOW + timedelta(minutes=10)}, 35114),
        ({"send_at": NOW + timedelta(days=35, seconds=1)}, 35114),
        ({"send_at": NOW + timedelta(days=1), "messaging_service_sid": None}, 35118),
        ({"send_at": None}, 35111),
        ({"schedule_type": "later"}, 35126),
    ],
)
def test_scheduling_outside_the_rules_is_refused(fake, client, kwargs, code) -> None:
    arguments = {
        "from_": FROM,
        "messaging_service_sid": fake.messaging_service_sid,
        "body": "Later",
        "schedule_type": "fixed",
        "send_at": NOW + timedelta(days=1),
        **kwargs,
    }
    arguments = {k: v for k, v in arguments.items() if v is not None}

    error = refused(lambda: client.messages.create(to=ADA, **arguments))

    assert (error.status, error.code) == (400, code) and not fake.messages


def test_the_schedule_window_bounds_are_inclusive(fake, client) -> None:
    for send_at in (NOW + timedelta(minutes=15), NOW + timedelta(days=35)):
        message = client.messages.create(
            to=ADA,
            messaging_service_sid=fake.messaging_service_sid,
            body="Edge",
            schedule_type="fixed",
            send_at=send_at,
        )
        assert message.status == "scheduled"


# -- cancelling scheduled messages -----------------------------------------------------


def schedule(fake: FakeTwilio, client: Client, send_at: datetime = NOW + timedelta(hours=2)):
    return client.messages.create(
        to=ADA,
        messaging_service_sid=fake.messaging_service_sid,
        body="Later today",
        schedule_type="fixed",
        send_at=send_at,
    )


def test_a_scheduled_message_is_canceled_and_never_goes_out(fake, client) -> None:
    message = schedule(fake, client)

    updated = client.messages(message.sid).update(status="canceled")

    assert updated.status == "canceled"
    assert fake.messages[0]["status"] == "canceled"
    fake.clock.set(NOW + timedelta(days=1))
    assert client.messages(message.sid).fetch().status == "canceled"
    assert fake.message(message.sid)["status"] == "canceled"


def test_a_scheduled_message_is_queued_once_its_send_time_passes(fake, client) -> None:
    message = schedule(fake, client, NOW + timedelta(hours=2))

    fake.clock.set(NOW + timedelta(hours=2))

    assert client.messages(message.sid).fetch().status == "queued"
    assert fake.messages[0]["status"] == "queued"


def test_a_message_no_longer_scheduled_cannot_be_canceled(fake, client) -> None:
    now = client.messages.create(to=ADA, from_=FROM, body="Now")
    later = schedule(fake, client)
    client.messages(later.sid).update(status="canceled")

    for sid in (now.sid, later.sid):
        error = refused(lambda sid=sid: client.messages(sid).update(status="canceled"))
        assert (error.status, error.code) == (400, 30409)
        assert "cannot be canceled" in error.msg
    assert [m["status"] for m in fake.messages] == ["queued", "canceled"]


def test_cancelling_an_unknown_message_is_a_404(fake, client) -> None:
    error = refused(lambda: client.messages("SM" + "0" * 32).update(status="canceled"))

    assert (error.status, error.code) == (404, 20404)


def test_only_the_canceled_status_can_be_set(fake, client) -> None:
    message = schedule(fake, client)

    error = refused(lambda: client.messages(message.sid).update(status="sent"))

    assert (error.status, error.code) == (400, 20001)
    assert fake.messages[0]["status"] == "scheduled"


def test_cancelling_needs_the_accounts_credentials(server, fake, client) -> None:
    message = schedule(fake, client)
    intruder = client_for(server, fake, token="wrong-token")

    error = refused(lambda: intruder.messages(message.sid).update(status="canceled"))

    assert (error.status, error.code) == (401, 20003)
    assert fake.messages[0]["status"] == "scheduled"


# -- inbound replies and opt-out -------------------------------------------------------


def _published_field_names() -> set[str]:
    lines = (FIXTURES / "inbound_sms_webhook_fields.txt").read_text().splitlines()
    return {line.split("=", 1)[0] for line in lines if line and not line.startswith("#")}


def test_an_inbound_stop_opts_the_number_out_so_the_next_send_is_21610(fake, client) -> None:
    client.messages.create(to=ADA, from_=FROM, body="Hi Ada")

    fields = fake.inbound(ADA, " Stop ")

    assert set(fields) <= _published_field_names()
    assert fields["From"] == ADA and fields["To"] == FROM and fields["Body"] == " Stop "
    assert fields["AccountSid"] == fake.account_sid and SID.match(fields["MessageSid"])
    error = refused(lambda: client.messages.create(to=ADA, from_=FROM, body="Still there?"))
    assert error.code == 21610
    fake.inbound(ADA, "START")
    assert client.messages.create(to=ADA, from_=FROM, body="Welcome back").status == "queued"


@pytest.mark.parametrize("body", ["stopall", "UNSUBSCRIBE", "cancel", "End", "quit", "STOP."])
def test_every_default_opt_out_keyword_opts_out(fake, body) -> None:
    fake.inbound(ADA, body)

    assert ADA in fake.opted_out


@pytest.mark.parametrize("body", ["stop please", "Thanks, will do", "STOPP"])
def test_other_replies_do_not_opt_out(fake, body) -> None:
    fields = fake.inbound(ADA, body, to="+15005550007")

    assert ADA not in fake.opted_out
    assert fields["To"] == "+15005550007" and fake.inbound_messages[-1] == fields


def test_webhook_signatures_validate_with_the_sdks_request_validator(fake) -> None:
    url = "https://engine.example/hooks/twilio/inbound"
    fields = fake.inbound(ADA, "Interested!")

    signature = fake.webhook_signature(url, fields)

    validator = RequestValidator(fake.auth_token)
    assert validator.validate(url, fields, signature)
    assert not validator.validate(url, {**fields, "Body": "Not interested"}, signature)


# -- segments --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "segments", "encoding"),
    [
        ("a" * 160, "1", "GSM-7"),
        ("a" * 161, "2", "GSM-7"),
        ("a" * 306, "2", "GSM-7"),
        ("a" * 307, "3", "GSM-7"),
        ("€" * 80, "1", "GSM-7"),  # extension-table characters take two septets
        ("€" * 80 + "a", "2", "GSM-7"),
        ("{hi}" + "a" * 154, "1", "GSM-7"),
        ("ж" * 70, "1", "UCS-2"),
        ("ж" * 71, "2", "UCS-2"),
        ("😀" * 35, "1", "UCS-2"),  # an emoji is two UTF-16 code units
        ("😀" * 35 + "a", "2", "UCS-2"),
        ("a" * 133 + "ж", "2", "UCS-2"),
        ("ж" * 134, "2", "UCS-2"),
        ("ж" * 135, "3", "UCS-2"),
    ],
)
def test_segments_are_counted_gsm7_or_ucs2(fake, client, body, segments, encoding) -> None:
    message = client.messages.create(to=ADA, from_=FROM, body=body)

    assert message.num_segments == segments
    assert fake.messages[0]["encoding"] == encoding


# -- status callbacks ------------------------------------------------------------------

CALLBACK = "https://engine.example/webhooks/twilio/status"


def test_a_sent_message_posts_sent_then_delivered_to_its_status_callback(fake, client) -> None:
    created = client.messages.create(
        to=ADA,
        messaging_service_sid=fake.messaging_service_sid,
        body="Hi",
        status_callback=CALLBACK,
    )
    client.messages.create(to=ADA, from_=FROM, body="no callback asked")
    assert fake.drain_status_callbacks() == []  # nothing has happened yet on the clock

    fake.clock.set(NOW + timedelta(seconds=1))
    [(url, sent)] = fake.drain_status_callbacks()
    assert url == CALLBACK
    assert sent == {
        "AccountSid": fake.account_sid,
        "ApiVersion": "2010-04-01",
        "From": FROM,
        "MessageSid": created.sid,
        "MessageStatus": "sent",
        "MessagingServiceSid": fake.messaging_service_sid,
        "SmsSid": created.sid,
        "SmsStatus": "sent",
        "To": ADA,
    }
    assert client.messages(created.sid).fetch().status == "sent"

    fake.clock.set(NOW + timedelta(minutes=5))
    [(_, delivered)] = fake.drain_status_callbacks()
    assert (delivered["MessageStatus"], delivered["SmsStatus"]) == ("delivered", "delivered")
    assert delivered["RawDlrDoneDate"] == (NOW + timedelta(seconds=4)).strftime("%y%m%d%H%M")
    assert client.messages(created.sid).fetch().status == "delivered"
    assert [m["status"] for m in fake.messages] == ["delivered", "delivered"]
    assert fake.drain_status_callbacks() == []


def test_a_scheduled_message_reports_only_once_it_goes_out_and_a_canceled_one_never(
    fake, client
) -> None:
    def scheduled(hours: int):
        return client.messages.create(
            to=ADA,
            messaging_service_sid=fake.messaging_service_sid,
            body=f"in {hours}h",
            send_at=NOW + timedelta(hours=hours),
            schedule_type="fixed",
            status_callback=CALLBACK,
        )

    kept, dropped = scheduled(2), scheduled(3)
    client.messages(dropped.sid).update(status="canceled")
    fake.clock.set(NOW + timedelta(hours=1))
    assert fake.drain_status_callbacks() == []
    fake.clock.set(NOW + timedelta(days=1))
    statuses = [(f["MessageSid"], f["MessageStatus"]) for _, f in fake.drain_status_callbacks()]
    assert statuses == [(kept.sid, "sent"), (kept.sid, "delivered")]


def test_status_callbacks_are_posted_signed_and_the_engine_records_delivered(
    fake, client, engine, tmp_path
) -> None:
    """Through the engine's own webhook app: the signature verifies and the touch whose
    provider message id is the SID gets a ``delivered`` event, once."""
    config = load_cadence_file(default_config_dir() / "cadences.yaml")
    walkthrough_store(engine, config, tmp_path, NOW - timedelta(days=1))
    ann_phone = point(engine, "phone", "+12125550101")
    created = client.messages.create(
        to=ann_phone.value,
        messaging_service_sid=fake.messaging_service_sid,
        body="Hi Ann",
        status_callback="https://engine.example/webhooks/twilio/status",
    )
    touch = sent_touch(
        engine,
        person_of(engine, "c1"),
        ann_phone.id,
        "t:sms",
        at=NOW,
        channel="sms",
        provider_message_id=created.sid,
    )
    settings = Settings(
        _env_file=None,
        OUTREACH_PUBLIC_URL="https://engine.example",
        TWILIO_ACCOUNT_SID=fake.account_sid,
        TWILIO_AUTH_TOKEN=fake.auth_token,
    )
    app = make_app(engine, settings, config, fake.clock)
    fake.clock.set(NOW + timedelta(minutes=1))
    with httpx.Client(transport=httpx.WSGITransport(app=app)) as http:
        assert fake.post_status_callbacks(http) == [200, 200]
    with engine.connect() as conn:
        rows = conn.execute(
            select(Event.type, Event.touch_id, Event.channel).where(Event.type == "delivered")
        ).all()
    assert [tuple(r) for r in rows] == [("delivered", touch, "sms")]
