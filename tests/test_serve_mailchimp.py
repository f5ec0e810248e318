"""``POST /webhooks/mailchimp``: signed Mandrill batches become events; forged, malformed,
oversized and replayed ones change nothing."""

from __future__ import annotations

import json
import logging
import urllib.parse
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
from outreach.inbound import mandrill
from outreach.paths import default_config_dir
from outreach.sandbox.mailchimp import FakeMailchimp
from outreach.serve import make_app
from outreach.settings import Settings
from outreach.store.schema import Event

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
TS = int(NOW.timestamp()) - 60
PUBLIC = "https://hooks.example.org/outreach"
PATH = "/webhooks/mailchimp"
KEY = "mandrill-webhook-key"


@pytest.fixture(scope="module")
def config():
    return load_cadence_file(default_config_dir() / "cadences.yaml")


@pytest.fixture
def store(engine, config, tmp_path: Path):
    return walkthrough_store(engine, config, tmp_path, NOW - timedelta(days=1))


@pytest.fixture
def signer() -> FakeMailchimp:
    return FakeMailchimp(webhook_key=KEY)


def make_client(store, config, **env: str) -> Client:
    values = {"OUTREACH_PUBLIC_URL": PUBLIC, "MAILCHIMP_WEBHOOK_KEY": KEY, **env}
    settings = Settings(_env_file=None, **{k: v for k, v in values.items() if v})
    return Client(make_app(store, settings, config, FixedClock(NOW)))


@pytest.fixture
def client(store, config) -> Client:
    return make_client(store, config)


def post(client: Client, signer: FakeMailchimp, events: list[dict], **headers: str):
    body, signed = signer.signed_form(PUBLIC + PATH, events)
    signed.update(headers)
    return client.post(PATH, data=body, headers=signed)


def event(kind: str, email: str, msg_id: str, *, touch_id: int | None = None, ts: int = TS):
    """A message event as Mandrill documents it (``msg`` with metadata)."""
    metadata = {"touch_id": str(touch_id)} if touch_id is not None else {}
    msg = {
        "ts": ts - 30,
        "_id": msg_id,
        "email": email,
        "sender": "jobs@acme.example",
        "subject": "A role",
        "state": "bounced" if kind == "hard_bounce" else "sent",
        "tags": ["backend"],
        "metadata": metadata,
        "bounce_description": "bad_mailbox",
        "diag": "smtp;550 5.1.1 unknown user",
    }
    return {"event": kind, "_id": msg_id, "ts": ts, "msg": msg}


def rows(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(
            select(Event).where(Event.type != "stage_change").order_by(Event.id)
        ).all()


def test_head_answers_200_so_mandrill_accepts_the_url(client) -> None:
    assert client.head(PATH).status_code == 200


def test_a_signed_batch_records_bounces_spam_unsubscribes_and_delivery_events(
    client, store, signer, config, caplog
) -> None:
    caplog.set_level(logging.DEBUG, logger="outreach")
    ann = person_of(store, "c1")
    touch = sent_touch(
        store,
        ann,
        point(store, "email", "ann@example.com").id,
        "t-ann",
        at=NOW - timedelta(hours=1),
    )
    batch = [
        event("send", "ann@example.com", "m0", touch_id=touch),
        event("open", "ann@example.com", "m0", touch_id=touch),
        event("hard_bounce", "Ben@Example.com", "m1"),
        event("spam", "hal@example.com", "m2"),
        event("unsub", "ann@example.com", "m0", touch_id=touch),
        event("soft_bounce", "ben@example.com", "m3"),
        event("deferral", "ben@example.com", "m3"),
        event("hard_bounce", "stranger@example.org", "m4"),
    ]
    response = post(client, signer, batch)
    assert response.status_code == 200, response.text
    assert response.json == {
        "recorded": 5,
        "duplicates": 0,
        "inbound": 0,
        "unmatched": 1,
        "bad": 0,
    }
    recorded = {(r.type, r.dedupe_key) for r in rows(store)}
    assert ("bounce", f"inbound:mandrill:m1:hard_bounce:{TS}") in recorded
    assert {t for t, _ in recorded} >= {"bounce", "opt_out", "unsubscribe", "delivered", "open"}

    process_events(engine_transactions(store), config, NOW)
    ben = point(store, "email", "ben@example.com")
    assert ben.suppressed and ben.suppressed_reason == "bounced"
    assert point(store, "email", "hal@example.com").suppressed
    assert point(store, "email", "ann@example.com").suppressed
    assert "@" not in caplog.text


def test_a_replayed_batch_records_nothing_new(client, store, signer) -> None:
    batch = [event("hard_bounce", "ben@example.com", "m1"), event("spam", "hal@example.com", "m2")]
    assert post(client, signer, batch).json["recorded"] == 2
    again = post(client, signer, batch)
    assert again.status_code == 200 and again.json["recorded"] == 0
    assert again.json["duplicates"] == 2 and len(rows(store)) == 2


def test_a_second_open_of_the_same_message_is_its_own_event(client, store, signer) -> None:
    ann = person_of(store, "c1")
    touch = sent_touch(
        store,
        ann,
        point(store, "email", "ann@example.com").id,
        "t-ann",
        at=NOW - timedelta(hours=1),
    )
    first = event("open", "ann@example.com", "m0", touch_id=touch)
    second = event("open", "ann@example.com", "m0", touch_id=touch, ts=TS + 5)
    assert post(client, signer, [first, second]).json["recorded"] == 2


@pytest.mark.parametrize("forgery", ["wrong key", "tampered body", "other url"])
def test_a_forged_batch_is_refused_and_records_nothing(client, store, forgery) -> None:
    batch = [event("hard_bounce", "ben@example.com", "m1")]
    if forgery == "wrong key":
        body, headers = FakeMailchimp(webhook_key="not-it").signed_form(PUBLIC + PATH, batch)
    elif forgery == "other url":
        body, headers = FakeMailchimp(webhook_key=KEY).signed_form(
            "https://evil.example" + PATH, batch
        )
    else:
        _, headers = FakeMailchimp(webhook_key=KEY).signed_form(PUBLIC + PATH, batch)
        other = [event("hard_bounce", "hal@example.com", "m1")]
        body = urllib.parse.urlencode([("mandrill_events", json.dumps(other))]).encode()
    response = client.post(PATH, data=body, headers=headers)
    assert response.status_code == 403
    assert rows(store) == []


def test_an_unsigned_batch_is_401(client, store) -> None:
    body = urllib.parse.urlencode([("mandrill_events", "[]")]).encode()
    response = client.post(
        PATH, data=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 401 and rows(store) == []


def test_without_the_key_every_post_is_503_naming_it(store, config, signer) -> None:
    client = make_client(store, config, MAILCHIMP_WEBHOOK_KEY="")
    response = post(client, signer, [event("hard_bounce", "ben@example.com", "m1")])
    assert response.status_code == 503 and "MAILCHIMP_WEBHOOK_KEY" in response.text
    assert rows(store) == []


@pytest.mark.parametrize("field", ["not json", '{"event": "hard_bounce"}', None])
def test_a_malformed_batch_is_400(client, store, field) -> None:
    params = [] if field is None else [("mandrill_events", field)]
    params.append(("other", "x"))
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        mandrill.SIGNATURE_HEADER: mandrill.sign(KEY, PUBLIC + PATH, params),
    }
    response = client.post(PATH, data=urllib.parse.urlencode(params).encode(), headers=headers)
    assert response.status_code == 400 and rows(store) == []


def test_bad_items_are_left_out_and_the_rest_recorded(client, store, signer) -> None:
    good = event("hard_bounce", "ben@example.com", "m1")
    no_ts = {**event("spam", "hal@example.com", "m2"), "ts": "yesterday"}
    response = post(client, signer, [good, no_ts, 7, {"event": "spam"}])
    assert response.status_code == 200
    assert response.json["recorded"] == 1 and response.json["bad"] == 3


def test_an_oversized_batch_is_413(client, store, monkeypatch) -> None:
    monkeypatch.setattr(mandrill, "MAX_BODY_BYTES", 1000)
    body = urllib.parse.urlencode([("mandrill_events", "[" + " " * 2000 + "]")]).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded", mandrill.SIGNATURE_HEADER: "x"}
    response = client.post(PATH, data=body, headers=headers)
    assert response.status_code == 413 and rows(store) == []


def test_an_inbound_reply_goes_through_intake_once(client, store, signer) -> None:
    raw = (
        b"From: Ann Lee <ann@example.com>\r\nTo: replies@reply.acme.example\r\n"
        b"Subject: Re: A role\r\nMessage-ID: <reply-1@example.com>\r\n"
        b"Date: Wed, 25 Nov 2026 14:00:00 +0000\r\n\r\nYes, I am interested.\r\n"
    )
    inbound = FakeMailchimp.inbound_event(raw, "replies@reply.acme.example", ts=TS)
    first = post(client, signer, [inbound])
    assert first.status_code == 200 and first.json["inbound"] == 1
    again = post(client, signer, [inbound])
    assert again.status_code == 200 and again.json["inbound"] == 0


def test_an_inbound_event_without_a_message_is_bad_not_500(client, signer) -> None:
    response = post(client, signer, [{"event": "inbound", "ts": TS, "msg": {"raw_msg": ""}}])
    assert response.status_code == 200 and response.json["bad"] == 1


def test_an_inbound_message_with_a_lone_surrogate_is_bad_and_the_rest_recorded(
    client, signer
) -> None:
    broken = {"event": "inbound", "ts": TS, "msg": {"raw_msg": "Subject: x\n\n\ud800"}}
    good = event("hard_bounce", "ben@example.com", "m9")
    response = post(client, signer, [broken, good])
    assert response.status_code == 200
    assert response.json["bad"] == 1 and response.json["recorded"] == 1


def test_a_missing_key_is_a_startup_problem_only_when_mailchimp_sends_email(store, config) -> None:
    def problems(**env: str) -> list[str]:
        settings = Settings(_env_file=None, OUTREACH_PUBLIC_URL=PUBLIC, **env)
        return [p for p in make_app(store, settings, config, FixedClock(NOW)).problems if PATH in p]

    assert problems() == []
    [problem] = problems(OUTREACH_EMAIL_PROVIDER="mailchimp")
    assert "MAILCHIMP_WEBHOOK_KEY" in problem
    assert problems(OUTREACH_EMAIL_PROVIDER="mailchimp", MAILCHIMP_WEBHOOK_KEY=KEY) == []
