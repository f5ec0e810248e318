"""Write-back: notes for sent touches and tasks for task steps, retried, never blocking."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).parent / "engine"))
from engine_world import World

from connectors.base import Connector
from outreach.cadence import load_cadence_file
from outreach.clock import FixedClock
from outreach.errors import ConfigError, PermanentError, RetryableError
from outreach.paths import default_config_dir
from outreach.store.schema import Task, WriteBack
from outreach.writeback import process_write_backs

NY = ZoneInfo("America/New_York")


class FakeCrm(Connector):
    name = "greenhouse"

    def __init__(self, fail: Exception | None = None) -> None:
        self.notes: list[tuple[str, str]] = []
        self.tasks: list[str] = []
        self.fail = fail

    def write_note(self, ref, text):
        if self.fail:
            raise self.fail
        self.notes.append((ref.external_id, text))
        return f"n{len(self.notes)}"

    def create_task(self, task):
        if self.fail:
            raise self.fail
        self.tasks.append(task.title)
        return f"t{len(self.tasks)}"


def world(engine) -> World:
    config = load_cadence_file(default_config_dir() / "cadences.yaml")
    w = World(engine, config, datetime(2026, 11, 2, 9, 0, tzinfo=NY))
    w.add(
        {
            "source": "greenhouse",
            "external_id": "g1",
            "first_name": "Ann",
            "email": "ann@example.com",
            "stage": "Application Review",
            "owner_id": "92120",
        },
        {
            "source": "import",
            "external_id": "i1",
            "first_name": "Bo",
            "email": "bo@example.com",
            "stage": "applied",
        },
        {
            "source": "greenhouse",
            "external_id": "g2",
            "first_name": "Cy",
            "email": "cy@example.com",
            "linkedin_url": "https://www.linkedin.com/in/cy",
            "stage": "prospect",
            "owner_id": "92120",
        },
    )
    return w


def rows(engine):
    with engine.connect() as conn:
        return conn.execute(select(WriteBack).order_by(WriteBack.id)).all()


def test_sent_touches_and_tasks_are_written_back_once(engine) -> None:
    w = world(engine)
    w.tick()
    w.tick(datetime(2026, 11, 5, 9, 0, tzinfo=NY))  # Cy's LinkedIn task, 3 days after the intro
    pending = rows(engine)
    assert {(r.external_id, r.kind) for r in pending} == {
        ("g1", "note"),
        ("g2", "note"),
        ("g2", "task"),
    }
    assert all(r.status == "pending" for r in pending)  # import records get no write-back
    note = next(r for r in pending if r.external_id == "g1")
    assert note.text.startswith("Email '") and "application-follow-up/acknowledge" in note.text

    crm = FakeCrm()
    report = process_write_backs(engine, {"greenhouse": crm}, w.clock)
    assert report.done["greenhouse"] == 3 and len(crm.notes) == 2 and len(crm.tasks) == 1
    assert all(r.status == "done" for r in rows(engine))
    with engine.connect() as conn:
        assert (
            conn.execute(select(Task.external_id).where(Task.kind == "linkedin")).scalar() == "t1"
        )
    assert process_write_backs(engine, {"greenhouse": crm}, w.clock).done == {}


def test_failures_retry_later_or_fail_or_wait_without_blocking(engine) -> None:
    w = world(engine)
    w.tick()
    clock = FixedClock(w.clock.now())
    flaky = FakeCrm(RetryableError("503", provider="greenhouse"))
    report = process_write_backs(engine, {"greenhouse": flaky}, clock)
    assert report.retrying["greenhouse"] == 2
    assert all(r.attempts == 1 and r.next_attempt_at > clock.now() for r in rows(engine))
    assert process_write_backs(engine, {"greenhouse": FakeCrm()}, clock).done == {}  # not due yet
    clock.advance(timedelta(hours=1))
    blocked = process_write_backs(engine, {"greenhouse": FakeCrm(ConfigError("bad key"))}, clock)
    assert blocked.blocked == {"greenhouse": "bad key"}
    refused = process_write_backs(
        engine, {"greenhouse": FakeCrm(PermanentError("404", provider="greenhouse"))}, clock
    )
    assert len(refused.failed) == 2 and all(r.status == "failed" for r in rows(engine))
    assert len(w.email.sent) == 3  # sending never waited for any of this


def test_a_run_started_during_a_write_back_pass_writes_nothing_twice(engine) -> None:
    w = world(engine)
    w.tick()
    inner: list = []

    class Overlapping(FakeCrm):
        def write_note(self, ref, text):
            if not inner:  # a second run starts while this one is writing its first note
                inner.append(process_write_backs(engine, {"greenhouse": FakeCrm()}, w.clock))
            return super().write_note(ref, text)

    crm = Overlapping()
    report = process_write_backs(engine, {"greenhouse": crm}, w.clock)
    assert report.done["greenhouse"] == 2 and len(crm.notes) == 2
    assert inner[0].done == {}  # the rows were claimed by the first run
    assert all(r.status == "done" for r in rows(engine))


def test_a_used_up_quota_leaves_the_rows_waiting_without_an_attempt(engine) -> None:
    w = world(engine)
    w.tick()
    quota = FakeCrm(RetryableError("daily limit", provider="greenhouse", retry_after=3600))
    report = process_write_backs(engine, {"greenhouse": quota}, w.clock)
    assert report.blocked == {"greenhouse": "daily limit"} and not report.retrying
    assert all(r.status == "pending" and r.attempts == 0 for r in rows(engine))
    assert process_write_backs(engine, {"greenhouse": FakeCrm()}, w.clock).done["greenhouse"] == 2


def test_an_unexpected_error_is_retried_later_and_the_pass_goes_on(engine) -> None:
    w = world(engine)
    w.tick()
    report = process_write_backs(engine, {"greenhouse": FakeCrm(OSError("reset"))}, w.clock)
    assert report.retrying["greenhouse"] == 2
    assert all(r.status == "pending" and r.last_error == "unexpected OSError" for r in rows(engine))


def test_a_run_that_died_mid_pass_has_its_claims_taken_up_after_the_lease(engine) -> None:
    from outreach.writeback import LEASE, _claim

    w = world(engine)
    w.tick()
    claimed = _claim(engine, ["greenhouse"], w.clock.now(), 1000)  # then the process died
    assert len(claimed) == 2
    assert process_write_backs(engine, {"greenhouse": FakeCrm()}, w.clock).done == {}
    later = FixedClock(w.clock.now() + LEASE)
    assert process_write_backs(engine, {"greenhouse": FakeCrm()}, later).done["greenhouse"] == 2
