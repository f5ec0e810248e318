"""The small types the tick's stages hand each other, and the tick's units of work.

A tick is a pipeline (see :mod:`outreach.engine.tick`): plan → route → throttle → render
→ record (claim) → dispatch → confirm. The stages pass plain dataclasses:

- :class:`Occurrence`: one due step occurrence being decided, from planning to its
  outcome (``deferred``, ``holdout``, ``skipped``, ``task`` or ``claimed``);
- :class:`Pending`: a claimed touch on its way to a channel, with what a fallback and a
  re-plan need;
- :class:`StepCounts`, :class:`PlannedTouch`, :class:`TickSummary`: what the tick did.

Invariant carried here: an occurrence's idempotency key (:attr:`Occurrence.key`) is its
enrollment, step and occurrence number, so a step occurrence is claimed at most once
(invariant 2).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine

from channels.base import OutgoingMessage, body_digest
from outreach.cadence import Cadence, Step
from outreach.engine.enroll import EnrollStats
from outreach.engine.people import PersonState
from outreach.engine.recall import RecallSummary
from outreach.engine.recover import RecoverySummary
from outreach.engine.route import Route
from outreach.templates import RenderedMessage

__all__ = [
    "REPLAN_AFTER",
    "REPLAN_FIELDS",
    "REPLAN_WITHIN",
    "Occurrence",
    "Pending",
    "PlannedTouch",
    "ReplyAddress",
    "StepCounts",
    "TickSummary",
    "Transactions",
    "engine_transactions",
    "local_day",
    "nested_transactions",
    "outgoing_message",
    "person_name",
]

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

    # Each transaction is a connection of its own: safe from several threads at once.
    transaction.concurrent = True  # type: ignore[attr-defined]
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
class Occurrence:
    """One step occurrence being decided: whose, which, when it was due, when it goes.

    The plan stage fills the first fields; the route stage sets :attr:`route`; the
    throttle stage sets :attr:`at`, :attr:`rule`, :attr:`chosen` (the route after the
    lateness rule) or an outcome; the render stage sets the rendered message or task, or
    an outcome. ``seq`` is the order the old sequential tick decided in: the record stage
    writes in that order, so ledger ids and previews do not depend on how stages batch.
    """

    enrollment: dict[str, Any]
    person: PersonState
    record: dict[str, Any]
    cadence: Cadence
    step: Step
    occurrence: int
    due: datetime
    at: datetime
    counts: StepCounts
    rule: str = ""
    seq: int = 0
    #: the earliest the occurrence may go before the policy is applied (due, or a pause)
    not_before: datetime | None = None
    #: the channel the route stage chose
    route: Route | None = None
    #: the route after the lateness rule (a late ``on_late: task`` step goes to a person)
    chosen: Route | None = None
    reasons: list[str] = field(default_factory=list)
    late: bool = False
    #: ``deferred``, ``holdout``, ``skipped``, ``task``, ``claimed``, or ``ended`` (the plan
    #: stage stopped the enrollment); empty while undecided
    outcome: str = ""
    #: the key the step's ``deferred`` or ``skipped`` counter counts it under; the record
    #: stage counts in planning order, so the summary reads as a sequential walk's would
    tally: str = ""
    #: why (``skipped``, ``holdout``, ``deferred``), and the new due time of ``deferred``
    reason: str = ""
    defer_until: datetime | None = None
    #: the rule the preview shows, when it differs from :attr:`rule`
    journal_rule: str | None = None
    variant: str | None = None
    template: str | None = None
    kind: str | None = None
    message: RenderedMessage | None = None
    title: str = ""
    body: str = ""
    rating_token: str | None = None

    @property
    def key(self) -> str:
        """The idempotency key: enrollment, step and occurrence."""
        return f"{self.enrollment['id']}:{self.step.id}:{self.occurrence}"

    def decide(
        self, outcome: str, reason: str = "", until: datetime | None = None, *, tally: str = ""
    ) -> None:
        """Settle the occurrence's outcome; later stages pass it on untouched."""
        self.outcome = outcome
        self.reason = reason
        self.defer_until = until
        self.tally = tally


@dataclass
class Pending:
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
    #: on: what a re-plan after a provider outage needs (see confirm.replan)
    due: datetime | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    #: the touch's reply token (its Reply-To and Message-ID follow it to a fallback channel)
    token: str | None = None
    #: the touch's rating token (its rating links follow it to a fallback channel)
    rating_token: str | None = None


#: enrollment fields a claim moves on, restored when a send provably failed and is re-planned
REPLAN_FIELDS = (
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


@dataclass(frozen=True)
class ReplyAddress:
    """``replies@domain`` → ``replies+<token>@domain``, and Message-IDs ``<token>@domain``."""

    local: str | None
    domain: str | None
    id_domain: str | None

    @classmethod
    def parse(cls, reply_to: str | None, mail_domain: str | None) -> ReplyAddress:
        """Read ``OUTREACH_REPLY_TO`` (any plus part dropped) and the Message-ID domain."""
        local = domain = None
        if reply_to and "@" in reply_to:
            local, domain = reply_to.strip().rsplit("@", 1)
            local = local.split("+", 1)[0]
        return cls(local, domain, domain or mail_domain)

    def address(self, token: str | None) -> str | None:
        """The plus-addressed Reply-To for ``token``, or None without one."""
        if token is None or self.local is None:
            return None
        return f"{self.local}+{token}@{self.domain}"

    def message_id(self, token: str) -> str | None:
        """The Message-ID the engine assigns to the touch with ``token``."""
        return f"outreach.{token}@{self.id_domain}" if self.id_domain else None


def outgoing_message(
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
    """The message a channel sends for one claimed touch."""
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


def digest(message: OutgoingMessage) -> str:
    """The ledger's body digest of a message."""
    return body_digest(message.channel, message.subject, message.body)


def digest_of(channel: str | None, rendered: RenderedMessage) -> str:
    """The ledger's body digest of a rendered message for ``channel``."""
    return body_digest(channel or "", rendered.subject, rendered.body)


def person_name(record: dict[str, Any]) -> str:
    """A record's name for tasks and previews (its source and id when it has none)."""
    name = " ".join(p for p in (record.get("first_name"), record.get("last_name")) if p)
    return name or f"candidate {record.get('source', '')} {record.get('external_id', '')}".strip()


def local_day(at: datetime, zone) -> str:
    """``at``'s date in ``zone``, ISO formatted (the key of a per-day task cap)."""
    return at.astimezone(zone).date().isoformat()
