"""The dry-run channel: records what would be sent, sends nothing."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import ClassVar

from channels.base import Channel, Inquiry, OutgoingMessage, ReconcileResult, SendResult

__all__ = ["DryRunChannel"]


class DryRunChannel(Channel):
    """Stands in for any channel: every message is accepted and kept in :attr:`sent`.

    It schedules as far ahead as the real providers allow at most (SendGrid: 72 hours), so
    a dry run plans exactly what a live run would.
    """

    max_batch: ClassVar[int] = 1000
    max_schedule_ahead: ClassVar[timedelta] = timedelta(hours=72)
    paced: ClassVar[bool] = False  # nothing leaves the machine, nothing to pace

    def __init__(self, name: str) -> None:
        self.name = name  # type: ignore[misc]  # an instance stands in for one channel
        self.sent: list[OutgoingMessage] = []

    def send(self, batch: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Accept every message; the provider id is ``dry-run:<idempotency key>``."""
        self.sent.extend(batch)
        return [SendResult.sent(m, f"dry-run:{m.idempotency_key}") for m in batch]

    def reconcile(self, inquiries: Sequence[Inquiry], now: datetime) -> list[ReconcileResult]:
        """Ask no provider: a dry run concludes nothing about an ambiguous send (a live run
        asks), so each stays as it is and nobody is handed a task."""
        why = "dry run: the provider is not asked"
        return [ReconcileResult(i.touch_id, "later", why) for i in inquiries]
