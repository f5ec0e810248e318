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

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal

__all__ = ["Channel", "OutgoingMessage", "SendResult"]

Status = Literal["sent", "failed", "ambiguous"]


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

    @classmethod
    def sent(cls, message: OutgoingMessage, provider_message_id: str | None = None) -> SendResult:
        """The provider accepted ``message``."""
        return cls(message.touch_id, "sent", provider_message_id=provider_message_id)

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
