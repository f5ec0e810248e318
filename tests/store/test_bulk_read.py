"""Reads straight from the driver give what SQLAlchemy's types give, on either database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from outreach.engine.person_state import COUNTED_STATUSES, load_people
from outreach.store.bulk import bulk_update, bulk_write, select_by_ids, select_dicts
from outreach.store.schema import CandidateRecord, ContactPoint, Enrollment, Person, Touch
from outreach.store.suppressions import suppressed_points

NOW = datetime(2026, 11, 3, 14, 0, tzinfo=UTC)
_people = Person.__table__
_records = CandidateRecord.__table__
_contacts = ContactPoint.__table__
_enrollments = Enrollment.__table__
_touches = Touch.__table__


def _seed(conn) -> None:
    """Five people: several records and contact points, NULLs, JSON, a pause, touches."""
    people, records, contacts, enrollments, touches = [], [], [], [], []
    for i in range(1, 6):
        people.append(
            {
                "id": i,
                "global_opt_out": i == 4,
                "paused_until": NOW + timedelta(days=i) if i == 2 else None,
                "created_at": NOW,
                "updated_at": NOW,
            }
        )
        for j in range(1 + (i == 3)):  # person 3 has two records, the second newer
            records.append(
                {
                    "id": i * 10 + j,
                    "person_id": i,
                    "source": "lever" if j else "import",
                    "external_id": f"x{i}-{j}",
                    "first_name": None if i == 5 else f"First{i}",
                    "last_name": "Lee",
                    "stage": "applied" if j == 0 else "interview",
                    "stage_entered_at": NOW - timedelta(days=5 - j, microseconds=7),
                    "timezone": [None, "Europe/Berlin", "Not/AZone", None, "Asia/Tokyo"][i - 1]
                    if j == 0
                    else "America/Chicago",
                    "preferred_channel": "sms" if i == 3 and j == 1 else None,
                    "tags": ["python", "remote"] if i % 2 else [],
                    "custom": {"team": "data", "level": 3} if i == 1 else {},
                    "created_at": NOW,
                    "updated_at": NOW - timedelta(hours=3 - j),
                }
            )
        contacts.append(
            {
                "id": i * 10,
                "person_id": i,
                "kind": "email",
                "value": f"p{i}@example.com",
                "valid": i != 5,
                "shared": False,
                "suppressed": i == 2,
                "suppressed_reason": "bounce" if i == 2 else None,
                "created_at": NOW,
                "updated_at": NOW,
            }
        )
        if i in (1, 3):
            contacts.append(
                {
                    "id": i * 10 + 1,
                    "person_id": i,
                    "kind": "phone",
                    "value": "+14155550100" if i == 1 else "+33612345678",
                    "valid": True,
                    "phone_type": "mobile",
                    "sms_consent": i == 1,
                    "consent_source": "import",
                    "shared": i == 3,
                    "suppressed": False,
                    "created_at": NOW,
                    "updated_at": NOW,
                }
            )
        enrollments.append(
            {
                "id": i,
                "person_id": i,
                "record_id": i * 10,
                "cadence_id": "c",
                "trigger_stage": "applied",
                "triggered_at": NOW - timedelta(days=8),
                "status": "active",
                "next_step": 0,
                "next_occurrence": 0,
                "step_due_at": None if i == 1 else NOW - timedelta(hours=i),
                "next_due_at": NOW - timedelta(hours=i),
                "created_at": NOW,
                "updated_at": NOW,
            }
        )
        for k, status in enumerate([*COUNTED_STATUSES, "failed", "holdout"]):
            touches.append(
                {
                    "idempotency_key": f"{i}:s:{k}",
                    "enrollment_id": i,
                    "person_id": i,
                    "cadence_id": "c",
                    "step_id": "s",
                    "occurrence": k,
                    "status": status,
                    "transactional": False,
                    "due_at": NOW,
                    # Out of order, and one far back (outside the history window).
                    "planned_at": NOW - timedelta(days=1 + (k * 3) % 7 + (20 if k == 2 else 0)),
                    "claimed_at": NOW,
                    "updated_at": NOW,
                }
            )
    for table, rows in (
        (_people, people),
        (_records, records),
        (_contacts, contacts),
        (_enrollments, enrollments),
        (_touches, touches),
    ):
        for row in rows:  # every row with every key: bulk_write wants one shape
            for column in table.c:
                if column.name not in row and column.name != "id" and not column.primary_key:
                    row.setdefault(column.name, False if column.name == "shared" else None)
        bulk_write(conn, table, rows)


def test_select_dicts_gives_what_sqlalchemy_gives(engine) -> None:
    with engine.begin() as conn:
        _seed(conn)
        for table in (_people, _records, _contacts, _enrollments, _touches):
            query = select(table).order_by(table.c.id)
            expected = [dict(row) for row in conn.execute(query).mappings()]
            assert select_dicts(conn, query) == expected
            assert expected  # the comparison saw rows
        some = select(_enrollments.c.id, _enrollments.c.next_due_at).where(_enrollments.c.id > 2)
        assert select_dicts(conn, some) == [dict(r) for r in conn.execute(some).mappings()]


def test_select_by_ids_reads_every_chunk_and_binds_parameters_first(engine) -> None:
    with engine.begin() as conn:
        _seed(conn)
        sql = "SELECT person_id, status FROM touches WHERE status = ? AND person_id {ids}"
        rows = select_by_ids(conn, sql, [5, 1, 3, 4, 2, 99], ("sent",), chunk=2)
        assert sorted(rows) == [(i, "sent") for i in range(1, 6)]
        assert select_by_ids(conn, sql, [], ("sent",)) == []


def _expected_people(conn, ids, since):
    """The people as SQLAlchemy's own reading gives them (the oracle of load_people)."""
    out = {}
    for row in conn.execute(select(_people).where(_people.c.id.in_(ids))).mappings():
        out[row["id"]] = {
            "global_opt_out": bool(row["global_opt_out"]),
            "paused_until": row["paused_until"],
            "records": [],
            "contacts": [],
        }
    for row in conn.execute(
        select(_records).where(_records.c.person_id.in_(ids)).order_by(_records.c.id)
    ).mappings():
        out[row["person_id"]]["records"].append(dict(row))
    for row in conn.execute(
        select(_contacts).where(_contacts.c.person_id.in_(ids)).order_by(_contacts.c.id)
    ).mappings():
        out[row["person_id"]]["contacts"].append(dict(row))
    listed = suppressed_points(conn, list(ids))
    history = {}
    for person_id, planned_at in conn.execute(
        select(_touches.c.person_id, _touches.c.planned_at).where(
            _touches.c.person_id.in_(ids),
            _touches.c.status.in_(COUNTED_STATUSES),
            _touches.c.planned_at > since,
        )
    ):
        history.setdefault(person_id, []).append(planned_at)
    return out, listed, history


def test_load_people_reads_what_sqlalchemy_reads(engine) -> None:
    since = NOW - timedelta(days=7)
    with engine.begin() as conn:
        _seed(conn)
        people = load_people(
            conn, [3, 1, 2, 4, 5, 77], history_since=since, default_timezone="America/New_York"
        )
        expected, listed, history = _expected_people(conn, [1, 2, 3, 4, 5], since)
    assert sorted(people) == [1, 2, 3, 4, 5]
    for person_id, want in expected.items():
        person = people[person_id]
        assert person.global_opt_out == (want["global_opt_out"] or person_id in listed.people)
        assert person.paused_until == want["paused_until"]
        assert len(person.records) == len(want["records"])
        for got, full in zip(
            sorted(person.records, key=lambda r: r["id"]), want["records"], strict=True
        ):
            assert got == {key: full[key] for key in got}
        got_contacts = sorted(person.contacts, key=lambda c: c.id)
        for contact, full in zip(got_contacts, want["contacts"], strict=True):
            assert (contact.id, contact.kind, contact.value, contact.valid) == (
                full["id"],
                full["kind"],
                full["value"],
                bool(full["valid"]),
            )
            assert contact.sms_consent == full["sms_consent"]
            assert contact.shared == bool(full["shared"])
            assert contact.suppressed == bool(full["suppressed"])
        assert person.history == sorted(history.get(person_id, []))
        assert all(
            at.tzinfo is not None and at.utcoffset() == timedelta(0) for at in person.history
        )
    # Zones: the record's, else the phone's, else the default; the newest record first.
    assert (people[1].zone.key, people[1].zone_source) == ("America/Los_Angeles", "phone")
    assert (people[2].zone.key, people[2].zone_source) == ("Europe/Berlin", "record")
    assert (people[3].zone.key, people[3].zone_source) == ("America/Chicago", "record")
    assert (people[5].zone.key, people[5].zone_source) == ("Asia/Tokyo", "record")
    assert people[3].preferred_channel == "sms"
    assert people[3].current_stage == "interview"
    assert people[1].contact("phone").value == "+14155550100"
    assert people[2].contact("email").suppressed


def test_bulk_write_returns_the_rows_it_wrote_and_not_those_left_alone(engine) -> None:
    with engine.begin() as conn:
        _seed(conn)
        rows = [
            {
                "idempotency_key": key,
                "enrollment_id": 1,
                "person_id": 1,
                "cadence_id": "c",
                "step_id": "t",
                "occurrence": 0,
                "status": "claimed",
                "transactional": False,
                "due_at": NOW,
                "planned_at": NOW,
                "claimed_at": NOW,
                "updated_at": NOW,
            }
            # "1:s:0" exists already (the seed's); "new-1" is given twice
            for key in ("new-1", "1:s:0", "new-2", "new-1")
        ]
        written = bulk_write(
            conn, _touches, rows, conflict=("idempotency_key",), returning=("id", "idempotency_key")
        )
        assert sorted(key for _id, key in written) == ["new-1", "new-2"]
        stored = dict(
            conn.execute(
                select(_touches.c.idempotency_key, _touches.c.id).where(
                    _touches.c.idempotency_key.in_(["new-1", "new-2"])
                )
            ).all()
        )
        assert {key: id_ for id_, key in written} == stored


def test_bulk_write_returning_crosses_statement_chunks(engine) -> None:
    many = 20_000  # SQLite: 4 columns, 8,191 rows per statement
    with engine.begin() as conn:
        rows = [
            {"id": i, "global_opt_out": i % 3 == 0, "created_at": NOW, "updated_at": NOW}
            for i in range(1, many + 1)
        ]
        written = bulk_write(conn, _people, rows, conflict=("id",), returning=("id",))
        assert sorted(id_ for (id_,) in written) == list(range(1, many + 1))
        again = bulk_write(conn, _people, rows[:10], conflict=("id",), returning=("id",))
        assert again == []
        opted = conn.execute(select(_people.c.id).where(_people.c.global_opt_out.is_(True)))
        assert len(opted.all()) == many // 3


def test_bulk_update_sets_every_row_and_a_repeated_key_takes_the_last(engine) -> None:
    with engine.begin() as conn:
        _seed(conn)
        later = NOW + timedelta(days=2)
        rows = [
            {"id": 1, "status": "stopped", "next_due_at": None, "defer_reason": "x"},
            {"id": 2, "status": "active", "next_due_at": later, "defer_reason": None},
        ]

        bulk_update(conn, _enrollments, rows)
        got = {
            row.id: (row.status, row.next_due_at, row.defer_reason)
            for row in conn.execute(select(_enrollments).where(_enrollments.c.id.in_([1, 2])))
        }
        assert got == {1: ("stopped", None, "x"), 2: ("active", later, None)}
        bulk_update(
            conn,
            _enrollments,
            [
                {"id": 3, "defer_reason": "first"},
                {"id": 3, "defer_reason": "second"},
                {"id": 4, "defer_reason": None},
            ],
        )
        reasons = dict(
            conn.execute(
                select(_enrollments.c.id, _enrollments.c.defer_reason).where(
                    _enrollments.c.id.in_([3, 4])
                )
            ).all()
        )
        assert reasons == {3: "second", 4: None}
        records = [{"id": 10, "tags": ["a", "b"], "custom": {"k": [1, 2]}}]
        bulk_update(conn, _records, records)
        row = conn.execute(select(_records.c.tags, _records.c.custom).where(_records.c.id == 10))
        assert tuple(row.one()) == (["a", "b"], {"k": [1, 2]})
