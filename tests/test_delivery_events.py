"""Delivery-side events: SendGrid ``delivered``, ``open``, ``click`` kept for the report."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from ledger_rows import person_of, point, sent_touch, walkthrough_store
from pydantic import ValidationError
from sqlalchemy import event as sa_event
from sqlalchemy import select
from sqlalchemy.exc import DataError
from werkzeug.test import Client

from outreach.cadence import load_cadence_file
from outreach.clock import FixedClock
from outreach.engine.enroll import process_events
from outreach.engine.tick import engine_transactions
from outreach.events import (
    DeliveryEvent,
    from_sendgrid,
    ingest_deliveries,
    read_jsonl,
    read_sendgrid_batch,
)
from outreach.paths import default_config_dir
from outreach.sandbox.sendgrid import FakeSendGrid
from outreach.serve import make_app
from outreach.settings import Settings
from outreach.store.schema import Event

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
STAMP = int(NOW.timestamp())
SENDGRID = "/webhooks/sendgrid/events"
DELIVERY = ("delivered", "open", "click")
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "sendgrid" / "event_webhook.json"


@pytest.fixture(scope="module")
def config():
    return load_cadence_file(default_config_dir() / "cadences.yaml")


@pytest.fixture
def store(engine, config, tmp_path: Path):
    """The walkthrough's candidates, their import's stage changes already applied."""
    walkthrough_store(engine, config, tmp_path, NOW - timedelta(days=1))
    process_events(engine_transactions(engine), config, NOW - timedelta(days=1))
    return engine


@pytest.fixture
def touches(store) -> dict[str, int]:
    """A sent email touch to Ann and one to Ben."""
    ann, ben = person_of(store, "c1"), person_of(store, "c2")
    return {
        "ann": sent_touch(store, ann, point(store, "email", "ann@example.com").id, "t:ann", at=NOW),
        "ben": sent_touch(store, ben, point(store, "email", "ben@example.com").id, "t:ben", at=NOW),
    }


@pytest.fixture
def sendgrid() -> FakeSendGrid:
    return FakeSendGrid()


@pytest.fixture
def client(store, sendgrid, config) -> Client:
    settings = Settings(_env_file=None, SENDGRID_WEBHOOK_PUBLIC_KEY=sendgrid.webhook_public_key)
    return Client(make_app(store, settings, config, FixedClock(NOW)))


def post(client: Client, sendgrid: FakeSendGrid, items: list) -> dict:
    payload = json.dumps(items).encode()
    response = client.post(
        SENDGRID,
        data=payload,
        headers=sendgrid.sign_events(payload, STAMP),
        content_type="application/json",
    )
    assert response.status_code == 200, response.text
    return response.json


def item(kind: str, touch_id: int | str | None, event_id: str, seconds: int, **extra) -> dict:
    """An Event Webhook item as SendGrid posts it, the touch id as a custom arg."""
    out = {
        "email": "ann@example.com",
        "timestamp": STAMP - 3600 + seconds,
        "smtp-id": "<x@sandbox>",
        "event": kind,
        "sg_event_id": event_id,
        "sg_message_id": "m.0",
        **extra,
    }
    if touch_id is not None:
        out["touch_id"] = str(touch_id)
    return out


def stored(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(
            select(Event).where(Event.type != "stage_change").order_by(Event.id)
        ).all()


def test_delivered_open_and_click_are_stored_for_their_touch(
    client, store, sendgrid, touches, config
) -> None:
    ann, ben = touches["ann"], touches["ben"]
    items = [
        item("processed", ann, "p0", 0),
        item("delivered", ann, "d0", 2, response="250 OK"),
        item("open", ann, "o0", 5, sg_machine_open=True, useragent="Mozilla/5.0", ip="17.0.0.1"),
        item("open", ann, "o1", 900, sg_machine_open=False, useragent="Mozilla/5.0"),
        item(
            "click",
            ann,
            "c0",
            960,
            url="https://jobs.example.com/apply?email=ann%40example.com",
            url_offset={"index": 0, "type": "html"},
        ),
        item("delivered", ben, "d1", 3, email="ben@example.com"),
    ]
    assert post(client, sendgrid, items) == {
        "recorded": 5,
        "duplicates": 0,
        "unmatched": 0,
        "ignored": 0,
        "bad": 0,
    }
    rows = stored(store)
    ann_person, ann_email = person_of(store, "c1"), point(store, "email", "ann@example.com").id
    start = datetime.fromtimestamp(STAMP - 3600, UTC)
    assert [
        (r.type, r.touch_id, r.person_id, r.contact_point_id, r.channel, r.at, r.payload)
        for r in rows[:4]
    ] == [
        ("delivered", ann, ann_person, ann_email, "email", start + timedelta(seconds=2), {}),
        ("open", ann, ann_person, ann_email, "email", start + timedelta(seconds=5), {"machine": True}),
        ("open", ann, ann_person, ann_email, "email", start + timedelta(seconds=900), {"machine": False}),
        ("click", ann, ann_person, ann_email, "email", start + timedelta(seconds=960), {}),
    ]  # fmt: skip
    assert (rows[4].type, rows[4].touch_id, rows[4].person_id) == (
        "delivered",
        ben,
        person_of(store, "c2"),
    )
    assert [r.dedupe_key for r in rows] == [f"inbound:{k}" for k in ("d0", "o0", "o1", "c0", "d1")]
    # Never the URL, its query, the address, the user agent or the IP.
    text = json.dumps([r.payload for r in rows]) + "".join(str(r.source) for r in rows)
    assert "example" not in text and "Mozilla" not in text and "17.0.0.1" not in text
    # Stored as processed: the engine never acts on them.
    assert all(r.processed_at == NOW and r.created_at == NOW for r in rows)
    assert process_events(engine_transactions(store), config, NOW).events == 0


def test_a_reposted_batch_stores_nothing_twice(client, store, sendgrid, touches) -> None:
    ann = touches["ann"]
    items = [
        item("delivered", ann, "d0", 2),
        item("open", ann, "o0", 5, sg_machine_open=True),
        item("open", ann, "o0", 5, sg_machine_open=True),  # twice in one post
        item("click", ann, "c0", 60, url="https://example.com/"),
    ]
    first = post(client, sendgrid, items)
    assert (first["recorded"], first["duplicates"]) == (3, 1)
    again = post(client, sendgrid, items)
    assert (again["recorded"], again["duplicates"]) == (0, 4)
    assert [r.type for r in stored(store)] == ["delivered", "open", "click"]


def test_items_without_a_known_touch_are_ignored_not_stored(
    client, store, sendgrid, touches, caplog
) -> None:
    caplog.set_level("DEBUG", logger="outreach")
    ann = touches["ann"]
    items = [
        item("delivered", None, "d0", 2),  # sent outside the engine: no custom arg
        item("open", 999_999, "o0", 5),  # no touch has that id
        item("click", "not-a-touch", "c0", 60, url="https://example.com/"),
        item("delivered", ann, "d1", 3),
    ]
    answer = post(client, sendgrid, items)
    assert (answer["recorded"], answer["ignored"], answer["bad"]) == (1, 3, 0)
    assert [(r.type, r.touch_id) for r in stored(store)] == [("delivered", ann)]
    assert "[1]: open: no touch has id 999999" in caplog.text
    assert "[0]: delivered names no touch" in caplog.text
    assert "@" not in caplog.text


def test_malformed_items_are_named_and_the_good_ones_beside_them_are_stored(
    client, store, sendgrid, touches, caplog
) -> None:
    caplog.set_level("DEBUG", logger="outreach")
    ann = touches["ann"]
    items = [
        item("delivered", ann, "d0", 2),
        item("open", ann, "o0", 5, sg_machine_open="maybe"),
        {**item("click", ann, "c0", 60), "timestamp": -5},
        ["not", "an", "object"],
        item("open", ann, "o1", 6, sg_machine_open="true"),  # a string flag, as some relays send
        item("delivered", ann, "x\x00y", 7),
        item("click", ann, "c1", 61, url="https://example.com/"),
    ]
    answer = post(client, sendgrid, items)
    assert (answer["recorded"], answer["bad"], answer["ignored"]) == (3, 4, 0)
    rows = stored(store)
    assert [(r.type, r.payload) for r in rows] == [
        ("delivered", {}),
        ("open", {"machine": True}),
        ("click", {}),
    ]
    assert "[1]: sg_machine_open: not true or false" in caplog.text
    assert "[2]: timestamp: negative" in caplog.text
    assert "[3]: expected a JSON object, got array" in caplog.text
    assert "[5]: id: contains a NUL character" in caplog.text


def test_the_published_example_reads_as_delivery_events_and_stays_out_of_from_sendgrid() -> None:
    items = json.loads(FIXTURE.read_text())
    batch = read_sendgrid_batch(json.dumps(items).encode())
    kinds = [(e.type, e.machine, e.touch_id) for _, e in batch.deliveries]
    # The published example predates sg_machine_open: an open without it is not a machine's.
    assert kinds == [("delivered", None, None), ("open", False, None), ("click", None, None)]
    assert {e.type for e in from_sendgrid(items)} <= {"bounce", "opt_out", "unsubscribe"}


def test_one_insert_per_batch(store, touches) -> None:
    ann = touches["ann"]
    at = NOW - timedelta(hours=1)
    events = [
        (f"[{i}]", DeliveryEvent(type="open", channel="email", touch_id=ann, at=at, id=f"o{i}"))
        for i in range(300)
    ]
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:
        statements.append(statement)

    sa_event.listen(store, "before_cursor_execute", count)
    try:
        report = ingest_deliveries(store, events, now=NOW, batch_size=500)
    finally:
        sa_event.remove(store, "before_cursor_execute", count)
    assert (report.read, report.recorded) == (300, 300)
    kinds = [s.split()[0].upper() for s in statements]
    work = [k for k in kinds if k not in ("BEGIN", "SAVEPOINT", "RELEASE", "COMMIT")]
    # One read of the stored keys, one of the touches, one insert: no per-item round trip.
    assert work == ["SELECT", "SELECT", "INSERT"]


def test_a_row_the_database_refuses_is_named_and_the_rest_of_the_batch_is_kept(
    store, touches, monkeypatch
) -> None:
    import outreach.events as events_module

    real = events_module.bulk_write

    def refusing(conn, table, rows, **kwargs):
        if any("refuse" in (row.get("dedupe_key") or "") for row in rows):
            raise DataError("INSERT INTO events", {}, ValueError("value out of range"))
        return real(conn, table, rows, **kwargs)

    monkeypatch.setattr(events_module, "bulk_write", refusing)
    ann, at = touches["ann"], NOW - timedelta(hours=1)
    events = [
        (f"[{i}]", DeliveryEvent(type="click", channel="email", touch_id=ann, at=at, id=name))
        for i, name in enumerate(("c0", "refuse", "c2"))
    ]
    report = ingest_deliveries(store, events, now=NOW)
    assert report.recorded == 2
    assert report.bad == ["[1]: the database refused the event: ValueError"]
    assert len(stored(store)) == 2


def test_delivery_event_rules() -> None:
    with pytest.raises(ValidationError, match="only an open"):
        DeliveryEvent(type="click", channel="email", touch_id=1, at=NOW, machine=True)
    with pytest.raises(ValidationError, match="time zone"):
        DeliveryEvent(type="delivered", channel="email", touch_id=1, at=datetime(2026, 1, 1))
    with pytest.raises(ValidationError):
        DeliveryEvent(type="reply", channel="email", touch_id=1, at=NOW)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        DeliveryEvent(type="click", channel="email", touch_id=1, at=NOW, url="https://x")  # type: ignore[call-arg]
    opened = DeliveryEvent(type="open", channel="email", touch_id=1, at=NOW)
    assert opened.machine is False and opened.payload() == {"machine": False}


def test_the_jsonl_import_contract_does_not_take_delivery_types(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    lines = [{"type": kind, "touch_id": 1, "at": "2026-11-24T10:00:00Z"} for kind in DELIVERY]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    read = list(read_jsonl(path))
    assert [where for where, _ in read] == [f"{path}:{n}" for n in (1, 2, 3)]
    assert all(isinstance(e, str) and e.startswith("type: Input should be") for _, e in read)
    assert all("'reply', 'opt_out', 'bounce' or 'unsubscribe'" in str(e) for _, e in read)
