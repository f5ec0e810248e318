"""`outreach sync` and `outreach run` against the three CRM fakes, through the real connectors.

Asserts on what the fakes hold and received: every seeded record arrives once, a person in
two CRMs becomes one person, and LinkedIn steps become HubSpot tasks associated to the
right contact and owner (notes on Greenhouse and Lever, which have no task API).
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from outreach.clock import FixedClock
from outreach.paths import default_config_dir
from outreach.sandbox.suite import Sandbox
from outreach.store import make_engine
from outreach.store.schema import CandidateRecord, Person, Task

NOW = "2026-11-25T15:00:00+00:00"  # a Wednesday, 10:00 in New York
PEOPLE = 240


@pytest.fixture
def sandbox():
    with Sandbox(PEOPLE, clock=FixedClock(datetime(2026, 11, 25, 15, tzinfo=UTC))) as running:
        yield running


@pytest.fixture
def linkedin_config(tmp_path: Path) -> Path:
    """The default policy and stage map with one cadence: a LinkedIn step for prospects."""
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
"""
    )
    return folder / "cadences.yaml"


def test_sync_reads_every_crm_and_merges_people_across_them(cli, sandbox, database_url) -> None:
    result = cli("sync", "--now", NOW, env=sandbox.env())
    assert result.exit_code == 0, result.output
    engine = make_engine(database_url)
    with engine.connect() as conn:
        per_source = dict(
            conn.execute(
                select(CandidateRecord.source, func.count()).group_by(CandidateRecord.source)
            ).all()
        )
        people = conn.execute(select(func.count()).select_from(Person)).scalar_one()
    engine.dispose()
    expected = {
        crm: len(sandbox.in_crm(crm)) for crm in ("greenhouse", "lever", "hubspot", "bullhorn")
    }
    assert per_source == expected
    assert people == PEOPLE  # people in two CRMs merged by email
    assert sum(expected.values()) > PEOPLE

    again = cli("sync", "--now", NOW, env=sandbox.env())
    assert again.exit_code == 0, again.output
    assert "stage 'other' is not mapped" in result.output  # HubSpot's unmapped value, said


def test_linkedin_steps_become_tasks_on_the_right_contact_and_owner(
    cli, sandbox, linkedin_config, database_url
) -> None:
    env = {**sandbox.env(), "OUTREACH_CONFIG": str(linkedin_config)}
    synced = cli("sync", "--now", NOW, env=env)
    assert synced.exit_code == 0, synced.output
    result = cli("run", "--now", NOW, env=env)
    assert result.exit_code == 0, result.output

    prospects = [p for p in sandbox.in_crm("hubspot") if p.stage == "prospect"]
    assert prospects
    tasked = 0
    for person in prospects:
        contact = sandbox.hubspot.contact_id(person.index)
        tasks = sandbox.hubspot.tasks_for(contact)
        if not tasks:
            continue  # the same person reached through another CRM first, or capped
        tasked += 1
        (task,) = tasks
        props = task["properties"]
        assert props["hubspot_owner_id"] == person.recruiter.hubspot_id
        assert props["hs_task_subject"].startswith(f"LinkedIn: connect with {person.first_name}")
        if person.linkedin_url:
            assert person.linkedin_url in props["hs_task_body"]
        assert contact in [str(c) for c in task["contact_ids"]]
    assert tasked >= len(prospects) * 0.8

    greenhouse_prospects = [p for p in sandbox.in_crm("greenhouse") if p.stage == "prospect"]
    noted = [
        p for p in greenhouse_prospects if sandbox.greenhouse.notes_for(sandbox.greenhouse_id(p))
    ]
    assert noted, "Greenhouse has no task API: the task is logged as a note"
    assert all(
        n["body"].startswith("[Task, due ")
        for p in noted
        for n in sandbox.greenhouse.notes_for(sandbox.greenhouse_id(p))
    )

    bullhorn_prospects = [p for p in sandbox.in_crm("bullhorn") if p.stage == "prospect"]
    assert bullhorn_prospects
    bullhorn_tasked = 0
    for person in bullhorn_prospects:
        tasks = sandbox.bullhorn.tasks_for(sandbox.bullhorn.candidate_id(person.index))
        if not tasks:
            continue  # reached through another CRM first, or capped
        bullhorn_tasked += 1
        (task,) = tasks
        assert task["owner"] == {"id": person.recruiter.bullhorn_id}
        assert task["subject"].startswith(f"LinkedIn: connect with {person.first_name}")
    assert bullhorn_tasked >= len(bullhorn_prospects) * 0.8

    # A recruiter completes one in Bullhorn: the next sync marks the engine's task done.
    done_id = next(iter(sandbox.bullhorn.tasks))
    sandbox.bullhorn.tasks[done_id]["isCompleted"] = True
    again = cli("sync", "--now", NOW, env=env)
    assert again.exit_code == 0, again.output
    engine = make_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(
            select(Task.external_id, Task.status).where(Task.source == "bullhorn")
        ).all()
    engine.dispose()
    states = dict(rows)
    assert states[str(done_id)] == "done"
    assert sum(s == "open" for s in states.values()) == len(states) - 1
