"""The store's tables (SQLAlchemy 2 declarative). Alembic migrations mirror these.

``people`` is one human across CRM records; ``candidate_records`` is what each source
says about them; ``contact_points`` are the person's addresses with consent and
suppression state (one phone may belong to two people: an office line, a family phone);
``suppressions`` are opt-outs, unsubscribes, bounces and STOPs by normalised address,
kept whether or not anyone in the store has that address yet; ``enrollments`` and the
``touches`` ledger are the cadence engine's state; ``events`` are inbound signals (stage
changes, replies, opt-outs, bounces); ``tasks`` are recruiter tasks; ``sync_state`` holds
each source's committed cursor.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from outreach.store.types import UTCDateTime

__all__ = [
    "Base",
    "CandidateRecord",
    "ContactPoint",
    "CrmDelivery",
    "Enrollment",
    "Event",
    "InboundMessage",
    "MailboxState",
    "Person",
    "RateBucket",
    "Recall",
    "Suppression",
    "SyncState",
    "Task",
    "Touch",
    "WriteBack",
]


class Base(DeclarativeBase):
    """Declarative base of every table."""


class Person(Base):
    """One human, whatever number of CRM records describe them."""

    __tablename__ = "people"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    global_opt_out: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    opted_out_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # An out-of-office notice holds the person's touches until then (not an opt-out).
    paused_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    pause_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class CandidateRecord(Base):
    """What one source (a CRM, or an import file) says about a person."""

    __tablename__ = "candidate_records"
    __table_args__ = (
        UniqueConstraint("source", "external_id", name="uq_candidate_records_source_external"),
        Index("ix_candidate_records_person", "person_id"),
        Index("ix_candidate_records_stage", "stage"),
        # Person matching looks up who else has a phone (and what their names are).
        Index("ix_candidate_records_phone", "phone"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"), nullable=False)
    source: Mapped[str] = mapped_column(String(32), nullable=False)
    external_id: Mapped[str] = mapped_column(String(128), nullable=False)
    first_name: Mapped[str | None] = mapped_column(String(200))
    last_name: Mapped[str | None] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(32))
    linkedin_url: Mapped[str | None] = mapped_column(String(500))
    x_url: Mapped[str | None] = mapped_column(String(500))
    facebook_url: Mapped[str | None] = mapped_column(String(500))
    source_stage: Mapped[str | None] = mapped_column(String(200))
    stage: Mapped[str | None] = mapped_column(String(20))
    stage_entered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    timezone: Mapped[str | None] = mapped_column(String(64))
    job_title: Mapped[str | None] = mapped_column(String(300))
    job_department: Mapped[str | None] = mapped_column(String(300))
    recruiter_name: Mapped[str | None] = mapped_column(String(200))
    recruiter_email: Mapped[str | None] = mapped_column(String(320))
    recruiter_phone: Mapped[str | None] = mapped_column(String(32))
    owner_id: Mapped[str | None] = mapped_column(String(128))
    preferred_channel: Mapped[str | None] = mapped_column(String(16))
    # What this record says about SMS consent, and since when it says so (the time it
    # took this value: an unchanged "true" keeps its old time, so it never outranks a
    # later withdrawal from another source).
    sms_consent: Mapped[bool | None] = mapped_column(Boolean)
    sms_consent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    tags: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    custom: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    source_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class ContactPoint(Base):
    """An email address, phone number or LinkedIn profile of a person, with its state.

    Suppression is sticky: sync and import never clear it (DESIGN.md invariant 4). An
    email address or LinkedIn profile belongs to one person; a phone number may belong to
    several (records with different names sharing a line stay apart), and then each
    holder has its own point, flagged ``shared``. ``sms_consent`` is the newest statement
    of any source (``consent_source``, ``consent_at``); a withdrawal wins a tie.
    """

    __tablename__ = "contact_points"
    __table_args__ = (
        UniqueConstraint("person_id", "kind", "value", name="uq_contact_points_person_kind_value"),
        # (person_id) alone is served by the unique index it leads
        Index("ix_contact_points_kind_value", "kind", "value"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"), nullable=False)
    # email | phone | linkedin | x | facebook
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    value: Mapped[str] = mapped_column(String(500), nullable=False)
    phone_type: Mapped[str | None] = mapped_column(String(32))
    valid: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)
    invalid_reason: Mapped[str | None] = mapped_column(Text)
    sms_consent: Mapped[bool | None] = mapped_column(Boolean)
    consent_source: Mapped[str | None] = mapped_column(String(32))
    consent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    shared: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    suppressed: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    suppressed_reason: Mapped[str | None] = mapped_column(Text)
    suppressed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class Suppression(Base):
    """An address that must not be messaged, whether or not anyone has it yet.

    ``kind`` and ``value`` are the normalised address (email lower-cased, phone E.164,
    LinkedIn URL canonical). ``scope`` says what it covers: ``address`` (this address:
    a bounce, a STOP), ``channel`` (every address of this kind of whoever holds it: an
    email unsubscribe or opt-out) or ``all`` (every channel of whoever holds it: a global
    opt-out). Import, sync and every tick apply it (DESIGN.md invariant 4); the first
    reason stays.
    """

    __tablename__ = "suppressions"
    __table_args__ = (
        UniqueConstraint("kind", "value", "scope", name="uq_suppressions_address_scope"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)  # email | phone | linkedin
    value: Mapped[str] = mapped_column(String(500), nullable=False)
    scope: Mapped[str] = mapped_column(String(16), nullable=False)  # address | channel | all
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    source: Mapped[str] = mapped_column(String(64), nullable=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class Enrollment(Base):
    """A person in a cadence, from one entry into the trigger stage."""

    __tablename__ = "enrollments"
    __table_args__ = (
        # One enrollment per record entering a stage (records are never merged, people are;
        # the engine keeps one running enrollment per person and cadence).
        UniqueConstraint("record_id", "cadence_id", "triggered_at", name="uq_enrollments_entry"),
        Index("ix_enrollments_due", "status", "next_due_at"),
        Index("ix_enrollments_person", "person_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"), nullable=False)
    record_id: Mapped[int | None] = mapped_column(ForeignKey("candidate_records.id"))
    cadence_id: Mapped[str] = mapped_column(String(64), nullable=False)
    trigger_stage: Mapped[str] = mapped_column(String(20), nullable=False)
    triggered_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="active")
    stop_reason: Mapped[str | None] = mapped_column(Text)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_step: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_occurrence: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # When the current step occurrence is due by the cadence (before any deferral), and
    # when the engine should look at the enrollment next (the due time, or later when the
    # throttle deferred it).
    step_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    defer_reason: Mapped[str | None] = mapped_column(Text)
    last_touch_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class Touch(Base):
    """The ledger: one row per step occurrence, written before any provider call.

    ``idempotency_key`` is ``enrollment:step:occurrence``; its uniqueness is what makes
    a step occurrence go out at most once (DESIGN.md invariant 2).
    """

    __tablename__ = "touches"
    __table_args__ = (
        UniqueConstraint("idempotency_key", name="uq_touches_idempotency_key"),
        Index("ix_touches_person_time", "person_id", "sent_at"),
        # (status) alone is served by ix_touches_status_planned, which it leads
        Index("ix_touches_provider_message", "provider_message_id"),
        Index("ix_touches_reply_token", "reply_token"),
        Index("ix_touches_rating_token", "rating_token", unique=True),
        Index("ix_touches_message_id", "message_id"),
        # The recall step looks at touches still to be delivered: a short range of this.
        Index("ix_touches_status_planned", "status", "planned_at"),
        # Releasing an interrupted run's claims asks, per enrollment, for later touches.
        Index("ix_touches_enrollment", "enrollment_id"),
        # The report: sent touches in a window (covering: the report reads these columns
        # only), and a person's touches in delivery order (last touch before a reply).
        Index(
            "ix_touches_delivery",
            "delivery_at",
            "status",
            "person_id",
            "enrollment_id",
            "cadence_id",
            "step_id",
            "channel",
            "variant",
            "id",
        ),
        Index("ix_touches_person_delivery", "person_id", "delivery_at"),
        Index("ix_touches_step_due", "cadence_id", "step_id", "due_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), nullable=False)
    enrollment_id: Mapped[int] = mapped_column(ForeignKey("enrollments.id"), nullable=False)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"), nullable=False)
    cadence_id: Mapped[str] = mapped_column(String(64), nullable=False)
    step_id: Mapped[str] = mapped_column(String(64), nullable=False)
    occurrence: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    channel: Mapped[str | None] = mapped_column(String(16))
    contact_point_id: Mapped[int | None] = mapped_column(ForeignKey("contact_points.id"))
    template: Mapped[str | None] = mapped_column(String(128))
    variant: Mapped[str | None] = mapped_column(String(64))
    subject: Mapped[str | None] = mapped_column(String(500))
    transactional: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    # The delivery instant the throttle chose (a provider schedules to it when it is later
    # than the send); caps and windows are checked on this.
    planned_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    # Wall-clock time after which an unconfirmed claim is reported as ambiguous.
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    run_id: Mapped[str | None] = mapped_column(String(36))
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When the message reached (or was scheduled to reach) the candidate: the later of
    # sent_at and planned_at, set when the touch becomes sent. The report counts by it.
    delivery_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    provider_message_id: Mapped[str | None] = mapped_column(String(200))
    # Email: the Message-ID the touch went out with and the token of its Reply-To
    # (replies+<token>@domain), so an answer finds the touch it answers.
    message_id: Mapped[str | None] = mapped_column(String(250))
    reply_token: Mapped[str | None] = mapped_column(String(40))
    # The secret of the touch's one-click rating links (/r/<token>/<score>): 128 random
    # bits, apart from reply_token (64 bits, and shown in every Reply-To address).
    rating_token: Mapped[str | None] = mapped_column(String(40))
    # What the channel needs to cancel a delivery it holds for later (SendGrid batch id,
    # Twilio message SID); None when nothing can be recalled.
    recall_ref: Mapped[str | None] = mapped_column(String(200))
    # SHA-256 of the message text (SMS body, email subject and body): an ambiguous send is
    # matched against what the provider holds by this, never by storing the text itself.
    body_digest: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class Recall(Base):
    """A touch handed to a provider for later whose cadence stopped: cancel it there.

    ``status``: pending (try at ``next_attempt_at``), cancelled (the provider holds a
    cancellation until the send time), released (the provider slot is freed), too_late,
    unsupported, failed (gave up). The last three are the unrecallable.
    """

    __tablename__ = "recalls"
    __table_args__ = (
        UniqueConstraint("touch_id", name="uq_recalls_touch"),
        Index("ix_recalls_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    touch_id: Mapped[int] = mapped_column(ForeignKey("touches.id"), nullable=False)
    channel: Mapped[str] = mapped_column(String(16), nullable=False)
    ref: Mapped[str] = mapped_column(String(200), nullable=False)
    send_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    why: Mapped[str] = mapped_column(Text, nullable=False)
    reason: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class InboundMessage(Base):
    """One email that came back (reply, auto-reply, bounce, unsubscribe), kept whether or
    not it matched a touch. ``dedupe_key`` (Message-ID, else a content hash) makes a
    message count once however many times it is fetched, posted or imported."""

    __tablename__ = "inbound_messages"
    __table_args__ = (
        UniqueConstraint("dedupe_key", name="uq_inbound_messages_dedupe_key"),
        Index("ix_inbound_messages_kind_time", "kind", "received_at"),
        Index("ix_inbound_messages_person", "person_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(200), nullable=False)
    source: Mapped[str] = mapped_column(String(16), nullable=False)  # imap | file | parse
    origin: Mapped[str] = mapped_column(Text, nullable=False)  # where it was read
    message_id: Mapped[str | None] = mapped_column(String(250))
    # human | auto | bounce | unsubscribe | invalid (could not be read as mail)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    out_of_office: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    rule: Mapped[str | None] = mapped_column(Text)
    from_address: Mapped[str | None] = mapped_column(String(500))
    subject: Mapped[str | None] = mapped_column(String(500))
    new_text: Mapped[str | None] = mapped_column(Text)
    returns_on: Mapped[date | None] = mapped_column(Date)
    bounce_status: Mapped[str | None] = mapped_column(String(16))
    matched_by: Mapped[str | None] = mapped_column(String(16))  # token | thread | sender
    person_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"))
    touch_id: Mapped[int | None] = mapped_column(ForeignKey("touches.id"))
    contact_point_id: Mapped[int | None] = mapped_column(ForeignKey("contact_points.id"))
    size: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class MailboxState(Base):
    """Where ``replies poll`` is in one IMAP folder: its UIDVALIDITY and last UID read."""

    __tablename__ = "mailbox_state"

    mailbox: Mapped[str] = mapped_column(String(500), primary_key=True)
    uidvalidity: Mapped[int] = mapped_column(BigInteger, nullable=False)
    last_uid: Mapped[int] = mapped_column(BigInteger, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class Event(Base):
    """An inbound signal: stage change, reply, opt-out, bounce, unsubscribe, delivery."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("dedupe_key", name="uq_events_dedupe_key"),
        Index("ix_events_unprocessed", "processed_at", "id"),
        Index("ix_events_person", "person_id"),
        # The report: events of a type in a window, and delivery events of a touch.
        Index("ix_events_type_at", "type", "at", "person_id"),
        Index("ix_events_touch_type", "touch_id", "type"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    type: Mapped[str] = mapped_column(String(32), nullable=False)
    channel: Mapped[str | None] = mapped_column(String(16))
    person_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"))
    record_id: Mapped[int | None] = mapped_column(ForeignKey("candidate_records.id"))
    contact_point_id: Mapped[int | None] = mapped_column(ForeignKey("contact_points.id"))
    touch_id: Mapped[int | None] = mapped_column(ForeignKey("touches.id"))
    source: Mapped[str | None] = mapped_column(String(32))
    external_id: Mapped[str | None] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    dedupe_key: Mapped[str | None] = mapped_column(String(200))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class CrmDelivery(Base):
    """One CRM webhook event already taken in (Greenhouse-Event-ID, Lever ``id``, HubSpot
    ``eventId``): a retried or replayed delivery of it changes nothing, across restarts."""

    __tablename__ = "crm_deliveries"

    source: Mapped[str] = mapped_column(String(32), primary_key=True)
    delivery_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    external_id: Mapped[str | None] = mapped_column(String(128))
    # applied | unchanged | stale | unknown | ignored
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class Task(Base):
    """A recruiter task (LinkedIn step, call, or a touch no channel could carry)."""

    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_status_owner", "status", "owner_id"),
        Index("ix_tasks_person", "person_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"), nullable=False)
    record_id: Mapped[int | None] = mapped_column(ForeignKey("candidate_records.id"))
    touch_id: Mapped[int | None] = mapped_column(ForeignKey("touches.id"))
    source: Mapped[str | None] = mapped_column(String(32))
    owner_id: Mapped[str | None] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16), nullable=False)  # linkedin|call|x|facebook|manual
    title: Mapped[str] = mapped_column(String(500), nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False, default="")
    reason: Mapped[str | None] = mapped_column(Text)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="open")
    external_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SyncState(Base):
    """The last committed cursor of one source (sync resumes from here)."""

    __tablename__ = "sync_state"

    source: Mapped[str] = mapped_column(String(32), primary_key=True)
    cursor: Mapped[str | None] = mapped_column(Text)
    full_cursor: Mapped[str | None] = mapped_column(Text)
    last_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class WriteBack(Base):
    """A note or task owed to a CRM after a touch; retried later, never blocking sends."""

    __tablename__ = "write_backs"
    __table_args__ = (
        UniqueConstraint("touch_id", "kind", name="uq_write_backs_touch_kind"),
        UniqueConstraint("inbound_id", "kind", name="uq_write_backs_inbound_kind"),
        Index("ix_write_backs_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # What the write-back reports: a touch that went out, or a reply that came in.
    touch_id: Mapped[int | None] = mapped_column(ForeignKey("touches.id"))
    inbound_id: Mapped[int | None] = mapped_column(ForeignKey("inbound_messages.id"))
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id"))
    source: Mapped[str] = mapped_column(String(32), nullable=False)
    external_id: Mapped[str] = mapped_column(String(128), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)  # note | task
    text: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    external_ref: Mapped[str | None] = mapped_column(String(128))
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class RateBucket(Base):
    """A provider rate limit shared by every worker on this database: its next free slot.

    ``tat`` is in seconds since the epoch on the database server's clock; see
    :mod:`outreach.engine.limits_pg`. UNLOGGED on PostgreSQL (migration 0007): a crash
    only resets the buckets to idle.
    """

    __tablename__ = "rate_buckets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    tat: Mapped[float] = mapped_column(Double, nullable=False)
