"""The whole tick: idempotency, enrollment across ticks, dry runs.

Each stage's own tests live beside it: test_plan, test_route, test_throttle_stage,
test_render, test_dispatch, test_record.
"""

from __future__ import annotations

from pathlib import Path

from engine_world import World
from sqlalchemy import select
from tick_world import PERSON, ny

from outreach.store.schema import Enrollment


def test_running_twice_at_the_same_moment_sends_nothing_the_second_time(world: World) -> None:
    world.add({**PERSON, "stage": "applied"})
    first = world.tick(ny(2026, 11, 2, 9, 0))
    assert first.total("sent") == 1
    second = world.tick(ny(2026, 11, 2, 9, 0))
    assert second.total("sent") == 0 and second.total("tasks") == 0
    assert len(world.email.sent) == 1


def test_leaving_the_stage_stops_only_stage_change_cadences(world: World) -> None:
    world.add({**PERSON, "stage": "screening"})
    world.tick(ny(2026, 11, 2, 9, 0))
    world.add({**PERSON, "stage": "interview"})
    summary = world.tick(ny(2026, 11, 3, 9, 0))
    assert summary.enroll.stopped["stage_change"] == 1
    with world.engine.connect() as conn:
        statuses = dict(conn.execute(select(Enrollment.cadence_id, Enrollment.status)).all())
    assert statuses == {"interview-scheduling": "stopped", "interview-follow-up": "active"}


def test_re_entering_a_stage_enrolls_again(world: World) -> None:
    world.add({**PERSON, "stage": "applied"})
    world.tick(ny(2026, 11, 2, 9, 0))
    world.add({**PERSON, "stage": "screening"}, at=ny(2026, 11, 5, 9, 0))
    world.add({**PERSON, "stage": "applied"}, at=ny(2026, 11, 20, 9, 0))
    world.tick(ny(2026, 11, 20, 10, 0))
    with world.engine.connect() as conn:
        rows = (
            conn.execute(
                select(Enrollment.status)
                .where(Enrollment.cadence_id == "application-follow-up")
                .order_by(Enrollment.id)
            )
            .scalars()
            .all()
        )
    assert rows == ["stopped", "active"]  # the new enrollment has steps to come


def test_dry_run_writes_nothing(cli, tmp_path: Path) -> None:
    csv = tmp_path / "c.csv"
    csv.write_text("source,external_id,email,stage\nimport,1,a@example.com,applied\n")
    assert cli("import", str(csv), "--now", "2026-11-02T14:00:00Z").exit_code == 0
    result = cli("run", "--dry-run", "--now", "2026-11-02T14:00:00Z")
    assert result.exit_code == 0, result.output
    assert "dry run" in result.stdout and "sent 1" in result.stdout
    again = cli("run", "--dry-run", "--now", "2026-11-02T14:00:00Z")
    assert "sent 1" in again.stdout  # nothing was recorded the first time
    live = cli("run", "--now", "2026-11-02T14:00:00Z")
    assert live.exit_code == 0
    assert "email: off" in live.stderr and "deferred 1" in live.stdout


def test_enrollments_store_the_next_due_time(world: World) -> None:
    world.add({**PERSON, "stage": "applied"})
    world.tick(ny(2026, 11, 2, 9, 0))
    with world.engine.connect() as conn:
        row = conn.execute(
            select(Enrollment).where(Enrollment.cadence_id == "application-follow-up")
        ).one()
    assert row.next_step == 1 and row.next_due_at == ny(2026, 11, 9, 9, 0)
