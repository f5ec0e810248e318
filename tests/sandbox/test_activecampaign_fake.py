"""The real ActiveCampaign connector against the ActiveCampaign sandbox fake, over loopback HTTP."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from connectors.activecampaign import ActiveCampaign
from connectors.base import NoteRef, TaskSpec
from outreach.cadence import CadenceConfig, load_cadence_file
from outreach.clock import FixedClock, ManualTimer
from outreach.errors import ConfigError
from outreach.paths import default_config_dir
from outreach.records import normalize_record
from outreach.sandbox.activecampaign import FakeActiveCampaign
from outreach.sandbox.base import RateWindow, SandboxServer
from outreach.sandbox.seed import Population

TOKEN = "sandbox-activecampaign-token"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
PEOPLE = list(Population(250))


@pytest.fixture(scope="module")
def config() -> CadenceConfig:
    return load_cadence_file(default_config_dir() / "cadences.yaml")


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[SandboxServer, dict]]:
    """One loopback server for the module; each test plugs in its own fake."""
    current: dict = {}

    def app(environ, start_response):
        return current["fake"](environ, start_response)

    with SandboxServer(app) as running:
        yield running, current


@pytest.fixture
def fake(server) -> FakeActiveCampaign:
    # No rate window here (ManualTimer pacing sends at full speed); one test turns it on.
    fake = FakeActiveCampaign(PEOPLE, clock=FixedClock(NOW), rate=None)
    server[1]["fake"] = fake
    return fake


@pytest.fixture
def url(server, fake) -> str:
    return server[0].url


def connector(url: str, *, token: str = TOKEN, now: datetime = NOW) -> ActiveCampaign:
    timer = ManualTimer()
    return ActiveCampaign(
        url, token, clock=FixedClock(now), sleep=timer.sleep, monotonic=timer.monotonic
    )


def canonical(record: dict, config: CadenceConfig) -> str | None:
    return normalize_record(
        record,
        where="activecampaign",
        default_region="US",
        canonical_stage=config.canonical_stage,
        strict_contacts=False,
    ).stage


def test_a_full_sync_reads_every_contact_once_with_its_stage(fake, url, config) -> None:
    ac = connector(url)
    pages = list(ac.pages(None))
    records = [r for p in pages for r in p.records]
    assert len(pages) == 3 and pages[-1].done and not any(p.problems for p in pages)
    assert sorted(int(r["external_id"]) for r in records) == list(range(1, 251))
    by_id = {r["external_id"]: r for r in records}
    for person in PEOPLE:
        record = by_id[fake.contact_id(person.index)]
        assert record["email"] == person.email and canonical(record, config) == person.stage
        assert record["tags"] == [person.department] and record["job_title"] == person.job_title
        assert record.get("linkedin_url") == person.linkedin_url
    assert Counter(canonical(r, config) for r in records) == Counter(p.stage for p in PEOPLE)
    paths = [r.path for r in fake.requests]
    assert paths.count("/api/3/dealStages") == 1 and paths.count("/api/3/tags") == 1
    assert "/api/3/deals" not in paths  # a first run reads no deal changes


def test_an_incremental_read_returns_only_what_moved(fake, url, config) -> None:
    (*_, last) = connector(url).pages(None)
    later = NOW + timedelta(hours=6)
    fake.move(7, "offer", at=later - timedelta(hours=1))
    fake.move(9, "hired", at=later - timedelta(hours=1))
    pages = list(connector(url, now=later).pages(last.cursor))
    records = [r for p in pages for r in p.records]
    assert {r["external_id"] for r in records} == {fake.contact_id(7), fake.contact_id(9)}
    stages = {r["external_id"]: canonical(r, config) for r in records}
    assert stages == {fake.contact_id(7): "offer", fake.contact_id(9): "hired"}
    assert json.loads(pages[-1].cursor) == {"since": later.isoformat()}
    # Nothing moved since: a run reads one empty page of contacts and one of deals.
    assert [len(p.records) for p in connector(url, now=later).pages(pages[-1].cursor)] == [0, 0]


def test_a_killed_run_resumes_without_losing_a_contact(fake, url) -> None:
    first = connector(url).pages(None)
    page = next(first)
    resumed = list(connector(url).pages(page.cursor))
    ids = [r["external_id"] for r in page.records] + [
        r["external_id"] for p in resumed for r in p.records
    ]
    assert sorted(map(int, ids)) == list(range(1, 251))


def test_notes_and_tasks_are_written_on_the_contact(fake, url) -> None:
    ac = connector(url)
    contact = fake.contact_id(4)
    note_id = ac.write_note(NoteRef(contact), "Sent: interview thanks")
    task_id = ac.create_task(
        TaskSpec(contact, "3", "LinkedIn: connect with Ada", "Say hi", NOW + timedelta(days=1))
    )
    (note,) = fake.notes_for(contact)
    (task,) = fake.tasks_for(contact)
    assert note["id"] == note_id and note["note"] == "Sent: interview thanks"
    assert task["id"] == task_id and task["assignee"] == "3" and task["dealTasktype"] == "3"
    assert task["owner"] == {"type": "contact", "id": contact}
    assert ac.task_status([task_id, "999"]) == {task_id: "open"}
    fake.tasks[int(task_id)]["status"] = 1  # the recruiter ticks it off
    assert ac.task_status([task_id]) == {task_id: "done"}


def test_a_wrong_token_is_a_config_error(url) -> None:
    with pytest.raises(ConfigError, match="ACTIVECAMPAIGN_API_TOKEN") as info:
        list(connector(url, token="wrong-token").pages(None))
    assert "wrong-token" not in str(info.value)


def test_a_malformed_contact_is_reported_and_the_others_arrive(fake, url) -> None:
    fake.malform(5)
    records, problems = [], []
    for page in connector(url).pages(None):
        records += page.records
        problems += page.problems
    assert len(records) == 249
    assert [p[0] for p in problems] == [fake.contact_id(5)]


def test_the_fake_checks_auth_paging_include_and_writes(fake, url) -> None:
    api = f"{url}/api/3"
    head = {"Api-Token": TOKEN}
    assert httpx.get(f"{api}/contacts").status_code == 403
    capped = httpx.get(f"{api}/contacts", params={"limit": 500}, headers=head).json()
    assert len(capped["contacts"]) == 100 and capped["meta"]["total"] == "250"
    assert httpx.get(f"{api}/contacts", params={"limit": "x"}, headers=head).status_code == 422
    assert (
        httpx.get(f"{api}/contacts", params={"include": "secrets"}, headers=head).status_code == 400
    )
    by_ids = httpx.get(f"{api}/contacts", params=[("ids[]", "3"), ("ids[]", "5")], headers=head)
    assert [c["id"] for c in by_ids.json()["contacts"]] == ["3", "5"]
    # A time without an offset is the account's (UTC-5): 07:20 there is 12:20 UTC.
    fake.move(0, "interview", at=NOW + timedelta(minutes=30))

    def changed_after(naive: str) -> list[str]:
        params = {"filters[updated_after]": naive}
        return [
            d["contact"]
            for d in httpx.get(f"{api}/deals", params=params, headers=head).json()["deals"]
        ]

    assert changed_after("2026-11-25T07:20:00") == [fake.contact_id(0)]
    assert changed_after("2026-11-25T07:40:00") == []
    note = {"note": {"note": "", "relid": "1", "reltype": "Subscriber"}}
    assert httpx.post(f"{api}/notes", json=note, headers=head).status_code == 422
    note["note"].update(note="hi", relid="9999")
    assert httpx.post(f"{api}/notes", json=note, headers=head).status_code == 404
    task = {
        "dealTask": {
            "relid": "1",
            "ownerType": "contact",
            "dealTasktype": "42",
            "duedate": NOW.isoformat(),
        }
    }
    assert httpx.post(f"{api}/dealTasks", json=task, headers=head).status_code == 422
    task["dealTask"]["dealTasktype"] = "3"
    task["dealTask"]["assignee"] = "77"
    assert httpx.post(f"{api}/dealTasks", json=task, headers=head).status_code == 422
    assert not fake.notes and not fake.tasks


def test_the_fake_rate_window_answers_429s_and_the_paced_connector_finishes(server) -> None:
    fake = FakeActiveCampaign(PEOPLE[:150], clock=FixedClock(NOW), rate=RateWindow(5, 1.0))
    server[1]["fake"] = fake
    api = f"{server[0].url}/api/3"
    answers = [httpx.get(f"{api}/tags", headers={"Api-Token": TOKEN}) for _ in range(7)]
    limited = [a for a in answers if a.status_code == 429]
    assert limited and all(int(a.headers["Retry-After"]) >= 1 for a in limited)
    assert answers[0].headers["RateLimit-Limit"] == "5"
    assert "RateLimit-Remaining" in answers[0].headers
    # The real connector, paced by real time, reads everything (retrying any 429).
    records = [
        r
        for p in ActiveCampaign(server[0].url, TOKEN, clock=FixedClock(NOW)).pages(None)
        for r in p.records
    ]
    assert len(records) == 150
