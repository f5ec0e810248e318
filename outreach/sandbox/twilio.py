"""A Twilio Programmable Messaging sandbox: the Messages resource of API 2010-04-01.

:class:`FakeTwilio` answers ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` with
the checks the live API makes synchronously (Basic auth ``AccountSid:AuthToken``; ``To``
in E.164; ``From`` one of the account's numbers or a ``MessagingServiceSid``; ``Body`` up
to 1,600 characters; recipients who texted STOP; landlines; scheduling windows), each
failure a ``{"code", "message", "more_info", "status"}`` body, and on success ``201`` with
a Message resource shaped like Twilio's published example (segments counted GSM-7 or
UCS-2 by :func:`outreach.segments.count_segments`). ``GET .../Messages/{Sid}.json`` and
``GET .../Messages.json`` read messages back. A scheduled message (status ``scheduled``)
is cancelled with ``POST .../Messages/{Sid}.json`` ``Status=canceled``; once its ``SendAt``
has passed on the injected clock it is ``queued`` like an immediate send, and cancelling
it then answers Twilio's error 30409.

A message that goes out moves on as the clock passes: ``sent`` a second later,
``delivered`` three seconds after that. Where the send named a ``StatusCallback``, each of
those changes is a status callback (Twilio's form: ``MessageSid``, ``MessageStatus``,
``SmsStatus``, ``To``, ``From`` ..., signed with ``X-Twilio-Signature``), posted by
:meth:`FakeTwilio.post_status_callbacks` or read with
:meth:`FakeTwilio.drain_status_callbacks`.

The SDK has no base-URL setting; its documented extension point is a custom
``http_client`` (twilio-python ``advanced-examples/custom-http-client.md``), so
:class:`SandboxHttpClient` rewrites ``https://api.twilio.com`` to the sandbox::

    fake = FakeTwilio(landlines={"+15005550009"})
    with SandboxServer(fake) as server:
        client = Client(fake.account_sid, fake.auth_token,
                        http_client=SandboxHttpClient(server.url, timeout=5))
        message = client.messages.create(to="+14155550100", from_="+15005550006", body="Hi")
    fields = fake.inbound("+14155550100", "STOP")   # the webhook form; now opted out
"""

from __future__ import annotations

import copy
import re
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any, ClassVar
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response as TwilioResponse
from twilio.request_validator import RequestValidator
from werkzeug.wrappers import Request, Response

from outreach.clock import Clock
from outreach.sandbox.base import FakeProvider, RateWindow, Route, json_response
from outreach.segments import count_segments

__all__ = [
    "OPT_IN_KEYWORDS",
    "OPT_OUT_KEYWORDS",
    "SANDBOX_ACCOUNT_SID",
    "SANDBOX_MESSAGING_SERVICE_SID",
    "FakeTwilio",
    "SandboxHttpClient",
]

#: a fixed, obviously fake account (``AC`` + 32 hex digits)
SANDBOX_ACCOUNT_SID = "AC" + "5adb0c00" * 4
SANDBOX_MESSAGING_SERVICE_SID = "MG" + "5adb0c01" * 4
#: Twilio's default opt-out keywords for long codes (messaging/tutorials/advanced-opt-out)
OPT_OUT_KEYWORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
)
OPT_IN_KEYWORDS = frozenset({"START", "UNSTOP", "YES"})

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_SID = re.compile(r"^(AC|MG)[0-9a-f]{32}$")
_API = "2010-04-01"


def _error(code: int, message: str, status: int) -> Response:
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return json_response(body, status)


def _rfc2822(at: datetime) -> str:
    return format_datetime(at.astimezone(UTC))


def _parse_send_at(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


class SandboxHttpClient(TwilioHttpClient):
    """The SDK's own HTTP client, sending requests for ``*.twilio.com`` to ``base_url``.

    Pass it as ``Client(sid, token, http_client=SandboxHttpClient(url, timeout=...))``;
    everything else (auth, form encoding, errors, ``timeout``) is the SDK's.
    """

    def __init__(self, base_url: str, *, timeout: float | None = None, **kwargs: Any) -> None:
        super().__init__(timeout=timeout, **kwargs)
        target = urlsplit(base_url.rstrip("/"))
        self.scheme, self.netloc, self.prefix = target.scheme, target.netloc, target.path

    def request(  # type: ignore[override]
        self, method: str, url: str, *args: Any, **kwargs: Any
    ) -> TwilioResponse:
        """Rewrite the host of a Twilio URL, then send it as :class:`TwilioHttpClient` does."""
        parts = urlsplit(url)
        if parts.hostname and parts.hostname.endswith("twilio.com"):
            url = urlunsplit(
                (self.scheme, self.netloc, self.prefix + parts.path, parts.query, parts.fragment)
            )
        return super().request(method, url, *args, **kwargs)


class FakeTwilio(FakeProvider):
    """An in-memory Twilio account sending SMS from ``from_numbers`` or a Messaging Service.

    ``opted_out`` numbers answer 21610 (and :meth:`inbound` with STOP adds to it),
    ``invalid`` ones 21211, ``landlines`` 21614. ``rate`` (off by default) answers 429 /
    20429; Twilio sends no rate-limit headers. Read back :attr:`messages` and
    :attr:`inbound_messages`.
    """

    name: ClassVar[str] = "twilio"
    routes: ClassVar[tuple[Route, ...]] = (
        Route("POST", f"/{_API}/Accounts/<account_sid>/Messages.json", "create_message"),
        Route("GET", f"/{_API}/Accounts/<account_sid>/Messages.json", "list_messages"),
        Route(
            "GET", f"/{_API}/Accounts/<account_sid>/Messages/<message_sid>.json", "fetch_message"
        ),
        Route(
            "POST", f"/{_API}/Accounts/<account_sid>/Messages/<message_sid>.json", "update_message"
        ),
    )

    MAX_BODY_CHARS: ClassVar[int] = 1600
    #: the scheduling window as the messaging docs state it (error 35114's page now says 5 min)
    SCHEDULE_MIN_AHEAD: ClassVar[timedelta] = timedelta(minutes=15)
    SCHEDULE_MAX_AHEAD: ClassVar[timedelta] = timedelta(days=35)
    MAX_PAGE_SIZE: ClassVar[int] = 1000
    #: a message that goes out is ``sent`` (handed to the carrier) this long after
    SENT_AFTER: ClassVar[timedelta] = timedelta(seconds=1)
    #: ... and ``delivered`` (the carrier's receipt) this long after going out
    DELIVERED_AFTER: ClassVar[timedelta] = timedelta(seconds=4)

    def __init__(
        self,
        *,
        account_sid: str = SANDBOX_ACCOUNT_SID,
        auth_token: str = "sandbox-twilio-token",
        clock: Clock | None = None,
        rate: RateWindow | None = None,
        opted_out: Iterable[str] = (),
        invalid: Iterable[str] = (),
        landlines: Iterable[str] = (),
        messaging_service_sid: str = SANDBOX_MESSAGING_SERVICE_SID,
        from_numbers: Iterable[str] = ("+15005550006",),
    ) -> None:
        super().__init__(clock=clock, rate=rate)
        if not _SID.match(account_sid) or not account_sid.startswith("AC"):
            raise ValueError(f"account_sid must be AC + 32 hex digits, not {account_sid!r}")
        if not _SID.match(messaging_service_sid) or not messaging_service_sid.startswith("MG"):
            raise ValueError("messaging_service_sid must be MG + 32 hex digits")
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.opted_out = set(opted_out)
        self.invalid = set(invalid)
        self.landlines = set(landlines)
        self.messaging_service_sid = messaging_service_sid
        self.from_numbers = tuple(from_numbers)
        self.messages: list[dict[str, Any]] = []
        self.inbound_messages: list[dict[str, str]] = []
        self._resources: dict[str, dict[str, Any]] = {}
        #: the entries of :attr:`messages` by SID
        self._records: dict[str, dict[str, Any]] = {}
        #: status changes still ahead on the clock: (when, sid, status)
        self._progress: list[tuple[datetime, str, str]] = []
        #: status callbacks due and not yet drained: (url, form fields)
        self._outbox: list[tuple[str, dict[str, str]]] = []

    # -- admin (Python, not HTTP) ------------------------------------------------------

    def inbound(self, from_number: str, body: str, to: str | None = None) -> dict[str, str]:
        """A reply from ``from_number``: the incoming-message webhook's form fields.

        A body that is exactly an opt-out keyword (STOP, STOPALL, UNSUBSCRIBE, CANCEL,
        END, QUIT, REVOKE, OPTOUT; any case) opts the number out, as Twilio's default
        opt-out handling does; START, UNSTOP or YES opts it back in.
        """
        sid = "SM" + secrets.token_hex(16)
        country = "US" if from_number.startswith("+1") else ""
        to_number = to or self.from_numbers[0]
        fields = {
            "MessageSid": sid,
            "SmsSid": sid,
            "AccountSid": self.account_sid,
            "MessagingServiceSid": self.messaging_service_sid,
            "From": from_number,
            "To": to_number,
            "Body": body,
            "NumMedia": "0",
            "FromCity": "",
            "FromState": "",
            "FromZip": "",
            "FromCountry": country,
            "ToCity": "",
            "ToState": "",
            "ToZip": "",
            "ToCountry": "US" if to_number.startswith("+1") else "",
        }
        keyword = body.strip().strip(".!").upper()
        with self.lock:
            if keyword in OPT_OUT_KEYWORDS:
                self.opted_out.add(from_number)
            elif keyword in OPT_IN_KEYWORDS:
                self.opted_out.discard(from_number)
            self.inbound_messages.append(dict(fields))
        return fields

    def webhook_signature(self, url: str, fields: dict[str, str]) -> str:
        """The ``X-Twilio-Signature`` Twilio would send when posting ``fields`` to ``url``."""
        return RequestValidator(self.auth_token).compute_signature(url, fields)

    def message(self, sid: str) -> dict[str, Any]:
        """A copy of the Message resource ``sid`` as the API returns it."""
        with self.lock:
            self.send_due()
            return copy.deepcopy(self._resources[sid])

    def send_due(self) -> None:
        """Scheduled messages whose ``SendAt`` has passed on the clock go out: ``queued``,
        as an immediate send is on creation; messages that went out become ``sent`` and
        then ``delivered`` as the clock passes those moments, each change queueing its
        status callback. Every endpoint calls this first."""
        now = self.clock.now()
        with self.lock:
            for record in self.messages:
                if record["status"] == "scheduled" and record["send_at"] <= now:
                    record["status"] = "queued"
                    resource = self._resources[record["sid"]]
                    resource["status"] = "queued"
                    resource["date_updated"] = _rfc2822(record["send_at"])
                    self._going_out(record["sid"], record["send_at"])
            due = sorted(p for p in self._progress if p[0] <= now)
            if due:
                self._progress = [p for p in self._progress if p[0] > now]
                for at, sid, status in due:
                    self._advance(sid, status, at)

    def drain_status_callbacks(self) -> list[tuple[str, dict[str, str]]]:
        """The status callbacks due on the clock, oldest first, as ``(url, form fields)``;
        the list is then emptied."""
        with self.lock:
            self.send_due()
            out, self._outbox = self._outbox, []
        return out

    def post_status_callbacks(self, client: httpx.Client | None = None) -> list[int]:
        """POST every due status callback to its URL, signed as Twilio signs it
        (``X-Twilio-Signature`` with the auth token over the URL and fields); returns the
        answers' status codes. ``client`` defaults to a fresh :class:`httpx.Client`."""
        callbacks = self.drain_status_callbacks()
        own = client is None
        http = client if client is not None else httpx.Client(timeout=10)
        try:
            return [
                http.post(
                    url,
                    data=fields,
                    headers={"X-Twilio-Signature": self.webhook_signature(url, fields)},
                ).status_code
                for url, fields in callbacks
            ]
        finally:
            if own:
                http.close()

    def _going_out(self, sid: str, at: datetime) -> None:
        """Queue the status changes of a message that goes out at ``at``."""
        self._progress.append((at + self.SENT_AFTER, sid, "sent"))
        self._progress.append((at + self.DELIVERED_AFTER, sid, "delivered"))

    def _advance(self, sid: str, status: str, at: datetime) -> None:
        resource = self._resources[sid]
        resource["status"] = status
        resource["date_updated"] = _rfc2822(at)
        if status == "sent":
            resource["date_sent"] = _rfc2822(at)
        record = self._records[sid]
        record["status"] = status
        url = record["status_callback"]
        if not url:
            return
        fields = {
            "AccountSid": self.account_sid,
            "ApiVersion": _API,
            "From": record["from"] or self.from_numbers[0],
            "MessageSid": sid,
            "MessageStatus": status,
            "SmsSid": sid,
            "SmsStatus": status,
            "To": record["to"],
        }
        if record["messaging_service_sid"]:
            fields["MessagingServiceSid"] = record["messaging_service_sid"]
        if status == "delivered":
            # the carrier's delivery receipt time, as Twilio passes it on (YYMMDDhhmm)
            fields["RawDlrDoneDate"] = at.astimezone(UTC).strftime("%y%m%d%H%M")
        self._outbox.append((url, fields))

    # -- provider shapes ---------------------------------------------------------------

    def authorize(self, request: Request) -> Response | None:
        """HTTP Basic ``AccountSid:AuthToken``; 401 / 20003 otherwise."""
        auth = request.authorization
        if (
            auth is None
            or auth.type != "basic"
            or auth.username != self.account_sid
            or auth.password != self.auth_token
        ):
            response = _error(20003, "Authenticate", 401)
            response.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
            return response
        return None

    def rate_headers(self, remaining: int, reset: float) -> dict[str, str]:
        """Twilio documents no rate-limit headers."""
        return {}

    def too_many_requests(self, retry_after: float | None) -> Response:
        """429 with code 20429, and no ``Retry-After``."""
        return _error(20429, "Too Many Requests", 429)

    def server_error(self, status: int) -> Response:
        """A 5xx in Twilio's error shape (20500 / 20503)."""
        if status == 503:
            return _error(20503, "Service Unavailable", 503)
        return _error(20500, "Internal Server Error", status)

    # -- endpoints ---------------------------------------------------------------------

    def create_message(self, request: Request, account_sid: str) -> Response:
        """``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` (form-encoded)."""
        if account_sid != self.account_sid:
            return self._not_found(request.path)
        form = request.form
        to = form.get("To", "").strip()
        from_ = form.get("From", "").strip()
        service = form.get("MessagingServiceSid", "").strip()
        body = form.get("Body", "")
        media = form.getlist("MediaUrl")
        if not to:
            return _error(21604, "A 'To' phone number is required.", 400)
        if not _E164.match(to) or to in self.invalid:
            return _error(21211, f"The 'To' number {to} is not a valid phone number.", 400)
        if not from_ and not service:
            return _error(21603, "A 'From' phone number is required.", 400)
        if service and service != self.messaging_service_sid:
            return _error(21701, f"The Messaging Service Sid {service} is invalid.", 400)
        if from_ and from_ not in self.from_numbers:
            return _error(
                21606,
                f"The From phone number {from_} is not a valid, SMS-capable inbound phone "
                "number or short code for your account.",
                400,
            )
        if not body and not media and not form.get("ContentSid"):
            return _error(21602, "Message body is required.", 400)
        if len(body) > self.MAX_BODY_CHARS:
            return _error(
                21617, "The concatenated message body exceeds the 1600 character limit.", 400
            )
        now = self.clock.now()
        send_at: datetime | None = None
        schedule = form.get("ScheduleType")
        if schedule is not None:
            if schedule != "fixed":
                return _error(
                    35126,
                    "The ScheduleType value provided is not supported for this channel.",
                    400,
                )
            if not form.get("SendAt"):
                return _error(35111, "SendAt timestamp is missing", 400)
            if not service:
                return _error(35118, "MessagingServiceSid is required to schedule a message", 400)
            send_at = _parse_send_at(form["SendAt"])
            if send_at is None or not (
                now + self.SCHEDULE_MIN_AHEAD <= send_at <= now + self.SCHEDULE_MAX_AHEAD
            ):
                return _error(35114, "Scheduling does not support this timestamp", 400)
        with self.lock:
            if to in self.opted_out:
                return _error(21610, "Attempt to send to unsubscribed recipient", 400)
            if to in self.landlines:
                return _error(21614, f"'To' number {to} is not a valid mobile number", 400)
            sid = "SM" + secrets.token_hex(16)
            info = count_segments(body)
            uri = f"/{_API}/Accounts/{self.account_sid}/Messages/{sid}"
            stamp = _rfc2822(now)
            resource = {
                "account_sid": self.account_sid,
                "api_version": _API,
                "body": body,
                "date_created": stamp,
                "date_sent": None,
                "date_updated": stamp,
                "direction": "outbound-api",
                "error_code": None,
                "error_message": None,
                # With only a Messaging Service, Twilio picks the sender later.
                "from": from_ or None,
                "num_media": str(len(media)),
                "num_segments": str(max(1, info.segments)),
                "price": None,
                "price_unit": None,
                "messaging_service_sid": service or None,
                "sid": sid,
                "status": "scheduled" if send_at else "queued",
                "subresource_uris": {"media": f"{uri}/Media.json"},
                "to": to,
                "uri": f"{uri}.json",
            }
            self._resources[sid] = resource
            if send_at is None:
                self._going_out(sid, now)
            record = {
                "sid": sid,
                "to": to,
                "from": from_ or None,
                "messaging_service_sid": service or None,
                "body": body,
                "media_urls": list(media),
                "num_segments": max(1, info.segments),
                "encoding": info.encoding,
                "status": resource["status"],
                "status_callback": form.get("StatusCallback"),
                "send_at": send_at,
                "date_created": now,
            }
            self.messages.append(record)
            self._records[sid] = record
            return json_response(resource, 201)

    def fetch_message(self, request: Request, account_sid: str, message_sid: str) -> Response:
        """``GET /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json``."""
        with self.lock:
            self.send_due()
            resource = self._resources.get(message_sid)
            if account_sid != self.account_sid or resource is None:
                return self._not_found(request.path)
            return json_response(resource)

    def list_messages(self, request: Request, account_sid: str) -> Response:
        """``GET .../Messages.json``: newest first, ``To`` / ``From`` filters, paged."""
        if account_sid != self.account_sid:
            return self._not_found(request.path)
        args = request.args
        try:
            size = int(args.get("PageSize", "50"))
            page = int(args.get("Page", "0"))
        except ValueError:
            return _error(20001, "Invalid paging parameters", 400)
        if not 1 <= size <= self.MAX_PAGE_SIZE or page < 0:
            return _error(20001, "Invalid paging parameters", 400)
        with self.lock:
            self.send_due()
            chosen = [
                r
                for r in reversed(list(self._resources.values()))
                if ("To" not in args or r["to"] == args["To"])
                and ("From" not in args or r["from"] == args["From"])
            ]
            items = chosen[page * size : (page + 1) * size]
            # Page links keep the filters, as Twilio's do.
            kept = [(k, v) for k, v in args.items(multi=True) if k not in ("Page", "PageToken")]
            query = urlencode([*(kv for kv in kept if kv[0] != "PageSize"), ("PageSize", size)])
            base = f"/{_API}/Accounts/{self.account_sid}/Messages.json?{query}"
            more = len(chosen) > (page + 1) * size
            body = {
                "end": page * size + max(len(items) - 1, 0),
                "first_page_uri": f"{base}&Page=0",
                "next_page_uri": f"{base}&Page={page + 1}" if more else None,
                "page": page,
                "page_size": size,
                "previous_page_uri": f"{base}&Page={page - 1}" if page else None,
                "messages": copy.deepcopy(items),
                "start": page * size,
                "uri": f"{base}&Page={page}",
            }
        return json_response(body)

    def update_message(self, request: Request, account_sid: str, message_sid: str) -> Response:
        """``POST /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json``.

        ``Status=canceled`` cancels a message that is still ``scheduled`` (any other state:
        400 / 30409, "This message cannot be canceled"); ``Body=`` (empty) redacts the body
        of a message that has left.
        """
        form = request.form
        status = form.get("Status")
        with self.lock:
            self.send_due()
            resource = self._resources.get(message_sid)
            if account_sid != self.account_sid or resource is None:
                return self._not_found(request.path)
            record = next(m for m in self.messages if m["sid"] == message_sid)
            if status is not None:
                if status != "canceled":
                    # Twilio accepts only "canceled" here (MessageInstance.UpdateStatus).
                    return _error(20001, f"Invalid Status: {status}", 400)
                if resource["status"] != "scheduled":
                    return _error(30409, "This message cannot be canceled", 400)
                resource["status"] = record["status"] = "canceled"
            if "Body" in form:
                if form["Body"] != "" or resource["status"] == "scheduled":
                    # Not documented word for word: only a redaction (an empty body) of a
                    # message that has left is allowed.
                    return _error(20001, "Message body can only be redacted", 400)
                resource["body"] = record["body"] = ""
            resource["date_updated"] = _rfc2822(self.clock.now())
            return json_response(resource)

    @staticmethod
    def _not_found(path: str) -> Response:
        return _error(20404, f"The requested resource {path} was not found", 404)
