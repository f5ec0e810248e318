"""Event processing: a batch applied at once ends exactly where one event at a time does."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, select

import outreach.engine.enroll as enroll
from outreach.cadence import CadenceConfig
from outreach.engine.enroll import process_events
from outreach.engine.tick import engine_transactions
from outreach.records import normalize_record
from outreach.store import ensure_schema, make_engine
from outreach.store.candidates import upsert_candidates
from outreach.store.schema import (
    CandidateRecord,
    ContactPoint,
    Enrollment,
    Event,
    Person,
)

START = datetime(2026, 11, 2, 14, 0, tzinfo=UTC)
STAGES = ["prospect", "applied", "screening", "interview", "offer", "hired", "rejected", None]


def store(path: Path, config: CadenceConfig):
    engine = make_engine(f"sqlite:///{path}")
    ensure_schema(engine)
    rows = [
        {
            "source": "import" if i % 2 else "lever",
            "external_id": f"r{i}",
            "first_name": f"P{i}",
            # Records 0/1 and 2/3 share an address: one person with two records each.
            "email": f"p{i // 2}@example.com",
            "phone": f"+1415200{i:04d}",
            "sms_consent": "true",
        }
        for i in range(8)
    ]
    records = [
        normalize_record(
            r, where=f"row {i}", default_region="US", canonical_stage=config.canonical_stage
        )
        for i, r in enumerate(rows)
    ]
    with engine.begin() as conn:
        upsert_candidates(conn, records, START)
        conn.execute(Event.__table__.delete())  # the import's own events: the test writes its own
    return engine


def script(engine, seed: int) -> None:
    """A random but valid sequence of events for the store's people and records."""
    rng = random.Random(seed)
    with engine.begin() as conn:
        records = conn.execute(select(CandidateRecord.id, CandidateRecord.person_id)).all()
        points = conn.execute(select(ContactPoint.id, ContactPoint.person_id)).all()
        events = []
        entered: dict[int, list[datetime]] = {}
        for n in range(60):
            record_id, person_id = rng.choice(records)
            kind = rng.choice(["stage_change"] * 5 + ["reply", "opt_out", "bounce", "unsubscribe"])
            at = START + timedelta(minutes=n)
            if kind == "stage_change":
                seen = entered.setdefault(record_id, [])
                if seen and rng.random() < 0.3:
                    at = rng.choice(seen)  # a CRM repeating an entry date it reported before
                seen.append(at)
            event = {
                "type": kind,
                "person_id": person_id,
                "record_id": record_id if kind == "stage_change" else None,
                "channel": rng.choice([None, "email", "sms"]) if kind != "stage_change" else None,
                "contact_point_id": None,
                "at": at,
                "payload": {"to": rng.choice(STAGES)} if kind == "stage_change" else {},
                "created_at": START,
            }
            if kind in ("opt_out", "bounce") and rng.random() < 0.4:
                event["contact_point_id"] = rng.choice([p for p, who in points if who == person_id])
            events.append(event)
        conn.execute(insert(Event), events)


def state(engine) -> tuple:
    with engine.connect() as conn:
        return (
            sorted(
                tuple(row)
                for row in conn.execute(
                    select(
                        Enrollment.person_id,
                        Enrollment.record_id,
                        Enrollment.cadence_id,
                        Enrollment.triggered_at,
                        Enrollment.status,
                        Enrollment.stop_reason,
                    )
                )
            ),
            sorted(tuple(r) for r in conn.execute(select(Person.id, Person.global_opt_out))),
            sorted(
                tuple(r)
                for r in conn.execute(
                    select(ContactPoint.id, ContactPoint.suppressed, ContactPoint.suppressed_reason)
                )
            ),
        )


@pytest.mark.parametrize("seed", range(16))
def test_a_batch_ends_where_one_event_at_a_time_does(
    tmp_path: Path, default_config: CadenceConfig, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    together = store(tmp_path / "together.db", default_config)
    one_by_one = store(tmp_path / "one.db", default_config)
    script(together, seed)
    script(one_by_one, seed)
    now = START + timedelta(hours=2)
    stats = process_events(engine_transactions(together), default_config, now)
    monkeypatch.setattr(enroll, "BATCH", 1)
    single = process_events(engine_transactions(one_by_one), default_config, now)
    assert stats.events == single.events == 60
    assert state(together) == state(one_by_one)
    assert (stats.enrolled, stats.stopped, stats.suppressed, stats.opted_out) == (
        single.enrolled,
        single.stopped,
        single.suppressed,
        single.opted_out,
    )
    assert sum(stats.enrolled.values()) > 0
