"""``POST /webhooks/hubspot``: v3-signed batches of lifecycle stage changes."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from crm_hook_posts import PUBLIC, hubspot_event, hubspot_headers
from crm_world import (
    NOW,
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
from outreach.crm_webhooks.hubspot import decode_uri
from outreach.engine.enroll import process_events
from outreach.engine.tick import engine_transactions
from outreach.serve import make_app

PATH = "/webhooks/hubspot"


def post(client: Client, events: list | bytes, sent=NOW, url: str = PUBLIC + PATH, **kw):
    body = events if isinstance(events, bytes) else json.dumps(events).encode()
    headers = hubspot_headers(body, sent, url, **kw)
    return client.post(url.removeprefix(PUBLIC), data=body, headers=headers)


def running(engine, person_id: int) -> set[str]:
    return {e.cadence_id for e in enrollments(engine, person_id) if e.status == "active"}


@pytest.fixture
def contact(sandbox) -> tuple[int, str]:
    person = only_in(sandbox, "hubspot", ("prospect", "applied"))
    return person.index, sandbox.hubspot.contact_id(person.index)


def test_a_lifecycle_change_enrolls_and_a_later_sync_does_nothing_twice(
    client, store, sandbox, config, contact
) -> None:
    index, contact_id = contact
    at = NOW - timedelta(minutes=3)
    sandbox.hubspot.move(index, "screening", at)
    events = stage_events(store)

    answer = post(client, [hubspot_event(1001, contact_id, "opportunity", at)])

    assert answer.status_code == 200, answer.text
    assert answer.json["applied"] == 1
    row = record(store, "hubspot", contact_id)
    assert (row.stage, row.source_stage) == ("screening", "opportunity")
    assert running(store, row.person_id) == {"interview-scheduling"}

    enrolled = enrollments(store, row.person_id)
    sync_all(sandbox, store, config, NOW + timedelta(hours=1))
    process_events(engine_transactions(store), config, NOW + timedelta(hours=1))
    assert stage_events(store) == events + 1
    assert enrollments(store, row.person_id) == enrolled


def test_a_value_the_stage_map_lacks_stops_stage_change_cadences(
    client, store, sandbox, contact
) -> None:
    _, contact_id = contact
    post(client, [hubspot_event(1, contact_id, "opportunity", NOW - timedelta(minutes=4))])
    person_id = record(store, "hubspot", contact_id).person_id
    assert running(store, person_id) == {"interview-scheduling"}
    answer = post(client, [hubspot_event(2, contact_id, "other", NOW - timedelta(minutes=2))])
    assert answer.json["applied"] == 1
    assert record(store, "hubspot", contact_id).stage is None
    assert running(store, person_id) == set()


def test_events_apply_in_the_order_they_happened(client, store, contact) -> None:
    _, contact_id = contact
    later = hubspot_event(11, contact_id, "opportunity", NOW - timedelta(minutes=1))
    earlier = hubspot_event(10, contact_id, "salesqualifiedlead", NOW - timedelta(minutes=2))
    answer = post(client, [later, earlier])
    assert answer.status_code == 200
    assert record(store, "hubspot", contact_id).stage == "screening"


def test_replayed_events_change_nothing_even_after_a_restart(
    client, store, sandbox, config, contact
) -> None:
    _, contact_id = contact
    event = hubspot_event(77, contact_id, "opportunity", NOW - timedelta(minutes=1))
    assert post(client, [event]).json["applied"] == 1
    events = stage_events(store)
    # HubSpot retries with a new request timestamp (and signature): the event id is the key.
    answer = post(client, [event], sent=NOW + timedelta(minutes=1))
    assert answer.status_code == 200 and answer.json["duplicates"] == 1
    restarted = Client(make_app(store, crm_settings(sandbox), config, FixedClock(NOW)))
    fresh = hubspot_event(78, contact_id, "other", NOW)
    mixed = post(restarted, [event, fresh])
    assert mixed.json["duplicates"] == 1 and mixed.json["applied"] == 1
    assert stage_events(store) == events + 1


def test_an_event_older_than_the_stored_state_rolls_nothing_back(client, store, contact) -> None:
    _, contact_id = contact
    stored = record(store, "hubspot", contact_id)
    old = stored.source_updated_at - timedelta(seconds=1)
    answer = post(client, [hubspot_event(5, contact_id, "customer", old)])
    assert answer.json["stale"] == 1
    assert record(store, "hubspot", contact_id).stage == stored.stage


def test_other_properties_events_and_unknown_contacts_are_acknowledged(
    client, store, contact
) -> None:
    _, contact_id = contact
    batch = [
        hubspot_event(1, contact_id, "Ann", NOW, prop="firstname"),
        {**hubspot_event(2, contact_id, "x", NOW), "subscriptionType": "deal.propertyChange"},
        hubspot_event(3, "999999999", "opportunity", NOW),
    ]
    answer = post(client, batch)
    assert answer.status_code == 200
    assert (answer.json["ignored"], answer.json["unknown"]) == (2, 1)


def test_a_deleted_contact_has_its_cadences_stopped(client, store, contact) -> None:
    _, contact_id = contact
    post(client, [hubspot_event(1, contact_id, "opportunity", NOW - timedelta(minutes=1))])
    person_id = record(store, "hubspot", contact_id).person_id
    deletion = {
        "eventId": 9,
        "occurredAt": hubspot_event(9, contact_id, "", NOW)["occurredAt"],
        "subscriptionType": "contact.deletion",
        "objectId": int(contact_id),
    }
    assert post(client, [deletion]).json["applied"] == 1
    assert running(store, person_id) == set()


@pytest.mark.parametrize("offset", [timedelta(minutes=-6), timedelta(minutes=6)])
def test_a_request_timestamp_over_five_minutes_off_is_401(client, store, contact, offset) -> None:
    _, contact_id = contact
    answer = post(client, [hubspot_event(1, contact_id, "opportunity", NOW)], sent=NOW + offset)
    assert answer.status_code == 401 and "5 minutes" in answer.text
    assert deliveries(store) == []


def test_forged_tampered_and_unsigned_requests_are_401(client, store, contact) -> None:
    _, contact_id = contact
    body = json.dumps([hubspot_event(1, contact_id, "opportunity", NOW)]).encode()
    good = hubspot_headers(body, NOW)
    attempts = [
        (body, hubspot_headers(body, NOW, secret="guess")),
        (body, hubspot_headers(body, NOW, url="https://elsewhere.example/webhooks/hubspot")),
        (body.replace(b"opportunity", b"customer000"), good),
        (body, {k: v for k, v in good.items() if k != "X-HubSpot-Signature-v3"}),
        (body, {k: v for k, v in good.items() if k != "X-HubSpot-Request-Timestamp"}),
        (body, {**good, "X-HubSpot-Signature-v3": "%%%not base64"}),
        (body, {**good, "X-HubSpot-Request-Timestamp": "yesterday"}),
    ]
    stage = record(store, "hubspot", contact_id).stage
    for raw, headers in attempts:
        answer = client.post(PATH, data=raw, headers=headers)
        assert answer.status_code == 401, answer.text
    assert record(store, "hubspot", contact_id).stage == stage
    assert deliveries(store) == []


def test_without_a_public_url_the_request_url_is_signed(store, sandbox, config, contact) -> None:
    _, contact_id = contact
    settings = crm_settings(sandbox, OUTREACH_PUBLIC_URL=None)
    client = Client(make_app(store, settings, config, FixedClock(NOW)))
    url = "http://localhost/webhooks/hubspot?portal=a%3Ab"
    body = json.dumps([hubspot_event(1, contact_id, "opportunity", NOW)]).encode()
    answer = client.post(
        "/webhooks/hubspot?portal=a%3Ab", data=body, headers=hubspot_headers(body, NOW, url)
    )
    assert answer.status_code == 200, answer.text


def test_hubspot_decodes_the_listed_escapes_only() -> None:
    assert decode_uri("https://x/p?a=%3a%2F%3F%40%21%24%27%28%29%2A%2C%3B&b=%20") == (
        "https://x/p?a=:/?@!$'()*,;&b=%20"
    )


def test_bodies_that_cannot_be_read_are_400_and_one_bad_item_is_left_out(
    client, store, contact
) -> None:
    _, contact_id = contact
    for raw in (b"{not json", b'{"eventId": 1}', b"\xff", b"[1, 2]", b'[{"eventId": 1}]'):
        answer = post(client, raw)
        assert answer.status_code == 400, answer.text
    good = hubspot_event(4, contact_id, "opportunity", NOW)
    broken = {**hubspot_event(5, contact_id, "opportunity", NOW), "occurredAt": "never"}
    answer = post(client, [good, broken, {"eventId": 6}])
    assert answer.status_code == 200
    assert (answer.json["applied"], answer.json["bad"]) == (1, 2)
    assert post(client, []).json["applied"] == 0


def test_a_body_over_the_limit_is_413(client, store) -> None:
    answer = post(client, b"[" + b" " * (1024 * 1024) + b"]")
    assert answer.status_code == 413


def test_without_the_client_secret_every_post_is_503(store, sandbox, config) -> None:
    app = make_app(
        store, crm_settings(sandbox, HUBSPOT_CLIENT_SECRET=None), config, FixedClock(NOW)
    )
    assert any("HUBSPOT_CLIENT_SECRET" in p for p in app.problems)
    answer = Client(app).post(PATH, data=b"[]")
    assert answer.status_code == 503 and "HUBSPOT_CLIENT_SECRET" in answer.text
