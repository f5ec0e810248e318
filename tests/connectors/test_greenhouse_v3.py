"""Greenhouse Harvest v3: OAuth client credentials, cursor paging, the application join."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs

import httpx
import pytest
import respx

from connectors.base import NoteRef
from connectors.greenhouse import GreenhouseV3
from outreach.clock import FixedClock, ManualTimer
from outreach.errors import ConfigError, PermanentError

BASE = "https://harvest.greenhouse.io/v3"
TOKEN_URL = "https://auth.greenhouse.io/token"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def token_body(n: int = 1, expires: datetime | None = None) -> dict:
    return {
        "token_type": "Bearer",
        "access_token": f"tok-{n}",
        "expires_at": (expires or NOW + timedelta(hours=1)).isoformat(),
    }


def candidate(cid: int, **extra) -> dict:
    return {
        "id": cid,
        "first_name": "Ada",
        "last_name": f"N{cid}",
        "email_addresses": [{"value": f"ada{cid}@example.com", "type": "personal"}],
        "phone_numbers": [],
        "recruiter_id": 7,
        "updated_at": "2026-11-20T10:00:00.000Z",
        "can_email": True,
        **extra,
    }


def application(cid: int, stage_id: int | None = 300, status: str = "active") -> dict:
    return {
        "id": cid + 1000,
        "candidate_id": cid,
        "prospect": stage_id is None and status == "active",
        "status": status,
        "current_stage_id": stage_id,
        "job_id": 40,
        "last_activity_at": "2026-11-20T10:00:00.000Z",
    }


def mock_lookups(router: respx.Router) -> None:
    router.get(f"{BASE}/job_stages").respond(json=[{"id": 300, "name": "Face to Face"}])
    router.get(f"{BASE}/jobs").respond(json=[{"id": 40, "name": "Data Scientist"}])
    router.get(f"{BASE}/users").respond(json=[{"id": 7, "first_name": "Maria", "last_name": "C"}])


def make(clock: FixedClock | None = None, timer: ManualTimer | None = None) -> GreenhouseV3:
    timer = timer or ManualTimer()
    return GreenhouseV3(
        "client-id",
        "client-secret-value",
        "4080",
        clock=clock or FixedClock(NOW),
        sleep=timer.sleep,
        monotonic=timer.monotonic,
    )


@respx.mock
def test_token_request_is_client_credentials_with_sub_and_cached() -> None:
    token = respx.post(TOKEN_URL).respond(json=token_body())
    respx.get(f"{BASE}/candidates").respond(json=[])
    gh = make()
    list(gh.pages(None))
    list(gh.pages(None))
    assert token.call_count == 1
    request = token.calls[0].request
    assert parse_qs(request.content.decode()) == {
        "grant_type": ["client_credentials"],
        "sub": ["4080"],
    }
    assert request.headers["Authorization"].startswith("Basic ")
    api = respx.calls[-1].request
    assert api.headers["Authorization"] == "Bearer tok-1"


@respx.mock
def test_token_is_renewed_before_it_expires() -> None:
    clock = FixedClock(NOW)
    token = respx.post(TOKEN_URL).mock(
        side_effect=[
            httpx.Response(200, json=token_body(1, NOW + timedelta(minutes=30))),
            httpx.Response(200, json=token_body(2, NOW + timedelta(hours=2))),
        ]
    )
    api = respx.get(f"{BASE}/candidates").respond(json=[])
    gh = make(clock)
    list(gh.pages(None))
    clock.advance(timedelta(minutes=29, seconds=30))  # inside the renewal margin
    list(gh.pages(None))
    assert token.call_count == 2
    assert api.calls[-1].request.headers["Authorization"] == "Bearer tok-2"


@respx.mock
def test_a_401_renews_the_token_once_and_goes_on() -> None:
    token = respx.post(TOKEN_URL).mock(
        side_effect=[
            httpx.Response(200, json=token_body(1)),
            httpx.Response(200, json=token_body(2)),
        ]
    )
    api = respx.get(f"{BASE}/candidates").mock(
        side_effect=[httpx.Response(401, json={"message": "revoked"}), httpx.Response(200, json=[])]
    )
    pages = list(make().pages(None))
    assert pages[-1].done and token.call_count == 2
    assert [c.request.headers["Authorization"] for c in api.calls] == [
        "Bearer tok-1",
        "Bearer tok-2",
    ]


@respx.mock
def test_a_second_401_is_a_config_error_without_the_secret() -> None:
    respx.post(TOKEN_URL).respond(json=token_body())
    respx.get(f"{BASE}/candidates").respond(401, json={"message": "no scope"})
    with pytest.raises(ConfigError) as caught:
        list(make().pages(None))
    assert "GREENHOUSE_CLIENT_ID" in str(caught.value)
    assert "client-secret-value" not in str(caught.value)


@respx.mock
def test_refused_client_credentials_name_the_variables() -> None:
    respx.post(TOKEN_URL).respond(401, json={"error": "invalid_client"})
    with pytest.raises(ConfigError, match="GREENHOUSE_CLIENT_SECRET") as caught:
        list(make().pages(None))
    assert "client-secret-value" not in str(caught.value)


@respx.mock
def test_token_answer_without_expires_at_is_clear() -> None:
    respx.post(TOKEN_URL).respond(json={"token_type": "Bearer", "access_token": "x"})
    with pytest.raises(PermanentError, match="expires_at"):
        list(make().pages(None))


@respx.mock
def test_token_endpoint_5xx_is_retried() -> None:
    respx.post(TOKEN_URL).mock(
        side_effect=[httpx.Response(503), httpx.Response(200, json=token_body())]
    )
    respx.get(f"{BASE}/candidates").respond(json=[])
    assert list(make().pages(None))[-1].done


@respx.mock
def test_filters_on_the_first_request_then_only_the_link_cursor() -> None:
    respx.post(TOKEN_URL).respond(json=token_body())
    mock_lookups(respx.mock)
    next_url = f"{BASE}/candidates?cursor=abc123"
    listing = respx.get(f"{BASE}/candidates").mock(
        side_effect=[
            httpx.Response(200, json=[candidate(1)], headers={"Link": f'<{next_url}>; rel="next"'}),
            httpx.Response(200, json=[candidate(2)]),
        ]
    )
    apps = respx.get(f"{BASE}/applications").mock(
        side_effect=lambda request: httpx.Response(
            200,
            json=[
                application(int(c))
                for c in request.url.params.get("candidate_ids", "").split(",")
                if c
            ],
        )
    )
    since = json.dumps({"since": "2026-11-24T02:00:00+00:00"})
    pages = list(make().pages(since))
    first, second = (c.request.url for c in listing.calls)
    assert first.params["per_page"] == "500"
    assert first.params["updated_at"] == "gte|2026-11-24T01:55:00.000Z"  # 5-minute overlap
    assert str(second) == next_url and list(second.params) == ["cursor"]
    # Candidates' applications joined by id, then applications changed since the cursor.
    assert apps.calls[0].request.url.params["candidate_ids"] == "1"
    assert apps.calls[2].request.url.params["updated_at"] == "gte|2026-11-24T01:55:00.000Z"
    records = [r for page in pages for r in page.records]
    assert [r["external_id"] for r in records] == ["1", "2"]
    assert records[0]["stage"] == "Face to Face"
    assert records[0]["job_title"] == "Data Scientist"
    assert records[0]["recruiter_name"] == "Maria C" and records[0]["owner_id"] == "7"
    assert pages[-1].done and json.loads(pages[-1].cursor) == {"since": NOW.isoformat()}


@respx.mock
def test_a_stage_move_without_a_candidate_change_is_seen_through_applications() -> None:
    respx.post(TOKEN_URL).respond(json=token_body())
    mock_lookups(respx.mock)
    respx.get(f"{BASE}/candidates").mock(
        side_effect=lambda request: httpx.Response(
            200, json=[candidate(5)] if request.url.params.get("ids") == "5" else []
        )
    )
    respx.get(f"{BASE}/applications").mock(
        side_effect=lambda request: httpx.Response(
            200,
            json=[application(5, status="rejected")]
            if "updated_at" in request.url.params or request.url.params.get("candidate_ids")
            else [],
        )
    )
    pages = list(make().pages(json.dumps({"since": "2026-11-24T02:00:00+00:00"})))
    records = [r for page in pages for r in page.records]
    assert [(r["external_id"], r["stage"]) for r in records] == [("5", "rejected")]


@respx.mock
def test_a_mid_run_cursor_resumes_at_its_phase_and_url() -> None:
    respx.post(TOKEN_URL).respond(json=token_body())
    mock_lookups(respx.mock)
    resume = f"{BASE}/applications?cursor=zzz"
    apps = respx.get(f"{BASE}/applications").mock(
        side_effect=lambda request: httpx.Response(200, json=[])
    )
    listing = respx.get(f"{BASE}/candidates").respond(json=[])
    cursor = json.dumps(
        {
            "since": "2026-11-24T02:00:00+00:00",
            "started": "2026-11-25T11:00:00+00:00",
            "full": False,
            "phase": "applications",
            "next": resume,
        }
    )
    pages = list(make().pages(cursor))
    assert str(apps.calls[0].request.url) == resume and not listing.called
    assert json.loads(pages[-1].cursor) == {"since": "2026-11-25T11:00:00+00:00"}


@respx.mock
def test_unreadable_candidates_are_reported_and_the_page_goes_on() -> None:
    respx.post(TOKEN_URL).respond(json=token_body())
    mock_lookups(respx.mock)
    respx.get(f"{BASE}/candidates").respond(
        json=[candidate(1), "junk", candidate(2, updated_at="yesterday-ish")]
    )
    respx.get(f"{BASE}/applications").respond(json=[application(1), application(2)])
    (page,) = list(make().pages(None))
    assert [r["external_id"] for r in page.records] == ["1"]
    assert [p[0] for p in page.problems] == ["?", "2"]


@respx.mock
def test_429_waits_retry_after_and_lookups_are_cached() -> None:
    timer = ManualTimer()
    respx.post(TOKEN_URL).respond(json=token_body())
    stages = respx.get(f"{BASE}/job_stages").respond(json=[{"id": 300, "name": "Offer"}])
    respx.get(f"{BASE}/jobs").respond(json=[])
    respx.get(f"{BASE}/users").respond(json=[])
    next_url = f"{BASE}/candidates?cursor=p2"
    respx.get(f"{BASE}/candidates").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "7"}),
            httpx.Response(200, json=[candidate(1)], headers={"Link": f'<{next_url}>; rel="next"'}),
            httpx.Response(200, json=[candidate(2)]),
        ]
    )
    respx.get(f"{BASE}/applications").mock(
        side_effect=lambda request: httpx.Response(
            200, json=[application(int(request.url.params["candidate_ids"]))]
        )
    )
    pages = list(make(timer=timer).pages(None))
    assert 7 in timer.slept
    assert stages.call_count == 1  # stage 300 asked once for both pages
    assert [r["stage"] for page in pages for r in page.records] == ["Offer", "Offer"]


@respx.mock
def test_notes_are_posted_as_the_token_user() -> None:
    respx.post(TOKEN_URL).respond(json=token_body())
    notes = respx.post(f"{BASE}/notes").respond(201, json={"id": 99})
    assert make().write_note(NoteRef("12"), "Email sent") == "99"
    assert json.loads(notes.calls[0].request.content) == {
        "candidate_id": 12,
        "body": "Email sent",
        "visibility": "public",
    }
