"""The SendGrid email channel: v3 Mail Send through the official ``sendgrid`` SDK.

* Messages with a ``sendgrid_template_id`` go out as dynamic-template requests: one
  request per (template, cadence, step, sender name, reply-to), up to 1,000
  personalizations each, every person with their own ``dynamic_template_data``.
  SendGrid has ``reply_to`` only at request level (``Reply-To`` is a reserved header), so
  a message with its own ``reply_to`` (``replies+<token>@…``) is a request of its own.
* Locally rendered messages go out one request each (subject, text and HTML), several at
  a time on a thread pool.
* Every personalization carries ``custom_args.touch_id`` (the Event Webhook echoes it; no
  PII), a ``List-Unsubscribe`` header, the touch's ``Message-ID`` header when the engine
  chose one (``Message-ID`` is not among SendGrid's reserved headers) and, whenever the
  throttle chose a later instant (however near), ``send_at``: mail never goes out before
  its ``send_at``.

Recall (DESIGN.md, "Scheduling and recall"). A ``recallable`` message due more than
:attr:`SendGridEmail.cancel_cutoff` ahead gets a batch id of its own (``POST
/v3/mail/batch``) and a request of its own, since SendGrid cancels whole batches; the
batch id is its ``recall_ref``. :meth:`SendGridEmail.cancel` sets the batch to ``cancel``
(``POST /v3/user/scheduled_sends``), within SendGrid's limits: no later than 10 minutes
before ``send_at``, and no more than 10 batches paused or cancelled at one time, counted
with one ``GET /v3/user/scheduled_sends`` per call. :meth:`SendGridEmail.release`
deletes a cancellation once its ``send_at`` is safely past, which frees its slot.

Errors are translated at the edge into :mod:`outreach.errors` and then into one
:class:`SendResult` per message:

* cannot connect, 429, 503: :class:`RetryableError`, retried here up to ``max_attempts``
  (429 waits for ``Retry-After`` or ``X-RateLimit-Reset``; a wait over a minute is left to
  the engine), then ``failed`` (not permanent, with ``retry_after``);
* a timeout after the request left, other 5xx: :class:`AmbiguousError`, never retried;
* 400 naming a recipient: that message ``failed`` (permanent, ``suppress="invalid"``) and
  the rest of its request re-sent once; any other 400, 413: ``failed`` (permanent);
* 401/403, 404 (a wrong ``SENDGRID_BASE_URL``) and a 400 whose errors point only at the
  operator's configuration (``template_id``, ``from``, ``asm``): :class:`ConfigError`,
  every remaining message of the batch ``failed`` (not permanent, the reason naming the
  setting to fix) without further requests;
* any other exception: that request's messages ``ambiguous`` (the reason names only the
  exception's type), unless it was raised while ``http.client`` was still building the
  request line or headers (nothing had been written): then ``failed`` (not permanent).

Reasons never contain an email address or the API key.

The SDK's ``python_http_client`` shares one header dict between every request of a client
and adds ``Content-Type`` to it on the first request, so concurrent first requests on one
client can race; each worker therefore borrows a client of its own from a small pool.
"""

from __future__ import annotations

import html
import http.client
import json
import logging
import math
import queue
import re
import threading
import time
import urllib.error
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from python_http_client.exceptions import HTTPError

from channels.base import (
    Channel,
    Departing,
    Inquiry,
    OutgoingMessage,
    Recall,
    RecallResult,
    ReconcileResult,
    SendResult,
)
from channels.pool import Departures, WorkerPool
from channels.sendgrid_http import sendgrid_client
from connectors.http import retry_after_seconds
from outreach.clock import Clock, SystemClock
from outreach.errors import (
    AmbiguousError,
    ConfigError,
    OutreachError,
    PermanentError,
    ProviderError,
    RetryableError,
)

__all__ = ["SendGridEmail", "plain_to_html"]

log = logging.getLogger("outreach.channels.email")

PROVIDER = "sendgrid"
CREDENTIAL = "SENDGRID_API_KEY"

#: a longer wait than this is not slept through here; the engine reschedules instead
_MAX_IN_PROCESS_WAIT = 60.0
_MAX_CATEGORIES = 10
_MAX_CATEGORY_LENGTH = 255
_EMAIL = re.compile(r"[^\s@<>()\[\],;:\"']+@[^\s@<>()\[\],;:\"']+")
_PERSONALIZATION = re.compile(r"^personalizations\.(\d+)(?:\.(.*))?$")
_RECIPIENT_FIELD = re.compile(r"^(?:to|cc|bcc)(?:\.|$)")
#: an RFC 5322 msg-id without its angle brackets: id-left "@" id-right, no space or bracket
_MESSAGE_ID = re.compile(r"^[!-;=?-~]+@[!-;=?-~]+$")
_ADDRESS_MESSAGE = re.compile(r"\b(?:valid|invalid)\b.*\b(?:address|email)\b", re.IGNORECASE)
_BLANK_LINE = re.compile(r"\n(?:[ \t]*\n)+")
#: 400 error fields that point at the operator's configuration, not at a recipient, and
#: the setting to fix for each
_CONFIG_FIELDS = {
    "template_id": "the step's sendgrid_template_id",
    "from": "SENDGRID_FROM_EMAIL",
    "from.email": "SENDGRID_FROM_EMAIL",
    "asm": "policy.sendgrid_unsubscribe_group",
    "asm.group_id": "policy.sendgrid_unsubscribe_group",
}
#: http.client functions that only buffer the request line and headers: an exception
#: raised inside one of them proves that nothing of the request was written yet
_BEFORE_SENDING = {("http.client", "putrequest"), ("http.client", "putheader")}


def plain_to_html(text: str) -> str:
    """HTML for a plain-text body: escaped, blank-line paragraphs, single newlines as <br>."""
    normalized = text.replace("\r\n", "\n").replace("\r", "\n").strip("\n")
    paragraphs = [p.strip("\n") for p in _BLANK_LINE.split(normalized) if p.strip()]
    return "\n".join(
        "<p>" + "<br>\n".join(html.escape(line) for line in p.split("\n")) + "</p>"
        for p in paragraphs
    )


class _Rejected(PermanentError):
    """A 400: SendGrid refused the whole request; ``errors`` are its (field, message) pairs."""

    def __init__(self, message: str, errors: list[tuple[str | None, str]]) -> None:
        self.errors = errors
        super().__init__(message, provider=PROVIDER, status=400)


class _Unsent(ProviderError):
    """The request could not be built; nothing of it was written to the connection."""

    def __init__(self, message: str) -> None:
        super().__init__(message, provider=PROVIDER)


class _Refusal(ProviderError):
    """A 4xx answer (not 401, 403 or 429) of the batch or scheduled-sends API."""

    def __init__(self, status: int, errors: list[tuple[str | None, str]]) -> None:
        self.errors = errors
        detail = "; ".join(_describe(f, m) for f, m in errors) or "no details"
        super().__init__(f"SendGrid {status}: {detail}", provider=PROVIDER, status=status)

    def says(self, text: str) -> bool:
        """Whether one of the error messages contains ``text`` (case-insensitive)."""
        return any(text in message.lower() for _, message in self.errors)


class _Slots:
    """The batches SendGrid holds paused or cancelled, as one listing showed them."""

    def __init__(self, statuses: dict[str, str], limit: int) -> None:
        self.statuses = statuses
        self.limit = limit
        self.full = False

    def free(self) -> bool:
        return not self.full and len(self.statuses) < self.limit


class _Halt:
    """Set once a request of the batch met a configuration error; later requests stop.
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

    def set(self, reason: str) -> None:
        with self._lock:
            if self.reason is None:
                self.reason = reason


class _ClientPool:
    """SDK clients lent to one request at a time, created on demand and kept for reuse
    (each keeps its connection alive: see :mod:`channels.sendgrid_http`)."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def close(self) -> None:
        """Close the idle clients' connections (best effort; a later borrow opens anew)."""
        while True:
            try:
                client = self._idle.get_nowait()
            except queue.Empty:
                return
            close = getattr(
                getattr(getattr(client, "client", None), "_transport", None), "close", None
            )
            if close is not None:
                try:
                    close()
                except Exception as exc:  # closing is best effort; the others still close
                    log.warning("closing a SendGrid connection failed (%s)", type(exc).__name__)

    @contextmanager
    def borrow(self) -> Iterator[Any]:
        try:
            client = self._idle.get_nowait()
        except queue.Empty:
            client = self._factory()
        try:
            yield client
        finally:
            self._idle.put(client)


@dataclass(frozen=True)
class _Sent:
    message_id: str | None


class SendGridEmail(Channel):
    """Sends email through SendGrid v3 Mail Send.

    ``from_email`` must be a verified sender; the sender name is the recruiter's, else
    ``company_name``. ``asm_group_id`` adds SendGrid's unsubscribe group (and its
    one-click link). ``client`` replaces the SDK client (shared by every worker then);
    ``clock`` and ``sleep`` are injected so tests never wait.

    Example::

        channel = SendGridEmail(api_key, "jobs@acme.example", company_name="Acme")
        results = channel.send(messages)
        # later, when the cadence stops:
        channel.cancel([Recall(r.touch_id, r.recall_ref, send_at)], now)
        channel.release(cancelled_recalls, now)   # each run, to free SendGrid's slots
    """

    name: ClassVar[str] = "email"
    max_batch: ClassVar[int] = 1000
    rate_per_second: ClassVar[float | None] = None
    max_schedule_ahead: ClassVar[timedelta] = timedelta(hours=72)
    #: SendGrid pauses or cancels a batch no later than this before its send_at
    #: (twilio.com/docs/sendgrid/api-reference/cancel-scheduled-sends); one cancelled later
    #: "is not guaranteed to be cancelled" (sendgrid-python USAGE.md, sendgrid/docs
    #: cancel_schedule_send.apiblueprint), so it is reported too late without a request
    cancel_cutoff: ClassVar[timedelta] = timedelta(minutes=10)
    #: batches that may be paused or cancelled at one time (same pages; a POST past it
    #: answers 400 "max limit reached")
    max_held_batches: ClassVar[int] = 10
    #: a cancellation is deleted (its slot freed) this long after its send_at. A cancelled
    #: batch's messages are discarded when send_at is reached, and deleting the status later
    #: drops cancelled messages past their send time (sendgrid/docs
    #: cancel_schedule_send.apiblueprint, "Delete a cancellation or pause"); the hour covers
    #: SendGrid's queue running late and clock skew
    release_after: ClassVar[timedelta] = timedelta(hours=1)
    #: seconds to wait for a slot when all of them are held (capped by the cut-off)
    slot_wait: ClassVar[float] = 300.0

    def __init__(
        self,
        api_key: str,
        from_email: str,
        *,
        base_url: str = "https://api.sendgrid.com",
        company_name: str | None = None,
        asm_group_id: int | None = None,
        timeout: float = 10.0,
        max_attempts: int = 4,
        workers: int = 8,
        clock: Clock | None = None,
        sleep: Callable[[float], None] = time.sleep,
        client: Any | None = None,
    ) -> None:
        self.from_email = from_email
        self.company_name = company_name
        self.asm_group_id = asm_group_id
        self.timeout = timeout
        self.max_attempts = max(1, max_attempts)
        self.workers = max(1, workers)
        self._api_key = api_key
        self._clock = clock or SystemClock()
        self._sleep = sleep
        host = base_url.rstrip("/")
        self._host = host
        self._client = client
        self._templates: Any | None = None
        if client is not None:
            self._clients = _ClientPool(lambda: client)
        else:
            self._clients = _ClientPool(lambda: sendgrid_client(api_key, host))
        self._unsubscribe = f"<mailto:{from_email}?subject=unsubscribe>"
        self._workers = WorkerPool(self.workers, "sendgrid")

    def __repr__(self) -> str:
        return f"SendGridEmail(from_email={self.from_email!r})"  # never the key

    def read_template(self, template_id: str) -> Any:
        """The active version of dynamic template ``template_id`` (``GET
        /v3/templates/{id}``, same key and base URL as the mail), as an
        :class:`outreach.dynamic_templates.DynamicTemplate`; errors are translated as
        :mod:`channels.sendgrid_templates` says. Nothing is cached here: the engine reads
        each template once per run. The engine reads while its claim transaction is open,
        so this tries twice and waits at most 5 s; longer, and the touch waits for a later
        run."""
        if self._templates is None:
            from channels.sendgrid_templates import SendGridTemplates

            self._templates = SendGridTemplates(
                self._api_key,
                base_url=self._host,
                timeout=self.timeout,
                max_attempts=min(self.max_attempts, 2),
                max_wait=5.0,
                clock=self._clock,
                sleep=self._sleep,
                client=self._client,
            )
        return self._templates.read(template_id)

    # -- sending ---------------------------------------------------------------------

    announces_requests: ClassVar[bool] = True

    def send(
        self, batch: Sequence[OutgoingMessage], departing: Departing | None = None
    ) -> list[SendResult]:
        """Send ``batch``; one result per message (see the module docstring for the rules).

        ``departing`` is called with each request's messages right before it is made."""
        now = self._clock.now()
        results: list[SendResult] = []
        requests: list[list[OutgoingMessage]] = []
        groups: dict[tuple[Any, ...], list[OutgoingMessage]] = {}
        for message in batch:
            too_early = message.send_at - (now + self.max_schedule_ahead)
            if too_early > timedelta(0):
                results.append(
                    SendResult.failed(
                        message,
                        "send_at is more than 72 hours ahead, beyond SendGrid's scheduling limit",
                        permanent=False,
                        retry_after=too_early.total_seconds(),
                    )
                )
            elif (refused := self._check_message_id(message)) is not None:
                results.append(refused)
            elif self._batched(message, now):
                requests.append([message])  # its own batch id, so its own request
            elif message.sendgrid_template_id:
                groups.setdefault(self._group_key(message), []).append(message)
            else:
                requests.append([message])
        for members in groups.values():
            for start in range(0, len(members), self.max_batch):
                requests.append(members[start : start + self.max_batch])
        if not requests:
            return results
        halt = _Halt(departing, requests, 2 * self.workers)
        # The first request goes alone: a wrong key then costs one request, not `workers`.
        results.extend(self._deliver(requests[0], now, halt, index=0))
        if len(requests) > 1:
            numbered = list(enumerate(requests))[1:]
            for done in self._workers.map(
                lambda item: self._deliver(item[1], now, halt, index=item[0]), numbered
            ):
                results.extend(done)
        return results

    def close(self) -> None:
        """Stop the worker threads and close the kept-alive connections; safe to call
        again, and a later ``send`` starts afresh."""
        self._workers.close()
        self._clients.close()

    def _deliver(
        self,
        messages: list[OutgoingMessage],
        now: datetime,
        halt: _Halt,
        *,
        resend: bool = True,
        index: int | None = None,
    ) -> list[SendResult]:
        """Send ``messages`` as one request; map the outcome to one result per message.

        ``index``: the request's place in the ``send`` call (its in-flight record is made
        with its window's); None: recorded on its own (a re-send)."""
        if halt.reason is not None:
            return [SendResult.failed(m, halt.reason, permanent=False) for m in messages]
        batch_id: str | None = None
        if len(messages) == 1 and self._batched(messages[0], now):
            try:
                batch_id = self._create_batch(now)
            except ConfigError as exc:
                # Only recall needs the batch scopes: the other messages still go.
                return [SendResult.failed(m, str(exc), permanent=False) for m in messages]
            except ProviderError as exc:  # no mail was sent: a later run makes a new batch
                wait = exc.retry_after if isinstance(exc, RetryableError) else None
                reason = f"{exc}; no batch id for recall, the message was not sent"
                return [
                    SendResult.failed(m, reason, permanent=False, retry_after=wait)
                    for m in messages
                ]
            except Exception as exc:
                name = type(exc).__name__
                log.warning("%s while creating a SendGrid batch for %s", name, _touches(messages))
                reason = f"unexpected {name} while creating a SendGrid batch id; not sent"
                return [SendResult.failed(m, reason, permanent=False) for m in messages]
        try:
            body = self._body(messages, now)
            if batch_id is not None:
                body["batch_id"] = batch_id
        except Exception as exc:  # a bug, not a provider answer: nothing was sent
            name = type(exc).__name__
            log.warning("%s while building a SendGrid request for %s", name, _touches(messages))
            reason = f"unexpected {name} while building the SendGrid request; not sent"
            return [SendResult.failed(m, reason, permanent=False) for m in messages]
        if halt.departing is not None:
            try:
                halt.depart(messages, index)
            except Exception as exc:  # not recorded as in flight: the request is not made
                return [SendResult.failed(m, str(exc), permanent=False) for m in messages]
        try:
            sent = self._post(body, now)
        except ConfigError as exc:
            halt.set(str(exc))
            return [SendResult.failed(m, str(exc), permanent=False) for m in messages]
        except RetryableError as exc:
            return [
                SendResult.failed(m, str(exc), permanent=False, retry_after=exc.retry_after)
                for m in messages
            ]
        except AmbiguousError as exc:
            return [_ambiguous(m, str(exc), batch_id) for m in messages]
        except _Rejected as exc:
            return self._rejected(messages, exc, now, halt, resend=resend)
        except PermanentError as exc:
            return [SendResult.failed(m, str(exc), permanent=True) for m in messages]
        except _Unsent as exc:
            return [SendResult.failed(m, str(exc), permanent=False) for m in messages]
        except Exception as exc:
            # Not an answer the translator knows: the request may have been accepted. Only
            # the type is reported or logged, since the text may hold the key or an address.
            name = type(exc).__name__
            log.warning("unexpected %s from the SendGrid SDK for %s", name, _touches(messages))
            reason = f"unexpected {name} from the SendGrid SDK"
            return [_ambiguous(m, reason, batch_id) for m in messages]
        return [SendResult.sent(m, sent.message_id, recall_ref=batch_id) for m in messages]

    def _rejected(
        self,
        messages: list[OutgoingMessage],
        exc: _Rejected,
        now: datetime,
        halt: _Halt,
        *,
        resend: bool,
    ) -> list[SendResult]:
        """A 400: fail what it names; re-send the rest once when it named nothing else."""
        named: dict[int, list[tuple[str, str]]] = {}
        general: list[str] = []
        for field, text in exc.errors:
            match = _PERSONALIZATION.match(field or "")
            if match and int(match.group(1)) < len(messages):
                named.setdefault(int(match.group(1)), []).append((match.group(2) or "", text))
            else:
                general.append(_describe(field, text))
        results: list[SendResult] = []
        for index, problems in named.items():
            message = messages[index]
            detail = "; ".join(_describe(f, t) for f, t in problems)
            if any(_RECIPIENT_FIELD.match(f) or _ADDRESS_MESSAGE.search(t) for f, t in problems):
                results.append(
                    SendResult.failed(
                        message,
                        f"SendGrid 400: invalid recipient address ({detail})",
                        permanent=True,
                        suppress="invalid",
                    )
                )
            else:
                results.append(
                    SendResult.failed(message, f"SendGrid 400: {detail}", permanent=True)
                )
        rest = [m for i, m in enumerate(messages) if i not in named]
        if not rest:
            return results
        fixes = _config_fixes(f for f, _ in exc.errors if not _PERSONALIZATION.match(f or ""))
        if fixes:
            # The operator's configuration, not the recipients: stop the batch as for a 401.
            reason = f"SendGrid 400: {'; '.join(general)}; check {' and '.join(fixes)}"
            halt.set(reason)
            results.extend(SendResult.failed(m, reason, permanent=False) for m in rest)
        elif general:
            reason = "SendGrid 400: " + "; ".join(general)
            # A refused batch id is this run's (a new one is made next time), not the mail's.
            permanent = not any(f == "batch_id" for f, _ in exc.errors)
            results.extend(SendResult.failed(m, reason, permanent=permanent) for m in rest)
        elif resend:
            # A 400 rejects the whole request: the others were not sent, so send them now.
            results.extend(self._deliver(rest, now, halt, resend=False))
        else:
            reason = "SendGrid 400 for other recipients of the same request; not sent"
            results.extend(SendResult.failed(m, reason, permanent=False) for m in rest)
        return results

    def _post(self, body: dict[str, Any], now: datetime) -> _Sent:
        """POST ``body``, retrying what is retryable; raise the engine's errors."""
        attempt = 0
        while True:
            attempt += 1
            try:
                with self._clients.borrow() as client:
                    response = client.client.mail.send.post(request_body=body, timeout=self.timeout)
            except Exception as exc:
                where = _raised_before_sending(exc)
                if where is not None:
                    raise _Unsent(_unsent_reason(exc, where)) from None
                error = _translate(exc, now=now, timeout=self.timeout)
                if error is None:
                    raise
                if not isinstance(error, RetryableError):
                    raise _scrubbed(error, self._api_key) from exc
                wait = error.retry_after if error.retry_after is not None else _backoff(attempt)
                if attempt >= self.max_attempts or wait > _MAX_IN_PROCESS_WAIT:
                    plural = "s" if attempt > 1 else ""
                    raise RetryableError(
                        _scrub(f"{error} after {attempt} attempt{plural}", self._api_key),
                        provider=PROVIDER,
                        status=error.status,
                        retry_after=wait,
                    ) from exc
                self._sleep(wait)
                continue
            return _Sent(_header(response.headers, "X-Message-Id"))

    # -- reconciliation: the Email Activity API --------------------------------------

    #: how long after its delivery time a message may still be missing from the activity
    #: feed (SendGrid indexes it within minutes); absent before that proves nothing
    activity_delay: ClassVar[timedelta] = timedelta(minutes=10)
    #: touches asked about in one Email Activity query (``… OR …``, one recipient each)
    activity_group: ClassVar[int] = 50
    #: Email Activity queries one run makes: SendGrid allows 6 a minute
    #: (twilio.com/docs/sendgrid/api-reference/email-activity, "Rate limits")
    activity_queries_per_run: ClassVar[int] = 5

    def reconcile(self, inquiries: Sequence[Inquiry], now: datetime) -> list[ReconcileResult]:
        """Look for ambiguous emails in SendGrid's Email Activity by their ``touch_id``.

        ``GET /v3/messages?query=unique_args['touch_id']="…" OR …``: the custom argument
        every message carries. The answer does not echo custom arguments, so each query
        asks for touches to distinct recipients and an answer is matched by ``to_email``.
        Found: delivered. Missing once ``activity_delay`` has passed since its delivery
        time: SendGrid never accepted it; sooner: ask again later. An account without the
        Email Activity add-on (401/403) cannot tell: a person checks. At most
        ``activity_queries_per_run`` queries, each tried once (the feed allows 6 a minute):
        what is left, or meets a 429, is asked by the next run.
        """
        results: list[ReconcileResult] = []
        denied: str | None = None
        later: str | None = None
        for queries, group in enumerate(_by_recipient(inquiries, self.activity_group)):
            if denied is not None:
                results.extend(ReconcileResult(i.touch_id, "unknown", denied) for i in group)
                continue
            if later is None and queries >= self.activity_queries_per_run:
                later = "Email Activity allows 6 queries a minute; asked by the next run"
            if later is not None:
                results.extend(ReconcileResult(i.touch_id, "later", later) for i in group)
                continue
            query = " OR ".join(f"unique_args['touch_id']=\"{i.touch_id}\"" for i in group)
            params = {"query": query, "limit": 1000}
            try:
                with self._clients.borrow() as client:
                    response = self._api(
                        client,
                        lambda c, p=params: c.client.messages.get(
                            query_params=p, timeout=self.timeout
                        ),
                        now,
                        attempts=1,
                    )
                listed = json.loads(response.body or b"{}").get("messages")
            except ConfigError:
                denied = "the API key has no access to the Email Activity API (its add-on)"
                results.extend(ReconcileResult(i.touch_id, "unknown", denied) for i in group)
                continue
            except RetryableError as exc:
                later = f"Email Activity API: {exc}"
                results.extend(ReconcileResult(i.touch_id, "later", later) for i in group)
                continue
            except Exception as exc:
                why = f"Email Activity API unavailable ({type(exc).__name__})"
                results.extend(ReconcileResult(i.touch_id, "later", why) for i in group)
                continue
            if not isinstance(listed, list):
                why = "Email Activity API answered something that is not a message list"
                results.extend(ReconcileResult(i.touch_id, "later", why) for i in group)
                continue
            found = {
                str(item.get("to_email") or "").lower(): item
                for item in listed
                if isinstance(item, dict)
            }
            for inquiry in group:
                results.append(self._activity_answer(inquiry, found.get(inquiry.to.lower()), now))
        return results

    def _activity_answer(
        self, inquiry: Inquiry, item: dict[str, Any] | None, now: datetime
    ) -> ReconcileResult:
        if item is not None:
            return ReconcileResult(
                inquiry.touch_id,
                "delivered",
                f"SendGrid activity shows it {item.get('status') or 'processed'}",
                # msg_id is the X-Message-Id the send returned, then ".filter…"
                provider_message_id=str(item.get("msg_id") or "").split(".")[0] or None,
            )
        if now >= max(_utc(inquiry.since), _utc(inquiry.send_at)) + self.activity_delay:
            why = "SendGrid activity has no such message"
            return ReconcileResult(inquiry.touch_id, "absent", why)
        why = "SendGrid activity may still be indexing it"
        return ReconcileResult(inquiry.touch_id, "later", why)

    # -- recall: batch ids and scheduled sends ---------------------------------------

    def cancel(self, recalls: Sequence[Recall], now: datetime) -> list[RecallResult]:
        """Cancel the batches of scheduled messages; one result per recall.

        ``too_late`` inside :attr:`cancel_cutoff` of ``send_at`` (no request). Otherwise the
        batch's status decides: already ``cancel`` (an earlier attempt whose answer was
        lost) is ``cancelled``; ``pause`` is changed to ``cancel``; none is set to
        ``cancel`` if one of :attr:`max_held_batches` slots is free, else ``failed`` with
        ``retry_after``. No connection, 429, 5xx and timeouts are ``failed`` with
        ``retry_after``; a batch id SendGrid does not know is ``failed`` with the reason.
        """
        results: list[RecallResult] = []
        pending: list[Recall] = []
        for recall in recalls:
            left = _utc(recall.send_at) - now
            if left < self.cancel_cutoff:
                minutes = int(self.cancel_cutoff.total_seconds() // 60)
                when = (
                    "its send time has passed"
                    if left <= timedelta(0)
                    else f"it is due in {_minutes(left)}"
                )
                results.append(
                    RecallResult(
                        recall.touch_id,
                        "too_late",
                        f"SendGrid cancels no later than {minutes} minutes before send_at; {when}",
                    )
                )
            else:
                pending.append(recall)
        if not pending:
            return results
        with self._clients.borrow() as client:
            try:
                slots = self._slots(client, now)
            except Exception as exc:
                reason, wait = self._recall_failure(exc, "reading the scheduled sends")
                return results + [
                    RecallResult(r.touch_id, "failed", reason, retry_after=wait) for r in pending
                ]
            stop: tuple[str, float | None] | None = None
            for recall in pending:
                if stop is not None:
                    results.append(RecallResult(recall.touch_id, "failed", *stop))
                    continue
                try:
                    results.append(self._cancel_one(client, recall, slots, now))
                except Exception as exc:
                    reason, wait = self._recall_failure(exc, f"cancelling touch {recall.touch_id}")
                    results.append(RecallResult(recall.touch_id, "failed", reason, wait))
                    if isinstance(exc, ConfigError | RetryableError):
                        stop = (reason, wait)  # the rest would meet the same answer
        return results

    def release(self, recalls: Sequence[Recall], now: datetime) -> list[int]:
        """Delete the cancellations whose ``send_at`` is :attr:`release_after` past, which
        frees their slots; return the touch ids released (also those SendGrid no longer
        holds). A batch found paused is left alone: deleting a pause would deliver it.
        Errors leave the rest for the next run."""
        due = [r for r in recalls if now >= _utc(r.send_at) + self.release_after]
        if not due:
            return []
        released: list[int] = []
        with self._clients.borrow() as client:
            try:
                slots = self._slots(client, now)
            except Exception as exc:
                log.warning("SendGrid: %s", self._recall_failure(exc, "reading scheduled sends")[0])
                return []
            for recall in due:
                status = slots.statuses.get(recall.ref)
                if status is None:
                    released.append(recall.touch_id)  # nothing held any more
                    continue
                if status != "cancel":
                    log.warning(
                        "SendGrid batch of touch %s is %s, not cancelled; not released",
                        recall.touch_id,
                        status,
                    )
                    continue
                try:
                    self._api(
                        client,
                        lambda c, ref=recall.ref: c.client.user.scheduled_sends._(ref).delete(
                            timeout=self.timeout
                        ),
                        now,
                    )
                except _Refusal as exc:
                    if exc.status == 404 and exc.says("not found"):
                        released.append(recall.touch_id)
                    else:
                        log.warning(
                            "SendGrid kept the cancellation of touch %s: %s", recall.touch_id, exc
                        )
                    continue
                except Exception as exc:
                    reason = self._recall_failure(exc, f"releasing touch {recall.touch_id}")[0]
                    log.warning("SendGrid: %s; left for the next run", reason)
                    if isinstance(exc, ConfigError | RetryableError):
                        break
                    continue
                released.append(recall.touch_id)
        return released

    def _cancel_one(
        self, client: Any, recall: Recall, slots: _Slots, now: datetime
    ) -> RecallResult:
        ref = recall.ref
        status = slots.statuses.get(ref)
        if status == "cancel":
            return RecallResult(recall.touch_id, "cancelled", "already cancelled")
        if status == "pause":
            self._set_cancel(client, ref, now)
            slots.statuses[ref] = "cancel"
            return RecallResult(recall.touch_id, "cancelled", "the paused batch was cancelled")
        if not slots.free():
            return self._no_slot(recall, now)
        try:
            self._api(
                client,
                lambda c: c.client.user.scheduled_sends.post(
                    request_body={"batch_id": ref, "status": "cancel"}, timeout=self.timeout
                ),
                now,
            )
        except _Refusal as exc:
            if exc.says("exists"):
                # A status is set already (an attempt whose answer was lost, or a pause).
                return self._settle_existing(client, recall, slots, now)
            if exc.says("max limit"):
                slots.full = True
                return self._no_slot(recall, now)
            if exc.says("invalid batch id"):
                return RecallResult(
                    recall.touch_id,
                    "failed",
                    f"SendGrid does not know this batch id ({exc}); it cannot be cancelled",
                )
            return RecallResult(recall.touch_id, "failed", f"{exc}; not cancelled")
        slots.statuses[ref] = "cancel"
        return RecallResult(recall.touch_id, "cancelled")

    def _settle_existing(
        self, client: Any, recall: Recall, slots: _Slots, now: datetime
    ) -> RecallResult:
        """The batch has a status the listing did not show: read it, cancel a pause."""
        try:
            response = self._api(
                client,
                lambda c: c.client.user.scheduled_sends._(recall.ref).get(timeout=self.timeout),
                now,
            )
        except _Refusal as exc:
            return RecallResult(
                recall.touch_id, "failed", f"{exc}; the batch's status is unknown", 60.0
            )
        entries = _json_list(response.body)
        status = next((e.get("status") for e in entries if e.get("batch_id") == recall.ref), None)
        if status not in ("pause", "cancel"):
            return RecallResult(
                recall.touch_id, "failed", "SendGrid shows no status for the batch", 60.0
            )
        if status == "pause":
            self._set_cancel(client, recall.ref, now)
        slots.statuses[recall.ref] = "cancel"
        done = "the paused batch was cancelled" if status == "pause" else "already cancelled"
        return RecallResult(recall.touch_id, "cancelled", done)

    def _set_cancel(self, client: Any, ref: str, now: datetime) -> None:
        self._api(
            client,
            lambda c: c.client.user.scheduled_sends._(ref).patch(
                request_body={"status": "cancel"}, timeout=self.timeout
            ),
            now,
        )

    def _no_slot(self, recall: Recall, now: datetime) -> RecallResult:
        until_cutoff = (_utc(recall.send_at) - self.cancel_cutoff - now).total_seconds()
        return RecallResult(
            recall.touch_id,
            "failed",
            f"SendGrid allows at most {self.max_held_batches} batches paused or cancelled at "
            "one time and all are held; a slot frees once a cancelled send's time has passed "
            "and it is released",
            retry_after=max(1.0, min(self.slot_wait, until_cutoff)),
        )

    def _slots(self, client: Any, now: datetime) -> _Slots:
        """The paused and cancelled batches (``GET /v3/user/scheduled_sends``)."""
        response = self._api(
            client, lambda c: c.client.user.scheduled_sends.get(timeout=self.timeout), now
        )
        statuses = {
            str(e["batch_id"]): str(e.get("status"))
            for e in _json_list(response.body)
            if isinstance(e.get("batch_id"), str)
        }
        return _Slots(statuses, self.max_held_batches)

    def _create_batch(self, now: datetime) -> str:
        """A new batch id (``POST /v3/mail/batch``)."""
        with self._clients.borrow() as client:
            response = self._api(
                client, lambda c: c.client.mail.batch.post(timeout=self.timeout), now
            )
        try:
            batch_id = json.loads(response.body or b"").get("batch_id")
        except (ValueError, AttributeError):
            batch_id = None
        if not isinstance(batch_id, str) or not batch_id:
            raise AmbiguousError("SendGrid answered no batch_id", provider=PROVIDER)
        return batch_id

    def _api(
        self,
        client: Any,
        call: Callable[[Any], Any],
        now: datetime,
        *,
        attempts: int | None = None,
    ) -> Any:
        """One request of the batch, scheduled-sends or activity API, its errors translated.

        Retryable failures (no connection, 429, 503) are retried here as for Mail Send, up
        to ``attempts`` (default ``max_attempts``); these requests may be repeated, since a
        repeated cancel is recognised.
        """
        limit = attempts or self.max_attempts
        attempt = 0
        while True:
            attempt += 1
            try:
                return call(client)
            except Exception as exc:
                where = _raised_before_sending(exc)
                if where is not None:
                    raise _Unsent(_unsent_reason(exc, where)) from None
                if isinstance(exc, HTTPError) and exc.status_code in (401, 403):
                    raise ConfigError(
                        _scrub(_scheduling_denied(exc.status_code, exc.body), self._api_key)
                    ) from None
                if (
                    isinstance(exc, HTTPError)
                    and 400 <= exc.status_code < 500
                    and exc.status_code != 429
                ):
                    errors = [(f, _scrub(m, self._api_key)) for f, m in _errors(exc.body)]
                    raise _Refusal(exc.status_code, errors) from None
                error = _translate(exc, now=now, timeout=self.timeout)
                if error is None:
                    raise
                if not isinstance(error, RetryableError):
                    raise _scrubbed(error, self._api_key) from exc
                wait = error.retry_after if error.retry_after is not None else _backoff(attempt)
                if attempt >= limit or wait > _MAX_IN_PROCESS_WAIT:
                    raise RetryableError(
                        _scrub(f"{error} after {attempt} attempt(s)", self._api_key),
                        provider=PROVIDER,
                        status=error.status,
                        retry_after=wait,
                    ) from exc
                self._sleep(wait)

    def _recall_failure(self, exc: Exception, doing: str) -> tuple[str, float | None]:
        """The reason and retry wait of a failed recall request (never the key)."""
        if isinstance(exc, ConfigError):
            return str(exc), None
        if isinstance(exc, RetryableError):
            wait = exc.retry_after if exc.retry_after is not None else _backoff(1)
            return f"{exc} while {doing}", wait
        if isinstance(exc, _Refusal):
            return f"{exc} while {doing}", 60.0
        if isinstance(exc, ProviderError):  # a timeout or 5xx: repeating it is safe
            return f"{exc} while {doing}", 60.0
        name = type(exc).__name__
        log.warning("unexpected %s from the SendGrid SDK while %s", name, doing)
        return f"unexpected {name} from the SendGrid SDK while {doing}", 60.0

    # -- request bodies --------------------------------------------------------------

    def batch_key(self, message: OutgoingMessage) -> tuple[str, ...]:
        """Dynamic-template messages of one group share requests of up to 1,000.

        The group includes the Reply-To (request-level only at SendGrid), so messages with
        different ``reply_to`` never share a request; a ``recallable`` message goes alone,
        since it carries a batch id of its own.
        """
        if not message.sendgrid_template_id or message.recallable:
            return ()
        return tuple("" if part is None else str(part) for part in self._group_key(message))

    def _group_key(self, message: OutgoingMessage) -> tuple[Any, ...]:
        reply_to = self._reply_to(message)
        return (
            message.sendgrid_template_id,
            message.cadence_id,
            message.step_id,
            self._sender_name(message),
            reply_to.get("email") if reply_to else None,
            reply_to.get("name") if reply_to else None,
        )

    def _sender_name(self, message: OutgoingMessage) -> str | None:
        return message.recruiter_name or self.company_name

    @staticmethod
    def _reply_to(message: OutgoingMessage) -> dict[str, str] | None:
        """The per-touch ``reply_to``, else the recruiter's address; named for the recruiter."""
        email = message.reply_to or message.recruiter_email
        if not email:
            return None
        reply_to = {"email": email}
        if message.recruiter_name:
            reply_to["name"] = message.recruiter_name
        return reply_to

    def _batched(self, message: OutgoingMessage, now: datetime) -> bool:
        """Whether ``message`` goes with a batch id: recallable, and due far enough ahead
        that a cancel can still reach SendGrid before the cut-off."""
        return message.recallable and message.send_at - now > self.cancel_cutoff

    @staticmethod
    def _check_message_id(message: OutgoingMessage) -> SendResult | None:
        """A refusal for a ``message_id`` that is not a valid msg-id; None when it is."""
        if message.message_id is None or _MESSAGE_ID.match(message.message_id.strip("<>")):
            return None
        return SendResult.failed(
            message,
            "message_id is not a valid Message-ID (id-left@id-right, printable ASCII, no "
            "spaces or angle brackets); not sent",
            permanent=True,
        )

    def _body(self, messages: list[OutgoingMessage], now: datetime) -> dict[str, Any]:
        """The Mail Send body for ``messages`` (one template group, or one rendered message)."""
        first = messages[0]
        sender: dict[str, str] = {"email": self.from_email}
        if name := self._sender_name(first):
            sender["name"] = name
        body: dict[str, Any] = {
            "personalizations": [self._personalization(m, now) for m in messages],
            "from": sender,
        }
        if reply_to := self._reply_to(first):
            body["reply_to"] = reply_to
        if first.sendgrid_template_id:
            body["template_id"] = first.sendgrid_template_id
        else:
            body["subject"] = first.subject
            body["content"] = [
                {"type": "text/plain", "value": first.body},
                {"type": "text/html", "value": plain_to_html(first.body)},
            ]
        if categories := _categories(first.cadence_id, first.step_id):
            body["categories"] = categories
        if self.asm_group_id is not None:
            body["asm"] = {"group_id": self.asm_group_id}
        return body

    def _personalization(self, message: OutgoingMessage, now: datetime) -> dict[str, Any]:
        personalization: dict[str, Any] = {
            "to": [{"email": message.to}],
            "custom_args": {"touch_id": str(message.touch_id)},
            "headers": {"List-Unsubscribe": self._unsubscribe},
        }
        if message.message_id:
            personalization["headers"]["Message-ID"] = f"<{message.message_id.strip('<>')}>"
        if message.sendgrid_template_id:
            personalization["dynamic_template_data"] = dict(message.template_data)
        if message.send_at > now:
            # Rounded up: a send_at truncated to the second could go out early.
            personalization["send_at"] = math.ceil(message.send_at.timestamp())
        return personalization


def _ambiguous(message: OutgoingMessage, reason: str, batch_id: str | None) -> SendResult:
    """An ambiguous result that keeps the batch id: the engine can still cancel it."""
    return SendResult(message.touch_id, "ambiguous", reason=reason, recall_ref=batch_id)


def _by_recipient(inquiries: Sequence[Inquiry], size: int) -> list[list[Inquiry]]:
    """Groups of at most ``size`` inquiries, no two in a group to the same address."""
    groups: list[tuple[list[Inquiry], set[str]]] = []
    for inquiry in inquiries:
        address = inquiry.to.lower()
        for members, addresses in groups:
            if len(members) < size and address not in addresses:
                members.append(inquiry)
                addresses.add(address)
                break
        else:
            groups.append(([inquiry], {address}))
    return [members for members, _ in groups]


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _minutes(delta: timedelta) -> str:
    minutes = max(1, math.ceil(delta.total_seconds() / 60))
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def _json_list(body: bytes | str | None) -> list[dict[str, Any]]:
    """The objects of a JSON array body; anything else is an unexpected answer."""
    try:
        parsed = json.loads(body or b"")
    except (ValueError, UnicodeDecodeError):
        parsed = None
    if not isinstance(parsed, list):
        raise AmbiguousError("SendGrid answered something other than a list", provider=PROVIDER)
    return [e for e in parsed if isinstance(e, dict)]


def _scheduling_denied(status: int, body: bytes | str | None) -> str:
    detail = "; ".join(_describe(f, m) for f, m in _errors(body)) or "no details"
    if status == 401:
        return f"SendGrid 401: the API key in {CREDENTIAL} was rejected ({detail}); check its value"
    return (
        f"SendGrid 403: {detail}; check that the key in {CREDENTIAL} has the mail.batch and "
        "user.scheduled_sends scopes (create, read, update, delete)"
    )


def _categories(*names: str) -> list[str]:
    """SendGrid categories: ASCII, at most 255 characters each, unique, at most 10."""
    out: list[str] = []
    for name in names:
        category = (name or "").encode("ascii", "ignore").decode()[:_MAX_CATEGORY_LENGTH]
        if category and category not in out:
            out.append(category)
    return out[:_MAX_CATEGORIES]


def _backoff(attempt: int) -> float:
    return min(30.0, 0.5 * 2 ** (attempt - 1))


def _touches(messages: Sequence[OutgoingMessage]) -> str:
    """``touches 1, 2, 3`` for a log line (ids only: no address), at most ten named."""
    ids = ", ".join(str(m.touch_id) for m in messages[:10])
    more = f" and {len(messages) - 10} more" if len(messages) > 10 else ""
    return f"touches {ids}{more}"


def _config_fixes(fields: Iterable[str | None]) -> list[str]:
    """The settings to fix when every field is a configuration field; else nothing."""
    fixes: list[str] = []
    for field in fields:
        fix = _CONFIG_FIELDS.get(field or "")
        if fix is None:
            return []
        if fix not in fixes:
            fixes.append(fix)
    return fixes


def _raised_before_sending(exc: BaseException) -> str | None:
    """The ``http.client`` function that raised ``exc`` while the request line or headers
    were still being buffered (nothing written yet), or None when that is not certain."""
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        where = (frame.f_globals.get("__name__"), frame.f_code.co_name)
        if where in _BEFORE_SENDING:
            return where[1]
        tb = tb.tb_next
    return None


def _unsent_reason(exc: BaseException, where: str) -> str:
    name = type(exc).__name__
    if where == "putheader":
        hint = f"a header value was refused; check {CREDENTIAL} for a line break or stray character"
    else:
        hint = "the request line was refused; check SENDGRID_BASE_URL"
    return f"SendGrid request not sent: {name} while building it ({hint})"


# -- error translation (the edge) ------------------------------------------------------


def _translate(exc: Exception, *, now: datetime, timeout: float) -> OutreachError | None:
    """The engine's error for an SDK or urllib exception; None for anything else."""
    if isinstance(exc, HTTPError):
        return _from_status(exc.status_code, exc.body, exc.headers or {}, now)
    if isinstance(exc, urllib.error.URLError):
        # urllib wraps every error raised while connecting and writing the request (refused,
        # unreachable, DNS, a connect timeout): SendGrid never saw a whole request.
        reason = exc.reason
        text = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
        return RetryableError(f"cannot connect to SendGrid ({text})", provider=PROVIDER)
    if isinstance(exc, TimeoutError):
        return AmbiguousError(
            f"SendGrid did not answer within {timeout:g} s after the request was sent; "
            "it may have been accepted",
            provider=PROVIDER,
        )
    if isinstance(exc, OSError | http.client.HTTPException):
        return AmbiguousError(
            f"the connection to SendGrid failed after the request was sent "
            f"({type(exc).__name__}); it may have been accepted",
            provider=PROVIDER,
        )
    return None


def _from_status(
    status: int, body: bytes | str | None, headers: Mapping[str, str], now: datetime
) -> OutreachError:
    errors = _errors(body)
    detail = "; ".join(_describe(f, m) for f, m in errors) or "no details"
    if status == 429:
        return RetryableError(
            "SendGrid 429 (rate limited)",
            provider=PROVIDER,
            status=status,
            retry_after=_retry_after(headers, now),
        )
    if status == 503:
        return RetryableError(
            f"SendGrid 503 ({detail})",
            provider=PROVIDER,
            status=status,
            retry_after=_retry_after(headers, now),
        )
    if status >= 500:
        return AmbiguousError(
            f"SendGrid {status} ({detail}); the request may have been accepted",
            provider=PROVIDER,
            status=status,
        )
    if status == 401:
        return ConfigError(
            f"SendGrid 401: the API key in {CREDENTIAL} was rejected ({detail}); check its value"
        )
    if status == 403:
        return ConfigError(
            f"SendGrid 403: {detail}; check that the key in {CREDENTIAL} has the mail.send "
            "scope and that the from address is a verified Sender Identity"
        )
    if status == 404:
        return ConfigError(
            f"SendGrid 404: the Mail Send endpoint was not found ({detail}); check "
            "SENDGRID_BASE_URL"
        )
    if status == 400:
        return _Rejected(f"SendGrid 400: {detail}", errors)
    if status == 413:
        return PermanentError(
            f"SendGrid 413: the request is over 20 MB ({detail})", provider=PROVIDER, status=413
        )
    return PermanentError(f"SendGrid {status} ({detail})", provider=PROVIDER, status=status)


def _errors(body: bytes | str | None) -> list[tuple[str | None, str]]:
    """(field, message) pairs from SendGrid's ``{"errors": [...]}`` body."""
    try:
        parsed = json.loads(body or b"")
    except (ValueError, UnicodeDecodeError):
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")
        return [(None, text.strip()[:200])] if text.strip() else []
    entries = parsed.get("errors") if isinstance(parsed, dict) else None
    if not isinstance(entries, list):
        return []
    pairs: list[tuple[str | None, str]] = []
    for entry in entries:
        if isinstance(entry, dict):
            field = entry.get("field")
            pairs.append((field if isinstance(field, str) else None, str(entry.get("message", ""))))
    return pairs


def _describe(field: str | None, message: str) -> str:
    return f"{field}: {message}" if field else message


def _retry_after(headers: Mapping[str, str], now: datetime) -> float | None:
    """``Retry-After`` seconds, else ``X-RateLimit-Reset`` (a Unix time) minus now."""
    seconds = retry_after_seconds(_header(headers, "Retry-After"), now=now)
    if seconds is not None:
        return seconds
    reset = _header(headers, "X-RateLimit-Reset")
    try:
        return max(0.0, float(reset) - now.timestamp()) if reset else None
    except ValueError:
        return None


def _header(headers: Any, name: str) -> str | None:
    """A header by name, case-insensitively, from an ``HTTPMessage`` or a plain mapping."""
    if headers is None:
        return None
    value = headers.get(name)
    if value is None and isinstance(headers, Mapping):
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value


def _scrub(text: str, api_key: str) -> str:
    """``text`` without email addresses (SendGrid echoes some) or the API key."""
    if api_key:
        text = text.replace(api_key, "[api key]")
    return _EMAIL.sub("[address]", text)


def _scrubbed(error: OutreachError, api_key: str) -> OutreachError:
    """``error`` with its message scrubbed (the type and its fields kept)."""
    clean = _scrub(str(error), api_key)
    if isinstance(error, _Rejected):
        return _Rejected(
            _scrub(error.args[0], api_key), [(f, _scrub(m, api_key)) for f, m in error.errors]
        )
    if isinstance(error, ConfigError):
        return ConfigError(clean)
    assert isinstance(error, ProviderError)
    return type(error)(clean, provider=error.provider, status=error.status)
