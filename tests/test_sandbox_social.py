"""X and Facebook steps end to end: `outreach sync` reads each CRM fake's profiles through the
real connectors, `outreach run` makes recruiter tasks, and write-back lands them in every CRM
(HubSpot, Bullhorn and ActiveCampaign tasks; Greenhouse and Lever notes) titled by network."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from outreach.clock import FixedClock
from outreach.paths import default_config_dir
from outreach.sandbox.seed import SeedPerson
from outreach.sandbox.suite import Sandbox
from outreach.store import make_engine
from outreach.store.schema import CandidateRecord, Task

NOW = "2026-11-25T15:00:00+00:00"  # a Wednesday, 10:00 in New York


@pytest.fixture
def sandbox():
    clock = FixedClock(datetime(2026, 11, 25, 15, tzinfo=UTC))
    with Sandbox(240, clock=clock, activecampaign_people=60) as running:
        yield running


@pytest.fixture
def social_config(tmp_path: Path) -> Path:
    """The default policy and stage map; prospects get an X step that falls back to Facebook."""
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
      - id: nudge
        after: 0m
        channel: x
        fallback: facebook
        template: social_follow_up
"""
    )
    return folder / "cadences.yaml"


def expected(person: SeedPerson) -> tuple[str, str] | None:
    """The network an X-then-Facebook step uses for ``person`` and the profile it shows."""
    if person.x_handle:
        return "X", f"https://x.com/{person.x_handle}"
    if person.facebook_url:
        return "Facebook", person.facebook_url
    return None


def test_x_and_facebook_steps_become_tasks_in_every_crm(
    cli, sandbox, social_config, database_url
) -> None:
    env = {**sandbox.env(), "OUTREACH_CONFIG": str(social_config)}
    synced = cli("sync", "--now", NOW, env=env)
    assert synced.exit_code == 0, synced.output
    engine = make_engine(database_url)
    with engine.connect() as conn:
        profiles = {
            (r.source, r.external_id): (r.x_url, r.facebook_url)
            for r in conn.execute(select(CandidateRecord))
        }
    # Every CRM's profiles arrived, canonical.
    hubspot = sandbox.hubspot
    for person in sandbox.in_crm("hubspot"):
        x_url, facebook_url = profiles[("hubspot", hubspot.contact_id(person.index))]
        assert x_url == (f"https://x.com/{person.x_handle}" if person.x_handle else None)
        assert facebook_url is None  # HubSpot has no Facebook property for contacts
    for person in sandbox.in_crm("lever"):
        x_url, facebook_url = profiles[("lever", sandbox.lever.opportunity_id(person.index))]
        assert facebook_url == person.facebook_url
        assert x_url == (f"https://x.com/{person.x_handle}" if person.x_handle else None)

    result = cli("run", "--now", NOW, env=env)
    assert result.exit_code == 0, result.output

    networks = {"X": 0, "Facebook": 0}
    checked = 0
    # HubSpot (no Facebook profile): X tasks on the contact, for its owner.
    for person in sandbox.in_crm("hubspot"):
        if person.stage != "prospect" or not person.x_handle:
            continue
        tasks = hubspot.tasks_for(hubspot.contact_id(person.index))
        if not tasks:
            continue  # reached through another CRM first, or capped
        (task,) = tasks
        props = task["properties"]
        assert props["hs_task_subject"].startswith(f"X: follow up with {person.first_name}")
        assert f"https://x.com/{person.x_handle}" in props["hs_task_body"]
        assert props["hubspot_owner_id"] == person.recruiter.hubspot_id
        networks["X"] += 1
        checked += 1
    # Bullhorn: tasks on the candidate, X or Facebook as the person has them.
    bullhorn = sandbox.bullhorn
    for person in sandbox.in_crm("bullhorn"):
        want = expected(person)
        if person.stage != "prospect" or want is None:
            continue
        tasks = bullhorn.tasks_for(bullhorn.candidate_id(person.index))
        if not tasks:
            continue
        (task,) = tasks
        assert task["subject"].startswith(f"{want[0]}: follow up with {person.first_name}")
        assert want[1] in task["description"]
        networks[want[0]] += 1
        checked += 1
    # Greenhouse and Lever have no task API: the task is a note.
    for person in sandbox.in_crm("greenhouse"):
        want = expected(person)
        if person.stage != "prospect" or want is None:
            continue
        notes = sandbox.greenhouse.notes_for(sandbox.greenhouse_id(person))
        if notes:
            assert notes[0]["body"].startswith("[Task, due ")
            assert f"{want[0]}: follow up with {person.first_name}" in notes[0]["body"]
            networks[want[0]] += 1
            checked += 1
    for person in sandbox.in_crm("lever"):
        want = expected(person)
        if person.stage != "prospect" or want is None:
            continue
        notes = sandbox.lever.notes_for(sandbox.lever.opportunity_id(person.index))
        if notes:
            assert f"{want[0]}: follow up with {person.first_name}" in json.dumps(notes[0])
            networks[want[0]] += 1
            checked += 1
    # ActiveCampaign: contact tasks.
    ac = sandbox.activecampaign
    for person in sandbox.activecampaign_people:
        want = expected(person)
        if person.stage != "prospect" or want is None:
            continue
        tasks = ac.tasks_for(ac.contact_id(person.index))
        if tasks:
            (task,) = tasks
            assert task["title"].startswith(f"{want[0]}: follow up with {person.first_name}")
            networks[want[0]] += 1
            checked += 1
    assert networks["X"] >= 5 and networks["Facebook"] >= 2, networks

    with engine.connect() as conn:
        kinds = [row.kind for row in conn.execute(select(Task))]
    engine.dispose()
    assert kinds.count("x") + kinds.count("facebook") >= checked
    assert "manual" in kinds  # prospects with neither profile: the recruiter is told why

    listed = cli("tasks", "--now", NOW, "--format", "json", env=env)
    assert listed.exit_code == 0, listed.output
    assert {"x", "facebook"} <= {row["kind"] for row in json.loads(listed.output)}

    # A second run owes nothing: no task is written twice.
    before = (len(hubspot.tasks), len(bullhorn.tasks), len(ac.tasks))
    again = cli("run", "--now", NOW, env=env)
    assert again.exit_code == 0, again.output
    assert (len(hubspot.tasks), len(bullhorn.tasks), len(ac.tasks)) == before
