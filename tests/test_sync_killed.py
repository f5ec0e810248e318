"""`outreach sync` killed for real mid-run resumes to exactly the store of an unbroken run.

The sync runs as its own process against the Greenhouse fake over loopback; the fake
SIGKILLs it when the third candidates page is asked for (pages one and two are committed
by then). A second `outreach sync` resumes, and the store must equal one built by a sync
that was never interrupted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from outreach.clock import FixedClock
from outreach.sandbox.base import SandboxServer
from outreach.sandbox.greenhouse import FakeGreenhouse
from outreach.sandbox.seed import Population
from outreach.store import make_engine, upgrade
from outreach.store.schema import CandidateRecord, ContactPoint, Event, Person, SyncState

NOW = "2026-11-25T12:00:00+00:00"
PEOPLE = 1_600  # four pages of 500


class KillOnRequest:
    """WSGI middleware: calls ``kill`` when the ``nth`` request to ``path`` arrives."""

    def __init__(self, app: Any, path: str, nth: int) -> None:
        self.app = app
        self.path = path
        self.nth = nth
        self.seen = 0
        self.kill: Callable[[], None] = lambda: None

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        if environ["PATH_INFO"] == self.path:
            self.seen += 1
            if self.seen == self.nth:
                self.kill()
        return self.app(environ, start_response)


def sandbox_env(url: str, database_url: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("GREENHOUSE_", "LEVER_"))}
    return {
        **keep,
        "OUTREACH_DATABASE_URL": database_url,
        "GREENHOUSE_CLIENT_ID": "sandbox-greenhouse-client",
        "GREENHOUSE_CLIENT_SECRET": "sandbox-greenhouse-secret",
        "GREENHOUSE_USER_ID": "4080",
        "GREENHOUSE_BASE_URL": url + "/v3",
        "GREENHOUSE_AUTH_URL": url + "/token",
        "HUBSPOT_ACCESS_TOKEN": "",
        "LEVER_API_KEY": "",
    }


def outreach(*args: str, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", "from outreach.cli import main; main()", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def snapshot(url: str) -> tuple:
    engine = make_engine(url)
    with engine.connect() as conn:
        records = sorted(
            conn.execute(
                select(
                    CandidateRecord.source,
                    CandidateRecord.external_id,
                    CandidateRecord.stage,
                    CandidateRecord.email,
                    CandidateRecord.owner_id,
                )
            ).all()
        )
        contacts = sorted(conn.execute(select(ContactPoint.kind, ContactPoint.value)).all())
        events = sorted(conn.execute(select(Event.external_id, Event.type)).all())
        people = conn.execute(select(Person.id)).all()
        cursors = conn.execute(select(SyncState.source, SyncState.cursor)).all()
    engine.dispose()
    return records, contacts, events, len(people), cursors


def test_killed_sync_resumes_to_the_same_store(database_url, tmp_path) -> None:
    clock = FixedClock(datetime(2026, 11, 25, 12, 0, tzinfo=UTC))
    fake = FakeGreenhouse(Population(PEOPLE), clock=clock)
    killer = KillOnRequest(fake, "/v3/candidates", nth=3)
    engine = make_engine(database_url)
    upgrade(engine)
    engine.dispose()
    with SandboxServer(killer) as server:
        env = sandbox_env(server.url, database_url)
        first = outreach("sync", "--now", NOW, env=env, cwd=tmp_path)
        killer.kill = lambda: os.kill(first.pid, signal.SIGKILL)
        first.communicate(timeout=120)
        assert first.returncode == -signal.SIGKILL
        partial = snapshot(database_url)
        assert 0 < len(partial[0]) < PEOPLE  # died mid-run, with some pages committed

        second = outreach("sync", "--now", NOW, env=env, cwd=tmp_path)
        _, errors = second.communicate(timeout=120)
        assert second.returncode == 0, errors
        resumed = snapshot(database_url)

        straight_url = f"sqlite:///{tmp_path / 'straight.db'}"
        straight_engine = make_engine(straight_url)
        upgrade(straight_engine)
        straight_engine.dispose()
        third = outreach(
            "sync", "--now", NOW, env={**env, "OUTREACH_DATABASE_URL": straight_url}, cwd=tmp_path
        )
        _, errors = third.communicate(timeout=120)
        assert third.returncode == 0, errors
    assert len(resumed[0]) == PEOPLE
    assert resumed == snapshot(straight_url)
