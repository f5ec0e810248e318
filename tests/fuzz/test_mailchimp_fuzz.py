"""Fuzz ``POST /webhooks/mailchimp``: signed batches of arbitrary Mandrill events are
answered 200, 400 or 413, never 500 or 503; the same posts unsigned or forged store nothing."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledger_rows import walkthrough_store
from sqlalchemy import Engine, func, select
from throwaway_db import throwaway_database
from werkzeug.test import Client

from outreach.cadence import load_cadence_file
from outreach.clock import FixedClock
from outreach.inbound import mandrill
from outreach.paths import default_config_dir
from outreach.serve import make_app
from outreach.settings import Settings
from outreach.store import make_engine, upgrade
from outreach.store.schema import Event, InboundMessage

EXAMPLES = int(os.environ.get("OUTREACH_FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
PUBLIC = "https://hooks.example.org/outreach"
PATH = "/webhooks/mailchimp"
KEY = "mandrill-fuzz-key"
SIGNED_OK = {200, 400, 413}


@dataclass
class World:
    engine: Engine
    client: Client


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("mailchimp-fuzz")
    with throwaway_database(folder) as url:
        engine = make_engine(url)
        upgrade(engine)
        config = load_cadence_file(default_config_dir() / "cadences.yaml")
        walkthrough_store(engine, config, folder, NOW - timedelta(days=1))
        env = Settings(
            _env_file=None,
            OUTREACH_PUBLIC_URL=PUBLIC,
            MAILCHIMP_WEBHOOK_KEY=KEY,
            OUTREACH_EMAIL_PROVIDER="mailchimp",
        )
        app = make_app(engine, env, config, FixedClock(NOW))
        assert not [p for p in app.problems if PATH in p]
        yield World(engine, Client(app))
        engine.dispose()


def stored(engine: Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        return (
            conn.execute(select(func.count()).select_from(Event)).scalar_one(),
            conn.execute(select(func.count()).select_from(InboundMessage)).scalar_one(),
        )


NASTY = ["", " ", "\x00", "\ud800", "é☃\u2028", "9" * 30, "NaN", "x" * 3000, "-1"]
texts = st.one_of(st.text(max_size=30), st.sampled_from(NASTY))
numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 2**63, 253402300800, 1795000000]),
)
values = st.recursive(
    st.none() | st.booleans() | numbers | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=10,
)
EVENTS = [
    "send",
    "hard_bounce",
    "soft_bounce",
    "spam",
    "unsub",
    "reject",
    "open",
    "click",
    "deferral",
    "inbound",
]


def field(*good: object) -> st.SearchStrategy:
    return st.one_of(st.sampled_from(good), values)


msgs = st.fixed_dictionaries(
    {},
    optional={
        "email": field("ben@example.com", "Hal@Example.com", "nobody@example.org"),
        "_id": field("m1", "m2"),
        "state": field("bounced", "sent", "rejected"),
        "metadata": field({"touch_id": "1"}, {"touch_id": 2}, {}),
        "raw_msg": field("From: ann@example.com\r\nSubject: hi\r\n\r\nyes", ""),
        "reject": field("hard-bounce", "unsub", "spam"),
    },
)
items = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "event": field(*EVENTS),
            "_id": field("m1", "m2", "m3"),
            "ts": field(1795000000, 1795000001),
            "msg": st.one_of(msgs, values),
        },
    ),
    values,
)
batches = st.one_of(
    st.lists(items, max_size=6).map(json.dumps),
    texts,
    st.sampled_from(["[", "{}", "null", "[[[[[[[[[[]]]]]]]]]]", "[" * 5000]),
)


def form(text: str) -> list[tuple[str, str]]:
    return [(mandrill.EVENTS_FIELD, text)]


def post(client: Client, params: list[tuple[str, str]], signature: str | None):
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if signature is not None:
        headers[mandrill.SIGNATURE_HEADER] = signature
    body = urlencode([(k, v.encode("utf-8", "surrogatepass")) for k, v in params])
    return client.post(PATH, data=body.encode("ascii"), headers=headers)


@FUZZ
@given(batch=batches)
def test_signed_mailchimp_batches_never_500(world: World, batch: str) -> None:
    params = form(batch)
    signature = mandrill.sign(KEY, PUBLIC + PATH, params) if "\ud800" not in batch else "x"
    response = post(world.client, params, signature)
    if "\ud800" in batch:
        assert response.status_code in {400, 403}
    else:
        assert response.status_code in SIGNED_OK, response.get_data(as_text=True)


# A header value cannot hold CR or LF on the wire (the test client refuses them too).
header_values = st.text(st.characters(max_codepoint=127, exclude_characters="\r\n"), max_size=60)


@FUZZ
@given(batch=batches, signature=st.one_of(st.none(), header_values))
def test_unsigned_or_forged_mailchimp_batches_store_nothing(
    world: World, batch: str, signature: str | None
) -> None:
    before = stored(world.engine)
    response = post(world.client, form(batch), signature)
    assert response.status_code in {401, 403}
    assert stored(world.engine) == before
