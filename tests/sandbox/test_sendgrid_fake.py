"""The real ``sendgrid`` SDK against the SendGrid sandbox fake, over loopback HTTP."""

from __future__ import annotations

import copy
import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sendgrid
from python_http_client.exceptions import (
    BadRequestsError,
    ForbiddenError,
    HTTPError,
    InternalServerError,
    PayloadTooLargeError,
    ServiceUnavailableError,
    TooManyRequestsError,
    UnauthorizedError,
)
from sendgrid.helpers.eventwebhook import EventWebhook
from sendgrid.helpers.mail import Mail

from outreach.clock import FixedClock
from outreach.sandbox.base import RateWindow, SandboxServer
from outreach.sandbox.sendgrid import SIGNATURE_HEADER, TIMESTAMP_HEADER, FakeSendGrid

KEY = "SG.sandbox-key"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "sendgrid"
MESSAGE_ID = re.compile(r"^[A-Za-z0-9_-]{22}$")


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[SandboxServer, dict]]:
    """One loopback server for the module; each test plugs in its own fake."""
    current: dict = {}

    def app(environ, start_response):
        return current["fake"](environ, start_response)

    with SandboxServer(app) as running:
        yield running, current


@pytest.fixture
def fake(server) -> FakeSendGrid:
    fake = FakeSendGrid(clock=FixedClock(NOW), bouncing={"gone@example.com"})
    server[1]["fake"] = fake
    return fake


@pytest.fixture
def client(server, fake: FakeSendGrid) -> sendgrid.SendGridAPIClient:
    return sendgrid.SendGridAPIClient(KEY, host=server[0].url)


def use(server, fake: FakeSendGrid) -> FakeSendGrid:
    server[1]["fake"] = fake
    return fake


def mail(to: str = "ada@example.com", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "personalizations": [{"to": [{"email": to, "name": "Ada"}]}],
        "from": {"email": "recruiter@acme.example", "name": "Acme Recruiting"},
        "subject": "A role you might like",
        "content": [
            {"type": "text/plain", "value": "Hi Ada"},
            {"type": "text/html", "value": "<p>Hi Ada</p>"},
        ],
    }
    body.update(extra)
    return body


def bad_request(client: sendgrid.SendGridAPIClient, body: dict[str, Any]) -> list[dict]:
    with pytest.raises(BadRequestsError) as caught:
        client.send(body)
    assert caught.value.status_code == 400
    return caught.value.to_dict["errors"]


# -- accepted sends --------------------------------------------------------------------


def test_a_single_message_is_accepted_with_a_message_id_and_recorded(fake, client) -> None:
    message = Mail(
        from_email=("recruiter@acme.example", "Acme Recruiting"),
        to_emails="ada@example.com",
        subject="A role you might like",
        plain_text_content="Hi Ada",
        html_content="<p>Hi Ada</p>",
    )
    message.custom_arg = [  # the SDK's CustomArg helpers
        sendgrid.helpers.mail.CustomArg("touch_id", "41"),
        sendgrid.helpers.mail.CustomArg("idempotency_key", "t-41"),
    ]
    message.category = [sendgrid.helpers.mail.Category("outreach")]

    response = client.send(message)

    assert response.status_code == 202 and response.body == b""
    message_id = response.headers["X-Message-Id"]
    assert MESSAGE_ID.match(message_id)
    assert fake.mail_requests == [{"message_id": message_id, "body": message.get()}]
    [recorded] = fake.messages
    assert recorded["message_id"] == message_id
    assert recorded["to"] == ["ada@example.com"]
    assert recorded["subject"] == "A role you might like"
    assert recorded["template_id"] is None
    assert recorded["custom_args"] == {"touch_id": "41", "idempotency_key": "t-41"}
    assert recorded["categories"] == ["outreach"]
    assert recorded["from"] == {"email": "recruiter@acme.example", "name": "Acme Recruiting"}
    assert [c["type"] for c in recorded["content"]] == ["text/plain", "text/html"]
    assert recorded["send_at"] is None


def test_sendgrids_published_example_requests_are_accepted(fake, client) -> None:
    plain = fixture("mail_send_request.json")
    templated = fixture("mail_send_request_dynamic_template.json")
    # The examples carry a made-up batch id: the fake accepts only batch ids it created.
    fake.batches[plain["batch_id"]] = int(NOW.timestamp())

    assert client.send(plain).status_code == 202
    assert client.send(templated).status_code == 202

    first, second, third = fake.messages
    assert first["to"] == ["alex@example.com", "bola@example.com"]
    assert first["cc"] == ["charlie@example.com"] and first["bcc"] == ["dana@example.com"]
    assert first["from"]["email"] == "orders@example.com"
    assert second["from"]["email"] == "sales@example.com"  # a personalization's own from
    assert first["asm"] == {"group_id": 12345, "groups_to_display": [12345]}
    assert third["subject"] is None and third["template_id"].startswith("d-")
    assert third["dynamic_template_data"]["customer_name"] == "Alex"


def test_a_thousand_personalization_template_request_is_recorded_per_personalization(
    fake, client
) -> None:
    body = {
        "from": {"email": "recruiter@acme.example"},
        "template_id": "d-0123456789abcdef0123456789abcdef",
        "custom_args": {"campaign": "c1"},
        "personalizations": [
            {
                "to": [{"email": f"person{i}@example.com"}],
                "dynamic_template_data": {"first_name": f"P{i}"},
                "custom_args": {"touch_id": str(i)},
            }
            for i in range(1000)
        ],
    }

    response = client.send(body)

    assert response.status_code == 202
    message_id = response.headers["X-Message-Id"]
    assert len(fake.messages) == 1000
    assert {m["message_id"] for m in fake.messages} == {message_id}
    last = fake.messages[-1]
    assert last["to"] == ["person999@example.com"] and last["subject"] is None
    assert last["dynamic_template_data"] == {"first_name": "P999"}
    assert last["custom_args"] == {"campaign": "c1", "touch_id": "999"}
    events = fake.drain_events()
    assert len(events) == 2000
    assert all(e["sg_message_id"].startswith(message_id + ".filter") for e in events)
    assert len({e["sg_message_id"] for e in events}) == 1000


def test_a_scheduled_send_within_72_hours_is_accepted_and_processed_then(fake, client) -> None:
    send_at = int((NOW + timedelta(hours=72)).timestamp())

    assert client.send(mail(send_at=send_at)).status_code == 202

    assert fake.messages[0]["send_at"] == send_at
    assert {e["timestamp"] for e in fake.drain_events()} == {send_at}


def test_sandbox_mode_validates_but_queues_nothing(fake, client) -> None:
    body = mail(mail_settings={"sandbox_mode": {"enable": True}})

    response = client.send(body)

    assert response.status_code == 200 and not fake.messages and not fake.events


# -- 400: the request checks -----------------------------------------------------------


def test_1001_personalizations_are_refused_with_the_documented_error(fake, client) -> None:
    body = mail()
    body["personalizations"] = [{"to": [{"email": f"p{i}@example.com"}]} for i in range(1001)]

    errors = bad_request(client, body)

    assert {
        "message": "The personalization block is limited to 1000 personalizations per API "
        "request. You have provided 1001 personalizations. Please consider splitting this "
        "into multiple requests and resending your request.",
        "field": "personalizations",
        "help": "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html"
        "#message.personalizations",
    } in errors
    assert all(set(e) == {"message", "field", "help"} for e in errors)
    assert not fake.messages and not fake.mail_requests


def _too_many_recipients(body: dict) -> None:
    body["personalizations"] = [
        {"to": [{"email": f"t{i}@example.com"}], "cc": [{"email": f"c{i}@example.com"}]}
        for i in range(501)
    ]


def _drop_subject(body: dict) -> None:
    del body["subject"]


def _drop_content(body: dict) -> None:
    del body["content"]


def _html_first(body: dict) -> None:
    body["content"].reverse()


def _drop_to(body: dict) -> None:
    body["personalizations"][0]["to"] = []


def _duplicate_recipient(body: dict) -> None:
    body["personalizations"][0]["bcc"] = [{"email": "ADA@example.com"}]


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (_drop_subject, "subject", "The subject is required."),
        (lambda b: b.update(subject=""), "subject", "at least one character"),
        (
            lambda b: b["personalizations"][0]["to"][0].update(email="ada(at)example.com"),
            "personalizations.0.to.0.email",
            "Does not contain a valid address.",
        ),
        (
            lambda b: b["personalizations"][0]["to"][0].update(email="ada@example"),
            "personalizations.0.to.0.email",
            "Does not contain a valid address.",
        ),
        (
            lambda b: b["from"].update(email="recruiter at acme"),
            "from.email",
            "Does not contain a valid address.",
        ),
        (_drop_to, "personalizations.0.to", "The to array is required"),
        (_duplicate_recipient, "personalizations.0", "should be unique between to, cc, and bcc"),
        (_too_many_recipients, "personalizations", "limit of 1000 total recipients"),
        (
            lambda b: b.update(categories=[f"c{i}" for i in range(11)]),
            "categories",
            "There is a limit of 10 categories for each email that is sent. You provided 11",
        ),
        (lambda b: b.update(categories=["x" * 256]), "categories", "not be longer than 255"),
        (lambda b: b.update(categories=["café"]), "categories", "non-ASCII"),
        (lambda b: b.update(categories=["a", "a"]), "categories", "unique list"),
        (
            lambda b: b.update(send_at=int((NOW + timedelta(hours=72, seconds=1)).timestamp())),
            "send_at",
            "Scheduling more than 72 hours in advance is forbidden.",
        ),
        (
            lambda b: b["personalizations"][0].update(
                send_at=int((NOW + timedelta(days=4)).timestamp())
            ),
            "personalizations.0.send_at",
            "72 hours",
        ),
        (lambda b: b.update(send_at="tomorrow"), "send_at", "timestamp as an integer"),
        (
            lambda b: b.update(custom_args={"big": "x" * 10_000}),
            "personalizations.0.custom_args",
            "may not exceed 10,000 bytes",
        ),
        (
            lambda b: b["personalizations"][0].update(custom_args={"touch_id": 41}),
            "personalizations.0.custom_args",
            "must be strings",
        ),
        (lambda b: b.update(custom_args={}), "custom_args", "cannot be empty"),
        (lambda b: b.update(headers={"Reply-To": "x@example.com"}), "headers", "reserved keys"),
        (lambda b: b.update(headers={"X-Touch": 41}), "headers", "must be strings"),
        (lambda b: b.update(asm={"group_id": "12345"}), "asm.group_id", "must be an integer"),
        (_drop_content, "content", "The content param is required"),
        (_html_first, "content", "text/plain needs to be first"),
        (
            lambda b: b["content"][0].update(value=""),
            "content.0.value",
            "at least one character",
        ),
        (lambda b: b.update(template_id=7), "template_id", "must be a string"),
    ],
)
def test_each_violation_is_a_400_naming_its_field(fake, client, change, field, message) -> None:
    body = copy.deepcopy(mail())
    change(body)

    errors = bad_request(client, body)

    matching = [e for e in errors if e["field"] == field]
    assert matching, errors
    assert any(message in e["message"] for e in matching), matching
    assert matching[0]["help"].startswith(
        "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html#message."
    )
    assert not fake.messages and not fake.events


def test_a_template_supplies_the_subject_and_content(fake, client) -> None:
    body = mail(template_id="d-0123456789abcdef0123456789abcdef")
    del body["subject"], body["content"]

    assert client.send(body).status_code == 202


def test_every_personalization_may_carry_its_own_subject(fake, client) -> None:
    body = mail()
    del body["subject"]
    body["personalizations"][0]["subject"] = "Just for Ada"

    assert client.send(body).status_code == 202
    assert fake.messages[0]["subject"] == "Just for Ada"


def test_an_unparseable_body_is_a_400(fake, server) -> None:
    request = urllib.request.Request(
        server[0].url + "/v3/mail/send",
        data=b"{not json",
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    assert caught.value.code == 400


# -- 401 / 403 / 413 -------------------------------------------------------------------


def test_a_wrong_key_is_a_401(fake, server) -> None:
    wrong = sendgrid.SendGridAPIClient("SG.not-the-key", host=server[0].url)

    with pytest.raises(UnauthorizedError) as caught:
        wrong.send(mail())

    assert caught.value.status_code == 401
    assert caught.value.to_dict == {
        "errors": [
            {
                "message": "The provided authorization grant is invalid, expired, or revoked",
                "field": None,
                "help": None,
            }
        ]
    }
    assert not fake.messages and not fake.requests


def test_no_authorization_header_is_a_401_authorization_required(fake, server) -> None:
    request = urllib.request.Request(
        server[0].url + "/v3/mail/send", data=json.dumps(mail()).encode(), method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    assert caught.value.code == 401
    body = json.loads(caught.value.read())
    assert (
        body["errors"][0]["message"] == fixture("mail_send_error_401.json")["errors"][0]["message"]
    )


def test_an_unverified_sender_is_a_403(server) -> None:
    fake = use(server, FakeSendGrid(verified_senders={"recruiter@acme.example"}))
    client = sendgrid.SendGridAPIClient(KEY, host=server[0].url)
    assert client.send(mail()).status_code == 202

    with pytest.raises(ForbiddenError) as caught:
        client.send(mail(**{"from": {"email": "someone@else.example"}}))

    assert caught.value.status_code == 403
    [error] = caught.value.to_dict["errors"]
    assert error["field"] == "from"
    assert error["message"].startswith("The from address does not match a verified Sender Identity")
    assert len(fake.messages) == 1


def test_a_body_over_20_mb_is_a_413(fake, client) -> None:
    attachment = {"content": "A" * (20 * 1024 * 1024), "filename": "big.bin"}

    with pytest.raises(PayloadTooLargeError) as caught:
        client.send(mail(attachments=[attachment]))

    assert caught.value.status_code == 413
    assert (
        caught.value.to_dict["errors"][0]["message"]
        == (fixture("mail_send_error_413.json")["errors"][0]["message"])
    )
    assert not fake.messages


# -- rate limits, faults, timeouts -----------------------------------------------------


def test_an_injected_429_raises_too_many_requests_with_its_headers(fake, client) -> None:
    fake.faults.rate_limited(1, retry_after=30)

    with pytest.raises(TooManyRequestsError) as caught:
        client.send(mail())

    error = caught.value
    assert error.status_code == 429
    assert error.to_dict == {"errors": [{"field": None, "message": "too many requests"}]}
    assert error.headers["X-RateLimit-Remaining"] == "0"
    assert int(error.headers["X-RateLimit-Reset"]) == int(NOW.timestamp()) + 30
    assert "Retry-After" not in error.headers
    assert not fake.messages
    assert client.send(mail()).status_code == 202


def test_a_rate_window_meters_with_x_ratelimit_headers(server) -> None:
    fake = use(server, FakeSendGrid(clock=FixedClock(NOW), rate=RateWindow(2, 60)))
    client = sendgrid.SendGridAPIClient(KEY, host=server[0].url)

    first, second = client.send(mail()), client.send(mail())
    with pytest.raises(TooManyRequestsError) as caught:
        client.send(mail())

    assert first.headers["X-RateLimit-Limit"] == "2"
    assert [first.headers["X-RateLimit-Remaining"], second.headers["X-RateLimit-Remaining"]] == [
        "1",
        "0",
    ]
    reset = int(caught.value.headers["X-RateLimit-Reset"])
    assert int(NOW.timestamp()) < reset <= int(NOW.timestamp()) + 60
    assert caught.value.headers["X-RateLimit-Limit"] == "2"
    assert len(fake.messages) == 2


@pytest.mark.parametrize(
    ("status", "error"), [(500, InternalServerError), (503, ServiceUnavailableError)]
)
def test_an_injected_5xx_raises_and_records_nothing(fake, client, status, error) -> None:
    fake.faults.server_errors(1, status=status)

    with pytest.raises(error) as caught:
        client.send(mail())

    assert isinstance(caught.value, HTTPError) and caught.value.status_code == status
    assert "errors" in caught.value.to_dict
    assert not fake.messages


def test_a_timeout_after_receipt_leaves_the_message_sent_once(fake, client, lost_answers) -> None:
    fake.faults.timeouts(1, seconds=0)

    with pytest.raises(TimeoutError):
        client.client.mail.send.post(request_body=mail(), timeout=30)

    assert len(fake.messages) == 1 and len(fake.mail_requests) == 1
    assert [e["event"] for e in fake.drain_events()] == ["processed", "delivered"]


# -- Event Webhook ---------------------------------------------------------------------


def test_bounces_are_generated_for_bouncing_addresses_then_suppressed(fake, client) -> None:
    body = mail()
    body["personalizations"] = [
        {"to": [{"email": "ada@example.com"}]},
        {"to": [{"email": "Gone@example.com"}]},
    ]
    client.send(body)

    events = fake.drain_events()

    assert [(e["email"], e["event"]) for e in events] == [
        ("ada@example.com", "processed"),
        ("ada@example.com", "delivered"),
        ("Gone@example.com", "processed"),
        ("Gone@example.com", "bounce"),
    ]
    assert fake.drain_events() == []
    client.send(mail(to="gone@example.com"))
    [dropped] = fake.drain_events()
    assert dropped["event"] == "dropped" and dropped["reason"] == "Bounced Address"


def test_events_have_the_published_shape_with_custom_args_on_top(fake, client) -> None:
    published = {e["event"]: set(e) for e in fixture("event_webhook.json")}
    client.send(mail(categories=["outreach"], custom_args={"touch_id": "41"}))
    client.send(mail(to="gone@example.com", categories=["outreach", "sms"]))
    client.send(mail(to="gone@example.com", categories=["outreach"]))

    events = fake.drain_events()

    kinds = [e["event"] for e in events]
    assert kinds == ["processed", "delivered", "processed", "bounce", "dropped"]
    for event in events:
        own = set(event) - {"touch_id"}
        assert own == published[event["event"]], event["event"]
        assert event["timestamp"] == int(NOW.timestamp())
    assert events[0]["touch_id"] == "41" and events[0]["category"] == "outreach"
    assert events[2]["category"] == ["outreach", "sms"]
    message_ids = [r["message_id"] for r in fake.mail_requests]
    assert events[0]["sg_message_id"].startswith(message_ids[0] + ".filter")
    assert events[4]["sg_message_id"].startswith(message_ids[2] + ".filter")


def test_signed_events_verify_with_the_sdks_event_webhook_helper(fake, client) -> None:
    client.send(mail())
    payload = json.dumps(fake.drain_events()) + "\r\n"
    timestamp = str(int(NOW.timestamp()))

    headers = fake.sign_events(payload.encode(), timestamp)

    verifier = EventWebhook(fake.webhook_public_key)
    assert headers[TIMESTAMP_HEADER] == timestamp
    assert verifier.verify_signature(payload, headers[SIGNATURE_HEADER], timestamp)
    assert not verifier.verify_signature(payload + " ", headers[SIGNATURE_HEADER], timestamp)
    assert not verifier.verify_signature(payload, headers[SIGNATURE_HEADER], "1")


# -- Cancel Scheduled Sends -------------------------------------------------------------


def new_batch(client: sendgrid.SendGridAPIClient) -> str:
    response = client.client.mail.batch.post()
    assert response.status_code == 201
    return response.to_dict["batch_id"]


def set_status(client: sendgrid.SendGridAPIClient, batch_id: str, status: str = "cancel"):
    return client.client.user.scheduled_sends.post(
        request_body={"batch_id": batch_id, "status": status}
    )


def refusal(call) -> tuple[int, list[dict]]:
    with pytest.raises(HTTPError) as caught:
        call()
    return caught.value.status_code, caught.value.to_dict["errors"]


LATER = NOW + timedelta(hours=2)


def test_a_batch_id_is_created_and_validated(fake, client) -> None:
    batch_id = new_batch(client)

    assert MESSAGE_ID.match(batch_id) and batch_id in fake.batches
    response = client.client.mail.batch._(batch_id).get()
    assert response.status_code == 200 and response.to_dict == {"batch_id": batch_id}
    status, errors = refusal(lambda: client.client.mail.batch._("unknown").get())
    assert (status, errors) == (400, [{"field": None, "message": "invalid batch id"}])


def test_mail_send_accepts_only_batch_ids_of_the_account(fake, client) -> None:
    errors = bad_request(client, mail(batch_id="not-a-batch"))

    assert [e["field"] for e in errors] == ["batch_id"]
    assert client.send(mail(batch_id=new_batch(client))).status_code == 202


def test_a_batch_is_cancelled_and_listed(fake, client) -> None:
    batch_id = new_batch(client)

    response = set_status(client, batch_id)

    assert response.status_code == 201
    assert response.to_dict == {"batch_id": batch_id, "status": "cancel"}
    listing = client.client.user.scheduled_sends.get()
    assert listing.to_dict == [{"batch_id": batch_id, "status": "cancel"}]
    one = client.client.user.scheduled_sends._(batch_id).get()
    assert one.to_dict == [{"batch_id": batch_id, "status": "cancel"}]


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"batch_id": "unknown", "status": "cancel"}, "batch_id", "invalid batch id"),
        ({"status": "cancel"}, "batch_id", "invalid batch id"),
        ({"batch_id": "known", "status": "stop"}, "status", "status must be either"),
    ],
)
def test_a_status_for_an_unknown_batch_or_of_an_unknown_kind_is_refused(
    fake, client, body, field, message
) -> None:
    if body.get("batch_id") == "known":
        body["batch_id"] = new_batch(client)

    status, errors = refusal(lambda: client.client.user.scheduled_sends.post(request_body=body))

    assert status == 400 and errors[0]["field"] == field and message in errors[0]["message"]
    assert not fake.scheduled_sends


def test_a_second_status_is_refused_with_sendgrids_message(fake, client) -> None:
    batch_id = new_batch(client)
    set_status(client, batch_id, "pause")

    status, errors = refusal(lambda: set_status(client, batch_id, "cancel"))

    assert status == 400
    assert errors == [
        {
            "field": "batch_id",
            "message": "a status for this batch id exists, try PATCH to update the status",
        }
    ]
    assert fake.scheduled_sends[batch_id]["status"] == "pause"


def test_at_most_ten_batches_are_paused_or_cancelled_at_one_time(fake, client) -> None:
    batches = [new_batch(client) for _ in range(11)]
    for batch_id in batches[:10]:
        assert set_status(client, batch_id).status_code == 201

    status, errors = refusal(lambda: set_status(client, batches[10]))

    assert (status, errors) == (400, [{"field": None, "message": "max limit reached"}])
    client.client.user.scheduled_sends._(batches[0]).delete()
    assert set_status(client, batches[10]).status_code == 201


def test_a_status_is_updated_and_deleted_and_unknown_ones_are_404(fake, client) -> None:
    batch_id = new_batch(client)
    set_status(client, batch_id, "pause")
    scheduled = client.client.user.scheduled_sends._(batch_id)

    assert scheduled.patch(request_body={"status": "cancel"}).status_code == 204
    assert fake.scheduled_sends[batch_id]["status"] == "cancel"
    assert scheduled.delete().status_code == 204
    assert not fake.scheduled_sends
    not_found = (404, [{"field": None, "message": "batch id not found"}])
    assert refusal(scheduled.get) == not_found
    assert refusal(scheduled.delete) == not_found
    assert refusal(lambda: scheduled.patch(request_body={"status": "pause"})) == not_found


def test_the_scheduled_sends_api_needs_the_api_key(server, fake) -> None:
    intruder = sendgrid.SendGridAPIClient("SG.wrong", host=server[0].url)

    for call in (
        intruder.client.mail.batch.post,
        intruder.client.user.scheduled_sends.get,
        lambda: intruder.client.user.scheduled_sends.post(
            request_body={"batch_id": "x", "status": "cancel"}
        ),
    ):
        with pytest.raises(UnauthorizedError):
            call()
    assert not fake.batches and not fake.scheduled_sends


def send_batched(client, fake, to: str, send_at: datetime = LATER) -> str:
    batch_id = new_batch(client)
    client.send(mail(to=to, batch_id=batch_id, send_at=int(send_at.timestamp())))
    return batch_id


def test_a_cancelled_batch_is_discarded_at_send_time_and_the_others_delivered(fake, client) -> None:
    cancelled = send_batched(client, fake, "ada@example.com")
    send_batched(client, fake, "grace@example.com")
    set_status(client, cancelled)

    assert fake.drain_events() == []  # nothing goes out before send_at
    assert len(fake.messages_in("scheduled")) == 2
    fake.clock.set(LATER)

    events = fake.drain_events()
    assert {e["email"] for e in events} == {"grace@example.com"}
    assert [e["event"] for e in events] == ["processed", "delivered"]
    assert {e["timestamp"] for e in events} == {int(LATER.timestamp())}
    assert [m["to"] for m in fake.messages_in("cancelled")] == [["ada@example.com"]]
    assert [m["to"] for m in fake.messages_in("processed")] == [["grace@example.com"]]


def test_a_cancel_later_than_10_minutes_before_send_at_does_not_take_effect(fake, client) -> None:
    batch_id = send_batched(client, fake, "ada@example.com")
    fake.clock.set(LATER - timedelta(minutes=9))
    assert set_status(client, batch_id).status_code == 201  # accepted, not guaranteed

    fake.clock.set(LATER)

    assert [e["event"] for e in fake.drain_events()] == ["processed", "delivered"]
    assert fake.messages[0]["state"] == "processed"


def test_a_paused_batch_is_held_then_sent_when_the_pause_is_deleted(fake, client) -> None:
    batch_id = send_batched(client, fake, "ada@example.com")
    set_status(client, batch_id, "pause")
    resumed = LATER + timedelta(hours=5)

    fake.clock.set(LATER + timedelta(hours=1))
    assert fake.drain_events() == [] and fake.messages[0]["state"] == "scheduled"
    fake.clock.set(resumed)
    client.client.user.scheduled_sends._(batch_id).delete()

    events = fake.drain_events()
    assert [e["event"] for e in events] == ["processed", "delivered"]
    assert {e["timestamp"] for e in events} == {int(resumed.timestamp())}


def test_a_pause_held_72_hours_past_send_at_expires(fake, client) -> None:
    batch_id = send_batched(client, fake, "ada@example.com")
    set_status(client, batch_id, "pause")

    fake.clock.set(LATER + timedelta(hours=72))
    client.client.user.scheduled_sends._(batch_id).delete()

    assert fake.drain_events() == [] and fake.messages[0]["state"] == "expired"


def test_a_paused_batch_changed_to_cancel_after_send_at_is_discarded(fake, client) -> None:
    batch_id = send_batched(client, fake, "ada@example.com")
    set_status(client, batch_id, "pause")

    fake.clock.set(LATER + timedelta(hours=1))
    client.client.user.scheduled_sends._(batch_id).patch(request_body={"status": "cancel"})
    client.client.user.scheduled_sends._(batch_id).delete()

    assert fake.drain_events() == [] and fake.messages[0]["state"] == "cancelled"


def test_deleting_a_cancellation_before_send_at_lets_the_batch_go(fake, client) -> None:
    early = send_batched(client, fake, "ada@example.com")
    late = send_batched(client, fake, "grace@example.com")
    set_status(client, early)
    set_status(client, late)

    client.client.user.scheduled_sends._(early).delete()  # before send_at: reverts to active
    fake.clock.set(LATER + timedelta(minutes=1))
    client.client.user.scheduled_sends._(late).delete()  # after send_at: already discarded

    assert [m["to"] for m in fake.messages_in("processed")] == [["ada@example.com"]]
    assert [m["to"] for m in fake.messages_in("cancelled")] == [["grace@example.com"]]
    assert {e["email"] for e in fake.drain_events()} == {"ada@example.com"}


# -- Transactional Templates: GET /v3/templates/{template_id} -------------------------------

TEMPLATE_ID = "d-5f2c8a0e1b7d4c9a8e6f0a1b2c3d4e5f"


def test_a_registered_dynamic_template_is_read_with_its_active_version(client, fake) -> None:
    fake.add_template(
        TEMPLATE_ID,
        name="Interview thanks",
        subject="Thanks, {{candidate.first_name}}",
        html_content="<p>Hi {{candidate.first_name}}</p>",
        version_name="v1",
    )
    fake.add_template(
        TEMPLATE_ID,
        subject="Thank you, {{candidate.first_name}}",
        html_content="<p>Hi {{candidate.first_name}}, from {{company.name}}</p>",
        version_name="v2",
    )
    response = client.client.templates._(TEMPLATE_ID).get()
    assert response.status_code == 200
    body = json.loads(response.body)
    assert body["id"] == TEMPLATE_ID and body["generation"] == "dynamic"
    assert body["name"] == "Interview thanks"
    assert re.match(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$", body["updated_at"])
    v1, v2 = body["versions"]
    assert (v1["name"], v1["active"]) == ("v1", 0)
    assert (v2["name"], v2["active"]) == ("v2", 1)
    assert v2["template_id"] == TEMPLATE_ID and v2["editor"] == "code"
    assert v2["subject"] == "Thank you, {{candidate.first_name}}"
    assert v2["html_content"] == "<p>Hi {{candidate.first_name}}, from {{company.name}}</p>"
    # generate_plain_content (the default) derives the text part from the HTML
    assert v2["generate_plain_content"] is True
    assert v2["plain_content"] == "Hi {{candidate.first_name}}, from {{company.name}}"
    assert fake.requests[-1].path == f"/v3/templates/{TEMPLATE_ID}"


def test_an_unknown_template_is_404_with_sendgrids_error_body(client, fake) -> None:
    with pytest.raises(HTTPError) as info:
        client.client.templates._(TEMPLATE_ID).get()
    assert info.value.status_code == 404
    assert json.loads(info.value.body) == {
        "errors": [{"field": None, "message": "resource not found"}]
    }


def test_reading_a_template_needs_the_api_key(server, fake) -> None:
    fake.add_template(TEMPLATE_ID, subject="x", html_content="y")
    wrong = sendgrid.SendGridAPIClient("SG.wrong", host=server[0].url)
    with pytest.raises(UnauthorizedError):
        wrong.client.templates._(TEMPLATE_ID).get()


# -- opens and clicks ------------------------------------------------------------------


def engagement_run(seed: int, recipients: int = 2000) -> tuple[FakeSendGrid, list[dict]]:
    """``recipients`` delivered at NOW, then every open and click a week on."""
    fake = FakeSendGrid(clock=FixedClock(NOW), seed=seed)
    server = SandboxServer(fake).start()
    try:
        client = sendgrid.SendGridAPIClient(KEY, host=server.url)
        for start in range(0, recipients, 1000):  # SendGrid's 1,000 personalizations
            body = mail(categories=["outreach"])
            body["personalizations"] = [
                {"to": [{"email": f"p{i}@example.com"}], "custom_args": {"touch_id": str(i + 1)}}
                for i in range(start, min(start + 1000, recipients))
            ]
            assert client.send(body).status_code == 202
    finally:
        server.stop()
    first = fake.drain_events()
    assert {e["event"] for e in first} == {"processed", "delivered"}  # nothing opened yet
    fake.clock.set(NOW + timedelta(days=7))
    return fake, fake.drain_events()


def test_delivered_mail_is_opened_and_clicked_in_realistic_shares() -> None:
    _, later = engagement_run(seed=7)
    opens = [e for e in later if e["event"] == "open"]
    clicks = [e for e in later if e["event"] == "click"]
    assert {e["event"] for e in later} == {"open", "click"}
    machine = [e for e in opens if e["sg_machine_open"]]
    assert 0.40 <= len(opens) / 2000 <= 0.50
    assert 0.28 <= len(machine) / len(opens) <= 0.38
    assert 0.015 <= len(clicks) / 2000 <= 0.05
    delivered = int(NOW.timestamp())
    # A machine open comes within seconds of delivery; a person opens minutes to days later.
    assert all(1 <= e["timestamp"] - delivered <= 20 for e in machine)
    human = {e["touch_id"]: e["timestamp"] for e in opens if not e["sg_machine_open"]}
    assert all(60 <= t - delivered <= 3 * 86400 for t in human.values())
    # A click follows a human open of the same message.
    assert all(e["touch_id"] in human and e["timestamp"] > human[e["touch_id"]] for e in clicks)
    assert len({e["touch_id"] for e in opens}) == len(opens)  # one open per message


def test_opens_and_clicks_have_the_published_shape_and_the_custom_args() -> None:
    published = {e["event"]: set(e) for e in fixture("event_webhook.json")}
    _, later = engagement_run(seed=7, recipients=200)
    for event in later:
        own = set(event) - {"touch_id"}
        # sg_machine_open is newer than the published example; url_offset is documented.
        extra = {"open": {"sg_machine_open"}, "click": {"url_offset"}}[event["event"]]
        assert own == published[event["event"]] | extra, event["event"]
        assert event["touch_id"] and event["sg_message_id"] and event["sg_event_id"]
    click = next(e for e in later if e["event"] == "click")
    assert click["url_offset"] == {"index": 0, "type": "html"}


def test_opens_are_drawn_from_the_seed_and_never_in_the_clocks_future() -> None:
    def drawn(seed: int) -> list[tuple]:
        _, later = engagement_run(seed, recipients=300)
        return [
            (e["event"], e["touch_id"], e["timestamp"], e.get("sg_machine_open")) for e in later
        ]

    assert drawn(3) == drawn(3)
    assert drawn(3) != drawn(4)

    fake = FakeSendGrid(clock=FixedClock(NOW), seed=3)
    server = SandboxServer(fake).start()
    try:
        body = mail()
        body["personalizations"] = [{"to": [{"email": f"p{i}@example.com"}]} for i in range(300)]
        sendgrid.SendGridAPIClient(KEY, host=server.url).send(body)
    finally:
        server.stop()
    fake.drain_events()
    seen: list[dict] = []
    for minutes in (0, 1, 30, 120, 24 * 60, 7 * 24 * 60):
        now = NOW + timedelta(minutes=minutes)
        fake.clock.set(now)
        batch = fake.drain_events()
        assert all(e["timestamp"] <= now.timestamp() for e in batch)
        seen.extend(batch)
    assert len({e["sg_event_id"] for e in seen}) == len(seen) > 0
    assert {e["event"] for e in seen} >= {"open"}


def test_bounced_and_dropped_mail_is_never_opened(fake, client) -> None:
    for _ in range(30):
        client.send(mail(to="gone@example.com"))
    fake.clock.set(NOW + timedelta(days=7))
    assert {e["event"] for e in fake.drain_events()} == {"processed", "bounce", "dropped"}
