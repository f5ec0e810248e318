"""`outreach sync --source bullhorn` (the CLI) against the Bullhorn fake on loopback."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from outreach.clock import FixedClock
from outreach.sandbox.base import SandboxServer
from outreach.sandbox.bullhorn import FakeBullhorn
from outreach.sandbox.seed import Population
from outreach.store import make_engine
from outreach.store.schema import CandidateRecord

START = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
PEOPLE = list(Population(700))


@pytest.fixture
def fake():
    fake = FakeBullhorn(PEOPLE, refresh_token="rt-env", clock=FixedClock(START))
    with SandboxServer(fake) as server:
        fake.url = server.url  # type: ignore[attr-defined]
        yield fake


def env(fake, token_file: Path) -> dict[str, str]:
    return {
        "BULLHORN_CLIENT_ID": fake.client_id,
        "BULLHORN_CLIENT_SECRET": fake.client_secret,
        "BULLHORN_REFRESH_TOKEN": "rt-env",
        "BULLHORN_AUTH_URL": fake.url + "/oauth",
        "BULLHORN_REST_URL": fake.url + "/rest-services",
        "BULLHORN_TOKEN_FILE": str(token_file),
    }


def stages(database_url: str) -> dict[str, str | None]:
    engine = make_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(
            select(CandidateRecord.external_id, CandidateRecord.stage).where(
                CandidateRecord.source == "bullhorn"
            )
        ).all()
    engine.dispose()
    return dict(rows)


def test_sync_twice_with_a_rotated_token_and_a_timed_out_session(
    cli, fake, database_url, tmp_path
) -> None:
    token_file = tmp_path / "private" / "bullhorn-token"
    first = cli(
        "sync", "--source", "bullhorn", "--now", START.isoformat(), env=env(fake, token_file)
    )
    assert first.exit_code == 0, first.output
    synced = stages(database_url)
    assert len(synced) == len(PEOPLE)
    assert synced[str(fake.candidate_id(PEOPLE[0].index))] == PEOPLE[0].stage
    assert os.stat(token_file).st_mode & 0o777 == 0o600
    assert "rt-env" not in token_file.read_text() and "rt-env" not in first.output

    # A recruiter moves someone; the session from the first run has timed out meanwhile.
    moved = next(p for p in PEOPLE if p.stage == "screening")
    fake.move(moved.index, "offer", at=START + timedelta(hours=1))
    fake.expire_sessions()
    later = (START + timedelta(hours=2)).isoformat()
    second = cli("sync", "--source", "bullhorn", "--now", later, env=env(fake, token_file))
    assert second.exit_code == 0, second.output
    assert stages(database_url)[str(fake.candidate_id(moved.index))] == "offer"
    # The second process spent the token the first one stored, not the dead one in the env.
    assert json.loads(token_file.read_text())["refresh_token"] in fake.refresh_tokens
    assert len(fake.refresh_tokens) == 1


def test_a_refused_token_is_a_configuration_error_that_names_the_fix(cli, fake, tmp_path) -> None:
    fake.refresh_tokens.clear()  # revoked
    result = cli("sync", "--source", "bullhorn", env=env(fake, tmp_path / "t"))
    assert result.exit_code == 2, result.output
    assert "BULLHORN_REFRESH_TOKEN" in result.output and "rt-env" not in result.output


def test_an_unconfigured_bullhorn_is_said_once_and_is_not_an_error(cli) -> None:
    result = cli("sync", "--source", "bullhorn")
    assert result.exit_code == 0, result.output
    assert "bullhorn" in result.output.lower() and "BULLHORN_CLIENT_ID" in result.output
