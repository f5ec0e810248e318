"""Credentials stay home: no connector sends a request, and so its credential, to a host
other than its configured base URL, whatever a CRM answer or a stored cursor says."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import httpx
import pytest
import respx

from connectors.base import NoteRef
from connectors.greenhouse import GreenhouseV1, GreenhouseV3
from connectors.http import ApiClient
from connectors.hubspot import HubSpot
from connectors.lever import Lever
from outreach.clock import FixedClock, ManualTimer
from outreach.errors import PermanentError

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
GH1 = "https://harvest.greenhouse.io/v1"
GH3 = "https://harvest.greenhouse.io/v3"
GH_TOKEN = "https://auth.greenhouse.io/token"
LEVER = "https://api.lever.co/v1"
HUBSPOT = "https://api.hubapi.com"

#: next-page links that leave the configured origin: another host, a look-alike
#: user-info trick, another scheme, another port
ELSEWHERE = [
    "https://evil.example/v1/candidates?page=2",
    "https://harvest.greenhouse.io@evil.example/v1/candidates?page=2",
    "http://harvest.greenhouse.io/v1/candidates?page=2",
    "https://harvest.greenhouse.io:8443/v1/candidates?page=2",
]


@pytest.fixture
def router():
    with respx.mock(assert_all_called=False) as mock:
        # Any request that leaves the origin lands here, and the test sees it.
        mock.route(host="evil.example").respond(200, json=[])
        mock.route(port=8443).respond(200, json=[])
        mock.route(scheme="http").respond(200, json=[])
        yield mock


def _sent_elsewhere(mock: respx.Router, home: str) -> list[str]:
    home_url = httpx.URL(home)
    return [
        str(call.request.url)
        for call in mock.calls
        if (call.request.url.scheme, call.request.url.host, call.request.url.port)
        != (home_url.scheme, home_url.host, home_url.port)
    ]


def greenhouse_v1() -> GreenhouseV1:
    timer = ManualTimer()
    return GreenhouseV1(
        "gh-secret", clock=FixedClock(NOW), sleep=timer.sleep, monotonic=timer.monotonic
    )


def greenhouse_v3() -> GreenhouseV3:
    timer = ManualTimer()
    return GreenhouseV3(
        "client-id",
        "client-secret-value",
        "4080",
        clock=FixedClock(NOW),
        sleep=timer.sleep,
        monotonic=timer.monotonic,
    )


@pytest.mark.parametrize("link", ELSEWHERE)
def test_greenhouse_v1_refuses_a_link_header_to_another_origin(router, link: str) -> None:
    router.get(f"{GH1}/candidates").respond(
        200, json=[{"id": 1}], headers={"Link": f'<{link}>; rel="next"'}
    )
    with pytest.raises(PermanentError) as caught:
        list(greenhouse_v1().pages(None))
    message = str(caught.value)
    assert "not followed" in message and "https://harvest.greenhouse.io" in message
    assert httpx.URL(link).host in message
    assert _sent_elsewhere(router, GH1) == []


def test_greenhouse_error_names_the_url_without_its_credentials(router) -> None:
    link = "https://user:pa55word@evil.example/v1/candidates?page=2"
    router.get(f"{GH1}/candidates").respond(
        200, json=[{"id": 1}], headers={"Link": f'<{link}>; rel="next"'}
    )
    with pytest.raises(PermanentError) as caught:
        list(greenhouse_v1().pages(None))
    assert "https://evil.example/v1/candidates?page=2" in str(caught.value)
    assert "pa55word" not in str(caught.value) and "user" not in str(caught.value)
    assert _sent_elsewhere(router, GH1) == []


def test_greenhouse_same_origin_links_are_followed(router) -> None:
    route = router.get(f"{GH1}/candidates").mock(
        side_effect=[
            httpx.Response(
                200,
                json=[{"id": 1}],
                headers={
                    "Link": '<https://HARVEST.greenhouse.io:443/v1/candidates?page=2>; rel="next"'
                },
            ),
            httpx.Response(200, json=[{"id": 2}]),
        ]
    )
    pages = list(greenhouse_v1().pages(None))
    assert [r["external_id"] for p in pages for r in p.records] == ["1", "2"]
    assert route.call_count == 2


def test_greenhouse_a_foreign_link_is_refused_before_its_page_is_committed(router) -> None:
    router.get(f"{GH1}/candidates").respond(
        200, json=[{"id": 1}], headers={"Link": '<https://evil.example/v1/c?page=2>; rel="next"'}
    )
    pages = greenhouse_v1().pages(None)
    # The error comes before a page whose cursor carries the foreign URL is handed out.
    with pytest.raises(
        PermanentError, match=re.escape("the Link header points to https://evil.example")
    ):
        next(pages)


def test_greenhouse_v1_a_stored_cursor_cannot_send_the_key_elsewhere(router) -> None:
    cursor = json.dumps(
        {"since": None, "next": "https://evil.example/v1/candidates?page=9", "started": "x"}
    )
    with pytest.raises(
        PermanentError, match=re.escape("https://evil.example/v1/candidates?page=9")
    ):
        list(greenhouse_v1().pages(cursor))
    assert _sent_elsewhere(router, GH1) == []


def test_greenhouse_v3_refuses_a_link_header_to_another_origin(router) -> None:
    router.post(GH_TOKEN).respond(
        json={
            "token_type": "Bearer",
            "access_token": "tok-1",
            "expires_at": "2026-11-25T13:00:00.000Z",
        }
    )
    router.get(f"{GH3}/candidates").respond(
        200,
        json=[{"id": 1, "first_name": "A", "updated_at": "2026-11-20T10:00:00.000Z"}],
        headers={"Link": '<https://evil.example/v3/candidates?cursor=abc>; rel="next"'},
    )
    router.get(f"{GH3}/applications").respond(json=[])
    for lookup in ("job_stages", "jobs", "users"):
        router.get(f"{GH3}/{lookup}").respond(json=[])
    with pytest.raises(PermanentError, match=re.escape("https://evil.example/v3/candidates")):
        list(greenhouse_v3().pages(None))
    assert _sent_elsewhere(router, GH3) == [GH_TOKEN]  # the token URL, configured too


HOSTILE_TOKENS = [
    "//evil.example/steal",
    "@evil.example",
    "https://evil.example/opportunities",
    "x&limit=1#frag",
]


@pytest.mark.parametrize("token", HOSTILE_TOKENS)
def test_lever_a_hostile_next_token_stays_a_query_parameter(router, token: str) -> None:
    timer = ManualTimer()
    lever = Lever("lever-key", clock=FixedClock(NOW), sleep=timer.sleep, monotonic=timer.monotonic)
    route = router.get(f"{LEVER}/opportunities").mock(
        side_effect=[
            httpx.Response(200, json={"data": [], "hasNext": True, "next": token}),
            httpx.Response(200, json={"data": [], "hasNext": False}),
        ]
    )
    router.get(f"{LEVER}/archive_reasons").respond(json={"data": [], "hasNext": False})
    router.get(f"{LEVER}/stages").respond(json={"data": [], "hasNext": False})
    list(lever.pages(None, full=True))
    second = route.calls[1].request.url
    assert second.host == "api.lever.co" and second.path == "/v1/opportunities"
    assert second.params.get_list("offset") == [token]
    assert _sent_elsewhere(router, LEVER) == []


@pytest.mark.parametrize("token", HOSTILE_TOKENS)
def test_hubspot_a_hostile_after_stays_a_query_parameter(router, token: str) -> None:
    timer = ManualTimer()
    hubspot = HubSpot(
        "pat-secret", clock=FixedClock(NOW), sleep=timer.sleep, monotonic=timer.monotonic
    )
    route = router.get(f"{HUBSPOT}/crm/v3/objects/contacts").mock(
        side_effect=[
            httpx.Response(
                200,
                json={
                    "results": [],
                    # The link is never followed; only ``after`` is read.
                    "paging": {"next": {"after": token, "link": "https://evil.example/x"}},
                },
            ),
            httpx.Response(200, json={"results": []}),
        ]
    )
    list(hubspot.pages(None))
    second = route.calls[1].request.url
    assert second.host == "api.hubapi.com" and second.path == "/crm/v3/objects/contacts"
    assert second.params.get_list("after") == [token]
    assert _sent_elsewhere(router, HUBSPOT) == []


# -- the shared HTTP client ------------------------------------------------------------


def api_client() -> ApiClient:
    timer = ManualTimer()
    return ApiClient(
        "lever",
        LEVER,
        credential="LEVER_API_KEY",
        auth=("secret-key", ""),
        monotonic=timer.monotonic,
        sleep=timer.sleep,
    )


@pytest.mark.parametrize(
    "path",
    [
        "https://evil.example/v1/opportunities",
        "https://api.lever.co.evil.example/v1/opportunities",
        "https://api.lever.co:444/v1/opportunities",
        "http://api.lever.co/v1/opportunities",
    ],
)
def test_the_client_sends_nothing_off_its_origin(router, path: str) -> None:
    router.route(host="api.lever.co.evil.example").respond(200, json=[])
    router.route(port=444).respond(200, json=[])
    with pytest.raises(PermanentError, match="outside the configured base URL"):
        api_client().get(path)
    assert router.calls.call_count == 0


def test_the_client_accepts_absolute_urls_on_its_origin_and_odd_relative_paths(router) -> None:
    route = router.get(url__startswith=f"{LEVER}/").respond(200, json={})
    client = api_client()
    client.get(f"{LEVER}/opportunities?offset=1")
    client.get("//evil.example/opportunities")  # a path to httpx: stays on the origin
    client.get("@evil.example/opportunities")
    assert [c.request.url.host for c in route.calls] == ["api.lever.co"] * 3
    assert _sent_elsewhere(router, LEVER) == []


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirects_are_not_followed_and_are_errors(router, status: int) -> None:
    router.get(f"{LEVER}/opportunities").respond(
        status, headers={"Location": "https://user:pw@evil.example/v1/opportunities"}
    )
    with pytest.raises(PermanentError) as caught:
        api_client().get("/opportunities")
    message = str(caught.value)
    assert f"HTTP {status}" in message and "https://evil.example/v1/opportunities" in message
    assert "pw@" not in message
    assert _sent_elsewhere(router, LEVER) == []


def test_greenhouse_a_hostile_record_id_stays_one_path_segment(router) -> None:
    timer = ManualTimer()
    gh = GreenhouseV1(
        "gh-secret",
        user_id="158108",
        clock=FixedClock(NOW),
        sleep=timer.sleep,
        monotonic=timer.monotonic,
    )
    route = router.post(url__startswith=f"{GH1}/candidates/").respond(200, json={"id": 5})
    gh.write_note(NoteRef("1/../../users?x=@evil.example"), "hello")
    sent = route.calls.last.request.url
    assert sent.host == "harvest.greenhouse.io"
    assert (
        sent.raw_path
        == b"/v1/candidates/1%2F..%2F..%2Fusers%3Fx%3D%40evil.example/activity_feed/notes"
    )


def test_an_unreadable_link_or_location_is_a_clear_error(router) -> None:
    router.get(f"{GH1}/candidates").respond(
        200, json=[{"id": 1}], headers={"Link": '<https://[::1/v1/candidates?page=2>; rel="next"'}
    )
    with pytest.raises(PermanentError, match="the Link header is not a usable URL"):
        list(greenhouse_v1().pages(None))
    router.post(f"{LEVER}/opportunities").respond(302, headers={"Location": "https://[::1/x"})
    with pytest.raises(PermanentError, match="location header"):
        api_client().post("/opportunities")
