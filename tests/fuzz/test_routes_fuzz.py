"""Fuzz every route of ``outreach serve``: no request gets a 500, the app never raises.

Signed routes are fuzzed with correct signatures (a test ECDSA key for SendGrid's Event
Webhook and Inbound Parse, the test auth token for Twilio), so the generated bodies reach
the parsing, validation and storage code; each must be answered 200, 400 or 413 (a 503
would make the provider retry a request that can never succeed). The same requests
unsigned, or with garbage signatures, get 401 or 403 and store nothing. Every route of
the app's URL map, including routes added later, also gets arbitrary unsigned requests.

``OUTREACH_FUZZ_EXAMPLES`` sets the examples per test (40 in the normal suite);
``python benchmarks/fuzz.py`` runs 1,000.
"""

from __future__ import annotations

import io
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from ledger_rows import person_of, point, sent_touch, walkthrough_store
from sqlalchemy import Engine, func, select, update
from throwaway_db import throwaway_database
from werkzeug.test import Client

from outreach.cadence import load_cadence_file
from outreach.clock import FixedClock
from outreach.paths import default_config_dir
from outreach.sandbox.inbound_parse import new_signing_key, public_key_text, sign_body
from outreach.sandbox.sendgrid import FakeSendGrid
from outreach.sandbox.twilio import FakeTwilio
from outreach.serve import WebhookApp, make_app
from outreach.settings import Settings
from outreach.store import make_engine, upgrade
from outreach.store.schema import Event, InboundMessage, Touch

EXAMPLES = int(os.environ.get("OUTREACH_FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.function_scoped_fixture,
    ],
)
NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
STAMP = int(NOW.timestamp())
PUBLIC = "https://hooks.example.org/outreach"
TOKEN = "parse-token-fuzz"
SMS_SID = "SM" + "0" * 31 + "1"
REPLY_TOKEN = "0123456789abcdef"
RATING_TOKEN = "k3Jx9QmZr2V0aB7cD8eF1g"
SENDGRID = "/webhooks/sendgrid/events"
INBOUND = "/webhooks/sendgrid/inbound"
TWILIO_INBOUND = "/webhooks/twilio/inbound"
TWILIO_STATUS = "/webhooks/twilio/status"
#: what a signed request may be answered: stored (200), refused as unreadable (400), too
#: large (413). Never 500, and never 503: the store is up, so a 503 would be a crash the
#: provider retries for days.
SIGNED_OK = {200, 400, 413}


@dataclass
class World:
    """One store with the walkthrough's people, the app and the providers' test keys."""

    engine: Engine
    app: WebhookApp
    client: Client
    sendgrid: FakeSendGrid
    twilio: FakeTwilio
    inbound_key: object
    touch_id: int


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A migrated store, shared by every example of the module (events accumulate, which
    also fuzzes duplicates)."""
    folder = tmp_path_factory.mktemp("serve-fuzz")
    with throwaway_database(folder) as url:
        engine = make_engine(url)
        upgrade(engine)
        config = load_cadence_file(default_config_dir() / "cadences.yaml")
        walkthrough_store(engine, config, folder, NOW - timedelta(days=1))
        ann = person_of(engine, "c1")
        touch_id = sent_touch(
            engine,
            ann,
            point(engine, "phone", "+12125550101").id,
            "fuzz:sms",
            at=NOW,
            channel="sms",
            provider_message_id=SMS_SID,
        )
        ben = person_of(engine, "c2")
        email_touch = sent_touch(
            engine, ben, point(engine, "email", "ben@example.com").id, "fuzz:email", at=NOW
        )
        with engine.begin() as conn:  # so that replies match by token and by In-Reply-To
            conn.execute(
                update(Touch)
                .where(Touch.id == email_touch)
                .values(
                    reply_token=REPLY_TOKEN,
                    message_id="<touch-1.abc@hire.example.com>",
                    rating_token=RATING_TOKEN,
                )
            )
        sendgrid, twilio, inbound_key = FakeSendGrid(), FakeTwilio(), new_signing_key()
        env = Settings(
            _env_file=None,
            OUTREACH_PUBLIC_URL=PUBLIC,
            SENDGRID_WEBHOOK_PUBLIC_KEY=sendgrid.webhook_public_key,
            SENDGRID_INBOUND_TOKEN=TOKEN,
            SENDGRID_INBOUND_PUBLIC_KEY=public_key_text(inbound_key),
            TWILIO_ACCOUNT_SID=twilio.account_sid,
            TWILIO_AUTH_TOKEN=twilio.auth_token,
            # The CRM webhooks (signed fuzzing: tests/crm_webhooks/test_crm_hooks_fuzz.py).
            GREENHOUSE_WEBHOOK_SECRET="fuzz-greenhouse",
            LEVER_WEBHOOK_TOKEN="fuzz-lever",
            LEVER_API_KEY="fuzz-lever-key",
            LEVER_BASE_URL="http://127.0.0.1:9/v1",
            HUBSPOT_CLIENT_SECRET="fuzz-hubspot",
        )
        app = make_app(engine, env, config, FixedClock(NOW))
        assert app.problems == []
        yield World(engine, app, Client(app), sendgrid, twilio, inbound_key, touch_id)
        engine.dispose()


def stored(engine: Engine) -> tuple[int, int]:
    """How many events and inbound messages the store holds."""
    with engine.connect() as conn:
        return (
            conn.execute(select(func.count()).select_from(Event)).scalar_one(),
            conn.execute(select(func.count()).select_from(InboundMessage)).scalar_one(),
        )


# -- strategies ---------------------------------------------------------------------------

ADDRESSES = ["ben@example.com", "Hal@Example.com", "ann@example.com", "nobody@example.org"]
NASTY_TEXT = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ud800",
    "\udfff x",
    "é☃\u2028",
    "9" * 30,
    "-1",
    "1e400",
    "NaN",
    "x" * 3000,
    "<script>",
    "Robert'); DROP TABLE events;--",
    "ann@example.com\r\nBcc: x@y",
]
texts = st.one_of(st.text(max_size=40), st.sampled_from(NASTY_TEXT))
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e30, -1e30, 1e308, -1.0, 0, 2**63, 2**64, 253402300800, -62135596801]),
)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
SENDGRID_EVENTS = [
    "bounce",
    "dropped",
    "spamreport",
    "unsubscribe",
    "group_unsubscribe",
    "processed",
    "deferred",
    "delivered",
    "open",
    "click",
    "blocked",
]


def field(*good: object) -> st.SearchStrategy:
    """Usually a plausible value, else any JSON value."""
    return st.one_of(st.sampled_from(good), json_values)


sendgrid_items = st.fixed_dictionaries(
    {},
    optional={
        "event": field(*SENDGRID_EVENTS),
        "email": field(*ADDRESSES),
        "timestamp": st.one_of(
            st.just(STAMP - 60), numbers, st.integers().map(str), texts, json_values
        ),
        "sg_event_id": st.one_of(st.uuids().map(str), texts, json_values),
        "sg_message_id": texts,
        "touch_id": st.one_of(st.integers().map(str), st.integers(), texts, json_values),
        "type": field("bounce", "blocked"),
        "reason": field("Bounced Address", "Unsubscribed Address", "Spam Reporting Address"),
        "status": field("5.1.1", "4.0.0"),
        "category": json_values,
    },
)
sendgrid_batches = st.lists(st.one_of(sendgrid_items, json_values), max_size=8)


@st.composite
def sendgrid_bodies(draw: st.DrawFn) -> bytes:
    """A batch as SendGrid would post it, or a mangled one: deep nesting, surrogates,
    NaN, invalid UTF-8, not a list, not JSON."""
    shape = draw(
        st.sampled_from(["batch", "deep-item", "surrogate", "raw-json", "bytes", "not-a-list"])
    )
    items = draw(sendgrid_batches)
    if shape == "batch":
        return json.dumps(items, allow_nan=True).encode()
    if shape == "deep-item":
        depth = draw(st.integers(min_value=500, max_value=100_000))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        deep = opener * depth + "1" + closer * depth if opener != "[" else "[" * depth + "]" * depth
        parts = [json.dumps(item, allow_nan=True) for item in items]
        parts.insert(draw(st.integers(0, len(parts))), deep)
        return ("[" + ",".join(parts) + "]").encode()
    if shape == "surrogate":
        value = draw(st.sampled_from(['"\\ud800"', '"\\udfff@x"', '"a\\u0000b"']))
        key = draw(st.sampled_from(["email", "sg_event_id", "status", "reason", "event"]))
        item = {**draw(sendgrid_items), "event": "bounce", key: "@@"}
        return json.dumps([*items, item]).replace('"@@"', value).encode()
    if shape == "raw-json":
        return draw(
            st.sampled_from(["[NaN]", "[Infinity]", "[-Infinity]", "[1e999]", "[]"])
        ).encode()
    if shape == "bytes":
        return draw(st.binary(max_size=200))
    return json.dumps(draw(json_values), allow_nan=True).encode()


# -- SendGrid Event Webhook ---------------------------------------------------------------


def post_raw(world: World, path: str, body: bytes, headers: dict[str, str], query=None):
    """POST exactly ``body`` (the test client would build a form for an empty body with a
    multipart Content-Type, which no longer matches its signature)."""
    return world.client.open(
        path,
        method="POST",
        input_stream=io.BytesIO(body),
        content_length=len(body),
        headers=headers,
        query_string=query,
    )


def post_sendgrid(world: World, body: bytes, headers: dict[str, str] | None = None):
    """POST ``body`` signed by the world's SendGrid key (or with ``headers``)."""
    signed = world.sendgrid.sign_events(body, STAMP) if headers is None else headers
    return post_raw(world, SENDGRID, body, {**signed, "Content-Type": "application/json"})


@FUZZ
@given(body=sendgrid_bodies())
@example(body=b'[{"event":"bounce","email":"ben@example.com","timestamp":1e30}]')
@example(body=b'[{"event":"bounce","email":"ben@example.com","timestamp":NaN}]')
@example(body=b'[{"event":"bounce","email":"ben@example.com","timestamp":-5}]')
@example(body=b'[{"event":"bounce","email":"ben@example.com","timestamp":"99999999999999"}]')
@example(body=b"[" * 100_000 + b"]" * 100_000)
@example(body=b'[{"event":"bounce","email":"ben@example.com","touch_id":"' + b"9" * 30 + b'"}]')
@example(body=b'[{"event":"bounce","email":"ben@example.com","sg_event_id":"a\\u0000b"}]')
@example(body=b'[{"event":"bounce","email":"ben@example.com","touch_id":"570759517749"}]')
@example(body=b'[{"event":"bounce","email":"ben@example.com","sg_event_id":"\\ud800"}]')
def test_signed_sendgrid_batches_never_500(world: World, body: bytes) -> None:
    """Any signed body is stored item by item (200) or refused as a whole (400)."""
    response = post_sendgrid(world, body)
    assert response.status_code in SIGNED_OK, (response.status_code, response.text)
    if response.status_code == 200:
        assert set(response.json) >= {"recorded", "duplicates", "unmatched", "bad"}


@FUZZ
@given(
    body=sendgrid_bodies(),
    signature=st.one_of(st.none(), st.text(max_size=120), st.binary(max_size=80).map(bytes.hex)),
    stamp=st.one_of(st.none(), st.text(max_size=20), st.integers().map(str)),
    wrong_key=st.booleans(),
)
def test_unsigned_or_forged_sendgrid_batches_are_refused(
    world: World, body: bytes, signature, stamp, wrong_key: bool
) -> None:
    """A missing, garbage or foreign signature is 403 and stores nothing."""
    if wrong_key:
        headers = FakeSendGrid().sign_events(body, STAMP)
    else:
        headers = {}
        if signature is not None:
            headers["X-Twilio-Email-Event-Webhook-Signature"] = _header_safe(signature)
        if stamp is not None:
            headers["X-Twilio-Email-Event-Webhook-Timestamp"] = _header_safe(stamp)
    before = stored(world.engine)
    response = post_sendgrid(world, body, headers)
    assert response.status_code == 403, (response.status_code, response.text)
    assert stored(world.engine) == before


def _header_safe(value: str) -> str:
    # A header value cannot carry line breaks or non-Latin-1 characters on the wire.
    return "".join(c for c in value if c not in "\r\n" and ord(c) < 256)


# -- Twilio -------------------------------------------------------------------------------

PHONES = ["+12125550101", "(212) 555-0101", "+14155550104", "+15005550006", "12", "+999999"]
KEYWORDS = ["STOP", "stop!", "START", "HELP", "unsubscribe.", "yes", "Thanks, Thursday works"]
form_text = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=40),
    st.sampled_from([t for t in NASTY_TEXT if "\ud800" not in t and "\udfff" not in t]),
)


def twilio_form(**plausible: st.SearchStrategy) -> st.SearchStrategy[dict[str, str]]:
    """A Twilio webhook form: the named fields (plausible or random text), plus extras."""
    return st.builds(
        lambda known, extra: {**extra, **known},
        st.fixed_dictionaries({}, optional=plausible),
        st.dictionaries(form_text.filter(bool), form_text, max_size=3),
    )


def either(*good: str) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(good), form_text)


def post_twilio(world: World, path: str, form: dict[str, str], query: dict[str, str]):
    """POST ``form`` to ``path`` signed with the test auth token over the public URL."""
    qs = urlencode(query)
    url = PUBLIC + path + (f"?{qs}" if qs else "")
    signature = world.twilio.webhook_signature(url, form)
    return world.client.post(
        path, data=form, query_string=qs, headers={"X-Twilio-Signature": signature}
    )


queries = st.dictionaries(st.text(max_size=8).filter(bool), st.text(max_size=8), max_size=2)


@FUZZ
@given(
    form=twilio_form(
        From=either(*PHONES),
        Body=either(*KEYWORDS),
        MessageSid=either(SMS_SID, "SMfuzz"),
        OptOutType=either("STOP", "START", "HELP"),
        To=either(*PHONES),
    ),
    query=queries,
)
@example(form={"From": "+12125550101", "Body": "hi", "MessageSid": "a\x00b"}, query={})
@example(form={"From": "a\x00b", "Body": "STOP"}, query={})
@example(form={"From": "+12125550101", "Body": "hi", "MessageSid": "x" * 3000}, query={})
def test_signed_twilio_inbound_never_500(world: World, form: dict, query: dict) -> None:
    """Any signed incoming-SMS form is TwiML (200) or refused as unreadable (400)."""
    response = post_twilio(world, TWILIO_INBOUND, form, query)
    assert response.status_code in SIGNED_OK, (response.status_code, response.text)


@FUZZ
@given(
    form=twilio_form(
        MessageStatus=either("undelivered", "failed", "delivered", "sent", "canceled"),
        SmsStatus=either("undelivered", "failed"),
        ErrorCode=either("30003", "30005", "30006", "21610", ""),
        MessageSid=either(SMS_SID, "SMunknown"),
        To=either(*PHONES),
    ),
    query=queries,
)
@example(form={"MessageStatus": "failed", "ErrorCode": "30003", "MessageSid": "a\x00b"}, query={})
@example(
    form={"MessageStatus": "failed", "ErrorCode": "30003", "To": "\x00", "MessageSid": ""},
    query={},
)
def test_signed_twilio_status_never_500(world: World, form: dict, query: dict) -> None:
    """Any signed status callback is TwiML (200) or refused as unreadable (400)."""
    response = post_twilio(world, TWILIO_STATUS, form, query)
    assert response.status_code in SIGNED_OK, (response.status_code, response.text)


@FUZZ
@given(
    path=st.sampled_from([TWILIO_INBOUND, TWILIO_STATUS]),
    form=twilio_form(From=either(*PHONES), Body=either(*KEYWORDS), MessageStatus=either("failed")),
    signature=st.one_of(st.none(), st.text(max_size=60)),
    wrong_url=st.booleans(),
)
def test_unsigned_or_forged_twilio_posts_are_refused(
    world: World, path: str, form: dict, signature, wrong_url: bool
) -> None:
    """A missing or garbage signature, or one over another URL, is 403 and stores nothing."""
    if wrong_url:
        signature = world.twilio.webhook_signature("https://elsewhere.example" + path, form)
    headers = {} if signature is None else {"X-Twilio-Signature": _header_safe(signature)}
    before = stored(world.engine)
    response = world.client.post(path, data=form, headers=headers)
    assert response.status_code == 403, (response.status_code, response.text)
    assert stored(world.engine) == before


# -- SendGrid Inbound Parse ---------------------------------------------------------------

MAIL = (
    b"From: Ben Ortiz <ben@example.com>\r\nTo: replies+0123456789abcdef@hire.example.com\r\n"
    b"Subject: Re: Interview\r\nMessage-ID: <fuzz@mail.example.net>\r\n"
    b"Date: Wed, 25 Nov 2026 14:55:00 +0000\r\n\r\nThursday works.\r\n"
)
HEADER_VALUES = {
    "From": ["Ben Ortiz <ben@example.com>", "MAILER-DAEMON@mx.example.net", "=?utf-8?b?QsOpbg==?= <b@x>",
             "=?x-unknown?q?=FF?= <a@b>", "<>", "no address", "a@b, c@d, ,,", "\"\\\" <@>"],
    "To": ["replies+0123456789abcdef@hire.example.com", "replies+@hire.example.com",
           "replies+zz@hire.example.com", "undisclosed-recipients:;", "=?utf-8?q?=E9?="],
    "Subject": ["Re: Interview", "Automatic reply: Interview", "Out of Office", "Abwesenheitsnotiz",
                "Undelivered Mail Returned to Sender", "unsubscribe", "=?utf-8?b?!!!?=", "=?"],
    "Message-ID": ["<fuzz@mail.example.net>", "<>", "no-brackets", "<" + "a" * 2000 + ">"],
    "In-Reply-To": ["<touch-1.abc@hire.example.com>", "<", "<a> <b> <c>"],
    "References": ["<touch-1.abc@hire.example.com> <x@y>", "<" * 500],
    "Date": ["Wed, 25 Nov 2026 14:55:00 +0000", "Mon, 32 Foo 99999 99:99:99 +9999", "yesterday",
             "Thu, 01 Jan 0001 00:00:00 -2359", "Fri, 31 Dec 9999 23:59:59 +2359", ""],
    "Auto-Submitted": ["auto-replied", "auto-generated", "no", "=?x?"],
    "Precedence": ["bulk", "auto_reply", "junk", "list"],
    "X-Autoreply": ["yes"],
    "Content-Type": ["text/plain; charset=utf-8", "text/plain; charset=x-unknown",
                     "text/plain; charset=\"\"", "multipart/mixed", "multipart/alternative; boundary=b",
                     "multipart/report; report-type=delivery-status; boundary=b",
                     "message/delivery-status", "text/html; charset=utf-7", "image/png", "/"],
    "Content-Transfer-Encoding": ["base64", "quoted-printable", "x-uuencode", "8bit", "bogus"],
    "Return-Path": ["<>", "<bounce@x>"],
}  # fmt: skip
BODIES = [
    "Thursday works.\r\n\r\nOn Tue, Ann wrote:\r\n> hello\r\n",
    "I am out of the office until 7 December.", "Ich bin zurück am 31.02.2026.",
    "de retour le 99 décembre", "back on 12/45/2026", "unsubscribe", "STOP",
    "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
    "Final-Recipient: rfc822; ben@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n--b--",
    "--b\r\nContent-Type: message/delivery-status\r\n\r\nStatus: 9.99.999\r\n"
    "Final-Recipient: ;;;\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nMessage-ID: <\r\n--b--",
    "--b\r\n--b\r\n--b--\r\n--b--", "=?utf-8?b?=\r\n=ZZ=\r\n", "<html><body>" * 50, "",
    "This message was created automatically by mail delivery software.\r\n\r\n"
    "A message that you sent could not be delivered.\r\n  ben@example.com\r\n    "
    "SMTP error from remote mail server after RCPT TO:<ben@example.com>:\r\n    550 5.1.1 unknown",
    "Hi. This is the qmail-send program at mx.example.net.\r\n<ben@example.com>:\r\n"
    "Sorry, no mailbox here by that name. (#5.1.1)\r\n",
]  # fmt: skip


@st.composite
def mails(draw: st.DrawFn) -> bytes:
    """A message as a candidate's mail client, an auto-responder or an MTA might write it,
    with any header or body part plausible, mangled or random."""
    lines = []
    for name, values in HEADER_VALUES.items():
        if draw(st.booleans()):
            value = draw(st.one_of(st.sampled_from(values), st.text(max_size=40)))
            lines.append(f"{name}: {value}")
    if draw(st.booleans()):
        lines.append(draw(st.text(max_size=40)))  # a line that is not a header field
    body = draw(st.one_of(st.sampled_from(BODIES), st.text(max_size=200)))
    text = "\r\n".join(lines) + "\r\n\r\n" + body
    return text.encode(draw(st.sampled_from(["utf-8", "latin-1"])), "replace")


JSON_FIELDS = ["charsets", "envelope", "attachment-info", "content-ids"]
CHARSETS = ["utf-8", "iso-8859-1", "UTF-7", "rot13", "zlib", "idna", "punycode", "nope", "", "\x00"]


@st.composite
def json_field(draw: st.DrawFn, name: str) -> bytes:
    """A JSON field as SendGrid sends it, or mangled (deep, surrogates, not an object)."""
    shape = draw(st.sampled_from(["plausible", "any", "deep", "surrogate", "bytes"]))
    if shape == "plausible":
        if name == "charsets":
            keys = st.sampled_from(["to", "from", "subject", "text", "html", "cc"])
            value: object = draw(st.dictionaries(keys, field(*CHARSETS), max_size=6))
        elif name == "envelope":
            value = {
                "to": draw(field(["replies+0123456789abcdef@hire.example.com"], "x@y")),
                "from": draw(field("ben@example.com")),
            }
        elif name == "attachment-info":
            value = {
                draw(st.one_of(st.sampled_from(["attachment1", "attachment2"]), texts)): {
                    "filename": draw(field("a.pdf", "é.txt")),
                    "type": draw(field("application/pdf", "text/plain")),
                    "content-id": draw(field("cid1@x")),
                }
            }
        else:
            value = {draw(st.one_of(st.just("<cid1@x>"), texts)): draw(field("attachment1"))}
        return json.dumps(value).encode()
    if shape == "any":
        return json.dumps(draw(json_values), allow_nan=True).encode()
    if shape == "deep":
        depth = draw(st.integers(min_value=500, max_value=50_000))
        return b'{"to":' + b"[" * depth + b"]" * depth + b"}"
    if shape == "surrogate":
        where = {
            "charsets": '{"text": "\\ud800", "subject": "\\udfff"}',
            "envelope": '{"to": ["\\ud800@x"], "from": "a"}',
            "attachment-info": '{"attachment1": {"filename": "\\ud800.pdf"}}',
            "content-ids": '{"\\ud800": "attachment1"}',
        }
        return where[name].encode()
    return draw(st.binary(max_size=60))


@st.composite
def inbound_posts(draw: st.DrawFn) -> tuple[bytes, str]:
    """An Inbound Parse post (multipart body and Content-Type), raw or parsed mode, with
    any of its fields mangled."""
    fields: list[tuple[str, bytes]] = []
    files: list[tuple[str, str, str, bytes]] = []
    mode = draw(st.sampled_from(["raw", "parsed", "neither"]))
    mail = draw(
        st.one_of(
            st.just(MAIL),
            mails(),
            mails(),
            st.binary(max_size=400),
            st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
        )
    )
    if mode == "raw":
        fields.append(("email", mail))
    elif mode == "parsed":
        head, _, body = mail.partition(b"\r\n\r\n")
        fields.append(("headers", head + b"\r\n"))
        for name in ("text", "html"):
            if draw(st.booleans()):
                fields.append((name, draw(st.one_of(st.just(body), st.binary(max_size=100)))))
        for _ in range(draw(st.integers(0, 3))):
            number = draw(st.integers(0, 10**7))
            files.append(
                (
                    draw(st.one_of(st.just(f"attachment{number}"), st.text(max_size=12))),
                    draw(st.text(max_size=20)),
                    draw(st.sampled_from(["application/pdf", "text/plain", "x", ""])),
                    draw(st.binary(max_size=300)),
                )
            )
        if draw(st.booleans()):
            fields.append(("attachments", draw(st.sampled_from([b"1", b"99", b"x", b"-1"]))))
    for name in JSON_FIELDS:
        if draw(st.booleans()):
            fields.append((name, draw(json_field(name))))
    for name in ("to", "from", "subject", "cc"):
        if draw(st.booleans()):
            fields.append((name, draw(st.binary(max_size=60))))
    boundary = "xYzZY" + secrets.token_hex(8)
    return _multipart(fields, files, boundary), f"multipart/form-data; boundary={boundary}"


def _multipart(
    fields: list[tuple[str, bytes]], files: list[tuple[str, str, str, bytes]], boundary: str
) -> bytes:
    mark = b"--" + boundary.encode()
    out: list[bytes] = []
    for name, value in fields:
        out += [mark, f'\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()]
        out += [value, b"\r\n"]
    for name, filename, content_type, data in files:
        quoted = "".join(c for c in filename if c not in '"\\\r\n')
        safe_name = "".join(c for c in name if c not in '"\\\r\n')
        disposition = f'form-data; name="{safe_name}"; filename="{quoted}"'
        out += [mark, f"\r\nContent-Disposition: {disposition}\r\n".encode("utf-8", "replace")]
        out += [f"Content-Type: {content_type}\r\n\r\n".encode(), data, b"\r\n"]
    out += [mark, b"--\r\n"]
    return b"".join(out)


def post_inbound(world: World, body: bytes, content_type: str, *, sign: bool = True):
    """POST ``body`` to Inbound Parse with the token, signed with the test key."""
    headers = sign_body(world.inbound_key, body, STAMP) if sign else {}  # type: ignore[arg-type]
    headers["Content-Type"] = content_type
    return post_raw(world, INBOUND, body, headers, {"token": TOKEN})


@FUZZ
@given(post=inbound_posts())
@example(
    post=(
        _multipart([("email", MAIL), ("envelope", b'{"to": ["\\ud800@x"]}')], [], "b1"),
        "multipart/form-data; boundary=b1",
    )
)
@example(
    post=(
        _multipart(
            [("email", MAIL), ("charsets", b'{"to":' + b"[" * 5000 + b"]" * 5000 + b"}")], [], "b2"
        ),
        "multipart/form-data; boundary=b2",
    )
)
@example(
    post=(
        _multipart(
            [
                ("headers", MAIL.split(b"\r\n\r\n")[0]),
                ("attachment-info", b'{"attachment1": {"filename": "\\ud800.pdf"}}'),
            ],
            [("attachment1", "a.pdf", "application/pdf", b"%PDF")],
            "b3",
        ),
        "multipart/form-data; boundary=b3",
    )
)
@example(
    post=(
        _multipart([("email", MAIL), ("charsets", b'{"text": "\\ud800"}')], [], "b4"),
        "multipart/form-data; boundary=b4",
    )
)
@example(
    post=(_multipart([("email", b"From:\n\x00")], [], "b5"), "multipart/form-data; boundary=b5")
)
def test_signed_inbound_parse_posts_never_500(world: World, post: tuple[bytes, str]) -> None:
    """Any signed Inbound Parse post is stored (200) or refused as unreadable (400)."""
    body, content_type = post
    response = post_inbound(world, body, content_type)
    assert response.status_code in SIGNED_OK, (response.status_code, response.text)


@FUZZ
@given(
    body=st.binary(max_size=500),
    content_type=st.one_of(
        st.sampled_from(["multipart/form-data", "multipart/form-data; boundary=", "text/plain"]),
        st.text(st.characters(max_codepoint=255, exclude_characters="\r\n"), max_size=80),
    ),
)
def test_signed_inbound_parse_garbage_never_500(world: World, body: bytes, content_type: str):
    """Any signed body with any Content-Type is 200, 400 or 413."""
    response = post_inbound(world, body, content_type)
    assert response.status_code in SIGNED_OK, (response.status_code, response.text)


@FUZZ
@given(
    post=inbound_posts(),
    token=st.one_of(st.none(), st.text(max_size=30).filter(lambda t: t != TOKEN)),
    signed=st.booleans(),
)
def test_inbound_parse_without_token_or_signature_is_refused(
    world: World, post: tuple[bytes, str], token, signed: bool
) -> None:
    """A wrong or missing token is 403 (signed or not); the right token without a
    signature is 401. Nothing is stored either way."""
    body, content_type = post
    before = stored(world.engine)
    if signed:
        headers = sign_body(world.inbound_key, body, STAMP)  # type: ignore[arg-type]
        query = {} if token is None else {"token": token}
        expected = 403
    else:
        headers, query, expected = {}, {"token": TOKEN}, 401
    headers["Content-Type"] = content_type
    response = post_raw(world, INBOUND, body, headers, query)
    assert response.status_code == expected, (response.status_code, response.text)
    assert stored(world.engine) == before


# -- every route --------------------------------------------------------------------------

METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]


@st.composite
def any_request(draw: st.DrawFn, rules: list[str]) -> tuple[str, str, dict, bytes, str]:
    """Any method on any routed path (or beside it), with any headers and body."""
    base = draw(st.sampled_from(rules))
    path = draw(st.sampled_from([base, base + "/", base + "/x", base.upper(), base + "%00"]))
    headers = draw(
        st.dictionaries(
            st.sampled_from(
                [
                    "Content-Type",
                    "X-Twilio-Signature",
                    "Content-Encoding",
                    "X-Twilio-Email-Event-Webhook-Signature",
                    "Transfer-Encoding",
                    "X-Twilio-Email-Event-Webhook-Timestamp",
                    "Host",
                    "Accept",
                ]
            ),
            st.text(st.characters(max_codepoint=255, exclude_characters="\r\n"), max_size=40),
            max_size=4,
        )
    )
    query = draw(st.text(max_size=30))
    return draw(st.sampled_from(METHODS)), path, headers, draw(st.binary(max_size=300)), query


def _rules() -> list[str]:
    # The routes of the app itself, so a route added later is fuzzed without a new test.
    env = Settings(_env_file=None)
    app = make_app(make_engine("sqlite://"), env, None, FixedClock(NOW))
    return sorted({rule.rule for rule in app._map.iter_rules()})


@FUZZ
@given(request=any_request(_rules()))
@example(request=("GET", "/healthz", {"Host": "."}, b"", ""))  # BadHost escaped the app
@example(request=("POST", SENDGRID, {"Host": "a..b"}, b"[]", ""))
def test_any_request_to_any_route_never_500(world: World, request) -> None:
    """Arbitrary unsigned requests to every route (and beside them) never get a 500,
    never make the app raise and never store anything."""
    method, path, headers, body, query = request
    before = stored(world.engine)
    response = world.client.open(
        path, method=method, headers=headers, data=body, query_string=query
    )
    assert response.status_code != 500 and response.status_code < 600, response.status_code
    assert stored(world.engine) == before


@FUZZ
@given(
    query=st.text(max_size=40),
    headers=st.dictionaries(
        st.sampled_from(["Accept", "User-Agent", "X-Forwarded-For"]),
        st.text(st.characters(max_codepoint=255, exclude_characters="\r\n"), max_size=40),
        max_size=3,
    ),
)
def test_healthz_always_answers_ok(world: World, query: str, headers: dict) -> None:
    """``GET /healthz`` is 200 ``ok`` whatever the query and headers."""
    response = world.client.get("/healthz", query_string=query, headers=headers)
    assert response.status_code == 200 and response.text == "ok\n"


# -- one-click ratings --------------------------------------------------------------------

path_texts = st.one_of(
    st.text(max_size=60),
    st.sampled_from([*NASTY_TEXT, RATING_TOKEN, RATING_TOKEN[:-1], RATING_TOKEN.upper()]),
)


def ratings_stored(engine: Engine) -> list[tuple[int | None, object]]:
    with engine.connect() as conn:
        return [
            (row.touch_id, row.payload)
            for row in conn.execute(select(Event).where(Event.type == "rating"))
        ]


@FUZZ
@given(
    method=st.sampled_from(["GET", "HEAD"]),
    token=path_texts,
    score=st.one_of(path_texts, st.sampled_from(["1", "3", "5", "0", "6", "05", "\u0663"])),
    query=st.text(max_size=30),
)
@example(method="GET", token=RATING_TOKEN, score="5", query="")
@example(method="GET", token="%2e%2e", score="%00", query="")
@example(method="GET", token="0/", score="0", query="")  # once a 308 (merged slashes)
def test_rating_links_never_500(
    world: World, method: str, token: str, score: str, query: str
) -> None:
    """Any token and score: 200, 400 or 404, never a 500; only the real token with a
    score 1..5 by GET records anything, and then one rating for its touch."""
    path = f"/r/{quote(token, safe='', errors='surrogatepass')}/{quote(score, safe='', errors='surrogatepass')}"
    response = world.client.open(path, method=method, query_string=query)
    assert response.status_code in {200, 400, 404}, (response.status_code, path)
    stored_ratings = ratings_stored(world.engine)
    assert len(stored_ratings) <= 1
    for touch_id, payload in stored_ratings:
        assert touch_id != world.touch_id and payload in ({"score": n} for n in range(1, 6))
    if response.status_code == 200:
        assert token == RATING_TOKEN and score in {"1", "2", "3", "4", "5"}
    if method == "GET" and response.status_code == 200:
        assert ({"score": int(score)}) in [p for _, p in stored_ratings]
