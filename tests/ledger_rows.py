"""Ledger rows for tests that need a touch to point at (webhooks, inbound events)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, insert

from outreach.store.schema import Enrollment, Touch


def sent_touch(
    engine: Engine,
    person: int,
    contact_point: int,
    key: str,
    *,
    at: datetime,
    channel: str = "email",
    provider_message_id: str | None = None,
) -> int:
    """A sent touch to ``contact_point`` in a fresh enrollment; returns its id."""
    with engine.begin() as conn:
        enrollment = conn.execute(
            insert(Enrollment).values(
                person_id=person,
                cadence_id="x",
                trigger_stage="applied",
                triggered_at=at,
                status="active",
                created_at=at,
                updated_at=at,
            )
        ).inserted_primary_key[0]
        return conn.execute(
            insert(Touch).values(
                idempotency_key=key,
                enrollment_id=enrollment,
                person_id=person,
                cadence_id="x",
                step_id="s",
                status="sent",
                channel=channel,
                contact_point_id=contact_point,
                provider_message_id=provider_message_id,
                due_at=at,
                planned_at=at,
                claimed_at=at,
                updated_at=at,
            )
        ).inserted_primary_key[0]
