"""The SMS channel: Twilio Programmable Messaging through the official ``twilio`` SDK.

* One ``send`` sends up to :attr:`TwilioSMS.max_batch` messages concurrently, each on a
  worker thread with its own SDK client: a ``requests.Session`` (and the SDK's
  ``TwilioHttpClient``, which keeps per-request state) is not meant to be shared between
  threads (psf/requests#2766), so idle clients wait in a pool and are reused by later
  batches.
* Messages go from ``TWILIO_FROM_NUMBER`` or, preferably, a Messaging Service
  (``TWILIO_MESSAGING_SERVICE_SID``); only the latter can schedule (``SendAt`` with
  ``ScheduleType=fixed``, 15 minutes to 35 days ahead).
* A message is never sent before its ``send_at``. With a Messaging Service, one due at
  least 16 minutes ahead (Twilio's 15-minute minimum and a minute's margin) is scheduled
  and one already due is sent now; one due sooner than that (:attr:`min_schedule_ahead`,
  which the engine holds back) fails, not permanent, with ``retry_after`` the time until
  it is due. Without a Messaging Service the same goes for one due over a minute ahead.
* A body over ``max_segments`` segments (GSM-7 or UCS-2, :func:`count_segments`) is
  refused before any request.
* Errors are translated at the edge into :mod:`outreach.errors`, then into results:

  ==========================================  ===========================================
  Twilio answer                               result
  ==========================================  ===========================================
  21610 (recipient texted STOP)               failed, permanent, suppress ``opted_out``
  21211 (invalid To), 21614 (not a mobile)    failed, permanent, suppress ``invalid``
  other 4xx (21408 geo permissions, 21612     failed, permanent
  unroutable, ...)
  401 / 20003 (credentials), the sender's     failed, not permanent, naming the setting
  configuration (21606, 21212, 21701-21704),  to fix; the rest of the batch fails the
  404 / 20404 (wrong account or base URL)     same way without a request
  429 / 20429, 503, no connection             retried here with backoff (a ``Retry-After``
                                              over a minute is not slept: failed at
                                              once), then failed, not permanent, with
                                              ``retry_after``
  read timeout, 500/502/504 and other 5xx,    ambiguous, never retried
  a connection lost after sending, any
  exception the translator does not know
  ==========================================  ===========================================

  An exception raised while the request was still being prepared (``requests``) or its
  line and headers buffered (``http.client``) proves nothing was sent: failed, not
  permanent. Unknown exceptions are reported and logged by type name only.

* Recall: a ``recallable`` message created as ``scheduled`` reports its SID as
  ``recall_ref``; :meth:`TwilioSMS.cancel` updates each to ``Status=canceled``
  (``client.messages(sid).update(status="canceled")``). Twilio cancels only a message
  still ``scheduled``, one by one, and answers 30409 "This message cannot be canceled"
  otherwise (twilio.com/docs/api/errors/30409); no earlier cut-off is documented. A
  30409 is checked with a fetch: ``canceled`` already (an earlier answer lost) counts as
  cancelled, any other state as too late.

* The SDK has no base-URL setting; the channel's own ``TwilioHttpClient`` subclass sends
  requests for ``*.twilio.com`` to ``base_url`` (a sandbox or a proxy), with urllib3's
  retries off so that a request that may have been processed is never sent twice.

Reasons never carry phone numbers (Twilio's messages echo the ``To`` number) or secrets.
"""

from __future__ import annotations

import base64
import functools
import http.client
import json
import logging
import math
import os
import queue
import re
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import urlencode, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http import HttpClient
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response as TwilioResponse
from twilio.rest import Client
from urllib3.exceptions import MaxRetryError, NewConnectionError
from urllib3.util.retry import Retry

from channels.base import (
    Channel,
    Departing,
    Inquiry,
    OutgoingMessage,
    Recall,
    RecallResult,
    ReconcileResult,
    SendResult,
    body_digest,
)
from channels.keepalive import KeepAlive, NotConnected, NotWritten
from channels.pool import Departures, WorkerPool
from connectors.http import retry_after_seconds
from outreach.clock import Clock, SystemClock
from outreach.errors import (
    AmbiguousError,
    ConfigError,
    OutreachError,
    PermanentError,
    RetryableError,
)
from outreach.segments import count_segments

__all__ = ["TwilioSMS"]

log = logging.getLogger("outreach.channels.sms")

PROVIDER = "twilio"
STATUS_CALLBACK_PATH = "/webhooks/twilio/status"
#: Twilio schedules a message between 15 minutes and 35 days ahead
SCHEDULE_MIN_AHEAD = timedelta(minutes=15)
SCHEDULE_MAX_AHEAD = timedelta(days=35)
# Twilio checks the window against its own clock when the request arrives (after retries,
# latency and clock skew), so a message this close to the lower bound is sent now instead
# of risking a 35114 refusal.
_SCHEDULE_MARGIN = timedelta(minutes=1)
#: how far ahead a message must be to be scheduled through a Messaging Service (16 min)
SCHEDULE_LEAD = SCHEDULE_MIN_AHEAD + _SCHEDULE_MARGIN
#: a longer wait than this is not slept through here; the engine reschedules instead
_MAX_IN_PROCESS_WAIT = 60.0

#: statuses of a created message that mean it will not go out (any other: it was taken)
_NOT_SENT = frozenset({"failed", "undelivered", "canceled"})
#: Twilio codes that say something about the recipient's number
_SUPPRESS = {21610: "opted_out", 21211: "invalid", 21614: "invalid"}
_AUTH_CODES = frozenset({20003})
#: Twilio codes that are the operator's configuration, not the recipient, and what to fix
_SENDER = "TWILIO_FROM_NUMBER / TWILIO_MESSAGING_SERVICE_SID"
_SERVICE = "TWILIO_MESSAGING_SERVICE_SID (the Messaging Service and its sender pool)"
_CONFIG_CODES = {
    21606: f"{_SENDER} (the sender must be an SMS-capable number of this account)",
    21212: f"{_SENDER} (the From number is not valid)",
    21701: _SERVICE,
    21702: _SERVICE,
    21703: _SERVICE,
    21704: _SERVICE,
    20404: "TWILIO_ACCOUNT_SID and TWILIO_BASE_URL (the Messages resource was not found)",
}
#: functions that only prepare a request (``requests``) or buffer its line and headers
#: (``http.client``): an exception raised inside one proves nothing was written yet
_BEFORE_SENDING = frozenset(
    {
        ("requests.sessions", "prepare_request"),
        ("channels.sms", "_prepare"),
        ("http.client", "putrequest"),
        ("http.client", "putheader"),
    }
)
_RETRYABLE_STATUS = frozenset({429, 503})
_RETRYABLE_CODES = frozenset({20429})
_PHONE = re.compile(r"\+\d[\d\s().-]{4,}\d|(?<![\w.])\d{7,15}(?![\w.])")
_CREATE_PREFIX = "Unable to create record: "
_UPDATE_PREFIX = "Unable to update record: "
#: Twilio: the message is no longer scheduled, so it cannot be canceled
_NOT_CANCELABLE = 30409


class _TwilioHttp(TwilioHttpClient):
    """The SDK's HTTP client, sending ``*.twilio.com`` requests to ``base_url``.

    urllib3 retries nothing (a POST that may have been processed must not go twice), and
    the headers of the last response are kept for ``Retry-After``.
    """

    def __init__(self, base_url: str, *, timeout: float) -> None:
        super().__init__(timeout=timeout)
        target = urlsplit(base_url.rstrip("/"))
        self._scheme, self._netloc, self._prefix = target.scheme, target.netloc, target.path
        no_retries = Retry(total=0, read=False, redirect=False)
        for scheme in ("http://", "https://"):
            self.session.mount(scheme, HTTPAdapter(max_retries=no_retries))
        self.last_headers: dict[str, str] = {}

    def request(  # type: ignore[override]
        self, method: str, url: str, *args: Any, **kwargs: Any
    ) -> TwilioResponse:
        """Rewrite the host of a Twilio URL, then send as :class:`TwilioHttpClient` does."""
        self.last_headers = {}
        parts = urlsplit(url)
        if parts.hostname and (
            parts.hostname == "twilio.com" or parts.hostname.endswith(".twilio.com")
        ):
            url = urlunsplit(
                (self._scheme, self._netloc, self._prefix + parts.path, parts.query, "")
            )
        response = super().request(method, url, *args, **kwargs)
        self.last_headers = dict(response.headers or {})
        return response

    def close(self) -> None:
        """Close the connection pool."""
        self.session.close()


class _KeepAliveHttp(HttpClient):
    """The SDK's HTTP client on a kept-alive connection (:mod:`channels.keepalive`), sending
    ``*.twilio.com`` requests to ``base_url``; used when no proxy applies to it.

    The request is what ``TwilioHttpClient`` sends through ``requests`` (form-encoded
    ``data``, or JSON where the SDK says so; ``params`` in the query; Basic auth in
    Latin-1; no redirects followed, nothing retried); only the transport is leaner. The
    headers of the last response are kept for ``Retry-After``.
    """

    def __init__(self, base_url: str, *, timeout: float) -> None:
        super().__init__(logging.getLogger("twilio.http_client"), False, timeout)
        target = urlsplit(base_url.rstrip("/"))
        target.port  # noqa: B018 - a malformed port raises here, before any request
        self._scheme, self._netloc, self._prefix = target.scheme, target.netloc, target.path
        trust = _requests_trust() if target.scheme == "https" else None
        self._transport = KeepAlive(ssl_context=trust)
        self.last_headers: Mapping[str, str] = {}

    def request(  # type: ignore[override]
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> TwilioResponse:
        """Send one request; raise as :class:`channels.keepalive.KeepAlive` does."""
        self.last_headers = {}
        if timeout is None:
            timeout = self.timeout
        elif timeout <= 0:
            raise ValueError(timeout)
        target, body, sent_headers = self._prepare(method, url, params, data, headers, auth)
        if self.logger.isEnabledFor(logging.INFO):
            self.log_request(
                {"method": method.upper(), "url": url, "params": params, "headers": headers}
            )
        answer = self._transport.request(method.upper(), target, body, sent_headers, timeout)
        self.last_headers = answer.headers  # read only on errors: not copied
        text = answer.body.decode(answer.headers.get_content_charset() or "utf-8", "replace")
        return TwilioResponse(answer.status, text, self.last_headers)

    def _prepare(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None,
        data: dict[str, object] | None,
        headers: dict[str, str] | None,
        auth: tuple[str, str] | None,
    ) -> tuple[str, bytes | None, dict[str, str]]:
        """The URL, body and headers, as ``requests`` prepares them; raising here proves
        nothing was sent."""
        parts = urlsplit(url)
        if parts.hostname and (
            parts.hostname == "twilio.com" or parts.hostname.endswith(".twilio.com")
        ):
            parts = urlsplit(
                urlunsplit((self._scheme, self._netloc, self._prefix + parts.path, parts.query, ""))
            )
        query = "&".join(q for q in (parts.query, _form(params)) if q)
        target = urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))
        sent = dict(headers or {})
        body: bytes | None = None
        if sent.get("Content-Type") in ("application/json", "application/scim+json"):
            body = json.dumps(data).encode("utf-8") if data is not None else None
        elif data:
            body = _form(data).encode("ascii")
            sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
        if auth is not None:
            user, password = (v.encode("latin-1") if isinstance(v, str) else v for v in auth)
            sent["Authorization"] = "Basic " + base64.b64encode(user + b":" + password).decode()
        return target, body, sent

    def close(self) -> None:
        """Close the kept-alive connection."""
        self._transport.close()


def _form(values: dict[str, object] | None) -> str:
    """``values`` form-encoded as ``requests`` does: lists repeat the key, None is left out."""
    if not values:
        return ""
    pairs = []
    for key, value in values.items():
        for item in value if isinstance(value, list | tuple) else (value,):
            if item is not None:
                pairs.append((key, item))
    return urlencode(pairs)


@functools.cache
def _requests_trust() -> ssl.SSLContext | None:
    """The CA bundle ``requests`` would verify Twilio with (REQUESTS_CA_BUNDLE,
    CURL_CA_BUNDLE or certifi's), as an SSL context; None when there is none to read.
    Read once per process: loading the bundle takes longer than many requests."""
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    try:
        bundle = bundle or requests.certs.where()
        if os.path.isdir(bundle):
            return ssl.create_default_context(capath=bundle)
        return ssl.create_default_context(cafile=bundle)
    except (OSError, ssl.SSLError):
        return None


@dataclass
class _Sender:
    """One SDK client and its HTTP client, used by one thread at a time."""

    client: Client
    http: HttpClient

    def retry_after(self) -> float | None:
        """The ``Retry-After`` of the last response, when it had one."""
        headers = getattr(self.http, "last_headers", {})
        value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
        return retry_after_seconds(value)


class _Refused(PermanentError):
    """Twilio refused the message (4xx); ``suppress`` names the contact point state, if any."""

    def __init__(self, message: str, *, suppress: str | None, status: int | None) -> None:
        self.suppress = suppress
        super().__init__(message, provider=PROVIDER, status=status)


class _Halt:
    """Set once a batch hits a configuration failure: the rest fails without requests.
    Also records each request in flight before it is made (the engine's ``departing``)."""

    def __init__(
        self,
        departing: Departing | None = None,
        requests: Sequence[Sequence[OutgoingMessage]] = (),
        window: int = 1,
    ) -> None:
        self._lock = threading.Lock()
        self.reason: str | None = None
        #: the engine's hook, called right before the requests of the batch are made
        self.departing = departing
        self._departures = Departures(departing, requests, window) if departing else None

    def depart(self, messages: Sequence[OutgoingMessage], index: int | None) -> None:
        """Return once ``messages`` (request ``index`` of the batch) are in flight; raise
        when they are not (the request must not be made)."""
        if self._departures is not None and index is not None:
            self._departures.depart(index)
        elif self.departing is not None:
            self.departing(messages)

    def stop(self, reason: str) -> None:
        """Remember the first configuration failure's reason."""
        with self._lock:
            if self.reason is None:
                self.reason = reason


class TwilioSMS(Channel):
    """Sends SMS through Twilio, from a number or a Messaging Service.

    Example::

        sms = TwilioSMS(settings.twilio_account_sid, token, messaging_service_sid="MG...",
                        public_url="https://engine.example")
        results = sms.send(batch)

    ``http_client`` replaces the channel's own HTTP client (``base_url`` then does not
    apply); since an HTTP client is not shared between threads, requests then go one at
    a time.
    """

    name: ClassVar[str] = "sms"
    #: messages per ``send`` call: the engine confirms each call's results in one transaction,
    #: and the workers idle while it does, so a call should keep them busy for a while
    max_batch: ClassVar[int] = 100
    rate_per_second: ClassVar[float | None] = None
    max_schedule_ahead: ClassVar[timedelta] = timedelta(0)
    #: a scheduled message can be canceled while its status is ``scheduled``; Twilio
    #: documents no cut-off before ``SendAt`` (twilio.com/docs/api/errors/30409)
    cancel_cutoff: ClassVar[timedelta] = timedelta(0)

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        from_number: str | None = None,
        messaging_service_sid: str | None = None,
        base_url: str = "https://api.twilio.com",
        public_url: str | None = None,
        max_segments: int = 3,
        timeout: float = 10.0,
        max_attempts: int = 4,
        workers: int = 8,
        clock: Clock | None = None,
        sleep: Callable[[float], None] = time.sleep,
        http_client: HttpClient | None = None,
    ) -> None:
        problems = []
        if not account_sid:
            problems.append("TWILIO_ACCOUNT_SID is not set")
        if not auth_token:
            problems.append("TWILIO_AUTH_TOKEN is not set")
        if not (from_number or messaging_service_sid):
            problems.append("set TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID")
        if max_attempts < 1 or workers < 1 or max_segments < 1:
            problems.append("max_attempts, workers and max_segments must be at least 1")
        if problems:
            raise ConfigError("the Twilio SMS channel cannot start", problems)
        # The SDK imports its API modules on a client's first use. Done here, that does not
        # fall between a message's rate-limit slot and its request, where the late request
        # would bunch with later ones at the provider.
        import twilio.rest.api.v2010.account.message  # noqa: F401

        self._account_sid = account_sid
        self._auth_token = auth_token
        # A Messaging Service picks the sender itself and is the only way to schedule.
        self.messaging_service_sid = messaging_service_sid or None
        self.from_number = None if self.messaging_service_sid else from_number
        if self.messaging_service_sid:
            self.max_schedule_ahead = SCHEDULE_MAX_AHEAD  # type: ignore[misc]
            # Due sooner than this but not yet due: Twilio cannot schedule it and it must
            # not go early, so the engine holds it back (and this channel refuses it).
            self.min_schedule_ahead = SCHEDULE_LEAD  # type: ignore[misc]
        self.status_callback = (
            f"{public_url.rstrip('/')}{STATUS_CALLBACK_PATH}" if public_url else None
        )
        self.base_url = base_url
        self.max_segments = max_segments
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.workers = 1 if http_client is not None else workers
        self._clock = clock or SystemClock()
        self._sleep = sleep
        self._http_client = http_client
        self._idle: queue.LifoQueue[_Sender] = queue.LifoQueue()
        self._workers = WorkerPool(self.workers, "twilio-sms")
        # Until a request has been answered with the credentials accepted, a batch sends
        # its first message alone, so bad credentials cost one request, not one per worker.
        self._verified = False

    # -- the channel -------------------------------------------------------------------

    announces_requests: ClassVar[bool] = True

    def send(
        self, batch: Sequence[OutgoingMessage], departing: Departing | None = None
    ) -> list[SendResult]:
        """Send ``batch`` concurrently; one result per message, in any order.

        ``departing`` is called with each message right before its request is made."""
        now = self._clock.now()
        results: list[SendResult] = []
        pending: list[OutgoingMessage] = []
        for message in batch:
            refusal = self._check(message, now)
            if refusal is not None:
                results.append(refusal)
            else:
                pending.append(message)
        halt = _Halt(departing, [[m] for m in pending], 2 * self.workers)
        numbered = list(enumerate(pending))
        if numbered and not self._verified:
            results.append(self._send_one(numbered[0][1], halt, 0))
            numbered = numbered[1:]
        if numbered:
            results.extend(
                self._workers.map(lambda item: self._send_one(item[1], halt, item[0]), numbered)
            )
        return results

    def close(self) -> None:
        """Close the idle clients' connections; safe to call again, and never raises.

        Each closed client leaves the pool, so a second call finds nothing to close; a
        later ``send`` opens new clients (and worker threads).
        """
        self._workers.close()
        while True:
            try:
                sender = self._idle.get_nowait()
            except queue.Empty:
                return
            close = getattr(sender.http, "close", None)
            if close is None or sender.http is self._http_client:
                continue
            try:
                close()
            except Exception as exc:  # closing is best effort; the others still close
                log.warning("closing a Twilio HTTP client failed (%s)", type(exc).__name__)

    # -- one message -------------------------------------------------------------------

    def _check(self, message: OutgoingMessage, now: datetime) -> SendResult | None:
        """Refuse what must not be sent as it is, before any request."""
        if not message.body:
            return SendResult.failed(message, "SMS body is empty", permanent=True)
        info = count_segments(message.body)
        if info.segments > self.max_segments:
            if info.encoding == "UCS-2":
                shown = info.non_gsm[:5] + ("…" if len(info.non_gsm) > 5 else "")
                verb = "is" if len(info.non_gsm) == 1 else "are"
                why = f"UCS-2: {shown!r} {verb} not GSM-7"
            else:
                why = f"GSM-7, {info.units} characters"
            return SendResult.failed(
                message,
                f"SMS is {info.segments} segments ({why}), the policy allows {self.max_segments}",
                permanent=True,
            )
        if self.messaging_service_sid:
            beyond = _utc(message.send_at) - (now + SCHEDULE_MAX_AHEAD)
            if beyond > timedelta(0):
                return SendResult.failed(
                    message,
                    "send_at is more than 35 days ahead, beyond Twilio's scheduling window",
                    permanent=False,
                    retry_after=beyond.total_seconds(),
                )
        return self._too_early(message, now)

    def _too_early(self, message: OutgoingMessage, now: datetime) -> SendResult | None:
        """A refusal for a message not yet due that cannot be scheduled: never sent early.

        Due already: sent now. With a Messaging Service, at least :data:`SCHEDULE_LEAD`
        ahead: scheduled. Without one, at most a minute ahead: sent now.
        """
        ahead = _utc(message.send_at) - now
        if ahead <= timedelta(0):
            return None
        if self.messaging_service_sid:
            if ahead >= SCHEDULE_LEAD:
                return None
            why = "sooner than Twilio can schedule"
        else:
            if ahead <= _SCHEDULE_MARGIN:
                return None
            why = "and without TWILIO_MESSAGING_SERVICE_SID Twilio cannot schedule"
        minutes = math.ceil(ahead.total_seconds() / 60)
        return SendResult.failed(
            message,
            f"SMS is due in {minutes} minute{'s' if minutes != 1 else ''}, {why}; not sent early",
            permanent=False,
            retry_after=ahead.total_seconds(),
        )

    def _send_one(self, message: OutgoingMessage, halt: _Halt, index: int) -> SendResult:
        """Send one message (``index`` of the batch); whatever happens, return its result
        (nothing escapes)."""
        if halt.reason is not None:
            return SendResult.failed(message, halt.reason, permanent=False)
        try:
            sender = self._checkout()
        except Exception as exc:  # no request was made
            name = type(exc).__name__
            log.warning("%s while setting up a Twilio client for touch %s", name, message.touch_id)
            return SendResult.failed(
                message,
                f"unexpected {name} while setting up the Twilio client; not sent",
                permanent=False,
            )
        try:
            return self._deliver(sender, message, halt, index)
        except Exception as exc:  # after the request may have gone: ambiguous
            name = type(exc).__name__
            log.warning("unexpected %s from the Twilio SDK for touch %s", name, message.touch_id)
            return SendResult.ambiguous(message, f"unexpected {name} from the Twilio SDK")
        finally:
            self._idle.put(sender)

    def _deliver(
        self, sender: _Sender, message: OutgoingMessage, halt: _Halt, index: int
    ) -> SendResult:
        """Create the message, retrying in-process what provably was not processed."""
        error: OutreachError | None = None
        for attempt in range(1, self.max_attempts + 1):
            if halt.reason is not None:
                return SendResult.failed(message, halt.reason, permanent=False)
            # Decided per attempt: a retry's wait may bring send_at under the minimum.
            now = self._clock.now()
            if (early := self._too_early(message, now)) is not None:
                return early
            params = self._params(message, now)
            if halt.departing is not None:
                try:
                    # The first attempt's record is made with its window's; a retry's alone.
                    halt.depart([message], index if attempt == 1 else None)
                except Exception as exc:  # not recorded as in flight: no request is made
                    return SendResult.failed(message, str(exc), permanent=False)
            try:
                created = sender.client.messages.create(**params)
            except Exception as exc:  # translated below; anything unknown is ambiguous
                answered = isinstance(exc, TwilioRestException | TwilioServiceException)
                if not answered and _raised_before_sending(exc):
                    name = type(exc).__name__
                    log.warning(
                        "%s while preparing a Twilio request for touch %s", name, message.touch_id
                    )
                    return SendResult.failed(
                        message,
                        f"twilio: {name} while preparing the request (check TWILIO_ACCOUNT_SID, "
                        "TWILIO_AUTH_TOKEN and TWILIO_BASE_URL); nothing was sent",
                        permanent=False,
                    )
                error = _translate(exc, retry_after=sender.retry_after())
                if not isinstance(exc, TwilioRestException | requests.RequestException):
                    log.warning(
                        "%s from the Twilio SDK for touch %s", type(exc).__name__, message.touch_id
                    )
            else:
                self._verified = True
                return self._accepted(message, created)
            if isinstance(error, ConfigError):
                self._verified = False
                halt.stop(self._clean(str(error)))
                return SendResult.failed(message, self._clean(str(error)), permanent=False)
            if answered:
                self._verified = True  # Twilio answered past the credential check
            if not isinstance(error, RetryableError) or attempt == self.max_attempts:
                return self._result(message, error, attempts=attempt)
            wait = error.retry_after if error.retry_after is not None else _backoff(attempt)
            if wait > _MAX_IN_PROCESS_WAIT:
                # Too long to hold a worker: the engine retries after the wait instead.
                return SendResult.failed(
                    message,
                    f"{self._clean(str(error))}; Twilio asks to wait {wait:g} s, "
                    "left to a later run",
                    permanent=False,
                    retry_after=wait,
                )
            self._sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def _params(self, message: OutgoingMessage, now: datetime) -> dict[str, Any]:
        params: dict[str, Any] = {"to": message.to, "body": message.body}
        if self.messaging_service_sid:
            params["messaging_service_sid"] = self.messaging_service_sid
            send_at = _utc(message.send_at)
            # Not yet due here means at least SCHEDULE_LEAD ahead (see _too_early).
            if send_at > now:
                # The SDK formats SendAt with strftime("...Z") whatever the offset is, so
                # it must be UTC already. Rounded up to the second: never early.
                if send_at.microsecond:
                    send_at = send_at.replace(microsecond=0) + timedelta(seconds=1)
                params["send_at"] = send_at
                params["schedule_type"] = "fixed"
        else:
            params["from_"] = self.from_number
        if self.status_callback:
            params["status_callback"] = self.status_callback
        return params

    def _accepted(self, message: OutgoingMessage, created: Any) -> SendResult:
        status = str(created.status or "")
        if status in _NOT_SENT:
            code = getattr(created, "error_code", None)
            return SendResult.failed(
                message,
                f"twilio created message {created.sid} as {status}"
                + (f" (error {code})" if code else ""),
                permanent=False,
            )
        recall_ref = created.sid if message.recallable and status == "scheduled" else None
        return SendResult.sent(message, provider_message_id=created.sid, recall_ref=recall_ref)

    # -- recall ------------------------------------------------------------------------

    def cancel(self, recalls: Sequence[Recall], now: datetime) -> list[RecallResult]:
        """Cancel scheduled messages by SID; one result per recall.

        ``cancelled`` when Twilio answers ``canceled`` (or the message turns out canceled
        already); ``too_late`` once ``send_at`` has passed or when Twilio says the message
        is no longer scheduled (30409); ``failed`` with ``retry_after`` for no connection,
        429, 5xx and timeouts (after in-process retries as for sends), and ``failed`` with
        the reason for an unknown SID or a configuration error.
        """
        results: list[RecallResult] = []
        pending: list[Recall] = []
        for recall in recalls:
            if _utc(recall.send_at) - now <= self.cancel_cutoff:
                results.append(
                    RecallResult(
                        recall.touch_id,
                        "too_late",
                        "its send time has passed: Twilio has sent it or is sending it",
                    )
                )
            else:
                pending.append(recall)
        if not pending:
            return results
        try:
            sender = self._checkout()
        except Exception as exc:  # no request was made
            name = type(exc).__name__
            reason = f"unexpected {name} while setting up the Twilio client; not cancelled"
            return results + [RecallResult(r.touch_id, "failed", reason, 60.0) for r in pending]
        try:
            stop: tuple[str, float | None] | None = None
            for recall in pending:
                if stop is not None:
                    results.append(RecallResult(recall.touch_id, "failed", *stop))
                    continue
                result, halt = self._cancel_one(sender, recall)
                results.append(result)
                if halt:
                    stop = (result.reason or "not cancelled", result.retry_after)
        finally:
            self._idle.put(sender)
        return results

    def _cancel_one(self, sender: _Sender, recall: Recall) -> tuple[RecallResult, bool]:
        """Cancel one message; the result, and whether the rest must not be tried."""
        touch = recall.touch_id
        for attempt in range(1, self.max_attempts + 1):
            try:
                updated = sender.client.messages(recall.ref).update(status="canceled")
            except Exception as exc:  # translated below
                if isinstance(exc, TwilioRestException) and exc.code == _NOT_CANCELABLE:
                    return self._not_cancelable(sender, recall), False
                answered = isinstance(exc, TwilioRestException | TwilioServiceException)
                if not answered and _raised_before_sending(exc):
                    name = type(exc).__name__
                    reason = (
                        f"twilio: {name} while preparing the request (check TWILIO_ACCOUNT_SID, "
                        "TWILIO_AUTH_TOKEN and TWILIO_BASE_URL); not cancelled"
                    )
                    return RecallResult(touch, "failed", reason), True
                if isinstance(exc, TwilioRestException) and int(exc.status or 0) == 404:
                    reason = self._clean(
                        f"twilio: no message {recall.ref} on this account "
                        f"({str(exc.msg or '').removeprefix(_UPDATE_PREFIX)}); not cancelled"
                    )
                    return RecallResult(touch, "failed", reason), False
                error = _translate(exc, retry_after=sender.retry_after())
                reason = self._clean(str(error)).replace(_UPDATE_PREFIX, "")
                if isinstance(error, ConfigError):
                    return RecallResult(touch, "failed", reason), True
                if isinstance(error, AmbiguousError):
                    # A cancel may be repeated safely (30409 then shows what happened).
                    return RecallResult(touch, "failed", reason, _backoff(attempt)), False
                if not isinstance(error, RetryableError):
                    return RecallResult(touch, "failed", f"{reason}; not cancelled"), False
                wait = error.retry_after if error.retry_after is not None else _backoff(attempt)
                if attempt == self.max_attempts or wait > _MAX_IN_PROCESS_WAIT:
                    return RecallResult(touch, "failed", reason, wait), True
                self._sleep(wait)
                continue
            status = str(getattr(updated, "status", "") or "")
            if status == "canceled":
                return RecallResult(touch, "cancelled"), False
            return RecallResult(touch, "too_late", f"twilio answered status {status!r}"), False
        raise AssertionError("unreachable")  # pragma: no cover

    def _not_cancelable(self, sender: _Sender, recall: Recall) -> RecallResult:
        """After a 30409: canceled already (a lost answer), or gone out."""
        try:
            status = str(sender.client.messages(recall.ref).fetch().status or "")
        except Exception as exc:
            name = type(exc).__name__
            return RecallResult(
                recall.touch_id,
                "failed",
                f"twilio error 30409 (not cancelable), and reading the message failed ({name})",
                60.0,
            )
        if status == "canceled":
            return RecallResult(recall.touch_id, "cancelled", "the message was already canceled")
        return RecallResult(
            recall.touch_id,
            "too_late",
            f"twilio error 30409: the message is {status or 'no longer scheduled'}, "
            "it cannot be canceled",
        )

    def _result(
        self, message: OutgoingMessage, error: OutreachError, *, attempts: int
    ) -> SendResult:
        """The one mapping from the error tree to a result."""
        reason = self._clean(str(error))
        if isinstance(error, AmbiguousError):
            return SendResult.ambiguous(message, reason)
        if isinstance(error, PermanentError):
            suppress = error.suppress if isinstance(error, _Refused) else None
            return SendResult.failed(message, reason, permanent=True, suppress=suppress)
        if isinstance(error, RetryableError):
            wait = error.retry_after if error.retry_after is not None else _backoff(attempts)
            return SendResult.failed(
                message,
                f"{reason}; gave up after {attempts} attempts",
                permanent=False,
                retry_after=wait,
            )
        return SendResult.failed(message, reason, permanent=False)

    # -- clients -----------------------------------------------------------------------

    # -- reconciliation ----------------------------------------------------------------

    #: messages to one number read back when looking for an ambiguous send
    reconcile_page: ClassVar[int] = 100

    def reconcile(self, inquiries: Sequence[Inquiry], now: datetime) -> list[ReconcileResult]:
        """Look for each ambiguous SMS among the messages Twilio holds for its number.

        Twilio creates a message synchronously, so a request that reached it left a message
        (``GET .../Messages.json?To=``, newest first): one whose body has the ledger's
        digest and whose SID the ledger gives no other touch is the touch (still
        ``scheduled``: it can be recalled by its SID); none means Twilio never received the
        request. One listing per number. Times are not compared: the engine's clock (a
        replayed ``--now``) and Twilio's need not agree, and a wrong "absent" would send
        the message twice.
        """
        results: list[ReconcileResult] = []
        by_number: dict[str, list[Inquiry]] = {}
        for inquiry in inquiries:
            if not inquiry.body_digest or not inquiry.to:
                results.append(
                    ReconcileResult(
                        inquiry.touch_id, "unknown", "the ledger has no digest or number to match"
                    )
                )
            else:
                by_number.setdefault(inquiry.to, []).append(inquiry)
        if not by_number:
            return results
        sender = self._checkout()
        try:
            for number, wanted in by_number.items():
                try:
                    listed = sender.client.messages.list(to=number, limit=self.reconcile_page)
                except Exception as exc:
                    error = _translate(exc, retry_after=sender.retry_after())
                    why = self._clean(str(error))
                    results.extend(ReconcileResult(i.touch_id, "later", why) for i in wanted)
                    continue
                taken: set[str] = set()
                for inquiry in wanted:
                    results.append(self._match(inquiry, listed, taken))
        finally:
            self._idle.put(sender)
        return results

    def _match(self, inquiry: Inquiry, listed: list[Any], taken: set[str]) -> ReconcileResult:
        for message in listed:
            if message.sid in taken or message.sid in inquiry.known_ids:
                continue
            if body_digest("sms", None, message.body or "") != inquiry.body_digest:
                continue
            taken.add(message.sid)
            status = str(message.status or "")
            if status in _NOT_SENT:
                return ReconcileResult(
                    inquiry.touch_id, "absent", f"twilio holds it as {status}: not delivered"
                )
            return ReconcileResult(
                inquiry.touch_id,
                "delivered",
                f"twilio holds message {message.sid} ({status})",
                provider_message_id=message.sid,
                recall_ref=message.sid if status == "scheduled" else None,
            )
        return ReconcileResult(
            inquiry.touch_id, "absent", "twilio holds no such message to that number"
        )

    def _checkout(self) -> _Sender:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        if self._http_client is not None:
            # One injected client only; with workers == 1 it is idle whenever we get here.
            http: HttpClient = self._http_client
        elif _proxied(self.base_url):
            http = _TwilioHttp(self.base_url, timeout=self.timeout)
        else:
            http = _KeepAliveHttp(self.base_url, timeout=self.timeout)
        return _Sender(Client(self._account_sid, self._auth_token, http_client=http), http)

    def _clean(self, text: str) -> str:
        """``text`` without phone numbers or the auth token."""
        if self._auth_token and len(self._auth_token) >= 4:
            text = text.replace(self._auth_token, "***")
        return _PHONE.sub("<number>", text)


def _proxied(base_url: str) -> bool:
    """Whether a proxy from the environment applies to ``base_url`` (then ``requests``,
    which honours it, sends; the keep-alive client does not speak to proxies)."""
    proxies = urllib.request.getproxies()
    if not proxies:
        return False
    return not urllib.request.proxy_bypass(urlsplit(base_url).hostname or "")


def _translate(exc: Exception, *, retry_after: float | None = None) -> OutreachError:
    """Turn an SDK, ``requests`` or keep-alive transport exception into the error tree."""
    if isinstance(exc, TwilioRestException | TwilioServiceException):
        return _translate_answer(exc, retry_after)
    name = type(exc).__name__
    if isinstance(exc, NotConnected):
        cause = type(exc.__cause__).__name__ if exc.__cause__ is not None else name
        return RetryableError(
            f"twilio: cannot connect ({cause}); nothing was sent", provider=PROVIDER
        )
    if isinstance(exc, NotWritten):
        # As with requests: a connection lost while writing is not told apart from a lost
        # answer, so it stays ambiguous.
        return AmbiguousError(
            f"twilio: the request failed after it may have been sent ({name}); not retried",
            provider=PROVIDER,
        )
    if isinstance(exc, requests.ConnectTimeout) or _not_connected(exc):
        return RetryableError(
            f"twilio: cannot connect ({name}); nothing was sent", provider=PROVIDER
        )
    if isinstance(exc, requests.Timeout | TimeoutError):
        return AmbiguousError(
            f"twilio: no answer within the timeout after the request was sent ({name}); "
            "it may have been processed, not retried",
            provider=PROVIDER,
        )
    if isinstance(exc, requests.RequestException | OSError | http.client.HTTPException):
        return AmbiguousError(
            f"twilio: the request failed after it may have been sent ({name}); not retried",
            provider=PROVIDER,
        )
    # Only the type: the text of an exception nobody expected may hold a number or secret.
    return AmbiguousError(
        f"unexpected {name} from the Twilio SDK; the request may have been sent, not retried",
        provider=PROVIDER,
    )


def _raised_before_sending(exc: BaseException) -> bool:
    """Whether ``exc`` was raised while the request was prepared or its line and headers
    buffered, before anything was written; False when that is not certain."""
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if (frame.f_globals.get("__name__"), frame.f_code.co_name) in _BEFORE_SENDING:
            return True
        tb = tb.tb_next
    return False


def _not_connected(exc: Exception) -> bool:
    """Whether ``exc`` proves the request never left (no connection, proxy, certificate)."""
    if isinstance(exc, requests.exceptions.ProxyError):
        return True  # urllib3 raises it only before the proxy connection is up
    inner = exc.args[0] if exc.args else None
    reason = inner.reason if isinstance(inner, MaxRetryError) else None
    if isinstance(exc, requests.exceptions.SSLError):
        # A rejected certificate ends the handshake; other TLS errors can happen mid-reply.
        return isinstance(reason, Exception) and any(
            isinstance(arg, ssl.SSLCertVerificationError) for arg in (reason, *reason.args)
        )
    # With retries off, urllib3 wraps a failed connect in MaxRetryError; a connection lost
    # while sending or reading arrives as a bare ProtocolError instead.
    return isinstance(exc, requests.ConnectionError) and isinstance(reason, NewConnectionError)


def _translate_answer(
    exc: TwilioRestException | TwilioServiceException, retry_after: float | None
) -> OutreachError:
    status = int(exc.status or 0)
    code = exc.code if isinstance(exc.code, int) else None
    if isinstance(exc, TwilioServiceException):
        text = exc.title + (f": {exc.detail}" if exc.detail else "")
    else:
        text = str(exc.msg or "").removeprefix(_CREATE_PREFIX)
    what = f"twilio error {code}: {text} (HTTP {status})" if code else f"twilio: HTTP {status}"
    if status in (401, 403) or code in _AUTH_CODES:
        return ConfigError(
            f"twilio rejected the credentials ({what}); check TWILIO_ACCOUNT_SID and "
            "TWILIO_AUTH_TOKEN"
        )
    if code in _CONFIG_CODES or status == 404:
        # Only the Messages resource is called: a 404 is a wrong account or base URL.
        fix = _CONFIG_CODES.get(code or 20404, _CONFIG_CODES[20404])
        return ConfigError(f"{what}: the configuration, not the recipient; check {fix}")
    if status in _RETRYABLE_STATUS or code in _RETRYABLE_CODES:
        return RetryableError(what, provider=PROVIDER, status=status, retry_after=retry_after)
    if status >= 500:
        return AmbiguousError(
            f"{what}; the message may have been created, not retried",
            provider=PROVIDER,
            status=status,
        )
    if 400 <= status < 500:
        suppress = _SUPPRESS.get(code) if code is not None else None
        return _Refused(what, suppress=suppress, status=status)
    return AmbiguousError(f"{what}: unexpected answer", provider=PROVIDER, status=status)


def _backoff(attempt: int) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based): 0.5, 1, 2, ... 30."""
    return min(30.0, 0.5 * 2 ** (attempt - 1))


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
