"""`outreach sync` and `outreach run` against the ActiveCampaign fake, through the real connector.

The CLI reads ACTIVECAMPAIGN_API_URL/ACTIVECAMPAIGN_API_TOKEN from the sandbox's
environment, syncs every contact over loopback HTTP, and the tick's write-back lands as a
note (an email touch) and a LinkedIn task (assigned to the deal's owner) on the contact.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from outreach.clock import FixedClock
from outreach.paths import default_config_dir
from outreach.sandbox.seed import RECRUITERS
from outreach.sandbox.suite import Sandbox
from outreach.store import make_engine
from outreach.store.schema import CandidateRecord

NOW = "2026-11-25T15:00:00+00:00"  # a Wednesday, 10:00 in New York
PEOPLE = 60


@pytest.fixture
def sandbox():
    clock = FixedClock(datetime(2026, 11, 25, 15, tzinfo=UTC))
    with Sandbox(0, clock=clock, activecampaign_people=PEOPLE, limits=True) as running:
        yield running


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """The default policy and stage map; a LinkedIn step for prospects, an email for applicants."""
    source = default_config_dir()
    text = (source / "cadences.yaml").read_text()
    head = text[: text.index("\ncadences:")]
    folder = tmp_path / "config"
    shutil.copytree(source / "templates", folder / "templates")
    (folder / "cadences.yaml").write_text(
        head
        + """
cadences:
  - id: sourcing
    trigger: {stage: prospect}
    stop_on: [reply, stage_change, opt_out]
    steps:
      - id: connect
        after: 0m
        channel: linkedin
        template: nurture_connect
  - id: applied
    trigger: {stage: applied}
    stop_on: [reply, stage_change, opt_out]
    steps:
      - id: received
        after: 0m
        channel: email
        template: application_received
"""
    )
    return folder / "cadences.yaml"


def test_sync_then_run_writes_notes_and_linkedin_tasks_back(
    cli, sandbox, config, database_url
) -> None:
    env = {**sandbox.env(), "OUTREACH_CONFIG": str(config)}
    synced = cli("sync", "--source", "activecampaign", "--now", NOW, env=env)
    assert synced.exit_code == 0, synced.output
    engine = make_engine(database_url)
    with engine.connect() as conn:
        stages = dict(
            conn.execute(
                select(CandidateRecord.stage, func.count())
                .where(CandidateRecord.source == "activecampaign")
                .group_by(CandidateRecord.stage)
            ).all()
        )
    engine.dispose()
    people = list(sandbox.activecampaign_people)
    assert sum(stages.values()) == PEOPLE
    assert stages == _count(p.stage for p in people)

    result = cli("run", "--now", NOW, env=env)
    assert result.exit_code == 0, result.output

    prospects = [p for p in people if p.stage == "prospect"]
    applicants = [p for p in people if p.stage == "applied"]
    assert prospects and applicants
    fake = sandbox.activecampaign
    tasked = [p for p in prospects if fake.tasks_for(fake.contact_id(p.index))]
    assert len(tasked) >= len(prospects) * 0.8
    for person in tasked:
        (task,) = fake.tasks_for(fake.contact_id(person.index))
        assert task["title"].startswith(f"LinkedIn: connect with {person.first_name}")
        assert task["assignee"] == str(RECRUITERS.index(person.recruiter) + 1)
        assert task["dealTasktype"] == "3"  # To-do
    noted = [p for p in applicants if fake.notes_for(fake.contact_id(p.index))]
    assert len(noted) >= len(applicants) * 0.8
    # A second run owes nothing: no note or task is written twice.
    notes, tasks = len(fake.notes), len(fake.tasks)
    again = cli("run", "--now", NOW, env=env)
    assert again.exit_code == 0, again.output
    assert (len(fake.notes), len(fake.tasks)) == (notes, tasks)


def _count(items) -> dict:
    out: dict = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return out


def test_a_second_sync_sees_a_deal_moved_in_between(cli, sandbox, database_url) -> None:
    env = sandbox.env()
    first = cli("sync", "--source", "activecampaign", "--now", NOW, env=env)
    assert first.exit_code == 0, first.output
    fake = sandbox.activecampaign
    person = next(p for p in sandbox.activecampaign_people if p.stage == "interview")
    contact = fake.contact_id(person.index)
    later = datetime(2026, 11, 26, 15, tzinfo=UTC)
    fake.move(person.index, "hired", at=datetime(2026, 11, 26, 9, tzinfo=UTC))
    sandbox.clock.set(later)  # type: ignore[attr-defined]
    second = cli("sync", "--source", "activecampaign", "--now", later.isoformat(), env=env)
    assert second.exit_code == 0, second.output
    engine = make_engine(database_url)
    with engine.connect() as conn:
        stage = conn.execute(
            select(CandidateRecord.stage).where(
                CandidateRecord.source == "activecampaign", CandidateRecord.external_id == contact
            )
        ).scalar_one()
    engine.dispose()
    assert stage == "hired"
    # The second run asked only for what changed: contacts since the first run, then deals.
    deal_reads = fake.requests_to("GET", "/api/3/deals")
    assert len(deal_reads) == 1 and "filters%5Bupdated_after%5D" in deal_reads[0].query
