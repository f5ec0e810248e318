"""A faithful fake of Mailchimp Transactional (Mandrill) ``/messages/*`` for the sandbox.

Documented shapes: every call is ``POST <base>/messages/<call>.json`` with a JSON body
holding the API ``key``; errors are ``{"status": "error", "code": N, "name": …,
"message": …}`` (HTTP 500, as Mandrill answers them: ``Invalid_Key``, ``ValidationError``,
``Unknown_Message``). ``/messages/send`` answers one entry per recipient, ``{email,
status, reject_reason, _id}`` with ``sent``, ``scheduled`` (a future ``send_at``),
``rejected`` (an address on the rejection list, with its reason) or ``invalid``.
``cancel-scheduled``, ``list-scheduled``, ``info`` and ``search`` (``u_touch_id:N``
metadata queries, or an address) work on what was sent. Faults (429 with ``Retry-After``,
5xx, timeouts) come from :class:`outreach.sandbox.base.Faults`.

:meth:`FakeMailchimp.post_events` signs and posts a webhook batch to a URL as Mandrill
does (``mandrill_events`` form field, ``X-Mandrill-Signature``), built from the messages
it holds (:meth:`FakeMailchimp.event`)::

    fake = FakeMailchimp(api_key="md-sandbox", webhook_key="whk")
    with SandboxServer(fake) as server:
        channel = MailchimpEmail("md-sandbox", FROM, base_url=server.url + "/api/1.3")
        ...
    fake.post_events(public_url + "/webhooks/mailchimp", [fake.event("hard_bounce", id)])
"""

from __future__ import annotations

import itertools
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from werkzeug.wrappers import Request, Response

from outreach.clock import Clock
from outreach.inbound.mandrill import EVENTS_FIELD, SIGNATURE_HEADER, sign
from outreach.sandbox.base import FakeProvider, RateWindow, Route, json_response

__all__ = ["SANDBOX_API_KEY", "SANDBOX_WEBHOOK_KEY", "FakeMailchimp", "SentMessage"]

SANDBOX_API_KEY = "md-sandbox-key"
SANDBOX_WEBHOOK_KEY = "sandbox-mandrill-webhook-key"
_BASE = "/api/1.3/messages"
_EMAIL = re.compile(r"^[^\s@]+@[^\s@]+\.[^\s@]+$")
_TIME = "%Y-%m-%d %H:%M:%S"


@dataclass
class SentMessage:
    """One message the fake accepted (or refused) for one recipient."""

    id: str
    email: str
    status: str
    created_at: datetime
    subject: str
    sender: str
    text: str
    headers: dict[str, str]
    metadata: dict[str, Any]
    tags: list[str]
    send_at: datetime | None = None
    reject_reason: str | None = None
    state: str = "sent"
    events: list[str] = field(default_factory=list)

    def info(self) -> dict[str, Any]:
        """The ``/messages/info`` shape."""
        return {
            "_id": self.id,
            "ts": int(self.created_at.timestamp()),
            "email": self.email,
            "sender": self.sender,
            "subject": self.subject,
            "state": self.state,
            "tags": list(self.tags),
            "metadata": dict(self.metadata),
            "opens": 0,
            "clicks": 0,
        }


class FakeMailchimp(FakeProvider):
    """The Mandrill ``/messages`` API in memory.

    ``rejected`` maps addresses on the rejection list to their ``reject_reason``
    (``hard-bounce``, ``spam``, ``unsub`` …); ``webhook_key`` signs :meth:`post_events`.
    """

    name: ClassVar[str] = "mailchimp"
    routes: ClassVar[tuple[Route, ...]] = (
        Route("POST", f"{_BASE}/send.json", "send"),
        Route("POST", f"{_BASE}/cancel-scheduled.json", "cancel_scheduled"),
        Route("POST", f"{_BASE}/list-scheduled.json", "list_scheduled"),
        Route("POST", f"{_BASE}/info.json", "info"),
        Route("POST", f"{_BASE}/search.json", "search"),
    )

    def __init__(
        self,
        *,
        api_key: str = SANDBOX_API_KEY,
        webhook_key: str = SANDBOX_WEBHOOK_KEY,
        clock: Clock | None = None,
        rate: RateWindow | None = None,
        rejected: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(clock=clock, rate=rate)
        self.api_key = api_key
        self.webhook_key = webhook_key
        self.rejected = {k.lower(): v for k, v in (rejected or {}).items()}
        self.messages: dict[str, SentMessage] = {}
        self._ids = itertools.count(1)

    # -- provider shapes ---------------------------------------------------------------

    @staticmethod
    def error(name: str, message: str, code: int = -1, status: int = 500) -> Response:
        """Mandrill's error body."""
        body = {"status": "error", "code": code, "name": name, "message": message}
        return json_response(body, status)

    def authorize(self, request: Request) -> Response | None:
        """The key travels in the JSON body."""
        body = _json(request)
        if not isinstance(body, dict):
            return self.error("ValidationError", "You must specify a key value")
        if body.get("key") != self.api_key:
            return self.error("Invalid_Key", "Invalid API key", code=-1)
        return None

    def too_many_requests(self, retry_after: float | None) -> Response:
        """429 with ``Retry-After``."""
        headers = {} if retry_after is None else {"Retry-After": str(max(1, round(retry_after)))}
        body = {"status": "error", "code": -1, "name": "Too_Many_Requests", "message": "slow down"}
        return json_response(body, 429, headers)

    # -- endpoints ---------------------------------------------------------------------

    def send(self, request: Request) -> Response:
        """``/messages/send``: one entry per recipient."""
        body = _json(request)
        message = body.get("message")
        if not isinstance(message, dict) or not isinstance(message.get("to"), list):
            return self.error("ValidationError", "Validation error: message.to is required")
        now = self.clock.now()
        send_at: datetime | None = None
        if body.get("send_at") is not None:
            try:
                send_at = datetime.strptime(str(body["send_at"]), _TIME).replace(tzinfo=UTC)
            except ValueError:
                return self.error("ValidationError", "send_at must be YYYY-MM-DD HH:MM:SS")
            if send_at <= now:
                send_at = None  # a time in the past sends at once
        answers: list[dict[str, Any]] = []
        with self.lock:
            for recipient in message["to"]:
                email = str(recipient.get("email", "")) if isinstance(recipient, dict) else ""
                ident = f"{next(self._ids):032x}"
                status, reason = "sent", None
                if not _EMAIL.match(email):
                    status = "invalid"
                elif email.lower() in self.rejected:
                    status, reason = "rejected", self.rejected[email.lower()]
                elif send_at is not None:
                    status = "scheduled"
                sent = SentMessage(
                    id=ident,
                    email=email,
                    status=status,
                    created_at=now,
                    subject=str(message.get("subject") or ""),
                    sender=str(message.get("from_email") or ""),
                    text=str(message.get("text") or ""),
                    headers=dict(message.get("headers") or {}),
                    metadata=dict(message.get("metadata") or {}),
                    tags=list(message.get("tags") or []),
                    send_at=send_at,
                    reject_reason=reason,
                    state={"invalid": "invalid", "rejected": "rejected"}.get(status, status),
                )
                self.messages[ident] = sent
                answers.append(
                    {"email": email, "status": status, "reject_reason": reason, "_id": ident}
                )
        return json_response(answers)

    def cancel_scheduled(self, request: Request) -> Response:
        """``/messages/cancel-scheduled``: drop a scheduled message; unknown otherwise."""
        ident = str(_json(request).get("id") or "")
        with self.lock:
            sent = self.messages.get(ident)
            if sent is None or sent.state != "scheduled":
                return self.error("Unknown_Message", f"No message exists with the id '{ident}'", 12)
            del self.messages[ident]
        return json_response(self._scheduled_shape(sent))

    def list_scheduled(self, request: Request) -> Response:
        """``/messages/list-scheduled``, optionally for one recipient (``to``)."""
        to = str(_json(request).get("to") or "").lower()
        with self.lock:
            items = [
                self._scheduled_shape(m)
                for m in self.messages.values()
                if m.state == "scheduled" and (not to or m.email.lower() == to)
            ]
        return json_response(items)

    def info(self, request: Request) -> Response:
        """``/messages/info``."""
        ident = str(_json(request).get("id") or "")
        with self.lock:
            sent = self.messages.get(ident)
            if sent is None:
                return self.error("Unknown_Message", f"No message exists with the id '{ident}'", 12)
            return json_response(sent.info())

    def search(self, request: Request) -> Response:
        """``/messages/search``: ``email:"<address>"``, ``u_<field>:<value>`` (indexed
        metadata) or ``*``; sent mail only, newest first, at most ``limit``."""
        body = _json(request)
        query = str(body.get("query") or "*").strip()
        limit = body.get("limit") if isinstance(body.get("limit"), int) else 100
        with self.lock:
            found = [m.info() for m in self.messages.values() if m.state != "scheduled"]
        if query.startswith("u_") and ":" in query:
            name, value = query[2:].split(":", 1)
            found = [m for m in found if str(m["metadata"].get(name)) == value.strip('"')]
        elif query.startswith("email:"):
            address = query.removeprefix("email:").strip('"').lower()
            found = [m for m in found if m["email"].lower() == address]
        elif query != "*":
            return self.error("ValidationError", f"the sandbox cannot search {query!r}")
        found.sort(key=lambda m: m["ts"], reverse=True)
        return json_response(found[: max(1, min(limit, 1000))])

    @staticmethod
    def _scheduled_shape(sent: SentMessage) -> dict[str, Any]:
        return {
            "_id": sent.id,
            "created_at": sent.created_at.strftime(_TIME),
            "send_at": sent.send_at.strftime(_TIME) if sent.send_at else None,
            "from_email": sent.sender,
            "to": sent.email,
            "subject": sent.subject,
        }

    # -- time and webhooks -------------------------------------------------------------

    def deliver_due(self) -> int:
        """Scheduled messages whose time has come are sent; how many."""
        now = self.clock.now()
        count = 0
        with self.lock:
            for sent in self.messages.values():
                if sent.state == "scheduled" and sent.send_at is not None and sent.send_at <= now:
                    sent.state = "sent"
                    count += 1
        return count

    def sent_to(self, email: str) -> list[SentMessage]:
        """Messages to ``email`` (any state)."""
        with self.lock:
            return [m for m in self.messages.values() if m.email.lower() == email.lower()]

    def event(self, kind: str, message_id: str, *, ts: int | None = None) -> dict[str, Any]:
        """A documented webhook event about one held message (``hard_bounce``, ``spam``,
        ``unsub``, ``open``, ``click``, ``send``, ``deferral``, ``soft_bounce``, ``reject``)."""
        with self.lock:
            sent = self.messages[message_id]
            sent.events.append(kind)
        msg = sent.info()
        if kind in ("hard_bounce", "soft_bounce"):
            msg.update(state="bounced" if kind == "hard_bounce" else "soft-bounced")
            msg.update(bounce_description="bad_mailbox", diag="smtp;550 5.1.1 unknown user")
        at = ts if ts is not None else int(self.clock.now().timestamp())
        return {"event": kind, "_id": message_id, "ts": at, "msg": msg}

    @staticmethod
    def inbound_event(raw: bytes, to: str, *, ts: int) -> dict[str, Any]:
        """An inbound route event carrying a whole message (``msg.raw_msg``)."""
        return {
            "event": "inbound",
            "ts": ts,
            "msg": {"raw_msg": raw.decode("utf-8", "replace"), "email": to, "tags": []},
        }

    def signed_form(self, url: str, events: Iterable[dict[str, Any]]) -> tuple[bytes, dict]:
        """The urlencoded body and headers Mandrill would post to ``url``."""
        params = [(EVENTS_FIELD, json.dumps(list(events)))]
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            SIGNATURE_HEADER: sign(self.webhook_key, url, params),
            "User-Agent": "Mandrill-Webhook/1.0",
        }
        return urllib.parse.urlencode(params).encode("ascii"), headers

    def post_events(self, url: str, events: Iterable[dict[str, Any]], timeout: float = 10.0) -> int:
        """Sign and POST ``events`` to ``url``; the HTTP status of the answer."""
        body, headers = self.signed_form(url, events)
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return answer.status
        except urllib.error.HTTPError as exc:
            return exc.code


def _json(request: Request) -> Any:
    try:
        return json.loads(request.get_data(cache=True) or b"null")
    except (ValueError, UnicodeDecodeError):
        return None
