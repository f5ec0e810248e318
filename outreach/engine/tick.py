"""One tick of the engine: enroll, then plan → route → throttle → render → record → dispatch.

A tick works through the enrollments that are due before ``now + horizon`` (an index on
the next due time: the work grows with the number of due touches, not with the number of
people), a batch at a time. Each stage is a module that takes a batch and hands one on:

1. **Claim** (one transaction per batch): :mod:`~outreach.engine.plan` locks the batch's
   due enrollments and people (PostgreSQL: ``FOR UPDATE SKIP LOCKED``; SQLite: ``BEGIN
   IMMEDIATE``), so one person's touches are decided by one worker at a time, and lists
   the due occurrences in priority order; :mod:`~outreach.engine.route` picks each one's
   channel; :mod:`~outreach.engine.throttle` decides when it may go (caps, gap, window,
   pauses, holdout, task caps, scheduling limits, lateness); :mod:`~outreach.engine.render`
   renders it; :mod:`~outreach.engine.record` writes the ledger (``claimed`` with its
   idempotency key), tasks and enrollment updates, all before any provider is called.
   Throttle and render run in :func:`~outreach.engine.throttle.waves`: a person's later
   occurrence, and a recruiter's next task, are decided after the ones they depend on.
2. **Dispatch** (:mod:`~outreach.engine.dispatch`, outside any transaction): immediately
   before each provider request its touches become ``in_flight`` in a short transaction.
3. **Confirm** (:class:`~outreach.engine.record.Confirmer`): each result is written back
   (``sent``, ``failed``, ``ambiguous``), with fallbacks, re-plans and CRM notes.

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

import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy import func, select

from channels.base import Channel
from outreach.cadence import CadenceConfig
from outreach.clock import Clock, SystemClock
from outreach.dynamic_templates import dynamic_check_for
from outreach.engine.batch import (
    REPLAN_AFTER,
    REPLAN_WITHIN,
    Pending,
    PlannedTouch,
    ReplyAddress,
    StepCounts,
    TickSummary,
    Transactions,
    engine_transactions,
    fewer_collections,
    nested_transactions,
)
from outreach.engine.dispatch import Dispatcher
from outreach.engine.enroll import process_events
from outreach.engine.ledger import BatchWriter, count_tasks
from outreach.engine.liveness import Liveness
from outreach.engine.plan import claim_due, plan
from outreach.engine.ratelimit import LimiterFactory
from outreach.engine.recall import recall_scheduled
from outreach.engine.reconcile import reconcile_ambiguous
from outreach.engine.record import Confirmer, record
from outreach.engine.recover import recover_interrupted
from outreach.engine.render import Renderer
from outreach.engine.route import route_batch
from outreach.engine.throttle import TaskCounts, Throttle, settle, waves
from outreach.store.schema import Event
from outreach.templates import TemplateStore

__all__ = [
    "REPLAN_AFTER",
    "REPLAN_WITHIN",
    "PlannedTouch",
    "StepCounts",
    "Tick",
    "TickSummary",
    "Transactions",
    "engine_transactions",
    "nested_transactions",
]

_events = Event.__table__


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
        #: OUTREACH_REPLY_TO: each email's Reply-To is its plus-addressed form with the
        #: touch's token; ``mail_domain`` names the Message-IDs the engine assigns
        self.replies = ReplyAddress.parse(reply_to, mail_domain)
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
        self.person_ids = person_ids
        self.keep_journal = journal
        self.dialect = dialect
        self.run_id = str(uuid.uuid4())
        # SendGrid dynamic templates are read once per tick, to check each touch's data.
        self.templates = TemplateStore(
            config.template_dir, dynamic_check_for(self.channels.get("email"))
        )
        # The stages; what they keep lives as long as the tick (task counts, calendars).
        self.task_counts = TaskCounts()
        self._throttle = Throttle(config, self.channels, horizon, self.task_counts)
        #: OUTREACH_PUBLIC_URL: where a touch's rating links point (``outreach serve``)
        self._render = Renderer(config, self.templates, public_url=public_url, replies=self.replies)
        self._dispatcher = Dispatcher(
            config,
            self.channels,
            transaction,
            self.run_id,
            self.wall_clock,
            lease,
            sleep=sleep,
            monotonic=monotonic,
            limiters=limiters,
        )
        self.limiters = self._dispatcher.limiters
        # Enrollments this tick already deferred: looking again would decide the same.
        self._deferred: set[int] = set()
        self._confirmer = Confirmer(
            transaction,
            lambda item, result, now: self._render.fallback(item, result, now, self.channels),
            lambda: self.wall_clock.now() + self.lease,
            self._deferred,
        )
        self._still_due = False

    # -- the tick -------------------------------------------------------------------------

    #: passes over the due enrollments per tick (steps chained within the horizon)
    MAX_PASSES = 20

    def run(self) -> TickSummary:
        """Run the tick once; return its summary."""
        with self.liveness.hold(self.run_id), fewer_collections():
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
            self._confirmer.events_seen = conn.execute(latest).scalar_one()
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
                self._dispatcher(pending, now, partial(self._confirmer.confirm, summary=summary))
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

    # -- one batch: plan → route → throttle → render → record ----------------------------

    def _claim_batch(
        self,
        now: datetime,
        limit: datetime,
        cursor: tuple[datetime, int] | None,
        summary: TickSummary,
    ) -> tuple[tuple[datetime, int], list[Pending]] | None:
        postgres = self.dialect == "postgresql"
        with self.transaction(immediate=True) as conn:
            due = claim_due(
                conn,
                self.config,
                now,
                limit,
                cursor,
                batch_size=self.batch_size,
                person_ids=self.person_ids,
                postgres=postgres,
            )
            if due is None:
                return None
            self._dispatcher.claimed_at = self.wall_clock.now()
            lease_until = self._dispatcher.claimed_at + self.lease
            # Task counts are read again each batch, inside its claim: the tasks other
            # workers committed since count against a recruiter's daily cap too.
            self.task_counts.counts.clear()
            writer = BatchWriter(now, self.run_id, lease_until, self.replies)
            items = plan(
                due,
                self.config,
                writer,
                summary,
                deferred=self._deferred,
            )
            items = route_batch(items, self.config, set(self.channels))
            tasks = partial(count_tasks, conn)
            decided = []
            for wave in waves(items):
                wave = self._render(self._throttle(wave, now, tasks), now)
                decided.extend(settle(wave, self.task_counts))
            record(decided, writer, summary if self.keep_journal else None)
            pending = writer.flush(conn)
        self._deferred |= writer.deferred
        self._still_due = self._still_due or any(
            row["status"] == "active"
            and row["id"] not in writer.deferred
            and row["next_due_at"] is not None
            and row["next_due_at"] < limit
            for row in writer.enrollments.values()
        )
        return due.cursor, pending
