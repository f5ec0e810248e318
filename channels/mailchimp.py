"""The Mailchimp Transactional (Mandrill) email channel, through the official SDK.

Chosen with ``OUTREACH_EMAIL_PROVIDER=mailchimp``; a peer of :mod:`channels.email`
(SendGrid) behind the same :class:`channels.base.Channel` interface and the same rules:

* Each message is one ``POST /messages/send`` (``async: false``, so the answer carries
  the recipient's status): subject, text and HTML, ``from_email`` and the recruiter's (or
  the company's) name, ``Reply-To`` (the touch's plus-addressed ``OUTREACH_REPLY_TO``
  address, else the recruiter's), the touch's ``Message-Id``, ``List-Unsubscribe``,
  ``metadata.touch_id`` (echoed in every webhook event; no PII) and the cadence and step
  as tags. A message due later carries ``send_at`` (UTC ``YYYY-MM-DD HH:MM:SS``, rounded up
  to the second: mail never leaves early).
* The per-recipient answer decides the result: ``sent``/``queued``: sent; ``scheduled``:
  sent with the message ``_id`` as ``recall_ref``; ``rejected``: failed with the
  ``reject_reason`` (``hard-bounce`` suppresses the address as bounced, ``spam`` and
  ``unsub`` as opted out; ``soft-bounce`` and ``test-mode-limit`` may pass later;
  ``invalid-sender`` and ``unsigned`` are the sender's configuration and stop the batch);
  ``invalid``: failed, suppressed as invalid.
* Errors (:mod:`channels.mandrill_api`): a connection refused, 429 and 503 are retried with
  backoff and ``Retry-After``, then failed for a later run; a timeout after the request
  left, or any other 5xx, is ``ambiguous`` and never re-sent; a bad key stops the batch
  after one request. ``departing`` records each request in flight before it leaves.

Recall: :meth:`MailchimpEmail.cancel` is ``/messages/cancel-scheduled`` by id, one by one
(Mandrill has no batch and no cut-off short of the send time). Reconciliation searches the
recipient's messages (``/messages/search``, ``email:"<address>"`` since the day before the
claim) and matches the ``metadata.touch_id`` each result carries, so it needs no custom
metadata index; a message still scheduled is found with ``/messages/list-scheduled``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

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
from channels.email import plain_to_html
from channels.mailchimp_reconcile import reconcile
from channels.mandrill_api import DEFAULT_BASE_URL, MandrillApi, UnknownMessage, Unsent
from channels.pool import Departures, WorkerPool
from outreach.clock import Clock, SystemClock
from outreach.errors import (
    AmbiguousError,
    ConfigError,
    OutreachError,
    PermanentError,
    RetryableError,
)

__all__ = ["MailchimpEmail", "mandrill_time"]

log = logging.getLogger("outreach.channels.mailchimp")

#: reject_reason -> (permanent, suppress)
_REJECTS: dict[str, tuple[bool, str | None]] = {
    "hard-bounce": (True, "bounced"),
    "spam": (True, "opted_out"),
    "unsub": (True, "opted_out"),
    "invalid": (True, "invalid"),
    "soft-bounce": (False, None),
    "test-mode-limit": (False, None),
    "custom": (True, None),
    "rule": (True, None),
}
#: reject reasons that are the sender's configuration: the whole batch would meet them
_SENDER_REJECTS = {"invalid-sender": "MAILCHIMP_FROM_EMAIL", "unsigned": "MAILCHIMP_FROM_EMAIL"}
_MAX_TAG = 50


def mandrill_time(at: datetime) -> str:
    """``at`` as Mandrill's UTC ``YYYY-MM-DD HH:MM:SS``, rounded up to the second."""
    utc = _utc(at)
    whole = datetime.fromtimestamp(math.ceil(utc.timestamp()), tz=UTC)
    return whole.strftime("%Y-%m-%d %H:%M:%S")


class _Halt:
    """Set once a request met the operator's configuration; the rest of the batch stops."""

    def __init__(self) -> None:
        self.reason: str | None = None


class MailchimpEmail(Channel):
    """Sends email through Mailchimp Transactional ``/messages/send``.

    ``from_email`` must be a verified sending domain's address; ``company_name`` names the
    sender when the touch has no recruiter. ``clock`` and ``sleep`` are injected so tests
    never wait.

    Example::

        channel = MailchimpEmail(key, "jobs@acme.example", base_url=sandbox_url)
        results = channel.send(messages)
        channel.cancel([Recall(r.touch_id, r.recall_ref, send_at)], now)
    """

    name: ClassVar[str] = "email"
    max_batch: ClassVar[int] = 50
    rate_per_second: ClassVar[float | None] = None
    #: Mandrill documents no limit; a week keeps held mail within reach of a recall
    max_schedule_ahead: ClassVar[timedelta] = timedelta(days=7)
    announces_requests: ClassVar[bool] = True
    #: how long after its send time a message may still be missing from search results
    search_delay: ClassVar[timedelta] = timedelta(minutes=10)
    #: ``/messages/search`` calls per run (Mandrill meters search separately)
    searches_per_run: ClassVar[int] = 20
    #: results asked of one search; a full page without the touch proves nothing
    search_limit: ClassVar[int] = 100

    def __init__(
        self,
        api_key: str,
        from_email: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        company_name: str | None = None,
        timeout: float = 10.0,
        max_attempts: int = 4,
        workers: int = 4,
        clock: Clock | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.from_email = from_email
        self.company_name = company_name
        self.workers = max(1, workers)
        self._clock = clock or SystemClock()
        self.api = MandrillApi(
            api_key,
            base_url=base_url,
            timeout=timeout,
            max_attempts=max_attempts,
            clock=self._clock,
            sleep=sleep,
        )
        self._unsubscribe = f"<mailto:{from_email}?subject=unsubscribe>"
        self._pool = WorkerPool(self.workers, "mailchimp")

    def __repr__(self) -> str:
        return f"MailchimpEmail(from_email={self.from_email!r})"  # never the key

    def close(self) -> None:
        """Stop the worker threads; a later ``send`` starts afresh."""
        self._pool.close()

    # -- sending ---------------------------------------------------------------------

    def send(
        self, batch: Sequence[OutgoingMessage], departing: Departing | None = None
    ) -> list[SendResult]:
        """Send ``batch``, one request per message; one result per message."""
        now = self._clock.now()
        results: list[SendResult] = []
        ready: list[OutgoingMessage] = []
        for message in batch:
            too_early = _utc(message.send_at) - (now + self.max_schedule_ahead)
            if too_early > timedelta(0):
                results.append(
                    SendResult.failed(
                        message,
                        "send_at is more than 7 days ahead; handed over later",
                        permanent=False,
                        retry_after=too_early.total_seconds(),
                    )
                )
            elif message.sendgrid_template_id:
                results.append(
                    SendResult.failed(
                        message,
                        "the step names a sendgrid_template_id, which Mailchimp Transactional "
                        "cannot send; remove it from the step or set OUTREACH_EMAIL_PROVIDER="
                        "sendgrid",
                        permanent=False,
                    )
                )
            else:
                ready.append(message)
        if not ready:
            return results
        halt = _Halt()
        departures = (
            Departures(departing, [[m] for m in ready], 2 * self.workers) if departing else None
        )

        def one(item: tuple[int, OutgoingMessage]) -> SendResult:
            return self._deliver(item[1], now, halt, departures, item[0])

        numbered = list(enumerate(ready))
        # The first request goes alone: a wrong key then costs one request, not `workers`.
        results.append(one(numbered[0]))
        results.extend(self._pool.map(one, numbered[1:]))
        return results

    def _deliver(
        self,
        message: OutgoingMessage,
        now: datetime,
        halt: _Halt,
        departures: Departures | None,
        index: int,
    ) -> SendResult:
        if halt.reason is not None:
            return SendResult.failed(message, halt.reason, permanent=False)
        body = self.body(message, now)
        if departures is not None:
            try:
                departures.depart(index)
            except Exception as exc:  # not recorded in flight: the request is not made
                return SendResult.failed(message, str(exc), permanent=False)
        try:
            answer = self.api.call("send", body)
        except ConfigError as exc:
            halt.reason = str(exc)
            return SendResult.failed(message, str(exc), permanent=False)
        except RetryableError as exc:
            return SendResult.failed(
                message, str(exc), permanent=False, retry_after=exc.retry_after
            )
        except AmbiguousError as exc:
            return SendResult.ambiguous(message, str(exc))
        except PermanentError as exc:
            return SendResult.failed(message, str(exc), permanent=True)
        except Unsent as exc:
            return SendResult.failed(message, str(exc), permanent=False)
        except OutreachError as exc:  # pragma: no cover - the edge raises only the above
            return SendResult.ambiguous(message, str(exc))
        return self._recipient_result(message, answer, halt)

    def _recipient_result(self, message: OutgoingMessage, answer: Any, halt: _Halt) -> SendResult:
        """The result for ``message`` from the per-recipient answer of ``/messages/send``."""
        entry = _entry_for(answer, message.to)
        if entry is None:
            why = "Mailchimp answered no status for the recipient"
            log.warning("touch %s: %s", message.touch_id, why)
            return SendResult.ambiguous(message, why)
        status = str(entry.get("status") or "")
        message_id = entry.get("_id") if isinstance(entry.get("_id"), str) else None
        if status in ("sent", "queued"):
            return SendResult.sent(message, message_id)
        if status == "scheduled":
            return SendResult.sent(message, message_id, recall_ref=message_id)
        if status == "invalid":
            return SendResult.failed(
                message,
                "Mailchimp: invalid recipient address",
                permanent=True,
                suppress="invalid",
            )
        if status == "rejected":
            reason = str(entry.get("reject_reason") or "unknown")
            if reason in _SENDER_REJECTS:
                why = f"Mailchimp rejected the sender ({reason}); check {_SENDER_REJECTS[reason]}"
                halt.reason = why
                return SendResult.failed(message, why, permanent=False)
            permanent, suppress = _REJECTS.get(reason, (True, None))
            return SendResult.failed(
                message,
                f"Mailchimp rejected the recipient ({reason})",
                permanent=permanent,
                suppress=suppress,
            )
        return SendResult.ambiguous(message, f"Mailchimp answered an unknown status {status!r}")

    def body(self, message: OutgoingMessage, now: datetime) -> dict[str, Any]:
        """The ``/messages/send`` body for ``message`` (without the key: the SDK adds it)."""
        headers = {"List-Unsubscribe": self._unsubscribe}
        reply_to = message.reply_to or message.recruiter_email
        if reply_to:
            headers["Reply-To"] = reply_to
        if message.message_id:
            headers["Message-Id"] = f"<{message.message_id.strip('<>')}>"
        content: dict[str, Any] = {
            "subject": message.subject or "",
            "text": message.body,
            "html": plain_to_html(message.body),
            "from_email": self.from_email,
            "to": [{"email": message.to, "type": "to"}],
            "headers": headers,
            "metadata": {"touch_id": str(message.touch_id)},
            "tags": _tags(message.cadence_id, message.step_id),
            "track_opens": True,
            "track_clicks": True,
            "preserve_recipients": False,
        }
        if name := (message.recruiter_name or self.company_name):
            content["from_name"] = name
        body: dict[str, Any] = {"message": content, "async": False}
        if _utc(message.send_at) > now:
            body["send_at"] = mandrill_time(message.send_at)
        return body

    # -- recall ----------------------------------------------------------------------

    def cancel(self, recalls: Sequence[Recall], now: datetime) -> list[RecallResult]:
        """Cancel scheduled messages one by one (``/messages/cancel-scheduled``).

        Past its send time: ``too_late`` without a request. ``Unknown_Message``: the
        message's ``/messages/info`` decides: sent already is ``too_late``; unknown there
        too is ``cancelled`` (an earlier cancel whose answer was lost took it). A retryable
        or configuration error fails this and the remaining recalls with ``retry_after``.
        """
        results: list[RecallResult] = []
        stop: tuple[str, float | None] | None = None
        for recall in recalls:
            if _utc(recall.send_at) <= now:
                why = "its send time has passed"
                results.append(RecallResult(recall.touch_id, "too_late", why))
                continue
            if stop is not None:
                results.append(RecallResult(recall.touch_id, "failed", stop[0], stop[1]))
                continue
            try:
                self.api.call("cancel_scheduled", {"id": recall.ref})
            except UnknownMessage:
                results.append(self._settle_unknown(recall))
                continue
            except (ConfigError, RetryableError) as exc:
                wait = exc.retry_after if isinstance(exc, RetryableError) else 300.0
                stop = (f"{exc} while cancelling", wait)
                results.append(RecallResult(recall.touch_id, "failed", stop[0], wait))
                continue
            except OutreachError as exc:  # a timeout or 5xx: cancelling again is safe
                reason = f"{exc} while cancelling touch {recall.touch_id}"
                results.append(RecallResult(recall.touch_id, "failed", reason, 60.0))
                continue
            results.append(RecallResult(recall.touch_id, "cancelled"))
        return results

    def _settle_unknown(self, recall: Recall) -> RecallResult:
        try:
            info = self.api.call("info", {"id": recall.ref}, attempts=1)
        except UnknownMessage:
            return RecallResult(
                recall.touch_id, "cancelled", "Mailchimp no longer holds the scheduled message"
            )
        except OutreachError as exc:
            return RecallResult(recall.touch_id, "failed", f"{exc} while reading it", 60.0)
        state = info.get("state") if isinstance(info, dict) else None
        return RecallResult(recall.touch_id, "too_late", f"Mailchimp already sent it ({state})")

    # -- reconciliation --------------------------------------------------------------

    def reconcile(self, inquiries: Sequence[Inquiry], now: datetime) -> list[ReconcileResult]:
        """Look for ambiguous touches at Mailchimp (see :mod:`channels.mailchimp_reconcile`)."""
        return reconcile(
            self.api,
            inquiries,
            now,
            search_delay=self.search_delay,
            searches_per_run=self.searches_per_run,
            search_limit=self.search_limit,
        )


def _entry_for(answer: Any, to: str) -> dict[str, Any] | None:
    if not isinstance(answer, list):
        return None
    entries = [e for e in answer if isinstance(e, dict)]
    for entry in entries:
        if str(entry.get("email") or "").lower() == to.lower():
            return entry
    return entries[0] if len(entries) == 1 else None


def _tags(*names: str) -> list[str]:
    """Mandrill tags: at most 50 characters, none starting with an underscore, unique."""
    out: list[str] = []
    for name in names:
        tag = (name or "").lstrip("_")[:_MAX_TAG]
        if tag and tag not in out:
            out.append(tag)
    return out


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
