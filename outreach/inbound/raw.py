"""The one shape every way in hands to intake: raw bytes and where they came from."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["RawMessage"]


@dataclass(frozen=True)
class RawMessage:
    """One message as it arrived.

    ``where`` names the place for errors and ``replies list`` ("INBOX uid 42",
    "replies.mbox #3", "Inbound Parse"); ``source`` is ``imap``, ``file`` or ``parse``.
    ``raw`` is None when reading the message failed; ``error`` then says why, and intake
    reports it without stopping the batch.
    """

    where: str
    raw: bytes | None
    source: str
    received_at: datetime | None = None
    error: str | None = None
