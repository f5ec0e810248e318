"""The Mailchimp Transactional fake speaks Mandrill's wire format: key in the body, per
recipient statuses, scheduled sends and their cancellation, errors, faults, signed webhooks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from werkzeug.wrappers import Request, Response

from outreach.clock import FixedClock
from outreach.sandbox.base import SandboxServer
from outreach.sandbox.mailchimp import FakeMailchimp

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
KEY = "md-fake-key"


@pytest.fixture
def fake() -> FakeMailchimp:
    return FakeMailchimp(
        api_key=KEY, clock=FixedClock(NOW), rejected={"bounced@example.com": "hard-bounce"}
    )


@pytest.fixture
def url(fake) -> Iterator[str]:
    with SandboxServer(fake) as server:
        yield server.url + "/api/1.3/messages"


def call(url: str, name: str, body: dict, key: str | None = KEY) -> httpx.Response:
    if key is not None:
        body = {**body, "key": key}
    return httpx.post(f"{url}/{name}.json", json=body, timeout=5)


def message(*to: str) -> dict:
    return {
        "subject": "Hi",
        "text": "Hello",
        "from_email": "jobs@acme.example",
        "to": [{"email": t, "type": "to"} for t in to],
        "metadata": {"touch_id": "7"},
    }


def test_a_wrong_or_missing_key_is_invalid_key_with_mandrills_error_shape(url) -> None:
    for key in ("md-wrong", None):
        answer = call(url, "send", {"message": message("a@example.com")}, key=key)
        assert answer.status_code == 500
        body = answer.json()
        assert body["status"] == "error" and body["name"] == "Invalid_Key"
        assert isinstance(body["code"], int) and body["message"]


def test_send_answers_per_recipient_statuses(url, fake) -> None:
    answer = call(url, "send", {"message": message("a@example.com", "bounced@example.com", "nope")})
    assert answer.status_code == 200
    statuses = {e["email"]: (e["status"], e["reject_reason"]) for e in answer.json()}
    assert statuses == {
        "a@example.com": ("sent", None),
        "bounced@example.com": ("rejected", "hard-bounce"),
        "nope": ("invalid", None),
    }
    assert all(len(e["_id"]) == 32 for e in answer.json())


def test_send_without_recipients_is_a_validation_error(url) -> None:
    answer = call(url, "send", {"message": {"subject": "x"}})
    assert answer.status_code == 500 and answer.json()["name"] == "ValidationError"


def test_a_future_send_at_is_scheduled_listed_and_cancellable_once(url, fake) -> None:
    at = (NOW + timedelta(hours=3)).strftime("%Y-%m-%d %H:%M:%S")
    [entry] = call(url, "send", {"message": message("a@example.com"), "send_at": at}).json()
    assert entry["status"] == "scheduled"

    [listed] = call(url, "list-scheduled", {"to": "a@example.com"}).json()
    assert listed["_id"] == entry["_id"] and listed["send_at"] == at
    assert call(url, "list-scheduled", {"to": "b@example.com"}).json() == []

    assert call(url, "cancel-scheduled", {"id": entry["_id"]}).status_code == 200
    again = call(url, "cancel-scheduled", {"id": entry["_id"]})
    assert again.status_code == 500 and again.json()["name"] == "Unknown_Message"


def test_a_past_send_at_sends_at_once_and_a_bad_one_is_refused(url) -> None:
    past = (NOW - timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")
    [entry] = call(url, "send", {"message": message("a@example.com"), "send_at": past}).json()
    assert entry["status"] == "sent"
    bad = call(url, "send", {"message": message("a@example.com"), "send_at": "tomorrow"})
    assert bad.status_code == 500 and bad.json()["name"] == "ValidationError"


def test_info_and_metadata_search_find_sent_mail_only(url, fake) -> None:
    [entry] = call(url, "send", {"message": message("a@example.com")}).json()
    info = call(url, "info", {"id": entry["_id"]}).json()
    assert info["state"] == "sent" and info["metadata"] == {"touch_id": "7"}
    assert [m["_id"] for m in call(url, "search", {"query": "u_touch_id:7"}).json()] == [
        entry["_id"]
    ]
    assert call(url, "search", {"query": "u_touch_id:8"}).json() == []
    missing = call(url, "info", {"id": "0" * 32})
    assert missing.status_code == 500 and missing.json()["name"] == "Unknown_Message"


def test_scheduled_mail_is_sent_when_due(url, fake) -> None:
    at = (NOW + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")
    [entry] = call(url, "send", {"message": message("a@example.com"), "send_at": at}).json()
    assert fake.deliver_due() == 0
    fake.clock.set(NOW + timedelta(hours=1))
    assert fake.deliver_due() == 1
    assert call(url, "info", {"id": entry["_id"]}).json()["state"] == "sent"


def test_injected_429_carries_retry_after_and_5xx_processes_nothing(url, fake) -> None:
    fake.faults.rate_limited(1, retry_after=3)
    limited = call(url, "send", {"message": message("a@example.com")})
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "3"
    fake.faults.server_errors(1, status=503)
    assert call(url, "send", {"message": message("a@example.com")}).status_code == 503
    assert fake.messages == {}


def test_webhooks_are_signed_as_mandrill_documents(fake) -> None:
    received: list[tuple[str, dict, str]] = []
    done = threading.Event()

    def receiver(environ, start_response):
        request = Request(environ)
        received.append(
            (request.path, request.form.to_dict(), request.headers["X-Mandrill-Signature"])
        )
        done.set()
        return Response("ok")(environ, start_response)

    with SandboxServer(fake) as api:
        sent = httpx.post(
            api.url + "/api/1.3/messages/send.json",
            json={"key": KEY, "message": message("a@example.com")},
            timeout=5,
        ).json()[0]
    with SandboxServer(receiver) as hook:
        target = hook.url + "/webhooks/mailchimp"
        status = fake.post_events(target, [fake.event("hard_bounce", sent["_id"])])
        assert status == 200 and done.wait(5)
    path, form, signature = received[0]
    # Recomputed from the documented algorithm, not with the code under test.
    signed = target + "".join(k + form[k] for k in sorted(form))
    expected = base64.b64encode(
        hmac.new(fake.webhook_key.encode(), signed.encode(), hashlib.sha1).digest()
    ).decode()
    assert path == "/webhooks/mailchimp" and signature == expected
    [event] = json.loads(form["mandrill_events"])
    assert event["event"] == "hard_bounce" and event["_id"] == sent["_id"]
    assert event["msg"]["metadata"] == {"touch_id": "7"} and event["msg"]["state"] == "bounced"
    assert isinstance(event["ts"], int)
    assert urllib.parse.parse_qs(fake.signed_form(target, [event])[0].decode())["mandrill_events"]
