"""Interrupted runs: claims that never left are released and sent at the next run; requests
in flight are reconciled with the provider; what nobody can confirm becomes a task."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from engine_world import World, write_config
from sqlalchemy import select
from throwaway_db import BACKEND
from tick_world import PERSON, SMALL, TEMPLATES

from channels import DryRunChannel
from channels.base import Channel, Departing, Inquiry, OutgoingMessage, ReconcileResult
from outreach.clock import FixedClock
from outreach.engine.liveness import FileLiveness, Liveness, PostgresLiveness
from outreach.engine.recover import CHECK_TASK_KIND
from outreach.store.schema import CandidateRecord, Enrollment, Task, WriteBack

NY = ZoneInfo("America/New_York")
NINE = datetime(2026, 11, 2, 9, 0, tzinfo=NY)
WALL = datetime(2026, 12, 6, 12, 0, tzinfo=NY)


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no result is recorded."""


class DiesBeforeRequest(Channel):
    """Killed after the claim, before any request: nothing was marked in flight."""

    name = "email"
    max_batch = 100
    announces_requests = True

    def send(self, batch: Sequence[OutgoingMessage], departing: Departing | None = None):
        raise Killed()


class DiesMidRequest(Channel):
    """Killed after the request left: marked in flight, no answer recorded."""

    name = "email"
    max_batch = 100
    announces_requests = True

    def send(self, batch: Sequence[OutgoingMessage], departing: Departing | None = None):
        assert departing is not None
        departing(batch)
        raise Killed()


class Provider(DryRunChannel):
    """A dry-run channel whose provider answers reconciliation with ``answer``."""

    def __init__(self, answer: str) -> None:
        super().__init__("email")
        self.answer = answer
        self.asked: list[Inquiry] = []

    def reconcile(self, inquiries: Sequence[Inquiry], now: datetime) -> list[ReconcileResult]:
        self.asked.extend(inquiries)
        return [
            ReconcileResult(i.touch_id, self.answer, f"the provider says {self.answer}", "pm-1")
            for i in inquiries
        ]


class Dead(Liveness):
    """Every other run is known dead (as a lost lock says)."""

    def alive(self, run_ids):
        return {run_id: False for run_id in run_ids}


@pytest.fixture
def small(engine, tmp_path: Path) -> World:
    config = write_config(tmp_path, SMALL, TEMPLATES)
    world = World(engine, config, NINE)
    world.add({**PERSON, "stage": "applied"})
    return world


def killed(world: World, channel: Channel) -> None:
    world.email = channel  # type: ignore[assignment]
    with pytest.raises(Killed):
        world.tick(NINE, wall_clock=FixedClock(WALL))


def test_a_claim_that_never_left_is_released_and_sent_at_the_next_run(small: World) -> None:
    killed(small, DiesBeforeRequest())
    (claimed,) = small.touches()
    assert claimed.status == "claimed"

    small.email = DryRunChannel("email")
    summary = small.tick(NINE, wall_clock=FixedClock(WALL), liveness=Dead())
    assert summary.recovery.released == 1 and summary.recovery.dropped == 0
    assert summary.total("sent") == 1
    assert [m.step_id for m in small.email.sent] == ["one"]
    released, sent = small.touches()
    assert released.status == "released" and released.idempotency_key.endswith(
        f"#released{released.id}"
    )
    assert "never requested" in released.reason
    assert sent.status == "sent" and sent.idempotency_key == claimed.idempotency_key
    # Nothing left to do, nothing sent twice.
    assert small.tick(NINE, wall_clock=FixedClock(WALL), liveness=Dead()).total("sent") == 0
    assert len(small.email.sent) == 1


def test_without_liveness_a_live_lease_is_left_alone_until_it_runs_out(small: World) -> None:
    killed(small, DiesBeforeRequest())
    small.email = DryRunChannel("email")
    soon = small.tick(NINE, wall_clock=FixedClock(WALL + timedelta(minutes=5)))
    assert soon.recovery.released == 0 and not small.email.sent
    assert [t.status for t in small.touches()] == ["claimed"]
    later = small.tick(NINE, wall_clock=FixedClock(WALL + timedelta(minutes=16)))
    assert later.recovery.released == 1 and len(small.email.sent) == 1


def test_a_live_run_s_claims_are_never_taken(small: World) -> None:
    class Alive(Liveness):
        def alive(self, run_ids):
            return {run_id: True for run_id in run_ids}

    killed(small, DiesBeforeRequest())
    small.email = DryRunChannel("email")
    # Even with the lease long gone, a run that still holds its lock keeps its claims.
    summary = small.tick(NINE, wall_clock=FixedClock(WALL + timedelta(days=1)), liveness=Alive())
    assert summary.recovery.released == 0 and not small.email.sent


def test_a_released_claim_whose_cadence_stopped_is_not_sent(small: World) -> None:
    killed(small, DiesBeforeRequest())
    with small.engine.begin() as conn:
        conn.execute(Enrollment.__table__.update().values(status="stopped", stop_reason="reply"))
    small.email = DryRunChannel("email")
    summary = small.tick(NINE, wall_clock=FixedClock(WALL), liveness=Dead())
    assert summary.recovery.released == 0 and summary.recovery.dropped == 1
    assert not small.email.sent
    (touch,) = small.touches()
    assert touch.status == "released" and "not sent again" in touch.reason


def test_in_flight_when_killed_and_held_by_the_provider_becomes_sent(small: World) -> None:
    with small.engine.begin() as conn:  # the record comes from a CRM: it is owed a note
        conn.execute(CandidateRecord.__table__.update().values(source="greenhouse"))
    killed(small, DiesMidRequest())
    (touch,) = small.touches()
    assert touch.status == "in_flight"
    provider = Provider("delivered")
    small.email = provider  # type: ignore[assignment]
    summary = small.tick(NINE, wall_clock=FixedClock(WALL), liveness=Dead())
    assert summary.recovery.interrupted == 1 and summary.recovery.confirmed == 1
    assert not provider.sent  # never re-sent
    (touch,) = small.touches()
    assert touch.status == "sent" and touch.provider_message_id == "pm-1"
    assert "reconciled" in touch.reason
    assert [i.touch_id for i in provider.asked] == [touch.id]
    assert provider.asked[0].body_digest == touch.body_digest is not None
    with small.engine.connect() as conn:
        (note,) = conn.execute(select(WriteBack).where(WriteBack.kind == "note")).all()
    assert note.touch_id == touch.id and "confirmed with the provider" in note.text


def test_in_flight_that_the_provider_never_received_is_sent_once(small: World) -> None:
    killed(small, DiesMidRequest())
    provider = Provider("absent")
    small.email = provider  # type: ignore[assignment]
    summary = small.tick(NINE, wall_clock=FixedClock(WALL), liveness=Dead())
    assert summary.recovery.absent == 1 and summary.total("sent") == 1
    assert len(provider.sent) == 1
    assert [t.status for t in small.touches()] == ["released", "sent"]


def test_in_flight_nobody_can_confirm_becomes_a_check_task_once(small: World) -> None:
    with small.engine.begin() as conn:  # the record comes from a CRM
        conn.execute(CandidateRecord.__table__.update().values(source="greenhouse"))
    killed(small, DiesMidRequest())
    provider = Provider("unknown")
    small.email = provider  # type: ignore[assignment]
    summary = small.tick(NINE, wall_clock=FixedClock(WALL), liveness=Dead())
    ambiguous = [t for t in small.touches() if t.status == "ambiguous"]
    assert summary.recovery.handed_over == len(ambiguous) >= 1
    assert not provider.sent
    with small.engine.connect() as conn:
        tasks = conn.execute(select(Task).where(Task.kind == CHECK_TASK_KIND)).all()
        crm = conn.execute(select(WriteBack).where(WriteBack.kind == "task")).all()
    assert sorted(t.touch_id for t in tasks) == sorted(t.id for t in ambiguous)
    assert all("Check whether" in t.title for t in tasks)
    # The Greenhouse record's touch is also a task in the CRM.
    assert {w.source for w in crm} == {"greenhouse"}
    # Handed over once: the next run neither asks again nor adds a task.
    provider.asked.clear()
    again = small.tick(NINE, wall_clock=FixedClock(WALL), liveness=Dead())
    assert again.recovery.handed_over == 0 and not provider.asked


def test_a_provider_that_cannot_tell_yet_is_asked_again_next_run(small: World) -> None:
    killed(small, DiesMidRequest())
    provider = Provider("later")
    small.email = provider  # type: ignore[assignment]
    first = small.tick(NINE, wall_clock=FixedClock(WALL), liveness=Dead())
    assert first.recovery.waiting >= 1 and not provider.sent
    provider.answer = "delivered"
    second = small.tick(NINE, wall_clock=FixedClock(WALL), liveness=Dead())
    assert second.recovery.confirmed == 1
    assert [t.status for t in small.touches()] == ["sent"]


# -- liveness --------------------------------------------------------------------------

HOLDER = """
import sys, time
from pathlib import Path
from outreach.engine.liveness import FileLiveness
with FileLiveness(Path(sys.argv[1])).hold("run-1"):
    print("held", flush=True)
    sys.stdin.read()
"""


def test_a_file_lock_tells_a_killed_run_from_a_live_one(tmp_path: Path) -> None:
    liveness = FileLiveness(tmp_path / "db.runs")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "db.runs")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert liveness.alive(["run-1", "run-2"]) == {"run-1": True, "run-2": None}
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
        assert liveness.alive(["run-1"]) == {"run-1": False}
        # The dead run's lock file is cleared: next time nothing is known of it.
        assert liveness.alive(["run-1"]) == {"run-1": None}
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert (tmp_path / "db.runs").stat().st_mode & 0o777 == 0o700


def test_a_run_held_in_this_process_is_alive_and_its_file_goes_when_it_ends(
    tmp_path: Path,
) -> None:
    liveness = FileLiveness(tmp_path / "runs")
    with liveness.hold("run-x"):
        assert liveness.alive(["run-x"]) == {"run-x": True}
    assert liveness.alive(["run-x"]) == {"run-x": None}
    assert not list((tmp_path / "runs").iterdir())


@pytest.mark.skipif(BACKEND != "postgresql", reason="PostgreSQL advisory locks")
def test_a_postgres_advisory_lock_tells_live_from_dead(engine) -> None:
    liveness = PostgresLiveness(engine)
    with liveness.hold("run-a"):
        assert liveness.alive(["run-a", "run-b"]) == {"run-a": True, "run-b": False}
    assert liveness.alive(["run-a"]) == {"run-a": False}
