"""Recruiter tasks: CRM completion seen at sync, engine-queue completion, stale reporting."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).parent / "engine"))
from engine_world import World

from connectors.base import Connector
from outreach.cadence import load_cadence_file
from outreach.paths import default_config_dir
from outreach.store.schema import Task
from outreach.tasks import complete_tasks, open_tasks, refresh_task_status
from outreach.writeback import process_write_backs

NY = ZoneInfo("America/New_York")


class TaskCrm(Connector):
    """A CRM with a task API whose recruiters complete what ``done`` names."""

    name = "hubspot"

    def __init__(self) -> None:
        self.created: list[str] = []
        self.done: set[str] = set()
        self.asked: list[list[str]] = []

    def write_note(self, ref, text):
        return None

    def create_task(self, task):
        self.created.append(f"crm-{len(self.created) + 1}")
        return self.created[-1]

    def task_status(self, external_ids):
        self.asked.append(list(external_ids))
        return {
            i: ("done" if i in self.done else "open") for i in external_ids if i in self.created
        }


def world(engine) -> World:
    config = load_cadence_file(default_config_dir() / "cadences.yaml")
    w = World(engine, config, datetime(2026, 11, 2, 9, 0, tzinfo=NY))
    w.add(
        {
            "source": "hubspot",
            "external_id": "h1",
            "first_name": "Cy",
            "email": "cy@example.com",
            "linkedin_url": "https://www.linkedin.com/in/cy",
            "stage": "lead",
            "owner_id": "71000001",
        },
        {
            "source": "greenhouse",
            "external_id": "g2",
            "first_name": "Di",
            "email": "di@example.com",
            "linkedin_url": "https://www.linkedin.com/in/di",
            "stage": "prospect",
            "owner_id": "4080",
        },
    )
    w.tick()
    w.tick(datetime(2026, 11, 5, 9, 0, tzinfo=NY))  # the LinkedIn steps, 3 days after the intro
    return w


def test_a_task_completed_in_the_crm_is_done_at_the_next_sync(engine) -> None:
    w = world(engine)
    crm = TaskCrm()
    process_write_backs(engine, {"hubspot": crm}, w.clock)
    assert crm.created == ["crm-1"]
    now = w.clock.now()
    assert refresh_task_status(engine, crm, now) == 0  # still open in the CRM
    crm.done.add("crm-1")
    assert refresh_task_status(engine, crm, now) == 1
    with engine.connect() as conn:
        hub = conn.execute(select(Task).where(Task.source == "hubspot")).one()
    assert hub.status == "done" and hub.completed_at == now
    assert refresh_task_status(engine, crm, now) == 0  # done tasks are not asked again
    assert len(crm.asked) == 2  # nothing open with a CRM id: the CRM is not asked


def test_engine_queue_tasks_are_listed_completed_and_flagged_stale(engine) -> None:
    w = world(engine)
    now = w.clock.now()
    tasks = open_tasks(engine, now=now, stale_after=timedelta(days=7))
    assert {t.source for t in tasks} == {"hubspot", "greenhouse"}
    assert not any(t.stale for t in tasks)
    later = now + timedelta(days=8)
    stale = open_tasks(engine, now=later, stale_after=timedelta(days=7))
    assert all(t.stale for t in stale)
    only = open_tasks(engine, now=later, owner="4080", stale_after=timedelta(days=7))
    assert [t.candidate for t in only] == ["Di"]
    assert complete_tasks(engine, [only[0].id], later) == 1
    assert complete_tasks(engine, [only[0].id], later) == 0
    assert [t.source for t in open_tasks(engine, now=later, stale_after=timedelta(days=7))] == [
        "hubspot"
    ]


def test_tasks_command_lists_completes_and_reports_stale(cli, engine) -> None:
    w = world(engine)
    later = (w.clock.now() + timedelta(days=10)).isoformat()
    listed = cli("tasks", "--now", later, "--format", "json")
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert len(rows) == 2 and all(r["stale"] for r in rows)
    assert "@" not in listed.output  # names only, no addresses
    table = cli("tasks", "--now", later, "--owner", "4080")
    assert "1 open task(s), 1 open longer than 7d" in table.output
    gh = next(r for r in rows if r["source"] == "greenhouse")
    done = cli("tasks", "--now", later, "--done", str(gh["id"]), "--format", "json")
    assert done.exit_code == 0
    assert "1 task(s) marked done" in done.output
    bad = cli("tasks", "--stale-after", "soon")
    assert bad.exit_code == 2 and "--stale-after" in bad.output
