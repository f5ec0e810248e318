"""Post a message to ``outreach serve`` exactly as SendGrid Inbound Parse does.

:func:`build_form` turns a raw MIME message into the ``multipart/form-data`` body SendGrid
posts (twilio.com/docs/sendgrid/for-developers/parsing-email/setting-up-the-inbound-parse-
webhook; the field order and shapes of sendgrid-python's
``sendgrid/helpers/inbound/sample_data``), in either mode:

``parsed`` (the default setting)
    ``headers`` (the raw header block), ``dkim``, ``content-ids``, ``to``, ``cc``, ``html``,
    ``from``, ``text``, ``sender_ip``, ``spam_report``, ``envelope``, ``attachments``,
    ``subject``, ``spam_score``, ``attachment-info``, ``charsets``, ``SPF``, then one file
    part per attachment (``attachment1`` ..). ``text`` and ``html`` are the decoded bodies
    in their own charset, named in ``charsets``; ``to``, ``from``, ``cc`` and ``subject``
    are decoded to UTF-8.
``raw`` ("Send Raw")
    ``dkim``, ``email`` (the message's bytes), ``to``, ``cc``, ``from``, ``sender_ip``,
    ``spam_report``, ``envelope``, ``subject``, ``spam_score``, ``charsets``, ``SPF``.

The boundary is SendGrid's ``xYzZY`` (unless the content holds it). With a signing key
the post carries the signed-webhook headers (``X-Twilio-Email-Event-Webhook-Signature``
and ``-Timestamp``: ECDSA P-256 / SHA-256 over ``timestamp + body``), as a Parse webhook
with a signature security policy does::

    key = new_signing_key()               # or a FakeSendGrid: its webhook key signs
    settings = {"SENDGRID_INBOUND_PUBLIC_KEY": public_key_text(key), ...}
    response = post_inbound(server.url, raw, token="s3cret", signing_key=key)
"""

from __future__ import annotations

import base64
import email
import email.policy
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import getaddresses, parseaddr
from typing import Literal, Protocol
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from outreach.clock import Clock, SystemClock
from outreach.sandbox.sendgrid import SIGNATURE_HEADER, TIMESTAMP_HEADER

__all__ = [
    "INBOUND_PATH",
    "SENDGRID_BOUNDARY",
    "InboundPost",
    "build_form",
    "new_signing_key",
    "post_inbound",
    "public_key_text",
    "sign_body",
]

INBOUND_PATH = "/webhooks/sendgrid/inbound"
#: the boundary SendGrid's posts use (sendgrid-python sample_data, send.py)
SENDGRID_BOUNDARY = "xYzZY"
_SPAM_REPORT = (
    'Spam detection software, running on the system "mx.sandbox.invalid", has\n'
    "NOT identified this incoming email as spam.\n\n"
    "Content analysis details:   (0.1 points, 5.0 required)\n"
)


class _Signer(Protocol):
    def sign_events(self, payload: bytes, timestamp: int | str) -> dict[str, str]: ...


@dataclass(frozen=True)
class InboundPost:
    """A built post: ``body`` bytes, its ``content_type`` and the ``fields`` in order
    (``(name, value)`` for fields, ``(name, filename, type, bytes)`` for file parts)."""

    body: bytes
    content_type: str
    fields: tuple[tuple[str, bytes], ...]
    files: tuple[tuple[str, str, str, bytes], ...]


def new_signing_key() -> ec.EllipticCurvePrivateKey:
    """A fresh P-256 key, as SendGrid makes for a signed webhook policy."""
    return ec.generate_private_key(ec.SECP256R1())


def public_key_text(key: ec.EllipticCurvePrivateKey) -> str:
    """The verification key as SendGrid shows it (base64 DER, no PEM armour)."""
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def sign_body(
    key: ec.EllipticCurvePrivateKey | _Signer, body: bytes, timestamp: int
) -> dict[str, str]:
    """The signature headers for ``body`` at ``timestamp`` (a key, or a ``FakeSendGrid``)."""
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign_events(body, timestamp)
    stamp = str(timestamp)
    signature = key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {SIGNATURE_HEADER: base64.b64encode(signature).decode(), TIMESTAMP_HEADER: stamp}


def build_form(
    raw: bytes,
    *,
    mode: Literal["parsed", "raw"] = "parsed",
    envelope_to: Sequence[str] | None = None,
    envelope_from: str | None = None,
    sender_ip: str = "127.0.0.1",
    spam_check: bool = True,
    boundary: str | None = None,
) -> InboundPost:
    """The Inbound Parse post SendGrid would make for ``raw``.

    ``envelope_to`` defaults to the To and Cc addresses, ``envelope_from`` to the
    Return-Path (else From) address; ``spam_check`` adds ``spam_score`` and
    ``spam_report`` as the "Spam Check" setting does.
    """
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    to = _header(message, "To")
    cc = _header(message, "Cc")
    sender = _header(message, "From")
    subject = _header(message, "Subject")
    rcpt = list(envelope_to) if envelope_to is not None else _addresses(to, cc)
    mail_from = envelope_from or parseaddr(_header(message, "Return-Path") or sender)[1]
    envelope = {"to": rcpt, "from": mail_from}
    domain = mail_from.rpartition("@")[2] or "sandbox.invalid"
    charsets: dict[str, str] = {"to": "UTF-8"}
    if cc:
        charsets["cc"] = "UTF-8"

    fields: list[tuple[str, bytes]] = []
    files: list[tuple[str, str, str, bytes]] = []
    add = fields.append
    if mode == "raw":
        charsets.update({"subject": "UTF-8", "from": "UTF-8"})
        add(("dkim", f"{{@{domain} : pass}}".encode()))
        add(("email", raw))
        add(("to", to.encode()))
        if cc:
            add(("cc", cc.encode()))
        add(("from", sender.encode()))
        add(("sender_ip", sender_ip.encode()))
        if spam_check:
            add(("spam_report", _SPAM_REPORT.encode()))
        add(("envelope", _json(envelope)))
        add(("subject", subject.encode()))
        if spam_check:
            add(("spam_score", b"0.1"))
        add(("charsets", _json(charsets)))
        add(("SPF", b"pass"))
    elif mode == "parsed":
        text, html, attachments = _parts(message)
        info: dict[str, dict[str, str]] = {}
        content_ids: dict[str, str] = {}
        for n, (filename, content_type, content_id, data) in enumerate(attachments, 1):
            name = f"attachment{n}"
            info[name] = {"filename": filename, "name": filename, "type": content_type}
            if content_id:
                info[name]["content-id"] = content_id
                content_ids[content_id] = name
            files.append((name, filename, content_type, data))
        if html is not None:
            charsets["html"] = html[1]
        charsets.update({"subject": "UTF-8", "from": "UTF-8"})
        if text is not None:
            charsets["text"] = text[1]
        add(("headers", _header_block(raw)))
        add(("dkim", f"{{@{domain} : pass}}".encode()))
        if content_ids:
            add(("content-ids", _json(content_ids)))
        add(("to", to.encode()))
        if cc:
            add(("cc", cc.encode()))
        if html is not None:
            add(("html", html[0]))
        add(("from", sender.encode()))
        if text is not None:
            add(("text", text[0]))
        add(("sender_ip", sender_ip.encode()))
        if spam_check:
            add(("spam_report", _SPAM_REPORT.encode()))
        add(("envelope", _json(envelope)))
        add(("attachments", str(len(files)).encode()))
        add(("subject", subject.encode()))
        if spam_check:
            add(("spam_score", b"0.1"))
        if info:
            add(("attachment-info", _json(info)))
        add(("charsets", _json(charsets)))
        add(("SPF", b"pass"))
    else:
        raise ValueError(f"mode must be 'parsed' or 'raw', not {mode!r}")
    body, content_type = _encode(fields, files, boundary)
    return InboundPost(body, content_type, tuple(fields), tuple(files))


def post_inbound(
    url: str,
    raw: bytes,
    *,
    token: str,
    mode: Literal["parsed", "raw"] = "parsed",
    signing_key: ec.EllipticCurvePrivateKey | _Signer | None = None,
    client: httpx.Client | None = None,
    clock: Clock | None = None,
    timestamp: int | None = None,
    **form: object,
) -> httpx.Response:
    """POST ``raw`` to the Inbound Parse route at ``url`` as SendGrid would.

    ``url`` is the route's URL without the token, or just the server's base URL (the
    route's path is added); ``token`` goes in the ``token`` query parameter. A
    ``signing_key`` signs the body at ``timestamp`` (default: ``clock``'s now). Other
    keywords go to :func:`build_form`. Uses ``client`` when given (and leaves it open).
    """
    post = build_form(raw, mode=mode, **form)  # type: ignore[arg-type]
    if urlsplit(url).path in ("", "/"):
        url = url.rstrip("/") + INBOUND_PATH
    headers = {"Content-Type": post.content_type}
    if signing_key is not None:
        stamp = (
            timestamp if timestamp is not None else int((clock or SystemClock()).now().timestamp())
        )
        headers.update(sign_body(signing_key, post.body, stamp))
    own = client is None
    http = client or httpx.Client(timeout=30)
    try:
        return http.post(url, params={"token": token}, content=post.body, headers=headers)
    finally:
        if own:
            http.close()


# -- helpers -----------------------------------------------------------------------------


def _header(message: EmailMessage, name: str) -> str:
    value = message.get(name)
    return str(value) if value is not None else ""


def _addresses(*values: str) -> list[str]:
    return [address for _, address in getaddresses([v for v in values if v]) if address]


def _header_block(raw: bytes) -> bytes:
    """The raw header block, up to the blank line, ending with its line break."""
    ends = [i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0]
    if not ends:
        return raw
    end = min(ends)
    return raw[: end + (2 if raw.startswith(b"\r\n", end) else 1)]


def _parts(
    message: EmailMessage,
) -> tuple[tuple[bytes, str] | None, tuple[bytes, str] | None, list[tuple[str, str, str, bytes]]]:
    """The first text/plain and text/html bodies (bytes in their charset, the charset) and
    every other leaf part as ``(filename, type, content-id, bytes)``."""
    text = html = None
    attachments = []
    for part in message.walk():
        if part.is_multipart():
            continue
        content_type = part.get_content_type()
        payload = part.get_payload(decode=True) or b""
        is_attachment = part.get_content_disposition() == "attachment" or part.get_filename()
        charset = part.get_param("charset")
        charset = str(charset) if isinstance(charset, str) else "us-ascii"
        if not is_attachment and content_type == "text/plain" and text is None:
            text = (payload, charset)
        elif not is_attachment and content_type == "text/html" and html is None:
            html = (payload, charset)
        else:
            cid = (part.get("Content-ID") or "").strip().strip("<>")
            filename = part.get_filename() or f"part{len(attachments) + 1}"
            attachments.append((filename, content_type, cid, payload))
    return text, html, attachments


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _encode(
    fields: Sequence[tuple[str, bytes]],
    files: Sequence[tuple[str, str, str, bytes]],
    boundary: str | None,
) -> tuple[bytes, str]:
    contents = [value for _, value in fields] + [f[3] for f in files]
    boundary = boundary or SENDGRID_BOUNDARY
    while any(b"--" + boundary.encode() in value for value in contents):
        boundary = "xYzZY" + secrets.token_hex(12)
    mark = b"--" + boundary.encode()
    out: list[bytes] = []
    for name, value in fields:
        out += [mark, f'\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()]
        out += [value, b"\r\n"]
    for name, filename, content_type, data in files:
        quoted = (
            filename.replace("\\", "\\\\").replace('"', "%22").replace("\r", "").replace("\n", "")
        )
        out += [
            mark,
            f'\r\nContent-Disposition: form-data; name="{name}"; filename="{quoted}"\r\n'.encode(),
            f"Content-Type: {content_type}\r\n\r\n".encode(),
            data,
            b"\r\n",
        ]
    out += [mark, b"--\r\n"]
    return b"".join(out), f"multipart/form-data; boundary={boundary}"
