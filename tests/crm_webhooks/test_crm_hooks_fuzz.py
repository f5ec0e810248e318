"""Correctly signed but arbitrary bodies to the three CRM routes never get a 500."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from crm_hook_posts import (
    GREENHOUSE_SECRET,
    HUBSPOT_SECRET,
    LEVER_TOKEN,
    PUBLIC,
    greenhouse_headers,
    hubspot_headers,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledger_rows import walkthrough_store
from throwaway_db import throwaway_database
from werkzeug.test import Client

from outreach.cadence import load_cadence_file
from outreach.clock import FixedClock
from outreach.crm_webhooks.lever import sign as lever_sign
from outreach.paths import default_config_dir
from outreach.serve import make_app
from outreach.settings import Settings
from outreach.store import make_engine, upgrade

EXAMPLES = int(os.environ.get("OUTREACH_FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
ALLOWED = {200, 400, 413}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
keys = st.sampled_from(
    [
        "action",
        "payload",
        "application",
        "candidate",
        "person",
        "id",
        "new_candidate_id",
        "current_stage",
        "name",
        "status",
        "last_activity_at",
        "email_addresses",
        "eventId",
        "occurredAt",
        "objectId",
        "subscriptionType",
        "propertyName",
        "propertyValue",
        "event",
        "data",
        "opportunityId",
    ]
)
shaped = st.recursive(
    json_values,
    lambda children: st.dictionaries(keys, children, max_size=6) | st.lists(children, max_size=3),
    max_leaves=30,
)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    folder = tmp_path_factory.mktemp("crm-fuzz")
    with throwaway_database(folder) as url:
        engine = make_engine(url)
        upgrade(engine)
        config = load_cadence_file(default_config_dir() / "cadences.yaml")
        walkthrough_store(engine, config, folder, NOW - timedelta(days=1))
        env = Settings(
            _env_file=None,
            OUTREACH_PUBLIC_URL=PUBLIC,
            GREENHOUSE_WEBHOOK_SECRET=GREENHOUSE_SECRET,
            LEVER_WEBHOOK_TOKEN=LEVER_TOKEN,
            LEVER_API_KEY="fuzz",
            LEVER_BASE_URL="http://127.0.0.1:9/v1",  # nothing listens: a read is a quick 503
            HUBSPOT_CLIENT_SECRET=HUBSPOT_SECRET,
        )
        yield Client(make_app(engine, env, config, FixedClock(NOW)))
        engine.dispose()


@FUZZ
@given(
    body=shaped,
    event_id=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=300),
)
def test_signed_greenhouse_bodies_never_500(client: Client, body: Any, event_id: str) -> None:
    raw = json.dumps(body).encode()
    headers = greenhouse_headers(raw, event_id)
    answer = client.post("/webhooks/greenhouse", data=raw, headers=headers)
    assert answer.status_code in ALLOWED, (answer.status_code, answer.text)


@FUZZ
@given(body=shaped)
def test_signed_hubspot_bodies_never_500(client: Client, body: Any) -> None:
    raw = json.dumps(body).encode()
    answer = client.post("/webhooks/hubspot", data=raw, headers=hubspot_headers(raw, NOW))
    assert answer.status_code in ALLOWED, (answer.status_code, answer.text)


@FUZZ
@given(body=st.dictionaries(keys, shaped, max_size=6), token=st.text(max_size=20))
def test_signed_lever_bodies_never_500(client: Client, body: dict, token: str) -> None:
    body = {**body, "token": token, "triggeredAt": 1_764_000_000_000}
    body["signature"] = lever_sign(LEVER_TOKEN, token, body["triggeredAt"])
    raw = json.dumps(body).encode()
    answer = client.post("/webhooks/lever", data=raw, headers={"Content-Type": "application/json"})
    assert answer.status_code in ALLOWED | {503}, (answer.status_code, answer.text)
