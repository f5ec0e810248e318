"""Channels: one module per way of reaching a person, behind :class:`channels.base.Channel`."""

from __future__ import annotations

from channels.base import Channel, OutgoingMessage, SendResult
from channels.dryrun import DryRunChannel

__all__ = ["Channel", "DryRunChannel", "OutgoingMessage", "SendResult"]
