"""parse_mail: every corpus message, and the edge rules (bad mail, charsets, MIME damage)."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest import mock

import pytest
import yaml

from outreach.inbound import message as message_module
from outreach.inbound.message import DeliveryStatus, Mail, MailError, parse_mail

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "mail"
MANIFEST: dict[str, dict] = yaml.safe_load((CORPUS / "corpus.yaml").read_text(encoding="utf-8"))


def test_manifest_and_folder_agree():
    files = {path.name for path in CORPUS.glob("*.eml")}
    assert files == set(MANIFEST)
    assert len(files) >= 30


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_corpus_message_parses(name: str):
    expected = MANIFEST[name]
    raw = (CORPUS / name).read_bytes()
    mail = parse_mail(raw)

    assert mail.size == len(raw)
    assert f"replies+{expected['token']}@hire.example.com" in mail.recipients
    assert all(a == a.lower() and "@" in a for a in mail.recipients)
    assert len(set(mail.recipients)) == len(mail.recipients)
    assert mail.date is not None and mail.date.tzinfo is not None
    if name == "qmail_bounce.eml":  # qmail-send writes no Message-ID
        assert mail.message_id is None
    else:
        assert mail.message_id and "<" not in mail.message_id
    if "from" in expected:
        assert mail.from_address == expected["from"]
    if "from_name" in expected:
        assert mail.from_name == expected["from_name"]
    if "subject" in expected:
        assert mail.subject == expected["subject"]
    if "in_reply_to" in expected:
        assert mail.in_reply_to == (expected["in_reply_to"],)
    if expected["kind"] == "bounce":
        assert mail.returned_message_id == expected["returned_message_id"]
        assert mail.returned_headers.get("message-id")
    else:
        assert mail.returned_message_id is None
        assert mail.text.strip() or expected["kind"] == "unsubscribe"
    if "defects" in expected:
        if expected["defects"]:
            for defect in expected["defects"]:
                assert defect in mail.defects
        else:
            assert mail.defects == ()
    assert "\r" not in mail.text


# ---------------------------------------------------------------------------- not mail


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"", "empty"),
        (b"  \r\n\t\n", "empty"),
        (bytes(range(256)) * 4, "binary"),
        (b"\x00\x01\x02PK\x03\x04" + b"\xff" * 100, "binary"),
        (b'{"from": "jane@example.com", "subject": "hi"}', "JSON"),
        (b'[\n  {"event": "delivered"}\n]\n', "JSON"),
        (b"hello there, this is just text\nwith two lines\n", "header block"),
        (b"Foo: bar\nBaz: qux\n\nbody\n", "From, To, Subject"),
        (b"Subject: x\x00y\n\nbody", "binary"),
    ],
)
def test_not_mail_raises_mail_error(raw: bytes, why: str):
    with pytest.raises(MailError, match=why):
        parse_mail(raw)


def test_mail_error_is_a_value_error_and_names_no_address():
    with pytest.raises(ValueError) as caught:
        parse_mail(b'{"to": "jane.doe@example.com"}')
    assert "@" not in str(caught.value)


# ----------------------------------------------------------------------------- helpers


def mail(headers: str = "", body: str | bytes = "Hello\n", **extra: str) -> Mail:
    head = (
        "From: Jane Doe <jane.doe@example.com>\n"
        "To: replies+t0000000001@hire.example.com\n"
        "Subject: Re: role\n"
        "Date: Thu, 3 Dec 2026 10:00:00 +0100\n"
        "Message-ID: <m1@example.com>\n"
    ) + headers
    data = body if isinstance(body, bytes) else body.encode("utf-8")
    return parse_mail(head.encode("utf-8") + b"\n" + data)


# ----------------------------------------------------------------------------- headers


def test_headers_are_decoded_unfolded_and_case_insensitive():
    parsed = mail(
        "X-Long: first part\n\tsecond part\n   third part\n"
        "X-Word: =?utf-8?B?w6k=?= =?utf-8?Q?t=C3=A9?=\n"
        "X-Split: =?utf-8?B?w6k=?=\n =?utf-8?B??=\n"
        "x-dup: one\nX-Dup: two\n"
    )
    assert parsed.header("x-long") == "first part second part   third part"
    assert parsed.header("X-WORD") == "été"
    assert parsed.headers["x-dup"] == ("one", "two")
    assert parsed.header("x-missing") is None
    with pytest.raises(TypeError):
        parsed.headers["x-new"] = ("nope",)  # type: ignore[index]


def test_encoded_word_split_inside_a_multibyte_character():
    # "Müller" with the two bytes of "ü" in two adjacent encoded words
    parsed = mail("X-Name: =?utf-8?Q?M=C3?= =?utf-8?Q?=BCller?=\n")
    assert parsed.header("x-name") == "Müller"


def test_addresses_names_ids_and_recipient_order():
    parsed = parse_mail(
        b"Delivered-To: Replies+T0000000009@Hire.Example.com\n"
        b"X-Original-To: replies+t0000000009@hire.example.com\n"
        b"Envelope-To: env@hire.example.com\n"
        b"X-Envelope-To: <xenv@hire.example.com>\n"
        b'From: "Doe, Jane" <Jane.Doe@Example.COM>\n'
        b'To: "Anna" <anna@hire.example.com>, bob@hire.example.com\n'
        b"Cc: =?utf-8?q?J=C3=BCrgen?= <j@example.org>, env@hire.example.com\n"
        b"Subject: x\n"
        b"Message-ID: <abc@x>\n"
        b"In-Reply-To: <touch-1.abc@hire.example.com>\n"
        b"References: <a@x>,<b@x>\n <touch-1.abc@hire.example.com>\n"
        b"\nbody\n"
    )
    assert parsed.from_address == "jane.doe@example.com"
    assert parsed.from_name == "Doe, Jane"
    assert parsed.recipients == (
        "replies+t0000000009@hire.example.com",
        "env@hire.example.com",
        "xenv@hire.example.com",
        "anna@hire.example.com",
        "bob@hire.example.com",
        "j@example.org",
    )
    assert parsed.message_id == "abc@x"
    assert parsed.in_reply_to == ("touch-1.abc@hire.example.com",)
    assert parsed.references == ("a@x", "b@x", "touch-1.abc@hire.example.com")


def test_mailer_daemon_comment_form_and_missing_from():
    daemon = parse_mail(
        b"From: MAILER-DAEMON@mx.example.org (Mail Delivery System)\nSubject: x\n\nbody\n"
    )
    assert daemon.from_address == "mailer-daemon@mx.example.org"
    assert daemon.from_name == "Mail Delivery System"
    nobody = parse_mail(b"Subject: no sender\n\nbody\n")
    assert nobody.from_address is None and nobody.from_name is None
    assert nobody.message_id is None and nobody.recipients == ()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Thu, 3 Dec 2026 10:00:00 +0100", datetime(2026, 12, 3, 9, 0, tzinfo=UTC)),
        ("Thu, 3 Dec 2026 10:00:00 -0000", datetime(2026, 12, 3, 10, 0, tzinfo=UTC)),
        ("3 Dec 2026 10:00 GMT", datetime(2026, 12, 3, 10, 0, tzinfo=UTC)),
        ("29-04-2017 23:34", None),
        ("yesterday", None),
    ],
)
def test_date_is_aware_or_none(value: str, expected: datetime | None):
    parsed = parse_mail(f"Subject: x\nDate: {value}\n\nbody\n".encode())
    assert parsed.date == expected
    if parsed.date is not None:
        assert parsed.date.utcoffset() is not None


def test_eight_bit_header_in_utf8_is_no_defect():
    parsed = parse_mail("Subject: Grüße\nFrom: Jörg <j@example.org>\n\nbody\n".encode())
    assert parsed.subject == "Grüße" and parsed.from_name == "Jörg"
    assert parsed.defects == ()


def test_mbox_from_line_and_crlf():
    parsed = parse_mail(
        b"From MAILER-DAEMON  Wed Apr 20 23:34:45 2022\r\nSubject: hi\r\nTo: a@example.com\r\n"
        b"\r\nline one\r\nline two\r\n"
    )
    assert parsed.subject == "hi"
    assert parsed.text == "line one\nline two\n"


def test_missing_blank_line_after_headers_is_tolerated():
    parsed = parse_mail(b"Subject: x\nTo: a@example.com\nthis is the body already\n")
    assert parsed.text == "this is the body already\n"
    assert "missing blank line after the headers" in parsed.defects


# ---------------------------------------------------------------------------------- body


def test_empty_body():
    parsed = mail(body="")
    assert parsed.text == "" and parsed.html is None


def test_html_only_text_is_extracted():
    html = (
        "<html><head><title>T</title><style>p {color: red}</style>"
        "<script>alert('x')</script></head><body><div>Hi&nbsp;Anna &amp; team,</div>"
        "<p>line&nbsp;one<br>line two</p><div>caf&eacute; &#8364;5</div>"
        "<blockquote>quoted<br>more</blockquote><!-- a comment --><table><tr><td>a</td>"
        "<td>b</td></tr></table></body></html>"
    )
    parsed = mail("MIME-Version: 1.0\nContent-Type: text/html; charset=utf-8\n", html)
    assert parsed.html == html
    assert parsed.text == (
        "Hi Anna & team,\n\nline one\nline two\n\ncafé €5\n\n> quoted\n> more\n\na b"
    )
    assert "color" not in parsed.text and "alert" not in parsed.text


def test_plain_part_preferred_and_several_inline_text_parts_joined():
    body = (
        "--b\nContent-Type: text/plain; charset=utf-8\n\nfirst\n"
        "--b\nContent-Type: image/png\nContent-Disposition: inline; filename=a.png\n"
        "Content-Transfer-Encoding: base64\n\niVBORw0KGgo=\n"
        "--b\nContent-Type: text/plain; charset=utf-8\n\nsecond\n"
        "--b\nContent-Type: text/plain; name=notes.txt\nContent-Disposition: attachment\n\n"
        "attached text\n--b--\n"
    )
    parsed = mail('MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b"\n', body)
    assert parsed.text == "first\nsecond"


def test_alternative_takes_one_plain_and_one_html():
    body = (
        "--a\nContent-Type: text/plain\n\nplain version\n"
        "--a\nContent-Type: multipart/related; boundary=r\n\n"
        "--r\nContent-Type: text/html\n\n<p>html version</p>\n--r--\n"
        "--a\nContent-Type: text/plain\n\nsecond plain\n--a--\n"
    )
    parsed = mail("Content-Type: multipart/alternative; boundary=a\n", body)
    assert parsed.text == "plain version"
    assert parsed.html == "<p>html version</p>"


def test_empty_plain_part_falls_back_to_html():
    body = (
        "--a\nContent-Type: text/plain\n\n\n--a\nContent-Type: text/html\n\n<b>only here</b>\n"
        "--a--\n"
    )
    parsed = mail("Content-Type: multipart/alternative; boundary=a\n", body)
    assert parsed.text == "only here"


def test_quoted_printable_base64_and_flowed():
    qp = mail(
        "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n",
        "Gr=C3=BC=C3=9Fe, a long=\n line\n",
    )
    assert qp.text == "Grüße, a long line\n"
    b64 = mail(
        "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n",
        base64.encodebytes("Hallo Wörld\r\n".encode()).decode(),
    )
    assert b64.text == "Hallo Wörld\n"
    flowed = mail(
        "Content-Type: text/plain; charset=utf-8; format=flowed; delsp=yes\n",
        "This is a long para \ngraph that \nwraps.\n> quoted fl \n> owed\n-- \nsig\n",
    )
    assert flowed.text == "This is a long paragraph thatwraps.\n> quoted flowed\n-- \nsig\n"


def test_bad_base64_in_a_text_part_is_recovered():
    parsed = mail(
        "Content-Type: text/plain\nContent-Transfer-Encoding: base64\n", "SGVsbG8gd29y*bGQ"
    )
    assert parsed.text.startswith("Hello wor")
    assert any("base64" in d for d in parsed.defects)


# ------------------------------------------------------------------------------ charsets


@pytest.mark.parametrize(
    ("charset", "data", "text", "defect"),
    [
        ("iso-8859-1", "Grüße".encode("latin-1"), "Grüße", None),
        ("windows-1252", "“quote” – 5 €".encode("cp1252"), "“quote” – 5 €", None),
        ("iso-2022-jp", "日本語".encode("iso-2022-jp"), "日本語", None),
        ("utf-8", "naïve".encode(), "naïve", None),
        ("x-unknown", "très".encode("latin-1"), "très", "charset 'x-unknown' unknown"),
        ("x-unknown", "très".encode(), "très", "charset 'x-unknown' unknown, decoded as utf-8"),
        ("us-ascii", "café".encode(), "café", "text is not valid 'us-ascii', decoded as utf-8"),
        ("iso-8859-1", "café".encode(), "café", "declared charset 'iso-8859-1' but the text is"),
        ("utf-8", "café".encode("latin-1"), "café", "text is not valid 'utf-8', decoded as cp1252"),
        ("base64", b"plain", "plain", "charset 'base64' unknown"),
    ],
)
def test_charsets(charset: str, data: bytes, text: str, defect: str | None):
    parsed = mail(f"Content-Type: text/plain; charset={charset}\n", data)
    assert parsed.text == text
    if defect is None:
        assert parsed.defects == ()
    else:
        assert any(defect in d for d in parsed.defects), parsed.defects


def test_eight_bit_body_without_content_type():
    parsed = mail(body="Grüße".encode())
    assert parsed.text == "Grüße"
    assert parsed.defects == ("8-bit text without a charset, decoded as utf-8",)


def test_missing_content_type_parameters_semicolon():
    parsed = mail("Content-Type: text/plain charset=iso-8859-1\n", "Gr\xfc\xdfe".encode("latin-1"))
    assert parsed.text == "Grüße"


# ------------------------------------------------------------------------- broken MIME


def test_missing_closing_boundary_keeps_the_parts():
    body = "--b\nContent-Type: text/plain\n\nfirst part\n--b\nContent-Type: text/html\n\n<p>cut"
    parsed = mail("Content-Type: multipart/alternative; boundary=b\n", body)
    assert parsed.text == "first part"
    assert parsed.html == "<p>cut"
    assert "missing closing MIME boundary" in parsed.defects


def test_boundary_never_found_reads_the_body_as_text():
    parsed = mail("Content-Type: multipart/mixed; boundary=nope\n", "just text\n")
    assert parsed.text == "just text\n"
    assert "MIME boundary not found, body read as text" in parsed.defects


def test_multipart_without_boundary_reads_as_text():
    parsed = mail("Content-Type: multipart/mixed\n", "just text\n")
    assert parsed.text == "just text\n"
    assert "multipart part without a boundary, read as text" in parsed.defects


def test_boundary_prefix_and_mid_line_occurrences_are_not_delimiters():
    body = (
        "--b\nContent-Type: multipart/alternative; boundary=b2\n\n"
        "--b2\nContent-Type: text/plain\n\nsee --b inside a line\n--b2--\n"
        "--b--\n"
    )
    parsed = mail("Content-Type: multipart/mixed; boundary=b\n", body)
    assert parsed.text == "see --b inside a line"
    assert parsed.defects == ()


def test_deep_nesting_is_cut_off():
    depth = 40
    body = ""
    for level in range(depth):
        body += f"--l{level}\nContent-Type: multipart/mixed; boundary=l{level + 1}\n\n"
    body += f"--l{depth}\nContent-Type: text/plain\n\ndeep\n"
    parsed = mail("Content-Type: multipart/mixed; boundary=l0\n", body)
    assert any("nested" in d for d in parsed.defects)


# --------------------------------------------------------------------- delivery reports


def report(status_block: str, returned: str = "", returned_type: str = "message/rfc822") -> Mail:
    body = (
        "--r\nContent-Type: text/plain\n\nCould not deliver.\n"
        f"--r\nContent-Type: message/delivery-status\n\n{status_block}\n"
        f"--r\nContent-Type: {returned_type}\n\n{returned}\n--r--\n"
    )
    return parse_mail(
        b"From: MAILER-DAEMON@mx.example.org\nTo: replies+t0000000009@hire.example.com\n"
        b"Subject: Undelivered Mail Returned to Sender\nMIME-Version: 1.0\n"
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=r\n\n"
        + body.encode()
    )


def test_delivery_status_blocks():
    parsed = report(
        "Reporting-MTA: dns; mx.example.org\n\n"
        "Final-Recipient: rfc822; A@Example.org\nAction: failed\nStatus: 5.1.1 (user unknown)\n"
        "Diagnostic-Code: smtp; 550 5.1.1 <a@example.org>:\n    User unknown\n\n"
        "Original-Recipient: rfc822;b@example.org\nAction: delayed\n"
        "Diagnostic-Code: X-Postfix; 451 4.7.1 greylisted\n\n"
        "Final-Recipient: rfc822; c@example.org\nAction: Delivered\nStatus: 2.0.0\n"
        "Final-Recipient: rfc822; <d@example.org>\nAction: failed\n",
        "Message-ID: <touch-9.abc@hire.example.com>\nSubject: =?utf-8?q?R=C3=B4le?=\n\nbody",
    )
    assert parsed.delivery_status == (
        DeliveryStatus(
            "a@example.org", "failed", "5.1.1", "550 5.1.1 <a@example.org>: User unknown"
        ),
        DeliveryStatus("b@example.org", "delayed", "4.7.1", "451 4.7.1 greylisted"),
        DeliveryStatus("c@example.org", "delivered", "2.0.0", None),
        DeliveryStatus("d@example.org", "failed", "", None),
    )
    assert parsed.returned_message_id == "touch-9.abc@hire.example.com"
    assert parsed.returned_headers["subject"] == ("Rôle",)
    assert "Could not deliver." in parsed.text


def test_returned_headers_part_and_encoded_returned_message():
    headers_only = report(
        "Final-Recipient: rfc822; a@example.org\nAction: delayed\nStatus: 4.4.1\n",
        "Message-ID: <touch-10.x@hire.example.com>\nTo: a@example.org\n",
        "text/rfc822-headers",
    )
    assert headers_only.returned_message_id == "touch-10.x@hire.example.com"
    encoded = base64.encodebytes(b"Message-ID: <touch-11.y@hire.example.com>\n\nbody\n").decode()
    parsed = report(
        "Final-Recipient: rfc822; a@example.org\nAction: failed\nStatus: 5.0.0\n",
        encoded,
        "message/rfc822\nContent-Transfer-Encoding: base64",
    )
    assert parsed.returned_message_id == "touch-11.y@hire.example.com"


def test_forwarded_message_of_a_person_is_no_returned_message():
    body = (
        "--m\nContent-Type: text/plain\n\nFYI, see below.\n"
        "--m\nContent-Type: message/rfc822\n\nMessage-ID: <touch-3.z@hire.example.com>\n"
        "Subject: old\n\nold body\n--m--\n"
    )
    parsed = mail("Content-Type: multipart/mixed; boundary=m\n", body)
    assert parsed.returned_message_id is None
    assert parsed.returned_headers == {}
    assert parsed.text == "FYI, see below."


def test_old_style_bounce_inline_copy_only_from_a_bounce_sender():
    text = (
        "Delivery failed.\n\n------ This is a copy of the message, including all the headers."
        " ------\n\nMessage-ID: <touch-12.q@hire.example.com>\nFrom: a@hire.example.com\n\nhi\n"
    )
    bounce = parse_mail(b"From: Mailer-Daemon@mx.example.org\nSubject: x\n\n" + text.encode())
    assert bounce.returned_message_id == "touch-12.q@hire.example.com"
    person = parse_mail(b"From: jane@example.com\nSubject: x\n\n" + text.encode())
    assert person.returned_message_id is None


# ---------------------------------------------------------------------------- big mail


def big_attachment_mail(megabytes: int) -> bytes:
    chunk = base64.encodebytes(bytes(range(256)) * 3).replace(b"\n", b"\r\n")
    attachment = chunk * (megabytes * 1024 * 1024 // len(chunk))
    return (
        b"From: Jane <jane@example.com>\r\nTo: replies+t0000000001@hire.example.com\r\n"
        b"Subject: CV\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XYZ\r\n\r\n"
        b"--XYZ\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHere is my CV.\r\n"
        b"--XYZ\r\nContent-Type: application/pdf; name=cv.pdf\r\n"
        b"Content-Disposition: attachment; filename=cv.pdf\r\nContent-Transfer-Encoding: base64\r\n"
        b"\r\n" + attachment + b"--XYZ--\r\n"
    )


def test_a_30_mb_attachment_is_never_decoded():
    raw = big_attachment_mail(30)
    decoded: list[int] = []
    real = message_module.binascii.a2b_base64

    def spy(data, *args, **kwargs):
        decoded.append(len(data))
        return real(data, *args, **kwargs)

    with mock.patch.object(message_module.binascii, "a2b_base64", spy):
        started = time.perf_counter()
        parsed = parse_mail(raw)
        elapsed = time.perf_counter() - started
    assert parsed.text == "Here is my CV."
    assert decoded == []
    assert parsed.size == len(raw)
    assert elapsed < 0.5  # one bytes.find over the attachment, about 15 ms


def test_parsing_is_fast():
    raws = [path.read_bytes() for path in sorted(CORPUS.glob("*.eml"))]
    for raw in raws:
        parse_mail(raw)
    started = time.perf_counter()
    rounds = 10
    for _ in range(rounds):
        for raw in raws:
            parse_mail(raw)
    per_message = (time.perf_counter() - started) / (rounds * len(raws))
    # ~0.1 ms on a laptop; the bound only catches a regression to stdlib-parser speeds.
    assert per_message < timedelta(milliseconds=1).total_seconds()
