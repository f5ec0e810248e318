"""``outreach run --workers N``: N processes on one PostgreSQL share the work and the limits.

The real CLI starts four workers against the Twilio fake on loopback (real SDK, real
HTTP). The fake's own record of when each request arrived shows no one-second window
with more than the policy's 30/s, summed over the four; every due touch went out once.
Real time is unavoidable here (processes sharing a real limit): about ten seconds.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from test_shared_limits import max_in_window
from test_shared_limits_servers import REDIS_URL, needs_redis
from throwaway_db import BACKEND

from outreach.cadence import load_cadence_file
from outreach.clock import FixedClock
from outreach.records import normalize_record
from outreach.sandbox.base import RateWindow, SandboxServer
from outreach.sandbox.twilio import FakeTwilio
from outreach.store.candidates import upsert_candidates
from outreach.store.schema import Touch

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)  # Wednesday 10:00 in New York
FROM_NUMBER = "+15005550006"
LIMIT = 30  # SMS per second: the policy's, and the fake's own window
PEOPLE = 240
WORKERS = 4

CONFIG = f"""\
company: {{name: Northwind}}
policy:
  default_timezone: America/New_York
  send_window: {{start: "00:00", end: "23:59", days: [mon, tue, wed, thu, fri, sat, sun]}}
  holidays: none
  max_touches: {{count: 5, per: 7d}}
  min_gap: 1m
  channel_order: [sms]
  sms_requires_consent: true
  rate_limits: {{sms: {LIMIT}/s}}
cadences:
  - id: screen
    trigger: {{stage: screening}}
    steps:
      - {{id: text, after: 0m, channel: sms, template: t}}
"""
_PREFIXES = (
    "OUTREACH_", "SENDGRID_", "TWILIO_", "GREENHOUSE_", "LEVER_", "HUBSPOT_", "BULLHORN_",
    "ACTIVECAMPAIGN_", "MAILCHIMP_",
)  # fmt: skip


@pytest.fixture
def twilio() -> Iterator[tuple[FakeTwilio, str]]:
    """The Twilio fake on loopback, metering its Messages endpoint at LIMIT a second."""
    fake = FakeTwilio(
        clock=FixedClock(NOW + timedelta(days=1)),
        from_numbers=(FROM_NUMBER,),
        rate=RateWindow(LIMIT, 1.0),
    )
    fake.log_bodies = False
    with SandboxServer(fake) as server:
        yield fake, server.url


def _seed(engine, folder: Path, people: int = PEOPLE) -> Path:
    (folder / "templates").mkdir(parents=True)
    (folder / "templates" / "t.sms.j2").write_text(
        "Hi {{ candidate.first_name }}, thanks for applying to {{ company.name }}."
    )
    cadence_file = folder / "cadences.yaml"
    cadence_file.write_text(CONFIG)
    config = load_cadence_file(cadence_file)
    records = [
        normalize_record(
            {
                "source": "import",
                "external_id": f"p{i}",
                "first_name": f"Person{i}",
                "stage": "screening",
                "phone": f"+1415{2_000_000 + i:07d}",
                "sms_consent": "true",
                "timezone": "America/New_York",
            },
            where=f"row {i}",
            default_region="US",
            canonical_stage=config.canonical_stage,
        )
        for i in range(people)
    ]
    with engine.begin() as conn:
        upsert_candidates(conn, records, NOW)
    return cadence_file


def _twilio_env(fake: FakeTwilio, url: str) -> dict[str, str]:
    return {
        "TWILIO_ACCOUNT_SID": fake.account_sid,
        "TWILIO_AUTH_TOKEN": fake.auth_token,
        "TWILIO_FROM_NUMBER": FROM_NUMBER,
        "TWILIO_BASE_URL": url,
    }


def _run_workers(
    engine, database_url: str, twilio: tuple[FakeTwilio, str], folder: Path, **extra: str
) -> subprocess.CompletedProcess[str]:
    fake, url = twilio
    cadence_file = _seed(engine, folder)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(_PREFIXES)},
        "OUTREACH_DATABASE_URL": database_url,
        "OUTREACH_CONFIG": str(cadence_file),
        **_twilio_env(fake, url),
        **extra,
    }
    command = [sys.executable, "-m", "outreach", "run", "--now", NOW.isoformat()]
    return subprocess.run(
        # Small batches: the four claim in turns and send at the same time.
        [*command, "--workers", str(WORKERS), "--batch-size", "20"],
        env=env,
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _check(engine, fake: FakeTwilio, result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # Each worker's own summary, then the totals of all four.
    assert len(re.findall(r"^worker \d/4 \(exit 0\)$", result.stdout, re.M)) == WORKERS
    totals = re.search(r"^4 workers \(exit codes 0, 0, 0, 0\): sent (\d+),", result.stdout, re.M)
    assert totals, result.stdout[-3000:]
    sent_by = [int(n) for n in re.findall(r"^sent (\d+), tasks", result.stdout, re.M)]
    assert len(sent_by) == WORKERS and sum(sent_by) == int(totals.group(1)) == PEOPLE
    assert all(sent_by), f"SKIP LOCKED should share the work: {sent_by}"

    arrivals = [r.at for r in fake.requests_to("POST", "/Messages.json") if r.status == 201]
    busiest = max_in_window(arrivals)
    span = max(arrivals) - min(arrivals)
    print(result.stdout[-600:])
    print(f"{len(arrivals)} requests over {span:.2f} s, busiest second {busiest} (limit {LIMIT})")
    # The provider saw no more than its limit in any one-second window, never said 429.
    assert busiest <= LIMIT
    assert fake.rate is not None and fake.rate.rejected == 0
    # No touch twice, every due touch once.
    received = Counter(m["to"] for m in fake.messages)
    assert len(received) == PEOPLE and max(received.values()) == 1
    with engine.connect() as conn:
        statuses = Counter(conn.execute(select(Touch.status)).scalars())
    assert statuses == {"sent": PEOPLE}


@pytest.mark.postgres
@pytest.mark.skipif(BACKEND != "postgresql", reason="PostgreSQL pass only")
def test_four_workers_share_the_providers_limit_on_postgres(
    engine, database_url: str, twilio, tmp_path: Path
) -> None:
    result = _run_workers(engine, database_url, twilio, tmp_path)
    _check(engine, twilio[0], result)


@pytest.mark.postgres
@pytest.mark.skipif(BACKEND != "postgresql", reason="PostgreSQL pass only")
@needs_redis
def test_four_workers_share_the_providers_limit_in_redis(
    engine, database_url: str, twilio, tmp_path: Path
) -> None:
    result = _run_workers(engine, database_url, twilio, tmp_path, OUTREACH_REDIS_URL=REDIS_URL)
    _check(engine, twilio[0], result)
    # The limit lived in Redis: the database's bucket table was never used.
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM rate_buckets").scalar_one() == 0


@pytest.mark.postgres
@pytest.mark.skipif(BACKEND != "postgresql", reason="PostgreSQL pass only")
def test_two_workers_count_each_deferral_once(engine, database_url: str, tmp_path: Path) -> None:
    # SMS is switched off (no Twilio credentials): each due text waits a day for the
    # channel, exactly the horizon's edge. The second worker must not claim what the first
    # deferred and count it again; the totals are one deferral per person.
    people = 60
    cadence_file = _seed(engine, tmp_path, people=people)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(_PREFIXES)},
        "OUTREACH_DATABASE_URL": database_url,
        "OUTREACH_CONFIG": str(cadence_file),
    }
    command = [sys.executable, "-m", "outreach", "run", "--now", NOW.isoformat()]
    result = subprocess.run(
        [*command, "--workers", "2", "--batch-size", "5"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    totals = re.search(
        r"^2 workers \(exit codes 0, 0\): sent 0, tasks 0, deferred (\d+),", result.stdout, re.M
    )
    assert totals, result.stdout[-3000:]
    assert int(totals.group(1)) == people
    with engine.connect() as conn:
        assert conn.execute(select(Touch.id)).first() is None


def test_workers_need_postgres(cli, tmp_path: Path) -> None:
    result = cli(
        "run",
        "--workers",
        "2",
        env={"OUTREACH_DATABASE_URL": f"sqlite:///{tmp_path / 'one.db'}"},
    )
    assert result.exit_code == 2
    assert "--workers 2 needs PostgreSQL" in result.output
    assert "sqlite" in result.output


def test_workers_refuse_a_dry_run(cli) -> None:
    result = cli("run", "--workers", "2", "--dry-run")
    assert result.exit_code == 2
    assert "a dry run writes nothing" in result.output


def test_workers_must_be_at_least_one(cli) -> None:
    assert cli("run", "--workers", "0").exit_code == 2


def test_an_unreachable_redis_falls_back_and_says_so(engine, cli, twilio, tmp_path: Path) -> None:
    # A run on its own (any database) whose OUTREACH_REDIS_URL answers nothing: it warns
    # and paces itself at the whole limit (it counts as the only worker); all are sent.
    fake, url = twilio
    cadence_file = _seed(engine, tmp_path / "job", people=8)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    env = {
        "OUTREACH_CONFIG": str(cadence_file),
        "OUTREACH_REDIS_URL": f"redis://:hunter2@127.0.0.1:{closed}/0",
        **_twilio_env(fake, url),
    }
    result = cli("run", "--now", NOW.isoformat(), env=env)
    assert result.exit_code == 0, result.output
    assert "rate limit sms:" in result.output
    assert "redis: ConnectionError" in result.output
    assert "hunter2" not in result.output
    assert len(fake.messages) == 8
