"""What the upsert's fast writes store: the values the ORM types would store, exactly.

The upsert hands the driver plain tuples: booleans as Python bools (SQLite's driver binds
them as the integers 1 and 0, what SQLAlchemy's Boolean stores) and stage change payloads
rendered once per stage pair. These tests read the rows back raw and through the ORM.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy import select

from outreach.contacts import normalize_phone
from outreach.records import CandidateIn
from outreach.store.candidates import _unnest_fits, upsert_candidates
from outreach.store.schema import CandidateRecord, ContactPoint, Event

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


def _batch() -> list[CandidateIn]:
    return [
        CandidateIn(
            source="import",
            external_id=str(i),
            first_name=f"Ann{i}",
            email=f"ann.{i}@example.com",
            phone=normalize_phone(f"(212) 555-01{i:02d}", "US"),
            sms_consent=consent,
            email_opt_out=opt_out,
            source_stage=stage,
            stage=stage,
            tags=["a", 'b "quoted"'] if i % 2 else [],
            custom={"note": 'é \\ "x"', "n": i} if i % 2 else {},
        )
        for i, (consent, opt_out, stage) in enumerate(
            [
                (True, False, "applied"),
                (False, True, "interview"),
                (None, False, None),
                (True, True, 'quote " and \\ and é'),
            ]
        )
    ]


def test_booleans_and_payloads_are_stored_as_the_orm_stores_them(engine) -> None:
    batch = _batch()
    with engine.begin() as conn:
        upsert_candidates(conn, batch, NOW)
    with engine.connect() as conn:
        records = {r.external_id: r for r in conn.execute(select(CandidateRecord.__table__))}
        points = list(conn.execute(select(ContactPoint.__table__)))
        events = list(conn.execute(select(Event.__table__).order_by(Event.id)))
        if engine.dialect.name == "sqlite":
            raw = conn.exec_driver_sql(
                "SELECT typeof(sms_consent), sms_consent FROM candidate_records "
                "ORDER BY CAST(external_id AS INTEGER)"
            ).all()
            assert raw == [("integer", 1), ("integer", 0), ("null", None), ("integer", 1)]
            kinds = conn.exec_driver_sql(
                "SELECT DISTINCT typeof(valid), typeof(shared), typeof(suppressed) "
                "FROM contact_points"
            ).all()
            assert kinds == [("integer", "integer", "integer")]
            payloads = conn.exec_driver_sql("SELECT payload FROM events ORDER BY id").scalars()
            assert [json.loads(p) for p in payloads] == [e.payload for e in events]
    assert [records[str(i)].sms_consent for i in range(4)] == [True, False, None, True]
    assert [records[str(i)].tags for i in range(4)] == [
        [],
        ["a", 'b "quoted"'],
        [],
        ["a", 'b "quoted"'],
    ]
    assert records["3"].custom == {"note": 'é \\ "x"', "n": 3} and records["0"].custom == {}
    suppressed = {(p.kind, p.value): p.suppressed for p in points}
    assert suppressed[("email", "ann.1@example.com")] is True
    assert suppressed[("email", "ann.0@example.com")] is False
    phone_consent = {p.value: p.sms_consent for p in points if p.kind == "phone"}
    assert phone_consent == {
        "+12125550100": True,
        "+12125550101": False,
        "+12125550102": None,
        "+12125550103": True,
    }
    assert [e.payload for e in events] == [
        {"from": None, "to": "applied", "source_stage": "applied"},
        {"from": None, "to": "interview", "source_stage": "interview"},
        {"from": None, "to": 'quote " and \\ and é', "source_stage": 'quote " and \\ and é'},
    ]


def test_a_stage_change_payload_names_the_old_stage(engine) -> None:
    first = _batch()[:1]
    with engine.begin() as conn:
        upsert_candidates(conn, first, NOW)
    first[0].stage = first[0].source_stage = "offer"
    with engine.begin() as conn:
        stats = upsert_candidates(conn, first, NOW)
    assert stats.stage_changes == 1
    with engine.connect() as conn:
        payloads = list(conn.execute(select(Event.payload).order_by(Event.id)).scalars())
    assert payloads[-1] == {"from": "applied", "to": "offer", "source_stage": "offer"}


def test_arrays_only_when_no_conflict_key_repeats() -> None:
    columns = ("person_id", "kind", "value", "note")
    rows = [(1, "email", "a@example.com", "x"), (1, "email", "b@example.com", "y")]
    conflict = ("person_id", "kind", "value")
    assert _unnest_fits(columns, rows, conflict)
    assert not _unnest_fits(columns, [*rows, (1, "email", "a@example.com", "z")], conflict)
    assert _unnest_fits(columns, [*rows, (1, "email", "a@example.com", "z")], ())
    assert not _unnest_fits(columns, rows[:1], conflict)  # one row: a plain insert
