"""The channel interface: one method, ``send(batch) -> results``, limits as class attributes.

The engine claims every touch in the ledger before it calls ``send`` and records each
result after, so a channel never needs to know about idempotency: it must only report,
per message, what it knows happened.

Example::

    class Carrier(Channel):
        name = "sms"
        max_batch = 1
        rate_per_second = 1.0
        max_schedule_ahead = timedelta(days=35)

        def send(self, batch):
            return [SendResult.sent(m, provider_message_id=...) for m in batch]
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal

__all__ = [
    "Channel",
    "Departing",
    "Inquiry",
    "OutgoingMessage",
    "Recall",
    "RecallResult",
    "ReconcileResult",
    "SendResult",
    "body_digest",
]

Status = Literal["sent", "failed", "ambiguous"]
RecallStatus = Literal["cancelled", "too_late", "failed", "unsupported"]
ReconcileStatus = Literal["delivered", "absent", "later", "unknown"]
#: called with the messages of one provider request immediately before it is made; it
#: raises when the request must not be made (the engine could not record it as in flight)
Departing = Callable[[Sequence["OutgoingMessage"]], None]


def body_digest(channel: str, subject: str | None, body: str) -> str:
    """The SHA-256 the ledger keeps of what a message says (never the text itself), so an
    ambiguous send can be matched against the provider's copy."""
    text = body if channel == "sms" else f"{subject or ''}\n{body}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class OutgoingMessage:
    """One rendered touch, ready for a provider. Carries no secrets.

    ``send_at`` is the delivery instant the throttle chose; a channel that can schedule
    (SendGrid ``send_at``, Twilio scheduled messages, a task's due time) delivers then.
    """

    touch_id: int
    idempotency_key: str
    person_id: int
    channel: str
    to: str
    body: str
    send_at: datetime
    cadence_id: str
    step_id: str
    template: str
    variant: str
    subject: str | None = None
    title: str | None = None
    owner_id: str | None = None
    source: str | None = None
    external_id: str | None = None
    recruiter_name: str | None = None
    recruiter_email: str | None = None
    sendgrid_template_id: str | None = None
    template_data: dict[str, Any] = field(default_factory=dict)
    #: per-touch reply address (``replies+<token>@domain``); None: the recruiter's address
    reply_to: str | None = None
    #: the Message-ID the engine chose and keeps in the ledger (without angle brackets)
    message_id: str | None = None
    #: a delivery ahead of time that may have to be cancelled (its cadence can stop):
    #: the channel schedules it so that ``cancel`` can take it back, and says how in
    #: ``SendResult.recall_ref``
    recallable: bool = False


@dataclass(frozen=True)
class SendResult:
    """What a channel knows about one message after trying to send it.

    ``sent``: accepted by the provider. ``failed``: provably not delivered; ``permanent``
    says whether retrying can ever help and ``suppress`` names the contact point state to
    record (``opted_out``, ``invalid``, ``bounced``). ``ambiguous``: may have been
    delivered; the engine never re-sends it on its own.
    """

    touch_id: int
    status: Status
    provider_message_id: str | None = None
    reason: str | None = None
    permanent: bool = False
    suppress: str | None = None
    retry_after: float | None = None
    #: what ``Channel.cancel`` needs to take a scheduled delivery back (SendGrid batch id,
    #: Twilio message SID); None: nothing to recall (sent at once, or cannot be recalled)
    recall_ref: str | None = None

    @classmethod
    def sent(
        cls,
        message: OutgoingMessage,
        provider_message_id: str | None = None,
        *,
        recall_ref: str | None = None,
    ) -> SendResult:
        """The provider accepted ``message``."""
        return cls(
            message.touch_id,
            "sent",
            provider_message_id=provider_message_id,
            recall_ref=recall_ref,
        )

    @classmethod
    def failed(
        cls,
        message: OutgoingMessage,
        reason: str,
        *,
        permanent: bool,
        suppress: str | None = None,
        retry_after: float | None = None,
    ) -> SendResult:
        """``message`` was not delivered."""
        return cls(
            message.touch_id,
            "failed",
            reason=reason,
            permanent=permanent,
            suppress=suppress,
            retry_after=retry_after,
        )

    @classmethod
    def ambiguous(cls, message: OutgoingMessage, reason: str) -> SendResult:
        """``message`` may or may not have been delivered."""
        return cls(message.touch_id, "ambiguous", reason=reason)


@dataclass(frozen=True)
class Recall:
    """A scheduled delivery to take back: the touch, the channel's ``recall_ref`` and the
    delivery instant the provider holds."""

    touch_id: int
    ref: str
    send_at: datetime


@dataclass(frozen=True)
class RecallResult:
    """What a channel knows after trying to cancel one scheduled delivery.

    ``cancelled``: the provider will not deliver it. ``too_late``: it can no longer be
    stopped (inside the provider's cut-off, or already sent). ``failed``: the attempt did
    not work but may later (``retry_after`` seconds, or the next run). ``unsupported``:
    the channel cannot cancel at all.
    """

    touch_id: int
    status: RecallStatus
    reason: str | None = None
    retry_after: float | None = None


@dataclass(frozen=True)
class Inquiry:
    """An ambiguous touch to look for at the provider: sent to ``to`` at ``since`` (the
    claim, on the engine's clock), for delivery at ``send_at``, saying what ``body_digest``
    says. ``known_ids`` are the provider ids the ledger already gives other touches to that
    address: a message with one of them is never this touch."""

    touch_id: int
    to: str
    since: datetime
    send_at: datetime
    body_digest: str | None = None
    known_ids: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ReconcileResult:
    """What the provider says of one :class:`Inquiry`.

    ``delivered``: it holds the message (``provider_message_id``; ``recall_ref`` when it is
    still scheduled and can be cancelled). ``absent``: it provably never received it, so the
    touch may be sent again. ``later``: it cannot tell yet (an activity feed still indexing,
    a provider error); ask again next run. ``unknown``: it cannot tell at all (no access to
    the provider's history); a person must check.
    """

    touch_id: int
    status: ReconcileStatus
    reason: str | None = None
    provider_message_id: str | None = None
    recall_ref: str | None = None


class Channel:
    """Base class of every channel. Subclasses set the class attributes and ``send``."""

    #: the channel name used in cadence files: email, sms, linkedin, call
    name: ClassVar[str] = ""
    #: the largest batch one ``send`` call accepts
    max_batch: ClassVar[int] = 1
    #: sustained provider rate (messages per second), or None for no pacing
    rate_per_second: ClassVar[float | None] = None
    #: how far ahead the provider can schedule a delivery (0: only immediate sends)
    max_schedule_ahead: ClassVar[timedelta] = timedelta(0)
    #: how far ahead a scheduled delivery must at least be (Twilio: 15 minutes); a message
    #: due sooner than this but not yet due is held back by the engine, never sent early
    min_schedule_ahead: ClassVar[timedelta] = timedelta(0)
    #: whether the engine paces calls to ``policy.rate_limits`` (real providers: yes)
    paced: ClassVar[bool] = True

    def batch_key(self, message: OutgoingMessage) -> tuple[str, ...]:
        """Messages with equal non-empty keys share provider requests; the engine hands them
        over together, up to ``max_batch``. An empty key (the default) means the message is
        a request of its own: the engine then hands over no more at once than the rate
        allows per second."""
        return ()

    def send(self, batch: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Send ``batch``; return one result per message, in any order."""
        raise NotImplementedError

    #: whether ``send`` takes ``departing=`` and calls it right before each provider request;
    #: otherwise the engine marks a whole ``send`` call in flight before it
    announces_requests: ClassVar[bool] = False

    def reconcile(self, inquiries: Sequence[Inquiry], now: datetime) -> list[ReconcileResult]:
        """Ask the provider whether it holds each ambiguous message; one result per inquiry.
        The default channel cannot ask."""
        why = f"the {self.name} channel cannot ask its provider"
        return [ReconcileResult(i.touch_id, "unknown", why) for i in inquiries]

    def cancel(self, recalls: Sequence[Recall], now: datetime) -> list[RecallResult]:
        """Take back scheduled deliveries; one result per recall, in any order. The default
        channel cannot cancel anything."""
        return [
            RecallResult(r.touch_id, "unsupported", "the channel cannot cancel") for r in recalls
        ]

    def release(self, recalls: Sequence[Recall], now: datetime) -> list[int]:
        """Free whatever provider resource a cancellation still holds once its delivery
        time has passed (SendGrid counts cancelled batches against a limit); return the
        touch ids released. The default holds nothing."""
        return [r.touch_id for r in recalls]
