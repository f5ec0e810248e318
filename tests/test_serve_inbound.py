"""``POST /webhooks/sendgrid/inbound``: Inbound Parse posts become one raw message for intake."""

from __future__ import annotations

import email
import email.policy
import hashlib
import io
import json
import logging
import os
import tracemalloc
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest
from sqlalchemy.exc import OperationalError
from werkzeug.test import Client, EnvironBuilder, run_wsgi_app

import outreach.serve as serve_module
from outreach.clock import FixedClock
from outreach.errors import StoreError
from outreach.inbound.parse_webhook import (
    NOTE_HEADER,
    ParseFormError,
    raw_message_from_form,
    rebuild_message,
)
from outreach.sandbox.base import SandboxServer
from outreach.sandbox.inbound_parse import (
    build_form,
    new_signing_key,
    post_inbound,
    public_key_text,
    sign_body,
)
from outreach.serve import INBOUND_MAX_BODY_BYTES, INBOUND_MESSAGE_LIMIT, make_app
from outreach.settings import Settings

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
STAMP = int(NOW.timestamp())
PATH = "/webhooks/sendgrid/inbound"
TOKEN = "parse-token-7f3a"
REPLY_TO = "replies+0123456789abcdef@hire.example.com"
MESSAGE_ID = "<CAN_reply-1@mail.example.net>"
IN_REPLY_TO = "<touch-42.9f1c@hire.example.com>"
TEXT = "Hi Ann,\n\nThursday at 10 works for me. Merci — à jeudi !\n\nBen\n"
HTML = "<p>Hi Ann,</p><p>Thursday at 10 works for me. Merci — à jeudi !</p>"
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40
PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(3000)

_VARS = ("SENDGRID_INBOUND_TOKEN", "SENDGRID_INBOUND_PUBLIC_KEY", "SENDGRID_WEBHOOK_PUBLIC_KEY")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _VARS:
        monkeypatch.delenv(name, raising=False)


@dataclass
class Report:
    """The part of intake's report the route reads."""

    stored: int = 1
    duplicates: int = 0
    errors: list[str] = field(default_factory=list)
    person_ids: set[int] = field(default_factory=lambda: {7})


class Intake:
    """Stands in for ``outreach.inbound.intake.ingest_messages``."""

    def __init__(self) -> None:
        self.calls: list[tuple[list, dict]] = []
        self.report = Report()
        self.error: Exception | None = None

    def __call__(self, engine, messages, **options):
        self.calls.append((list(messages), options))
        if self.error is not None:
            raise self.error
        return self.report

    @property
    def raw(self) -> bytes:
        (message,), _ = self.calls[-1]
        return message.raw


@pytest.fixture
def intake(monkeypatch: pytest.MonkeyPatch) -> Intake:
    fake = Intake()
    monkeypatch.setattr(serve_module, "ingest_messages", fake)
    return fake


def settings(**env: str) -> Settings:
    return Settings(_env_file=None, **env)


@pytest.fixture
def app(engine):
    return make_app(engine, settings(SENDGRID_INBOUND_TOKEN=TOKEN), None, FixedClock(NOW))


@pytest.fixture
def client(app) -> Client:
    return Client(app)


def reply(*, charset: str = "utf-8", attachments: bool = True) -> bytes:
    """A candidate's reply as their mail client sends it (CRLF, encoded words, parts)."""
    message = EmailMessage()
    message["From"] = "Ben Ortiz <ben@example.net>"
    message["To"] = "Ann Recruiter <ann@hire.example.com>"
    message["Subject"] = "Re: Entretien — jeudi ?"
    message["Date"] = "Wed, 25 Nov 2026 14:55:00 +0000"
    message["Message-ID"] = MESSAGE_ID
    message["In-Reply-To"] = IN_REPLY_TO
    message["References"] = f"<thread-1@hire.example.com> {IN_REPLY_TO}"
    message["Auto-Submitted"] = "no"
    message.set_content(TEXT, charset=charset, cte="quoted-printable")
    message.add_alternative(HTML, subtype="html", charset=charset)
    if attachments:
        message.add_attachment(PDF, maintype="application", subtype="pdf", filename="cv été.pdf")
        message.add_attachment(
            PNG, maintype="image", subtype="png", filename="logo.png", cid="<logo@ben>"
        )
    return message.as_bytes(policy=email.policy.SMTP)


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def body_of(message: EmailMessage, kind: str) -> str:
    """A body's text; Python's parser keeps a CRLF message's line breaks, so normalise them."""
    part = message.get_body((kind,))
    assert part is not None, kind
    return part.get_content().replace("\r\n", "\n")


def attachments_of(message: EmailMessage) -> list[tuple[str, str, bytes]]:
    return [
        (part.get_filename(), part.get_content_type(), part.get_content())
        for part in message.iter_attachments()
    ]


def post(client: Client, body: bytes, content_type: str, token: str | None = TOKEN, headers=None):
    query = f"?token={token}" if token is not None else ""
    return client.post(PATH + query, data=body, content_type=content_type, headers=headers or {})


def multipart(
    fields: list[tuple[str, bytes]], files=(), boundary: str = "xYzZY"
) -> tuple[bytes, str]:
    """A form body written by hand, independent of the sandbox poster."""
    out = []
    for name, value in fields:
        out.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        )
        out.append(value + b"\r\n")
    for name, filename, content_type, data in files:
        out.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: {content_type}\r\n\r\n'.encode()
        )
        out.append(data + b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={boundary}"


# -- round trips -------------------------------------------------------------------------


def test_a_parsed_post_is_rebuilt_into_the_reply(client, intake, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="outreach")
    original = reply()
    form = build_form(original, envelope_to=[REPLY_TO])
    response = post(client, form.body, form.content_type)
    assert response.status_code == 200, response.text
    assert response.json == {"stored": 1, "duplicates": 0}

    (message,), options = intake.calls[0]
    assert (message.where, message.source, message.received_at) == ("Inbound Parse", "parse", NOW)
    assert options == {"now": NOW, "config": None}
    rebuilt = parse(message.raw)
    assert rebuilt["Message-ID"] == MESSAGE_ID
    assert rebuilt["In-Reply-To"] == IN_REPLY_TO
    assert rebuilt["References"] == f"<thread-1@hire.example.com> {IN_REPLY_TO}"
    assert rebuilt["Auto-Submitted"] == "no"
    assert rebuilt["Subject"] == "Re: Entretien — jeudi ?"
    assert rebuilt["X-Envelope-To"] == REPLY_TO
    assert body_of(rebuilt, "plain") == TEXT
    assert body_of(rebuilt, "html").strip() == HTML
    assert attachments_of(rebuilt) == [
        ("cv été.pdf", "application/pdf", PDF),
        ("logo.png", "image/png", PNG),
    ]
    logo = list(rebuilt.iter_attachments())[1]
    assert logo["Content-ID"] == "<logo@ben>"
    # One top-level Content-Type: the original multipart header was replaced, not kept.
    assert len(rebuilt.get_all("Content-Type")) == 1
    assert not rebuilt.defects

    logged = caplog.text
    assert "@" not in logged and TOKEN not in logged and "jeudi" not in logged
    assert "parsed mode, 2 attachments" in logged


def test_a_raw_post_keeps_the_bytes_and_adds_the_envelope(client, intake) -> None:
    original = reply()
    form = build_form(original, mode="raw", envelope_to=[REPLY_TO])
    response = post(client, form.body, form.content_type)
    assert response.status_code == 200, response.text
    assert intake.raw == f"X-Envelope-To: {REPLY_TO}\r\n".encode() + original
    rebuilt = parse(intake.raw)
    assert (rebuilt["Message-ID"], rebuilt["In-Reply-To"]) == (MESSAGE_ID, IN_REPLY_TO)
    assert rebuilt["Subject"] == "Re: Entretien — jeudi ?"
    assert rebuilt["X-Envelope-To"] == REPLY_TO
    assert body_of(rebuilt, "plain") == TEXT
    assert body_of(rebuilt, "html").strip() == HTML
    assert [a[0] for a in attachments_of(rebuilt)] == ["cv été.pdf", "logo.png"]


def test_the_envelope_is_not_added_twice(client, intake) -> None:
    original = f"X-Envelope-To: {REPLY_TO}\r\n".encode() + reply(attachments=False)
    form = build_form(original, mode="raw", envelope_to=[REPLY_TO])
    assert post(client, form.body, form.content_type).status_code == 200
    assert intake.raw == original  # nothing to add: the bytes exactly as posted


def test_a_latin1_body_declared_in_charsets_is_decoded(client, intake) -> None:
    text = "Très bien, à jeudi.\r\nBen"
    body, content_type = multipart(
        [
            (
                "headers",
                b"From: ben@example.net\nTo: ann@hire.example.com\nSubject: Re: hi\n"
                b"Message-ID: <l1@example.net>\nContent-Type: text/plain; charset=iso-8859-1\n"
                b"Content-Transfer-Encoding: quoted-printable\n",
            ),
            ("text", text.encode("iso-8859-1")),
            ("html", "<p>Très bien</p>".encode("windows-1252")),
            ("envelope", json.dumps({"to": [REPLY_TO], "from": "ben@example.net"}).encode()),
            (
                "charsets",
                b'{"to":"UTF-8","subject":"UTF-8","from":"UTF-8","text":"iso-8859-1","html":"windows-1252"}',
            ),
            ("attachments", b"0"),
        ]
    )
    assert post(client, body, content_type).status_code == 200
    rebuilt = parse(intake.raw)
    assert body_of(rebuilt, "plain") == "Très bien, à jeudi.\nBen"
    assert body_of(rebuilt, "html").strip() == "<p>Très bien</p>"
    assert rebuilt.get_body(("plain",)).get_content_charset() == "utf-8"
    # The original transfer encoding is gone: SendGrid already decoded the body.
    assert rebuilt.get_all("Content-Transfer-Encoding") is None
    assert rebuilt["X-Envelope-To"] == REPLY_TO


def test_the_sendgrid_python_sample_payloads_are_accepted(client, intake) -> None:
    from importlib.resources import files

    samples = files("sendgrid.helpers.inbound") / "sample_data"
    for name, subject in [
        ("default_data.txt", "Inbound Parse Test Data"),
        ("raw_data.txt", "Inbound Parse Test Raw Data"),
        ("raw_data_with_attachments.txt", "Inbound Parse Test Raw Data with Attachment"),
    ]:
        body = samples.joinpath(name).read_bytes()
        response = post(client, body, "multipart/form-data; boundary=xYzZY")
        assert response.status_code == 200, (name, response.text)
        rebuilt = parse(intake.raw)
        assert rebuilt["Subject"] == subject
        assert rebuilt["X-Envelope-To"].startswith("inbound@inbound.")
        assert "Hello Twilio SendGrid!" in body_of(rebuilt, "plain")


# -- refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", "wrong-token", TOKEN + "x"])
def test_a_missing_or_wrong_token_is_403(client, intake, token) -> None:
    form = build_form(reply(attachments=False))
    response = post(client, form.body, form.content_type, token=token)
    assert response.status_code == 403
    assert "token" in response.text and TOKEN not in response.text
    assert intake.calls == []


def test_without_a_configured_token_every_post_is_403(engine, intake) -> None:
    app = make_app(engine, settings(), None, FixedClock(NOW))
    assert any("SENDGRID_INBOUND_TOKEN" in problem for problem in app.problems)
    form = build_form(reply(attachments=False))
    for token in (None, "", "anything"):
        response = post(Client(app), form.body, form.content_type, token=token)
        assert response.status_code == 403
        assert "SENDGRID_INBOUND_TOKEN is not set" in response.text
        assert "inject" in response.text
    assert intake.calls == []


@pytest.fixture
def signing_key():
    return new_signing_key()


@pytest.fixture
def signed_client(engine, signing_key) -> Client:
    env = settings(
        SENDGRID_INBOUND_TOKEN=TOKEN, SENDGRID_INBOUND_PUBLIC_KEY=public_key_text(signing_key)
    )
    return Client(make_app(engine, env, None, FixedClock(NOW)))


def test_a_signed_post_is_accepted(signed_client, signing_key, intake) -> None:
    form = build_form(reply())
    headers = sign_body(signing_key, form.body, STAMP - 60)
    response = post(signed_client, form.body, form.content_type, headers=headers)
    assert response.status_code == 200, response.text
    assert parse(intake.raw)["Message-ID"] == MESSAGE_ID


def test_unsigned_forged_tampered_and_stale_posts_are_401(
    signed_client, signing_key, intake
) -> None:
    form = build_form(reply(attachments=False))
    good = sign_body(signing_key, form.body, STAMP)
    cases = {
        "unsigned": (form.body, {}),
        "no timestamp": (form.body, {k: v for k, v in good.items() if "Signature" in k}),
        "other key": (form.body, sign_body(new_signing_key(), form.body, STAMP)),
        "tampered": (form.body.replace(b"Thursday", b"Saturday"), good),
        "stale": (form.body, sign_body(signing_key, form.body, STAMP - 11 * 60)),
        "future": (form.body, sign_body(signing_key, form.body, STAMP + 11 * 60)),
        "garbage signature": (form.body, {**good, "X-Twilio-Email-Event-Webhook-Signature": "!!"}),
    }
    for case, (body, headers) in cases.items():
        response = post(signed_client, body, form.content_type, headers=headers)
        assert response.status_code == 401, case
        assert response.text.startswith("unauthorized:"), case
    assert intake.calls == []
    # A wrong token is still a 403, even when signed.
    response = post(signed_client, form.body, form.content_type, token="nope", headers=good)
    assert response.status_code == 403


def test_a_public_key_that_is_not_a_key_refuses_with_503(engine, intake) -> None:
    env = settings(SENDGRID_INBOUND_TOKEN=TOKEN, SENDGRID_INBOUND_PUBLIC_KEY="not-a-key")
    app = make_app(engine, env, None, FixedClock(NOW))
    assert any("SENDGRID_INBOUND_PUBLIC_KEY" in problem for problem in app.problems)
    form = build_form(reply(attachments=False))
    response = post(Client(app), form.body, form.content_type)
    assert response.status_code == 503 and "SENDGRID_INBOUND_PUBLIC_KEY" in response.text
    assert intake.calls == []


def test_garbage_bodies_are_400_with_a_clear_message(client, intake) -> None:
    bad = [
        (b"this is not a form", "multipart/form-data; boundary=xYzZY", "not well-formed"),
        (
            b'--xYzZY\r\nContent-Disposition: form-data; name="headers"\r\n\r\nSubject: x',
            "multipart/form-data; boundary=xYzZY",
            "not well-formed",
        ),
        (
            b"--xYzZY\r\nX-Nothing: here\r\n\r\nvalue\r\n--xYzZY--\r\n",
            "multipart/form-data; boundary=xYzZY",
            "Content-Disposition",
        ),
        (b'{"email": "x"}', "application/json", "expected multipart/form-data"),
        (b"x", "multipart/form-data", "no usable boundary"),
    ]
    for body, content_type, expected in bad:
        response = post(client, body, content_type)
        assert response.status_code == 400, (body, response.text)
        assert expected in response.text, response.text
    empty, content_type = multipart([("to", b"ann@hire.example.com"), ("subject", b"hi")])
    response = post(client, empty, content_type)
    assert response.status_code == 400
    assert "'email'" in response.text and "'headers'" in response.text
    assert intake.calls == []


def test_a_message_intake_cannot_read_is_400(client, intake) -> None:
    intake.report = Report(
        stored=1, errors=["Inbound Parse: not an email message (no header fields)"]
    )
    form = build_form(reply(attachments=False))
    response = post(client, form.body, form.content_type)
    assert response.status_code == 400
    assert "not an email message" in response.text
    assert len(intake.calls) == 1  # it was handed over (and recorded by intake) all the same


@pytest.mark.parametrize(
    "error", [StoreError("schema outdated"), OperationalError("x", {}, Exception("down"))]
)
def test_a_store_failure_is_503_so_sendgrid_retries(client, intake, error) -> None:
    intake.error = error
    form = build_form(reply(attachments=False))
    response = post(client, form.body, form.content_type)
    assert response.status_code == 503
    assert "try again later" in response.text


def test_a_duplicate_is_200(client, intake) -> None:
    intake.report = Report(stored=0, duplicates=1)
    form = build_form(reply(attachments=False))
    response = post(client, form.body, form.content_type)
    assert response.status_code == 200 and response.json == {"stored": 0, "duplicates": 1}


# -- size --------------------------------------------------------------------------------


def test_a_30_mb_attachment_is_accepted_and_streamed(app, intake) -> None:
    payload = os.urandom(INBOUND_MESSAGE_LIMIT)
    body, content_type = multipart(
        [
            (
                "headers",
                b"From: ben@example.net\r\nTo: ann@hire.example.com\r\nSubject: portfolio\r\n"
                b"Message-ID: <big@example.net>\r\nContent-Type: multipart/mixed; boundary=zz\r\n",
            ),
            ("text", b"My portfolio is attached."),
            ("envelope", json.dumps({"to": [REPLY_TO], "from": "ben@example.net"}).encode()),
            ("attachments", b"1"),
            (
                "attachment-info",
                b'{"attachment1":{"filename":"portfolio.zip","name":"portfolio.zip","type":"application/zip"}}',
            ),
            ("charsets", b'{"to":"UTF-8","subject":"UTF-8","from":"UTF-8","text":"UTF-8"}'),
        ],
        [("attachment1", "portfolio.zip", "application/zip", payload)],
    )
    assert INBOUND_MESSAGE_LIMIT < len(body) <= INBOUND_MAX_BODY_BYTES
    environ = EnvironBuilder(
        path=f"{PATH}?token={TOKEN}",
        method="POST",
        input_stream=io.BytesIO(body),
        content_length=len(body),
        content_type=content_type,
    ).get_environ()

    tracemalloc.start()
    try:
        app_iter, status, _ = run_wsgi_app(app, environ, buffered=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status.startswith("200"), b"".join(app_iter)
    raw = intake.raw
    # The rebuilt message itself (the attachment in base64, 4/3 of its size) is the only
    # large allocation: the body and the attachment went through spooled files.
    assert len(raw) > len(payload) * 4 // 3
    assert peak < len(raw) + 4 * 1024 * 1024, (peak, len(raw))
    assert peak < 2 * len(body)

    rebuilt = parse(raw)
    assert rebuilt["X-Envelope-To"] == REPLY_TO
    ((filename, content_type, data),) = attachments_of(rebuilt)
    assert (filename, content_type) == ("portfolio.zip", "application/zip")
    assert hashlib.sha256(data).digest() == hashlib.sha256(payload).digest()


def test_a_body_over_the_limit_is_413_and_nothing_is_stored(app, intake, monkeypatch) -> None:
    # Declared too large: refused before a byte is read.
    environ = EnvironBuilder(
        path=f"{PATH}?token={TOKEN}",
        method="POST",
        input_stream=io.BytesIO(b"--xYzZY--\r\n"),
        content_type="multipart/form-data; boundary=xYzZY",
    ).get_environ()
    environ["CONTENT_LENGTH"] = str(INBOUND_MAX_BODY_BYTES + 1)
    app_iter, status, headers = run_wsgi_app(app, environ, buffered=True)
    assert status.startswith("413")
    text = b"".join(app_iter).decode()
    assert "at most" in text and "30 MB" in text and "nothing was stored" in text
    assert headers["Connection"] == "close"

    # Streamed without a length (chunked): cut off at the limit.
    monkeypatch.setattr(app, "inbound_max_body_bytes", 8 * 1024)
    form = build_form(reply())
    assert len(form.body) > 8 * 1024
    environ = EnvironBuilder(
        path=f"{PATH}?token={TOKEN}",
        method="POST",
        input_stream=io.BytesIO(form.body),
        content_type=form.content_type,
    ).get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ["wsgi.input_terminated"] = True
    _, status, _ = run_wsgi_app(app, environ, buffered=True)
    assert status.startswith("413")
    assert intake.calls == []


# -- through a real socket ---------------------------------------------------------------


def test_the_sandbox_poster_reaches_a_real_server(engine, signing_key, intake) -> None:
    env = settings(
        SENDGRID_INBOUND_TOKEN=TOKEN, SENDGRID_INBOUND_PUBLIC_KEY=public_key_text(signing_key)
    )
    app = make_app(engine, env, None, FixedClock(NOW))
    original = reply()
    with SandboxServer(app) as server:
        for mode in ("parsed", "raw"):
            response = post_inbound(
                server.url,
                original,
                token=TOKEN,
                mode=mode,
                signing_key=signing_key,
                clock=FixedClock(NOW - timedelta(seconds=5)),
                envelope_to=[REPLY_TO],
            )
            assert response.status_code == 200, response.text
            rebuilt = parse(intake.raw)
            assert (rebuilt["Message-ID"], rebuilt["X-Envelope-To"]) == (MESSAGE_ID, REPLY_TO)
        unsigned = post_inbound(server.url, original, token=TOKEN)
        assert unsigned.status_code == 401
    assert len(intake.calls) == 2


# -- the rebuild on its own --------------------------------------------------------------


def test_malformed_envelope_and_charsets_are_ignored_with_a_note() -> None:
    rebuilt = rebuild_message(
        {
            "headers": b"Subject: hi\nMessage-ID: <n@x>\n",
            "text": "caf\xe9".encode("latin-1"),
            "envelope": b"{not json",
            "charsets": b'["text"]',
        }
    )
    assert rebuilt.notes == (
        "charsets is not a JSON object; ignored",
        "envelope is not JSON; ignored",
    )
    message = parse(rebuilt.raw)
    assert message["X-Envelope-To"] is None
    assert message.get_all(NOTE_HEADER) == list(rebuilt.notes)
    assert message.get_content() == "caf\ufffd"  # no charset to go by: UTF-8, replaced


def test_an_unknown_charset_is_read_as_utf8_with_a_note() -> None:
    rebuilt = rebuild_message(
        {
            "headers": b"Subject: hi\n",
            "text": "olá".encode(),
            "charsets": b'{"text":"x-no-such-charset\\r\\nBcc: evil"}',
        }
    )
    message = parse(rebuilt.raw)
    assert message.get_content() == "olá"
    (note,) = message.get_all(NOTE_HEADER)
    assert "unknown charset" in note and message["Bcc"] is None


def test_decoded_text_and_file_like_parts_are_accepted() -> None:
    from werkzeug.datastructures import FileStorage

    raw = raw_message_from_form(
        {
            "headers": "From: ben@example.net\r\nSubject: =?utf-8?q?d=C3=A9j=C3=A0?=\r\n",
            "html": "<b>déjà</b>",
            "attachments": "1",
            "envelope": '{"to": "replies+00ff00ff00ff00ff@hire.example.com"}',
        },
        {
            "attachment1": FileStorage(
                io.BytesIO(b"a,b\n1,2\n"), filename='dates "2026".csv', content_type="text/csv"
            )
        },
    )
    message = parse(raw)
    assert message["Subject"] == "déjà"
    assert message["X-Envelope-To"] == "replies+00ff00ff00ff00ff@hire.example.com"
    assert message.get_body(("html",)).get_content().strip() == "<b>déjà</b>"
    assert attachments_of(message) == [('dates "2026".csv', "text/csv", "a,b\n1,2\n")]


def test_headers_from_the_form_fill_in_a_sparse_block_safely() -> None:
    message = parse(
        raw_message_from_form(
            {
                "headers": b"Message-ID: <s@x>\nnot a header line\n",
                "subject": "Ré: poste\r\nBcc: evil@example.org".encode(),
                "from": "Bén <ben@example.net>".encode(),
                "attachment-info": b'{"attachment1": {"type": "text/html\\r\\nX-Evil: 1", "filename": "a\\r\\nb.txt"}}',
            },
            {"attachment1": _upload(b"x", "ignored.bin", None)},
        )
    )
    assert message["Subject"] == "Ré: poste Bcc: evil@example.org"
    assert message["Bcc"] is None and message["X-Evil"] is None
    assert str(message["From"]) == "Bén <ben@example.net>"
    (part,) = message.iter_attachments()
    assert (part.get_filename(), part.get_content_type()) == ("a b.txt", "application/octet-stream")
    assert any("dropped" in note for note in message.get_all(NOTE_HEADER))


def test_a_form_without_email_or_headers_is_refused() -> None:
    with pytest.raises(ParseFormError, match="neither an 'email' field"):
        raw_message_from_form({"text": b"hello", "to": b"ann@hire.example.com"}, {})


def _upload(data: bytes, filename: str, content_type: str | None):
    from werkzeug.datastructures import FileStorage

    return FileStorage(io.BytesIO(data), filename=filename, content_type=content_type)


def test_an_envelope_header_for_another_address_does_not_hide_the_recipient() -> None:
    rebuilt = rebuild_message(
        {
            "headers": b"Subject: hi\nX-Envelope-To: jo" + REPLY_TO.encode() + b"\n",
            "text": b"hello",
            "envelope": json.dumps({"to": [REPLY_TO]}).encode(),
        }
    )
    assert parse(rebuilt.raw).get_all("X-Envelope-To") == ["jo" + REPLY_TO, REPLY_TO]


@pytest.mark.parametrize(
    ("form", "note"),
    [
        # a lone surrogate from a JSON escape could not be written into a header
        ({"envelope": b'{"to": ["\\ud800@x.example"]}'}, None),
        ({"charsets": b'{"text": "\\ud800"}'}, None),
        ({"attachment-info": b'{"attachment1": {"filename": "\\ud800.pdf"}}'}, None),
        # json.loads raised RecursionError
        ({"charsets": b'{"to":' + b"[" * 5000 + b"]" * 5000 + b"}"}, "charsets is not JSON"),
        # formataddr refuses a non-ASCII address (found by tests/fuzz)
        ({"cc": b"\x80"}, None),
        ({"to": "J\u00f6 <j\u00f6@exampl\u00e9.org>".encode()}, None),
    ],
)
def test_mangled_fields_do_not_lose_the_message(form: dict, note: str | None) -> None:
    """Each of these fields raised out of the rebuild (500 on the route)."""
    fields = {"headers": b"From: ben@example.net\nSubject: hi\n", "text": b"hello", **form}
    files = {"attachment1": _upload(b"%PDF", "a.pdf", "application/pdf")}
    rebuilt = rebuild_message(fields, files)
    message = parse(rebuilt.raw)
    assert body_of(message, "plain").strip() == "hello"
    if note is not None:
        assert any(note in line for line in rebuilt.notes)


# -- with the real intake ----------------------------------------------------------------


def test_posts_reach_the_real_intake_once(engine) -> None:
    from outreach.inbound.listing import iter_inbound

    client = Client(make_app(engine, settings(SENDGRID_INBOUND_TOKEN=TOKEN), None, FixedClock(NOW)))
    original = reply()
    parsed = build_form(original, envelope_to=[REPLY_TO])
    response = post(client, parsed.body, parsed.content_type)
    assert response.status_code == 200, response.text
    assert response.json == {"stored": 1, "duplicates": 0}
    # SendGrid's retry, or the same reply posted raw: the same Message-ID, stored once.
    raw = build_form(original, mode="raw", envelope_to=[REPLY_TO])
    response = post(client, raw.body, raw.content_type)
    assert response.status_code == 200, response.text
    assert response.json == {"stored": 0, "duplicates": 1}
    (row,) = iter_inbound(engine)
    assert (row["source"], row["origin"], row["kind"]) == ("parse", "Inbound Parse", "human")
    assert row["subject"] == "Re: Entretien — jeudi ?"

    # A post whose message is not mail at all: 400 (no retries), kept as invalid.
    junk, content_type = multipart([("email", b'{"not": "mail"}'), ("to", b"x")])
    response = post(client, junk, content_type)
    assert response.status_code == 400
    assert "Inbound Parse: " in response.text and "not an email" in response.text
    assert [r["kind"] for r in iter_inbound(engine)] == ["human", "invalid"]
