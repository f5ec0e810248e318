"""Greenhouse Harvest v1 connector: the vendor's published payloads, paging, cursors, notes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import respx

from connectors.base import NoteRef, TaskSpec
from connectors.greenhouse import GreenhouseV1, flatten_candidate
from outreach.cadence import load_cadence_file
from outreach.clock import FixedClock, ManualTimer
from outreach.errors import ConfigError, RecordError
from outreach.paths import default_config_dir
from outreach.records import normalize_record

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "greenhouse"
BASE = "https://harvest.greenhouse.io/v1"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def fixture(name: str):
    return json.loads((FIXTURES / name).read_text())


FakeTime = ManualTimer


def connector(**kwargs) -> GreenhouseV1:
    fake = FakeTime()
    return GreenhouseV1(
        "gh-secret",
        user_id="158108",
        clock=FixedClock(NOW),
        sleep=fake.sleep,
        monotonic=fake.monotonic,
        **kwargs,
    )


def test_the_published_candidate_flattens_and_normalises() -> None:
    raw = fixture("v1_candidate_retrieve.json")
    record = flatten_candidate(raw)
    assert record["external_id"] == str(raw["id"])
    assert record["email"] == "test@example.com"  # personal before work
    assert record["stage"] == "Face to Face"  # the active application, not the rejected one
    assert record["tags"] == raw["tags"]
    config = load_cadence_file(default_config_dir() / "cadences.yaml")
    normal = normalize_record(
        record,
        where="greenhouse",
        default_region="US",
        canonical_stage=config.canonical_stage,
        strict_contacts=False,
    )
    assert normal.stage == "interview"
    assert normal.phone is None and normal.warnings == [
        "phone is not a valid number (read in region US when it has no +country code)"
    ]
    with pytest.raises(RecordError, match="phone is not a valid number"):
        normalize_record(
            record, where="x", default_region="US", canonical_stage=config.canonical_stage
        )


def test_the_published_list_payload_parses() -> None:
    for raw in fixture("v1_candidates_list.json"):
        record = flatten_candidate(raw)
        assert record["source"] == "greenhouse" and record["external_id"]


@pytest.mark.parametrize(
    ("status", "prospect", "stage"),
    [("rejected", False, "rejected"), ("hired", False, "hired"), ("active", True, "prospect")],
)
def test_closed_applications_and_prospects_map_without_stage_map(status, prospect, stage) -> None:
    raw = {
        "id": 1,
        "applications": [{"status": status, "prospect": prospect, "current_stage": {"name": "X"}}],
    }
    assert flatten_candidate(raw)["stage"] == stage


@respx.mock
def test_pages_follow_link_headers_and_commit_cursors() -> None:
    route = respx.get(f"{BASE}/candidates").mock(
        side_effect=[
            httpx.Response(
                200,
                json=[{"id": 1, "first_name": "A"}],
                headers={"Link": f'<{BASE}/candidates?page=2&per_page=500>; rel="next"'},
            ),
            httpx.Response(200, json=[{"id": 2}, "garbage"]),
        ]
    )
    gh = connector()
    pages = list(gh.pages(None))
    first, second = route.calls
    assert dict(first.request.url.params) == {"per_page": "500"}
    assert dict(second.request.url.params) == {"page": "2", "per_page": "500"}
    assert [r["external_id"] for r in pages[0].records] == ["1"]
    assert json.loads(pages[0].cursor)["next"].endswith("page=2&per_page=500")
    assert pages[1].done and [r["external_id"] for r in pages[1].records] == ["2"]
    assert len(pages[1].problems) == 1 and pages[1].problems[0][0] == "?"
    assert json.loads(pages[1].cursor) == {"since": NOW.isoformat()}
    # The first request carries Basic auth with the key as user name and no password.
    assert first.request.headers["Authorization"].startswith("Basic ")


@respx.mock
def test_an_interrupted_run_resumes_from_the_committed_page() -> None:
    resume = respx.get(f"{BASE}/candidates", params={"page": "7", "per_page": "500"}).mock(
        return_value=httpx.Response(200, json=[{"id": 9}])
    )
    cursor = json.dumps(
        {
            "since": None,
            "next": f"{BASE}/candidates?page=7&per_page=500",
            "started": "2026-11-25T11:00:00+00:00",
            "full": False,
        }
    )
    (page,) = list(connector().pages(cursor))
    assert resume.called and page.done
    assert json.loads(page.cursor) == {"since": "2026-11-25T11:00:00+00:00"}


@respx.mock
def test_incremental_runs_ask_for_changes_since_the_last_start_with_overlap() -> None:
    route = respx.get(f"{BASE}/candidates").mock(return_value=httpx.Response(200, json=[]))
    list(connector().pages(json.dumps({"since": "2026-11-24T02:00:00+00:00"})))
    params = route.calls[0].request.url.params
    assert params["updated_after"] == "2026-11-24T01:55:00+00:00" and params["per_page"] == "500"


@respx.mock
def test_429_is_retried_after_retry_after() -> None:
    route = respx.get(f"{BASE}/candidates").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "2", "X-RateLimit-Limit": "50"}),
            httpx.Response(200, json=[]),
        ]
    )
    (page,) = list(connector().pages(None))
    assert page.done and route.call_count == 2


@respx.mock
def test_401_names_the_credential() -> None:
    respx.get(f"{BASE}/candidates").mock(
        return_value=httpx.Response(401, json={"message": "Invalid Basic Auth credentials"})
    )
    with pytest.raises(ConfigError, match="GREENHOUSE_API_KEY"):
        list(connector().pages(None))


@respx.mock
def test_notes_are_written_on_behalf_of_the_user() -> None:
    route = respx.post(f"{BASE}/candidates/53883394/activity_feed/notes").mock(
        return_value=httpx.Response(201, json=fixture("v1_candidate_note_create_response.json"))
    )
    note_id = connector().write_note(
        NoteRef("53883394"), "Email 'Hello' sent by the outreach engine"
    )
    request = route.calls[0].request
    assert request.headers["On-Behalf-Of"] == "158108"
    body = json.loads(request.content)
    assert set(body) == set(fixture("v1_candidate_note_create_request.json"))
    assert note_id == str(fixture("v1_candidate_note_create_response.json")["id"])


@respx.mock
def test_tasks_become_notes_marked_as_tasks() -> None:
    route = respx.post(f"{BASE}/candidates/1/activity_feed/notes").mock(
        return_value=httpx.Response(201, json={"id": 5})
    )
    assert (
        connector().create_task(TaskSpec("1", "92120", "Connect on LinkedIn", "Say hi", NOW))
        is None
    )
    assert json.loads(route.calls[0].request.content)["body"].startswith(
        "[Task, due 2026-11-25 12:00 UTC]"
    )


def test_notes_need_a_user() -> None:
    gh = GreenhouseV1("k")
    with pytest.raises(ConfigError, match="GREENHOUSE_USER_ID"):
        gh.write_note(NoteRef("1"), "x")


@respx.mock
def test_a_link_header_that_loops_is_stopped() -> None:
    from outreach.errors import PermanentError

    loop = f'<{BASE}/candidates?page=2&per_page=500>; rel="next"'
    respx.get(f"{BASE}/candidates").mock(
        return_value=httpx.Response(200, json=[{"id": 1}], headers={"Link": loop})
    )
    with pytest.raises(PermanentError, match="pagination loop"):
        list(connector().pages(None))


def test_can_email_false_is_an_email_opt_out() -> None:
    raw = fixture("v1_candidate_retrieve.json")
    assert flatten_candidate({**raw, "can_email": False})["email_opt_out"] is True
    assert flatten_candidate(raw)["email_opt_out"] is False


@respx.mock
def test_a_non_json_answer_is_a_clear_error() -> None:
    from outreach.errors import PermanentError

    respx.get(f"{BASE}/candidates").mock(
        return_value=httpx.Response(200, text="<html>maintenance</html>")
    )
    with pytest.raises(PermanentError, match="did not return JSON"):
        list(connector().pages(None))
