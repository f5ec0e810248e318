"""Inbound events: resolution, dedupe, bad lines, provider adapters, the CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from ledger_rows import person_of, point, sent_touch, walkthrough_store
from pydantic import ValidationError
from sqlalchemy import select
from tests_data import HEADER, ROWS

from outreach.cadence import load_cadence_file
from outreach.engine.enroll import process_events
from outreach.engine.tick import engine_transactions
from outreach.errors import InputError
from outreach.events import (
    InboundEvent,
    from_sendgrid,
    from_twilio_inbound,
    ingest_events,
    read_jsonl,
    read_sendgrid_batch,
)
from outreach.paths import default_config_dir
from outreach.sandbox.twilio import FakeTwilio
from outreach.store.schema import Event, Person

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
AT = "2026-11-24T10:00:00Z"


@pytest.fixture(scope="module")
def config():
    return load_cadence_file(default_config_dir() / "cadences.yaml")


@pytest.fixture
def store(engine, config, tmp_path: Path):
    """The walkthrough's eight good candidates (c1 Ann .. c10 Jon) in the store."""
    return walkthrough_store(engine, config, tmp_path, NOW - timedelta(days=1))


def inbound(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(
            select(Event).where(Event.type != "stage_change").order_by(Event.id)
        ).all()


def write_jsonl(tmp_path: Path, lines: list, name: str = "events.jsonl") -> Path:
    path = tmp_path / name
    path.write_text(
        "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    )
    return path


def test_resolves_by_email_phone_formats_and_record(store, tmp_path: Path) -> None:
    ann, dan, ben = (person_of(store, x) for x in ("c1", "c4", "c2"))
    lines = [
        {"type": "reply", "channel": "email", "address": " Ann@Example.COM ", "at": AT},
        {"type": "opt_out", "channel": "sms", "address": "(212) 555-0101", "at": AT},
        {"type": "reply", "address": "+1 415-555-0104", "at": "2026-11-24T05:00:00-05:00"},
        {"type": "reply", "address": "212.555.0101", "at": "2026-11-24T11:00:00Z"},
        {"type": "opt_out", "source": "import", "external_id": "c2", "at": AT, "detail": "asked"},
    ]
    report = ingest_events(store, read_jsonl(write_jsonl(tmp_path, lines)), now=NOW)
    assert (report.read, report.recorded, report.duplicates) == (5, 5, 0)
    assert report.unmatched == [] and report.bad == []

    rows = inbound(store)
    ann_email = point(store, "email", "ann@example.com").id
    ann_phone = point(store, "phone", "+12125550101").id
    dan_phone = point(store, "phone", "+14155550104").id
    assert [(r.type, r.channel, r.person_id, r.contact_point_id) for r in rows] == [
        ("reply", "email", ann, ann_email),
        ("opt_out", "sms", ann, ann_phone),
        ("reply", "sms", dan, dan_phone),  # no '@': a phone; channel from the point
        ("reply", "sms", ann, ann_phone),
        ("opt_out", None, ben, None),  # a record, no channel: a global opt-out at the tick
    ]
    assert rows[2].at == datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
    assert rows[4].record_id is not None and rows[4].payload["detail"] == "asked"
    assert all(r.processed_at is None and r.dedupe_key.startswith("inbound:") for r in rows)


def test_resolves_by_touch_id(store, config) -> None:
    eve = person_of(store, "c5")
    eve_email = point(store, "email", "eve@example.com").id
    touch = sent_touch(store, eve, eve_email, "t:1:0", at=NOW)
    events = [
        ("a:1", {"type": "unsubscribe", "touch_id": str(touch), "at": AT, "id": "u-1"}),
        ("a:2", InboundEvent(type="reply", touch_id=touch + 99, at=NOW)),
    ]
    report = ingest_events(store, events, now=NOW)
    assert report.recorded == 1
    assert report.unmatched == [f"a:2: no touch has id {touch + 99}"]
    (row,) = inbound(store)
    assert (row.person_id, row.touch_id, row.contact_point_id, row.channel) == (
        eve,
        touch,
        eve_email,
        "email",
    )
    assert row.dedupe_key == "inbound:u-1"

    stats = process_events(engine_transactions(store), config, NOW)
    assert stats.suppressed == 1
    assert point(store, "email", "eve@example.com").suppressed_reason == "unsubscribed"


def test_an_sms_opt_out_naming_an_email_touch_suppresses_the_phone_not_the_email(
    store, config
) -> None:
    ann = person_of(store, "c1")
    ann_email = point(store, "email", "ann@example.com").id
    ann_phone = point(store, "phone", "+12125550101").id
    touch = sent_touch(store, ann, ann_email, "t:2:0", at=NOW)
    events = [
        ("b:1", InboundEvent(type="opt_out", channel="sms", touch_id=touch, at=NOW)),
        # A channel of the same kind as the touch's still names the touch's contact point.
        ("b:2", InboundEvent(type="reply", channel="email", touch_id=touch, at=NOW)),
    ]
    report = ingest_events(store, events, now=NOW)
    assert report.recorded == 2 and report.unmatched == []
    sms_row, email_row = inbound(store)
    assert (sms_row.person_id, sms_row.touch_id, sms_row.channel) == (ann, touch, "sms")
    assert sms_row.contact_point_id is None
    assert email_row.contact_point_id == ann_email

    process_events(engine_transactions(store), config, NOW)
    phone = point(store, "phone", "+12125550101")
    assert phone.id == ann_phone
    assert phone.suppressed and phone.suppressed_reason == "opted out"
    assert not point(store, "email", "ann@example.com").suppressed


def test_reimport_records_nothing_new(store, tmp_path: Path) -> None:
    lines = [
        {"type": "reply", "channel": "email", "address": "ann@example.com", "at": AT},
        {"type": "bounce", "channel": "email", "address": "ben@example.com", "at": AT, "id": "b1"},
        # The same reply again, the address spelled differently and the instant in -05:00.
        {
            "type": "reply",
            "channel": "email",
            "address": "ANN@example.com",
            "at": "2026-11-24T05:00:00-05:00",
        },
    ]
    path = write_jsonl(tmp_path, lines)
    first = ingest_events(store, read_jsonl(path), now=NOW, batch_size=2)
    assert (first.read, first.recorded, first.duplicates) == (3, 2, 1)
    second = ingest_events(store, read_jsonl(path), now=NOW)
    assert (second.read, second.recorded, second.duplicates) == (3, 0, 3)
    assert len(inbound(store)) == 2


def test_bad_lines_are_named_and_the_rest_is_recorded(store, tmp_path: Path) -> None:
    lines = [
        {"type": "reply", "channel": "email", "address": "ann@example.com", "at": AT},
        "{not json",
        {"type": "reply", "channel": "email", "address": "ben@example.com"},  # no at
        "",
        {"type": "wave", "address": "ben@example.com", "at": AT},
        {"type": "reply", "address": "ben@example.com", "at": "2026-11-24T10:00:00"},  # naive
        {"type": "reply", "at": AT},  # names no one
        {"type": "reply", "address": "ben@example.com", "at": AT, "email": "x"},
        {"type": "reply", "channel": "email", "address": "secret-at-nowhere", "at": AT},
        "[1]",
        {"type": "reply", "address": "gus@example.com", "at": AT},
    ]
    path = write_jsonl(tmp_path, lines)
    report = ingest_events(store, read_jsonl(path), now=NOW)
    assert report.read == 10 and report.recorded == 2 and report.unmatched == []
    bad = {message.split(": ", 1)[0]: message.split(": ", 1)[1] for message in report.bad}
    assert sorted(bad) == [f"{path}:{n}" for n in (10, 2, 3, 5, 6, 7, 8, 9)]
    assert bad[f"{path}:2"].startswith("not valid JSON")
    assert bad[f"{path}:3"] == "at: Field required"
    assert bad[f"{path}:5"].startswith("type: Input should be 'reply'")
    assert bad[f"{path}:6"].startswith("at: needs a time zone offset")
    assert bad[f"{path}:7"] == "event: needs address, source and external_id, or touch_id"
    assert bad[f"{path}:8"].startswith("email: is not a field")
    assert bad[f"{path}:9"] == "address: not a valid email address"
    assert bad[f"{path}:10"] == "expected a JSON object, got list"
    assert not any("secret" in m or "@" in m for m in report.bad)


def test_unmatched_is_reported_without_the_address(store, tmp_path: Path) -> None:
    lines = [
        {"type": "reply", "channel": "email", "address": "stranger@example.org", "at": AT},
        {"type": "opt_out", "channel": "sms", "address": "+44 20 7946 0958", "at": AT},
        {"type": "reply", "source": "lever", "external_id": 77, "at": AT},
        {"type": "reply", "address": "ivy@example.com", "at": AT},
    ]
    path = write_jsonl(tmp_path, lines, "inbox.jsonl")
    report = ingest_events(store, read_jsonl(path), now=NOW)
    assert report.recorded == 1 and report.bad == []
    assert report.unmatched == [
        f"{path}:1: no person has that email address",
        f"{path}:2: no person has that phone number; kept on the suppression list",
        f"{path}:3: no lever record 77",
    ]
    text = " ".join(report.unmatched)
    assert "stranger" not in text and "7946" not in text


def test_twilio_stop_then_process_events_suppresses_that_phone(store, config) -> None:
    ann = person_of(store, "c1")
    twilio = FakeTwilio()
    stop = from_twilio_inbound(twilio.inbound("+12125550101", "  stop "), NOW - timedelta(hours=1))
    assert stop is not None
    assert (stop.type, stop.channel, stop.address) == ("opt_out", "sms", "+12125550101")
    assert stop.id.startswith("SM")
    assert from_twilio_inbound(twilio.inbound("+12125550101", "START"), NOW) is None
    assert from_twilio_inbound(twilio.inbound("+12125550101", "help"), NOW) is None
    reply = from_twilio_inbound(twilio.inbound("+12125550101", "Stop by at 3?"), NOW)
    assert reply is not None and reply.type == "reply"

    report = ingest_events(store, [("twilio:1", stop)], now=NOW)
    assert report.recorded == 1
    stats = process_events(engine_transactions(store), config, NOW)
    assert stats.suppressed == 1 and stats.opted_out == 0
    phone = point(store, "phone", "+12125550101")
    assert phone.suppressed and phone.suppressed_reason == "opted out"
    assert not point(store, "email", "ann@example.com").suppressed
    with store.connect() as conn:
        assert conn.scalar(select(Person.global_opt_out).where(Person.id == ann)) is False


def test_sendgrid_adapter_and_bounce(store, config) -> None:
    base = {"timestamp": 1764000000, "smtp-id": "<x@sandbox>", "sg_message_id": "m.0"}
    items = [
        {**base, "event": "processed", "email": "ben@example.com", "sg_event_id": "e0"},
        {**base, "event": "delivered", "email": "ben@example.com", "sg_event_id": "e1"},
        {
            **base,
            "event": "bounce",
            "type": "bounce",
            "email": "Ben@Example.com",
            "sg_event_id": "e2",
            "reason": "550 no such user",
            "status": "5.1.1",
        },
        {
            **base,
            "event": "bounce",
            "type": "blocked",
            "email": "gus@example.com",
            "sg_event_id": "e3",
        },
        {
            **base,
            "event": "dropped",
            "reason": "Bounced Address",
            "email": "jon@example.com",
            "sg_event_id": "e4",
        },
        {**base, "event": "spamreport", "email": "hal@example.com", "sg_event_id": "e5"},
        {
            **base,
            "event": "group_unsubscribe",
            "email": "ivy@example.com",
            "sg_event_id": "e6",
            "touch_id": "12",
        },
        {**base, "event": "open", "email": "ivy@example.com", "sg_event_id": "e7"},
        {**base, "event": "bounce", "sg_event_id": "e8"},  # malformed: left out
    ]
    events = from_sendgrid(items)
    assert [(e.type, e.channel, e.id) for e in events] == [
        ("bounce", "email", "e2"),
        ("bounce", "email", "e4"),
        ("opt_out", "email", "e5"),
        ("unsubscribe", "email", "e6"),
    ]
    assert events[0].at == datetime.fromtimestamp(1764000000, UTC)
    assert events[3].touch_id == 12
    assert "no such user" not in (events[0].detail or "")

    report = ingest_events(store, [(f"sendgrid:{e.id}", e) for e in events[:2]], now=NOW)
    assert report.recorded == 2 and report.unmatched == []
    process_events(engine_transactions(store), config, NOW)
    ben = point(store, "email", "ben@example.com")
    assert ben.suppressed and ben.suppressed_reason == "bounced"
    assert point(store, "email", "jon@example.com").suppressed


def test_model_rules() -> None:
    with pytest.raises(ValidationError, match="source and external_id go together"):
        InboundEvent(type="reply", source="lever", at=NOW)
    with pytest.raises(ValidationError, match="time zone"):
        InboundEvent(type="reply", touch_id=1, at=datetime(2026, 1, 1))
    event = InboundEvent(type="reply", external_id=5, source="x", at="2026-01-01T00:00:00+02:00")
    assert event.external_id == "5" and event.at == datetime(2025, 12, 31, 22, tzinfo=UTC)


def test_cli_events_import(cli, tmp_path: Path) -> None:
    people = tmp_path / "people.csv"
    people.write_text(HEADER + "\n".join(ROWS) + "\n")
    assert cli("import", str(people), "--now", "2026-11-24T15:00:00Z").exit_code == 1

    good = write_jsonl(
        tmp_path,
        [
            {"type": "reply", "channel": "email", "address": "ann@example.com", "at": AT},
            {"type": "opt_out", "channel": "sms", "address": "(212) 555-0101", "at": AT},
        ],
        "good.jsonl",
    )
    result = cli("events", "import", str(good), "--now", "2026-11-25T15:00:00Z")
    assert result.exit_code == 0, result.output
    assert "2 events read, 2 recorded, 0 already recorded, 0 unmatched, 0 bad" in result.stdout
    again = cli("events", "import", str(good))
    assert again.exit_code == 0
    assert "2 events read, 0 recorded, 2 already recorded" in again.stdout

    mixed = write_jsonl(
        tmp_path,
        [
            {"type": "reply", "address": "nobody@example.org", "at": AT},
            "{oops",
            {"type": "reply", "address": "ben@example.com", "at": AT},
        ],
        "mixed.jsonl",
    )
    result = cli("events", "import", str(mixed))
    assert result.exit_code == 1
    assert "3 events read, 1 recorded, 0 already recorded, 1 unmatched, 1 bad" in result.stdout
    assert f"{mixed}:1: no person has that email address" in result.stderr
    assert f"{mixed}:2: not valid JSON" in result.stderr
    assert "nobody" not in result.output

    missing = cli("events", "import", str(tmp_path / "nope.jsonl"))
    assert missing.exit_code == 2
    assert "file not found" in missing.stderr
    assert cli("events", "--help").exit_code == 0


def test_a_line_that_is_not_utf8_is_a_bad_line_and_the_rest_go_on(store, tmp_path: Path) -> None:
    from outreach.errors import InputError

    path = tmp_path / "latin1.jsonl"
    ann = json.dumps({"type": "reply", "address": "ann@example.com", "at": AT}).encode()
    ben = json.dumps({"type": "reply", "address": "ben@example.com", "at": AT}).encode()
    # Past the first read block, then a good line after the bad one.
    path.write_bytes(
        b"\xef\xbb\xbf" + (ann + b"\n") * 1000 + b'{"detail": "caf\xe9"}\n' + ben + b"\n"
    )
    report = ingest_events(store, read_jsonl(path), now=NOW)
    assert report.bad == [
        f"{path}:1001: not UTF-8 text (byte 0xe9 at column 16); save the file as UTF-8"
    ]
    assert len(inbound(store)) == 2
    with pytest.raises(InputError, match="file not found"):
        list(read_jsonl(tmp_path / "missing.jsonl"))


def test_sendgrids_published_event_webhook_example_maps_to_inbound_events() -> None:
    fixture = Path(__file__).resolve().parent / "fixtures" / "sendgrid" / "event_webhook.json"
    items = json.loads(fixture.read_text())
    events = from_sendgrid(items)
    assert [(e.type, e.channel) for e in events] == [
        ("bounce", "email"),  # bounce (no ``type``: a hard bounce)
        ("bounce", "email"),  # dropped: Bounced Address
        ("opt_out", "email"),  # spamreport
        ("unsubscribe", "email"),
        ("unsubscribe", "email"),  # group_unsubscribe
    ]
    assert all(e.id and e.at.tzinfo is not None and e.address for e in events)


def test_lines_out_of_range_or_with_nul_characters_are_bad_lines(store, tmp_path: Path) -> None:
    """A time before year 1 in UTC escaped the import as an OverflowError; a NUL in an id
    reached the database, which PostgreSQL refuses for the whole batch."""
    path = write_jsonl(
        tmp_path,
        [
            {"type": "reply", "address": "ann@example.com", "at": "0001-01-01T00:00:00+05:00"},
            {"type": "reply", "address": "ann@example.com", "at": AT, "id": "a\x00b"},
            {"type": "reply", "touch_id": 2**31, "at": AT},
            {"type": "reply", "address": "ben@example.com", "at": AT},
        ],
    )
    report = ingest_events(store, read_jsonl(path), now=NOW)
    assert report.recorded == 1
    assert report.bad == [
        f"{path}:1: at: is out of range (before year 1 or after 9999 in UTC)",
        f"{path}:2: id: contains a NUL character",
        f"{path}:3: touch_id: Input should be less than or equal to 2147483647",
    ]


def test_a_sendgrid_batch_is_read_item_by_item() -> None:
    good = {"event": "bounce", "email": "ann@example.com", "timestamp": 1764000000}
    body = json.dumps(
        [
            good,
            {**good, "timestamp": 1e30},
            {**good, "event": "processed", "timestamp": "x"},  # records nothing: not checked
            [good],
            {**good, "touch_id": "9" * 40},  # too large to be a touch: names nothing
            {**good, "touch_id": "570759517749"},  # past INTEGER: PostgreSQL refused the batch
            {**good, "event": "delivered", "timestamp": "x"},  # a delivery event is checked
        ]
    ).encode()
    batch = read_sendgrid_batch(body, now=NOW)
    assert batch.items == 7
    assert [(where, e if isinstance(e, str) else e.type) for where, e in batch.events] == [
        ("[0]", "bounce"),
        ("[1]", "timestamp: past the year 9999"),
        ("[3]", "expected a JSON object, got array"),
        ("[4]", "bounce"),
        ("[5]", "bounce"),
        ("[6]", "timestamp: not a Unix time (a number of seconds)"),
    ]
    assert batch.events[3][1].touch_id is None  # type: ignore[union-attr]
    assert batch.events[4][1].touch_id is None  # type: ignore[union-attr]
    assert batch.deliveries == []

    deep = b"[" + json.dumps(good).encode() + b"," + b"[" * 50_000 + b"]" * 50_000 + b"]"
    assert [e if isinstance(e, str) else e.type for _, e in read_sendgrid_batch(deep).events] == [
        "bounce",
        "nested more than 32 levels deep",
    ]
    for body, reason in [
        (b"\xff", "not UTF-8"),
        (b"{}", "a JSON object, not an array"),
        (b"[1,", "not JSON"),
        (b"[" * 50_000 + b"]" * 49_999, "not JSON"),
        (b"[" * 50_000 + b"]" * 50_000 + b"x", "more after its JSON array"),
    ]:
        with pytest.raises(InputError, match=reason):
            read_sendgrid_batch(body)


def test_a_stop_with_a_sid_that_is_not_a_sid_still_opts_out() -> None:
    form = {"From": "+12125550101", "Body": "STOP", "MessageSid": "a\x00b"}
    event = from_twilio_inbound(form, NOW)
    assert event is not None and (event.type, event.id) == ("opt_out", None)
