"""Bullhorn connector: sign-in and token rotation, keyset paging, submissions, errors, writes."""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest
import respx

from connectors.base import NoteRef, TaskSpec
from connectors.bullhorn import Bullhorn, flatten_candidate
from connectors.bullhorn_auth import BullhornLogin, RefreshTokenFile
from outreach.cadence import load_cadence_file
from outreach.clock import FixedClock, ManualTimer
from outreach.errors import ConfigError, PermanentError
from outreach.paths import default_config_dir
from outreach.records import normalize_record

AUTH = "https://auth.bullhornstaffing.com/oauth"
LOGIN = "https://rest.bullhornstaffing.com/rest-services"
REST = "https://rest99.bullhornstaffing.com/rest-services/e999"
FIXTURES = Path(__file__).parent.parent / "fixtures" / "bullhorn"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
FIRST_REFRESH = "rt-first-secret"


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def token_answers(count: int = 5) -> list[httpx.Response]:
    return [
        httpx.Response(
            200,
            json={"access_token": f"at-{n}", "expires_in": 600, "refresh_token": f"rt-{n}"},
        )
        for n in range(1, count + 1)
    ]


def mock_sign_in(sessions: int = 1) -> tuple[respx.Route, respx.Route]:
    token = respx.post(f"{AUTH}/token").mock(side_effect=token_answers(sessions + 2))
    login = respx.post(f"{LOGIN}/login").mock(
        side_effect=[
            httpx.Response(200, json={"BhRestToken": f"bh-{n}", "restUrl": REST + "/"})
            for n in range(1, sessions + 3)
        ]
    )
    return token, login


def connector(tmp_path: Path, timer: ManualTimer | None = None, **login_options) -> Bullhorn:
    timer = timer or ManualTimer()
    login_options.setdefault("refresh_token", FIRST_REFRESH)
    login = BullhornLogin(
        "client-id",
        "client-secret-value",
        auth_url=AUTH,
        login_url=LOGIN,
        token_file=RefreshTokenFile(tmp_path / "token", login_options.get("refresh_token")),
        **login_options,
    )
    return Bullhorn(login, clock=FixedClock(NOW), sleep=timer.sleep, monotonic=timer.monotonic)


def candidate(cid: int, modified: int, **fields) -> dict:
    base = {
        "id": cid,
        "firstName": "Ada",
        "lastName": f"Okafor{cid}",
        "email": f"ada{cid}@example.com",
        "mobile": "(202) 555-0134",
        "status": "Active",
        "owner": {"id": 5001, "firstName": "Maria", "lastName": "Chen"},
        "dateAdded": modified,
        "dateLastModified": modified,
        "isDeleted": False,
    }
    base.update(fields)
    return base


def query(data: list) -> httpx.Response:
    return httpx.Response(200, json={"start": 0, "count": len(data), "data": data})


def where_of(call) -> str:
    return parse_qs(call.request.url.query.decode())["where"][0]


# -- flattening ------------------------------------------------------------------------


def test_the_documented_candidate_and_submissions_flatten_and_normalise() -> None:
    first, second = fixture("query_candidate.json")["data"]
    submissions = fixture("query_jobsubmission.json")["data"]
    record = flatten_candidate(first, submissions)
    # The open submission wins over the newer closed one.
    assert record["stage"] == "Interview Scheduled"
    assert record["job_title"] == "Backend Engineer"
    assert record["owner_id"] == "5001" and record["recruiter_name"] == "Maria Chen"
    assert record["linkedin_url"] == "https://www.linkedin.com/in/alanzo-smith"
    assert record["sms_consent"] is True and record["email_opt_out"] is False
    config = load_cadence_file(default_config_dir() / "cadences.yaml")
    normal = normalize_record(
        record,
        where="t",
        default_region="US",
        canonical_stage=config.canonical_stage,
        default_source="bullhorn",
    )
    assert normal.stage == "interview" and normal.external_id == "5059165"

    lead = flatten_candidate(second, [])
    assert lead["stage"] == "New Lead" and lead["email_opt_out"] is True
    assert lead["phone"] == "+1 312 555 0171"
    assert config.canonical_stage("bullhorn", lead["stage"]) == "prospect"


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (["Placed"], "hired"),
        (["Client Rejected", "Offer Rejected"], "rejected"),
        (["Submitted", "Placed"], "applied"),  # an open submission before a closed one
    ],
)
def test_submission_statuses_map_through_the_default_stage_map(statuses, expected) -> None:
    config = load_cadence_file(default_config_dir() / "cadences.yaml")
    subs = [
        {"id": n, "status": s, "dateLastModified": 1000 + n, "candidate": {"id": 1}}
        for n, s in enumerate(statuses)
    ]
    record = flatten_candidate(candidate(1, 5), subs)
    assert config.canonical_stage("bullhorn", record["stage"]) == expected


@pytest.mark.parametrize(
    "fields", [{"firstName": {"x": 1}}, {"owner": "5001"}, {"dateLastModified": "yesterday"}]
)
def test_wrong_shapes_raise(fields: dict) -> None:
    with pytest.raises((TypeError, ValueError)):
        flatten_candidate(candidate(1, 5, **fields), [])


# -- sign-in -----------------------------------------------------------------------------


@respx.mock
def test_sign_in_rotates_the_refresh_token_and_keeps_it_private(tmp_path: Path) -> None:
    token, login = mock_sign_in()
    respx.get(f"{REST}/query/Candidate").mock(return_value=query([]))
    bullhorn = connector(tmp_path)
    list(bullhorn.pages(None))
    form = parse_qs(token.calls[0].request.content.decode())
    assert form["grant_type"] == ["refresh_token"] and form["refresh_token"] == [FIRST_REFRESH]
    assert parse_qs(login.calls[0].request.url.query.decode())["access_token"] == ["at-1"]
    stored = tmp_path / "token"
    assert json.loads(stored.read_text())["refresh_token"] == "rt-1"
    assert FIRST_REFRESH not in stored.read_text()
    assert os.stat(stored).st_mode & 0o777 == 0o600
    # The next process starts from the rotated token, not the dead one in the environment.
    connector(tmp_path).login.session()
    form = parse_qs(token.calls[1].request.content.decode())
    assert form["refresh_token"] == ["rt-1"]


@respx.mock
def test_a_new_token_in_the_environment_wins_over_an_older_file(tmp_path: Path) -> None:
    RefreshTokenFile(tmp_path / "token", "old-env-token").save("rotated-from-old")
    token, _ = mock_sign_in()
    connector(tmp_path, refresh_token="new-env-token").login.session()
    form = parse_qs(token.calls[0].request.content.decode())
    assert form["refresh_token"] == ["new-env-token"]


@respx.mock
def test_an_expired_session_signs_in_again_and_the_page_goes_on(tmp_path: Path) -> None:
    token, login = mock_sign_in(sessions=2)
    route = respx.get(f"{REST}/query/Candidate").mock(
        side_effect=[
            httpx.Response(401, json={"errorMessage": "Bad 'BhRestToken' or timed-out."}),
            query([]),
        ]
    )
    list(connector(tmp_path).pages(None))
    assert login.call_count == 2 and token.call_count == 2
    assert [c.request.headers["BhRestToken"] for c in route.calls] == ["bh-1", "bh-2"]
    # The second refresh used the token the first one returned.
    assert parse_qs(token.calls[1].request.content.decode())["refresh_token"] == ["rt-1"]


@respx.mock
def test_a_refused_refresh_token_is_a_config_error_without_secrets(tmp_path: Path) -> None:
    respx.post(f"{AUTH}/token").mock(
        return_value=httpx.Response(400, json={"error": "invalid_grant"})
    )
    with pytest.raises(ConfigError, match="BULLHORN_REFRESH_TOKEN") as info:
        connector(tmp_path).login.session()
    assert FIRST_REFRESH not in str(info.value) and "client-secret-value" not in str(info.value)


@respx.mock
def test_without_a_refresh_token_the_api_user_signs_in_with_a_code(tmp_path: Path) -> None:
    authorize = respx.get(f"{AUTH}/authorize").mock(
        return_value=httpx.Response(302, headers={"Location": "https://example.com/cb?code=C1"})
    )
    token, _ = mock_sign_in()
    bullhorn = connector(tmp_path, refresh_token=None, username="api.user", password="pw")
    assert bullhorn.login.session().token == "bh-1"
    assert parse_qs(authorize.calls[0].request.url.query.decode())["action"] == ["Login"]
    form = parse_qs(token.calls[0].request.content.decode())
    assert form["grant_type"] == ["authorization_code"] and form["code"] == ["C1"]
    assert json.loads((tmp_path / "token").read_text())["refresh_token"] == "rt-1"


@respx.mock
def test_a_wrong_password_names_the_settings(tmp_path: Path) -> None:
    respx.get(f"{AUTH}/authorize").mock(return_value=httpx.Response(200, text="<html>"))
    with pytest.raises(ConfigError, match="BULLHORN_USERNAME"):
        connector(tmp_path, refresh_token=None, username="u", password="p").login.session()


def test_no_credential_at_all_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="BULLHORN_REFRESH_TOKEN"):
        connector(tmp_path, refresh_token=None)


# -- paging --------------------------------------------------------------------------------


@respx.mock
def test_pages_are_keyed_on_date_last_modified_and_id(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(Bullhorn, "page_size", 2)
    mock_sign_in()
    route = respx.get(f"{REST}/query/Candidate").mock(
        side_effect=[
            query([candidate(1, 100), candidate(2, 200)]),
            query([candidate(3, 200), candidate(4, 300)]),
            query([candidate(5, 400)]),
        ]
    )
    subs = respx.get(f"{REST}/query/JobSubmission").mock(return_value=query([]))
    pages = list(connector(tmp_path).pages(None))
    assert [len(p.records) for p in pages] == [2, 2, 1] and pages[-1].done
    wheres = [where_of(c) for c in route.calls]
    assert wheres[0] == "isDeleted=false"
    assert "(dateLastModified>200 OR (dateLastModified=200 AND id>2))" in wheres[1]
    assert "(dateLastModified>300 OR (dateLastModified=300 AND id>4))" in wheres[2]
    params = parse_qs(route.calls[0].request.url.query.decode())
    assert params["orderBy"] == ["dateLastModified,id"] and params["count"] == ["2"]
    assert json.loads(pages[0].cursor)["after"] == [200, 2]
    assert json.loads(pages[-1].cursor) == {"since": NOW.isoformat()}
    assert "candidate.id IN (1,2)" in where_of(subs.calls[0])


@respx.mock
def test_an_interrupted_run_resumes_after_the_committed_key(tmp_path: Path) -> None:
    mock_sign_in()
    route = respx.get(f"{REST}/query/Candidate").mock(return_value=query([]))
    respx.get(f"{REST}/query/JobSubmission").mock(return_value=query([]))
    cursor = json.dumps(
        {"since": None, "phase": "candidates", "after": [200, 2], "started": "S", "full": False}
    )
    (page,) = list(connector(tmp_path).pages(cursor))
    assert "dateLastModified=200 AND id>2" in where_of(route.calls[0])
    assert json.loads(page.cursor) == {"since": "S"}


@respx.mock
def test_an_incremental_run_overlaps_then_reads_changed_submissions(tmp_path: Path) -> None:
    mock_sign_in()
    since = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    floor = int((since.timestamp() - 300) * 1000)
    route = respx.get(f"{REST}/query/Candidate").mock(
        side_effect=[query([candidate(1, floor + 10)]), query([candidate(9, 50)])]
    )
    subs = respx.get(f"{REST}/query/JobSubmission").mock(
        side_effect=[
            query([]),  # submissions of candidate 1
            query([{"id": 77, "dateLastModified": floor + 99, "candidate": {"id": 9}}]),
            query([{"id": 77, "status": "Placed", "candidate": {"id": 9}}]),
        ]
    )
    pages = list(connector(tmp_path).pages(json.dumps({"since": since.isoformat()})))
    assert f"dateLastModified>={floor}" in where_of(route.calls[0])
    assert json.loads(pages[0].cursor)["phase"] == "submissions"
    assert f"dateLastModified>={floor}" in where_of(subs.calls[1])
    assert "id IN (9)" in where_of(route.calls[1])
    assert pages[-1].done and pages[-1].records[0]["stage"] == "Placed"


@respx.mock
def test_a_page_that_does_not_move_is_stopped(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(Bullhorn, "page_size", 1)
    mock_sign_in()
    respx.get(f"{REST}/query/Candidate").mock(return_value=query([candidate(1, 100)]))
    respx.get(f"{REST}/query/JobSubmission").mock(return_value=query([]))
    with pytest.raises(PermanentError, match="pagination loop"):
        list(connector(tmp_path).pages(None))


@respx.mock
def test_429_waits_for_retry_after_then_succeeds(tmp_path: Path) -> None:
    timer = ManualTimer()
    mock_sign_in()
    route = respx.get(f"{REST}/query/Candidate").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "3"}, json={"errorMessage": "slow"}),
            query([candidate(1, 5)]),
        ]
    )
    respx.get(f"{REST}/query/JobSubmission").mock(return_value=query([]))
    (page,) = list(connector(tmp_path, timer).pages(None))
    assert route.call_count == 2 and len(page.records) == 1
    assert 3.0 in timer.slept


@respx.mock
def test_5xx_on_a_read_is_retried_then_gives_up_clearly(tmp_path: Path) -> None:
    mock_sign_in()
    route = respx.get(f"{REST}/query/Candidate").mock(
        return_value=httpx.Response(500, json={"errorMessage": "We had a problem"})
    )
    with pytest.raises(Exception, match="HTTP 500 on GET query/Candidate"):
        list(connector(tmp_path).pages(None))
    assert route.call_count == 5


@respx.mock
def test_malformed_records_are_reported_by_id_and_the_page_goes_on(tmp_path: Path) -> None:
    mock_sign_in()
    respx.get(f"{REST}/query/Candidate").mock(
        return_value=query(
            [candidate(1, 5), candidate(2, 6, firstName={"x": 1}), "junk", candidate(3, 7)]
        )
    )
    respx.get(f"{REST}/query/JobSubmission").mock(return_value=query([]))
    (page,) = list(connector(tmp_path).pages(None))
    assert [r["external_id"] for r in page.records] == ["1", "3"]
    assert [p[0] for p in page.problems] == ["?", "2"]


@respx.mock
def test_a_cursor_that_is_not_json_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--full"):
        list(connector(tmp_path).pages("not json"))


# -- writing -----------------------------------------------------------------------------


@respx.mock
def test_a_note_is_put_on_the_candidate_by_the_api_user(tmp_path: Path) -> None:
    mock_sign_in()
    respx.get(f"{REST}/settings/userId").mock(return_value=httpx.Response(200, json={"userId": 9}))
    put = respx.put(f"{REST}/entity/Note").mock(
        return_value=httpx.Response(200, json=fixture("entity_note_created.json"))
    )
    assert connector(tmp_path).write_note(NoteRef("5059165"), "Sent: thanks") == "900123"
    assert json.loads(put.calls[0].request.content) == {
        "personReference": {"id": 5059165},
        "commentingPerson": {"id": 9},
        "action": "Outreach",
        "comments": "Sent: thanks",
    }


@respx.mock
def test_a_note_is_not_resent_after_a_500_but_is_after_a_401(tmp_path: Path) -> None:
    mock_sign_in(sessions=2)
    respx.get(f"{REST}/settings/userId").mock(return_value=httpx.Response(200, json={"userId": 9}))
    put = respx.put(f"{REST}/entity/Note").mock(
        side_effect=[
            httpx.Response(500, json={"errorMessage": "oops"}),
            httpx.Response(401, json={"errorMessage": "timed-out"}),
            httpx.Response(200, json={"changedEntityId": 5}),
        ]
    )
    bullhorn = connector(tmp_path)
    with pytest.raises(PermanentError, match="HTTP 500"):
        bullhorn.write_note(NoteRef("1"), "x")
    assert put.call_count == 1  # it may have been stored: never sent twice
    assert bullhorn.write_note(NoteRef("1"), "x") == "5"  # 401: nothing stored, resent
    assert put.call_count == 3


@respx.mock
def test_a_task_goes_to_the_owner_with_its_due_time(tmp_path: Path) -> None:
    mock_sign_in()
    put = respx.put(f"{REST}/entity/Task").mock(
        return_value=httpx.Response(200, json={"changedEntityId": 321})
    )
    due = datetime(2026, 11, 26, 14, 0, tzinfo=UTC)
    task = TaskSpec("70001", "5002", "Connect on LinkedIn " * 10, "Say hello", due)
    assert connector(tmp_path).create_task(task) == "321"
    body = json.loads(put.calls[0].request.content)
    assert body["candidate"] == {"id": 70001} and body["owner"] == {"id": 5002}
    assert len(body["subject"]) == 100 and body["dateBegin"] == int(due.timestamp() * 1000)


def test_a_non_numeric_id_is_refused_before_any_call(tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="not a Bullhorn id"):
        connector(tmp_path).write_note(NoteRef("abc"), "x")


@respx.mock
def test_task_states_are_read_back(tmp_path: Path) -> None:
    mock_sign_in()
    respx.get(f"{REST}/entity/Task/1,2").mock(
        return_value=httpx.Response(
            200, json={"data": [{"id": 1, "isCompleted": True}, {"id": 2, "isCompleted": False}]}
        )
    )
    assert connector(tmp_path).task_status(["1", "2", "x"]) == {"1": "done", "2": "open"}


@respx.mock
def test_two_connectors_sharing_the_file_never_spend_a_dead_token(tmp_path: Path) -> None:
    token, _ = mock_sign_in(sessions=2)
    first, second = connector(tmp_path), connector(tmp_path)  # both built before signing in
    first.login.session()
    second.login.session()
    spent = [parse_qs(c.request.content.decode())["refresh_token"][0] for c in token.calls]
    assert spent == [FIRST_REFRESH, "rt-1"]
    assert (tmp_path / "token.lock").exists()


@respx.mock
def test_secrets_in_login_urls_never_reach_the_request_log(tmp_path: Path, caplog) -> None:
    respx.get(f"{AUTH}/authorize").mock(
        return_value=httpx.Response(302, headers={"Location": "https://example.com/cb?code=C9"})
    )
    mock_sign_in()
    caplog.set_level(logging.DEBUG, logger="httpx")
    bullhorn = connector(tmp_path, refresh_token=None, username="api.user", password="pw-secret")
    bullhorn.login.session()
    logged = caplog.text
    assert "/rest-services/login" in logged and "/oauth/authorize" in logged  # it did log
    for secret in ("pw-secret", "at-1", "C9"):
        assert secret not in logged


@respx.mock
def test_the_documented_token_and_login_answers_give_a_session_on_the_rest_url(
    tmp_path: Path,
) -> None:
    token, login = fixture("token.json"), fixture("login.json")
    respx.post(f"{AUTH}/token").mock(return_value=httpx.Response(200, json=token))
    respx.post(f"{LOGIN}/login").mock(return_value=httpx.Response(200, json=login))
    user = respx.get(f"{login['restUrl']}settings/userId").mock(
        return_value=httpx.Response(200, json={"userId": 1})
    )
    bullhorn = connector(tmp_path)
    assert bullhorn.user_id() == 1
    assert user.calls[0].request.headers["BhRestToken"] == login["BhRestToken"]
    stored = json.loads((tmp_path / "token").read_text())["refresh_token"]
    assert stored == token["refresh_token"]
