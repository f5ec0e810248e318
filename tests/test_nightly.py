"""The nightly job as deployed: ``outreach sync && outreach run`` processes against the sandbox.

Two runs started together (a slow night, and cron starting the next one) must not send
anything twice; a dry run must not touch a provider at all.
"""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from test_entrypoint import outreach_script

from outreach.clock import FixedClock
from outreach.sandbox.base import Fault
from outreach.sandbox.suite import Sandbox
from outreach.store import make_engine
from outreach.store.schema import Touch

# A Tuesday, 10:00 in New York: inside the default send window.
NOW = datetime(2026, 11, 3, 15, 0, tzinfo=UTC)


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(120, clock=FixedClock(NOW)) as running:
        # Today's applications: due for the acknowledgement now.
        for person in running.people[:40]:
            running.move(person, "applied", NOW - timedelta(hours=1))
        yield running


def outreach(env: dict[str, str], *args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [outreach_script(), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def env(sandbox: Sandbox, database_url: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("OUTREACH_")}
    return {**base, **sandbox.env(), "OUTREACH_DATABASE_URL": database_url}


def test_two_runs_started_together_send_nothing_twice(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    synced = outreach(env, "sync", "--now", NOW.isoformat(), cwd=tmp_path)
    _, err = synced.communicate(timeout=120)
    assert synced.returncode == 0, err
    # Slow provider answers keep the first run busy while the second one starts.
    sandbox.sendgrid.faults.random(0.5, [Fault("slow", seconds=0.05)], seed=3)
    runs = [outreach(env, "run", "--now", NOW.isoformat(), cwd=tmp_path) for _ in range(2)]
    results = [run.communicate(timeout=300) for run in runs]
    for run, (_out, err) in zip(runs, results, strict=True):
        assert run.returncode == 0, err
        assert "Traceback" not in err
    touches = Counter(m["custom_args"]["touch_id"] for m in sandbox.sendgrid.messages)
    people = Counter(m["to"][0] for m in sandbox.sendgrid.messages)
    assert touches and max(touches.values()) == 1
    acks = Counter(
        m["to"][0] for m in sandbox.sendgrid.messages if "acknowledge" in m["categories"]
    )
    assert max(acks.values()) == 1
    # The work was done, by one run or shared by both: every acknowledgement the ledger
    # sent reached SendGrid once, today's 40 applicants among them.
    assert sum(acks.values()) == sent_touches(env["OUTREACH_DATABASE_URL"], "acknowledge")
    assert {p.email.lower() for p in sandbox.people[:40]} <= set(acks)
    assert max(people.values()) <= 2  # max_touches
    # A third run the same night finds nothing left to send.
    before = (len(sandbox.sendgrid.messages), len(sandbox.twilio.messages))
    again = outreach(env, "run", "--now", NOW.isoformat(), cwd=tmp_path)
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert (len(sandbox.sendgrid.messages), len(sandbox.twilio.messages)) == before


def sent_touches(database_url: str, step: str) -> int:
    """How many touches of ``step`` the ledger records as sent."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            return conn.scalar(
                select(func.count())
                .select_from(Touch)
                .where(Touch.step_id == step, Touch.status == "sent")
            )
    finally:
        engine.dispose()


def test_a_dry_run_touches_no_provider(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    synced = outreach(env, "sync", "--now", NOW.isoformat(), cwd=tmp_path)
    _, err = synced.communicate(timeout=120)
    assert synced.returncode == 0, err
    crm_requests = {
        name: len(sandbox.fakes[name].requests) for name in ("greenhouse", "lever", "hubspot")
    }
    dry = outreach(env, "run", "--dry-run", "--now", NOW.isoformat(), cwd=tmp_path)
    out, err = dry.communicate(timeout=120)
    assert dry.returncode == 0, err
    assert "dry run" in out
    assert not sandbox.sendgrid.requests and not sandbox.twilio.requests
    assert {
        name: len(sandbox.fakes[name].requests) for name in ("greenhouse", "lever", "hubspot")
    } == crm_requests
