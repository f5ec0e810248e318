"""ActiveCampaign connector: keyset paging, changed deals, stage choice, errors, notes, tasks."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx

from connectors.activecampaign import ActiveCampaign, choose_deal, flatten_contact
from connectors.base import NoteRef, TaskSpec
from outreach.cadence import load_cadence_file
from outreach.clock import FixedClock, ManualTimer
from outreach.errors import ConfigError, PermanentError
from outreach.paths import default_config_dir
from outreach.records import normalize_record

ACCOUNT = "https://acme.api-us1.com"
API = f"{ACCOUNT}/api/3"
TOKEN = "ac-secret-token-0123456789"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "activecampaign"


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def connector(timer: ManualTimer | None = None, **kwargs) -> ActiveCampaign:
    timer = timer or ManualTimer()
    return ActiveCampaign(
        ACCOUNT,
        TOKEN,
        clock=FixedClock(NOW),
        sleep=timer.sleep,
        monotonic=timer.monotonic,
        **kwargs,
    )


def contact(contact_id: int, **fields) -> dict:
    """A contact as ``GET /contacts`` returns it (the reference's shape, trimmed)."""
    base = {
        "id": str(contact_id),
        "email": f"person{contact_id}@example.com",
        "phone": "+1 202 555 0134",
        "firstName": "Ada",
        "lastName": "Okafor",
        "orgid": "0",
        "cdate": "2026-09-01T09:00:00-05:00",
        "udate": "2026-11-20T10:00:00-05:00",
        "deleted": "0",
        "anonymized": "0",
    }
    base.update(fields)
    return base


def deal(deal_id: int, contact_id: int, *, status: str = "0", stage: str = "4", **fields) -> dict:
    base = {
        "id": str(deal_id),
        "contact": str(contact_id),
        "owner": "2",
        "group": "1",
        "stage": stage,
        "status": status,
        "title": "Backend Engineer",
        "cdate": "2026-09-01T09:00:00-05:00",
        "mdate": "2026-11-20T10:00:00-05:00",
    }
    base.update(fields)
    return base


def contacts_page(contacts: list, *, deals: list | None = None, **sideloads) -> httpx.Response:
    body: dict = {"contacts": contacts, "meta": {"total": str(len(contacts))}}
    body["deals"] = deals if deals is not None else []
    body.update(sideloads)
    return httpx.Response(200, json=body)


STAGE_LIST = {
    "dealStages": [
        {"id": "1", "title": "To Contact", "group": "1"},
        {"id": "4", "title": "Interview", "group": "1"},
    ],
    "meta": {"total": "2"},
}


def query(request: httpx.Request) -> dict[str, list[str]]:
    return parse_qs(urlsplit(str(request.url)).query)


# -- records ---------------------------------------------------------------------------


def test_the_published_examples_flatten_and_normalise() -> None:
    """The reference's list examples (contacts, deals, stages, tags, fields) read as records."""
    contacts = fixture("contacts_list.json")["contacts"]
    deals = fixture("deals_list.json")["deals"]
    stages = {s["id"]: s["title"] for s in fixture("deal_stages_list.json")["dealStages"]}
    tags = {t["id"]: t["tag"] for t in fixture("tags_list.json")["tags"]}
    assert stages == {"15": "Initial Contact", "16": "Qualifications - Low"}
    # The published deals belong to contacts 39 and 44; give the open one to contact 5.
    open_deal = dict(deals[0], contact="5", stage="16")
    record = flatten_contact(
        next(c for c in contacts if c["id"] == "5"),
        tags=[tags["1"], tags["3"]],
        deals=[open_deal, deals[2]],  # the third published deal has no status: ignored
        stage_titles=stages,
    )
    assert record == {
        "source": "activecampaign",
        "external_id": "5",
        "first_name": None,
        "last_name": None,
        "email": "adam@activecampaign.com",
        "phone": None,
        "tags": ["one", "three"],
        "updated_at": "2018-09-12T22:00:00+00:00",
        "stage": "Qualifications - Low",
        "stage_entered_at": "2019-09-06T16:29:48+00:00",
        "owner_id": "1",
        "job_title": "Able Hyena",
    }
    won = flatten_contact(contacts[0], deals=[dict(deals[1], contact="5")])
    assert won["stage"] == "hired" and won["stage_entered_at"] == "2017-02-06T18:21:12+00:00"
    config = load_cadence_file(default_config_dir() / "cadences.yaml")
    assert config.canonical_stage("activecampaign", "Phone Screen") == "screening"
    normalised = normalize_record(
        flatten_contact(contact(9), deals=[deal(1, 9)], stage_titles={"4": "Interview"}),
        where="activecampaign",
        default_region="US",
        canonical_stage=config.canonical_stage,
        strict_contacts=False,
    )
    assert normalised.stage == "interview" and normalised.email == "person9@example.com"
    assert normalised.phone is not None and normalised.owner_id == "2"


def test_custom_fields_pass_through_by_personalisation_tag() -> None:
    fields = {f["id"]: f for f in fixture("fields_list.json")["fields"]}
    assert fields["1"]["perstag"] == "PERSONALIZEDTAG"
    record = flatten_contact(
        contact(3),
        field_values=[
            {"contact": "3", "field": "1", "value": "blue"},
            {"contact": "3", "field": "7", "value": "https://www.linkedin.com/in/ada"},
            {"contact": "3", "field": "8", "value": "hacker@example.com"},  # may not win
            {"contact": "3", "field": "9", "value": ""},
        ],
        field_names={"1": "personalizedtag", "7": "linkedin_url", "8": "email", "9": "empty"},
    )
    assert record["personalizedtag"] == "blue"
    assert record["linkedin_url"] == "https://www.linkedin.com/in/ada"
    assert record["email"] == "person3@example.com" and "empty" not in record


@pytest.mark.parametrize(
    ("deals", "stage"),
    [
        (
            [
                deal(1, 1, status="0", stage="1"),
                deal(2, 1, status="1", mdate="2020-01-01T00:00:00Z"),
            ],
            "hired",
        ),
        (
            [
                deal(1, 1, stage="1", mdate="2026-11-01T00:00:00Z"),
                deal(2, 1, stage="4", mdate="2026-11-02T00:00:00Z"),
                deal(3, 1, status="2", mdate="2026-11-03T00:00:00Z"),
            ],
            "Interview",
        ),
        ([deal(1, 1, status="2"), deal(2, 1, status="2")], "rejected"),
        ([], None),
    ],
)
def test_the_stage_is_a_won_deal_else_the_latest_open_one_else_a_lost_one(deals, stage) -> None:
    record = flatten_contact(
        contact(1), deals=deals, stage_titles={"1": "To Contact", "4": "Interview"}
    )
    assert record.get("stage") == stage


def test_equal_change_times_pick_the_newest_deal() -> None:
    chosen = choose_deal([deal(7, 1, stage="1"), deal(9, 1, stage="4"), "junk", {"status": "5"}])
    assert chosen is not None and chosen["id"] == "9"


@pytest.mark.parametrize(
    "fields",
    [{"id": None}, {"id": "x1"}, {"firstName": {"a": 1}}, {"udate": "yesterday"}, {"email": 5}],
)
def test_wrong_shapes_raise(fields: dict) -> None:
    with pytest.raises((TypeError, ValueError)):
        flatten_contact(contact(1, **fields))


# -- paging and cursors ----------------------------------------------------------------


@respx.mock
def test_a_first_run_pages_contacts_by_id_with_their_sideloads() -> None:
    respx.get(f"{API}/dealStages").mock(return_value=httpx.Response(200, json=STAGE_LIST))
    respx.get(f"{API}/tags").mock(
        return_value=httpx.Response(200, json={"tags": [{"id": "3", "tag": "Referral"}]})
    )
    respx.get(f"{API}/fields").mock(
        return_value=httpx.Response(200, json={"fields": [{"id": "2", "perstag": "TIMEZONE"}]})
    )
    first = [contact(i) for i in range(1, 101)]
    route = respx.get(f"{API}/contacts").mock(
        side_effect=[
            contacts_page(
                first,
                deals=[deal(1, 1)],
                contactTags=[{"contact": "1", "tag": "3"}],
                fieldValues=[{"contact": "1", "field": "2", "value": "America/Chicago"}],
            ),
            contacts_page([contact(101)], deals=[deal(2, 101, status="2")]),
        ]
    )
    ac = connector()
    pages = list(ac.pages(None))
    assert [len(p.records) for p in pages] == [100, 1]
    one = pages[0].records[0]
    assert one["stage"] == "Interview" and one["tags"] == ["Referral"]
    assert one["timezone"] == "America/Chicago" and pages[1].records[0]["stage"] == "rejected"
    q1, q2 = (query(c.request) for c in route.calls)
    assert q1 == {
        "limit": ["100"],
        "orders[id]": ["ASC"],
        "include": ["contactTags,fieldValues,deals"],
    }
    assert q2["id_greater"] == ["100"] and "filters[updated_after]" not in q2
    assert json.loads(pages[0].cursor)["after_id"] == "100" and not pages[0].done
    assert json.loads(pages[1].cursor) == {"since": NOW.isoformat()} and pages[1].done
    assert all(c.request.headers["Api-Token"] == TOKEN for c in respx.calls)


@respx.mock
def test_an_incremental_run_reads_changed_contacts_then_the_contacts_of_changed_deals() -> None:
    since = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
    respx.get(f"{API}/dealStages").mock(return_value=httpx.Response(200, json=STAGE_LIST))
    contacts = respx.get(f"{API}/contacts").mock(
        side_effect=[
            contacts_page([contact(4)], deals=[deal(1, 4)]),
            contacts_page([contact(8), contact(9)], deals=[deal(2, 8), deal(3, 9, status="1")]),
        ]
    )
    deals = respx.get(f"{API}/deals").mock(
        return_value=httpx.Response(
            200, json={"deals": [deal(2, 8), deal(3, 9), deal(4, 8)], "meta": {"total": 3}}
        )
    )
    pages = list(connector().pages(json.dumps({"since": since.isoformat()})))
    assert [[r["external_id"] for r in p.records] for p in pages] == [["4"], ["8", "9"]]
    assert pages[1].records[1]["stage"] == "hired"
    first = query(contacts.calls[0].request)
    assert first["filters[updated_after]"] == ["2026-11-24T02:55:00+00:00"]
    assert json.loads(pages[0].cursor)["phase"] == "deals"
    dq = query(deals.calls[0].request)
    assert dq["filters[updated_after]"] == ["2026-11-24T02:55:00+00:00"]
    assert dq["orders[cdate]"] == ["ASC"] and dq["offset"] == ["0"]
    assert query(contacts.calls[1].request)["ids[]"] == ["8", "9"]
    assert json.loads(pages[-1].cursor) == {"since": NOW.isoformat()} and pages[-1].done


@respx.mock
def test_a_killed_run_resumes_at_the_committed_page_in_either_phase() -> None:
    respx.get(f"{API}/dealStages").mock(return_value=httpx.Response(200, json=STAGE_LIST))
    started = "2026-11-25T11:00:00+00:00"
    mid_contacts = {
        "phase": "contacts",
        "since": "2026-11-24T00:00:00+00:00",
        "started": started,
        "full": False,
        "after_id": "300",
    }
    contacts = respx.get(f"{API}/contacts").mock(return_value=contacts_page([]))
    deals = respx.get(f"{API}/deals").mock(
        return_value=httpx.Response(200, json={"deals": [], "meta": {"total": 0}})
    )
    pages = list(connector().pages(json.dumps(mid_contacts)))
    assert query(contacts.calls[0].request)["id_greater"] == ["300"]
    assert json.loads(pages[-1].cursor) == {"since": started}
    mid_deals = {**mid_contacts, "phase": "deals", "offset": 200, "after_id": None}
    list(connector().pages(json.dumps(mid_deals)))
    assert query(deals.calls[-1].request)["offset"] == ["200"]
    assert contacts.call_count == 1  # the contacts phase was not read again


@respx.mock
def test_full_reads_everything_and_an_interrupted_full_run_resumes_as_full() -> None:
    route = respx.get(f"{API}/contacts").mock(return_value=contacts_page([contact(1)]))
    incremental = json.dumps(
        {"phase": "contacts", "since": "2026-11-01T00:00:00Z", "after_id": "9"}
    )
    (page,) = list(connector().pages(incremental, full=True))
    assert "id_greater" not in query(route.calls[0].request)
    assert "filters[updated_after]" not in query(route.calls[0].request) and page.done
    full_cursor = json.dumps(
        {"phase": "contacts", "since": None, "started": "x", "full": True, "after_id": "50"}
    )
    list(connector().pages(full_cursor, full=True))
    assert query(route.calls[-1].request)["id_greater"] == ["50"]


@respx.mock
def test_an_id_greater_that_makes_no_progress_is_stopped() -> None:
    respx.get(f"{API}/contacts").mock(
        return_value=contacts_page([contact(i) for i in range(1, 101)])
    )
    cursor = json.dumps({"phase": "contacts", "since": None, "started": "x", "after_id": "100"})
    with pytest.raises(PermanentError, match="pagination loop"):
        list(connector().pages(cursor))


@respx.mock
def test_without_sideloaded_deals_each_contact_s_deals_are_read() -> None:
    respx.get(f"{API}/dealStages").mock(return_value=httpx.Response(200, json=STAGE_LIST))
    respx.get(f"{API}/contacts").mock(
        return_value=httpx.Response(200, json={"contacts": [contact(5)], "meta": {"total": "1"}})
    )
    per_contact = respx.get(f"{API}/contacts/5/deals").mock(
        return_value=httpx.Response(200, json={"deals": [deal(1, 5, stage="1")]})
    )
    (page,) = list(connector().pages(None))
    assert per_contact.called and page.records[0]["stage"] == "To Contact"


# -- errors ----------------------------------------------------------------------------


@respx.mock
def test_429_waits_for_retry_after_then_succeeds() -> None:
    timer = ManualTimer()
    route = respx.get(f"{API}/contacts").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "3"}, json={"message": "Too Many"}),
            contacts_page([contact(1)]),
        ]
    )
    (page,) = list(connector(timer).pages(None))
    assert route.call_count == 2 and len(page.records) == 1 and 3.0 in timer.slept


@respx.mock
def test_a_server_that_ignores_the_offset_stops_the_paging() -> None:
    same = {"tags": [{"id": str(i), "tag": "t"} for i in range(100)]}
    route = respx.get(f"{API}/tags").mock(return_value=httpx.Response(200, json=same))
    with pytest.raises(PermanentError, match="same page again"):
        connector(ManualTimer()).tag_names()
    assert route.call_count == 2


@respx.mock
def test_requests_are_paced_under_five_a_second_and_a_spent_window_holds() -> None:
    timer = ManualTimer()
    spent = {"RateLimit-Limit": "2", "RateLimit-Remaining": "0"}

    def full_page(start: int) -> dict:
        return {"tags": [{"id": str(i), "tag": "t"} for i in range(start, start + 100)]}

    respx.get(f"{API}/tags").mock(
        side_effect=[
            httpx.Response(200, headers=spent, json=full_page(0)),
            httpx.Response(200, json=full_page(100)),
            httpx.Response(200, json={"tags": []}),
        ]
    )
    ac = connector(timer)
    ac.tag_names()
    # The spent window of a 2/s account held the second request for half a second (more
    # than the pace asks); the third went at the pace, 1/4.5 s after the second.
    assert ActiveCampaign.requests_per_second is not None
    assert ActiveCampaign.requests_per_second < 5
    assert timer.slept == [pytest.approx(0.5), pytest.approx(1 / 4.5)]


@respx.mock
def test_5xx_on_a_read_is_retried_then_gives_up_with_a_clear_error() -> None:
    route = respx.get(f"{API}/contacts").mock(
        side_effect=[httpx.Response(502, text="bad gateway"), contacts_page([contact(1)])]
    )
    (page,) = list(connector().pages(None))
    assert route.call_count == 2 and page.records[0]["external_id"] == "1"
    respx.get(f"{API}/contacts").mock(return_value=httpx.Response(500, json={"message": "x"}))
    with pytest.raises(Exception, match="HTTP 500") as info:
        list(connector().pages(None))
    assert "activecampaign" in str(info.value)


@respx.mock
@pytest.mark.parametrize("status", [401, 403])
def test_a_bad_token_names_the_setting_and_never_the_token(status: int) -> None:
    respx.get(f"{API}/contacts").mock(
        return_value=httpx.Response(status, json={"message": "Forbidden"})
    )
    with pytest.raises(ConfigError, match="ACTIVECAMPAIGN_API_TOKEN") as info:
        list(connector().pages(None))
    assert TOKEN not in str(info.value)


@respx.mock
def test_malformed_contacts_are_reported_by_id_and_the_page_goes_on() -> None:
    respx.get(f"{API}/contacts").mock(
        return_value=contacts_page(
            [contact(1), contact(2, firstName=["x"]), "junk", contact(3, udate="soon"), contact(4)]
        )
    )
    (page,) = list(connector().pages(None))
    assert [r["external_id"] for r in page.records] == ["1", "4"]
    assert [p[0] for p in page.problems] == ["2", "?", "3"]
    assert all("unreadable contact" in p[1] for p in page.problems)


@respx.mock
def test_answers_that_are_not_the_api_point_at_the_url_setting() -> None:
    respx.get(f"{API}/contacts").mock(return_value=httpx.Response(200, text="<html>login</html>"))
    with pytest.raises(PermanentError, match="did not return JSON"):
        list(connector().pages(None))
    respx.get(f"{API}/contacts").mock(return_value=httpx.Response(200, json={"items": []}))
    with pytest.raises(ConfigError, match="ACTIVECAMPAIGN_API_URL"):
        list(connector().pages(None))


def test_a_cursor_that_is_not_json_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="--full"):
        list(connector().pages("not json"))


@respx.mock
def test_an_api_url_given_with_api_3_is_used_as_the_account_url() -> None:
    route = respx.get(f"{API}/contacts").mock(return_value=contacts_page([]))
    ac = ActiveCampaign(f"{ACCOUNT}/api/3/", TOKEN, clock=FixedClock(NOW))
    list(ac.pages(None))
    assert route.called


# -- writing ---------------------------------------------------------------------------


@respx.mock
def test_a_note_goes_on_the_contact_in_the_published_shape() -> None:
    route = respx.post(f"{API}/notes").mock(
        return_value=httpx.Response(201, json=fixture("note_create_response.json"))
    )
    assert connector().write_note(NoteRef("2"), "This is the text of the note") == "2"
    sent = json.loads(route.calls[0].request.content)
    assert sent == {
        "note": {"note": "This is the text of the note", "relid": "2", "reltype": "Subscriber"}
    }
    published = fixture("note_create_request.json")["note"]
    assert set(sent["note"]) == set(published) and sent["note"]["reltype"] == published["reltype"]


@respx.mock
def test_a_task_is_created_in_the_published_shape() -> None:
    types = respx.get(f"{API}/dealTasktypes").mock(
        return_value=httpx.Response(
            200,
            json={"dealTasktypes": [{"id": "1", "title": "Call"}, {"id": "3", "title": "To-do"}]},
        )
    )
    route = respx.post(f"{API}/dealTasks").mock(
        return_value=httpx.Response(201, json=fixture("deal_task_create_response.json"))
    )
    ac = connector()
    due = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)
    assert ac.create_task(TaskSpec("7", "2", "Connect on LinkedIn", "Say hi", due)) == "1"
    assert ac.create_task(TaskSpec("7", None, "Call Ada", "Ring", due)) == "1"
    first, second = (json.loads(c.request.content)["dealTask"] for c in route.calls)
    published = fixture("deal_task_create_request.json")["dealTask"]
    assert {"title", "ownerType", "relid", "status", "note", "duedate", "dealTasktype"} <= set(
        published
    ) & set(first)
    assert first["relid"] == "7" and first["ownerType"] == "contact"
    assert first["duedate"] == "2026-11-26T15:00:00+00:00" and first["assignee"] == "2"
    assert first["dealTasktype"] == "3" and second["dealTasktype"] == "1"
    assert "assignee" not in second and types.call_count == 1


@respx.mock
def test_an_account_without_task_types_is_a_config_error() -> None:
    respx.get(f"{API}/dealTasktypes").mock(
        return_value=httpx.Response(200, json={"dealTasktypes": []})
    )
    with pytest.raises(ConfigError, match="task types"):
        connector().create_task(TaskSpec("7", None, "x", "y", NOW))


@respx.mock
def test_a_500_on_a_note_is_not_resent_but_a_503_or_429_is() -> None:
    route = respx.post(f"{API}/notes").mock(
        side_effect=[
            httpx.Response(500, json={"message": "oops"}),
            httpx.Response(503, json={"message": "busy"}),
            httpx.Response(429, headers={"Retry-After": "1"}, json={"message": "slow"}),
            httpx.Response(201, json={"note": {"id": "12"}}),
        ]
    )
    ac = connector()
    with pytest.raises(PermanentError, match="HTTP 500"):
        ac.write_note(NoteRef("2"), "x")
    assert route.call_count == 1  # written once at most: never blindly re-sent
    assert ac.write_note(NoteRef("2"), "x") == "12"
    assert route.call_count == 4


@respx.mock
def test_a_created_object_without_an_id_is_not_resent() -> None:
    route = respx.post(f"{API}/notes").mock(return_value=httpx.Response(201, json={"note": {}}))
    with pytest.raises(PermanentError, match="without the new note's id"):
        connector().write_note(NoteRef("2"), "x")
    assert route.call_count == 1


@respx.mock
def test_task_states_read_done_open_and_skip_unknown_ids() -> None:
    respx.get(f"{API}/dealTasks/1").mock(
        return_value=httpx.Response(200, json={"dealTask": {"id": "1", "status": 1}})
    )
    respx.get(f"{API}/dealTasks/2").mock(
        return_value=httpx.Response(200, json={"dealTask": {"id": "2", "status": 0}})
    )
    respx.get(f"{API}/dealTasks/3").mock(
        return_value=httpx.Response(404, json={"message": "No Result found for DealTask with id 3"})
    )
    assert connector().task_status(["1", "2", "3", "x"]) == {"1": "done", "2": "open"}
