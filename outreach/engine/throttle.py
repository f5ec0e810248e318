"""Per-person throttling: ``min_gap``, ``max_touches`` per rolling window, send window.

:func:`earliest_allowed` is pure: given when a touch is due, what the person has already
received or has scheduled, and the policy, it returns the earliest instant the touch may be
delivered and the reasons it could not go earlier. The tick calls it with the person's
history loaded once; property tests call it directly.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from outreach.cadence import Policy
from outreach.engine.window import SendCalendar

__all__ = ["Decision", "earliest_allowed"]

_MAX_ROUNDS = 64


@dataclass
class Decision:
    """When a touch may be delivered, and every rule that pushed it later."""

    at: datetime
    reasons: list[str] = field(default_factory=list)

    @property
    def reason(self) -> str | None:
        """The first rule that deferred the touch, or ``None`` when it was not deferred."""
        return self.reasons[0] if self.reasons else None


def earliest_allowed(
    due: datetime,
    now: datetime,
    history: Sequence[datetime],
    policy: Policy,
    calendar: SendCalendar,
    zone: ZoneInfo,
    *,
    transactional: bool = False,
) -> Decision:
    """The earliest delivery instant ``>= max(due, now)`` allowed for this person.

    ``history`` holds the delivery instants (sorted ascending) of every touch that counts
    toward the person's caps: sent, scheduled, claimed or ambiguous, across all cadences,
    channels and CRM records of the person. A transactional touch is held only by the
    send window; the caps still count it once it is recorded.
    """
    at = max(due, now)
    decision = Decision(at=at)
    gap = policy.min_gap
    per = policy.max_touches.per
    limit = policy.max_touches.count
    for _ in range(_MAX_ROUNDS):
        start = at
        if not transactional and history:
            # Never before a touch already recorded (the window checks below only look
            # back), and at least min_gap after it.
            latest = history[-1]
            if at < latest + gap:
                at = latest + gap
                _note(decision, "min_gap")
            # Touches inside the rolling window that ends at `at`.
            first_inside = bisect_right(history, at - per)
            inside = history[first_inside : bisect_right(history, at)]
            if len(inside) >= limit:
                at = max(at, inside[len(inside) - limit] + per)
                _note(decision, "max_touches")
        allowed, why = calendar.next_allowed(at, zone)
        if why:
            _note(decision, why)
        at = allowed
        if at == start:
            break
    decision.at = at
    return decision


def _note(decision: Decision, reason: str) -> None:
    if reason not in decision.reasons:
        decision.reasons.append(reason)
