"""One tick of the engine: enroll, plan, throttle, route, render, claim, dispatch, confirm.

A tick works through the enrollments that are due before ``now + horizon`` (an index on
the next due time: the work grows with the number of due touches, not with the number of
people), a batch at a time:

1. **Claim** (one transaction per batch). The batch's people are locked (PostgreSQL:
   ``FOR UPDATE SKIP LOCKED``; SQLite: ``BEGIN IMMEDIATE``), so one person's touches are
   decided by one worker at a time. Each due step occurrence is throttled, routed and
   rendered; a touch that may go is written to the ledger as ``claimed`` with its
   idempotency key and the enrollment advances, all before any provider is called.
2. **Dispatch** to the channels (outside any transaction), in batches. Immediately before
   each provider request (one message, or one SendGrid request of up to 1,000) its touches
   become ``in_flight`` in a short transaction of their own.
3. **Confirm**: each result is written back (``sent``, ``failed``, ``ambiguous``).

A run that dies leaves ``claimed`` touches that never left (the next run releases them:
due again) and at most the requests it had in flight (``in_flight``: ambiguous, reconciled
with the provider, never re-sent blindly): see :mod:`outreach.engine.recover`.

Delivery times: the throttle picks the earliest instant the policy allows (send window in
the person's zone, ``min_gap``, ``max_touches``). A channel that can schedule (SendGrid
``send_at``, Twilio scheduled messages, a task's due time) gets the touch now with that
instant; a touch whose instant lies beyond the horizon or beyond what its channel can
schedule is deferred to that instant, with the reason.
"""

from __future__ import annotations

import itertools
import secrets
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, or_, select, update

from channels.base import Channel, OutgoingMessage, SendResult, body_digest
from outreach.cadence import TASK_CHANNELS, Cadence, CadenceConfig, Step, format_duration
from outreach.clock import Clock, SystemClock
from outreach.dynamic_templates import TemplateUnavailable, dynamic_check_for
from outreach.engine.enroll import EnrollStats, process_events
from outreach.engine.flight import FlightGate, NotInFlight
from outreach.engine.liveness import Liveness
from outreach.engine.people import PersonState, history_window, load_people
from outreach.engine.ratelimit import LimiterFactory, in_process_limiters
from outreach.engine.recall import RecallSummary, recall_scheduled
from outreach.engine.recover import RecoverySummary, reconcile_ambiguous, recover_interrupted
from outreach.engine.route import (
    Route,
    build_context,
    choose_variant,
    held_out,
    route,
    usable,
)
from outreach.engine.throttle import earliest_allowed
from outreach.engine.window import SendCalendar
from outreach.ratings import new_rating_token, rating_urls
from outreach.store import suppressions as suppression_list
from outreach.store.bulk import bulk_update, bulk_write
from outreach.store.schema import (
    ContactPoint,
    Enrollment,
    Event,
    Person,
    Task,
    Touch,
    WriteBack,
)
from outreach.templates import RenderedMessage, TemplateRenderError, TemplateStore
from outreach.writeback import CRM_SOURCES

__all__ = [
    "PlannedTouch",
    "StepCounts",
    "Tick",
    "TickSummary",
    "Transactions",
    "engine_transactions",
    "nested_transactions",
]

_enrollments = Enrollment.__table__
_touches = Touch.__table__
_events = Event.__table__
#: events that end cadences: one arriving while a send is in flight blocks its re-plan
_STOPPING_EVENTS = ("reply", "stage_change", "opt_out", "unsubscribe")
_tasks = Task.__table__
_people = Person.__table__
_contacts = ContactPoint.__table__
_write_backs = WriteBack.__table__

#: Opens one unit of work; ``immediate`` asks SQLite for the write lock up front.
Transactions = Callable[..., AbstractContextManager[Connection]]


def engine_transactions(engine: Engine) -> Transactions:
    """Real transactions, one connection each (live runs)."""

    @contextmanager
    def transaction(immediate: bool = True) -> Iterator[Connection]:
        with engine.connect() as conn:
            # Every unit of work of a tick writes. On SQLite, taking the write lock up front
            # makes concurrent workers queue (busy timeout) instead of failing on upgrade.
            if immediate and conn.dialect.name == "sqlite":
                conn.info["sqlite_begin"] = "BEGIN IMMEDIATE"
            with conn.begin():
                yield conn

    return transaction


def nested_transactions(conn: Connection) -> Transactions:
    """Savepoints inside the caller's transaction (dry runs and previews roll it back)."""

    @contextmanager
    def transaction(immediate: bool = True) -> Iterator[Connection]:
        with conn.begin_nested():
            yield conn

    return transaction


@dataclass
class StepCounts:
    """Outcomes of one cadence step in one tick."""

    sent: int = 0
    tasks: int = 0
    failed: int = 0
    #: of the failed: provably not delivered, planned again for a later run
    replanned: int = 0
    ambiguous: int = 0
    deferred: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class PlannedTouch:
    """One decision of the tick, for previews: who, when, where, and the rule behind it."""

    person_id: int
    name: str
    cadence_id: str
    step_id: str
    occurrence: int
    at: datetime
    timezone: str
    channel: str | None
    template: str | None
    variant: str | None
    status: str
    rule: str


@dataclass
class TickSummary:
    """What one tick did, per cadence and step."""

    now: datetime
    enroll: EnrollStats = field(default_factory=EnrollStats)
    steps: dict[tuple[str, str], StepCounts] = field(
        default_factory=lambda: defaultdict(StepCounts)
    )
    recovery: RecoverySummary = field(default_factory=RecoverySummary)
    channels_off: list[str] = field(default_factory=list)
    journal: list[PlannedTouch] = field(default_factory=list)
    recall: RecallSummary = field(default_factory=RecallSummary)

    def total(self, name: str) -> int:
        """Sum of one counter (``sent``, ``tasks``, ``failed``, ``ambiguous``) over steps."""
        return sum(getattr(counts, name) for counts in self.steps.values())

    def total_reasons(self, name: str) -> Counter[str]:
        """Deferred or skipped touches over all steps, by reason."""
        total: Counter[str] = Counter()
        for counts in self.steps.values():
            total.update(getattr(counts, name))
        return total


@dataclass
class _Occurrence:
    """One step occurrence being decided: whose, which, when it was due, when it goes."""

    enrollment: dict[str, Any]
    person: PersonState
    record: dict[str, Any]
    cadence: Cadence
    step: Step
    occurrence: int
    due: datetime
    at: datetime
    counts: StepCounts
    rule: str

    @property
    def key(self) -> str:
        """The idempotency key: enrollment, step and occurrence."""
        return f"{self.enrollment['id']}:{self.step.id}:{self.occurrence}"


@dataclass
class _Pending:
    """A claimed touch on its way to a channel, with what a fallback needs."""

    touch_id: int
    message: OutgoingMessage
    person: PersonState
    record: dict[str, Any]
    cadence: Cadence
    step: Step
    variant: str
    template: str
    contact_id: int
    tried: list[str]
    reason: str = ""
    #: when the occurrence was due, and the enrollment before and after the claim moved it
    #: on: what a re-plan after a provider outage needs (see Tick._replan)
    due: datetime | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    #: the touch's reply token (its Reply-To and Message-ID follow it to a fallback channel)
    token: str | None = None
    #: the touch's rating token (its rating links follow it to a fallback channel)
    rating_token: str | None = None


#: enrollment fields a claim moves on, restored when a send provably failed and is re-planned
_REPLAN_FIELDS = (
    "id",
    "status",
    "stop_reason",
    "stopped_at",
    "next_step",
    "next_occurrence",
    "step_due_at",
    "last_touch_at",
)
#: a step whose send keeps failing (provider down, credentials refused) is re-planned while
#: it is at most this late; after that its failure stands
REPLAN_WITHIN = timedelta(days=3)
#: the earliest a re-planned step is tried again
REPLAN_AFTER = timedelta(minutes=15)


class Tick:
    """One run of the engine over everything due (see the module docstring).

    ``channels`` maps channel names (email, sms) to :class:`channels.base.Channel`
    objects; a channel missing from it is off. LinkedIn and call steps become tasks in the
    engine's own queue. ``person_ids`` restricts the tick to some people (previews).
    """

    def __init__(
        self,
        config: CadenceConfig,
        clock: Clock,
        channels: Mapping[str, Channel],
        transaction: Transactions,
        *,
        horizon: timedelta = timedelta(hours=24),
        batch_size: int = 2000,
        wall_clock: Clock | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        lease: timedelta = timedelta(minutes=15),
        person_ids: set[int] | None = None,
        journal: bool = False,
        dialect: str = "sqlite",
        reply_to: str | None = None,
        mail_domain: str | None = None,
        liveness: Liveness | None = None,
        public_url: str | None = None,
        limiters: LimiterFactory | None = None,
    ) -> None:
        self.config = config
        #: OUTREACH_PUBLIC_URL: where a touch's rating links point (``outreach serve``);
        #: without it a template using ``touch.rating_urls`` cannot render and its step
        #: is skipped, never sent with a broken link
        self.public_url = public_url
        #: OUTREACH_REPLY_TO: each email's Reply-To is its plus-addressed form with the
        #: touch's token; ``mail_domain`` names the Message-IDs the engine assigns
        self.replies = _ReplyAddress.parse(reply_to, mail_domain)
        self.clock = clock
        self.channels = dict(channels)
        self.transaction = transaction
        self.horizon = horizon
        self.batch_size = batch_size
        self.wall_clock = wall_clock or SystemClock()
        self.lease = lease
        #: tells whether the run that claimed a touch still lives (locks a killed process
        #: loses); without it, an interrupted run's claims wait out their lease
        self.liveness = liveness or Liveness()
        self._gate = FlightGate(self._mark_in_flight)
        self.person_ids = person_ids
        self.keep_journal = journal
        self.dialect = dialect
        self.calendar = SendCalendar(config.policy)
        self._step_calendars: dict[tuple[str, str], SendCalendar] = {}
        # SendGrid dynamic templates are read once per tick, to check each touch's data.
        self.templates = TemplateStore(
            config.template_dir, dynamic_check_for(self.channels.get("email"))
        )
        self.run_id = str(uuid.uuid4())
        self._task_counts: dict[tuple[str | None, str, str], int] = {}
        # Enrollments this tick already deferred: looking again would decide the same.
        self._deferred: set[int] = set()
        self._events_seen = 0
        self._claimed_at = self.wall_clock.now()
        self._still_due = False
        self._order = {cadence.id: index for index, cadence in enumerate(config.cadences)}
        # Per process by default; shared by all workers when given (see shared_limits).
        make_limiter = limiters or in_process_limiters(monotonic=monotonic, sleep=sleep)
        self.limiters = {
            name: make_limiter(name, rate)
            for name, channel in self.channels.items()
            if channel.paced and (rate := _rate(config, channel)) is not None
        }

    # -- the tick -------------------------------------------------------------------------

    #: passes over the due enrollments per tick (steps chained within the horizon)
    MAX_PASSES = 20

    def run(self) -> TickSummary:
        """Run the tick once; return its summary."""
        with self.liveness.hold(self.run_id):
            return self._run()

    def _run(self) -> TickSummary:
        now = self.clock.now()
        summary = TickSummary(now=now)
        summary.channels_off = [name for name in ("email", "sms") if name not in self.channels]
        summary.enroll = process_events(
            self.transaction, self.config, now, person_ids=self.person_ids
        )
        # Before planning: what a reply, opt-out or pause stopped may still sit at a provider.
        summary.recall = recall_scheduled(
            self.transaction, self.channels, self.config, now, person_ids=self.person_ids
        )
        with self.transaction(immediate=False) as conn:
            latest = select(func.coalesce(func.max(_events.c.id), 0))
            self._events_seen = conn.execute(latest).scalar_one()
        # What an interrupted run left: claims never requested are due again (this tick
        # plans them), in-flight ones are asked about at their provider.
        recover_interrupted(
            self.transaction,
            self.liveness,
            self.config,
            now,
            self.wall_clock.now(),
            self.run_id,
            summary.recovery,
        )
        self._reconcile(now, summary)
        limit = now + self.horizon
        # Passes over everything due, in due order. A step that leads straight to another
        # one due within the horizon is picked up by the next pass, so a second run at the
        # same moment finds nothing left to do.
        for _ in range(self.MAX_PASSES):
            self._still_due = False
            cursor: tuple[datetime, int] | None = None
            while True:
                claimed = self._claim_batch(now, limit, cursor, summary)
                if claimed is None:
                    break
                cursor, pending = claimed
                self._dispatch(pending, now, summary)
            if not self._still_due:
                break
        # This run's own ambiguous sends are asked about before they are reported.
        self._reconcile(now, summary)
        return summary

    def _reconcile(self, now: datetime, summary: TickSummary) -> None:
        reconcile_ambiguous(
            self.transaction,
            self.channels,
            self.config,
            now,
            summary.recovery,
            person_ids=self.person_ids,
        )

    # -- claim ----------------------------------------------------------------------------

    def _claim_batch(
        self,
        now: datetime,
        limit: datetime,
        cursor: tuple[datetime, int] | None,
        summary: TickSummary,
    ) -> tuple[tuple[datetime, int], list[_Pending]] | None:
        postgres = self.dialect == "postgresql"
        with self.transaction(immediate=True) as conn:
            query = (
                select(_enrollments)
                .where(_enrollments.c.status == "active", _enrollments.c.next_due_at <= limit)
                .order_by(_enrollments.c.next_due_at, _enrollments.c.id)
                .limit(self.batch_size)
            )
            if cursor is not None:
                query = query.where(
                    or_(
                        _enrollments.c.next_due_at > cursor[0],
                        and_(
                            _enrollments.c.next_due_at == cursor[0], _enrollments.c.id > cursor[1]
                        ),
                    )
                )
            if self.person_ids is not None:
                query = query.where(_enrollments.c.person_id.in_(self.person_ids))
            if postgres:
                query = query.with_for_update(skip_locked=True)
            due = [dict(row) for row in conn.execute(query).mappings()]
            if not due:
                return None
            new_cursor = (due[-1]["next_due_at"], due[-1]["id"])
            person_ids = {row["person_id"] for row in due}
            if postgres:
                person_ids = set(
                    conn.execute(
                        select(_people.c.id)
                        .where(_people.c.id.in_(person_ids))
                        .with_for_update(skip_locked=True)
                    ).scalars()
                )
            if not person_ids:
                return new_cursor, []
            # Every due enrollment of these people, so priorities compare across cadences:
            # those of this batch, and any others (usually none) outside it.
            enrollments = [row for row in due if row["person_id"] in person_ids]
            seen = {row["id"] for row in enrollments}
            query = select(_enrollments).where(
                _enrollments.c.person_id.in_(person_ids),
                _enrollments.c.status == "active",
                _enrollments.c.next_due_at <= limit,
            )
            if postgres:
                query = query.with_for_update(skip_locked=True)
            for row in conn.execute(
                query.with_only_columns(_enrollments.c.id, _enrollments.c.person_id)
            ):
                if row.id not in seen:
                    extra = conn.execute(select(_enrollments).where(_enrollments.c.id == row.id))
                    enrollments.append(dict(extra.mappings().one()))
                    seen.add(row.id)
            policy = self.config.policy
            people = load_people(
                conn,
                person_ids,
                history_since=now - history_window(policy.min_gap, policy.max_touches.per),
                default_timezone=policy.default_timezone,
            )
            self._claimed_at = self.wall_clock.now()
            writer = _BatchWriter(now, self.run_id, self._claimed_at + self.lease, self.replies)
            by_person: dict[int, list[dict[str, Any]]] = defaultdict(list)
            for enrollment in enrollments:
                by_person[enrollment["person_id"]].append(enrollment)
            for person_id, items in by_person.items():
                person = people.get(person_id)
                if person is None:
                    continue
                items = _without_duplicates(items, writer)
                for enrollment in sorted(items, key=lambda e: self._priority(e, person)):
                    self._decide(conn, enrollment, person, now, writer, summary)
            pending = writer.flush(conn)
        self._deferred |= writer.deferred
        self._still_due = self._still_due or any(
            row["status"] == "active"
            and row["id"] not in writer.deferred
            and row["next_due_at"] is not None
            and row["next_due_at"] <= limit
            for row in writer.enrollments.values()
        )
        return new_cursor, pending

    def _priority(self, enrollment: dict[str, Any], person: PersonState) -> tuple[Any, ...]:
        try:
            cadence = self.config.cadence(enrollment["cadence_id"])
            index = self._order[cadence.id]
            step = cadence.steps[enrollment["next_step"]]
            transactional = step.transactional
        except (KeyError, IndexError, ValueError):
            return (2, 2, enrollment["next_due_at"], 0)
        specific = cadence.trigger.stage == person.current_stage
        return (
            0 if transactional else 1,
            0 if specific else 1,
            enrollment["step_due_at"] or enrollment["next_due_at"],
            index,
        )

    def _decide(
        self,
        conn: Connection,
        enrollment: dict[str, Any],
        person: PersonState,
        now: datetime,
        writer: _BatchWriter,
        summary: TickSummary,
    ) -> None:
        if enrollment["id"] in self._deferred:
            return
        try:
            cadence = self.config.cadence(enrollment["cadence_id"])
        except KeyError:
            writer.end(enrollment, "stopped", "cadence no longer in the cadence file")
            return
        if enrollment["next_step"] >= len(cadence.steps):
            writer.end(enrollment, "completed", None)
            return
        step = cadence.steps[enrollment["next_step"]]
        counts = summary.steps[(cadence.id, step.id)]
        if person.global_opt_out:
            writer.end(enrollment, "stopped", "opt_out: person opted out of all contact")
            counts.skipped["opted out"] += 1
            return
        zone = person.zone
        assert zone is not None
        record = person.record(enrollment["record_id"])
        due = enrollment["step_due_at"] or enrollment["next_due_at"]
        not_before = max(due, enrollment["next_due_at"])
        paused = person.paused_until is not None and person.paused_until > not_before
        if paused and not step.transactional:
            # Out of office: no follow-up goes out before the return; the step's deadline
            # is still reckoned from ``due``, so lateness rules apply afterwards. A
            # transactional step answers the person's own move (an application, an
            # interview) and keeps its deadline: an auto-reply is not a request for silence.
            if person.paused_until > now + self.horizon:
                reason = f"out of office until {person.paused_until:%Y-%m-%d}"
                writer.defer(enrollment, person.paused_until, reason)
                counts.deferred["out of office"] += 1
                return
            not_before = person.paused_until
        the_route = route(step, person, self.config, set(self.channels))
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
        if held_out(person.id, cadence.id, step):
            # Nothing is sent: no channel, no caps; the occurrence is recorded when it would
            # have gone, and the enrollment moves on as if it had.
            if at > now + self.horizon:
                reason = reasons[0] if reasons else "not due yet"
                writer.defer(enrollment, at, reason)
                counts.deferred[reason] += 1
                return
            why = f"holdout: {step.holdout}% of enrollments get no touch on this step"
            occ = _Occurrence(
                enrollment,
                person,
                record,
                cadence,
                step,
                enrollment["next_occurrence"],
                due,
                at,
                counts,
                self._rule(cadence, step, enrollment, reasons, Route(None, None, why), False, None),
            )
            writer.touch(occ, "holdout", reason=why)
            writer.advance(occ)
            counts.skipped["holdout"] += 1
            self._journal(summary, occ, None, None, None, "holdout", occ.rule)
            return
        if the_route.blocked_by_off_channel:
            # Not the person's fault: wait for the channel rather than hand it to a recruiter.
            retry, _ = calendar.next_allowed(max(at, now + timedelta(days=1)), zone)
            writer.defer(enrollment, retry, "channel off")
            counts.deferred["channel off"] += 1
            return
        if the_route.channel in TASK_CHANNELS:
            at, capped = self._task_cap(conn, record.get("owner_id"), the_route.channel, at, zone)
            if capped and "task cap" not in reasons:
                reasons.append("task cap")

        ahead = self.horizon
        channel = self.channels.get(the_route.channel or "")
        if channel is not None:
            ahead = min(ahead, channel.max_schedule_ahead)
            if now < at < now + channel.min_schedule_ahead:
                # Too soon for the provider to schedule, too early to send: wait for it.
                reason = f"{the_route.channel} cannot schedule that soon"
                writer.defer(enrollment, at, reason)
                counts.deferred[reason] += 1
                return
        if at > now + ahead:
            reason = reasons[0] if reasons else "not due yet"
            if at <= now + self.horizon and channel is not None:
                reason = f"{the_route.channel} cannot schedule ahead"
            writer.defer(enrollment, at, reason)
            counts.deferred[reason] += 1
            return

        deadline = due + (step.within - step.after) if step.within is not None else None
        late = deadline is not None and at > deadline
        occ = _Occurrence(
            enrollment,
            person,
            record,
            cadence,
            step,
            enrollment["next_occurrence"],
            due,
            at,
            counts,
            self._rule(cadence, step, enrollment, reasons, the_route, late, deadline),
        )
        chosen = the_route
        if late and step.on_late == "skip":
            reason = (
                f"late: due by {deadline:%Y-%m-%d %H:%M} UTC, first allowed {at:%Y-%m-%d %H:%M} UTC"
            )
            writer.touch(occ, "skipped", reason=reason)
            writer.advance(occ)
            counts.skipped["late"] += 1
            self._journal(summary, occ, None, None, None, "skipped", occ.rule)
            return
        if late and step.on_late == "task":
            chosen = Route(
                None,
                None,
                f"late (due by {deadline:%Y-%m-%d %H:%M} UTC): the recruiter takes it over",
            )

        variant, template = choose_variant(person.id, cadence.id, step)
        # The rating token exists before rendering: the links carry it, the claim stores it.
        rating_token = new_rating_token()
        context = build_context(
            person,
            record,
            self.config,
            cadence_id=cadence.id,
            step_id=step.id,
            variant=variant,
            rating_urls=self._rating_urls(rating_token),
        )
        kind = chosen.channel or "manual"
        try:
            if kind in TASK_CHANNELS or kind == "manual":
                title, body = self._task_text(template, kind, context, chosen, record)
            else:
                message = self.templates.render_for_step(
                    template, TemplateStore.kind_for(kind), context, step.sendgrid_template_id
                )
        except TemplateUnavailable as exc:
            # Nothing leaves unchecked: the step waits until SendGrid serves its template.
            reason = f"template {exc.template}: {exc.reason}"
            writer.defer(enrollment, now + REPLAN_AFTER, reason)
            counts.deferred[reason] += 1
            return
        except TemplateRenderError as exc:
            where = f"{exc.template}:{exc.line}" if exc.line else exc.template
            reason = f"template {where}: {exc.reason}"
            writer.touch(occ, "skipped", reason=reason)
            writer.advance(occ)
            counts.skipped["template error"] += 1
            self._journal(summary, occ, None, None, None, "skipped", f"{occ.rule}; {reason}")
            return

        contact_id = chosen.contact.id if chosen.contact else None
        if kind in TASK_CHANNELS or kind == "manual":
            writer.task(
                occ,
                kind,
                title=title,
                body=body,
                reason=chosen.reason,
                template=template,
                variant=variant,
                contact_id=contact_id,
                rating_token=rating_token,
            )
            if kind in TASK_CHANNELS:
                key = (record.get("owner_id"), kind, _local_day(at, zone))
                self._task_counts[key] = self._task_counts.get(key, 0) + 1
            counts.tasks += 1
            rule = occ.rule if chosen is the_route else f"{occ.rule}; {chosen.reason}"
            self._journal(summary, occ, kind, template, variant, "task", rule)
        else:
            writer.claim(
                occ,
                kind,
                contact_id,
                message=message,
                template=template,
                variant=variant,
                reason=chosen.reason + ("; late" if late else ""),
                rating_token=rating_token,
            )
            self._journal(summary, occ, kind, template, variant, "scheduled", occ.rule)
        person.add_touch(at)
        writer.advance(occ)

    def _rating_urls(self, token: str | None) -> list[str] | None:
        """A touch's five rating links, or None without a token or a public URL."""
        if token is None or not self.public_url:
            return None
        return rating_urls(self.public_url, token)

    def _task_text(
        self,
        template: str,
        kind: str,
        context: dict[str, Any],
        the_route: Route,
        record: dict[str, Any],
    ) -> tuple[str, str]:
        if kind in TASK_CHANNELS:
            rendered = self.templates.render(template, "task", context)
            title = rendered.title or f"{kind.title()}: {_name(record)}"
            return title, rendered.body
        # A manual task for a touch no channel could carry: what the message would have said.
        for fallback_kind in ("email", "sms", "task"):
            if self.templates.exists(template, fallback_kind):
                rendered = self.templates.render(template, fallback_kind, context)
                title = rendered.title or f"Contact {_name(record)} by hand: {the_route.reason}"
                text = (
                    f"Subject: {rendered.subject}\n\n" if rendered.subject else ""
                ) + rendered.body
                return title[:480], f"{the_route.reason}\n\nSuggested message:\n{text}"
        return f"Contact {_name(record)} by hand", the_route.reason

    def _task_cap(
        self, conn: Connection, owner: str | None, kind: str, at: datetime, zone
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
            key = (owner, kind, day)
            if key not in self._task_counts:
                start = datetime.fromisoformat(day).replace(tzinfo=zone)
                self._task_counts[key] = conn.execute(
                    select(func.count())
                    .select_from(_tasks)
                    .where(
                        _tasks.c.owner_id.is_(None)
                        if owner is None
                        else _tasks.c.owner_id == owner,
                        _tasks.c.kind == kind,
                        _tasks.c.due_at >= start,
                        _tasks.c.due_at < start + timedelta(days=1),
                    )
                ).scalar_one()
            if self._task_counts[key] < per_day:
                return at, capped
            capped = True
            next_day = datetime.fromisoformat(day).replace(tzinfo=zone) + timedelta(days=1)
            at, _ = self.calendar.next_allowed(next_day, zone)
        return at, capped

    def _rule(self, cadence, step, enrollment, reasons, the_route, late, deadline) -> str:
        occurrence = enrollment["next_occurrence"]
        if occurrence and step.repeat is not None:
            every = format_duration(step.repeat.every)
            base = f"repeat {occurrence} of {step.repeat.max}, every {every}"
        else:
            anchor = cadence.step_anchor(enrollment["next_step"])
            since = (
                f"entering {cadence.trigger.stage}" if anchor == "trigger" else "the previous touch"
            )
            base = f"{format_duration(step.after)} after {since}"
        if step.within is not None:
            base += f", within {format_duration(step.within)}"
        if reasons:
            base += "; held by " + ", ".join(reasons)
        if late:
            base += f"; late (deadline {deadline:%Y-%m-%d %H:%M} UTC), on_late: {step.on_late}"
        return base + f"; {the_route.reason}"

    def _journal(
        self,
        summary: TickSummary,
        occ: _Occurrence,
        channel: str | None,
        template: str | None,
        variant: str | None,
        status: str,
        rule: str,
    ) -> None:
        if not self.keep_journal:
            return
        summary.journal.append(
            PlannedTouch(
                person_id=occ.person.id,
                name=_name(occ.record),
                cadence_id=occ.cadence.id,
                step_id=occ.step.id,
                occurrence=occ.occurrence,
                at=occ.at,
                timezone=str(occ.person.zone),
                channel=channel,
                template=template,
                variant=variant,
                status=status,
                rule=rule,
            )
        )

    # -- dispatch -------------------------------------------------------------------------

    def _dispatch(self, pending: list[_Pending], now: datetime, summary: TickSummary) -> None:
        rounds = 0
        while pending and rounds < 4:
            rounds += 1
            by_channel: dict[str, list[_Pending]] = defaultdict(list)
            for item in pending:
                by_channel[item.message.channel].append(item)
            again: list[_Pending] = []
            for name, items in by_channel.items():
                channel = self.channels[name]
                limiter = self.limiters.get(name)
                # Messages that can share a provider request go out in the same chunks, up
                # to the channel's batch; a message that is a request of its own (an empty
                # key) is handed over no faster than the rate, so a 1/s policy is 1/s.
                items.sort(key=lambda item, ch=channel: ch.batch_key(item.message))
                for key, group in itertools.groupby(
                    items, key=lambda item, ch=channel: ch.batch_key(item.message)
                ):
                    members = list(group)
                    size = channel.max_batch
                    if limiter is not None and not key:
                        size = max(1, min(size, limiter.chunk))
                    for start in range(0, len(members), size):
                        chunk = members[start : start + size]
                        self._renew_leases(pending)
                        # Confirmed chunk by chunk: what is in flight at any moment (and
                        # would be ambiguous after a kill) is one chunk, not the batch.
                        again.extend(self._confirm(self._send(channel, chunk), now, summary))
            pending = again

    def _renew_leases(self, pending: list[_Pending]) -> None:
        """Keep the claims of a long, paced dispatch from expiring while it still sends.

        Past half the lease, every claim of this dispatch still unconfirmed gets a fresh
        lease, so a run started meanwhile does not report them ambiguous.
        """
        wall = self.wall_clock.now()
        if wall - self._claimed_at < self.lease / 2:
            return
        self._claimed_at = wall
        ids = [item.touch_id for item in pending]
        with self.transaction() as conn:
            for start in range(0, len(ids), 500):
                conn.execute(
                    update(_touches)
                    .where(
                        _touches.c.id.in_(ids[start : start + 500]),
                        _touches.c.status.in_(("claimed", "in_flight")),
                    )
                    .values(lease_until=wall + self.lease)
                )

    def _send(self, channel: Channel, chunk: list[_Pending]) -> list[tuple[_Pending, SendResult]]:
        by_id = {item.touch_id: item for item in chunk}
        limiter = self.limiters.get(channel.name)
        if limiter is not None:
            limiter.acquire(len(chunk))
        messages = [item.message for item in chunk]
        try:
            if channel.announces_requests:
                results = channel.send(messages, departing=self._departing)
            else:
                self._departing(messages)
                results = channel.send(messages)
        except NotInFlight as exc:
            return [
                (item, SendResult.failed(item.message, str(exc), permanent=False)) for item in chunk
            ]
        except Exception as exc:  # a channel bug must not lose the ledger's truth
            return [
                (
                    item,
                    SendResult.ambiguous(
                        item.message, f"channel {channel.name} raised {type(exc).__name__}: {exc}"
                    ),
                )
                for item in chunk
            ]
        seen = {result.touch_id for result in results}
        out = [(by_id[result.touch_id], result) for result in results if result.touch_id in by_id]
        for item in chunk:
            if item.touch_id not in seen:
                out.append(
                    (
                        item,
                        SendResult.ambiguous(
                            item.message, f"channel {channel.name} returned no result"
                        ),
                    )
                )
        return out

    def _departing(self, messages: Sequence[OutgoingMessage]) -> None:
        """Record ``messages`` as in flight, immediately before their provider request.

        Called from the channel's worker threads; committed before it returns (requests
        made at the same moment share one commit), so a kill after it leaves them
        ``in_flight`` (reconciled) and a kill before it leaves them ``claimed`` (released).
        Raises :class:`NotInFlight` when they cannot all be marked: no request then.
        """
        self._gate.mark(m.touch_id for m in messages)

    def _mark_in_flight(self, ids: list[int]) -> list[int]:
        """One transaction: ``ids`` still claimed by this run become ``in_flight``."""
        wall = self.wall_clock.now()
        marked: list[int] = []
        with self.transaction() as conn:
            for start in range(0, len(ids), 500):
                marked.extend(
                    conn.execute(
                        update(_touches)
                        .where(
                            _touches.c.id.in_(ids[start : start + 500]),
                            # Again in flight: a request re-sent after a 400 for others.
                            _touches.c.status.in_(("claimed", "in_flight")),
                            _touches.c.run_id == self.run_id,
                        )
                        .values(status="in_flight", lease_until=wall + self.lease)
                        .returning(_touches.c.id)
                    ).scalars()
                )
        return marked

    def _confirm(
        self, results: list[tuple[_Pending, SendResult]], now: datetime, summary: TickSummary
    ) -> list[_Pending]:
        again: list[_Pending] = []
        replans: list[tuple[_Pending, SendResult, dict[str, Any], StepCounts]] = []
        notes: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        suppress: list[dict[str, Any]] = []
        for item, result in results:
            counts = summary.steps[(item.cadence.id, item.step.id)]
            row = {
                "b_id": item.touch_id,
                "status": result.status,
                "channel": item.message.channel,
                "contact_point_id": item.contact_id,
                "provider_message_id": result.provider_message_id,
                "recall_ref": result.recall_ref,
                "reason": "; ".join(r for r in (item.reason, result.reason) if r) or None,
                "body_digest": _digest(item.message),
                "sent_at": now if result.status == "sent" else None,
                "delivery_at": (
                    max(now, item.message.send_at) if result.status == "sent" else None
                ),
                "lease_until": None,
                "updated_at": now,
            }
            if result.status == "sent":
                counts.sent += 1
                note = _note_for(item, now)
                if note is not None:
                    notes.append(note)
            elif result.status == "ambiguous":
                counts.ambiguous += 1
            else:
                if result.suppress:
                    suppress.append(
                        {
                            "b_id": item.contact_id,
                            "reason": result.suppress,
                            "now": now,
                            "kind": "email" if item.message.channel == "email" else "phone",
                            "value": item.message.to,
                            "source": item.message.channel,
                        }
                    )
                    for contact in item.person.contacts:
                        if contact.id == item.contact_id:
                            contact.suppressed = True
                            contact.suppressed_reason = result.suppress
                retry, later = (
                    self._fallback(item, result, now) if result.permanent else (None, False)
                )
                counts.failed += retry is None
                if retry is None and (later or not result.permanent):
                    # Provably not delivered: the step is planned again (window, caps and
                    # lateness re-apply), on the next channel when this one refused.
                    replans.append((item, result, row, counts))
                elif retry is not None:
                    row.update(
                        status="claimed",
                        channel=retry.message.channel,
                        contact_point_id=retry.contact_id,
                        reason=f"{retry.message.channel} after {item.message.channel} "
                        f"failed: {result.reason}",
                        body_digest=_digest(retry.message),
                        lease_until=self.wall_clock.now() + self.lease,
                        sent_at=None,
                        delivery_at=None,
                    )
                    again.append(retry)
            updates.append(row)
        with self.transaction() as conn:
            bulk_update(
                conn,
                _contacts,
                [
                    {
                        "id": item["b_id"],
                        "suppressed": True,
                        "suppressed_reason": item["reason"],
                        "suppressed_at": item["now"],
                        "updated_at": item["now"],
                    }
                    for item in suppress
                ],
            )
            # The provider's refusal names the address, not the person: it goes on the
            # suppression list, so everyone holding it (and whoever has it later) is spared.
            suppression_list.record(
                conn,
                [
                    {
                        "kind": item["kind"],
                        "value": item["value"],
                        "scope": "address",
                        "reason": item["reason"],
                        "source": item["source"],
                        "at": now,
                    }
                    for item in suppress
                ],
                now,
            )
            # Re-plan first: only an occurrence actually put back is marked so in the ledger.
            for item, _result, row, counts in self._replan(conn, replans, now):
                row["reason"] = f"{row['reason']}; re-planned for a later run"
                row["idempotency_key"] = f"{item.message.idempotency_key}#failed{item.touch_id}"
                counts.replanned += 1
            renamed = [row for row in updates if "idempotency_key" in row]
            for group in (renamed, [row for row in updates if "idempotency_key" not in row]):
                bulk_update(conn, _touches, [{"id": row.pop("b_id"), **row} for row in group])
            bulk_write(conn, _write_backs, notes, conflict=("touch_id", "kind"))
        return again

    def _replan(
        self,
        conn: Connection,
        replans: list[tuple[_Pending, SendResult, dict[str, Any], StepCounts]],
        now: datetime,
    ) -> list[tuple[_Pending, SendResult, dict[str, Any], StepCounts]]:
        """Put failed occurrences back in their enrollments; return those put back.

        A step is re-planned while it is at most ``REPLAN_WITHIN`` late, and only if its
        enrollment is still where this claim left it and no reply, stage change or opt-out
        for the person arrived since this tick applied events: whatever moved it on wins.
        Failures are rare, so this is one guarded statement per failed send.
        """
        done = []
        for entry in replans:
            item, result = entry[0], entry[1]
            before, after = item.before, item.after
            if before is None or after is None or item.due is None:
                continue
            if now - item.due > REPLAN_WITHIN:
                continue
            pause = max(REPLAN_AFTER, timedelta(seconds=result.retry_after or 0))
            stopped_since = (
                select(_events.c.id)
                .where(
                    _events.c.person_id == item.person.id,
                    _events.c.id > self._events_seen,
                    _events.c.type.in_(_STOPPING_EVENTS),
                )
                .exists()
            )
            changed = conn.execute(
                update(_enrollments)
                .where(
                    _enrollments.c.id == before["id"],
                    _enrollments.c.next_step == after["next_step"],
                    _enrollments.c.next_occurrence == after["next_occurrence"],
                    _enrollments.c.status == after["status"],
                    ~stopped_since,
                )
                .values(
                    **{name: before[name] for name in _REPLAN_FIELDS[1:]},
                    next_due_at=now + pause,
                    defer_reason=f"re-planned: {item.message.channel} failed",
                    updated_at=now,
                )
            ).rowcount
            if changed:
                self._deferred.add(before["id"])
                done.append(entry)
        return done

    def _fallback(
        self, item: _Pending, result: SendResult, now: datetime
    ) -> tuple[_Pending | None, bool]:
        """The same touch on the next usable channel the step allows, if any.

        Returns ``(pending, later)``: ``later`` when a usable channel exists but cannot
        deliver at this touch's instant (it cannot schedule that far ahead, or that soon):
        the occurrence is then re-planned rather than sent at the wrong time.
        """
        step = item.step
        if step.channel == "auto":
            order = list(self.config.policy.channel_order)
        else:
            order = [step.channel] + ([step.fallback] if step.fallback else [])
        later = False
        for name in order:
            if name in item.tried or name in TASK_CHANNELS or name not in self.channels:
                continue
            contact, _why = usable(name, item.person, self.config)
            if contact is None:
                continue
            if not _can_deliver(self.channels[name], item.message.send_at, now):
                later = True
                continue
            context = build_context(
                item.person,
                item.record,
                self.config,
                cadence_id=item.cadence.id,
                step_id=step.id,
                variant=item.variant,
                rating_urls=self._rating_urls(item.rating_token),
            )
            try:
                rendered = self.templates.render_for_step(
                    item.template, TemplateStore.kind_for(name), context, step.sendgrid_template_id
                )
            except TemplateRenderError:
                continue
            message = _message(
                item.touch_id,
                item.message.idempotency_key,
                item.person,
                item.record,
                item.cadence,
                step,
                name,
                contact.value,
                item.message.send_at,
                rendered,
                item.template,
                item.variant,
                reply_to=self.replies.address(item.token),
                message_id=self.replies.message_id(item.token) if item.token else None,
                recallable=item.message.recallable,
            )
            return (
                _Pending(
                    item.touch_id,
                    message,
                    item.person,
                    item.record,
                    item.cadence,
                    step,
                    item.variant,
                    item.template,
                    contact.id,
                    [*item.tried, name],
                    f"{name} after {item.message.channel} failed: {result.reason}",
                    due=item.due,
                    before=item.before,
                    after=item.after,
                    token=item.token,
                    rating_token=item.rating_token,
                ),
                False,
            )
        return None, later


class _BatchWriter:
    """Collects a claim batch's ledger rows, tasks and enrollment updates; writes them at once."""

    def __init__(
        self,
        now: datetime,
        run_id: str,
        lease_until: datetime,
        replies: _ReplyAddress | None = None,
    ) -> None:
        self.replies = replies or _ReplyAddress(None, None, None)
        self.now = now
        self.run_id = run_id
        self.lease_until = lease_until
        self.touches: list[dict[str, Any]] = []
        self.tasks: list[dict[str, Any]] = []
        self.enrollments: dict[int, dict[str, Any]] = {}
        self.pending: list[
            tuple[dict[str, Any], _Occurrence, RenderedMessage, str, str, dict[str, Any]]
        ] = []
        self.deferred: set[int] = set()

    def _enrollment(self, enrollment: dict[str, Any]) -> dict[str, Any]:
        return self.enrollments.setdefault(enrollment["id"], enrollment)

    def touch(
        self,
        occ: _Occurrence,
        status: str,
        *,
        reason: str | None = None,
        channel: str | None = None,
        contact_id: int | None = None,
        template: str | None = None,
        variant: str | None = None,
        subject: str | None = None,
        message: RenderedMessage | None = None,
        rating_token: str | None = None,
    ) -> dict[str, Any]:
        """Add a ledger row for this step occurrence."""
        # A claim gets its reply token and Message-ID now, so the ledger has them before
        # the provider call and an answer finds the touch whatever channel it went out on.
        token = secrets.token_hex(8) if status == "claimed" else None
        row = {
            "idempotency_key": occ.key,
            "enrollment_id": occ.enrollment["id"],
            "person_id": occ.enrollment["person_id"],
            "cadence_id": occ.cadence.id,
            "step_id": occ.step.id,
            "occurrence": occ.occurrence,
            "status": status,
            "channel": channel,
            "contact_point_id": contact_id,
            "template": template,
            "variant": variant,
            "subject": subject,
            "transactional": occ.step.transactional,
            "due_at": occ.due,
            "planned_at": occ.at,
            "claimed_at": self.now,
            "lease_until": self.lease_until if status == "claimed" else None,
            "run_id": self.run_id,
            "reason": reason,
            "body_digest": _digest_of(channel, message) if message is not None else None,
            "reply_token": token,
            "rating_token": rating_token,
            "message_id": self.replies.message_id(token) if token else None,
            "updated_at": self.now,
        }
        self.touches.append(row)
        return row

    def claim(
        self,
        occ: _Occurrence,
        channel: str,
        contact_id: int | None,
        *,
        message: RenderedMessage,
        template: str,
        variant: str,
        reason: str,
        rating_token: str | None = None,
    ) -> None:
        """Claim the occurrence for a channel; it is dispatched after the batch commits."""
        before = {name: occ.enrollment.get(name) for name in _REPLAN_FIELDS}
        row = self.touch(
            occ,
            "claimed",
            reason=reason,
            channel=channel,
            contact_id=contact_id,
            template=template,
            variant=variant,
            subject=message.subject,
            message=message,
            rating_token=rating_token,
        )
        self.pending.append((row, occ, message, template, variant, before))

    def task(
        self,
        occ: _Occurrence,
        kind: str,
        *,
        title: str,
        body: str,
        reason: str,
        template: str,
        variant: str,
        contact_id: int | None,
        rating_token: str | None = None,
    ) -> None:
        """Record the occurrence as a recruiter task."""
        row = self.touch(
            occ,
            "task",
            reason=reason,
            channel=kind if kind in TASK_CHANNELS else None,
            contact_id=contact_id,
            template=template,
            variant=variant,
            rating_token=rating_token,
        )
        self.tasks.append(
            {
                "key": row["idempotency_key"],
                "external_id": occ.record.get("external_id"),
                "person_id": occ.enrollment["person_id"],
                "record_id": occ.enrollment["record_id"],
                "source": occ.record.get("source"),
                "owner_id": occ.record.get("owner_id"),
                "kind": kind,
                "title": title[:500],
                "body": body,
                "reason": reason,
                "due_at": occ.at,
                "status": "open",
                "created_at": self.now,
            }
        )

    def defer(self, enrollment: dict[str, Any], at: datetime, reason: str) -> None:
        self.deferred.add(enrollment["id"])
        row = self._enrollment(enrollment)
        row["next_due_at"] = at
        row["defer_reason"] = reason

    def end(self, enrollment: dict[str, Any], status: str, reason: str | None) -> None:
        row = self._enrollment(enrollment)
        row.update(status=status, stop_reason=reason, stopped_at=self.now, next_due_at=None)

    def advance(self, occ: _Occurrence) -> None:
        """Move the enrollment past this occurrence: the next repeat, step, or the end."""
        cadence, at = occ.cadence, occ.at
        row = self._enrollment(occ.enrollment)
        row["last_touch_at"] = at
        row["defer_reason"] = None
        step = cadence.steps[row["next_step"]]
        if step.repeat and row["next_occurrence"] < step.repeat.max:
            row["next_occurrence"] += 1
            due = at + step.repeat.every
        else:
            row["next_step"] += 1
            row["next_occurrence"] = 0
            if row["next_step"] >= len(cadence.steps):
                row.update(
                    status="completed",
                    stop_reason=None,
                    stopped_at=self.now,
                    next_due_at=None,
                    step_due_at=None,
                )
                return
            anchor = (
                at if cadence.step_anchor(row["next_step"]) == "previous" else row["triggered_at"]
            )
            due = anchor + cadence.steps[row["next_step"]].after
        row["step_due_at"] = due
        row["next_due_at"] = due

    def flush(self, conn: Connection) -> list[_Pending]:
        ids: dict[str, int] = {}
        if self.touches:
            bulk_write(conn, _touches, self.touches, conflict=("idempotency_key",))
            keys = [row["idempotency_key"] for row in self.touches]
            # Only rows this run wrote: a conflicting claim by another worker keeps its run id.
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                ids.update(
                    (key, id_)
                    for id_, key in conn.execute(
                        select(_touches.c.id, _touches.c.idempotency_key).where(
                            _touches.c.idempotency_key.in_(chunk),
                            _touches.c.run_id == self.run_id,
                        )
                    )
                )
        tasks = [
            {
                **{k: v for k, v in task.items() if k not in ("key", "external_id")},
                "touch_id": ids[task["key"]],
            }
            for task in self.tasks
            if task["key"] in ids
        ]
        if tasks:
            bulk_write(conn, _tasks, tasks)
            owed = [t for t in self.tasks if t["key"] in ids and t["source"] in CRM_SOURCES]
            if owed:
                task_ids = dict(
                    conn.execute(
                        select(_tasks.c.touch_id, _tasks.c.id).where(
                            _tasks.c.touch_id.in_([ids[t["key"]] for t in owed])
                        )
                    ).all()
                )
                bulk_write(
                    conn,
                    _write_backs,
                    [
                        {
                            "touch_id": ids[t["key"]],
                            "task_id": task_ids[ids[t["key"]]],
                            "source": t["source"],
                            "external_id": t["external_id"],
                            "kind": "task",
                            "text": f"{t['title']}\n\n{t['body']}",
                            "status": "pending",
                            "attempts": 0,
                            "next_attempt_at": self.now,
                            "created_at": self.now,
                            "updated_at": self.now,
                        }
                        for t in owed
                    ],
                    conflict=("touch_id", "kind"),
                )
        bulk_update(
            conn,
            _enrollments,
            [
                {
                    "id": row["id"],
                    "status": row["status"],
                    "stop_reason": row["stop_reason"],
                    "stopped_at": row["stopped_at"],
                    "next_step": row["next_step"],
                    "next_occurrence": row["next_occurrence"],
                    "step_due_at": row["step_due_at"],
                    "next_due_at": row["next_due_at"],
                    "defer_reason": row["defer_reason"],
                    "last_touch_at": row["last_touch_at"],
                    "updated_at": self.now,
                }
                for row in self.enrollments.values()
            ],
        )
        pending: list[_Pending] = []
        for row, occ, rendered, template, variant, before in self.pending:
            touch_id = ids.get(row["idempotency_key"])
            if touch_id is None:
                continue  # another worker claimed this occurrence first
            contact = next(c for c in occ.person.contacts if c.id == row["contact_point_id"])
            message = _message(
                touch_id,
                row["idempotency_key"],
                occ.person,
                occ.record,
                occ.cadence,
                occ.step,
                row["channel"],
                contact.value,
                row["planned_at"],
                rendered,
                template,
                variant,
                reply_to=self.replies.address(row["reply_token"]),
                message_id=row["message_id"],
                recallable=row["planned_at"] > self.now,
            )
            pending.append(
                _Pending(
                    touch_id,
                    message,
                    occ.person,
                    occ.record,
                    occ.cadence,
                    occ.step,
                    variant,
                    template,
                    contact.id,
                    [row["channel"]],
                    row["reason"] or "",
                    due=occ.due,
                    before=before,
                    after={
                        name: self.enrollments[occ.enrollment["id"]].get(name)
                        for name in _REPLAN_FIELDS
                    },
                    token=row["reply_token"],
                    rating_token=row["rating_token"],
                )
            )
        return pending


def _message(
    touch_id: int,
    key: str,
    person: PersonState,
    record: dict[str, Any],
    cadence: Cadence,
    step: Step,
    channel: str,
    to: str,
    send_at: datetime,
    rendered: RenderedMessage,
    template: str,
    variant: str,
    *,
    reply_to: str | None = None,
    message_id: str | None = None,
    recallable: bool = False,
) -> OutgoingMessage:
    return OutgoingMessage(
        touch_id=touch_id,
        idempotency_key=key,
        person_id=person.id,
        channel=channel,
        to=to,
        body=rendered.body,
        send_at=send_at,
        cadence_id=cadence.id,
        step_id=step.id,
        template=template,
        variant=variant,
        subject=rendered.subject,
        owner_id=record.get("owner_id"),
        source=record.get("source"),
        external_id=record.get("external_id"),
        recruiter_name=record.get("recruiter_name"),
        recruiter_email=record.get("recruiter_email"),
        sendgrid_template_id=step.sendgrid_template_id if channel == "email" else None,
        template_data=rendered.data or {},
        reply_to=reply_to if channel == "email" else None,
        message_id=message_id if channel == "email" else None,
        recallable=recallable,
    )


@dataclass(frozen=True)
class _ReplyAddress:
    """``replies@domain`` → ``replies+<token>@domain``, and Message-IDs ``<token>@domain``."""

    local: str | None
    domain: str | None
    id_domain: str | None

    @classmethod
    def parse(cls, reply_to: str | None, mail_domain: str | None) -> _ReplyAddress:
        local = domain = None
        if reply_to and "@" in reply_to:
            local, domain = reply_to.strip().rsplit("@", 1)
            local = local.split("+", 1)[0]
        return cls(local, domain, domain or mail_domain)

    def address(self, token: str | None) -> str | None:
        if token is None or self.local is None:
            return None
        return f"{self.local}+{token}@{self.domain}"

    def message_id(self, token: str) -> str | None:
        return f"outreach.{token}@{self.id_domain}" if self.id_domain else None


def _note_for(item: _Pending, now: datetime) -> dict[str, Any] | None:
    """The CRM note owed for a sent touch (records from a CRM only)."""
    source, external_id = item.record.get("source"), item.record.get("external_id")
    if source not in CRM_SOURCES or not external_id:
        return None
    message = item.message
    if message.channel != "email":
        what = message.channel.upper()
    elif message.subject:
        what = f"Email '{message.subject}'"
    else:
        what = f"Email (SendGrid template {message.sendgrid_template_id})"
    when = f", scheduled for {message.send_at:%Y-%m-%d %H:%M} UTC" if message.send_at > now else ""
    return {
        "touch_id": item.touch_id,
        "task_id": None,
        "source": source,
        "external_id": external_id,
        "kind": "note",
        "text": f"{what} sent by the outreach engine{when} "
        f"({item.cadence.id}/{item.step.id}, variant {item.variant})",
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        "updated_at": now,
    }


def _without_duplicates(items: list[dict[str, Any]], writer: _BatchWriter) -> list[dict[str, Any]]:
    """One running enrollment per cadence and person; people merged later may have two."""
    newest: dict[str, dict[str, Any]] = {}
    for item in items:
        kept = newest.get(item["cadence_id"])
        if kept is None or item["triggered_at"] > kept["triggered_at"]:
            newest[item["cadence_id"]] = item
    for item in items:
        if newest[item["cadence_id"]] is not item:
            writer.end(item, "stopped", "duplicate: the person runs this cadence already")
    return [item for item in items if newest[item["cadence_id"]] is item]


def _digest(message: OutgoingMessage) -> str:
    return body_digest(message.channel, message.subject, message.body)


def _digest_of(channel: str | None, rendered: RenderedMessage) -> str:
    return body_digest(channel or "", rendered.subject, rendered.body)


def _can_deliver(channel: Channel, send_at: datetime, now: datetime) -> bool:
    """Whether ``channel`` can deliver at ``send_at``: now when due, else by scheduling."""
    ahead = send_at - now
    if ahead <= timedelta(0):
        return True
    return channel.min_schedule_ahead <= ahead <= channel.max_schedule_ahead


def _rate(config: CadenceConfig, channel: Channel) -> float | None:
    """Messages per second for a channel: the policy's limit, capped by the provider's."""
    limit = config.policy.rate_limits.get(channel.name)  # type: ignore[call-overload]
    rates = [r for r in (limit.per_second if limit else None, channel.rate_per_second) if r]
    return min(rates) if rates else None


def _name(record: dict[str, Any]) -> str:
    name = " ".join(p for p in (record.get("first_name"), record.get("last_name")) if p)
    return name or f"candidate {record.get('source', '')} {record.get('external_id', '')}".strip()


def _local_day(at: datetime, zone) -> str:
    return at.astimezone(zone).date().isoformat()
