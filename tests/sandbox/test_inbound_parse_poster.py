"""The sandbox Inbound Parse poster posts what SendGrid posts, in both modes."""

from __future__ import annotations

import base64
import email
import email.policy
import json
from datetime import UTC, datetime
from email.message import EmailMessage
from importlib.resources import files

import httpx
import pytest
from sendgrid.helpers.eventwebhook import EventWebhook
from sendgrid.helpers.inbound.config import Config
from sendgrid.helpers.inbound.parse import Parse
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from outreach.clock import FixedClock
from outreach.sandbox.inbound_parse import (
    INBOUND_PATH,
    SENDGRID_BOUNDARY,
    build_form,
    new_signing_key,
    post_inbound,
    public_key_text,
    sign_body,
)
from outreach.sandbox.sendgrid import SIGNATURE_HEADER, TIMESTAMP_HEADER, FakeSendGrid

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
SAMPLES = files("sendgrid.helpers.inbound") / "sample_data"
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 8
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(200))


def message(*, attachments: bool = False, cc: bool = False, charset: str = "utf-8") -> bytes:
    mail = EmailMessage()
    mail["From"] = "Ben Ortiz <ben@example.net>"
    mail["To"] = "Ann Recruiter <ann@hire.example.com>"
    if cc:
        mail["Cc"] = "Zoë <zoe@example.org>"
    mail["Subject"] = "Re: Interview"
    mail["Message-ID"] = "<r1@example.net>"
    mail.set_content("Thursday works. Très bien.\n", charset=charset)
    mail.add_alternative("<p>Thursday works. Très bien.</p>", subtype="html", charset=charset)
    if attachments:
        mail.add_attachment(PDF, maintype="application", subtype="pdf", filename="cv.pdf")
        mail.add_attachment(
            PNG, maintype="image", subtype="png", filename="logo.png", cid="<logo@ben>"
        )
    return mail.as_bytes(policy=email.policy.SMTP)


def request_of(body: bytes, content_type: str) -> Request:
    environ = EnvironBuilder(method="POST", data=body, content_type=content_type).get_environ()
    return Request(environ)


def sample(name: str) -> Request:
    return request_of(SAMPLES.joinpath(name).read_bytes(), "multipart/form-data; boundary=xYzZY")


def test_parsed_fields_match_the_sendgrid_sample_payload() -> None:
    expected = sample("default_data.txt").form
    post = build_form(message(), spam_check=False)
    form = request_of(post.body, post.content_type).form
    assert list(form.keys()) == list(expected.keys())
    assert post.content_type == "multipart/form-data; boundary=xYzZY"
    # The JSON fields have the sample's shapes.
    for name in ("envelope", "charsets"):
        assert list(json.loads(form[name])) == list(json.loads(expected[name])), name
    envelope = json.loads(form["envelope"])
    assert envelope == {"to": ["ann@hire.example.com"], "from": "ben@example.net"}
    assert form["attachments"] == expected["attachments"] == "0"
    # headers is the raw header block; text and html the decoded bodies.
    assert form["headers"].startswith("From: Ben Ortiz <ben@example.net>\r\n")
    assert form["headers"].endswith("\r\n") and "\r\n\r\n" not in form["headers"]
    assert form["text"] == "Thursday works. Très bien.\r\n"  # line breaks as in the message
    assert form["html"].strip() == "<p>Thursday works. Très bien.</p>"
    assert (form["from"], form["to"], form["SPF"]) == (
        "Ben Ortiz <ben@example.net>",
        "Ann Recruiter <ann@hire.example.com>",
        "pass",
    )


def test_raw_fields_match_the_sendgrid_sample_payload() -> None:
    expected = sample("raw_data.txt").form
    raw = message()
    post = build_form(raw, mode="raw", spam_check=False)
    form = request_of(post.body, post.content_type).form
    assert list(form.keys()) == list(expected.keys())
    assert list(json.loads(form["charsets"])) == list(json.loads(expected["charsets"]))
    assert dict(post.fields)["email"] == raw  # the message's bytes, untouched


def test_spam_cc_and_inline_attachments_add_their_fields() -> None:
    post = build_form(
        message(attachments=True, cc=True), envelope_to=["replies+ab@hire.example.com"]
    )
    form = request_of(post.body, post.content_type)
    keys = list(form.form.keys())
    assert keys.index("content-ids") == keys.index("dkim") + 1
    assert keys.index("cc") == keys.index("to") + 1
    assert {"spam_score", "spam_report", "attachment-info"} <= set(keys)
    assert form.form["cc"] == "Zoë <zoe@example.org>"
    assert json.loads(form.form["charsets"]) == {
        "to": "UTF-8",
        "cc": "UTF-8",
        "html": "utf-8",
        "subject": "UTF-8",
        "from": "UTF-8",
        "text": "utf-8",
    }
    assert json.loads(form.form["envelope"])["to"] == ["replies+ab@hire.example.com"]
    assert json.loads(form.form["content-ids"]) == {"logo@ben": "attachment2"}
    assert json.loads(form.form["attachment-info"]) == {
        "attachment1": {"filename": "cv.pdf", "name": "cv.pdf", "type": "application/pdf"},
        "attachment2": {
            "filename": "logo.png",
            "name": "logo.png",
            "type": "image/png",
            "content-id": "logo@ben",
        },
    }
    assert form.form["attachments"] == "2"
    assert sorted(form.files) == ["attachment1", "attachment2"]
    assert form.files["attachment1"].read() == PDF
    assert form.files["attachment2"].mimetype == "image/png"


def test_a_latin1_body_is_posted_in_its_own_charset() -> None:
    post = build_form(message(charset="iso-8859-1"))
    fields = dict(post.fields)
    assert fields["text"] == "Thursday works. Très bien.\r\n".encode("iso-8859-1")
    assert json.loads(fields["charsets"])["text"] == "iso-8859-1"


def test_the_sendgrid_parse_helper_reads_both_modes() -> None:
    raw = message(attachments=True)
    parsed = build_form(raw)
    helper = Parse(Config(), request_of(parsed.body, parsed.content_type))
    values = helper.key_values()
    assert {"headers", "text", "html", "envelope", "charsets", "attachment-info", "subject"} <= set(
        values
    )
    assert values["subject"] == "Re: Interview"
    found = {
        (a["file_name"], a["type"]): base64.b64decode(a["contents"]) for a in helper.attachments()
    }
    assert found == {("cv.pdf", "application/pdf"): PDF, ("logo.png", "image/png"): PNG}
    assert helper.get_raw_email() is None

    raw_post = build_form(raw, mode="raw")
    helper = Parse(Config(), request_of(raw_post.body, raw_post.content_type))
    assert helper.get_raw_email()["Subject"] == "Re: Interview"
    assert "email" in helper.key_values()
    names = [a["file_name"] for a in helper.attachments()]
    assert names[-2:] == ["cv.pdf", "logo.png"]


def test_signatures_verify_like_sendgrids() -> None:
    post = build_form(message())
    key = new_signing_key()
    headers = sign_body(key, post.body, 1764082800)
    verifier = EventWebhook(public_key_text(key))
    assert verifier.verify_signature(
        post.body.decode(), headers[SIGNATURE_HEADER], headers[TIMESTAMP_HEADER]
    )
    assert not verifier.verify_signature(
        post.body.decode() + " ", headers[SIGNATURE_HEADER], "1764082800"
    )
    # A FakeSendGrid signs with its webhook key, as the Event Webhook fake does.
    fake = FakeSendGrid()
    headers = sign_body(fake, post.body, 1764082800)
    assert EventWebhook(fake.webhook_public_key).verify_signature(
        post.body.decode(), headers[SIGNATURE_HEADER], "1764082800"
    )


def test_post_inbound_sends_the_form_with_token_and_signature() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"stored": 1, "duplicates": 0})

    key = new_signing_key()
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        response = post_inbound(
            "http://outreach.test:8080",
            message(),
            token="t0k",
            signing_key=key,
            client=client,
            clock=FixedClock(NOW),
        )
        assert response.status_code == 200
        post_inbound(
            "http://outreach.test/custom/parse", message(), token="t0k", mode="raw", client=client
        )
    first, second = seen
    assert first.url.path == INBOUND_PATH and first.url.params["token"] == "t0k"
    assert first.headers["Content-Type"] == f"multipart/form-data; boundary={SENDGRID_BOUNDARY}"
    assert first.headers[TIMESTAMP_HEADER] == str(int(NOW.timestamp()))
    signature = first.headers[SIGNATURE_HEADER]
    assert EventWebhook(public_key_text(key)).verify_signature(
        first.content.decode(), signature, first.headers[TIMESTAMP_HEADER]
    )
    assert second.url.path == "/custom/parse" and SIGNATURE_HEADER not in second.headers
    assert b'name="email"' in second.content


def test_the_boundary_changes_when_the_content_holds_it() -> None:
    mail = EmailMessage()
    mail["From"] = "ben@example.net"
    mail["To"] = "ann@hire.example.com"
    mail["Subject"] = "tricky"
    mail.set_content("a line\n--xYzZY\nanother\n")
    post = build_form(mail.as_bytes())
    boundary = post.content_type.split("boundary=")[1]
    assert boundary != SENDGRID_BOUNDARY and boundary.startswith(SENDGRID_BOUNDARY)
    assert request_of(post.body, post.content_type).form["text"] == "a line\n--xYzZY\nanother\n"


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="mode"):
        build_form(message(), mode="json")  # type: ignore[arg-type]
