"""The real HubSpot connector against the HubSpot sandbox fake, over loopback HTTP."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs

import httpx
import pytest

from connectors.base import NoteRef, TaskSpec
from connectors.hubspot import HubSpot
from outreach.cadence import CadenceConfig, load_cadence_file
from outreach.clock import FixedClock, ManualTimer
from outreach.errors import ConfigError
from outreach.paths import default_config_dir
from outreach.records import normalize_record
from outreach.sandbox.base import RateWindow, SandboxServer
from outreach.sandbox.hubspot import LIFECYCLE, FakeHubSpot
from outreach.sandbox.seed import RECRUITERS, Population

TOKEN = "sandbox-hubspot-token"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
PEOPLE = list(Population(300))


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
def plug(server):
    """Serve ``fake`` on the module's server; returns its base URL."""

    def plug(fake: FakeHubSpot) -> str:
        server[1]["fake"] = fake
        return server[0].url

    return plug


@pytest.fixture
def fake(plug) -> FakeHubSpot:
    return FakeHubSpot(PEOPLE, clock=FixedClock(NOW))


@pytest.fixture
def url(plug, fake: FakeHubSpot) -> str:
    return plug(fake)


def connector(
    url: str, *, token: str = TOKEN, now: datetime = NOW, timer: ManualTimer | None = None
) -> HubSpot:
    timer = timer or ManualTimer()
    return HubSpot(
        token, base_url=url, clock=FixedClock(now), sleep=timer.sleep, monotonic=timer.monotonic
    )


def read(hubspot: HubSpot, cursor: str | None = None, *, full: bool = False):
    pages = list(hubspot.pages(cursor, full=full))
    ids = [r["external_id"] for p in pages for r in p.records]
    return pages, ids


def searches(fake: FakeHubSpot) -> list[dict]:
    return [r.json() for r in fake.requests_to("POST", "/contacts/search")]


def test_a_full_sync_reads_every_contact_once(fake, url, config) -> None:
    pages, ids = read(connector(url))
    assert len(pages) == 3 and pages[-1].done
    assert sorted(ids) == sorted(fake.contact_id(p.index) for p in PEOPLE)
    assert len(set(ids)) == len(ids) == 300
    assert {r.status for r in fake.requests} == {200}
    assert all(parse_qs(r.query)["limit"] == ["100"] for r in fake.requests)
    stages: Counter[str | None] = Counter()
    zones = 0
    for page in pages:
        for raw in page.records:
            record = normalize_record(
                raw,
                where="hubspot",
                default_region="US",
                canonical_stage=config.canonical_stage,
                strict_contacts=False,
            )
            stages[record.source_stage if record.stage is None else record.stage] += 1
            zones += record.timezone is not None
            assert record.owner_id in {p.recruiter.hubspot_id for p in PEOPLE}
    # Every lifecycle stage maps except "other" (rejected people), left unmapped on purpose.
    assert set(stages) == {"prospect", "applied", "screening", "hired", "other"}
    assert stages["other"] == sum(p.stage == "rejected" for p in PEOPLE)
    assert zones == sum(p.phone_e164 is not None for p in PEOPLE)  # from hs_timezone


def test_an_incremental_sync_finds_moved_contacts_by_search(fake, url) -> None:
    pages, _ = read(connector(url))
    cursor = pages[-1].cursor
    moved = [fake.contact_id(i) for i in (4, 50, 299)]
    fake.move(4, "interview", at=NOW + timedelta(hours=1))
    fake.move(moved[1], "hired", at=NOW + timedelta(hours=1, seconds=1))
    fake.move(299, "offer", at=NOW + timedelta(hours=1, seconds=2))
    pages, ids = read(connector(url, now=NOW + timedelta(hours=2)), cursor)
    assert ids == moved  # oldest change first
    stages = {r["external_id"]: r["stage"] for p in pages for r in p.records}
    assert stages == {moved[0]: "opportunity", moved[1]: "customer", moved[2]: "opportunity"}
    (body,) = searches(fake)
    assert body["filterGroups"][0]["filters"][0]["value"] == str(
        int((NOW - timedelta(minutes=5)).timestamp() * 1000)
    )
    assert json.loads(pages[-1].cursor) == {"since": (NOW + timedelta(hours=2)).isoformat()}


def test_a_search_past_the_cap_reads_every_change_once(plug) -> None:
    people = Population(1_300)
    fake = FakeHubSpot(people, clock=FixedClock(NOW), search_cap=500)
    url = plug(fake)
    changed = NOW + timedelta(hours=1)
    for i in range(len(people)):
        # 600 people share one millisecond (more than one query may return), the rest
        # change two to a millisecond.
        offset = 0 if 300 <= i < 900 else i // 2 + 1
        fake.move(i, "screening", at=changed + timedelta(milliseconds=offset))
    hubspot = connector(url, now=NOW + timedelta(hours=2))
    pages, ids = read(hubspot, json.dumps({"since": NOW.isoformat()}))
    assert len(ids) == len(set(ids)) == 1_300
    assert {r.status for r in fake.requests} == {200}
    assert not any("after" in b for b in searches(fake))
    assert any(b["sorts"][0]["propertyName"] == "hs_object_id" for b in searches(fake))
    assert pages[-1].done and not any(p.problems for p in pages)


class EditedMidRun(FakeHubSpot):
    """Edits a contact the connector has already read, right after the first search page."""

    def __init__(self, *args, edit: int, at: datetime, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.edit, self.edit_at, self.searched = edit, at, 0

    def search_contacts(self, request):
        response = super().search_contacts(request)
        self.searched += 1
        if self.searched == 1:
            self.move(self.edit, "interview", at=self.edit_at)
        return response


def test_a_contact_edited_mid_search_hides_no_other_contact(plug) -> None:
    people = Population(450)
    changed = NOW + timedelta(hours=1)
    fake = EditedMidRun(people, clock=FixedClock(NOW), edit=0, at=changed + timedelta(minutes=5))
    url = plug(fake)
    for i in range(len(people)):
        fake.move(i, "screening", at=changed + timedelta(milliseconds=i))
    pages, ids = read(
        connector(url, now=NOW + timedelta(hours=2)), json.dumps({"since": NOW.isoformat()})
    )
    assert set(ids) == {fake.contact_id(i) for i in range(len(people))}
    # The edited contact comes back once more with its new stage; nobody else is lost.
    assert ids.count(fake.contact_id(0)) == 2 and len(ids) == len(people) + 1
    last = [r for p in pages for r in p.records if r["external_id"] == fake.contact_id(0)][-1]
    assert last["stage"] == "opportunity"


def test_a_search_past_the_real_cap_reads_every_change_once(plug) -> None:
    people = Population(10_300)
    fake = FakeHubSpot(people, clock=FixedClock(NOW))
    url = plug(fake)
    for i in range(len(people)):
        fake.move(i, "applied", at=NOW + timedelta(hours=1, milliseconds=i // 4))
    _, ids = read(
        connector(url, now=NOW + timedelta(hours=2)), json.dumps({"since": NOW.isoformat()})
    )
    assert len(ids) == len(set(ids)) == 10_300
    assert {r.status for r in fake.requests} == {200}
    # Each page is a query of its own: none pages with ``after``, so none nears the cap.
    assert not any("after" in b for b in searches(fake))


def test_the_fake_refuses_to_page_past_its_cap(fake, url) -> None:
    body = {"limit": 200, "after": "9900"}
    answer = httpx.post(
        f"{url}/crm/v3/objects/contacts/search",
        json=body,
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert answer.status_code == 400
    error = answer.json()
    assert error["status"] == "error" and error["category"] == "VALIDATION_ERROR"
    assert error["correlationId"] and "10000" in error["message"]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "fragment"),
    [
        ("POST", "/crm/v3/objects/contacts/search", {"json": {"limit": 201}}, "between 1 and 200"),
        ("GET", "/crm/v3/objects/contacts", {"params": {"limit": 101}}, "between 1 and 100"),
        (
            "POST",
            "/crm/v3/objects/contacts/search",
            {"json": {"filterGroups": [{"filters": [{"propertyName": "x", "operator": "LIKE"}]}]}},
            "operator",
        ),
        (
            "POST",
            "/crm/v3/objects/tasks",
            {"json": {"properties": {"hs_task_subject": "no due date"}}},
            "hs_timestamp",
        ),
        (
            "POST",
            "/crm/v3/objects/tasks",
            {
                "json": {
                    "properties": {"hs_timestamp": "1790000000000"},
                    "associations": [
                        {
                            "to": {"id": "42"},
                            "types": [
                                {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 204}
                            ],
                        }
                    ],
                }
            },
            "no contact 42",
        ),
        (
            "POST",
            "/crm/v3/objects/notes",
            {
                "json": {
                    "properties": {"hs_timestamp": "1790000000000", "hs_note_body": "x" * 65_537}
                }
            },
            "65536",
        ),
    ],
)
def test_the_fake_validates_like_hubspot(url, method, path, kwargs, fragment) -> None:
    answer = httpx.request(
        method, url + path, headers={"Authorization": f"Bearer {TOKEN}"}, **kwargs
    )
    assert answer.status_code == 400
    assert fragment in answer.json()["message"]


def test_a_linkedin_task_lands_on_the_contact_with_its_owner(fake, url) -> None:
    person = PEOPLE[7]
    contact_id = fake.contact_id(person.index)
    owner = person.recruiter.hubspot_id
    due = datetime(2026, 11, 27, 14, 30, tzinfo=UTC)
    task_id = connector(url).create_task(
        TaskSpec(
            contact_id,
            owner,
            f"Connect with {person.name} on LinkedIn",
            f"Send a connection request: {person.linkedin_url or 'search by name'}",
            due,
        )
    )
    (task,) = fake.tasks_for(contact_id)
    assert task["id"] == task_id and task["contact_ids"] == [contact_id]
    assert task["owner_id"] == owner
    props = task["properties"]
    assert props["hs_task_subject"] == f"Connect with {person.name} on LinkedIn"
    assert props["hs_task_body"].startswith("Send a connection request")
    assert props["hs_timestamp"] == "2026-11-27T14:30:00.000Z"
    assert props["hs_task_status"] == "NOT_STARTED" and props["hs_task_type"] == "TODO"
    (logged,) = fake.requests_to("POST", "/crm/v3/objects/tasks")
    assert logged.status == 201


def test_task_states_follow_the_owner(fake, url) -> None:
    hubspot = connector(url)
    contact_id = fake.contact_id(3)
    first, second = (
        hubspot.create_task(TaskSpec(contact_id, None, title, "b", NOW)) for title in ("a", "b")
    )
    assert first and second
    assert hubspot.task_status([first, second]) == {first: "open", second: "open"}
    fake.complete_task(first)
    assert hubspot.task_status([first, second, "999"]) == {first: "done", second: "open"}
    assert fake.requests_to("POST", "/batch/read")[-1].status == 207  # 999 is unknown


def test_a_note_is_readable_back(fake, url) -> None:
    hubspot = connector(url)
    contact_id = fake.contact_id(11)
    note_id = hubspot.write_note(NoteRef(contact_id), "Email 'Hello' sent by the outreach engine")
    (note,) = fake.notes_for(contact_id)
    assert note["id"] == note_id
    assert note["properties"]["hs_timestamp"] == "2026-11-25T12:00:00.000Z"
    answer = hubspot.client.get(
        f"/crm/v3/objects/notes/{note_id}",
        params={"properties": "hs_note_body", "associations": "contacts"},
    ).json()
    assert answer["properties"] == {"hs_note_body": "Email 'Hello' sent by the outreach engine"}
    assert answer["associations"]["contacts"]["results"][0]["id"] == contact_id


def test_an_injected_429_is_retried(fake, url) -> None:
    fake.faults.rate_limited(2)
    hubspot = connector(url)
    _, ids = read(hubspot)
    assert len(ids) == 300 and fake.faults.injected == {"429": 2}
    assert hubspot.client.retries == 2


def test_rate_windows_answer_with_hubspot_headers_and_bodies(plug) -> None:
    timer = ManualTimer()
    fake = FakeHubSpot(
        PEOPLE[:5],
        clock=FixedClock(NOW),
        rate=RateWindow(190, 10.0, monotonic=timer.monotonic),
        search_rate=RateWindow(4, 1.0, monotonic=timer.monotonic),
    )
    url = plug(fake)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    answers = [
        httpx.post(f"{url}/crm/v3/objects/contacts/search", json={}, headers=headers)
        for _ in range(5)
    ]
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 429]
    assert answers[0].headers["X-HubSpot-RateLimit-Max"] == "190"
    assert answers[0].headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
    assert answers[1].headers["X-HubSpot-RateLimit-Remaining"] == "188"
    body = answers[4].json()
    assert body["errorType"] == "RATE_LIMIT" and body["policyName"] == "SECONDLY"
    timer.sleep(1.0)
    again = httpx.post(f"{url}/crm/v3/objects/contacts/search", json={}, headers=headers)
    assert again.status_code == 200


def test_the_connector_keeps_under_both_windows(plug) -> None:
    # The fake meters with the connector's own manual clock: pacing is checked, not slept.
    timer = ManualTimer()
    people = Population(2_000)
    fake = FakeHubSpot(
        people,
        clock=FixedClock(NOW),
        rate=RateWindow(100, 10.0, monotonic=timer.monotonic),
        search_rate=RateWindow(4, 1.0, monotonic=timer.monotonic),
    )
    url = plug(fake)
    for i in range(len(people)):
        fake.move(i, "screening", at=NOW + timedelta(hours=1, seconds=i))
    hubspot = connector(url, now=NOW + timedelta(hours=2), timer=timer)
    _, ids = read(hubspot, json.dumps({"since": NOW.isoformat()}))
    assert len(set(ids)) == 2_000
    assert fake.search_rate is not None and fake.search_rate.rejected == 0
    assert fake.rate is not None and fake.rate.rejected == 0
    # 200 a page, each query re-reading the last instant of the one before.
    assert hubspot.client.retries == 0 and len(searches(fake)) == 11


def test_a_wrong_token_is_a_config_error(url) -> None:
    with pytest.raises(ConfigError, match="HUBSPOT_ACCESS_TOKEN") as caught:
        read(connector(url, token="pat-wrong-token"))
    assert "pat-wrong-token" not in str(caught.value)


def test_the_401_body_is_hubspots(url) -> None:
    answer = httpx.get(f"{url}/crm/v3/objects/contacts")
    assert answer.status_code == 401
    assert answer.json()["category"] == "INVALID_AUTHENTICATION"
    assert answer.json()["message"].startswith("Authentication credentials not found")


def test_a_malformed_contact_is_reported_and_the_rest_read(fake, url) -> None:
    bad = fake.contact_id(20)
    fake.malform(bad, at=NOW + timedelta(hours=1))
    fake.move(21, "interview", at=NOW + timedelta(hours=1, seconds=1))
    pages, ids = read(connector(url))
    assert len(ids) == 299 and bad not in ids
    problems = [problem for page in pages for problem in page.problems]
    assert [source for source, _ in problems] == [bad]
    pages, ids = read(
        connector(url, now=NOW + timedelta(hours=2)), json.dumps({"since": NOW.isoformat()})
    )
    assert ids == [fake.contact_id(21)]
    assert [source for page in pages for source, _ in page.problems] == [bad]


def test_the_fakes_other_routes(fake, url) -> None:
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"})
    owners = client.get("/crm/v3/owners").json()["results"]
    assert {o["id"] for o in owners} == {r.hubspot_id for r in RECRUITERS}
    assert {"id", "email", "firstName", "lastName"} <= set(owners[0])
    person = PEOPLE[5]
    one = client.get(
        f"/crm/v3/objects/contacts/{fake.contact_id(person.index)}",
        params=[("properties", "email"), ("properties", "lifecyclestage,no_such_property")],
    ).json()
    assert one["properties"] == {"email": person.email, "lifecyclestage": LIFECYCLE[person.stage]}
    assert client.get("/crm/v3/objects/contacts/1").status_code == 404
    found = client.post(
        "/crm/v3/objects/contacts/search",
        json={
            "filterGroups": [
                {
                    "filters": [
                        {"propertyName": "email", "operator": "EQ", "value": person.email.upper()}
                    ]
                },
                {
                    "filters": [
                        {
                            "propertyName": "hs_object_id",
                            "operator": "IN",
                            "values": [fake.contact_id(9)],
                        }
                    ]
                },
            ],
            "sorts": [{"propertyName": "hs_object_id", "direction": "DESCENDING"}],
            "properties": ["email"],
        },
    ).json()
    assert [r["id"] for r in found["results"]] == [fake.contact_id(9), fake.contact_id(5)]
    assert found["total"] == 2 and "paging" not in found
    hubspot = connector(url)
    for title in ("a", "b", "c"):
        hubspot.create_task(TaskSpec(fake.contact_id(1), None, title, "", NOW))
    first = client.get(
        "/crm/v3/objects/tasks", params={"limit": 2, "properties": "hs_task_subject"}
    )
    body = first.json()
    assert [t["properties"]["hs_task_subject"] for t in body["results"]] == ["a", "b"]
    rest = client.get("/crm/v3/objects/tasks", params={"after": body["paging"]["next"]["after"]})
    assert len(rest.json()["results"]) == 1 and "paging" not in rest.json()
    task_id = body["results"][0]["id"]
    task = client.get(f"/crm/v3/objects/tasks/{task_id}", params={"properties": "hs_task_status"})
    assert task.json()["properties"] == {"hs_task_status": "NOT_STARTED"}
    hubspot.write_note(NoteRef(fake.contact_id(1)), "hello")
    assert len(client.get("/crm/v3/objects/notes").json()["results"]) == 1
    client.close()
