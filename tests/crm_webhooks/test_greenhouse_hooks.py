"""``POST /webhooks/greenhouse``: signed web hooks change the store as a sync would."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from crm_hook_posts import GREENHOUSE_SECRET, greenhouse_application_body, greenhouse_headers
from crm_world import (
    NOW,
    SYNCED,
    crm_settings,
    deliveries,
    enrollments,
    only_in,
    record,
    stage_events,
    sync_all,
)
from werkzeug.test import Client

from outreach.clock import FixedClock
from outreach.crm_webhooks.change import BadPayload
from outreach.crm_webhooks.greenhouse import read_event
from outreach.engine.enroll import process_events
from outreach.engine.tick import engine_transactions
from outreach.serve import make_app

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "greenhouse"
PATH = "/webhooks/greenhouse"


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"webhook_{name}.json").read_text())


def post(client: Client, body: dict | bytes, event_id: str, secret: str = GREENHOUSE_SECRET):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(PATH, data=raw, headers=greenhouse_headers(raw, event_id, secret))


def moved(sandbox, person, stage: str, at, action: str = "candidate_stage_change") -> dict:
    """Move ``person`` in the fake Greenhouse and build the web hook it would send."""
    position = sandbox.greenhouse.position(sandbox.greenhouse_id(person))
    sandbox.greenhouse.move(position, stage, at)
    return greenhouse_application_body(sandbox.greenhouse, position, action)


def running(engine, person_id: int) -> set[str]:
    return {e.cadence_id for e in enrollments(engine, person_id) if e.status == "active"}


# -- what the published examples say -------------------------------------------------------


def test_the_published_examples_read_as_changes() -> None:
    stage = read_event(fixture("candidate_stage_change"), "e1")
    assert (stage.kind, stage.external_id, stage.record["stage"]) == (
        "record",
        "265772",
        "Assessment",
    )
    assert stage.occurred_at is not None and stage.occurred_at.isoformat().startswith("2015-02-09")
    assert stage.record["email"] == "giuseppe.hurley@example.com"
    hired = read_event(fixture("candidate_hired"), "e2")
    assert (hired.external_id, hired.record["stage"]) == ("35897443", "hired")
    assert hired.occurred_at is not None and hired.occurred_at.isoformat().startswith("2014-11-20")
    rejected = read_event(fixture("candidate_prospect_rejected"), "e3")
    assert (rejected.external_id, rejected.record["stage"]) == ("265788", "rejected")
    assert rejected.occurred_at is not None and rejected.occurred_at.isoformat().startswith(
        "2015-02-11T15:50:41"
    )
    deleted = read_event(fixture("candidate_deleted"), "e4")
    assert (deleted.kind, deleted.external_id) == ("delete", "37031511")
    merged = read_event(fixture("candidate_merged"), "e5")
    assert (merged.kind, merged.external_id, merged.into) == ("merge", "37031511", "457456")
    updated = read_event(fixture("candidate_prospect_updated"), "e6")
    assert updated.kind == "record" and "stage" not in updated.record
    prospect = read_event(fixture("prospect_created"), "e7")
    assert prospect.record["stage"] == "prospect"
    created = read_event(fixture("application_created"), "e8")
    assert created.record["stage"] == "Preliminary Phone Screen"
    assert read_event({"action": "ping", "payload": {"web_hook_id": 1}}, "e9").kind == "ignore"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"action": 7},
        {"action": "candidate_stage_change", "payload": {}},
        {"action": "candidate_stage_change", "payload": {"application": {"id": 1}}},
        {"action": "candidate_stage_change", "payload": {"application": {"candidate": {}}}},
        {"action": "delete_candidate", "payload": {"person": {"id": None}}},
        {"action": "merge_candidate", "payload": {"person": {"id": 5}}},
        {"action": "reject_candidate", "payload": "nope"},
    ],
)
def test_bodies_missing_what_an_action_needs_are_bad(body: dict) -> None:
    with pytest.raises(BadPayload):
        read_event(body, "e")


def test_a_real_example_posted_creates_the_record_it_names(client, store) -> None:
    body = fixture("candidate_stage_change")
    body["payload"]["application"]["current_stage"]["name"] = "Face to Face"
    answer = post(client, body, "evt-example")
    assert answer.status_code == 200, answer.text
    assert answer.json["applied"] == 1
    row = record(store, "greenhouse", "265772")
    assert (row.stage, row.source_stage, row.email) == (
        "interview",
        "Face to Face",
        "giuseppe.hurley@example.com",
    )


# -- valid, replayed, stale ----------------------------------------------------------------


def test_a_stage_change_enrolls_at_once_and_a_later_sync_does_nothing_twice(
    client, store, sandbox, config
) -> None:
    person = only_in(sandbox, "greenhouse", ("applied", "screening"))
    external = str(sandbox.greenhouse_id(person))
    at = NOW - timedelta(minutes=20)
    events_before = stage_events(store)

    answer = post(client, moved(sandbox, person, "interview", at), "evt-1")

    assert answer.status_code == 200, answer.text
    assert answer.json == {
        "applied": 1,
        "unchanged": 0,
        "stale": 0,
        "unknown": 0,
        "ignored": 0,
        "bad": 0,
        "duplicates": 0,
    }
    row = record(store, "greenhouse", external)
    assert (row.stage, row.source_stage) == ("interview", "Face to Face")
    assert row.stage_entered_at == at.replace(microsecond=0)
    assert stage_events(store) == events_before + 1
    (follow_up,) = [e for e in enrollments(store, row.person_id) if e.status == "active"]
    assert follow_up.cadence_id == "interview-follow-up"
    assert follow_up.triggered_at == at.replace(microsecond=0)
    assert [d.outcome for d in deliveries(store)] == ["applied"]

    # The nightly sync reads the same change from Greenhouse: nothing twice.
    enrolled = enrollments(store, row.person_id)
    sync_all(sandbox, store, config, NOW + timedelta(hours=1))
    process_events(engine_transactions(store), config, NOW + timedelta(hours=1))
    assert stage_events(store) == events_before + 1
    assert enrollments(store, row.person_id) == enrolled
    assert running(store, row.person_id) == {"interview-follow-up"}
    assert record(store, "greenhouse", external).stage_entered_at == row.stage_entered_at


def test_a_replayed_delivery_changes_nothing_even_after_a_restart(
    client, store, sandbox, config
) -> None:
    person = only_in(sandbox, "greenhouse", ("applied", "screening"))
    body = moved(sandbox, person, "interview", NOW - timedelta(minutes=5))
    assert post(client, body, "evt-2").json["applied"] == 1
    events = stage_events(store)
    person_id = record(store, "greenhouse", str(sandbox.greenhouse_id(person))).person_id
    enrolled = enrollments(store, person_id)

    again = post(client, body, "evt-2")
    assert again.status_code == 200 and again.json["duplicates"] == 1
    restarted = Client(make_app(store, crm_settings(sandbox), config, FixedClock(NOW)))
    third = post(restarted, body, "evt-2")
    assert third.status_code == 200 and third.json["duplicates"] == 1
    assert stage_events(store) == events
    assert enrollments(store, person_id) == enrolled


def test_without_an_event_id_the_body_is_the_key(client, store, sandbox) -> None:
    person = only_in(sandbox, "greenhouse", ("applied", "screening"))
    raw = json.dumps(moved(sandbox, person, "interview", NOW)).encode()
    headers = greenhouse_headers(raw, "x")
    del headers["Greenhouse-Event-ID"]
    assert client.post(PATH, data=raw, headers=headers).json["applied"] == 1
    assert client.post(PATH, data=raw, headers=headers).json["duplicates"] == 1


def test_an_event_older_than_the_stored_state_rolls_nothing_back(client, store, sandbox) -> None:
    person = only_in(sandbox, "greenhouse", ("applied", "screening"))
    external = str(sandbox.greenhouse_id(person))
    late = moved(sandbox, person, "interview", NOW - timedelta(minutes=40))  # delayed
    rejection = moved(sandbox, person, "rejected", NOW - timedelta(minutes=10), "reject_candidate")
    assert post(client, rejection, "evt-new").json["applied"] == 1
    events = stage_events(store)

    answer = post(client, late, "evt-old")

    assert answer.status_code == 200 and answer.json["stale"] == 1
    assert record(store, "greenhouse", external).stage == "rejected"
    assert stage_events(store) == events


# -- effects: rejection, deletion, merge ------------------------------------------------


def test_a_rejection_stops_the_interview_cadence(client, store, sandbox) -> None:
    person = only_in(sandbox, "greenhouse", ("applied", "screening"))
    external = str(sandbox.greenhouse_id(person))
    post(client, moved(sandbox, person, "interview", NOW - timedelta(minutes=30)), "evt-a")
    person_id = record(store, "greenhouse", external).person_id
    assert "interview-follow-up" in running(store, person_id)

    rejection = moved(sandbox, person, "rejected", NOW - timedelta(minutes=5), "reject_candidate")
    assert post(client, rejection, "evt-b").json["applied"] == 1

    stopped = [e for e in enrollments(store, person_id) if e.cadence_id == "interview-follow-up"]
    assert [e.status for e in stopped] == ["stopped"]
    assert stopped[0].stop_reason.startswith("stage_change: interview -> rejected")
    assert "interview-follow-up" not in running(store, person_id)


def test_a_deleted_candidate_has_every_cadence_stopped(client, store, sandbox) -> None:
    person = only_in(sandbox, "greenhouse", ("applied", "screening"))
    external = str(sandbox.greenhouse_id(person))
    post(client, moved(sandbox, person, "interview", NOW - timedelta(minutes=30)), "evt-c")
    person_id = record(store, "greenhouse", external).person_id
    body = fixture("candidate_deleted")
    body["payload"]["person"]["id"] = int(external)

    answer = post(client, body, "evt-del")

    assert answer.status_code == 200 and answer.json["applied"] == 1
    assert running(store, person_id) == set()
    assert {e.stop_reason for e in enrollments(store, person_id)} >= {"deleted in greenhouse"}
    assert record(store, "greenhouse", external).stage is None


def test_a_deletion_drops_the_records_pending_stage_change_and_outlasts_older_news(
    client, store, sandbox, config
) -> None:
    # A sync saw the move to interview, not yet applied (no run since); then the candidate
    # is deleted. Applying the deletion must not enroll the deleted record from that
    # pending change, and a stage change from before the deletion arriving after it (a
    # retry) is stale.
    person = only_in(sandbox, "greenhouse", ("applied", "screening"))
    external = str(sandbox.greenhouse_id(person))
    late = moved(sandbox, person, "interview", NOW - timedelta(minutes=30))
    sync_all(sandbox, store, config, NOW - timedelta(minutes=20))
    person_id = record(store, "greenhouse", external).person_id
    before = running(store, person_id)
    body = fixture("candidate_deleted")
    body["payload"]["person"]["id"] = int(external)

    assert post(client, body, "evt-del2").json["applied"] == 1

    assert "interview-follow-up" not in running(store, person_id)
    assert running(store, person_id) <= before
    answer = post(client, late, "evt-late")
    assert answer.status_code == 200 and answer.json["stale"] == 1
    assert record(store, "greenhouse", external).stage is None
    assert "interview-follow-up" not in running(store, person_id)


def test_a_merged_candidate_folds_into_the_surviving_record(client, store, sandbox, config) -> None:
    process_events(engine_transactions(store), config, SYNCED)  # the last run
    people = [p for p in sandbox.in_crm("greenhouse") if p.crms == ("greenhouse",) and p.email]
    loser, winner = people[0], people[1]
    loser_id, winner_id = (str(sandbox.greenhouse_id(p)) for p in (loser, winner))
    post(client, moved(sandbox, loser, "interview", NOW - timedelta(minutes=30)), "evt-d")
    assert "interview-follow-up" in running(store, record(store, "greenhouse", loser_id).person_id)
    body = fixture("candidate_merged")
    body["payload"]["person"].update(id=int(loser_id), new_candidate_id=int(winner_id))

    answer = post(client, body, "evt-merge")

    assert answer.status_code == 200 and answer.json["applied"] == 1
    survivor = record(store, "greenhouse", winner_id)
    folded = record(store, "greenhouse", loser_id)
    assert folded.person_id == survivor.person_id and folded.stage is None
    moved_over = [e for e in enrollments(store, survivor.person_id) if e.status == "active"]
    assert any(
        e.cadence_id == "interview-follow-up" and e.record_id == survivor.id for e in moved_over
    )


def test_a_merge_into_an_id_the_store_lacks_renames_the_record(client, store, sandbox) -> None:
    person = only_in(sandbox, "greenhouse", ("applied", "screening"))
    external = str(sandbox.greenhouse_id(person))
    body = fixture("candidate_merged")
    body["payload"]["person"].update(id=int(external), new_candidate_id=99_000_001)
    assert post(client, body, "evt-rename").json["applied"] == 1
    assert record(store, "greenhouse", external) is None
    assert record(store, "greenhouse", "99000001") is not None


def test_ping_and_unknown_actions_are_acknowledged(client, store) -> None:
    assert (
        post(client, {"action": "ping", "payload": {"web_hook_id": 1}}, "p1").json["ignored"] == 1
    )
    assert (
        post(client, {"action": "job_created", "payload": {"job": {}}}, "p2").json["ignored"] == 1
    )
    deleted = fixture("candidate_deleted")  # someone the store never had
    assert post(client, deleted, "p3").json["unknown"] == 1


# -- refused ---------------------------------------------------------------------------


def test_forged_tampered_and_unsigned_posts_are_401_and_change_nothing(
    client, store, sandbox
) -> None:
    person = only_in(sandbox, "greenhouse", ("applied", "screening"))
    external = str(sandbox.greenhouse_id(person))
    raw = json.dumps(moved(sandbox, person, "interview", NOW)).encode()
    good = greenhouse_headers(raw, "evt-f")
    events = stage_events(store)
    attempts = [
        (raw, greenhouse_headers(raw, "evt-f", secret="not-the-secret")),
        (raw.replace(b"Face to Face", b"Face to Fame"), good),
        (raw, {k: v for k, v in good.items() if k != "Signature"}),
        (raw, {**good, "Signature": "sha1 " + good["Signature"].split()[1]}),
        (raw, {**good, "Signature": "sha256"}),
        (raw, {**good, "Signature": "sha256 \u00e9\u00e9"}),  # not ASCII: 401, not 500
    ]
    for body, headers in attempts:
        answer = client.post(PATH, data=body, headers=headers)
        assert answer.status_code == 401, answer.text
    assert record(store, "greenhouse", external).stage != "interview"
    assert stage_events(store) == events
    assert deliveries(store) == []


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"[]",
        b"\xff\xfe",
        b'{"action": "candidate_stage_change", "payload": {"application": []}}',
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_signed_bodies_that_cannot_be_read_are_400(client, store, raw: bytes) -> None:
    answer = client.post(PATH, data=raw, headers=greenhouse_headers(raw, "evt-bad"))
    assert answer.status_code == 400, answer.text
    assert deliveries(store) == []


def test_a_body_over_the_limit_is_413(client, store) -> None:
    raw = json.dumps({"action": "ping", "pad": "x" * (1024 * 1024)}).encode()
    answer = client.post(PATH, data=raw, headers=greenhouse_headers(raw, "evt-big"))
    assert answer.status_code == 413
    assert deliveries(store) == []


def test_without_the_secret_every_post_is_503_naming_it(store, sandbox, config) -> None:
    settings = crm_settings(sandbox, GREENHOUSE_WEBHOOK_SECRET=None)
    app = make_app(store, settings, config, FixedClock(NOW))
    assert any("GREENHOUSE_WEBHOOK_SECRET" in p for p in app.problems)
    raw = b'{"action": "ping"}'
    answer = Client(app).post(PATH, data=raw, headers=greenhouse_headers(raw, "e"))
    assert answer.status_code == 503 and "GREENHOUSE_WEBHOOK_SECRET" in answer.text


def test_the_secret_never_reaches_the_log(client, store, sandbox, caplog) -> None:
    caplog.set_level("DEBUG")
    person = only_in(sandbox, "greenhouse", ("applied", "screening"))
    raw = json.dumps(moved(sandbox, person, "interview", SYNCED)).encode()
    client.post(PATH, data=raw, headers=greenhouse_headers(raw, "evt-log"))
    client.post(PATH, data=raw, headers=greenhouse_headers(raw, "evt-log2", secret="forged"))
    assert GREENHOUSE_SECRET not in caplog.text
    assert person.email not in caplog.text


def test_a_record_that_cannot_be_stored_is_bad_and_its_address_stays_out_of_the_log(
    client, store, caplog
) -> None:
    caplog.set_level("DEBUG")
    body = fixture("candidate_stage_change")
    candidate = body["payload"]["application"]["candidate"]
    candidate.update(
        id=4242,
        phone_numbers=[],
        social_media_addresses=[],
        website_addresses=[],
        email_addresses=[{"value": "secret.person@@nowhere", "type": "personal"}],
    )
    answer = post(client, body, "evt-bad-record")
    assert answer.status_code == 200 and answer.json["bad"] == 1
    assert record(store, "greenhouse", "4242") is None
    assert "record 4242 not written (email is not valid)" in caplog.text
    assert "secret.person" not in caplog.text
    assert [d.outcome for d in deliveries(store)] == ["bad"]
