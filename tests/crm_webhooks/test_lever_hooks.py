"""``POST /webhooks/lever``: signed webhooks make the engine read the opportunity at once."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta

import pytest
from crm_hook_posts import LEVER_TOKEN, lever_body
from crm_world import NOW, crm_settings, deliveries, enrollments, only_in, record, stage_events
from crm_world import sync_all as sync_everything
from werkzeug.test import Client

from outreach.clock import FixedClock
from outreach.engine.enroll import process_events
from outreach.engine.tick import engine_transactions
from outreach.serve import make_app

PATH = "/webhooks/lever"
HEADERS = {"Content-Type": "application/json"}


def post(client: Client, body: bytes):
    return client.post(PATH, data=body, headers=HEADERS)


def running(engine, person_id: int) -> set[str]:
    return {e.cadence_id for e in enrollments(engine, person_id) if e.status == "active"}


def opportunity_requests(sandbox) -> int:
    return sum(1 for r in sandbox.lever.requests if r.path.startswith("/v1/opportunities/"))


@pytest.fixture
def person(sandbox):
    return only_in(sandbox, "lever", ("applied", "screening"))


def test_a_stage_change_is_read_and_enrolls_and_a_later_sync_does_nothing_twice(
    client, store, sandbox, config, person
) -> None:
    opportunity = sandbox.lever.opportunity_id(person.index)
    at = NOW - timedelta(minutes=15)
    sandbox.lever.move(person.index, "interview", at)
    events = stage_events(store)

    answer = post(
        client,
        lever_body(
            "candidateStageChange",
            opportunity,
            at,
            event_id="lv-1",
            data={"toStageId": "x", "fromStageId": "y"},
        ),
    )

    assert answer.status_code == 200, answer.text
    assert answer.json["applied"] == 1
    row = record(store, "lever", opportunity)
    assert (row.stage, row.source_stage) == ("interview", "On-site interview")
    assert running(store, row.person_id) == {"interview-follow-up"}
    assert stage_events(store) == events + 1

    enrolled = enrollments(store, row.person_id)
    sync_everything(sandbox, store, config, NOW + timedelta(hours=1))
    process_events(engine_transactions(store), config, NOW + timedelta(hours=1))
    assert stage_events(store) == events + 1
    assert enrollments(store, row.person_id) == enrolled


def test_an_archive_change_to_rejected_stops_the_interview_cadence(
    client, store, sandbox, person
) -> None:
    opportunity = sandbox.lever.opportunity_id(person.index)
    sandbox.lever.move(person.index, "interview", NOW - timedelta(minutes=30))
    post(client, lever_body("candidateStageChange", opportunity, NOW, event_id="lv-a"))
    sandbox.lever.move(person.index, "rejected", NOW - timedelta(minutes=5))

    archived = {"toArchived": {"archivedAt": 1, "reason": "r"}, "fromArchived": None}
    answer = post(
        client,
        lever_body("candidateArchiveChange", opportunity, NOW, event_id="lv-b", data=archived),
    )

    assert answer.json["applied"] == 1
    row = record(store, "lever", opportunity)
    assert row.stage == "rejected"
    assert "interview-follow-up" not in running(store, row.person_id)


def test_a_hire_reads_as_hired(client, store, sandbox, person) -> None:
    opportunity = sandbox.lever.opportunity_id(person.index)
    sandbox.lever.move(person.index, "hired", NOW - timedelta(minutes=5))
    answer = post(client, lever_body("candidateHired", opportunity, NOW, event_id="lv-h"))
    assert answer.json["applied"] == 1
    assert record(store, "lever", opportunity).stage == "hired"


def test_a_replayed_delivery_changes_nothing_and_reads_nothing(
    client, store, sandbox, config, person
) -> None:
    opportunity = sandbox.lever.opportunity_id(person.index)
    sandbox.lever.move(person.index, "interview", NOW - timedelta(minutes=5))
    body = lever_body("candidateStageChange", opportunity, NOW, event_id="lv-2")
    assert post(client, body).json["applied"] == 1
    reads = opportunity_requests(sandbox)
    events = stage_events(store)

    assert post(client, body).json["duplicates"] == 1
    restarted = Client(make_app(store, crm_settings(sandbox), config, FixedClock(NOW)))
    assert post(restarted, body).json["duplicates"] == 1
    assert opportunity_requests(sandbox) == reads
    assert stage_events(store) == events


def test_an_event_older_than_the_stored_state_rolls_nothing_back(
    client, store, sandbox, person
) -> None:
    opportunity = sandbox.lever.opportunity_id(person.index)
    stored = record(store, "lever", opportunity)
    old = stored.source_updated_at - timedelta(minutes=1)
    answer = post(client, lever_body("candidateStageChange", opportunity, old, event_id="lv-old"))
    assert answer.status_code == 200 and answer.json["stale"] == 1
    assert record(store, "lever", opportunity).stage == stored.stage


def test_an_opportunity_lever_no_longer_has_stops_its_cadences(
    client, store, sandbox, person
) -> None:
    opportunity = sandbox.lever.opportunity_id(person.index)
    sandbox.lever.move(person.index, "interview", NOW - timedelta(minutes=5))
    post(client, lever_body("candidateStageChange", opportunity, NOW, event_id="lv-x"))
    person_id = record(store, "lever", opportunity).person_id
    del sandbox.lever.opportunities[opportunity]
    answer = post(client, lever_body("candidateStageChange", opportunity, NOW, event_id="lv-y"))
    assert answer.json["applied"] == 1
    assert running(store, person_id) == set()


def test_a_deletion_is_read_back_so_a_body_naming_another_opportunity_deletes_nothing(
    client, store, sandbox, person
) -> None:
    # Lever signs token + triggeredAt, not the body: a signed body whose opportunity was
    # swapped must not delete a record Lever still has. Only Lever's 404 is a deletion.
    opportunity = sandbox.lever.opportunity_id(person.index)
    sandbox.lever.move(person.index, "interview", NOW - timedelta(minutes=5))
    post(client, lever_body("candidateStageChange", opportunity, NOW, event_id="lv-d0"))
    person_id = record(store, "lever", opportunity).person_id
    assert "interview-follow-up" in running(store, person_id)

    answer = post(client, lever_body("candidateDeleted", opportunity, NOW, event_id="lv-d1"))

    assert answer.status_code == 200
    assert "interview-follow-up" in running(store, person_id)
    assert record(store, "lever", opportunity).stage == "interview"
    del sandbox.lever.opportunities[opportunity]
    answer = post(client, lever_body("candidateDeleted", opportunity, NOW, event_id="lv-d2"))
    assert answer.json["applied"] == 1
    assert running(store, person_id) == set()
    assert record(store, "lever", opportunity).stage is None


def test_when_lever_cannot_be_read_the_answer_is_503_and_a_retry_works(
    client, store, sandbox, person
) -> None:
    opportunity = sandbox.lever.opportunity_id(person.index)
    sandbox.lever.move(person.index, "interview", NOW - timedelta(minutes=5))
    body = lever_body("candidateStageChange", opportunity, NOW, event_id="lv-503")
    sandbox.lever.faults.server_errors(1)
    assert post(client, body).status_code == 503
    assert deliveries(store) == []
    assert post(client, body).json["applied"] == 1


def test_forged_and_unsigned_bodies_are_401_and_change_nothing(
    client, store, sandbox, person
) -> None:
    opportunity = sandbox.lever.opportunity_id(person.index)
    sandbox.lever.move(person.index, "interview", NOW)
    good = json.loads(lever_body("candidateStageChange", opportunity, NOW, event_id="lv-f"))
    forged = json.loads(
        lever_body("candidateStageChange", opportunity, NOW, event_id="lv-f", token="guess")
    )
    attempts = [
        forged,
        {**good, "triggeredAt": good["triggeredAt"] + 1},
        {**good, "token": "another"},
        {k: v for k, v in good.items() if k != "signature"},
        {k: v for k, v in good.items() if k != "triggeredAt"},
        {**good, "signature": 12},
    ]
    before = record(store, "lever", opportunity).stage
    for body in attempts:
        answer = post(client, json.dumps(body).encode())
        assert answer.status_code == 401, answer.text
    assert record(store, "lever", opportunity).stage == before
    assert deliveries(store) == []
    assert opportunity_requests(sandbox) == 0


def test_signed_bodies_that_cannot_be_read_are_400(client, store, sandbox, person) -> None:
    opportunity = sandbox.lever.opportunity_id(person.index)
    good = json.loads(lever_body("candidateStageChange", opportunity, NOW, event_id="lv-m"))
    bad = [
        {**good, "id": None},
        {**good, "event": None},
        {**good, "data": None},
        {**good, "data": {"opportunityId": ""}},
    ]
    for body in bad:
        answer = post(client, json.dumps(body).encode())
        assert answer.status_code == 400, (body, answer.text)
    for raw in (b"{not json", b"[1, 2]", b"\xff"):
        assert post(client, raw).status_code == 400
    # triggeredAt that is not a time, signed as such (the signature covers its text)
    odd = {**good, "triggeredAt": "soon", "token": "t"}
    odd["signature"] = hmac.new(LEVER_TOKEN.encode(), b"tsoon", hashlib.sha256).hexdigest()
    assert post(client, json.dumps(odd).encode()).status_code == 400
    assert deliveries(store) == []


def test_other_events_are_acknowledged(client, store) -> None:
    answer = post(client, lever_body("interviewCreated", "opp", NOW, event_id="lv-i"))
    assert answer.status_code == 200 and answer.json["ignored"] == 1


def test_a_body_over_the_limit_is_413(client, store, sandbox, person) -> None:
    opportunity = sandbox.lever.opportunity_id(person.index)
    good = json.loads(lever_body("candidateStageChange", opportunity, NOW, event_id="lv-big"))
    good["padding"] = "x" * (1024 * 1024)
    assert post(client, json.dumps(good).encode()).status_code == 413


@pytest.mark.parametrize("missing", ["LEVER_WEBHOOK_TOKEN", "LEVER_API_KEY"])
def test_without_the_token_or_api_key_every_post_is_503(store, sandbox, config, missing) -> None:
    app = make_app(store, crm_settings(sandbox, **{missing: None}), config, FixedClock(NOW))
    assert any(missing in p for p in app.problems)
    answer = Client(app).post(PATH, data=b"{}", headers=HEADERS)
    assert answer.status_code == 503 and missing in answer.text
