"""``outreach.reports.ratings.summarize``: the report's ``ratings`` object, hand-computed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert

from outreach.ratings import record_rating
from outreach.reports.ratings import summarize
from outreach.store.schema import CandidateRecord, Enrollment, Event, Person, Touch

SINCE = datetime(2026, 11, 1, tzinfo=UTC)
UNTIL = datetime(2026, 12, 1, tzinfo=UTC)
T0 = datetime(2026, 10, 20, tzinfo=UTC)


def day(d: int, hour: int = 12) -> datetime:
    return datetime(2026, 11, d, hour, tzinfo=UTC)


@pytest.fixture
def ledger(engine):
    """Five people, their records, enrollments, touches and rating events.

    | touch | stage     | recruiter          | cadence              | rating (at)               |
    | t1a   | hired     | Jo Smith           | hired-onboarding     | 5 (Nov 10)                |
    | t1b   | hired     | Jo Smith           | hired-onboarding     | 4 (Nov 20)                |
    | t2    | hired     | rec-2 (owner only) | hired-onboarding     | 2 (Nov 5), then 3 (Nov 6) |
    | t3    | rejected  | (none): "" and no owner | application-declined | 1 (Nov 15), 3 (Nov 16) |
    | t4    | interview | Jo Smith           | interview-follow-up  | 4 (Nov 30 23:59:59)       |
    | t5    | hired     | (no record)        | hired-onboarding     | 5 (Dec 1 00:00: outside)  |
    | t6    | interview | Jo Smith           | interview-follow-up  | 2 (Oct 31 23:59: outside) |
    """
    ids: dict[str, int] = {}
    with engine.begin() as conn:

        def add(table, **values) -> int:
            return conn.execute(insert(table).values(**values)).inserted_primary_key[0]

        people = [add(Person, created_at=T0, updated_at=T0) for _ in range(5)]
        records = [
            ("Jo Smith", "rec-1"),
            (None, "rec-2"),
            ("", None),
            ("Jo Smith", "rec-1"),
        ]
        record_ids = [
            add(
                CandidateRecord,
                person_id=people[i],
                source="import",
                external_id=f"r{i}",
                recruiter_name=name,
                owner_id=owner,
                created_at=T0,
                updated_at=T0,
            )
            for i, (name, owner) in enumerate(records)
        ]
        enrollments = [
            (0, 0, "hired-onboarding", "hired"),
            (1, 1, "hired-onboarding", "hired"),
            (2, 2, "application-declined", "rejected"),
            (3, 3, "interview-follow-up", "interview"),
            (4, None, "hired-onboarding", "hired"),
        ]
        enrollment_ids = [
            add(
                Enrollment,
                person_id=people[p],
                record_id=record_ids[r] if r is not None else None,
                cadence_id=cadence,
                trigger_stage=stage,
                triggered_at=T0,
                status="active",
                created_at=T0,
                updated_at=T0,
            )
            for p, r, cadence, stage in enrollments
        ]
        for name, e, step in [
            ("t1a", 0, "onboarding"),
            ("t1b", 0, "feedback"),
            ("t2", 1, "onboarding"),
            ("t3", 2, "declined"),
            ("t4", 3, "thank-you"),
            ("t5", 4, "feedback"),
            ("t6", 3, "check-in"),
        ]:
            ids[name] = add(
                Touch,
                idempotency_key=name,
                enrollment_id=enrollment_ids[e],
                person_id=people[enrollments[e][0]],
                cadence_id=enrollments[e][2],
                step_id=step,
                status="sent",
                channel="email",
                due_at=T0,
                planned_at=T0,
                claimed_at=T0,
                updated_at=T0,
                rating_token=f"{name:x<22}",
            )

        def rating(touch: str, score: int, at: datetime, key: str | None = "") -> None:
            add(
                Event,
                type="rating",
                channel="email",
                touch_id=ids[touch],
                at=at,
                dedupe_key=f"rating:{ids[touch]}" if key == "" else key,
                payload={"score": score},
                processed_at=at,
                created_at=at,
            )

        rating("t1a", 5, day(10))
        rating("t1b", 4, day(20))
        rating("t3", 1, day(15))
        # written by something other than the route (no dedupe key): the latest still wins
        rating("t3", 3, day(16), key=None)
        rating("t4", 4, UNTIL - timedelta(seconds=1))
        rating("t5", 5, UNTIL)
        rating("t6", 2, SINCE - timedelta(seconds=1))
        add(  # not a rating: never counted
            Event, type="reply", touch_id=ids["t1a"], at=day(11), payload={}, created_at=day(11)
        )
    # The route's upsert: the second click replaces the first.
    record_rating(engine, f"{'t2':x<22}", 2, day(5))
    record_rating(engine, f"{'t2':x<22}", 3, day(6))
    return engine


def test_hand_computed_summary(ledger) -> None:
    with ledger.connect() as conn:
        result = summarize(conn, SINCE, UNTIL)
    assert result == {
        "count": 5,
        "mean": pytest.approx(19 / 5),
        "by_stage": {
            "hired": {"count": 3, "mean": pytest.approx(4.0)},  # 5, 4, 3
            "interview": {"count": 1, "mean": pytest.approx(4.0)},
            "rejected": {"count": 1, "mean": pytest.approx(3.0)},
        },
        "by_recruiter": {
            "(none)": {"count": 1, "mean": pytest.approx(3.0)},
            "Jo Smith": {"count": 3, "mean": pytest.approx(13 / 3)},  # 5, 4, 4
            "rec-2": {"count": 1, "mean": pytest.approx(3.0)},
        },
        "by_cadence": {
            "application-declined": {"count": 1, "mean": pytest.approx(3.0)},
            "hired-onboarding": {"count": 3, "mean": pytest.approx(4.0)},
            "interview-follow-up": {"count": 1, "mean": pytest.approx(4.0)},
        },
        "distribution": {"1": 0, "2": 0, "3": 2, "4": 2, "5": 1},
    }


def test_replaced_score_counts_once_with_its_latest_value(ledger) -> None:
    with ledger.connect() as conn:
        early = summarize(conn, day(5, 0), day(6, 0))  # the first click's day
        both = summarize(conn, day(5, 0), day(7, 0))
    # The first click was replaced: its day holds no rating any more.
    assert early["count"] == 0
    assert both["count"] == 1 and both["distribution"]["3"] == 1
    assert both["by_recruiter"] == {"rec-2": {"count": 1, "mean": 3.0}}


def test_window_bounds_are_since_inclusive_until_exclusive(ledger) -> None:
    with ledger.connect() as conn:
        december = summarize(conn, UNTIL, UNTIL + timedelta(days=1))
        october = summarize(conn, SINCE - timedelta(days=1), SINCE)
    assert december["count"] == 1 and december["mean"] == 5.0
    # t5's enrollment has no candidate record
    assert december["by_recruiter"] == {"(none)": {"count": 1, "mean": 5.0}}
    assert december["by_stage"] == {"hired": {"count": 1, "mean": 5.0}}
    assert october["count"] == 1 and october["distribution"]["2"] == 1
    assert october["by_cadence"] == {"interview-follow-up": {"count": 1, "mean": 2.0}}


def test_empty_window(ledger) -> None:
    with ledger.connect() as conn:
        result = summarize(conn, datetime(2027, 1, 1, tzinfo=UTC), datetime(2027, 2, 1, tzinfo=UTC))
        instant = summarize(conn, SINCE, SINCE)
    empty = {
        "count": 0,
        "mean": None,
        "by_stage": {},
        "by_recruiter": {},
        "by_cadence": {},
        "distribution": {"1": 0, "2": 0, "3": 0, "4": 0, "5": 0},
    }
    assert result == empty and instant == empty


def test_empty_store(engine) -> None:
    with engine.connect() as conn:
        assert summarize(conn, SINCE, UNTIL)["count"] == 0


def test_since_after_until_is_an_error(ledger) -> None:
    with ledger.connect() as conn, pytest.raises(ValueError, match="after until"):
        summarize(conn, UNTIL, SINCE)
