"""What the sandbox's simulated candidates send back, as real MIME messages.

Each function takes one message the SendGrid fake accepted (its stored personalization:
``to``, ``subject``, ``headers`` with the engine's Message-ID, ``reply_to``, ``from``) and
returns the bytes a mail client or mail server would send to the reply address: a human
reply quoting the original (Gmail style), an out-of-office notice with a return date
(Outlook style, RFC 3834 headers), an unsubscribe by reply, or a delivery status
notification from the recipient's mail server (RFC 3464). The demo posts them through
Inbound Parse, exactly as SendGrid would.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

__all__ = ["bounce_for", "human_reply", "out_of_office", "unsubscribe_reply"]

_REPLIES = (
    "Thanks for getting back to me! Tuesday afternoon works well for a call.",
    "Hi, yes I am still interested. Could you send me more details about the team?",
    "Thank you. I have accepted another offer, so please withdraw my application.",
    "Sounds good, I will send my portfolio by Friday.",
)


def _reply_address(message: dict[str, Any]) -> str:
    reply_to = message.get("reply_to") or {}
    if isinstance(reply_to, dict) and reply_to.get("email"):
        return str(reply_to["email"])
    return str(message["from"]["email"])


def _original_id(message: dict[str, Any]) -> str | None:
    for name, value in (message.get("headers") or {}).items():
        if name.lower() == "message-id":
            return str(value)
    return None


def _base(message: dict[str, Any], at: datetime, subject_prefix: str) -> EmailMessage:
    candidate = message["to"][0]
    mail = EmailMessage()
    mail["From"] = candidate
    mail["To"] = _reply_address(message)
    mail["Subject"] = f"{subject_prefix}{message.get('subject') or ''}"
    mail["Date"] = format_datetime(at)
    mail["Message-ID"] = make_msgid(domain=candidate.rsplit("@", 1)[-1])
    original = _original_id(message)
    if original:
        mail["In-Reply-To"] = original
        mail["References"] = original
    return mail


def _quoted(message: dict[str, Any], at: datetime) -> str:
    sender = message["from"].get("name") or message["from"]["email"]
    text = ""
    for part in message.get("content") or []:
        if part.get("type") == "text/plain":
            text = part.get("value") or ""
    quoted = "\n".join(f"> {line}" for line in (text or "(original message)").splitlines())
    when = (at - timedelta(hours=5)).strftime("%a, %b %d, %Y at %I:%M %p")
    return f"\n\nOn {when} {sender} <{message['from']['email']}> wrote:\n{quoted}\n"


def human_reply(message: dict[str, Any], at: datetime, choice: int = 0) -> bytes:
    """A top-posted Gmail-style reply with the original quoted below."""
    mail = _base(message, at, "Re: ")
    mail.set_content(_REPLIES[choice % len(_REPLIES)] + _quoted(message, at))
    return bytes(mail)


def out_of_office(message: dict[str, Any], at: datetime, back: datetime) -> bytes:
    """An Exchange automatic reply naming the return date."""
    mail = _base(message, at, "Automatic reply: ")
    mail["Auto-Submitted"] = "auto-replied"
    mail["X-Auto-Response-Suppress"] = "All"
    mail.set_content(
        "Thank you for your message. I am out of the office with limited access to email "
        f"and will be back on {back:%A, %B} {back.day}, {back:%Y}.\n\n"
        "For urgent matters please contact my colleague."
    )
    return bytes(mail)


def unsubscribe_reply(message: dict[str, Any], at: datetime) -> bytes:
    """A reply that only asks to be taken off the list."""
    mail = _base(message, at, "Re: ")
    mail.set_content("Please remove me from your list." + _quoted(message, at))
    return bytes(mail)


def bounce_for(message: dict[str, Any], at: datetime, status: str = "5.1.1") -> bytes:
    """A Postfix delivery status notification (RFC 3464) for ``message``'s recipient:
    ``5.x.x`` a hard bounce (failed), ``4.x.x`` a delay notice (delayed)."""
    recipient = message["to"][0]
    domain = recipient.rsplit("@", 1)[-1]
    permanent = status.startswith("5")
    boundary = make_msgid(domain="sandbox").strip("<>").replace("@", ".")
    original = _original_id(message)
    diagnostic = (
        "550 5.1.1 <{0}>: Recipient address rejected: User unknown"
        if permanent
        else ("452 4.2.2 <{0}>: Mailbox full")
    )
    diagnostic = diagnostic.format(recipient)
    lines = [
        f"From: MAILER-DAEMON@mx.{domain} (Mail Delivery System)",
        f"To: {_reply_address(message)}",
        "Subject: "
        + (
            "Undelivered Mail Returned to Sender"
            if permanent
            else "Delayed Mail (still being retried)"
        ),
        f"Date: {format_datetime(at)}",
        f"Message-ID: {make_msgid(domain=f'mx.{domain}')}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Description: Notification",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        f"This is the mail system at host mx.{domain}.",
        "",
        "I'm sorry to have to inform you that your message could not"
        if permanent
        else "Your message could not be delivered for 4 hours; it will be retried",
        "be delivered to one or more recipients." if permanent else "until it is 5 days old.",
        "",
        f"<{recipient}>: host mx.{domain} said: {diagnostic}",
        "",
        f"--{boundary}",
        "Content-Description: Delivery report",
        "Content-Type: message/delivery-status",
        "",
        f"Reporting-MTA: dns; mx.{domain}",
        f"Arrival-Date: {format_datetime(at)}",
        "",
        f"Final-Recipient: rfc822; {recipient}",
        f"Original-Recipient: rfc822;{recipient}",
        f"Action: {'failed' if permanent else 'delayed'}",
        f"Status: {status}",
        f"Diagnostic-Code: smtp; {diagnostic}",
        "",
        f"--{boundary}",
        "Content-Description: Undelivered Message Headers",
        "Content-Type: text/rfc822-headers",
        "",
        f"From: {message['from']['email']}",
        f"To: {recipient}",
        f"Subject: {message.get('subject') or ''}",
        *([f"Message-ID: {original}"] if original else []),
        "",
        f"--{boundary}--",
        "",
    ]
    return "\r\n".join(lines).encode()
