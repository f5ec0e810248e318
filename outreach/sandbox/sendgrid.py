"""A SendGrid v3 Mail Send sandbox: validation, message ids, Event Webhook events.

:class:`FakeSendGrid` answers ``POST /v3/mail/send`` as the live API does: a Bearer API
key, the documented request checks (each failure a ``400`` whose ``errors`` entries name
the ``field``, e.g. ``personalizations.0.to.0.email``), ``403`` for an unverified sender,
``413`` above 20 MB, and on success ``202`` with an empty body and an ``X-Message-Id``
header. Every accepted message is recorded per personalization and turned into Event
Webhook events (``processed`` then ``delivered``, ``bounce`` or ``dropped``) for the test
to feed back into the engine. Delivered mail is then opened and clicked the way senders
see it since Apple Mail Privacy Protection: drawn from ``seed``, about
:attr:`FakeSendGrid.OPEN_SHARE` of it gets an ``open``, a third of those within seconds
of delivery with ``sg_machine_open: true`` (the proxy fetching the pixel), the rest
minutes to hours later; :attr:`FakeSendGrid.CLICK_SHARE` gets a ``click`` after a human
open. Opens and clicks are released only once the clock reaches their timestamp::

    fake = FakeSendGrid(bouncing={"gone@example.com"})
    with SandboxServer(fake) as server:
        client = sendgrid.SendGridAPIClient("SG.sandbox-key", host=server.url)
        response = client.send(mail)           # 202, response.headers["X-Message-Id"]
    events = fake.drain_events()               # as the Event Webhook would post them
    headers = fake.sign_events(json.dumps(events).encode(), timestamp)

Scheduled sends can be grouped under a batch id and cancelled or paused (the Cancel
Scheduled Sends API: ``POST /v3/mail/batch``, ``GET /v3/mail/batch/{id}``,
``POST``/``GET /v3/user/scheduled_sends``, ``GET``/``PATCH``/``DELETE
/v3/user/scheduled_sends/{id}``). A message with a ``batch_id`` is held until its ``send_at``
passes on the injected clock and is then delivered (its events produced), discarded
(``cancel``) or held further (``pause``, discarded as expired 72 hours past ``send_at``)::

    batch_id = client.client.mail.batch.post().to_dict["batch_id"]
    client.send({..., "batch_id": batch_id, "send_at": later})
    client.client.user.scheduled_sends.post(request_body={"batch_id": batch_id,
                                                          "status": "cancel"})
    clock.set(later_datetime)
    fake.messages_in("cancelled")                # the message, never delivered

Dynamic templates a test or the demo registers with :meth:`FakeSendGrid.add_template` are
read back as the Transactional Templates API answers them (``GET /v3/templates/{id}``: the
template with its ``versions``, one of them ``active``; 404 ``resource not found`` for an
id the account does not hold)::

    fake.add_template("d-…", subject="Hi {{first_name}}", html_content="<p>…</p>")
    client.client.templates._("d-…").get()

Limits are class attributes; errors follow the published error table (twilio.com/docs/
sendgrid/api-reference/mail-send/errors) and error bodies seen from the live API.
"""

from __future__ import annotations

import base64
import copy
import gzip
import heapq
import itertools
import json
import math
import random
import re
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from werkzeug.wrappers import Request, Response

from outreach.clock import Clock
from outreach.sandbox.base import FakeProvider, RateWindow, Route, json_response

__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "FakeSendGrid"]

#: signed Event Webhook headers (sendgrid.helpers.eventwebhook.EventWebhookHeader)
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

_HELP = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html#message."
_SENDER_IDENTITY = (
    "The from address does not match a verified Sender Identity. Mail cannot be sent until "
    "this error is resolved. Visit https://sendgrid.com/docs/for-developers/sending-email/"
    "sender-identity/ to see the Sender Identity requirements"
)
_EMAIL = re.compile(
    r"^[^@\s\"(),:;<>\[\]\\]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)
_RESERVED_HEADERS = frozenset(
    h.lower()
    for h in (
        "x-sg-id",
        "x-sg-eid",
        "received",
        "dkim-signature",
        "Content-Type",
        "Content-Transfer-Encoding",
        "To",
        "From",
        "Subject",
        "Reply-To",
        "CC",
        "BCC",
    )
)


def _error(message: str, field: str | None, help_: str | None = None) -> dict[str, Any]:
    return {"message": message, "field": field, "help": help_}


def _errors(errors: list[dict[str, Any]], status: int) -> Response:
    return json_response({"errors": errors}, status)


def _anchor(field: str) -> str:
    # personalizations.0.to.0.email -> personalizations.to (the error table's anchors)
    names = [part for part in field.split(".") if not part.isdigit()]
    return ".".join(names[:2])


def _new_id() -> str:
    """A 22-character URL-safe id, the shape of a live ``X-Message-Id``."""
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Checker:
    """Collects every violation in one request, as the live API lists them together."""

    def __init__(self) -> None:
        self.errors: list[dict[str, Any]] = []

    def fail(self, field: str, message: str) -> None:
        self.errors.append(_error(message, field, _HELP + _anchor(field)))

    def address(self, value: Any, field: str, missing: str) -> str | None:
        """Check an ``{"email", "name"}`` object; the lower-cased address when valid."""
        if not isinstance(value, dict):
            self.fail(field, missing)
            return None
        email = value.get("email")
        if email is None or email == "":
            self.fail(f"{field}.email", missing)
            return None
        if not isinstance(email, str):
            self.fail(
                f"{field}.email", f"Invalid type. Expected: string, given: {_json_type(email)}."
            )
            return None
        if len(email) > 320 or not _EMAIL.match(email):
            self.fail(f"{field}.email", "Does not contain a valid address.")
            return None
        name = value.get("name")
        if name is not None and not isinstance(name, str):
            self.fail(f"{field}.name", "The name must be a string.")
        return email.lower()


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null" if value is None else "string"


# Cancel Scheduled Sends error bodies. The messages are the ones SendGrid's v3 API blueprint
# lists (sendgrid/docs source/API_Reference/Web_API_v3/cancel_schedule_send.apiblueprint:
# "max limit reached", "invalid batch id", "a status for this batch id exists, try PATCH to
# update the status", "batch id not found"); the live API answers ``"field": null`` where
# no field applies (sendgrid/docs#1285, sendgrid/sendgrid-nodejs#1245).
_INVALID_BATCH = "invalid batch id"
_STATUS_EXISTS = "a status for this batch id exists, try PATCH to update the status"
_MAX_LIMIT = "max limit reached"
_BATCH_NOT_FOUND = "batch id not found"
#: not documented: the fake's own wording for a status other than pause or cancel
_BAD_STATUS = "status must be either pause or cancel"
_STATUSES = ("pause", "cancel")


def _batch_error(message: str, field: str | None, status: int) -> Response:
    return _errors([{"field": field, "message": message}], status)


#: the live API's 404 body for a template id the account does not hold (sendgrid/docs#3626)
_RESOURCE_NOT_FOUND = "resource not found"
_TAG = re.compile(r"<[^>]*>")


@dataclass
class _Held:
    """A message of a batch, waiting for its ``send_at`` (and its batch's status)."""

    message: dict[str, Any]
    index: int
    smtp_id: str
    serials: list[int]
    #: it reached ``send_at`` while paused: from then on only the status decides
    parked: bool = False


class FakeSendGrid(FakeProvider):
    """An in-memory SendGrid account answering the v3 Mail Send endpoint.

    ``bouncing`` addresses bounce (and are then suppressed: later sends to them are
    ``dropped``); ``verified_senders``, when given, are the only ``from`` addresses
    allowed. ``rate`` (off by default) meters requests with SendGrid's ``X-RateLimit-*``
    headers. Read back :attr:`mail_requests`, :attr:`messages` (one per personalization;
    ``state`` says what became of it: ``processed``, ``scheduled`` (held for its batch),
    ``cancelled`` or ``expired``), :meth:`messages_in`, :attr:`batches`,
    :attr:`scheduled_sends` and :meth:`drain_events`.
    """

    name: ClassVar[str] = "sendgrid"
    routes: ClassVar[tuple[Route, ...]] = (
        Route("POST", "/v3/mail/send", "mail_send"),
        Route("POST", "/v3/mail/batch", "create_batch"),
        Route("GET", "/v3/mail/batch/<batch_id>", "validate_batch"),
        Route("POST", "/v3/user/scheduled_sends", "create_scheduled_send"),
        Route("GET", "/v3/user/scheduled_sends", "list_scheduled_sends"),
        Route("GET", "/v3/user/scheduled_sends/<batch_id>", "get_scheduled_send"),
        Route("PATCH", "/v3/user/scheduled_sends/<batch_id>", "update_scheduled_send"),
        Route("DELETE", "/v3/user/scheduled_sends/<batch_id>", "delete_scheduled_send"),
        Route("GET", "/v3/messages", "filter_messages"),
        Route("GET", "/v3/templates/<template_id>", "get_template"),
    )

    MAX_PERSONALIZATIONS: ClassVar[int] = 1000
    MAX_RECIPIENTS: ClassVar[int] = 1000
    MAX_CATEGORIES: ClassVar[int] = 10
    MAX_CATEGORY_LENGTH: ClassVar[int] = 255
    #: the older published limit; the current error table says 50,000 (the fake is stricter)
    MAX_CUSTOM_ARGS_BYTES: ClassVar[int] = 10_000
    MAX_SEND_AHEAD: ClassVar[timedelta] = timedelta(hours=72)
    MAX_BODY_BYTES: ClassVar[int] = 20 * 1024 * 1024
    MAX_GROUPS_TO_DISPLAY: ClassVar[int] = 25
    # Cancel Scheduled Sends (twilio.com/docs/sendgrid/api-reference/cancel-scheduled-sends):
    #: batches that may be paused or cancelled at one time ("max limit reached" past it)
    MAX_PAUSED_OR_CANCELLED: ClassVar[int] = 10
    #: a pause or cancel set later than this before ``send_at`` is "not guaranteed"
    #: (sendgrid/docs cancel_schedule_send.apiblueprint); the fake ignores it, the worst case
    CANCEL_CUTOFF: ClassVar[timedelta] = timedelta(minutes=10)
    #: paused messages this long past their ``send_at`` are discarded as Expired
    PAUSE_EXPIRY: ClassVar[timedelta] = timedelta(hours=72)
    # Engagement, as senders report it since Apple Mail Privacy Protection (2021): opens
    # include the proxy's prefetches, which SendGrid marks ``sg_machine_open``.
    #: share of delivered mail that gets an open event (machine or human)
    OPEN_SHARE: ClassVar[float] = 0.45
    #: share of those opens that are machine opens (Apple's proxy, seconds after delivery)
    MACHINE_OPEN_SHARE: ClassVar[float] = 1 / 3
    #: share of delivered mail that gets a click (always after a human open)
    CLICK_SHARE: ClassVar[float] = 0.03
    #: a human open comes this long after delivery at the median (log-normal spread)
    HUMAN_OPEN_MEDIAN: ClassVar[timedelta] = timedelta(minutes=90)
    #: the latest a human open comes after delivery
    HUMAN_OPEN_LATEST: ClassVar[timedelta] = timedelta(days=3)

    def __init__(
        self,
        *,
        api_key: str = "SG.sandbox-key",
        clock: Clock | None = None,
        rate: RateWindow | None = None,
        bouncing: Iterable[str] = (),
        verified_senders: Iterable[str] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(clock=clock, rate=rate)
        self.api_key = api_key
        #: decides which delivered mail is opened or clicked, and when (in delivery order)
        self.seed = seed
        self.bouncing = {a.lower() for a in bouncing}
        self.verified_senders = (
            None if verified_senders is None else {a.lower() for a in verified_senders}
        )
        #: whether the account has the Email Activity add-on (``GET /v3/messages``); without
        #: it SendGrid answers 403
        self.email_activity = True
        #: bounced addresses: SendGrid drops later mail to them ("Bounced Address")
        self.suppressed: set[str] = set()
        self.max_body_bytes = self.MAX_BODY_BYTES
        self.mail_requests: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        #: batch ids created with ``POST /v3/mail/batch``, with their creation (Unix) time
        self.batches: dict[str, int] = {}
        #: batch id -> {"status": "pause" | "cancel", "since": Unix time it was set}
        self.scheduled_sends: dict[str, dict[str, Any]] = {}
        self._held: list[_Held] = []
        #: opens and clicks not yet due, a heap of (Unix time, order, event) that
        #: ``deliver_due`` releases from as the clock passes
        self._engagement: list[tuple[int, int, dict[str, Any]]] = []
        self._order = itertools.count()
        self._delivered = 0
        #: dynamic templates by id, as ``GET /v3/templates/{id}`` answers them
        self.templates: dict[str, dict[str, Any]] = {}
        self._webhook_key = ec.generate_private_key(ec.SECP256R1())

    def add_template(
        self,
        template_id: str,
        *,
        subject: str,
        html_content: str,
        plain_content: str | None = None,
        name: str | None = None,
        version_name: str | None = None,
    ) -> dict[str, Any]:
        """Add a version to dynamic template ``template_id`` (created when new) and make it
        the active one, as activating a version in the console does. Without
        ``plain_content`` the text part is generated from the HTML
        (``generate_plain_content``). Returns the new version."""
        stamp = self.clock.now().astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        with self.lock:
            template = self.templates.setdefault(
                template_id,
                {
                    "id": template_id,
                    "name": name or template_id,
                    "generation": "dynamic",
                    "updated_at": stamp,
                    "versions": [],
                },
            )
            for version in template["versions"]:
                version["active"] = 0
            generate = plain_content is None
            version = {
                "id": str(uuid.uuid4()),
                "user_id": 1,
                "template_id": template_id,
                "active": 1,
                "name": version_name or f"version {len(template['versions']) + 1}",
                "html_content": html_content,
                "plain_content": _TAG.sub("", html_content).strip() if generate else plain_content,
                "generate_plain_content": generate,
                "subject": subject,
                "updated_at": stamp,
                "editor": "code",
                "thumbnail_url": "",
            }
            template["versions"].append(version)
            template["updated_at"] = stamp
            return copy.deepcopy(version)

    # -- admin (Python, not HTTP) ------------------------------------------------------

    def drain_events(self) -> list[dict[str, Any]]:
        """Event Webhook events produced so far, oldest first; the list is then emptied.

        Batched messages whose ``send_at`` has passed on the clock are settled first.
        """
        with self.lock:
            self.deliver_due()
            events, self.events = self.events, []
        return events

    def deliver_due(self) -> None:
        """Settle every held (batched) message whose ``send_at`` has passed on the clock:
        deliver it, discard it (its batch is cancelled, or paused for too long) or keep
        holding it (paused). Every endpoint and admin read calls this first."""
        with self.lock:
            now = self.clock.now().timestamp()
            for held in list(self._held):
                outcome = self._outcome(held, now)
                if outcome is None:
                    continue
                self._held.remove(held)
                held.message["state"] = outcome
                if outcome == "processed":
                    send_at = held.message["send_at"]
                    due = send_at if _is_int(send_at) else held.message["received_at"]
                    self._emit(held, max(int(due), int(now)) if held.parked else int(due))
            while self._engagement and self._engagement[0][0] <= now:
                self.events.append(heapq.heappop(self._engagement)[2])

    def messages_in(self, state: str) -> list[dict[str, Any]]:
        """Accepted messages in ``state``: ``processed`` (handed to delivery, events made),
        ``scheduled`` (held for their batch), ``cancelled`` or ``expired`` (discarded)."""
        with self.lock:
            self.deliver_due()
            return [m for m in self.messages if m["state"] == state]

    def messages_to(self, email: str) -> list[dict[str, Any]]:
        """Accepted messages with ``email`` among their ``to`` addresses."""
        wanted = email.lower()
        with self.lock:
            return [m for m in self.messages if wanted in (a.lower() for a in m["to"])]

    @property
    def webhook_public_key(self) -> str:
        """The verification key as the console shows it: base64 DER, no PEM armour."""
        der = self._webhook_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()

    def sign_events(self, payload: bytes, timestamp: int | str) -> dict[str, str]:
        """The signed Event Webhook headers for a POST of ``payload`` at ``timestamp``.

        SendGrid signs ``timestamp + payload`` with ECDSA P-256 / SHA-256 and sends the
        base64 DER signature; ``sendgrid.helpers.eventwebhook.EventWebhook`` with
        :attr:`webhook_public_key` verifies it.
        """
        stamp = str(timestamp)
        signature = self._webhook_key.sign(stamp.encode() + payload, ec.ECDSA(hashes.SHA256()))
        return {
            SIGNATURE_HEADER: base64.b64encode(signature).decode(),
            TIMESTAMP_HEADER: stamp,
        }

    # -- provider shapes ---------------------------------------------------------------

    def authorize(self, request: Request) -> Response | None:
        """``Authorization: Bearer <api key>``; SendGrid's two 401 bodies otherwise."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _errors([_error("authorization required", None)], 401)
        if token.strip() != self.api_key:
            message = "The provided authorization grant is invalid, expired, or revoked"
            return _errors([_error(message, None)], 401)
        return None

    def rate_headers(self, remaining: int, reset: float) -> dict[str, str]:
        """``X-RateLimit-Limit``, ``-Remaining`` and ``-Reset`` (a Unix time)."""
        assert self.rate is not None
        return {
            "X-RateLimit-Limit": str(self.rate.limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(self._unix_after(reset)),
        }

    def too_many_requests(self, retry_after: float | None) -> Response:
        """SendGrid's 429: no ``Retry-After``; the window's reset time says when."""
        response = _errors([{"field": None, "message": "too many requests"}], 429)
        if retry_after is not None:
            # An injected 429 outside any window still tells when to come back.
            response.headers["X-RateLimit-Remaining"] = "0"
            response.headers["X-RateLimit-Reset"] = str(self._unix_after(retry_after))
        return response

    def server_error(self, status: int) -> Response:
        """A 5xx in SendGrid's error shape."""
        message = "internal server error" if status == 500 else "service unavailable"
        return _errors([{"message": message}], status)

    def _unix_after(self, seconds: float) -> int:
        return int(self.clock.now().timestamp() + max(0.0, seconds) + 0.999)

    # -- endpoint ----------------------------------------------------------------------

    def mail_send(self, request: Request) -> Response:
        """``POST /v3/mail/send``."""
        too_large = _errors([_error("content too large", None)], 413)
        if (request.content_length or 0) > self.max_body_bytes:
            _drain(request)
            return too_large
        raw = request.get_data(cache=True)
        if request.headers.get("Content-Encoding", "").lower() == "gzip":
            try:
                raw = gzip.decompress(raw)
            except (OSError, EOFError):
                return _errors([_error("Bad Request", None)], 400)
        if len(raw) > self.max_body_bytes:
            return too_large
        try:
            body = json.loads(raw)
        except UnicodeDecodeError:
            return _errors([_error("Invalid UTF8 in request.", None)], 400)
        except ValueError:
            return _errors([_error("Bad Request", None)], 400)
        if not isinstance(body, dict):
            return _errors([_error("Bad Request", None)], 400)
        errors = self._validate(body)
        if errors:
            return _errors(errors, 400)
        senders = [body["from"]] + [p["from"] for p in body["personalizations"] if "from" in p]
        if self.verified_senders is not None and any(
            s["email"].lower() not in self.verified_senders for s in senders
        ):
            return _errors([_error(_SENDER_IDENTITY, "from")], 403)
        if _sandbox_mode(body):
            # Sandbox mode validates and answers 200 without queueing anything.
            return Response(b"", status=200)
        message_id = _new_id()
        self._accept(message_id, body)
        return Response(b"", status=202, headers={"X-Message-Id": message_id})

    # -- Cancel Scheduled Sends ------------------------------------------------------------

    def create_batch(self, request: Request) -> Response:
        """``POST /v3/mail/batch``: 201 with a new ``batch_id``."""
        batch_id = _new_id()
        with self.lock:
            self.batches[batch_id] = int(self.clock.now().timestamp())
        return json_response({"batch_id": batch_id}, 201)

    def validate_batch(self, request: Request, batch_id: str) -> Response:
        """``GET /v3/mail/batch/{batch_id}``: 200 for a batch id of this account, else 400."""
        with self.lock:
            if batch_id not in self.batches:
                return _batch_error(_INVALID_BATCH, None, 400)
        return json_response({"batch_id": batch_id})

    def create_scheduled_send(self, request: Request) -> Response:
        """``POST /v3/user/scheduled_sends`` ``{batch_id, status}``: pause or cancel a batch.

        400 when the batch id is unknown, when it already has a status (PATCH changes it)
        and when :attr:`MAX_PAUSED_OR_CANCELLED` batches are already paused or cancelled.
        """
        body = _json_body(request)
        if body is None:
            return _batch_error("Bad Request", None, 400)
        batch_id, status = body.get("batch_id"), body.get("status", "pause")
        if status not in _STATUSES:
            return _batch_error(_BAD_STATUS, "status", 400)
        with self.lock:
            self.deliver_due()
            if not isinstance(batch_id, str) or batch_id not in self.batches:
                return _batch_error(_INVALID_BATCH, "batch_id", 400)
            if batch_id in self.scheduled_sends:
                return _batch_error(_STATUS_EXISTS, "batch_id", 400)
            if len(self.scheduled_sends) >= self.MAX_PAUSED_OR_CANCELLED:
                return _batch_error(_MAX_LIMIT, None, 400)
            self._set_status(batch_id, status)
        return json_response({"batch_id": batch_id, "status": status}, 201)

    def filter_messages(self, request: Request) -> Response:
        """``GET /v3/messages?query=…&limit=…``: Email Activity, newest first.

        The query language's ``field="value"`` clauses joined by ``AND`` / ``OR`` over
        ``to_email``, ``from_email``, ``subject``, ``msg_id``, ``status``, ``template_id``
        and ``unique_args['key']``. Only messages already processed (their ``send_at``
        reached) are listed, as in the feed. 403 without the add-on.
        """
        if not self.email_activity:
            return _errors([_error("access forbidden", None)], 403)
        try:
            limit = int(request.args.get("limit", "10"))
        except ValueError:
            return _errors([_error("limit must be an integer", "limit")], 400)
        if not 1 <= limit <= 1000:
            return _errors([_error("limit must be between 1 and 1000", "limit")], 400)
        query = request.args.get("query")
        clauses = _activity_query(query) if query else []
        if clauses is None:
            return _errors([_error("invalid query", "query")], 400)
        with self.lock:
            self.deliver_due()
            now = self.clock.now().timestamp()
            listed = []
            for message in reversed(self.messages):
                if message["state"] != "processed" or _processed_at(message) > now:
                    continue
                for address in message["to"]:
                    row = _activity_row(message, address)
                    if _activity_match(clauses, row, message):
                        listed.append(row)
                if len(listed) >= limit:
                    break
        return json_response({"messages": listed[:limit]})

    def list_scheduled_sends(self, request: Request) -> Response:
        """``GET /v3/user/scheduled_sends``: every paused or cancelled batch."""
        with self.lock:
            self.deliver_due()
            entries = [
                {"batch_id": b, "status": e["status"]} for b, e in self.scheduled_sends.items()
            ]
        return json_response(entries)

    def get_scheduled_send(self, request: Request, batch_id: str) -> Response:
        """``GET /v3/user/scheduled_sends/{batch_id}``: a one-entry array, or 404."""
        with self.lock:
            self.deliver_due()
            entry = self.scheduled_sends.get(batch_id)
            if entry is None:
                return _batch_error(_BATCH_NOT_FOUND, None, 404)
            return json_response([{"batch_id": batch_id, "status": entry["status"]}])

    def update_scheduled_send(self, request: Request, batch_id: str) -> Response:
        """``PATCH /v3/user/scheduled_sends/{batch_id}`` ``{status}``: 204, or 404."""
        body = _json_body(request)
        if body is None:
            return _batch_error("Bad Request", None, 400)
        status = body.get("status")
        if status not in _STATUSES:
            return _batch_error(_BAD_STATUS, "status", 400)
        with self.lock:
            self.deliver_due()
            if batch_id not in self.scheduled_sends:
                return _batch_error(_BATCH_NOT_FOUND, None, 404)
            if self.scheduled_sends[batch_id]["status"] != status:
                self._set_status(batch_id, status)
            self.deliver_due()
        return Response(b"", status=204)

    def delete_scheduled_send(self, request: Request, batch_id: str) -> Response:
        """``DELETE /v3/user/scheduled_sends/{batch_id}``: remove the pause or cancel.

        As documented, messages still queued revert to active: those not yet due go at
        their ``send_at``, paused ones past it go at once, and cancelled ones past it were
        already discarded. 204, or 404 for a batch without a status.
        """
        with self.lock:
            self.deliver_due()
            if self.scheduled_sends.pop(batch_id, None) is None:
                return _batch_error(_BATCH_NOT_FOUND, None, 404)
            self.deliver_due()
        return Response(b"", status=204)

    # -- Transactional Templates ---------------------------------------------------------

    def get_template(self, request: Request, template_id: str) -> Response:
        """``GET /v3/templates/{template_id}``: the template and its versions, or 404."""
        with self.lock:
            template = self.templates.get(template_id)
            if template is None:
                return _batch_error(_RESOURCE_NOT_FOUND, None, 404)
            return json_response(copy.deepcopy(template))

    def _set_status(self, batch_id: str, status: str) -> None:
        self.scheduled_sends[batch_id] = {
            "status": status,
            "since": self.clock.now().timestamp(),
        }

    # -- validation ----------------------------------------------------------------------

    def _validate(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        check = _Checker()
        template_id = body.get("template_id")
        if template_id is not None and not isinstance(template_id, str):
            check.fail(
                "template_id", f"The template ID must be a string, you provided {template_id}"
            )
        personalizations = body.get("personalizations")
        if not isinstance(personalizations, list) or not personalizations:
            check.fail(
                "personalizations",
                "The personalizations field is required and must have at least one "
                "personalization.",
            )
            personalizations = []
        elif len(personalizations) > self.MAX_PERSONALIZATIONS:
            check.fail(
                "personalizations",
                f"The personalization block is limited to {self.MAX_PERSONALIZATIONS} "
                f"personalizations per API request. You have provided {len(personalizations)} "
                "personalizations. Please consider splitting this into multiple requests and "
                "resending your request.",
            )
        if "from" not in body:
            check.fail(
                "from",
                "The from object must be provided for every email send. It is an object that "
                "requires the email parameter, but may also contain a name parameter. e.g. "
                '{"email" : "example@example.com"} or {"email" : "example@example.com", '
                '"name" : "Example Recipient"}.',
            )
        else:
            check.address(body["from"], "from", "The from email parameter is required.")
        if "reply_to" in body:
            check.address(body["reply_to"], "reply_to", "The reply_to email parameter is required.")
        global_args = self._custom_args(check, body, "custom_args")
        self._headers(check, body, "headers")
        self._send_at(check, body, "send_at")
        recipients = 0
        subject_everywhere = True
        for i, p in enumerate(personalizations):
            field = f"personalizations.{i}"
            if not isinstance(p, dict):
                check.fail(field, "Each personalization must be an object.")
                continue
            recipients += self._recipients(check, p, field)
            if "from" in p:
                check.address(p["from"], f"{field}.from", "The from email parameter is required.")
            if "subject" in p:
                self._subject(check, p["subject"], f"{field}.subject")
            else:
                subject_everywhere = False
            args = self._custom_args(check, p, f"{field}.custom_args")
            merged = {**(global_args or {}), **(args or {})}
            size = len(json.dumps(merged, separators=(",", ":")).encode())
            if merged and size > self.MAX_CUSTOM_ARGS_BYTES:
                check.fail(
                    f"{field}.custom_args",
                    "The combined size of both global and personalization custom arguments may "
                    f"not exceed {self.MAX_CUSTOM_ARGS_BYTES:,} bytes per personalization.",
                )
            self._headers(check, p, f"{field}.headers")
            self._send_at(check, p, f"{field}.send_at")
            data = p.get("dynamic_template_data")
            if data is not None and not isinstance(data, dict):
                check.fail(
                    f"{field}.dynamic_template_data", "The dynamic_template_data must be an object."
                )
        if recipients > self.MAX_RECIPIENTS:
            check.fail(
                "personalizations",
                f"There is a limit of {self.MAX_RECIPIENTS} total recipients (to + cc + bcc) per "
                "request.",
            )
        if "subject" in body:
            self._subject(check, body["subject"], "subject")
        elif template_id is None and not subject_everywhere:
            check.fail(
                "subject",
                "The subject is required. You can get around this requirement if you use a "
                "template with a subject defined or if every personalization has a subject "
                "defined.",
            )
        self._content(check, body, template_id is not None)
        self._categories(check, body.get("categories"))
        self._asm(check, body.get("asm"))
        if "batch_id" in body:
            batch_id = body["batch_id"]
            if not isinstance(batch_id, str):
                check.fail("batch_id", "The batch_id must be a string.")
            else:
                with self.lock:
                    known = batch_id in self.batches
                if not known:
                    # Not in the error table: the fake's wording, after the ASM group's.
                    check.fail(
                        "batch_id",
                        f"The batch ID must be a valid batch ID on your account. You provided "
                        f"{batch_id}.",
                    )
        return check.errors

    def _recipients(self, check: _Checker, p: dict[str, Any], field: str) -> int:
        to = p.get("to")
        if not isinstance(to, list) or not to:
            check.fail(
                f"{field}.to",
                "The to array is required for all personalization objects, and must have at "
                "least one email object with a valid email address.",
            )
        seen: dict[str, str] = {}
        count = 0
        for kind in ("to", "cc", "bcc"):
            entries = p.get(kind)
            if entries is None or (kind == "to" and not isinstance(entries, list)):
                continue
            if not isinstance(entries, list):
                check.fail(f"{field}.{kind}", f"The {kind} parameter must be an array.")
                continue
            for j, entry in enumerate(entries):
                count += 1
                email = check.address(
                    entry, f"{field}.{kind}.{j}", f"The {kind} email parameter is required."
                )
                if email is None:
                    continue
                if email in seen:
                    check.fail(
                        field,
                        "Each email address in the personalization block should be unique "
                        "between to, cc, and bcc. We found the first duplicate instance of "
                        f"[{email}] in the {field}.{kind} field.",
                    )
                seen.setdefault(email, kind)
        return count

    @staticmethod
    def _subject(check: _Checker, value: Any, field: str) -> None:
        if not isinstance(value, str) or not value:
            check.fail(
                field,
                "The subject of your email must be a string at least one character in length.",
            )

    @staticmethod
    def _custom_args(check: _Checker, owner: dict[str, Any], field: str) -> dict[str, str] | None:
        if "custom_args" not in owner:
            return None
        args = owner["custom_args"]
        if not isinstance(args, dict) or not args:
            check.fail(field, "custom_args cannot be empty.")
            return None
        if not all(isinstance(v, str) for v in args.values()):
            check.fail(field, "All values of custom arguments object must be strings")
            return None
        return args

    @staticmethod
    def _headers(check: _Checker, owner: dict[str, Any], field: str) -> None:
        headers = owner.get("headers")
        if headers is None:
            return
        if not isinstance(headers, dict):
            check.fail(field, "The headers must be an object.")
            return
        for key, value in headers.items():
            if not key.isascii() or not key or any(c.isspace() for c in key):
                check.fail(
                    field, "Header keys cannot contain non-ASCII characters or empty spaces."
                )
            elif key.lower() in _RESERVED_HEADERS:
                check.fail(field, "Header cannot be one of the reserved keys.")
            if not isinstance(value, str):
                check.fail(field, "All values of the headers object must be strings.")

    def _send_at(self, check: _Checker, owner: dict[str, Any], field: str) -> None:
        if "send_at" not in owner:
            return
        value = owner["send_at"]
        if not _is_int(value):
            check.fail(
                field,
                "The send_at parameter is expecting a Unix timestamp as an integer. We will send "
                "immediately if you include a send_at timestamp that is in the past.",
            )
        elif value > (self.clock.now() + self.MAX_SEND_AHEAD).timestamp():
            check.fail(field, "Scheduling more than 72 hours in advance is forbidden.")

    @staticmethod
    def _content(check: _Checker, body: dict[str, Any], templated: bool) -> None:
        if "content" not in body:
            if not templated:
                check.fail(
                    "content",
                    "The content param is required unless you are using a transactional "
                    "template and have defined a template_id.",
                )
            return
        content = body["content"]
        if not isinstance(content, list) or not content:
            check.fail(
                "content",
                "There must be at least one defined content block. We typically suggest both "
                "text/plain and text/html blocks are included, but only one block is required.",
            )
            return
        types: list[str] = []
        for k, block in enumerate(content):
            field = f"content.{k}"
            if not isinstance(block, dict):
                check.fail(field, "Each content block must be an object.")
                continue
            kind = block.get("type")
            if not isinstance(kind, str) or not kind:
                check.fail(
                    f"{field}.type",
                    "A content type is required, this tells email clients how to display the "
                    "email.",
                )
            elif any(c in kind for c in ";\r\n"):
                check.fail(f"{field}.type", "Cannot contain ';', or CRLF characters.")
            else:
                types.append(kind.lower())
            value = block.get("value")
            if not isinstance(value, str) or not value:
                check.fail(
                    f"{field}.value",
                    "The content value must be a string at least one character in length.",
                )
        ranked = [0 if t == "text/plain" else 1 if t == "text/html" else 2 for t in types]
        if ranked != sorted(ranked):
            check.fail(
                "content",
                "Following RFC 1341, section 7.2, if either text/html or text/plain are to be sent "
                "in your email: text/plain needs to be first, followed by text/html, followed by "
                "any other content.",
            )

    def _categories(self, check: _Checker, categories: Any) -> None:
        if categories is None:
            return
        if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
            check.fail("categories", "Categories must be an array of strings.")
            return
        if len(categories) > self.MAX_CATEGORIES:
            check.fail(
                "categories",
                f"There is a limit of {self.MAX_CATEGORIES} categories for each email that is "
                f"sent. You provided {len(categories)} categories.",
            )
        seen: set[str] = set()
        for category in categories:
            if len(category) > self.MAX_CATEGORY_LENGTH:
                check.fail(
                    "categories",
                    f"Each category must not be longer than {self.MAX_CATEGORY_LENGTH} "
                    f"characters. {category} exceeds this limit.",
                )
            if not category.isascii():
                check.fail("categories", "Categories can not contain non-ASCII characters.")
            if category in seen:
                check.fail(
                    "categories",
                    f"The categories must be a unique list, and you have included {category} "
                    "more than once.",
                )
            seen.add(category)

    def _asm(self, check: _Checker, asm: Any) -> None:
        if asm is None:
            return
        if not isinstance(asm, dict) or not _is_int(asm.get("group_id")):
            check.fail("asm.group_id", "The ASM group ID must be an integer.")
            return
        groups = asm.get("groups_to_display")
        if groups is None:
            return
        if not isinstance(groups, list) or not all(_is_int(g) for g in groups):
            check.fail(
                "asm.groups_to_display",
                "The ASM Group IDs to display must be an array of integers.",
            )
        elif len(groups) > self.MAX_GROUPS_TO_DISPLAY:
            check.fail(
                "asm.groups_to_display",
                f"There is a limit of {self.MAX_GROUPS_TO_DISPLAY} unsubscribe groups that can be "
                "displayed to a user at a time.",
            )

    # -- acceptance ------------------------------------------------------------------------

    def _accept(self, message_id: str, body: dict[str, Any]) -> None:
        # ``body`` came from json.loads: each record gets its own copy of the parts it keeps
        # (tests and the engine's readers may change one), made by _json_copy, which knows
        # JSON values are trees and needs none of deepcopy's bookkeeping.
        now = int(self.clock.now().timestamp())
        categories = list(body.get("categories") or [])
        batch_id = body.get("batch_id")
        with self.lock:
            self.mail_requests.append({"message_id": message_id, "body": _json_copy(body)})
            serial = 0
            for i, p in enumerate(body["personalizations"]):
                send_at = p.get("send_at", body.get("send_at"))
                message = {
                    "message_id": message_id,
                    "to": [r["email"] for r in p["to"]],
                    "cc": [r["email"] for r in p.get("cc", [])],
                    "bcc": [r["email"] for r in p.get("bcc", [])],
                    "subject": p.get("subject", body.get("subject")),
                    "template_id": body.get("template_id"),
                    "dynamic_template_data": _json_copy(p.get("dynamic_template_data")),
                    "custom_args": {**body.get("custom_args", {}), **p.get("custom_args", {})},
                    "categories": categories,
                    "send_at": send_at,
                    "asm": _json_copy(body.get("asm")),
                    "headers": {**body.get("headers", {}), **p.get("headers", {})},
                    "from": dict(p.get("from", body["from"])),
                    "reply_to": _json_copy(body.get("reply_to")),
                    "content": _json_copy(body.get("content")),
                    "batch_id": batch_id,
                    "received_at": now,
                    "state": "scheduled" if batch_id else "processed",
                }
                self.messages.append(message)
                smtp_id = f"<{secrets.token_hex(6)}.{i:x}.{message_id[:8]}@ismtpd-sandbox>"
                count = len(message["to"]) + len(message["cc"]) + len(message["bcc"])
                held = _Held(message, i, smtp_id, list(range(serial, serial + count)))
                serial += count
                if batch_id:
                    # Its batch's status decides at send_at (see deliver_due).
                    self._held.append(held)
                else:
                    # A scheduled message is processed when it goes out, not when accepted.
                    self._emit(held, max(now, send_at) if _is_int(send_at) else now)
            self.deliver_due()

    def _outcome(self, held: _Held, now: float) -> str | None:
        """What becomes of a held message at ``now``: None while it waits."""
        message = held.message
        send_at = message["send_at"] if _is_int(message["send_at"]) else message["received_at"]
        entry = self.scheduled_sends.get(message["batch_id"])
        status = entry["status"] if entry else None
        if held.parked:
            # Past send_at under a pause: only the current status decides.
            if status == "cancel":
                return "cancelled"
            if status == "pause":
                expired = now >= send_at + self.PAUSE_EXPIRY.total_seconds()
                return "expired" if expired else None
            return "processed"
        if send_at > now:
            return None
        if entry is not None and entry["since"] > send_at - self.CANCEL_CUTOFF.total_seconds():
            status = None  # set too late to be guaranteed: the fake lets the message go
        if status == "cancel":
            return "cancelled"
        if status == "pause":
            held.parked = True
            expired = now >= send_at + self.PAUSE_EXPIRY.total_seconds()
            return "expired" if expired else None
        return "processed"

    def _emit(self, held: _Held, at: int) -> None:
        """The Event Webhook events of ``held`` going out at ``at``."""
        message = held.message
        addresses = message["to"] + message["cc"] + message["bcc"]
        for email, serial in zip(addresses, held.serials, strict=True):
            suffix = f"{held.index:X}-{at:X}-{serial}"
            self.events.extend(self._events_for(message, email, held.smtp_id, suffix, at))

    def _events_for(
        self, message: dict[str, Any], email: str, smtp_id: str, suffix: str, at: int
    ) -> list[dict[str, Any]]:
        sg_message_id = f"{message['message_id']}.filterdrecv-sandbox-{suffix}.0"

        def event(kind: str, **extra: Any) -> dict[str, Any]:
            # Custom args ride at the top level of every event; SendGrid's own keys win.
            out: dict[str, Any] = dict(message["custom_args"])
            out.update(
                {
                    "email": email,
                    "timestamp": at,
                    "smtp-id": smtp_id,
                    "event": kind,
                }
            )
            categories = message["categories"]
            if categories:
                out["category"] = categories[0] if len(categories) == 1 else list(categories)
            out.update({"sg_event_id": _new_id(), "sg_message_id": sg_message_id})
            out.update(extra)
            return out

        address = email.lower()
        if address in self.suppressed:
            return [event("dropped", reason="Bounced Address", status="5.0.0")]
        if address in self.bouncing:
            self.suppressed.add(address)
            return [
                event("processed"),
                event("bounce", reason="500 unknown recipient", status="5.0.0"),
            ]
        self._engage(event, at, message, address)
        return [event("processed"), event("delivered", response="250 OK")]

    def _engage(self, event: Any, delivered: int, message: dict[str, Any], address: str) -> None:
        """Queue the opens and clicks of one delivered recipient, drawn from the seed and
        what the message carries (its custom args and the recipient, so a replayed run
        draws the same whichever order concurrent senders delivered in); a message without
        custom args draws from the delivery's order."""
        self._delivered += 1
        args = message.get("custom_args") or {}
        key = f"{sorted(args.items())}:{address}" if args else str(self._delivered)
        rng = random.Random(f"sendgrid:{self.seed}:{key}")
        if rng.random() >= self.OPEN_SHARE:
            return
        if rng.random() < self.MACHINE_OPEN_SHARE:
            at = delivered + rng.randint(1, 20)
            self._queue(at, event("open", sg_machine_open=True, **_MACHINE_CLIENT, timestamp=at))
            return
        median = self.HUMAN_OPEN_MEDIAN.total_seconds()
        delay = min(
            rng.lognormvariate(math.log(median), 1.2), self.HUMAN_OPEN_LATEST.total_seconds()
        )
        opened = delivered + max(60, int(delay))
        self._queue(opened, event("open", sg_machine_open=False, **_HUMAN_CLIENT, timestamp=opened))
        human_opens = self.OPEN_SHARE * (1 - self.MACHINE_OPEN_SHARE)
        if rng.random() < self.CLICK_SHARE / human_opens:
            clicked = opened + rng.randint(5, 300)
            click = event(
                "click",
                url=_CLICK_URL,
                url_offset={"index": 0, "type": "html"},
                **_HUMAN_CLIENT,
                timestamp=clicked,
            )
            self._queue(clicked, click)

    def _queue(self, at: int, event: dict[str, Any]) -> None:
        heapq.heappush(self._engagement, (at, next(self._order), event))


#: what Apple's Mail Privacy Protection proxy looks like when it fetches the open pixel
_MACHINE_CLIENT = {"useragent": "Mozilla/5.0", "ip": "17.58.0.1"}
#: a person reading in a browser
_HUMAN_CLIENT = {
    "useragent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/120.0 Safari/537.36",
    "ip": "203.0.113.7",
}
#: the link a click names (the fake does not rewrite links; a tracked one is like it)
_CLICK_URL = "https://careers.example.com/jobs"

_CLAUSE = re.compile(
    r"""\s*(?:(?P<field>to_email|from_email|subject|msg_id|status|template_id)"""
    r"""|unique_args\['(?P<arg>[^']+)'\])\s*=\s*"(?P<value>[^"]*)"\s*"""
)


def _activity_query(query: str) -> list[list[tuple[str, str]]] | None:
    """``a="x" AND b="y" OR c="z"`` as OR-groups of AND-ed (field, value); None if invalid."""
    groups: list[list[tuple[str, str]]] = []
    for part in re.split(r"\s+OR\s+", query.strip()):
        group = []
        for clause in re.split(r"\s+AND\s+", part):
            match = _CLAUSE.fullmatch(clause)
            if match is None:
                return None
            field = match.group("field") or f"unique_args.{match.group('arg')}"
            group.append((field, match.group("value")))
        groups.append(group)
    return groups


def _activity_row(message: dict[str, Any], address: str) -> dict[str, Any]:
    """One recipient's line of the feed (the fields SendGrid documents)."""
    when = datetime.fromtimestamp(_processed_at(message), UTC)
    return {
        "from_email": message["from"].get("email"),
        "msg_id": f"{message['message_id']}.filterdrecv-sandbox.0",
        "subject": message["subject"],
        "to_email": address,
        "status": "delivered",
        "opens_count": 0,
        "clicks_count": 0,
        "last_event_time": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _processed_at(message: dict[str, Any]) -> int:
    """When SendGrid processes ``message``: its ``send_at``, or when it was accepted."""
    send_at = message.get("send_at")
    return int(send_at) if _is_int(send_at) else int(message["received_at"])


def _activity_match(
    groups: list[list[tuple[str, str]]], row: dict[str, Any], message: dict[str, Any]
) -> bool:
    if not groups:
        return True
    for group in groups:
        ok = True
        for field, value in group:
            if field.startswith("unique_args."):
                have = message["custom_args"].get(field.split(".", 1)[1])
            elif field == "template_id":
                have = message.get("template_id")
            else:
                have = row.get(field)
            if str(have) != value:
                ok = False
                break
        if ok:
            return True
    return False


def _json_body(request: Request) -> dict[str, Any] | None:
    try:
        body = json.loads(request.get_data(cache=True) or b"{}")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _json_copy(value: Any) -> Any:
    """A deep copy of a JSON value (dicts, lists and scalars, no shared parts)."""
    if type(value) is dict:
        return {key: _json_copy(item) for key, item in value.items()}
    if type(value) is list:
        return [_json_copy(item) for item in value]
    return value


def _sandbox_mode(body: dict[str, Any]) -> bool:
    settings = body.get("mail_settings")
    mode = settings.get("sandbox_mode") if isinstance(settings, dict) else None
    return isinstance(mode, dict) and mode.get("enable") is True


def _drain(request: Request) -> None:
    # Read the oversized body away so the client sees the 413 instead of a reset socket.
    stream = request.stream
    while stream.read(1 << 20):
        pass
