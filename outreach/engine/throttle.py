"""Per-person throttling: ``min_gap``, ``max_touches`` per rolling window, send window.

This module is also the tick's throttle stage (:class:`Throttle`, at the end): for each
routed occurrence it decides when it may go (out-of-office pauses, the caps, the send
window, holdout, a recruiter's daily task cap, what the channel can schedule, lateness)
or that it waits. Invariants carried: one person never gets two touches closer than
``min_gap`` nor more than ``max_touches`` in the window, counting the touches decided
earlier in the same batch (invariant 1); nothing is planned outside the send window in the
person's local time (invariant 5).

:func:`earliest_allowed` is pure: given when a touch is due, what the person has already
received or has scheduled, and the policy, it returns the earliest instant the touch may be
delivered and the reasons it could not go earlier. The tick calls it with the person's
history loaded once; property tests call it directly.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from outreach.cadence import TASK_CHANNELS, Cadence, CadenceConfig, Policy, Step, format_duration
from outreach.cadence_when import SKIP_PREFIX
from outreach.engine.route import Route, held_out
from outreach.engine.window import SendCalendar

if TYPE_CHECKING:
    from channels.base import Channel
    from outreach.engine.batch import Occurrence

__all__ = ["Decision", "TaskCounts", "Throttle", "earliest_allowed", "settle", "waves"]

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


# -- the tick's throttle stage -------------------------------------------------------------

#: counts a recruiter's tasks of one kind due on the local day starting at ``start``
CountTasks = Callable[[str | None, str, datetime], int]


class TaskCounts:
    """Recruiter tasks per owner, kind and local day: stored ones, plus this tick's.

    A day's count is read once per batch (``load``; the tick clears the counts as it
    claims a batch, so tasks other workers committed count too) and then kept up to date
    by :func:`settle`, so a task decided earlier in the batch counts against the next one.
    """

    def __init__(self) -> None:
        self.counts: dict[tuple[str | None, str, str], int] = {}

    def count(self, owner: str | None, kind: str, day: str, zone: Any, load: CountTasks) -> int:
        """Tasks of ``owner`` and ``kind`` due on ``day`` (ISO date in ``zone``)."""
        key = (owner, kind, day)
        if key not in self.counts:
            self.counts[key] = load(owner, kind, datetime.fromisoformat(day).replace(tzinfo=zone))
        return self.counts[key]

    def add(self, owner: str | None, kind: str, day: str) -> None:
        """Count one more task decided by this tick."""
        key = (owner, kind, day)
        self.counts[key] = self.counts.get(key, 0) + 1


class Throttle:
    """The throttle stage: when each routed occurrence may go, or why it waits.

    ``channels`` are the channels on (what they can schedule bounds how far ahead a touch
    is handed over); ``horizon`` is how far ahead the tick plans. Call it with a batch
    whose occurrences are independent (at most one per person and per recruiter task
    queue: see :func:`waves`); it returns the batch, each occurrence either undecided
    with its instant (``at``), rule and final route (``chosen``), or ``deferred``,
    ``holdout`` or ``skipped`` (late).
    """

    def __init__(
        self,
        config: CadenceConfig,
        channels: Mapping[str, Channel],
        horizon: timedelta,
        task_counts: TaskCounts | None = None,
    ) -> None:
        self.config = config
        self.channels = channels
        self.horizon = horizon
        self.calendar = SendCalendar(config.policy)
        self.task_counts = task_counts or TaskCounts()
        self._step_calendars: dict[tuple[str, str], SendCalendar] = {}

    def __call__(
        self, items: list[Occurrence], now: datetime, count_tasks: CountTasks
    ) -> list[Occurrence]:
        """Throttle each occurrence of ``items`` (see the class docstring); return them."""
        for occ in items:
            if occ.outcome:
                continue  # decided upstream (an enrollment the plan stage ended)
            if occ.route is None:
                raise ValueError(f"occurrence {occ.key} was not routed")
            self._one(occ, now, count_tasks)
        return items

    def _one(self, occ: Occurrence, now: datetime, count_tasks: CountTasks) -> None:
        person, cadence, step, enrollment = occ.person, occ.cadence, occ.step, occ.enrollment
        zone = person.zone
        assert zone is not None
        assert occ.not_before is not None and occ.route is not None
        not_before = occ.not_before
        paused = person.paused_until is not None and person.paused_until > not_before
        if paused and not step.transactional:
            # Out of office: no follow-up goes out before the return; the step's deadline
            # is still reckoned from ``due``, so lateness rules apply afterwards. A
            # transactional step answers the person's own move (an application, an
            # interview) and keeps its deadline: an auto-reply is not a request for silence.
            assert person.paused_until is not None
            if person.paused_until > now + self.horizon:
                reason = f"out of office until {person.paused_until:%Y-%m-%d}"
                occ.decide("deferred", reason, person.paused_until, tally="out of office")
                return
            not_before = person.paused_until
        the_route = occ.route
        calendar = self._step_calendars.get((cadence.id, step.id))
        if calendar is None:
            calendar = SendCalendar.for_step(self.config.policy, step, self.calendar)
            self._step_calendars[(cadence.id, step.id)] = calendar
        decision = earliest_allowed(
            not_before,
            now,
            person.history,
            self.config.policy,
            calendar,
            zone,
            transactional=step.transactional,
        )
        at = decision.at
        reasons = list(decision.reasons)
        occ.reasons = reasons
        if held_out(person.id, cadence.id, step):
            # Nothing is sent: no channel, no caps; the occurrence is recorded when it would
            # have gone, and the enrollment moves on as if it had.
            if at > now + self.horizon:
                reason = reasons[0] if reasons else "not due yet"
                occ.decide("deferred", reason, at, tally=reason)
                return
            why = f"holdout: {step.holdout}% of enrollments get no touch on this step"
            occ.at = at
            occ.rule = rule(cadence, step, enrollment, reasons, Route(None, None, why), False, None)
            occ.decide("holdout", why, tally="holdout")
            return
        if the_route.blocked_by_off_channel:
            # Not the person's fault: wait for the channel rather than hand it to a recruiter.
            retry, _ = calendar.next_allowed(max(at, now + timedelta(days=1)), zone)
            occ.decide("deferred", "channel off", retry, tally="channel off")
            return
        if the_route.channel in TASK_CHANNELS:
            owner = occ.record.get("owner_id")
            at, capped = self._task_cap(owner, the_route.channel, at, zone, count_tasks)
            if capped and "task cap" not in reasons:
                reasons.append("task cap")

        ahead = self.horizon
        channel = self.channels.get(the_route.channel or "")
        if channel is not None:
            ahead = min(ahead, channel.max_schedule_ahead)
            if now < at < now + channel.min_schedule_ahead:
                # Too soon for the provider to schedule, too early to send: wait for it.
                reason = f"{the_route.channel} cannot schedule that soon"
                occ.decide("deferred", reason, at, tally=reason)
                return
        if at > now + ahead:
            reason = reasons[0] if reasons else "not due yet"
            if at <= now + self.horizon and channel is not None:
                reason = f"{the_route.channel} cannot schedule ahead"
            occ.decide("deferred", reason, at, tally=reason)
            return

        due = occ.due
        deadline = due + (step.within - step.after) if step.within is not None else None
        late = deadline is not None and at > deadline
        occ.at = at
        occ.late = late
        occ.rule = rule(cadence, step, enrollment, reasons, the_route, late, deadline)
        occ.chosen = the_route
        if late and step.on_late == "skip":
            assert deadline is not None
            reason = (
                f"late: due by {deadline:%Y-%m-%d %H:%M} UTC, first allowed {at:%Y-%m-%d %H:%M} UTC"
            )
            occ.decide("skipped", reason, tally="late")
            return
        if late and step.on_late == "task":
            assert deadline is not None
            occ.chosen = Route(
                None,
                None,
                f"late (due by {deadline:%Y-%m-%d %H:%M} UTC): the recruiter takes it over",
            )

    def _task_cap(
        self, owner: str | None, kind: str, at: datetime, zone: Any, count_tasks: CountTasks
    ) -> tuple[datetime, bool]:
        rate = self.config.policy.rate_limits.get(kind)  # type: ignore[call-overload]
        if rate is None:
            return at, False
        per_day = (
            max(1, int(rate.count * 86400 / rate.seconds)) if rate.seconds <= 86400 else rate.count
        )
        capped = False
        for _ in range(60):
            day = _local_day(at, zone)
            if self.task_counts.count(owner, kind, day, zone, count_tasks) < per_day:
                return at, capped
            capped = True
            next_day = datetime.fromisoformat(day).replace(tzinfo=zone) + timedelta(days=1)
            at, _ = self.calendar.next_allowed(next_day, zone)
        return at, capped


def waves(items: list[Occurrence]) -> list[list[Occurrence]]:
    """Split routed occurrences (in planning order) into batches of independent ones.

    A person's later occurrence is throttled against the touches decided for the person
    earlier in the tick, and a recruiter task against the owner's tasks decided earlier:
    each such occurrence goes into a later batch than the one it depends on, and batches
    run in order (with :func:`settle` between them), so every decision is the one a
    sequential walk in planning order would make.
    """
    out: list[list[Occurrence]] = []
    last: dict[tuple[Any, ...], int] = {}
    for occ in items:
        keys: tuple[tuple[Any, ...], ...] = (("person", occ.person.id),)
        channel = occ.route.channel if occ.route is not None else None
        if channel in TASK_CHANNELS:
            keys = (*keys, ("tasks", occ.record.get("owner_id"), channel))
        wave = max(last.get(key, -1) for key in keys) + 1
        for key in keys:
            last[key] = wave
        if wave == len(out):
            out.append([])
        out[wave].append(occ)
    return out


def settle(items: list[Occurrence], task_counts: TaskCounts) -> list[Occurrence]:
    """Count the touches and tasks a batch decided toward the caps of the next batches.

    Only an occurrence that ends as a touch (``claimed``) or a task counts: one deferred,
    held out, or skipped (late, a template error) does not.
    """
    for occ in items:
        if occ.outcome not in ("claimed", "task"):
            continue
        if occ.outcome == "task" and occ.kind in TASK_CHANNELS:
            day = _local_day(occ.at, occ.person.zone)
            task_counts.add(occ.record.get("owner_id"), occ.kind, day)
        occ.person.add_touch(occ.at)
    return items


def rule(
    cadence: Cadence,
    step: Step,
    enrollment: dict[str, Any],
    reasons: list[str],
    the_route: Route,
    late: bool,
    deadline: datetime | None,
) -> str:
    """The rule behind a decision, as previews show it."""
    occurrence = enrollment["next_occurrence"]
    if occurrence and step.repeat is not None:
        every = format_duration(step.repeat.every)
        base = f"repeat {occurrence} of {step.repeat.max}, every {every}"
    else:
        anchor = cadence.step_anchor(enrollment["next_step"])
        since = f"entering {cadence.trigger.stage}" if anchor == "trigger" else "the previous touch"
        base = f"{format_duration(step.after)} after {since}"
    if step.within is not None:
        base += f", within {format_duration(step.within)}"
    if step.when is not None and not the_route.reason.startswith(SKIP_PREFIX):
        base += f"; when {step.when.describe()}: met"
    if reasons:
        base += "; held by " + ", ".join(reasons)
    if late:
        base += f"; late (deadline {deadline:%Y-%m-%d %H:%M} UTC), on_late: {step.on_late}"
    return base + f"; {the_route.reason}"


def _local_day(at: datetime, zone: Any) -> str:
    return at.astimezone(zone).date().isoformat()
