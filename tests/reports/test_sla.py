"""SLA per step and task backlog against hand-computed figures (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert

from outreach.cadence import CadenceConfig, load_cadence_file
from outreach.reports.sla import per_step, task_backlog
from outreach.store.schema import Enrollment, Person, Task, Touch

D0 = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)
H = timedelta(hours=1)

CADENCES = """
policy: {default_timezone: UTC}
cadences:
  - id: c
    trigger: {stage: applied}
    steps:
      - {id: ack, after: 0m, within: 48h, template: t}
      - {id: later, after: 2h, within: 24h, from: previous, repeat: {every: 7d, max: 2},
         template: t}
      - {id: open-ended, after: 7d, template: t}
"""


@pytest.fixture
def config(tmp_path: Path) -> CadenceConfig:
    path = tmp_path / "cadences.yaml"
    path.write_text(CADENCES)
    return load_cadence_file(path, check_templates=False)


class Ledger:
    """Writes people, enrollments and touches straight into the store."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.rows = 0

    def enrollment(
        self,
        *,
        status: str = "active",
        next_step: int = 1,
        next_occurrence: int = 0,
        step_due_at: datetime | None = None,
        stopped_at: datetime | None = None,
    ) -> int:
        with self.engine.begin() as conn:
            person = conn.execute(
                insert(Person).values(created_at=D0, updated_at=D0)
            ).inserted_primary_key[0]
            return conn.execute(
                insert(Enrollment).values(
                    person_id=person,
                    cadence_id="c",
                    trigger_stage="applied",
                    triggered_at=D0,
                    status=status,
                    next_step=next_step,
                    next_occurrence=next_occurrence,
                    step_due_at=step_due_at,
                    next_due_at=step_due_at if status == "active" else None,
                    stopped_at=stopped_at,
                    created_at=D0,
                    updated_at=D0,
                )
            ).inserted_primary_key[0]

    def touch(
        self,
        enrollment: int,
        step: str,
        status: str,
        due: datetime,
        *,
        delivered: datetime | None = None,
        occurrence: int = 0,
        channel: str | None = "email",
        key: str | None = None,
        reason: str | None = None,
    ) -> None:
        self.rows += 1
        with self.engine.begin() as conn:
            person = conn.execute(
                Enrollment.__table__.select().where(Enrollment.id == enrollment)
            ).one()
            conn.execute(
                insert(Touch).values(
                    idempotency_key=key or f"{enrollment}:{step}:{occurrence}",
                    enrollment_id=enrollment,
                    person_id=person.person_id,
                    cadence_id="c",
                    step_id=step,
                    occurrence=occurrence,
                    status=status,
                    channel=channel,
                    due_at=due,
                    planned_at=delivered or due,
                    claimed_at=due,
                    sent_at=delivered,
                    delivery_at=delivered,
                    reason=reason,
                    updated_at=due,
                )
            )


def _by_step(rows):
    return {(row["cadence"], row["step"]): row for row in rows}


def test_sla_counts_occurrences_by_outcome(engine, config) -> None:
    ledger = Ledger(engine)
    due = D0 + 24 * H  # deadline of `ack` = due + 48h
    # met, within its deadline
    e1 = ledger.enrollment(next_step=1, next_occurrence=2, step_due_at=D0 + 20 * 24 * H)
    ledger.touch(e1, "ack", "sent", due, delivered=due + 47 * H)
    # a killed run's claim (released) then a late send: one occurrence, late
    e2 = ledger.enrollment()
    ledger.touch(e2, "ack", "released", due, key=f"{e2}:ack:0#released1")
    ledger.touch(e2, "ack", "sent", due, delivered=due + 49 * H)
    # the email failed over to SMS on the same row: met by another channel
    e3 = ledger.enrollment()
    ledger.touch(e3, "ack", "sent", due, delivered=due + H, channel="sms")
    # never: skipped; held out by the step's holdout share: not due, counted apart
    e4 = ledger.enrollment()
    ledger.touch(e4, "ack", "skipped", due, channel=None)
    e5 = ledger.enrollment()
    ledger.touch(e5, "ack", "holdout", due, channel=None)
    # a failed send re-planned (its row retired), still waiting past the deadline: overdue
    e6 = ledger.enrollment(next_step=0, step_due_at=due)
    ledger.touch(e6, "ack", "failed", due, key=f"{e6}:ack:0#failed9")
    # waiting, deadline still ahead of now: pending, not due
    ledger.enrollment(next_step=0, step_due_at=D0 + 7 * 24 * H)
    # stopped (a reply) before its deadline: owed nothing; stopped after it: never
    ledger.enrollment(status="stopped", next_step=0, step_due_at=due, stopped_at=due + 10 * H)
    ledger.enrollment(status="stopped", next_step=0, step_due_at=due, stopped_at=due + 50 * H)
    # no channel may carry it (unsubscribed): a recruiter task, unreachable, not due
    e13 = ledger.enrollment()
    ledger.touch(e13, "ack", "task", due, channel=None, reason="no usable channel: email: x")
    # handed to the recruiter because it was late: never
    e14 = ledger.enrollment()
    ledger.touch(e14, "ack", "task", due, channel=None, reason="late (due by ...)")
    # skipped by its when: (the candidate did not engage): nothing owed, not due
    e15 = ledger.enrollment()
    ledger.touch(e15, "ack", "skipped", due, reason="when opened: not met (not opened)")
    # delivered exactly at the deadline: met
    e10 = ledger.enrollment()
    ledger.touch(e10, "ack", "sent", due, delivered=due + 48 * H)
    # deadline before the window: not counted
    e11 = ledger.enrollment()
    ledger.touch(e11, "ack", "skipped", D0 - 49 * H)
    # claimed for delivery before a deadline still ahead: pending
    e12 = ledger.enrollment()
    ledger.touch(e12, "ack", "claimed", D0 + 7 * 24 * H)
    # repeat occurrences of `later` (deadline = due + 22h) for e1: met, late, then overdue
    ledger.touch(e1, "later", "sent", D0 + 3 * 24 * H, delivered=D0 + 3 * 24 * H + 21 * H)
    ledger.touch(e1, "later", "sent", D0 + 10 * 24 * H, delivered=D0 + 11 * 24 * H, occurrence=1)
    e1_overdue = D0 + 20 * 24 * H  # enrollment e1 waits on occurrence 2, deadline passed

    now = e1_overdue + 23 * H
    with engine.connect() as conn:
        rows = per_step(conn, config, D0, now + 10 * 24 * H, now)
    got = _by_step(rows)
    assert [(row["cadence"], row["step"]) for row in rows] == [("c", "ack"), ("c", "later")]
    # now is past every deadline (e12's claim included): nothing is pending
    assert got[("c", "ack")] == {
        "cadence": "c",
        "step": "ack",
        "within_hours": 48.0,
        "after_hours": 0.0,
        "due": 10,
        "met": 3,
        "late": 1,
        "never": 6,
        "met_rate": 3 / 10,
        "pending": 0,
        "unreachable": 1,
        "held_out": 1,
        "condition_not_met": 1,
        "never_by_reason": {
            "overdue": 2,
            "skipped": 1,
            "stopped": 1,
            "task": 1,
            "unconfirmed": 1,
        },
    }
    later = got[("c", "later")]
    assert (later["due"], later["met"], later["late"], later["never"]) == (3, 1, 1, 1)
    assert later["never_by_reason"] == {"overdue": 1}
    assert later["met_rate"] == pytest.approx(1 / 3)
    assert (later["within_hours"], later["after_hours"]) == (24.0, 2.0)


def test_sla_pending_before_the_deadline(engine, config) -> None:
    ledger = Ledger(engine)
    ledger.enrollment(next_step=0, step_due_at=D0 + 24 * H)
    claimed = ledger.enrollment()
    ledger.touch(claimed, "ack", "claimed", D0 + 24 * H)
    sent = ledger.enrollment()
    ledger.touch(sent, "ack", "sent", D0 + 24 * H, delivered=D0 + 30 * H)
    # recalled for an out-of-office pause and put back in its enrollment: still owed
    recalled = ledger.enrollment(next_step=0, step_due_at=D0 + 24 * H)
    ledger.touch(recalled, "ack", "cancelled", D0 + 24 * H, key=f"{recalled}:ack:0#recalled7")
    with engine.connect() as conn:
        before = _by_step(per_step(conn, config, D0, D0 + 10 * 24 * H, D0 + 40 * H))
        after = _by_step(per_step(conn, config, D0, D0 + 10 * 24 * H, D0 + 80 * H))
    ack = before[("c", "ack")]
    assert (ack["due"], ack["met"], ack["pending"], ack["never"]) == (1, 1, 3, 0)
    ack = after[("c", "ack")]
    assert (ack["due"], ack["met"], ack["pending"]) == (4, 1, 0)
    assert ack["never_by_reason"] == {"overdue": 2, "unconfirmed": 1}
    assert ack["met_rate"] == pytest.approx(1 / 4)


def test_sla_window_applies_to_the_deadline(engine, config) -> None:
    ledger = Ledger(engine)
    enrollment = ledger.enrollment()
    # due D0+1d, delivered D0+2d, deadline D0+3d: in [D0+3d, D0+4d), not in [D0, D0+3d)
    ledger.touch(enrollment, "ack", "sent", D0 + 24 * H, delivered=D0 + 48 * H)
    now = D0 + 30 * 24 * H
    with engine.connect() as conn:
        inside = _by_step(per_step(conn, config, D0 + 72 * H, D0 + 96 * H, now))
        before = _by_step(per_step(conn, config, D0, D0 + 72 * H, now))
    assert inside[("c", "ack")]["met"] == 1
    assert before[("c", "ack")]["due"] == 0


def test_sla_empty_window(engine, config) -> None:
    with engine.connect() as conn:
        rows = per_step(conn, config, D0, D0 + 24 * H, D0 + 24 * H)
    assert [row["step"] for row in rows] == ["ack", "later"]
    for row in rows:
        counts = (
            "due",
            "met",
            "late",
            "never",
            "pending",
            "unreachable",
            "held_out",
            "condition_not_met",
        )
        assert [row[key] for key in counts] == [0] * len(counts)
        assert row["met_rate"] is None
        assert row["never_by_reason"] == {}


def test_sla_refuses_an_empty_interval(engine, config) -> None:
    with engine.connect() as conn, pytest.raises(ValueError, match="since"):
        per_step(conn, config, D0, D0, D0)


def _task(conn, person: int, owner: str | None, kind: str, created, due, completed=None):
    conn.execute(
        insert(Task).values(
            person_id=person,
            owner_id=owner,
            kind=kind,
            title="t",
            body="",
            status="done" if completed else "open",
            due_at=due,
            created_at=created,
            completed_at=completed,
        )
    )


def test_task_backlog_as_of_until(engine) -> None:
    until = D0 + 100 * H
    with engine.begin() as conn:
        person = conn.execute(
            insert(Person).values(created_at=D0, updated_at=D0)
        ).inserted_primary_key[0]
        _task(conn, person, "a", "linkedin", until - 10 * H, until - H)
        _task(conn, person, "a", "linkedin", until - 20 * H, until, completed=until - 5 * H)
        _task(conn, person, "a", "linkedin", until - 30 * H, until + 2 * H, completed=until + H)
        _task(conn, person, "b", "call", until - 4 * H, until + H)
        _task(conn, person, None, "manual", until - 2 * H, until - H)
        _task(conn, person, "a", "linkedin", until + H, until + 2 * H)
    with engine.connect() as conn:
        backlog = task_backlog(conn, until)
        empty = task_backlog(conn, D0)
    assert backlog == {
        "open": 4,
        "overdue": 2,
        "median_age_hours": 7.0,
        "max_age_hours": 30.0,
        "by_owner": [
            {
                "owner": "a",
                "kind": "linkedin",
                "open": 2,
                "overdue": 1,
                "median_age_hours": 20.0,
                "max_age_hours": 30.0,
            },
            {
                "owner": "b",
                "kind": "call",
                "open": 1,
                "overdue": 0,
                "median_age_hours": 4.0,
                "max_age_hours": 4.0,
            },
            {
                "owner": None,
                "kind": "manual",
                "open": 1,
                "overdue": 1,
                "median_age_hours": 2.0,
                "max_age_hours": 2.0,
            },
        ],
    }
    assert empty == {
        "open": 0,
        "overdue": 0,
        "median_age_hours": None,
        "max_age_hours": None,
        "by_owner": [],
    }
