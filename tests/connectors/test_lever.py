"""Lever connector: paging by next token, cursors, archive reasons, stages, errors, notes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import respx

from connectors.base import NoteRef, TaskSpec
from connectors.lever import Lever, flatten_opportunity
from outreach.cadence import load_cadence_file
from outreach.clock import FixedClock, ManualTimer
from outreach.errors import ConfigError, PermanentError
from outreach.paths import default_config_dir
from outreach.records import normalize_record

BASE = "https://api.lever.co/v1"
KEY = "lever-secret-key-123"
USER = "a1b2c3d4-0000-4000-8000-000000000001"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
HIRED, NOT_HIRED = "reason-hired", "reason-underqualified"
REASONS = [
    {"id": HIRED, "text": "Hired", "status": "active", "type": "hired"},
    {"id": NOT_HIRED, "text": "Underqualified", "status": "active", "type": "non-hired"},
]


def ms(at: datetime) -> int:
    return (at - EPOCH) // timedelta(milliseconds=1)


def connector(timer: ManualTimer | None = None, **kwargs) -> Lever:
    timer = timer or ManualTimer()
    kwargs.setdefault("user_id", USER)
    return Lever(KEY, clock=FixedClock(NOW), sleep=timer.sleep, monotonic=timer.monotonic, **kwargs)


def opportunity(opportunity_id: str, **fields) -> dict:
    """An opportunity as ``GET /opportunities?expand=stage&expand=owner`` returns it."""
    base = {
        "id": opportunity_id,
        "name": "Ada Lovelace Byron",
        "headline": "Analytical Engines Ltd, University of London",
        "contact": f"contact-{opportunity_id}",
        "emails": ["ada@example.com", "ada.work@example.com"],
        "phones": [
            {"type": "skype", "value": "ada.skype"},
            {"type": "work", "value": "+1 202 555 0199"},
            {"type": "mobile", "value": "(202) 555-0134"},
        ],
        "links": ["https://ada.example.com", "https://www.LinkedIn.com/in/ada-lovelace"],
        "stage": {"id": "stage-phone", "text": "Phone screen"},
        "stageChanges": [],
        "confidentiality": "non-confidential",
        "archived": None,
        "owner": {
            "id": USER,
            "name": "Maria Chen",
            "email": "maria.chen@example.com",
            "username": "maria.chen",
        },
        "tags": ["Engineering", "Referral"],
        "createdAt": 1407460071043,
        "updatedAt": 1407460080000,
        "lastAdvancedAt": 1407460075000,
        "dataProtection": None,
        "applications": ["application-1"],
    }
    base.update(fields)
    return base


def listing(data: list, next_token: str | None = None) -> httpx.Response:
    body: dict = {"data": data, "hasNext": next_token is not None}
    if next_token is not None:
        body["next"] = next_token
    return httpx.Response(200, json=body)


# -- flattening ------------------------------------------------------------------------


def test_an_opportunity_flattens_and_normalises_with_the_default_stage_map() -> None:
    record = flatten_opportunity(opportunity("o1"), {})
    assert record["source"] == "lever" and record["external_id"] == "o1"
    assert (record["first_name"], record["last_name"]) == ("Ada", "Lovelace Byron")
    assert record["email"] == "ada@example.com"
    assert record["phone"] == "(202) 555-0134"  # mobile before work; skype never
    assert record["linkedin_url"] == "https://www.LinkedIn.com/in/ada-lovelace"
    assert record["stage"] == "Phone screen"
    assert record["owner_id"] == USER and record["recruiter_name"] == "Maria Chen"
    assert record["recruiter_email"] == "maria.chen@example.com"
    assert record["updated_at"] == "2014-08-08T01:08:00+00:00"
    assert record["stage_entered_at"] == "2014-08-08T01:07:55+00:00"
    # The headline is the candidate's own, not the job: a custom field, no job_title.
    assert record["job_title"] is None and record["headline"].startswith("Analytical")
    assert record["lever_contact"] == "contact-o1"
    config = load_cadence_file(default_config_dir() / "cadences.yaml")
    normal = normalize_record(
        record,
        where="lever",
        default_region="US",
        canonical_stage=config.canonical_stage,
        strict_contacts=False,
    )
    assert normal.stage == "screening" and normal.source_stage == "Phone screen"
    assert normal.phone is not None and normal.phone.e164 == "+12025550134"
    assert normal.linkedin_url and "linkedin.com/in/ada-lovelace" in normal.linkedin_url
    assert normal.custom == {
        "headline": "Analytical Engines Ltd, University of London",
        "lever_contact": "contact-o1",
    }
    assert normal.email_opt_out is False and normal.tags == ["Engineering", "Referral"]
    assert normal.source_updated_at == datetime(2014, 8, 8, 1, 8, tzinfo=UTC)


@pytest.mark.parametrize(
    ("reason", "stage"), [(HIRED, "hired"), (NOT_HIRED, "rejected"), ("gone", "rejected")]
)
def test_archived_opportunities_map_by_reason_type(reason: str, stage: str) -> None:
    types = {HIRED: "hired", NOT_HIRED: "non-hired"}
    archived = {"archivedAt": 1407460090000, "reason": reason}
    record = flatten_opportunity(opportunity("o1", archived=archived), types)
    assert record["stage"] == stage
    assert record["stage_entered_at"] == "2014-08-08T01:08:10+00:00"  # when it was archived
    config = load_cadence_file(default_config_dir() / "cadences.yaml")
    normal = normalize_record(
        record,
        where="lever",
        default_region="US",
        canonical_stage=config.canonical_stage,
        strict_contacts=False,
    )
    assert normal.stage == stage


def test_owner_as_an_id_consent_withdrawn_and_created_at_fallback() -> None:
    raw = opportunity(
        "o1",
        owner="user-9",
        updatedAt=None,
        dataProtection={"contact": {"allowed": False, "expiresAt": None}},
        phones=[{"type": "skype", "value": "only.skype"}],
    )
    record = flatten_opportunity(raw, {})
    assert record["owner_id"] == "user-9" and record["recruiter_name"] is None
    assert record["email_opt_out"] is True
    assert record["phone"] is None
    assert record["updated_at"] == "2014-08-08T01:07:51.043000+00:00"


def test_job_title_only_from_an_expanded_posting() -> None:
    raw = opportunity("o1", applications=[{"id": "a1", "posting": {"text": "Data Scientist"}}])
    assert flatten_opportunity(raw, {})["job_title"] == "Data Scientist"


@pytest.mark.parametrize(
    "fields",
    [{"name": {"first": "x"}}, {"emails": "a@example.com"}, {"archived": "yes"}, {"stage": 3}],
)
def test_wrong_shapes_raise(fields: dict) -> None:
    with pytest.raises(TypeError):
        flatten_opportunity(opportunity("o1", **fields), {})


# -- paging and cursors ----------------------------------------------------------------


@respx.mock
def test_pages_follow_next_tokens_with_the_same_filters() -> None:
    route = respx.get(f"{BASE}/opportunities").mock(
        side_effect=[
            listing([opportunity("o1"), opportunity("o2")], "tok-1"),
            listing([opportunity("o3")], "tok-2"),
            listing([opportunity("o4")]),
        ]
    )
    pages = list(connector().pages(json.dumps({"since": "2026-11-24T02:00:00+00:00"})))
    assert [[r["external_id"] for r in p.records] for p in pages] == [["o1", "o2"], ["o3"], ["o4"]]
    since_ms = str(ms(datetime(2026, 11, 24, 1, 55, tzinfo=UTC)))  # five minutes of overlap
    for call, offset in zip(route.calls, [None, "tok-1", "tok-2"], strict=True):
        params = call.request.url.params
        assert params["limit"] == "100"
        assert params.get_list("expand") == ["stage", "owner"]
        assert params["confidentiality"] == "all"
        assert params["updated_at_start"] == since_ms
        assert params.get("offset") == offset
        assert call.request.headers["Authorization"].startswith("Basic ")
    assert json.loads(pages[0].cursor) == {
        "since": "2026-11-24T02:00:00+00:00",
        "offset": "tok-1",
        "started": NOW.isoformat(),
        "full": False,
    }
    assert not pages[0].done and not pages[1].done
    assert pages[2].done and json.loads(pages[2].cursor) == {"since": NOW.isoformat()}


@respx.mock
def test_a_first_run_asks_for_everything() -> None:
    route = respx.get(f"{BASE}/opportunities").mock(return_value=listing([]))
    (page,) = list(connector().pages(None))
    assert "updated_at_start" not in route.calls[0].request.url.params
    assert "offset" not in route.calls[0].request.url.params
    assert page.done and page.records == [] and page.problems == []


@respx.mock
def test_an_interrupted_run_resumes_at_the_committed_offset() -> None:
    route = respx.get(f"{BASE}/opportunities").mock(return_value=listing([opportunity("o9")]))
    cursor = json.dumps(
        {
            "since": "2026-11-24T02:00:00+00:00",
            "offset": "tok-7",
            "started": "2026-11-25T11:00:00+00:00",
            "full": False,
        }
    )
    (page,) = list(connector().pages(cursor))
    params = route.calls[0].request.url.params
    assert params["offset"] == "tok-7" and "updated_at_start" in params
    assert page.done and json.loads(page.cursor) == {"since": "2026-11-25T11:00:00+00:00"}


@respx.mock
def test_full_reads_everything_and_ignores_an_incremental_offset() -> None:
    route = respx.get(f"{BASE}/opportunities").mock(return_value=listing([opportunity("o1")]))
    cursor = json.dumps({"since": "2026-11-24T02:00:00+00:00", "offset": "tok", "full": False})
    (page,) = list(connector().pages(cursor, full=True))
    params = route.calls[0].request.url.params
    assert "updated_at_start" not in params and "offset" not in params
    assert json.loads(page.cursor) == {"since": NOW.isoformat()}


@respx.mock
def test_an_interrupted_full_run_resumes_as_a_full_run() -> None:
    route = respx.get(f"{BASE}/opportunities").mock(return_value=listing([]))
    cursor = json.dumps({"since": None, "offset": "tok-3", "started": "S", "full": True})
    (page,) = list(connector().pages(cursor, full=True))
    assert route.calls[0].request.url.params["offset"] == "tok-3"
    assert json.loads(page.cursor) == {"since": "S"}


# -- lookups ---------------------------------------------------------------------------


@respx.mock
def test_archive_reasons_are_read_once_and_map_hired_rejected_and_unknown() -> None:
    reasons = respx.get(f"{BASE}/archive_reasons").mock(
        side_effect=[listing(REASONS[:1], "r-2"), listing(REASONS[1:])]
    )
    respx.get(f"{BASE}/opportunities").mock(
        side_effect=[
            listing(
                [
                    opportunity("hired", archived={"archivedAt": 1, "reason": HIRED}),
                    opportunity("rejected", archived={"archivedAt": 1, "reason": NOT_HIRED}),
                ],
                "tok-1",
            ),
            listing([opportunity("unknown", archived={"archivedAt": 1, "reason": "new"})]),
        ]
    )
    lever = connector()
    records = [r for page in lever.pages(None) for r in page.records]
    assert {r["external_id"]: r["stage"] for r in records} == {
        "hired": "hired",
        "rejected": "rejected",
        "unknown": "rejected",
    }
    assert reasons.call_count == 2  # one read, two pages of reasons
    assert reasons.calls[1].request.url.params["offset"] == "r-2"
    respx.get(f"{BASE}/opportunities").mock(
        return_value=listing([opportunity("again", archived={"archivedAt": 1, "reason": HIRED})])
    )
    assert [r["stage"] for p in lever.pages(None) for r in p.records] == ["hired"]
    assert reasons.call_count == 2  # cached for the connector's life


@respx.mock
def test_archived_null_or_absent_is_active_and_needs_no_lookup() -> None:
    reasons = respx.get(f"{BASE}/archive_reasons").mock(return_value=listing(REASONS))
    stages = respx.get(f"{BASE}/stages").mock(return_value=listing([]))
    absent = opportunity("absent")
    del absent["archived"]
    respx.get(f"{BASE}/opportunities").mock(
        return_value=listing([opportunity("null", archived=None), absent])
    )
    (page,) = list(connector().pages(None))
    assert [r["stage"] for r in page.records] == ["Phone screen", "Phone screen"]
    assert not reasons.called and not stages.called


@respx.mock
def test_a_bare_stage_id_is_named_from_stages_once() -> None:
    stages = respx.get(f"{BASE}/stages").mock(
        return_value=listing([{"id": "s-offer", "text": "Offer"}])
    )
    respx.get(f"{BASE}/opportunities").mock(
        side_effect=[
            listing([opportunity("o1", stage="s-offer")], "t"),
            listing([opportunity("o2", stage="s-missing")]),
        ]
    )
    records = [r for page in connector().pages(None) for r in page.records]
    assert [r["stage"] for r in records] == ["Offer", None]
    assert stages.call_count == 1


# -- errors ----------------------------------------------------------------------------


@respx.mock
def test_429_waits_for_retry_after_then_succeeds() -> None:
    timer = ManualTimer()
    route = respx.get(f"{BASE}/opportunities").mock(
        side_effect=[
            httpx.Response(
                429,
                headers={"Retry-After": "3"},
                json={"code": "TooManyRequestsError", "message": "slow down"},
            ),
            listing([opportunity("o1")]),
        ]
    )
    (page,) = list(connector(timer).pages(None))
    assert route.call_count == 2 and page.done and len(page.records) == 1
    assert timer.slept == [3.0]


@respx.mock
def test_5xx_on_a_read_is_retried() -> None:
    route = respx.get(f"{BASE}/opportunities").mock(
        side_effect=[httpx.Response(503, text="busy"), listing([opportunity("o1")])]
    )
    (page,) = list(connector().pages(None))
    assert route.call_count == 2 and [r["external_id"] for r in page.records] == ["o1"]


@respx.mock
def test_401_names_the_credential_and_never_the_key() -> None:
    respx.get(f"{BASE}/opportunities").mock(
        return_value=httpx.Response(
            401, json={"code": "UnauthorizedError", "message": "Invalid API key"}
        )
    )
    with pytest.raises(ConfigError, match="LEVER_API_KEY") as info:
        list(connector().pages(None))
    assert KEY not in str(info.value)


@respx.mock
def test_malformed_records_are_reported_and_the_page_goes_on() -> None:
    respx.get(f"{BASE}/opportunities").mock(
        return_value=listing(
            [
                opportunity("good"),
                opportunity("bad-name", name={"first": "Ada"}),
                "garbage",
                {"name": "No Id"},
                opportunity("bad-emails", emails="ada@example.com"),
                opportunity("bad-time", updatedAt="yesterday"),
            ]
        )
    )
    (page,) = list(connector().pages(None))
    assert [r["external_id"] for r in page.records] == ["good"]
    problems = dict(page.problems)
    assert set(problems) == {"bad-name", "bad-emails", "bad-time", "?"}
    assert len(page.problems) == 5
    assert "name" in problems["bad-name"] and "emails" in problems["bad-emails"]
    assert "updatedAt" in problems["bad-time"]


@respx.mock
def test_a_non_json_answer_is_permanent_and_names_the_url() -> None:
    respx.get(f"{BASE}/opportunities").mock(
        return_value=httpx.Response(200, text="<html>maintenance</html>")
    )
    with pytest.raises(PermanentError, match=r"did not return JSON") as info:
        list(connector().pages(None))
    assert "api.lever.co/v1/opportunities" in str(info.value)


@pytest.mark.parametrize("body", [[], {"opportunities": []}, {"data": {"id": "o1"}}])
@respx.mock
def test_an_answer_without_a_data_list_points_at_the_base_url(body) -> None:
    respx.get(f"{BASE}/opportunities").mock(return_value=httpx.Response(200, json=body))
    with pytest.raises(ConfigError, match="LEVER_BASE_URL"):
        list(connector().pages(None))


@respx.mock
def test_a_repeating_next_token_is_stopped() -> None:
    respx.get(f"{BASE}/opportunities").mock(return_value=listing([opportunity("o1")], "same-token"))
    pages = connector().pages(None)
    first = next(pages)
    assert json.loads(first.cursor)["offset"] == "same-token"
    with pytest.raises(PermanentError, match="pagination loop"):
        next(pages)


@respx.mock
def test_has_next_without_a_token_does_not_finish_the_run() -> None:
    respx.get(f"{BASE}/opportunities").mock(
        return_value=httpx.Response(200, json={"data": [], "hasNext": True})
    )
    with pytest.raises(PermanentError, match="no next token"):
        list(connector().pages(None))


# -- notes and tasks -------------------------------------------------------------------


@respx.mock
def test_notes_are_written_as_the_user() -> None:
    route = respx.post(f"{BASE}/opportunities/o1/notes").mock(
        return_value=httpx.Response(201, json={"data": {"noteId": "note-1"}})
    )
    assert connector().write_note(NoteRef("o1"), "Email 'Hello' sent") == "note-1"
    request = route.calls[0].request
    assert request.url.params["perform_as"] == USER
    assert json.loads(request.content) == {"value": "Email 'Hello' sent", "secret": False}


@respx.mock
def test_a_note_id_may_come_as_id_or_not_at_all() -> None:
    respx.post(f"{BASE}/opportunities/o1/notes").mock(
        side_effect=[
            httpx.Response(201, json={"data": {"id": "n-2", "text": "x"}}),
            httpx.Response(204),
        ]
    )
    lever = connector()
    assert lever.write_note(NoteRef("o1"), "x") == "n-2"
    assert lever.write_note(NoteRef("o1"), "x") is None


@respx.mock
def test_a_note_is_not_retried_on_5xx() -> None:
    route = respx.post(f"{BASE}/opportunities/o1/notes").mock(
        return_value=httpx.Response(502, json={"code": "BadGateway", "message": "x"})
    )
    with pytest.raises(PermanentError, match="HTTP 502"):
        connector().write_note(NoteRef("o1"), "x")
    assert route.call_count == 1


def test_notes_need_lever_user_id() -> None:
    with pytest.raises(ConfigError, match="LEVER_USER_ID"):
        connector(user_id=None).write_note(NoteRef("o1"), "x")


@respx.mock
def test_tasks_become_notes_marked_as_tasks() -> None:
    route = respx.post(f"{BASE}/opportunities/o1/notes").mock(
        return_value=httpx.Response(201, json={"data": {"noteId": "n"}})
    )
    task = TaskSpec("o1", USER, "Call Ada", "About the offer", NOW)
    assert connector().create_task(task) is None
    assert json.loads(route.calls[0].request.content)["value"] == (
        "[Task, due 2026-11-25 12:00 UTC] Call Ada\n\nAbout the offer"
    )
