"""Who is one person: the same email is; the same phone only when the names agree.

Also SMS consent as statements with a source and a time (a withdrawal wins over older
consent; only a newer explicit consent restores it), and the migration that moves
suppressed contact points onto the suppression list.
"""

from __future__ import annotations

import random
import tempfile
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import column, func, insert, select, table
from throwaway_db import throwaway_database

from outreach.contacts import normalize_email, normalize_phone
from outreach.records import CandidateIn
from outreach.store import make_engine, upgrade
from outreach.store.candidates import name_key, same_person_by_phone, upsert_candidates
from outreach.store.schema import CandidateRecord, ContactPoint, Person, Suppression

OFFICE = normalize_phone("+1 212 555 0199")
NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


def rec(external_id: str, source: str = "import", **fields) -> CandidateIn:
    return CandidateIn(source=source, external_id=external_id, stage="applied", **fields)


def people_of(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            external_id: person_id
            for external_id, person_id in conn.execute(
                select(CandidateRecord.external_id, CandidateRecord.person_id)
            )
        }


def write(engine, now, *batches: list[CandidateIn]) -> None:
    for batch in batches:
        with engine.begin() as conn:
            upsert_candidates(conn, batch, now)


def test_different_names_on_one_phone_stay_two_people_and_the_phone_is_flagged(
    engine, clock
) -> None:
    ann = rec("a", first_name="Ann", last_name="Lee", email="ann@example.com", phone=OFFICE)
    bo = rec("b", first_name="Bo", last_name="Kim", email="bo@example.com", phone=OFFICE)
    write(engine, clock.now(), [ann], [bo])
    who = people_of(engine)
    assert who["a"] != who["b"]
    with engine.connect() as conn:
        points = conn.execute(
            select(ContactPoint.person_id, ContactPoint.shared).where(ContactPoint.kind == "phone")
        ).all()
    assert sorted(points) == sorted([(who["a"], True), (who["b"], True)])


def test_the_same_phone_and_name_is_one_person(engine, clock) -> None:
    a = rec("a", first_name="Zoë", last_name="de la Cruz", email="zoe@home.example", phone=OFFICE)
    b = rec(
        "b", "lever", first_name=" zoe ", last_name="DE LA  CRUZ", email="z@work.example",
        phone=OFFICE,
    )  # fmt: skip
    write(engine, clock.now(), [a], [b])
    who = people_of(engine)
    assert who["a"] == who["b"]
    with engine.connect() as conn:
        assert not conn.scalar(select(ContactPoint.shared).where(ContactPoint.kind == "phone"))


def test_a_record_without_name_and_email_joins_the_phones_holder(engine, clock) -> None:
    write(
        engine,
        clock.now(),
        [rec("a", first_name="Ann", email="ann@example.com", phone=OFFICE)],
        [rec("b", "hubspot", phone=OFFICE)],
    )
    who = people_of(engine)
    assert who["a"] == who["b"]


def test_a_record_without_a_name_but_with_an_email_stays_apart(engine, clock) -> None:
    write(
        engine,
        clock.now(),
        [rec("a", first_name="Ann", email="ann@example.com", phone=OFFICE)],
        [rec("b", "hubspot", email="someone@example.com", phone=OFFICE)],
    )
    who = people_of(engine)
    assert who["a"] != who["b"]


def test_a_nameless_record_on_a_phone_of_two_strangers_joins_neither(engine, clock) -> None:
    write(
        engine,
        clock.now(),
        [
            rec("a", first_name="Ann", email="ann@example.com", phone=OFFICE),
            rec("b", first_name="Bo", email="bo@example.com", phone=OFFICE),
        ],
        [rec("c", "hubspot", phone=OFFICE)],
    )
    who = people_of(engine)
    assert len({who["a"], who["b"], who["c"]}) == 3


def test_the_same_email_in_another_case_is_one_person(engine, clock) -> None:
    write(
        engine,
        clock.now(),
        [rec("a", first_name="Ann", email=normalize_email("Ann.Lee@Example.com"))],
        [rec("b", "lever", first_name="Annie", email=normalize_email("ann.lee@example.COM"))],
    )
    who = people_of(engine)
    assert who["a"] == who["b"]


def test_a_record_that_shows_two_phone_holders_are_one_merges_their_points(engine, clock) -> None:
    # Two strangers on one phone, until a record with Ann's email and Bo's name shows the
    # phone's two holders are one person after all (email joins whatever the name).
    write(
        engine,
        clock.now(),
        [
            rec("a", first_name="Ann", email="ann@example.com", phone=OFFICE),
            rec("b", first_name="Bo", email="bo@example.com", phone=OFFICE, sms_consent=False),
        ],
    )
    with engine.begin() as conn:
        conn.execute(
            ContactPoint.__table__.update()
            .where(ContactPoint.person_id == people_of(engine)["b"], ContactPoint.kind == "phone")
            .values(suppressed=True, suppressed_reason="opted out")
        )
    write(
        engine,
        clock.now() + timedelta(hours=1),
        [rec("link", "lever", first_name="Bo", email="ann@example.com", phone=OFFICE)],
    )
    who = people_of(engine)
    assert len(set(who.values())) == 1
    with engine.connect() as conn:
        (phone,) = conn.execute(select(ContactPoint).where(ContactPoint.kind == "phone")).all()
    assert phone.suppressed and not phone.shared and phone.sms_consent is False


def test_strangers_sharing_phones_at_scale_are_not_merged(engine, clock) -> None:
    # 50,000 rows on 40,000 phones became 41,224 people; scaled down: every row its own
    # person (distinct names and emails), 1,500 rows on 1,000 phones, across batches.
    rng = random.Random(13)
    rows = [
        rec(
            f"r{i}",
            first_name=f"First{i}",
            last_name=rng.choice(["Lee", "Khan", "Silva", "Rossi"]),
            email=f"person{i}@example.com",
            phone=normalize_phone(f"+1415555{rng.randrange(1000):04d}"),
        )
        for i in range(1500)
    ]
    write(engine, clock.now(), *(rows[i : i + 400] for i in range(0, len(rows), 400)))
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Person)) == 1500
        shared = conn.scalar(
            select(func.count(func.distinct(ContactPoint.value))).where(
                ContactPoint.kind == "phone", ContactPoint.shared.is_(True)
            )
        )
    by_phone = defaultdict(set)
    for row in rows:
        by_phone[row.phone.e164].add(row.external_id)
    assert shared == sum(1 for ids in by_phone.values() if len(ids) > 1)


# -- the matching rule, property-based -------------------------------------------------

NAMES = [("Ann", "Lee"), ("ann", "LEE"), ("Bo", "Kim"), ("Cy", "Lee"), (None, None)]
PHONES = ["+14155550001", "+14155550002", "+14155550003"]
EMAILS = [None, "a@example.com", "b@example.com", "c@example.com", "d@example.com"]

record_specs = st.lists(
    st.tuples(st.sampled_from(NAMES), st.sampled_from(EMAILS), st.sampled_from(PHONES)),
    min_size=1,
    max_size=8,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(specs=record_specs, batch=st.integers(min_value=1, max_value=8))
def test_the_matching_rule_holds_for_any_records_and_batches(tmp_path, specs, batch) -> None:
    records = [
        rec(f"r{i}", first_name=first, last_name=last, email=email, phone=normalize_phone(phone))
        for i, ((first, last), email, phone) in enumerate(specs)
    ]
    folder = Path(tempfile.mkdtemp(dir=tmp_path))  # one database per example
    with throwaway_database(folder) as url:
        engine = make_engine(url)
        try:
            upgrade(engine)
            for start in range(0, len(records), batch):
                with engine.begin() as conn:
                    upsert_candidates(conn, records[start : start + batch], NOW)
            who = people_of(engine)
        finally:
            engine.dispose()
    for a in records:
        for b in records:
            same = who[a.external_id] == who[b.external_id]
            if a.email and a.email == b.email:
                assert same, "the same email is one person"
            key_a, key_b = name_key(a.first_name, a.last_name), name_key(b.first_name, b.last_name)
            if a.phone == b.phone and key_a is not None and key_a == key_b:
                assert same, "the same phone and name is one person"
            if same:
                assert _linked(records, a, b), "no one is joined but by the rule"


def _linked(records: list[CandidateIn], a: CandidateIn, b: CandidateIn) -> bool:
    """Whether a chain of pairs the rule joins (same email, or same phone and
    :func:`same_person_by_phone`) connects ``a`` and ``b``."""
    graph: dict[str, set[str]] = defaultdict(set)
    for x in records:
        for y in records:
            kx, ky = name_key(x.first_name, x.last_name), name_key(y.first_name, y.last_name)
            if (x.email and x.email == y.email) or (
                x.phone == y.phone
                and same_person_by_phone((kx, bool(x.email)), (ky, bool(y.email)))
            ):
                graph[x.external_id].add(y.external_id)
    seen, todo = {a.external_id}, [a.external_id]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return b.external_id in seen


# -- SMS consent: statements with a source and a time ---------------------------------


def _consent(engine) -> tuple:
    with engine.connect() as conn:
        return conn.execute(
            select(ContactPoint.sms_consent, ContactPoint.consent_source).where(
                ContactPoint.kind == "phone"
            )
        ).one()


def _said(source: str, consent: bool, at: datetime) -> CandidateIn:
    return rec(
        f"{source}-1",
        source,
        first_name="Ann",
        email="ann@example.com",
        phone=OFFICE,
        sms_consent=consent,
        source_updated_at=at,
    )


def test_a_withdrawal_is_not_undone_by_a_later_sync_still_saying_yes(engine) -> None:
    t0 = NOW
    write(engine, t0, [_said("greenhouse", True, t0), _said("lever", True, t0)])
    day = timedelta(days=1)
    write(engine, t0 + day, [_said("greenhouse", False, t0 + day)])
    assert _consent(engine) == (False, "greenhouse")
    # Lever's record changed for another reason; its consent is the one it gave at t0.
    write(engine, t0 + 2 * day, [_said("lever", True, t0 + 2 * day)])
    assert _consent(engine) == (False, "greenhouse")


def test_a_consent_as_old_as_the_withdrawal_loses(engine) -> None:
    write(engine, NOW, [_said("greenhouse", False, NOW)])
    write(engine, NOW + timedelta(hours=1), [_said("lever", True, NOW)])  # same instant
    assert _consent(engine) == (False, "greenhouse")


def test_only_a_newer_explicit_consent_restores_it(engine) -> None:
    day = timedelta(days=1)
    write(engine, NOW, [_said("greenhouse", True, NOW), _said("lever", True, NOW)])
    write(engine, NOW + day, [_said("lever", False, NOW + day)])
    write(engine, NOW + 2 * day, [_said("greenhouse", True, NOW + 2 * day)])  # unchanged
    assert _consent(engine) == (False, "lever")
    write(engine, NOW + 3 * day, [_said("greenhouse", False, NOW + 3 * day)])
    write(engine, NOW + 4 * day, [_said("greenhouse", True, NOW + 4 * day)])  # said anew
    assert _consent(engine) == (True, "greenhouse")


def test_statements_in_one_batch_follow_the_same_rule(engine) -> None:
    write(engine, NOW, [_said("greenhouse", False, NOW), _said("lever", True, NOW)])
    assert _consent(engine) == (False, "greenhouse")


# -- migration 0003 --------------------------------------------------------------------


def test_the_migration_puts_suppressed_points_and_opt_outs_on_the_list(database_url) -> None:
    engine = make_engine(database_url)
    try:
        upgrade(engine, "0002")
        with engine.begin() as conn:
            ids = [
                conn.execute(
                    insert(Person.__table__).values(
                        global_opt_out=opted, opted_out_at=NOW if opted else None,
                        created_at=NOW, updated_at=NOW,
                    )
                ).inserted_primary_key[0]
                for opted in (False, True)
            ]  # fmt: skip
            points = [
                ("email", "gone@example.com", True, "bounced"),
                ("email", "no@example.com", True, "unsubscribed"),
                ("phone", "+12125550199", True, "opted out"),
                ("email", "fine@example.com", False, None),
            ]
            # The table as 0002 left it (the model has columns 0003 adds).
            old_points = table(
                "contact_points",
                *(
                    column(name)
                    for name in (
                        "person_id", "kind", "value", "valid", "suppressed",
                        "suppressed_reason", "suppressed_at", "sms_consent", "created_at",
                        "updated_at",
                    )
                ),
            )  # fmt: skip
            conn.execute(
                insert(old_points),
                [
                    {
                        "person_id": ids[0], "kind": kind, "value": value, "valid": True,
                        "suppressed": suppressed, "suppressed_reason": reason,
                        "suppressed_at": NOW if suppressed else None, "sms_consent": None,
                        "created_at": NOW, "updated_at": NOW,
                    }
                    for kind, value, suppressed, reason in points
                ]
                + [
                    {
                        "person_id": ids[1], "kind": "email", "value": "out@example.com",
                        "valid": True, "suppressed": False, "suppressed_reason": None,
                        "suppressed_at": None, "sms_consent": True, "created_at": NOW,
                        "updated_at": NOW,
                    }
                ],
            )  # fmt: skip
        upgrade(engine)
        with engine.connect() as conn:
            listed = set(
                conn.execute(
                    select(
                        Suppression.kind, Suppression.value, Suppression.scope, Suppression.reason
                    )
                ).all()
            )
            consent_at = conn.scalar(
                select(ContactPoint.consent_at).where(ContactPoint.value == "out@example.com")
            )
    finally:
        engine.dispose()
    assert listed == {
        ("email", "gone@example.com", "address", "bounced"),
        ("email", "no@example.com", "channel", "unsubscribed"),
        ("phone", "+12125550199", "address", "opted out"),
        ("email", "out@example.com", "all", "opted out"),
    }
    assert consent_at == NOW


def test_two_holders_of_a_phone_merging_into_a_third_person_keep_one_point(engine) -> None:
    write(
        engine,
        NOW,
        [
            rec("cy", first_name="Cy", email="c@example.com"),
            rec("ann", first_name="Ann", email="a@example.com", phone=OFFICE),
            rec("bo", first_name="Bo", email="b@example.com", phone=OFFICE),
        ],
        # Cy's email under Ann's name, Bo's email under Ann's name: all one person.
        [
            rec("l1", "lever", first_name="Ann", email="c@example.com", phone=OFFICE),
            rec("l2", "lever", first_name="Ann", email="b@example.com", phone=OFFICE),
        ],
    )
    assert len(set(people_of(engine).values())) == 1
    with engine.connect() as conn:
        assert (
            conn.scalar(
                select(func.count()).select_from(ContactPoint).where(ContactPoint.kind == "phone")
            )
            == 1
        )
