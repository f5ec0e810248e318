"""Bulk upsert: constant statements per batch, merges, stage changes, sticky state."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import event, func, select

from outreach.contacts import normalize_phone
from outreach.records import CandidateIn
from outreach.store.candidates import upsert_candidates
from outreach.store.schema import CandidateRecord, ContactPoint, Event, Person


def person(i: int, source: str = "import", **extra) -> CandidateIn:
    return CandidateIn(
        source=source,
        external_id=f"x{i}",
        first_name=f"P{i}",
        email=f"p{i}@example.com",
        phone=normalize_phone(f"+1415555{i:04d}"),
        stage="applied",
        **extra,
    )


def count_statements(engine, action) -> int:
    counter = {"n": 0}

    def before(*_args, **_kwargs) -> None:
        counter["n"] += 1

    event.listen(engine, "before_cursor_execute", before)
    try:
        action()
    finally:
        event.remove(engine, "before_cursor_execute", before)
    return counter["n"]


def test_statements_per_batch_do_not_grow_with_rows(engine, clock) -> None:
    def write(start: int, size: int):
        def run() -> None:
            with engine.begin() as conn:
                upsert_candidates(
                    conn, [person(i) for i in range(start, start + size)], clock.now()
                )

        return run

    small = count_statements(engine, write(0, 20))
    large = count_statements(engine, write(1000, 400))
    assert large == small
    updates = count_statements(engine, write(1000, 400))  # same rows again: updates
    assert updates <= small
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(CandidateRecord)) == 420


def test_records_in_one_batch_sharing_a_phone_are_one_person(engine, clock) -> None:
    a = person(1)
    b = CandidateIn(source="lever", external_id="l1", phone=a.phone, stage="screening")
    with engine.begin() as conn:
        stats = upsert_candidates(conn, [a, b], clock.now())
    assert stats.new == 2 and stats.merged == 0
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Person)) == 1


def test_merge_keeps_a_global_opt_out_and_moves_everything(engine, clock) -> None:
    with engine.begin() as conn:
        upsert_candidates(conn, [person(1), person(2)], clock.now())
        first = conn.scalar(
            select(CandidateRecord.person_id).where(CandidateRecord.external_id == "x2")
        )
        conn.execute(
            Person.__table__.update()
            .where(Person.id == first)
            .values(global_opt_out=True, opted_out_at=clock.now())
        )
    # The same email as P1, and P2's phone under P2's name: both are this one person.
    link = CandidateIn(
        source="hubspot",
        external_id="h",
        first_name="P2",
        email="p1@example.com",
        phone=person(2).phone,
    )
    with engine.begin() as conn:
        stats = upsert_candidates(conn, [link], clock.now() + timedelta(hours=1))
    assert stats.merged == 1
    with engine.connect() as conn:
        people = conn.execute(select(Person)).all()
        assert len(people) == 1 and people[0].global_opt_out
        assert set(conn.execute(select(ContactPoint.person_id)).scalars()) == {people[0].id}
        assert set(conn.execute(select(CandidateRecord.person_id)).scalars()) == {people[0].id}


def test_same_stage_keeps_its_entry_time(engine, clock) -> None:
    with engine.begin() as conn:
        upsert_candidates(conn, [person(1)], clock.now())
    with engine.begin() as conn:
        stats = upsert_candidates(conn, [person(1)], clock.now() + timedelta(days=3))
    assert stats.stage_changes == 0 and stats.updated == 1
    with engine.connect() as conn:
        entered = conn.scalar(select(CandidateRecord.stage_entered_at))
        assert entered == clock.now()
        assert conn.scalar(select(func.count()).select_from(Event)) == 1


def test_consent_is_kept_when_a_later_record_says_nothing(engine, clock) -> None:
    with engine.begin() as conn:
        upsert_candidates(conn, [person(1, sms_consent=True)], clock.now())
    with engine.begin() as conn:
        upsert_candidates(conn, [person(1)], clock.now())
    with engine.connect() as conn:
        consent = conn.scalar(select(ContactPoint.sms_consent).where(ContactPoint.kind == "phone"))
        assert consent is True


def test_a_crm_email_opt_out_suppresses_and_is_never_cleared(engine, clock) -> None:
    with engine.begin() as conn:
        upsert_candidates(conn, [person(1, email_opt_out=True)], clock.now())
    with engine.begin() as conn:
        upsert_candidates(conn, [person(1)], clock.now())  # the CRM no longer says so
    with engine.connect() as conn:
        email = conn.execute(select(ContactPoint).where(ContactPoint.kind == "email")).one()
        phone = conn.execute(select(ContactPoint).where(ContactPoint.kind == "phone")).one()
    assert email.suppressed and email.suppressed_reason == "opted out (CRM)"
    assert not phone.suppressed
