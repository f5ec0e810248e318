"""The real Lever connector against the Lever sandbox fake, over loopback HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from connectors.base import NoteRef
from connectors.lever import Lever
from outreach.cadence import CadenceConfig, load_cadence_file
from outreach.clock import FixedClock, ManualTimer
from outreach.errors import ConfigError
from outreach.paths import default_config_dir
from outreach.records import normalize_record
from outreach.sandbox.base import RateWindow, SandboxServer
from outreach.sandbox.lever import FakeLever
from outreach.sandbox.seed import RECRUITERS, Population

KEY = "sandbox-lever-key"
USER = RECRUITERS[0].lever_id
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
def fake(server) -> FakeLever:
    fake = FakeLever(PEOPLE, clock=FixedClock(NOW))
    server[1]["fake"] = fake
    return fake


@pytest.fixture
def url(server, fake: FakeLever) -> str:
    return server[0].url + "/v1"


def connector(url: str, *, key: str = KEY, now: datetime = NOW, timer=None) -> Lever:
    timer = timer or ManualTimer()
    return Lever(
        key,
        base_url=url,
        user_id=USER,
        clock=FixedClock(now),
        sleep=timer.sleep,
        monotonic=timer.monotonic,
    )


def sync(lever: Lever, cursor: str | None = None):
    pages = list(lever.pages(cursor))
    records = [r for page in pages for r in page.records]
    problems = [p for page in pages for p in page.problems]
    return pages, records, problems


def test_a_full_sync_reads_every_opportunity_once_with_its_stage(fake, url, config) -> None:
    pages, records, problems = sync(connector(url))
    assert len(pages) == 3 and pages[-1].done and not problems
    ids = [r["external_id"] for r in records]
    assert len(ids) == len(set(ids)) == len(PEOPLE)
    by_id = {fake.opportunity_id(p.index): p for p in PEOPLE}
    assert set(ids) == set(by_id)
    stages_seen = set()
    for raw in records:
        person = by_id[raw["external_id"]]
        record = normalize_record(
            raw,
            where="lever",
            default_region="US",
            canonical_stage=config.canonical_stage,
            strict_contacts=False,
        )
        assert record.stage == person.stage
        assert record.email == person.email
        assert record.owner_id == person.recruiter.lever_id
        assert record.recruiter_name == person.recruiter.name
        assert record.email_opt_out is person.email_opt_out
        assert (record.phone.e164 if record.phone else None) == person.phone_e164
        stages_seen.add(record.stage)
    assert {"hired", "rejected", "prospect", "offer"} <= stages_seen
    # archive reasons and stages were read at most once for the whole run
    assert len(fake.requests_to("GET", "/archive_reasons")) == 1
    assert not fake.requests_to("GET", "/stages")


def test_an_incremental_read_returns_only_what_moved(fake, url, config) -> None:
    first, _, _ = sync(connector(url))
    applied = next(p for p in PEOPLE if p.stage == "applied")
    active = next(p for p in PEOPLE if p.stage == "interview")
    fake.move(applied.index, "interview", at=NOW + timedelta(hours=1))
    fake.move(fake.opportunity_id(active.index), "hired", at=NOW + timedelta(hours=1))
    later = NOW + timedelta(hours=2)
    pages, records, _ = sync(connector(url, now=later), first[-1].cursor)
    stages = {
        r["external_id"]: normalize_record(
            r,
            where="lever",
            default_region="US",
            canonical_stage=config.canonical_stage,
            strict_contacts=False,
        ).stage
        for r in records
    }
    assert stages == {
        fake.opportunity_id(applied.index): "interview",
        fake.opportunity_id(active.index): "hired",
    }
    assert json.loads(pages[-1].cursor) == {"since": later.isoformat()}


def test_a_note_written_as_the_user_is_read_back(fake, url) -> None:
    opportunity_id = fake.opportunity_id(PEOPLE[0].index)
    note_id = connector(url).write_note(NoteRef(opportunity_id), "Email 'Hello' sent")
    (note,) = fake.notes_for(opportunity_id)
    assert note_id == note["id"]
    assert note["value"] == "Email 'Hello' sent" and note["user"] == USER
    assert note["opportunity"] == opportunity_id and note["secret"] is False
    (logged,) = fake.requests_to("POST", "/notes")
    assert f"perform_as={USER}" in logged.query and logged.status == 201


def test_rate_limits_are_retried_and_the_run_completes(fake, url) -> None:
    fake.faults.rate_limited(2, retry_after=0)
    timer = ManualTimer()
    lever = connector(url, timer=timer)
    pages, records, _ = sync(lever)
    assert pages[-1].done and len(records) == len(PEOPLE)
    assert fake.faults.injected == {"429": 2} and lever.client.retries == 2


def test_a_wrong_key_is_a_config_error(url) -> None:
    with pytest.raises(ConfigError, match="LEVER_API_KEY") as info:
        sync(connector(url, key="wrong-key-xyz"))
    assert "wrong-key-xyz" not in str(info.value)


def test_a_malformed_record_is_reported_and_the_others_arrive(fake, url) -> None:
    broken = fake.opportunity_id(PEOPLE[7].index)
    fake.malform(broken)
    _, records, problems = sync(connector(url))
    assert [p[0] for p in problems] == [broken]
    assert len(records) == len(PEOPLE) - 1 and broken not in {r["external_id"] for r in records}


def test_the_fake_checks_limit_offset_auth_and_notes(url) -> None:
    with httpx.Client(base_url=url, auth=(KEY, "")) as http:
        too_big = http.get("/opportunities", params={"limit": 101})
        assert too_big.status_code == 400 and too_big.json()["code"] == "BadRequestError"
        assert http.get("/opportunities", params={"offset": "bogus"}).status_code == 400
        page = http.get("/opportunities", params={"limit": 100, "archived": "true"}).json()
        assert page["hasNext"] is False and "next" not in page
        assert all(isinstance(o["archived"], dict) for o in page["data"])
        some = http.get("/opportunities", params={"limit": 1}).json()
        opportunity_id = some["data"][0]["id"]
        assert isinstance(some["data"][0]["stage"], str)  # an id unless expanded
        no_user = http.post(f"/opportunities/{opportunity_id}/notes", json={"value": "x"})
        assert no_user.status_code == 400
        no_value = http.post(
            f"/opportunities/{opportunity_id}/notes", params={"perform_as": USER}, json={}
        )
        assert no_value.status_code == 400
    unauthorised = httpx.get(url + "/opportunities")
    assert unauthorised.status_code == 401
    assert unauthorised.json() == {"code": "UnauthorizedError", "message": "Invalid API key"}


def test_the_fake_reads_one_opportunity_expanded_and_filters_by_time(fake, url) -> None:
    person = PEOPLE[3]
    opportunity_id = fake.opportunity_id(person.index)
    with httpx.Client(base_url=url, auth=(KEY, "")) as http:
        one = http.get(
            f"/opportunities/{opportunity_id}", params=[("expand", "stage"), ("expand", "owner")]
        ).json()["data"]
        assert one["owner"]["id"] == person.recruiter.lever_id and "text" in one["stage"]
        assert http.get("/opportunities/nope").status_code == 404
        created = int(person.created_at.timestamp() * 1000)
        window = {"updated_at_start": created, "updated_at_end": created}
        (only,) = http.get("/opportunities", params=window).json()["data"]
        assert only["id"] == opportunity_id


def test_the_fake_rate_window_answers_lever_429s(server) -> None:
    limited = FakeLever(PEOPLE[:3], rate=RateWindow(limit=2, seconds=60))
    server[1]["fake"] = limited
    with httpx.Client(base_url=server[0].url + "/v1", auth=(KEY, "")) as http:
        assert [http.get("/stages").status_code for _ in range(2)] == [200, 200]
        refused = http.get("/stages")
    assert refused.status_code == 429
    assert refused.json()["code"] == "TooManyRequestsError"
    assert float(refused.headers["Retry-After"]) > 0
    assert "X-RateLimit-Remaining" not in refused.headers
