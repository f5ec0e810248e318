"""``outreach serve``: signed SendGrid and Twilio webhooks become events, unsigned ones don't."""

from __future__ import annotations

import json
import logging
import threading
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from ledger_rows import person_of, point, sent_touch, walkthrough_store
from sqlalchemy import select
from werkzeug.test import Client

from outreach.cadence import load_cadence_file
from outreach.clock import FixedClock
from outreach.engine.enroll import process_events
from outreach.engine.tick import engine_transactions
from outreach.paths import default_config_dir
from outreach.sandbox.base import SandboxServer
from outreach.sandbox.sendgrid import FakeSendGrid
from outreach.sandbox.twilio import FakeTwilio
from outreach.serve import make_app, serve
from outreach.settings import Settings
from outreach.store.schema import Event

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
STAMP = int(NOW.timestamp())
PUBLIC = "https://hooks.example.org/outreach"
SENDGRID = "/webhooks/sendgrid/events"
INBOUND = "/webhooks/twilio/inbound"
STATUS = "/webhooks/twilio/status"
ANN_PHONE = "+12125550101"

_VARS = (
    "OUTREACH_PUBLIC_URL",
    "SENDGRID_WEBHOOK_PUBLIC_KEY",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_ACCOUNT_SID",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def config():
    return load_cadence_file(default_config_dir() / "cadences.yaml")


@pytest.fixture
def store(engine, config, tmp_path: Path):
    """The walkthrough's eight good candidates (c1 Ann .. c10 Jon) in the store."""
    return walkthrough_store(engine, config, tmp_path, NOW - timedelta(days=1))


@pytest.fixture
def sendgrid() -> FakeSendGrid:
    return FakeSendGrid()


@pytest.fixture
def twilio() -> FakeTwilio:
    return FakeTwilio()


def settings(**env: str | None) -> Settings:
    return Settings(_env_file=None, **{k: v for k, v in env.items() if v is not None})


@pytest.fixture
def full_settings(sendgrid: FakeSendGrid, twilio: FakeTwilio) -> Settings:
    return settings(
        OUTREACH_PUBLIC_URL=PUBLIC,
        SENDGRID_WEBHOOK_PUBLIC_KEY=sendgrid.webhook_public_key,
        TWILIO_ACCOUNT_SID=twilio.account_sid,
        TWILIO_AUTH_TOKEN=twilio.auth_token,
    )


@pytest.fixture
def client(store, full_settings, config) -> Client:
    return Client(make_app(store, full_settings, config, FixedClock(NOW)))


def inbound(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(
            select(Event).where(Event.type != "stage_change").order_by(Event.id)
        ).all()


def bounce_batch() -> list[dict]:
    base = {"timestamp": STAMP - 60, "smtp-id": "<x@sandbox>", "sg_message_id": "m.0"}
    return [
        {**base, "event": "processed", "email": "ben@example.com", "sg_event_id": "e0"},
        {
            **base,
            "event": "bounce",
            "type": "bounce",
            "email": "Ben@Example.com",
            "sg_event_id": "e1",
            "reason": "550 no such user",
            "status": "5.1.1",
        },
        {**base, "event": "spamreport", "email": "hal@example.com", "sg_event_id": "e2"},
        {**base, "event": "bounce", "email": "stranger@example.org", "sg_event_id": "e3"},
    ]


def post_sendgrid(
    client: Client, signer: FakeSendGrid, payload: bytes, stamp: int = STAMP, sent=None
):
    headers = signer.sign_events(payload, stamp)
    return client.post(
        SENDGRID,
        data=payload if sent is None else sent,
        headers=headers,
        content_type="application/json",
    )


def post_twilio(client: Client, twilio: FakeTwilio, path: str, fields: dict, url=None):
    signature = twilio.webhook_signature(url or PUBLIC + path, fields)
    return client.post(path, data=fields, headers={"X-Twilio-Signature": signature})


# -- SendGrid -----------------------------------------------------------------------------


def test_signed_sendgrid_bounce_is_recorded_then_suppresses(
    client, store, sendgrid, config, caplog
) -> None:
    caplog.set_level(logging.DEBUG, logger="outreach")
    payload = json.dumps(bounce_batch()).encode()
    response = post_sendgrid(client, sendgrid, payload)
    assert response.status_code == 200, response.text
    assert response.json == {"recorded": 2, "duplicates": 0, "unmatched": 1, "ignored": 0, "bad": 0}
    rows = inbound(store)
    assert [(r.type, r.channel, r.dedupe_key) for r in rows] == [
        ("bounce", "email", "inbound:e1"),
        ("opt_out", "email", "inbound:e2"),
    ]

    process_events(engine_transactions(store), config, NOW)
    ben = point(store, "email", "ben@example.com")
    assert ben.suppressed and ben.suppressed_reason == "bounced"
    assert point(store, "email", "hal@example.com").suppressed

    logged = caplog.text
    assert "2 recorded" in logged
    assert "@" not in logged and "stranger" not in logged
    assert sendgrid.sign_events(payload, STAMP)["X-Twilio-Email-Event-Webhook-Signature"] not in (
        logged
    )


def test_the_same_batch_twice_is_recorded_once(client, store, sendgrid) -> None:
    payload = json.dumps(bounce_batch()).encode()
    assert post_sendgrid(client, sendgrid, payload).json["recorded"] == 2
    again = post_sendgrid(client, sendgrid, payload, STAMP + 30)
    assert again.status_code == 200
    assert again.json == {"recorded": 0, "duplicates": 2, "unmatched": 1, "ignored": 0, "bad": 0}
    assert len(inbound(store)) == 2


@pytest.mark.parametrize("offset", [-11 * 60, 11 * 60])
def test_a_stale_or_future_timestamp_is_refused(client, store, sendgrid, offset) -> None:
    payload = json.dumps(bounce_batch()).encode()
    response = post_sendgrid(client, sendgrid, payload, STAMP + offset)
    assert response.status_code == 403
    assert "10 minutes" in response.text
    assert inbound(store) == []
    # Within the window is fine.
    assert post_sendgrid(client, sendgrid, payload, STAMP - 9 * 60).status_code == 200


def test_tampered_wrong_key_and_unsigned_batches_are_refused(client, store, sendgrid) -> None:
    payload = json.dumps(bounce_batch()).encode()
    tampered = payload.replace(b"hal@example.com", b"ann@example.com")
    assert post_sendgrid(client, sendgrid, payload, sent=tampered).status_code == 403
    assert post_sendgrid(client, FakeSendGrid(), payload).status_code == 403

    headers = sendgrid.sign_events(payload, STAMP)
    unsigned = client.post(SENDGRID, data=payload, content_type="application/json")
    assert unsigned.status_code == 403
    no_stamp = client.post(
        SENDGRID,
        data=payload,
        headers={
            "X-Twilio-Email-Event-Webhook-Signature": headers[
                "X-Twilio-Email-Event-Webhook-Signature"
            ]
        },
    )
    assert no_stamp.status_code == 403
    garbage = client.post(
        SENDGRID,
        data=payload,
        headers={**headers, "X-Twilio-Email-Event-Webhook-Signature": "%%not base64%%"},
    )
    assert garbage.status_code == 403
    # The signature of another timestamp does not carry over.
    moved = {**headers, "X-Twilio-Email-Event-Webhook-Timestamp": str(STAMP + 1)}
    assert client.post(SENDGRID, data=payload, headers=moved).status_code == 403
    assert inbound(store) == []


def test_without_a_public_key_sendgrid_answers_503(store, sendgrid, config) -> None:
    app = make_app(store, settings(OUTREACH_PUBLIC_URL=PUBLIC), config, FixedClock(NOW))
    assert any("SENDGRID_WEBHOOK_PUBLIC_KEY" in p for p in app.problems)
    payload = json.dumps(bounce_batch()).encode()
    response = post_sendgrid(Client(app), sendgrid, payload)
    assert response.status_code == 503
    assert "SENDGRID_WEBHOOK_PUBLIC_KEY" in response.text
    assert inbound(store) == []

    broken = make_app(
        store, settings(SENDGRID_WEBHOOK_PUBLIC_KEY="not a key"), config, FixedClock(NOW)
    )
    response = post_sendgrid(Client(broken), sendgrid, payload)
    assert response.status_code == 503
    assert "SENDGRID_WEBHOOK_PUBLIC_KEY" in response.text
    assert "not a key" not in response.text


def test_a_pem_public_key_works_too(store, sendgrid, config) -> None:
    key = sendgrid.webhook_public_key
    pem = f"-----BEGIN PUBLIC KEY-----\n{key}\n-----END PUBLIC KEY-----\n"
    app = make_app(store, settings(SENDGRID_WEBHOOK_PUBLIC_KEY=pem), config, FixedClock(NOW))
    payload = json.dumps(bounce_batch()).encode()
    assert post_sendgrid(Client(app), sendgrid, payload).json["recorded"] == 2


@pytest.mark.parametrize("body", [b"{not json", b'{"event": "bounce"}', b"\xff\xfe"])
def test_a_signed_body_that_is_not_a_json_array_is_400(client, store, sendgrid, body) -> None:
    response = post_sendgrid(client, sendgrid, body)
    assert response.status_code == 400
    assert "JSON array" in response.text
    assert inbound(store) == []


def test_an_empty_array_records_nothing(client, sendgrid) -> None:
    response = post_sendgrid(client, sendgrid, b"[]")
    assert response.status_code == 200
    assert response.json == {"recorded": 0, "duplicates": 0, "unmatched": 0, "ignored": 0, "bad": 0}


def bad_items() -> list[tuple[str, str]]:
    """Items that once answered 500 for their whole batch (as raw JSON), and the reason
    each is now reported with."""
    item = '{"event": "bounce", "email": "ann@example.com", "sg_event_id": "b%d", %s}'
    cases = [
        ('"timestamp": 1e30', "timestamp: past the year 9999"),
        ('"timestamp": NaN', "timestamp: not a finite number"),
        ('"timestamp": -Infinity', "timestamp: not a finite number"),
        ('"timestamp": -5', "timestamp: negative"),
        ('"timestamp": "99999999999999999999"', "timestamp: past the year 9999"),
        ('"timestamp": [1]', "timestamp: not a Unix time"),
        (f'"timestamp": {STAMP + 3 * 86400}', "timestamp: more than a day in the future"),
        (f'"timestamp": {STAMP}, "touch_id": "{"9" * 30}", "email": 5', "address: Input should"),
        (f'"timestamp": {STAMP}, "sg_event_id": "a\\u0000b"', "id: contains a NUL character"),
        (
            f'"timestamp": {STAMP}, "email": "\\ud800@x.org"',
            "address: Input should be a valid string",
        ),
    ]
    raw = [(item % (n, extra), reason) for n, (extra, reason) in enumerate(cases)]
    raw.append(("[" * 100_000 + "]" * 100_000, "nested more than 32 levels deep"))
    raw.append(('"just a string"', "expected a JSON object, got string"))
    raw.append(('{"email": "ann@example.com"}', "event: missing or not text"))
    return raw


def test_one_bad_item_is_reported_and_skipped_and_the_rest_is_stored(
    client, store, sendgrid, caplog
) -> None:
    """A batch with a bounce and a spam report among items that used to answer 500 for
    the whole batch (NaN, huge and negative timestamps, 100,000 nested arrays, NUL
    characters, lone surrogates, wrong types): 200, the two are stored, each bad item is
    logged with its index and what is wrong, never its address."""
    caplog.set_level(logging.DEBUG, logger="outreach")
    good = [json.dumps(item) for item in bounce_batch()]
    bad = bad_items()
    body = "[" + ",".join([good[0], *(text for text, _ in bad), *good[1:]]) + "]"
    response = post_sendgrid(client, sendgrid, body.encode())
    assert response.status_code == 200, response.text
    assert response.json == {
        "recorded": 2,
        "duplicates": 0,
        "unmatched": 1,
        "ignored": 0,
        "bad": len(bad),
    }
    assert [r.dedupe_key for r in inbound(store)] == ["inbound:e1", "inbound:e2"]
    for index, (_, reason) in enumerate(bad, start=1):
        assert f"sendgrid batch [{index}]: {reason}" in caplog.text
    assert "@" not in caplog.text


def test_a_body_over_10_mb_is_413_and_nothing_is_stored(client, store, sendgrid) -> None:
    item = json.dumps(bounce_batch()[1])
    body = ("[" + ",".join([item] * (10 * 1024 * 1024 // len(item) + 1)) + "]").encode()
    response = post_sendgrid(client, sendgrid, body)
    assert response.status_code == 413
    assert inbound(store) == []


# -- Twilio inbound -----------------------------------------------------------------------


def test_a_signed_stop_is_an_opt_out_that_suppresses_the_phone(
    client, store, twilio, config, caplog
) -> None:
    caplog.set_level(logging.DEBUG, logger="outreach")
    fields = twilio.inbound(ANN_PHONE, "STOP")
    response = post_twilio(client, twilio, INBOUND, fields)
    assert response.status_code == 200
    assert response.mimetype == "text/xml"
    assert "<Response/>" in response.text and "<Message" not in response.text
    (row,) = inbound(store)
    assert (row.type, row.channel, row.dedupe_key) == (
        "opt_out",
        "sms",
        f"inbound:{fields['MessageSid']}",
    )
    assert row.created_at == NOW

    process_events(engine_transactions(store), config, NOW)
    phone = point(store, "phone", ANN_PHONE)
    assert phone.suppressed and phone.suppressed_reason == "opted out"
    assert not point(store, "email", "ann@example.com").suppressed
    assert "opt_out: 1 recorded" in caplog.text
    assert "555" not in caplog.text and "STOP" not in caplog.text


def test_a_reply_is_recorded_and_start_is_not(client, store, twilio) -> None:
    assert post_twilio(client, twilio, INBOUND, twilio.inbound(ANN_PHONE, "Sure")).status_code == (
        200
    )
    start = post_twilio(client, twilio, INBOUND, twilio.inbound(ANN_PHONE, "START"))
    assert start.status_code == 200 and "<Response/>" in start.text
    assert [r.type for r in inbound(store)] == ["reply"]


def test_a_bad_twilio_signature_is_403(client, store, twilio) -> None:
    fields = twilio.inbound(ANN_PHONE, "STOP")
    forged = FakeTwilio(auth_token="someone-else")
    assert post_twilio(client, forged, INBOUND, fields).status_code == 403
    # Signed for another URL (without the public URL's path prefix).
    wrong_url = "https://hooks.example.org" + INBOUND
    assert post_twilio(client, twilio, INBOUND, fields, url=wrong_url).status_code == 403
    # A field changed after signing.
    signature = twilio.webhook_signature(PUBLIC + INBOUND, fields)
    changed = {**fields, "From": "+14155550104"}
    response = client.post(INBOUND, data=changed, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 403
    assert client.post(INBOUND, data=fields).status_code == 403
    assert inbound(store) == []


def test_twilio_without_public_url_or_token_answers_503(store, twilio, config) -> None:
    no_url = make_app(store, settings(TWILIO_AUTH_TOKEN=twilio.auth_token), config, FixedClock(NOW))
    fields = twilio.inbound(ANN_PHONE, "STOP")
    for path in (INBOUND, STATUS):
        response = post_twilio(Client(no_url), twilio, path, fields)
        assert response.status_code == 503
        assert "OUTREACH_PUBLIC_URL" in response.text
    no_token = make_app(store, settings(OUTREACH_PUBLIC_URL=PUBLIC), config, FixedClock(NOW))
    response = post_twilio(Client(no_token), twilio, INBOUND, fields)
    assert response.status_code == 503 and "TWILIO_AUTH_TOKEN" in response.text
    assert inbound(store) == []


def test_a_public_url_with_a_trailing_slash_signs_the_same(store, twilio, config) -> None:
    app = make_app(
        store,
        settings(OUTREACH_PUBLIC_URL=PUBLIC + "/", TWILIO_AUTH_TOKEN=twilio.auth_token),
        config,
        FixedClock(NOW),
    )
    fields = twilio.inbound(ANN_PHONE, "stop")
    assert post_twilio(Client(app), twilio, INBOUND, fields).status_code == 200
    assert len(inbound(store)) == 1


# -- Twilio status callbacks --------------------------------------------------------------


def sms_touch(engine, sid: str) -> int:
    ann = person_of(engine, "c1")
    phone = point(engine, "phone", ANN_PHONE).id
    return sent_touch(
        engine, ann, phone, f"t:{sid}", at=NOW, channel="sms", provider_message_id=sid
    )


def status_form(twilio: FakeTwilio, sid: str, status: str, code: str | None, to: str) -> dict:
    fields = {
        "AccountSid": twilio.account_sid,
        "MessageSid": sid,
        "SmsSid": sid,
        "MessageStatus": status,
        "SmsStatus": status,
        "From": "+15005550006",
        "To": to,
        "ApiVersion": "2010-04-01",
    }
    if code is not None:
        fields["ErrorCode"] = code
    return fields


def test_an_undelivered_30006_bounces_the_touchs_phone(
    client, store, twilio, config, caplog
) -> None:
    caplog.set_level(logging.DEBUG, logger="outreach")
    sid = "SM" + "a" * 32
    touch = sms_touch(store, sid)
    fields = status_form(twilio, sid, "undelivered", "30006", ANN_PHONE)
    response = post_twilio(client, twilio, STATUS, fields)
    assert response.status_code == 200
    # Twilio retries nothing here, but a repeat records nothing new.
    assert post_twilio(client, twilio, STATUS, fields).status_code == 200
    (row,) = inbound(store)
    assert (row.type, row.channel, row.touch_id) == ("bounce", "sms", touch)
    assert row.contact_point_id == point(store, "phone", ANN_PHONE).id
    assert row.payload == {
        "matched_by": "touch",
        "id": f"twilio-status:{sid}",
        "detail": "twilio undelivered 30006",
    }
    assert f"touch {touch}" in caplog.text and "555" not in caplog.text

    process_events(engine_transactions(store), config, NOW)
    phone = point(store, "phone", ANN_PHONE)
    assert phone.suppressed and phone.suppressed_reason == "bounced"
    assert not point(store, "email", "ann@example.com").suppressed


def test_a_failed_status_without_a_touch_bounces_the_number(client, store, twilio) -> None:
    fields = status_form(twilio, "SM" + "b" * 32, "failed", "30003", "+1 (415) 555-0104")
    assert post_twilio(client, twilio, STATUS, fields).status_code == 200
    (row,) = inbound(store)
    assert (row.type, row.channel, row.touch_id, row.payload["matched_by"]) == (
        "bounce",
        "sms",
        None,
        "address",
    )
    assert row.contact_point_id == point(store, "phone", "+14155550104").id


def test_a_status_whose_sid_is_not_a_sid_bounces_the_number(client, store, twilio) -> None:
    """A NUL in MessageSid reached the touch lookup, which PostgreSQL refuses (503, and
    Twilio retried it for nothing); now the field names no touch and the number counts."""
    fields = status_form(twilio, "SM\x00" + "b" * 30, "failed", "30003", "+1 (415) 555-0104")
    assert post_twilio(client, twilio, STATUS, fields).status_code == 200
    (row,) = inbound(store)
    assert (row.type, row.touch_id, row.payload["matched_by"]) == ("bounce", None, "address")
    assert "id" not in row.payload


def test_a_delivered_status_is_a_delivered_event_of_the_touch_once(
    client, store, twilio, config, caplog
) -> None:
    caplog.set_level(logging.DEBUG, logger="outreach")
    sid = "SM" + "e" * 32
    touch = sms_touch(store, sid)
    process_events(engine_transactions(store), config, NOW)  # the import's stage changes
    for status in ("sent", "delivered", "delivered"):  # Twilio may post a status twice
        fields = status_form(twilio, sid, status, None, ANN_PHONE)
        assert post_twilio(client, twilio, STATUS, fields).status_code == 200
    (row,) = inbound(store)
    assert (row.type, row.channel, row.touch_id, row.person_id) == (
        "delivered",
        "sms",
        touch,
        person_of(store, "c1"),
    )
    assert row.contact_point_id == point(store, "phone", ANN_PHONE).id
    assert row.payload == {} and row.at == NOW
    assert row.dedupe_key == f"inbound:twilio-status:{sid}:delivered"
    assert row.processed_at == NOW  # the engine never acts on it
    assert f"touch {touch}" in caplog.text and "555" not in caplog.text

    stats = process_events(engine_transactions(store), config, NOW)
    assert stats.events == 0
    assert not point(store, "phone", ANN_PHONE).suppressed


def test_a_delivered_status_and_a_later_failure_of_one_sid_are_both_kept(
    client, store, twilio
) -> None:
    sid = "SM" + "f" * 32
    touch = sms_touch(store, sid)
    for status, code in (("delivered", None), ("undelivered", "30006")):
        fields = status_form(twilio, sid, status, code, ANN_PHONE)
        assert post_twilio(client, twilio, STATUS, fields).status_code == 200
    rows = inbound(store)
    assert [(r.type, r.touch_id) for r in rows] == [("delivered", touch), ("bounce", touch)]


def test_a_delivered_status_no_touch_has_is_ignored(client, store, twilio, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="outreach")
    fields = status_form(twilio, "SM" + "9" * 32, "delivered", None, ANN_PHONE)
    assert post_twilio(client, twilio, STATUS, fields).status_code == 200
    assert inbound(store) == []
    assert "no touch has the message SID; ignored" in caplog.text


@pytest.mark.parametrize(
    ("status", "code"),
    [
        ("sent", None),
        ("undelivered", "30007"),  # carrier filtering: not the number's fault
        ("failed", "30008"),
        ("queued", "30006"),
    ],
)
def test_other_statuses_record_nothing(client, store, twilio, status, code) -> None:
    sid = "SM" + "c" * 32
    sms_touch(store, sid)
    fields = status_form(twilio, sid, status, code, ANN_PHONE)
    assert post_twilio(client, twilio, STATUS, fields).status_code == 200
    assert inbound(store) == []


def test_a_status_callback_with_a_bad_signature_is_403(client, store, twilio) -> None:
    sid = "SM" + "d" * 32
    sms_touch(store, sid)
    fields = status_form(twilio, sid, "undelivered", "30006", ANN_PHONE)
    forged = FakeTwilio(auth_token="nope")
    assert post_twilio(client, forged, STATUS, fields).status_code == 403
    assert inbound(store) == []


# -- routing and serving ------------------------------------------------------------------


def test_healthz_unknown_paths_and_wrong_methods(client) -> None:
    health = client.get("/healthz")
    assert health.status_code == 200 and health.text.strip() == "ok"
    assert client.get("/nope").status_code == 404
    wrong = client.get(SENDGRID)
    assert wrong.status_code == 405 and "POST" in wrong.headers["Allow"]
    assert client.post("/healthz").status_code == 405


def test_serve_end_to_end_and_stop(store, full_settings, sendgrid, config) -> None:
    app = make_app(store, full_settings, config, FixedClock(NOW))
    payload = json.dumps(bounce_batch()).encode()
    # Through a real socket, as SendGrid would post.
    with SandboxServer(app) as server:
        request = urllib.request.Request(
            server.url + SENDGRID,
            data=payload,
            headers={**sendgrid.sign_events(payload, STAMP), "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert answer.status == 200
            assert json.loads(answer.read())["recorded"] == 2

    # serve() itself: binds, answers, stops when told.
    stop = threading.Event()
    ports: list[int] = []
    ready = threading.Event()

    def on_ready(port: int) -> None:
        ports.append(port)
        ready.set()

    thread = threading.Thread(
        target=serve, args=(app, "127.0.0.1", 0, stop), kwargs={"on_ready": on_ready}
    )
    thread.start()
    try:
        assert ready.wait(5)
        with urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/healthz", timeout=5) as r:
            assert r.status == 200 and r.read().strip() == b"ok"
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()


def test_outreach_serve_answers_and_stops_on_term(tmp_path, database_url) -> None:
    import os
    import re
    import signal
    import subprocess

    import httpx
    from test_entrypoint import outreach_script

    env = {k: v for k, v in os.environ.items() if not k.startswith(("OUTREACH_", "SENDGRID_"))}
    env["OUTREACH_DATABASE_URL"] = database_url
    proc = subprocess.Popen(
        [outreach_script(), "serve", "--port", "0"],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        lines = []
        while True:
            line = proc.stderr.readline()
            assert line, "".join(lines)
            lines.append(line)
            found = re.search(r"listening on (http://\S+?) ", line)
            if found:
                break
        # Unconfigured routes are named at startup, and refuse rather than accept unsigned data.
        assert any("SENDGRID_WEBHOOK_PUBLIC_KEY" in line for line in lines)
        base = found.group(1)
        assert httpx.get(f"{base}/healthz", timeout=5).text.strip() == "ok"
        assert httpx.post(f"{base}/webhooks/sendgrid/events", json=[], timeout=5).status_code == 503
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=15)
    assert code == 0
