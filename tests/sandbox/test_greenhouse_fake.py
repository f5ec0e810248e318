"""The Greenhouse fake through the real v3 and v1 connectors over loopback."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.base import NoteRef, TaskSpec
from connectors.greenhouse import GreenhouseV1, GreenhouseV3
from outreach.clock import FixedClock, ManualTimer
from outreach.errors import ConfigError
from outreach.sandbox.base import SandboxServer
from outreach.sandbox.greenhouse import FakeGreenhouse, _Roster, _View
from outreach.sandbox.seed import Population

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def fake(clock: FixedClock) -> FakeGreenhouse:
    return FakeGreenhouse(Population(1_200), clock=clock)


@pytest.fixture
def server(fake: FakeGreenhouse):
    with SandboxServer(fake) as running:
        yield running


def v3(server: SandboxServer, clock: FixedClock, **kwargs) -> GreenhouseV3:
    timer = ManualTimer()
    options = {"sleep": timer.sleep, "monotonic": timer.monotonic, **kwargs}
    return GreenhouseV3(
        options.pop("client_id", "sandbox-greenhouse-client"),
        "sandbox-greenhouse-secret",
        "4080",
        base_url=server.url + "/v3",
        auth_url=server.url + "/token",
        clock=clock,
        **options,
    )


def records(pages) -> list[dict]:
    return [r for page in pages for r in page.records]


def test_v3_full_read_returns_every_candidate_once_with_its_stage(server, fake, clock) -> None:
    pages = list(v3(server, clock).pages(None))
    got = records(pages)
    assert len(got) == 1_200 and len({r["external_id"] for r in got}) == 1_200
    people = Population(1_200)
    for record in got[:200]:
        person = people[fake.position(record["external_id"])]
        assert record["email"] == person.email
        expected = {"prospect": "prospect", "hired": "hired", "rejected": "rejected"}.get(
            person.stage
        )
        if expected:
            assert record["stage"] == expected
        assert record["recruiter_name"] == person.recruiter.name
    assert fake.tokens_issued == 1
    # The cursor rule: every request after a first one carries only the cursor.
    for request in fake.requests_to("GET", "/v3/candidates"):
        if "cursor=" in request.query:
            assert request.query.startswith("cursor=") and "&" not in request.query


def test_v3_incremental_read_sees_moves_and_contact_changes(server, fake, clock) -> None:
    gh = v3(server, clock)
    cursor = list(gh.pages(None))[-1].cursor
    clock.advance(timedelta(hours=1))
    fake.move(17, "rejected", clock.now())
    fake.update(900, clock.now(), first_name="Renamed")
    got = records(gh.pages(cursor))
    by_id = {r["external_id"]: r for r in got}
    assert by_id[str(fake.candidate_id(17))]["stage"] == "rejected"
    assert by_id[str(fake.candidate_id(900))]["first_name"] == "Renamed"
    assert len(got) == 2


def test_v3_cursor_with_another_parameter_is_refused(server, fake, clock) -> None:
    gh = v3(server, clock)
    list(gh.pages(None))
    token = gh.auth.header()
    first = httpx.get(
        server.url + "/v3/candidates", params={"per_page": 2}, headers={"Authorization": token}
    )
    next_url = first.links["next"]["url"]
    ok = httpx.get(next_url, headers={"Authorization": token})
    bad = httpx.get(next_url + "&per_page=5", headers={"Authorization": token})
    assert ok.status_code == 200 and len(ok.json()) == 2
    assert bad.status_code == 400 and "only query parameter" in bad.json()["message"]


def test_v3_expired_tokens_are_renewed(server, fake, clock) -> None:
    gh = v3(server, clock)
    list(gh.pages(None))
    fake.expire_tokens()
    assert records(gh.pages(None))
    clock.advance(timedelta(hours=2))  # past expires_at: renewed before the call
    assert records(gh.pages(None))
    assert fake.tokens_issued == 3


def test_v3_wrong_client_secret_is_a_config_error(server, clock) -> None:
    with pytest.raises(ConfigError, match="GREENHOUSE_CLIENT_ID"):
        list(v3(server, clock, client_id="nope").pages(None))


def test_v3_notes_and_tasks_are_written_as_the_token_user(server, fake, clock) -> None:
    gh = v3(server, clock)
    cid = str(fake.candidate_id(3))
    gh.write_note(NoteRef(cid), "Email 'Thanks' sent by the outreach engine")
    gh.create_task(TaskSpec(cid, "4081", "Connect on LinkedIn", "Say hi", NOW))
    notes = fake.notes_for(cid)
    assert [n["user_id"] for n in notes] == [4080, 4080]
    assert notes[1]["body"].startswith("[Task, due 2026-11-25 12:00 UTC] Connect on LinkedIn")


def test_v3_429_and_5xx_are_retried_and_malformed_records_reported(server, fake, clock) -> None:
    fake.faults.rate_limited(2, retry_after=3)
    fake.faults.server_errors(1)
    fake.malform(11)
    pages = list(v3(server, clock).pages(None))
    assert len(records(pages)) == 1_199
    problems = [p for page in pages for p in page.problems]
    assert problems == [(str(fake.candidate_id(11)), problems[0][1])]
    assert problems[0][1] == "unreadable candidate: Invalid isoformat string: 'not a date'"


def test_v1_pages_with_link_headers_and_notes_need_on_behalf_of(server, fake, clock) -> None:
    timer = ManualTimer()
    gh = GreenhouseV1(
        "sandbox-greenhouse-key",
        base_url=server.url + "/v1",
        user_id="4082",
        clock=clock,
        sleep=timer.sleep,
        monotonic=timer.monotonic,
    )
    pages = list(gh.pages(None))
    assert len(pages) == 3 and len(records(pages)) == 1_200
    fake.move(40, "offer", NOW + timedelta(minutes=10))
    clock.advance(timedelta(hours=1))
    again = records(gh.pages(pages[-1].cursor))
    assert [(r["external_id"], r["stage"]) for r in again] == [
        (str(fake.candidate_id(40)), "Offer")
    ]
    gh.write_note(NoteRef(str(fake.candidate_id(40))), "SMS sent")
    (note,) = fake.notes_for(fake.candidate_id(40))
    assert note["on_behalf_of"] == "4082" and note["via"] == "v1"
    refused = httpx.post(
        f"{server.url}/v1/candidates/{fake.candidate_id(40)}/activity_feed/notes",
        auth=("sandbox-greenhouse-key", ""),
        json={"user_id": "4082", "body": "x"},
    )
    assert refused.status_code == 422


def test_rate_limited_fake_answers_429_with_harvest_headers(clock) -> None:
    from outreach.sandbox.base import RateWindow

    fake = FakeGreenhouse(Population(10), clock=clock, rate=RateWindow(2, 60))
    with SandboxServer(fake) as server:
        auth = ("sandbox-greenhouse-key", "")
        answers = [httpx.get(server.url + "/v1/candidates", auth=auth) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[0].headers["X-RateLimit-Limit"] == "2"
    assert answers[1].headers["X-RateLimit-Remaining"] == "0"
    assert int(answers[2].headers["Retry-After"]) >= 1
    assert int(answers[2].headers["X-RateLimit-Reset"]) > 1_700_000_000


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 60),
    changes=st.dictionaries(st.integers(0, 59), st.integers(-400, 400), max_size=12),
    since=st.one_of(st.none(), st.integers(-10, 400)),
    strict=st.booleans(),
    size=st.integers(1, 7),
)
def test_view_pages_match_a_brute_force_filter(n, changes, since, strict, size) -> None:
    start = datetime(2026, 9, 1, tzinfo=UTC)
    people = Population(n, start=start)
    roster = _Roster(people)
    changed = {p: start + timedelta(seconds=s) for p, s in changes.items() if p < n}
    since_at = None if since is None else start + timedelta(seconds=since)

    def at(p: int) -> datetime:
        return changed.get(p, people[p].created_at)

    expected = [
        p
        for p in range(n)
        if since_at is None or at(p) > since_at or (not strict and at(p) == since_at)
    ]
    view = _View(roster, changed, since_at, strict)
    assert len(view) == len(expected)
    paged = [p for offset in range(0, len(expected), size) for p in view.page(offset, size)]
    assert paged == expected


def test_population_people_must_be_in_creation_order() -> None:
    people = list(Population(5))
    with pytest.raises(ValueError, match="creation order"):
        FakeGreenhouse(people[::-1])


def test_cursor_json_is_resumable(server, fake, clock) -> None:
    gh = v3(server, clock)
    pages = gh.pages(None)
    first = next(pages)
    state = json.loads(first.cursor)
    assert state["phase"] == "candidates" and "cursor=" in state["next"]
    rest = records(v3(server, clock).pages(first.cursor))
    assert len(first.records) + len(rest) == 1_200
