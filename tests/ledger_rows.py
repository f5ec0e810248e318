"""Store rows for the events and webhook tests: candidates, their contact points, touches."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, insert, select

from outreach.store.schema import CandidateRecord, ContactPoint, Enrollment, Touch


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


def walkthrough_store(engine: Engine, config, tmp_path, at: datetime) -> Engine:
    """The walkthrough's eight good candidates (c1 Ann .. c10 Jon) imported at ``at``."""
    from tests_data import HEADER, ROWS

    from outreach.clock import FixedClock
    from outreach.importer import import_file

    path = tmp_path / "people.csv"
    path.write_text(HEADER + "\n".join(ROWS) + "\n")
    report = import_file(path, engine, config, FixedClock(at))
    assert report.loaded == 8
    return engine


def person_of(engine: Engine, external_id: str) -> int:
    """The person id of the record with ``external_id``."""
    with engine.connect() as conn:
        return conn.execute(
            select(CandidateRecord.person_id).where(CandidateRecord.external_id == external_id)
        ).scalar_one()


def point(engine: Engine, kind: str, value: str):
    """The contact point row of ``kind`` with ``value``."""
    with engine.connect() as conn:
        return conn.execute(
            select(ContactPoint).where(ContactPoint.kind == kind, ContactPoint.value == value)
        ).one()
