"""HubSpot CRM v3 connector: published payloads, list and search paging, the 10,000 cap,
search pacing, errors, notes, tasks and task states (respx, no network, no waiting)."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import respx

from connectors.base import NoteRef, TaskSpec
from connectors.hubspot import HubSpot, flatten_contact, iana_zone
from outreach.cadence import load_cadence_file
from outreach.clock import FixedClock, ManualTimer
from outreach.errors import ConfigError, PermanentError
from outreach.paths import default_config_dir
from outreach.records import normalize_record

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "hubspot"
BASE = "https://api.hubapi.com"
CONTACTS = f"{BASE}/crm/v3/objects/contacts"
SEARCH = f"{BASE}/crm/v3/objects/contacts/search"
TOKEN = "pat-na1-secret-0000"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def fixture(name: str):
    return json.loads((FIXTURES / name).read_text())


def connector(timer: ManualTimer | None = None, **kwargs) -> HubSpot:
    timer = timer or ManualTimer()
    return HubSpot(
        TOKEN, clock=FixedClock(NOW), sleep=timer.sleep, monotonic=timer.monotonic, **kwargs
    )


def ms(at: datetime) -> int:
    return (at - EPOCH) // timedelta(milliseconds=1)


def iso(at_ms: int) -> str:
    at = EPOCH + timedelta(milliseconds=at_ms)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def contact(contact_id: int | str, modified_ms: int | None = None, **properties) -> dict:
    props = {"firstname": "Ada", "email": f"a{contact_id}@example.com", **properties}
    if modified_ms is not None:
        props["lastmodifieddate"] = iso(modified_ms)
    return {"id": str(contact_id), "properties": props, "archived": False}


class SearchBackend:
    """A respx side effect that answers searches over ``(id, lastmodified ms)`` rows the
    way HubSpot does: GTE/LT on lastmodifieddate, GT on hs_object_id, one sort, numeric
    ``after`` offsets, and a 400 past the 10,000-result cap."""

    def __init__(self, rows: list[tuple[int, int]], *, cap: int = 10_000) -> None:
        self.rows = rows
        self.cap = cap
        self.bodies: list[dict] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        offset = int(body.get("after") or 0)
        limit = body["limit"]
        if offset + limit > self.cap:
            return httpx.Response(
                400,
                json={"status": "error", "message": "past the cap", "category": "VALIDATION_ERROR"},
            )
        rows = self.rows
        for f in body["filterGroups"][0]["filters"]:
            index = 1 if f["propertyName"] == "lastmodifieddate" else 0
            value = int(f["value"])
            test = {"GTE": int.__ge__, "GT": int.__gt__, "LT": int.__lt__}[f["operator"]]
            rows = [r for r in rows if test(r[index], value)]
        by = body["sorts"][0]["propertyName"]
        rows = sorted(rows, key=(lambda r: (r[1], r[0])) if by == "lastmodifieddate" else None)
        page = rows[offset : offset + limit]
        answer: dict = {"total": len(rows), "results": [contact(i, m) for i, m in page]}
        if offset + limit < len(rows):
            answer["paging"] = {"next": {"after": str(offset + limit)}}
        return httpx.Response(200, json=answer)


# -- records ---------------------------------------------------------------------------


def test_the_published_search_response_parses() -> None:
    body = fixture("contacts_search_response.json")
    (raw,) = body["results"]
    record = flatten_contact(raw)
    assert record["source"] == "hubspot" and record["external_id"] == "512"
    assert record["updated_at"] == raw["updatedAt"]  # no lastmodifieddate asked: updatedAt
    # The example's custom properties pass through as custom fields.
    assert record["property_dropdown"] == "choice_b"
    assert record["property_multiple_checkboxes"] == "chocolate;strawberry"


def test_a_contact_flattens_and_normalises() -> None:
    raw = {
        "id": "151",
        "properties": {
            "firstname": "Ada",
            "lastname": "Okafor",
            "email": "ada@example.com",
            "phone": "+1 212 555 0100",
            "mobilephone": "(415) 555-0101",
            "hs_timezone": "america_slash_los_angeles",
            "lifecyclestage": "lead",
            "hubspot_owner_id": "71000001",
            "hs_email_optout": "true",
            "hs_linkedin_url": "https://www.linkedin.com/in/ada-okafor",
            "jobtitle": "Staff Engineer",
            "lastmodifieddate": "2026-11-20T10:00:00.123Z",
            "createdate": "2026-01-01T00:00:00.000Z",
            "hs_object_id": "151",
        },
        "updatedAt": "2026-11-20T10:00:00.123Z",
    }
    record = flatten_contact(raw)
    assert record["phone"] == "(415) 555-0101"  # mobile first
    assert record["timezone"] == "America/Los_Angeles"
    assert record["stage"] == "lead" and record["owner_id"] == "71000001"
    assert record["email_opt_out"] is True
    assert record["current_title"] == "Staff Engineer" and "job_title" not in record
    assert "hs_object_id" not in record and "createdate" not in record
    config = load_cadence_file(default_config_dir() / "cadences.yaml")
    normal = normalize_record(
        record,
        where="hubspot",
        default_region="US",
        canonical_stage=config.canonical_stage,
        strict_contacts=False,
    )
    assert normal.stage == "prospect" and normal.timezone == "America/Los_Angeles"
    assert normal.email_opt_out is True and normal.custom == {"current_title": "Staff Engineer"}
    assert normal.source_updated_at == datetime(2026, 11, 20, 10, 0, 0, 123000, tzinfo=UTC)


def test_a_custom_stage_property_and_a_custom_linkedin_property() -> None:
    raw = contact(1, hs_pipeline_stage="Phone screen", linkedin_url="https://linkedin.com/in/x")
    record = flatten_contact(raw, stage_property="hs_pipeline_stage")
    assert record["stage"] == "Phone screen" and record["linkedin_url"].endswith("/in/x")
    assert "hs_pipeline_stage" not in record


@pytest.mark.parametrize(
    ("value", "zone"),
    [
        ("america_slash_new_york", "America/New_York"),
        ("us_slash_eastern", "US/Eastern"),
        ("europe_slash_berlin", "Europe/Berlin"),
        ("America/Chicago", "America/Chicago"),
        ("mars_slash_olympus", None),
        ("", None),
        (None, None),
    ],
)
def test_hubspot_time_zones_become_iana_zones(value, zone) -> None:
    assert iana_zone(value) == zone


@pytest.mark.parametrize(("value", "expected"), [("false", False), ("TRUE", True), (None, None)])
def test_opt_out_strings_become_booleans(value, expected) -> None:
    assert flatten_contact(contact(1, hs_email_optout=value))["email_opt_out"] is expected


def test_millisecond_times_are_read_too() -> None:
    raw = contact(1, lastmodifieddate=str(ms(NOW)))
    assert flatten_contact(raw)["updated_at"] == "2026-11-25T12:00:00.000Z"


# -- list: first and full runs ---------------------------------------------------------


@respx.mock
def test_a_first_run_lists_every_contact_page_by_page() -> None:
    route = respx.get(CONTACTS).mock(
        side_effect=[
            httpx.Response(
                200,
                json={
                    "results": [contact(1, 1000)],
                    "paging": {"next": {"after": "2", "link": "?after=2"}},
                },
            ),
            httpx.Response(200, json={"results": [contact(2, 2000)]}),
        ]
    )
    pages = list(connector().pages(None))
    first, second = route.calls
    params = first.request.url.params
    assert params["limit"] == "100" and "after" not in params
    assert params["properties"].split(",") == [
        "firstname",
        "lastname",
        "email",
        "phone",
        "mobilephone",
        "hs_timezone",
        "lifecyclestage",
        "hubspot_owner_id",
        "hs_email_optout",
        "hs_linkedin_url",
        "linkedin_url",
        "twitterhandle",
        "x_url",
        "facebook_url",
        "jobtitle",
        "lastmodifieddate",
        "createdate",
        "hs_object_id",
    ]
    assert second.request.url.params["after"] == "2"
    assert first.request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert json.loads(pages[0].cursor) == {
        "mode": "list",
        "after": "2",
        "started": NOW.isoformat(),
    }
    assert not pages[0].done and pages[1].done
    assert json.loads(pages[1].cursor) == {"since": NOW.isoformat()}
    assert [r["external_id"] for p in pages for r in p.records] == ["1", "2"]


@respx.mock
def test_full_lists_even_with_a_since_and_a_list_cursor_resumes() -> None:
    route = respx.get(CONTACTS).mock(return_value=httpx.Response(200, json={"results": []}))
    (page,) = connector().pages(json.dumps({"since": "2026-11-24T00:00:00+00:00"}), full=True)
    assert page.done and route.call_count == 1
    resumed = json.dumps({"mode": "list", "after": "77", "started": "2026-11-25T11:00:00+00:00"})
    (page,) = connector().pages(resumed, full=True)
    assert route.calls[-1].request.url.params["after"] == "77"
    assert json.loads(page.cursor) == {"since": "2026-11-25T11:00:00+00:00"}


@respx.mock
def test_a_list_after_that_repeats_is_stopped() -> None:
    respx.get(CONTACTS).mock(
        return_value=httpx.Response(
            200, json={"results": [contact(1)], "paging": {"next": {"after": "9"}}}
        )
    )
    with pytest.raises(PermanentError, match="pagination loop"):
        list(connector().pages(None))


# -- search: incremental runs ----------------------------------------------------------


@respx.mock
def test_an_incremental_run_searches_changes_since_the_last_start() -> None:
    since = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    route = respx.post(SEARCH).mock(
        side_effect=[
            httpx.Response(
                200,
                json={
                    "total": 3,
                    "results": [contact(5, ms(since)), contact(6, ms(since) + 1)],
                    "paging": {"next": {"after": "200", "link": "?after=200"}},
                },
            ),
            httpx.Response(200, json={"total": 3, "results": [contact(7, ms(since) + 2)]}),
        ]
    )
    pages = list(connector().pages(json.dumps({"since": since.isoformat()})))
    first, second = (json.loads(c.request.content) for c in route.calls)
    window = ms(since - timedelta(minutes=5))
    assert first == {
        "filterGroups": [
            {
                "filters": [
                    {"propertyName": "lastmodifieddate", "operator": "GTE", "value": str(window)}
                ]
            }
        ],
        "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
        "properties": first["properties"],
        "limit": 200,
    }
    assert {"lifecyclestage", "hs_email_optout", "hs_linkedin_url", "mobilephone"} <= set(
        first["properties"]
    )
    # The next page is a new query from the last instant read, never an ``after`` offset.
    next_start = {
        "propertyName": "lastmodifieddate",
        "operator": "GTE",
        "value": str(ms(since) + 1),
    }
    assert second == {**first, "filterGroups": [{"filters": [next_start]}]}
    assert json.loads(pages[0].cursor) == {
        "mode": "search",
        "since": since.isoformat(),
        "started": NOW.isoformat(),
        "window_start": ms(since) + 1,
        "last_id": None,
        "seen": ["6"],
    }
    assert pages[1].done and json.loads(pages[1].cursor) == {"since": NOW.isoformat()}
    assert [r["external_id"] for p in pages for r in p.records] == ["5", "6", "7"]


@respx.mock
def test_a_contact_edited_between_pages_shifts_nothing_past_the_search() -> None:
    start = ms(NOW - timedelta(days=1))
    rows = [(1_000 + i, start + i) for i in range(450)]
    backend = SearchBackend(rows)

    def answer(request: httpx.Request) -> httpx.Response:
        response = backend(request)
        if len(backend.bodies) == 1:
            # A recruiter edits contact 1000 (already read) before the next page: it moves
            # to the end of the sort and every row behind it shifts up one place.
            backend.rows = [(i, start + 10_000 if i == 1_000 else m) for i, m in backend.rows]
        return response

    respx.post(SEARCH).mock(side_effect=answer)
    since = (EPOCH + timedelta(milliseconds=start)).isoformat()
    pages = list(connector().pages(json.dumps({"since": since})))
    ids = [r["external_id"] for p in pages for r in p.records]
    assert set(ids) == {str(i) for i, _ in rows}
    assert ids.count("1000") == 2  # read again with its edit, which is right
    assert len(ids) == len(rows) + 1


@respx.mock
def test_a_killed_search_resumes_at_the_next_page() -> None:
    route = respx.post(SEARCH).mock(
        return_value=httpx.Response(
            200, json={"total": 1, "results": [contact(9, 1_795_000_000_000)]}
        )
    )
    cursor = {
        "mode": "search",
        "since": "2026-11-24T02:00:00+00:00",
        "started": "2026-11-25T11:00:00+00:00",
        "window_start": 1_795_000_000_000,
        "last_id": None,
        "seen": ["8", "9"],
    }
    (page,) = connector().pages(json.dumps(cursor))
    sent = json.loads(route.calls[0].request.content)
    assert "after" not in sent
    assert sent["filterGroups"][0]["filters"][0]["value"] == "1795000000000"
    assert page.records == []  # contact 9 at that instant was read before the kill
    assert page.done and json.loads(page.cursor) == {"since": "2026-11-25T11:00:00+00:00"}


@respx.mock
def test_more_than_10000_changes_are_read_in_windows_under_the_cap() -> None:
    start = ms(NOW - timedelta(days=1))
    # 10,650 changes, three to a millisecond: a single query would stop at 10,000.
    rows = [(100_000 + i, start + i // 3) for i in range(10_650)]
    backend = SearchBackend(rows)
    respx.post(SEARCH).mock(side_effect=backend)
    since = (EPOCH + timedelta(milliseconds=start)).isoformat()
    pages = list(connector().pages(json.dumps({"since": since})))
    ids = [r["external_id"] for p in pages for r in p.records]
    assert len(ids) == len(set(ids)) == 10_650
    assert not any("after" in b for b in backend.bodies)
    # One request per page, plus at most one for the rows re-read at each page's edge.
    assert len(backend.bodies) <= len(rows) // 200 + 2
    assert pages[-1].done and not any(p.problems for p in pages)


@respx.mock
def test_more_than_10000_changes_in_one_millisecond_are_read_by_id() -> None:
    start = ms(NOW - timedelta(days=1))
    crowded = start + 7
    rows = (
        [(1_000 + i, start + i) for i in range(5)]
        + [(50_000 + i, crowded) for i in range(10_300)]
        + [(900_000 + i, crowded + 1 + i) for i in range(40)]
    )
    backend = SearchBackend(rows)
    respx.post(SEARCH).mock(side_effect=backend)
    since = (EPOCH + timedelta(milliseconds=start)).isoformat()
    pages = list(connector().pages(json.dumps({"since": since})))
    ids = [r["external_id"] for p in pages for r in p.records]
    assert len(ids) == len(set(ids)) == len(rows)
    assert not any("after" in b for b in backend.bodies)
    by_id = [b for b in backend.bodies if b["sorts"][0]["propertyName"] == "hs_object_id"]
    assert by_id, "the crowded millisecond is read sorted by hs_object_id"
    filters = by_id[-1]["filterGroups"][0]["filters"]
    assert {(f["propertyName"], f["operator"]) for f in filters} == {
        ("lastmodifieddate", "GTE"),
        ("lastmodifieddate", "LT"),
        ("hs_object_id", "GT"),
    }
    assert int(filters[2]["value"]) > 50_000  # a second id window within the instant
    # After the crowded instant, the search goes on strictly after it.
    last = backend.bodies[-1]["filterGroups"][0]["filters"]
    assert last == [
        {"propertyName": "lastmodifieddate", "operator": "GTE", "value": str(crowded + 1)}
    ]


@respx.mock
def test_a_mid_run_cursor_inside_a_crowded_instant_resumes_there() -> None:
    route = respx.post(SEARCH).mock(
        side_effect=[
            httpx.Response(200, json={"results": [contact(70, 5)]}),
            httpx.Response(200, json={"results": [contact(80, 6)]}),
        ]
    )
    cursor = {
        "mode": "search",
        "since": "2026-11-24T02:00:00+00:00",
        "started": "2026-11-25T11:00:00+00:00",
        "window_start": 5,
        "last_id": "69",
        "seen": [],
    }
    pages = list(connector().pages(json.dumps(cursor)))
    first, second = (json.loads(c.request.content) for c in route.calls)
    assert first["filterGroups"][0]["filters"][2] == {
        "propertyName": "hs_object_id",
        "operator": "GT",
        "value": "69",
    }
    assert second["filterGroups"][0]["filters"] == [
        {"propertyName": "lastmodifieddate", "operator": "GTE", "value": "6"}
    ]
    assert [len(p.records) for p in pages] == [1, 1] and pages[-1].done


@respx.mock
def test_search_is_paced_to_four_requests_a_second() -> None:
    timer = ManualTimer()
    sent_at: list[float] = []
    rows = [(i, 1_000 + i) for i in range(2_400)]
    backend = SearchBackend(rows)

    def answer(request: httpx.Request) -> httpx.Response:
        sent_at.append(timer.now)
        return backend(request)

    respx.post(SEARCH).mock(side_effect=answer)
    pages = list(connector(timer).pages(json.dumps({"since": "1970-01-01T00:05:00+00:00"})))
    # 200 rows a page; each new query reads the last instant of the one before again.
    assert len(pages) == len(sent_at) == 13
    # No five searches inside one second.
    assert all(sent_at[i + 4] - sent_at[i] >= 1.0 for i in range(len(sent_at) - 4))


@respx.mock
def test_other_calls_use_the_general_rate() -> None:
    timer = ManualTimer()
    sent_at: list[float] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent_at.append(timer.now)
        return httpx.Response(201, json={"id": str(len(sent_at))})

    respx.post(f"{BASE}/crm/v3/objects/notes").mock(side_effect=answer)
    hubspot = connector(timer)
    for _ in range(10):
        hubspot.write_note(NoteRef("1"), "hi")
    gaps = [b - a for a, b in itertools.pairwise(sent_at)]
    assert all(gap == pytest.approx(1 / 9) for gap in gaps)  # 9 a second, not 4


@respx.mock
def test_a_429_with_hubspot_headers_is_retried() -> None:
    timer = ManualTimer()
    route = respx.post(SEARCH).mock(
        side_effect=[
            httpx.Response(
                429,
                # The published body is the daily limit's; the ten-second one names its policy.
                json={
                    **fixture("error_429.json"),
                    "message": "You have reached your ten_secondly_rolling limit.",
                    "policyName": "TEN_SECONDLY_ROLLING",
                },
                headers={
                    "X-HubSpot-RateLimit-Max": "190",
                    "X-HubSpot-RateLimit-Remaining": "0",
                    "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
                },
            ),
            httpx.Response(200, json={"results": [contact(1, 5)]}),
        ]
    )
    hubspot = connector(timer)
    (page,) = hubspot.pages(json.dumps({"since": "2026-11-24T00:00:00+00:00"}))
    assert page.done and route.call_count == 2 and hubspot.client.retries == 1
    assert sum(timer.slept) >= 10.0  # the window said nothing is left for 10 s


@respx.mock
def test_a_5xx_on_a_search_is_retried_because_a_search_only_reads() -> None:
    route = respx.post(SEARCH).mock(
        side_effect=[
            httpx.Response(502, text="Bad Gateway"),
            httpx.Response(503, json={"status": "error", "message": "unavailable"}),
            httpx.Response(200, json={"results": []}),
        ]
    )
    (page,) = connector().pages(json.dumps({"since": "2026-11-24T00:00:00+00:00"}))
    assert page.done and route.call_count == 3


@respx.mock
def test_a_500_on_a_task_create_is_not_resent() -> None:
    route = respx.post(f"{BASE}/crm/v3/objects/tasks").mock(
        return_value=httpx.Response(500, json={"status": "error", "message": "internal"})
    )
    with pytest.raises(PermanentError, match="HTTP 500"):
        connector().create_task(TaskSpec("1", None, "t", "b", NOW))
    assert route.call_count == 1


@respx.mock
def test_a_503_on_a_task_create_is_sent_again_as_nothing_was_handled() -> None:
    route = respx.post(f"{BASE}/crm/v3/objects/tasks").mock(
        side_effect=[
            httpx.Response(503, json={"status": "error", "message": "unavailable"}),
            httpx.Response(201, json={"id": "77", "properties": {}}),
        ]
    )
    assert connector().create_task(TaskSpec("1", None, "t", "b", NOW)) == "77"
    assert route.call_count == 2


@respx.mock
def test_401_names_the_token_setting_without_leaking_it() -> None:
    respx.get(CONTACTS).mock(
        return_value=httpx.Response(
            401,
            json={
                "status": "error",
                "message": "Authentication credentials not found.",
                "correlationId": "c0",
                "category": "INVALID_AUTHENTICATION",
            },
        )
    )
    with pytest.raises(ConfigError, match="HUBSPOT_ACCESS_TOKEN") as caught:
        list(connector().pages(None))
    assert TOKEN not in str(caught.value)


@respx.mock
def test_malformed_records_are_reported_and_the_page_goes_on() -> None:
    respx.get(CONTACTS).mock(
        return_value=httpx.Response(
            200,
            json={
                "results": [
                    contact(1, 5),
                    {"id": "2", "properties": "garbage"},
                    contact(3, lastmodifieddate="last Tuesday"),
                    "not a contact",
                    {"properties": {}},
                    contact(4, 6),
                ]
            },
        )
    )
    (page,) = connector().pages(None)
    assert [r["external_id"] for r in page.records] == ["1", "4"]
    assert [source for source, _ in page.problems] == ["2", "3", "?", "?"]
    assert "last Tuesday" in page.problems[1][1]


@respx.mock
def test_a_non_json_answer_names_the_url() -> None:
    respx.get(CONTACTS).mock(return_value=httpx.Response(200, text="<html>maintenance</html>"))
    with pytest.raises(
        PermanentError,
        match=r"GET https://api\.hubapi\.com/crm/v3/objects/contacts did not return JSON",
    ):
        list(connector().pages(None))


@respx.mock
def test_an_answer_without_results_points_at_the_base_url() -> None:
    respx.get(CONTACTS).mock(return_value=httpx.Response(200, json={"contacts": []}))
    with pytest.raises(ConfigError, match="HUBSPOT_BASE_URL"):
        list(connector().pages(None))


def test_a_cursor_that_is_not_json_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="--full"):
        list(connector().pages("garbage"))


# -- writing ---------------------------------------------------------------------------


@respx.mock
def test_a_task_is_created_in_the_published_shape() -> None:
    route = respx.post(f"{BASE}/crm/v3/objects/tasks").mock(
        return_value=httpx.Response(
            201,
            json={
                "id": "8812",
                "properties": {},
                "createdAt": "x",
                "updatedAt": "x",
                "archived": False,
            },
        )
    )
    due = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)
    task_id = connector().create_task(
        TaskSpec("101", "64492917", "Connect on LinkedIn", "Send a connection request", due)
    )
    assert task_id == "8812"
    sent = json.loads(route.calls[0].request.content)
    published = fixture("task_create_request.json")
    assert set(sent) == set(published)
    assert set(sent["properties"]) == set(published["properties"])
    assert sent["properties"] == {
        "hs_timestamp": "2026-11-27T09:30:00.000Z",
        "hs_task_subject": "Connect on LinkedIn",
        "hs_task_body": "Send a connection request",
        "hs_task_status": "NOT_STARTED",
        "hs_task_priority": "MEDIUM",
        "hs_task_type": "TODO",
        "hubspot_owner_id": "64492917",
    }
    (association,) = sent["associations"]
    assert association == {
        "to": {"id": "101"},
        "types": [published["associations"][0]["types"][0]],
    }
    assert association["types"][0]["associationTypeId"] == 204


@respx.mock
def test_a_task_without_an_owner_leaves_the_owner_out() -> None:
    route = respx.post(f"{BASE}/crm/v3/objects/tasks").mock(
        return_value=httpx.Response(201, json={"id": "1"})
    )
    connector().create_task(TaskSpec("101", None, "t", "b", NOW))
    assert "hubspot_owner_id" not in json.loads(route.calls[0].request.content)["properties"]


@respx.mock
def test_a_created_object_without_an_id_is_not_resent() -> None:
    respx.post(f"{BASE}/crm/v3/objects/tasks").mock(return_value=httpx.Response(201, json={}))
    with pytest.raises(PermanentError, match="without the new task's id"):
        connector().create_task(TaskSpec("101", None, "t", "b", NOW))


@respx.mock
def test_a_note_goes_on_the_contact_timeline() -> None:
    route = respx.post(f"{BASE}/crm/v3/objects/notes").mock(
        return_value=httpx.Response(201, json={"id": "4401", "properties": {}})
    )
    assert connector().write_note(NoteRef("101"), "x" * 70_000) == "4401"
    sent = json.loads(route.calls[0].request.content)
    assert sent["properties"]["hs_timestamp"] == "2026-11-25T12:00:00.000Z"
    assert len(sent["properties"]["hs_note_body"]) == 65_536
    assert sent["associations"] == [
        {
            "to": {"id": "101"},
            "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 202}],
        }
    ]


@respx.mock
def test_task_states_are_read_in_batches_of_100() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        assert body["properties"] == ["hs_task_status"]
        ids = [i["id"] for i in body["inputs"]]
        known = [i for i in ids if i != "404"]
        results = [
            {"id": i, "properties": {"hs_task_status": "COMPLETED" if int(i) % 2 else "WAITING"}}
            for i in known
        ]
        status = 207 if len(known) < len(ids) else 200
        return httpx.Response(status, json={"status": "COMPLETE", "results": results})

    route = respx.post(f"{BASE}/crm/v3/objects/tasks/batch/read").mock(side_effect=answer)
    ids = [str(i) for i in range(1, 151)] + ["404", "1"]
    states = connector().task_status(ids)
    assert route.call_count == 2
    assert [len(json.loads(c.request.content)["inputs"]) for c in route.calls] == [100, 51]
    assert states["1"] == "done" and states["2"] == "open" and "404" not in states
    assert len(states) == 150


@respx.mock
def test_task_states_of_no_ids_ask_nothing_and_unknown_batches_are_empty() -> None:
    route = respx.post(f"{BASE}/crm/v3/objects/tasks/batch/read").mock(
        return_value=httpx.Response(
            404, json={"status": "error", "message": "not found", "category": "OBJECT_NOT_FOUND"}
        )
    )
    hubspot = connector()
    assert hubspot.task_status([]) == {} and route.call_count == 0
    assert hubspot.task_status(["1"]) == {}
