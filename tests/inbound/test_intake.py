"""Intake: stored once, matched by token, thread or sender, and what each kind does.

Messages are built by the sandbox's answer generator (the same bytes the demo posts) or
inline; the store is the real one (SQLite, or PostgreSQL in CI's second run). The effects
are checked after ``process_events``, the step every tick starts with.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from outreach.cadence import load_cadence_file
from outreach.engine.enroll import process_events
from outreach.engine.tick import engine_transactions
from outreach.inbound.intake import (
    OOO_DEFAULT_PAUSE,
    REPLY_TASK_TITLE,
    SOFT_BOUNCE_LIMIT,
    ingest_messages,
)
from outreach.inbound.raw import RawMessage
from outreach.paths import default_config_dir
from outreach.sandbox.answers import bounce_for, human_reply, out_of_office, unsubscribe_reply
from outreach.store.schema import (
    CandidateRecord,
    ContactPoint,
    Enrollment,
    Event,
    InboundMessage,
    Person,
    Task,
    Touch,
    WriteBack,
)

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
SENT = NOW - timedelta(days=1)
DOMAIN = "reply.northwind.example"


@pytest.fixture
def config():
    return load_cadence_file(default_config_dir() / "cadences.yaml")


def seed(engine, i: int, *, source: str = "greenhouse") -> dict[str, Any]:
    """A person with one email address, an application enrollment and one sent touch;
    returns the SendGrid fake's view of that touch (what the answer generator needs)."""
    token = f"{i:016x}"
    with engine.begin() as conn:
        conn.execute(
            insert(Person.__table__).values(
                id=i, global_opt_out=False, created_at=SENT, updated_at=SENT
            )
        )
        conn.execute(
            insert(CandidateRecord.__table__).values(
                id=i,
                person_id=i,
                source=source,
                external_id=f"c{i}",
                first_name="Ann",
                email=f"person{i}@example.com",
                stage="applied",
                owner_id="rec-1",
                tags=[],
                custom={},
                created_at=SENT,
                updated_at=SENT,
            )
        )
        conn.execute(
            insert(ContactPoint.__table__).values(
                id=i,
                person_id=i,
                kind="email",
                value=f"person{i}@example.com",
                valid=True,
                suppressed=False,
                created_at=SENT,
                updated_at=SENT,
            )
        )
        conn.execute(
            insert(Enrollment.__table__).values(
                id=i,
                person_id=i,
                record_id=i,
                cadence_id="application",
                trigger_stage="applied",
                triggered_at=SENT,
                status="active",
                next_step=1,
                next_occurrence=0,
                next_due_at=NOW + timedelta(days=5),
                step_due_at=NOW + timedelta(days=5),
                created_at=SENT,
                updated_at=SENT,
            )
        )
        conn.execute(
            insert(Touch.__table__).values(
                id=i,
                idempotency_key=f"{i}:acknowledge:0",
                enrollment_id=i,
                person_id=i,
                cadence_id="application",
                step_id="acknowledge",
                occurrence=0,
                status="sent",
                channel="email",
                contact_point_id=i,
                transactional=False,
                due_at=SENT,
                planned_at=SENT,
                claimed_at=SENT,
                sent_at=SENT,
                reply_token=token,
                message_id=f"outreach.{token}@{DOMAIN}",
                updated_at=SENT,
            )
        )
    return {
        "to": [f"person{i}@example.com"],
        "subject": "Your application",
        "headers": {"Message-ID": f"<outreach.{token}@{DOMAIN}>"},
        "reply_to": {"email": f"replies+{token}@{DOMAIN}"},
        "from": {"email": f"talent@{DOMAIN}", "name": "Northwind Talent"},
        "content": [{"type": "text/plain", "value": "Hi Ann,\nThanks for applying.\nJo"}],
    }


def raw(data: bytes, where: str = "test") -> RawMessage:
    return RawMessage(where=where, raw=data, source="file", received_at=NOW - timedelta(hours=2))


def rows(engine, table) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(table).order_by(table.c.id)).mappings())


def apply(engine, config) -> None:
    process_events(engine_transactions(engine), config, NOW)


def test_a_human_reply_stops_the_cadence_and_becomes_a_task_and_a_crm_note(engine, config) -> None:
    original = seed(engine, 1)
    report = ingest_messages(
        engine, [raw(human_reply(original, NOW - timedelta(hours=2)))], now=NOW, config=config
    )
    assert (report.stored, report.kinds["human"], report.unmatched) == (1, 1, 0)
    (message,) = rows(engine, InboundMessage.__table__)
    assert message["matched_by"] == "token" and message["touch_id"] == 1
    assert "Tuesday afternoon" in message["new_text"]
    assert "Thanks for applying" not in message["new_text"], "quoted history is stripped"
    (event,) = rows(engine, Event.__table__)
    assert (event["type"], event["touch_id"], event["person_id"]) == ("reply", 1, 1)
    assert event["at"] == NOW - timedelta(hours=2)  # time to response: from the touch to this
    (task,) = rows(engine, Task.__table__)
    assert task["title"] == REPLY_TASK_TITLE and task["kind"] == "reply"
    assert task["owner_id"] == "rec-1" and "Tuesday afternoon" in task["body"]
    assert task["due_at"] == NOW - timedelta(hours=2) + timedelta(days=1)  # a Wednesday
    notes = {w["kind"]: w for w in rows(engine, WriteBack.__table__)}
    assert set(notes) == {"note", "task"}
    assert notes["note"]["external_id"] == "c1" and "Tuesday afternoon" in notes["note"]["text"]
    assert "Thanks for applying" not in notes["note"]["text"]
    assert notes["task"]["task_id"] == task["id"]
    apply(engine, config)
    (enrollment,) = rows(engine, Enrollment.__table__)
    assert enrollment["status"] == "stopped" and enrollment["stop_reason"].startswith("reply")


def test_the_same_message_twice_counts_once(engine, config) -> None:
    original = seed(engine, 1)
    data = human_reply(original, NOW - timedelta(hours=2))
    first = ingest_messages(engine, [raw(data), raw(data, "again")], now=NOW, config=config)
    assert (first.stored, first.duplicates) == (1, 1)
    second = ingest_messages(engine, [raw(data)], now=NOW + timedelta(hours=1), config=config)
    assert (second.stored, second.duplicates) == (0, 1)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Event)).scalar() == 1
        assert conn.execute(select(func.count()).select_from(Task)).scalar() == 1


def test_matching_falls_back_from_token_to_thread_to_sender(engine, config) -> None:
    by_token, by_thread, by_sender = seed(engine, 1), seed(engine, 2), seed(engine, 3)
    thread = dict(by_thread, reply_to={"email": f"replies@{DOMAIN}"})  # token lost
    sender = dict(by_sender, reply_to={"email": f"replies@{DOMAIN}"}, headers={})
    messages = [
        raw(human_reply(by_token, NOW - timedelta(hours=3)), "a"),
        raw(human_reply(thread, NOW - timedelta(hours=3), choice=1), "b"),
        raw(human_reply(sender, NOW - timedelta(hours=3), choice=2), "c"),
    ]
    ingest_messages(engine, messages, now=NOW, config=config)
    found = {
        r["origin"]: (r["matched_by"], r["touch_id"])
        for r in rows(engine, InboundMessage.__table__)
    }
    assert found == {"a": ("token", 1), "b": ("thread", 2), "c": ("sender", 3)}


def test_what_matches_no_one_is_kept_and_listed(engine, config) -> None:
    stranger = {
        "to": ["stranger@example.net"],
        "subject": "Hello",
        "headers": {},
        "reply_to": {"email": f"replies@{DOMAIN}"},
        "from": {"email": f"talent@{DOMAIN}"},
        "content": [],
    }
    report = ingest_messages(
        engine, [raw(human_reply(stranger, NOW - timedelta(hours=1)))], now=NOW, config=config
    )
    assert (report.stored, report.unmatched) == (1, 1)
    (message,) = rows(engine, InboundMessage.__table__)
    assert message["person_id"] is None and message["matched_by"] is None
    assert rows(engine, Event.__table__) == []
    from outreach.inbound.listing import iter_inbound

    assert [m["id"] for m in iter_inbound(engine, kind="unmatched")] == [message["id"]]
    assert [m["id"] for m in iter_inbound(engine, kind="human")] == [message["id"]]
    assert list(iter_inbound(engine, kind="bounce")) == []


def test_out_of_office_pauses_until_the_return_date_and_stops_nothing(engine, config) -> None:
    original = seed(engine, 1)
    back = datetime(2026, 12, 7, tzinfo=UTC)
    report = ingest_messages(
        engine,
        [raw(out_of_office(original, NOW - timedelta(hours=1), back))],
        now=NOW,
        config=config,
    )
    assert report.kinds["auto"] == 1 and report.out_of_office == 1
    (message,) = rows(engine, InboundMessage.__table__)
    assert message["out_of_office"] and message["returns_on"] == date(2026, 12, 7)
    (event,) = rows(engine, Event.__table__)
    assert event["type"] == "auto_reply"
    apply(engine, config)
    (person,) = rows(engine, Person.__table__)
    zone = config.policy.zone
    assert person["paused_until"] == datetime(2026, 12, 7, tzinfo=zone)
    (enrollment,) = rows(engine, Enrollment.__table__)
    assert enrollment["status"] == "active", "an out-of-office notice is not a response"
    assert rows(engine, Task.__table__) == []


def test_out_of_office_without_a_date_pauses_a_week(engine, config) -> None:
    original = seed(engine, 1)
    data = out_of_office(original, NOW - timedelta(hours=1), NOW).replace(
        b"and will be back on", b"and will answer when"
    )
    ingest_messages(engine, [raw(data)], now=NOW, config=config)
    apply(engine, config)
    (person,) = rows(engine, Person.__table__)
    assert person["paused_until"] == NOW - timedelta(hours=2) + OOO_DEFAULT_PAUSE


def test_a_human_reply_after_an_out_of_office_ends_the_pause(engine, config) -> None:
    original = seed(engine, 1)
    ooo = out_of_office(original, NOW - timedelta(hours=5), NOW + timedelta(days=9))
    ingest_messages(engine, [raw(ooo, "ooo")], now=NOW, config=config)
    apply(engine, config)
    ingest_messages(engine, [raw(human_reply(original, NOW), "reply")], now=NOW, config=config)
    apply(engine, config)
    (person,) = rows(engine, Person.__table__)
    assert person["paused_until"] is None


def receipt_auto_reply(message: dict[str, Any], at: datetime) -> bytes:
    """A help desk's acknowledgement: automatic (RFC 3834), but no absence."""
    mail = EmailMessage()
    mail["From"] = message["to"][0]
    mail["To"] = message["reply_to"]["email"]
    mail["Subject"] = "Re: " + message["subject"]
    mail["Date"] = format_datetime(at)
    mail["Message-ID"] = make_msgid(domain="example.com")
    mail["In-Reply-To"] = message["headers"]["Message-ID"]
    mail["Auto-Submitted"] = "auto-replied"
    mail.set_content("We have received your request and will get back to you shortly.")
    return bytes(mail)


def test_every_auto_reply_is_an_event_and_only_out_of_office_pauses(engine, config) -> None:
    first, second = seed(engine, 1), seed(engine, 2)
    back = datetime(2026, 12, 7, tzinfo=UTC)
    report = ingest_messages(
        engine,
        [
            raw(receipt_auto_reply(first, NOW - timedelta(hours=1)), "receipt"),
            raw(out_of_office(second, NOW - timedelta(hours=1), back), "ooo"),
        ],
        now=NOW,
        config=config,
    )
    assert report.kinds["auto"] == 2 and report.out_of_office == 1
    events = rows(engine, Event.__table__)
    assert [(e["type"], e["person_id"], e["touch_id"]) for e in events] == [
        ("auto_reply", 1, 1),
        ("auto_reply", 2, 2),
    ]
    receipt, ooo = (e["payload"] for e in events)
    assert receipt["out_of_office"] is False and "until" not in receipt
    assert receipt["matched_by"] == "token" and receipt["inbound_id"] == 1
    assert ooo["out_of_office"] is True and ooo["returns_on"] == "2026-12-07"
    assert datetime.fromisoformat(ooo["until"]) == datetime(2026, 12, 7, tzinfo=config.policy.zone)
    apply(engine, config)
    people = {p["id"]: p for p in rows(engine, Person.__table__)}
    assert people[1]["paused_until"] is None, "an acknowledgement is no absence"
    assert people[2]["paused_until"] == datetime(2026, 12, 7, tzinfo=config.policy.zone)
    # Neither is a reply: nothing stops, no recruiter task, no CRM note.
    assert {e["status"] for e in rows(engine, Enrollment.__table__)} == {"active"}
    assert rows(engine, Task.__table__) == [] and rows(engine, WriteBack.__table__) == []


def test_an_auto_reply_does_not_end_an_out_of_office_pause(engine, config) -> None:
    original = seed(engine, 1)
    ooo = out_of_office(original, NOW - timedelta(hours=5), NOW + timedelta(days=9))
    ingest_messages(engine, [raw(ooo, "ooo")], now=NOW, config=config)
    apply(engine, config)
    (paused,) = rows(engine, Person.__table__)
    ingest_messages(
        engine, [raw(receipt_auto_reply(original, NOW), "receipt")], now=NOW, config=config
    )
    apply(engine, config)
    (person,) = rows(engine, Person.__table__)
    assert person["paused_until"] == paused["paused_until"] is not None


def test_a_hard_bounce_suppresses_the_address(engine, config) -> None:
    original = seed(engine, 1)
    report = ingest_messages(
        engine, [raw(bounce_for(original, NOW - timedelta(hours=1)))], now=NOW, config=config
    )
    assert report.kinds["bounce"] == 1
    (message,) = rows(engine, InboundMessage.__table__)
    assert (message["bounce_status"], message["matched_by"]) == ("5.1.1", "token")
    apply(engine, config)
    (point,) = rows(engine, ContactPoint.__table__)
    assert point["suppressed"] and point["suppressed_reason"] == "bounced"


def test_soft_bounces_are_counted_and_the_third_suppresses(engine, config) -> None:
    original = seed(engine, 1)
    for n in range(SOFT_BOUNCE_LIMIT):
        data = bounce_for(original, NOW - timedelta(hours=5 - n), "4.2.2")
        report = ingest_messages(engine, [raw(data, f"soft {n}")], now=NOW, config=config)
        assert report.soft_bounces == 1
        apply(engine, config)
        (point,) = rows(engine, ContactPoint.__table__)
        assert point["suppressed"] == (n == SOFT_BOUNCE_LIMIT - 1), n


def test_an_unsubscribe_by_reply_suppresses_every_email_address(engine, config) -> None:
    original = seed(engine, 1)
    with engine.begin() as conn:
        conn.execute(
            insert(ContactPoint.__table__).values(
                id=1000,  # explicit: the seeded rows did not move PostgreSQL's sequence
                person_id=1,
                kind="email",
                value="ann.other@example.org",
                valid=True,
                suppressed=False,
                created_at=SENT,
                updated_at=SENT,
            )
        )
    report = ingest_messages(
        engine,
        [raw(unsubscribe_reply(original, NOW - timedelta(hours=1)))],
        now=NOW,
        config=config,
    )
    assert report.kinds["unsubscribe"] == 1
    apply(engine, config)
    assert all(p["suppressed"] for p in rows(engine, ContactPoint.__table__))
    (enrollment,) = rows(engine, Enrollment.__table__)
    assert enrollment["status"] == "stopped"


def test_a_bad_message_is_kept_with_its_error_and_the_batch_goes_on(engine, config) -> None:
    original = seed(engine, 1)
    batch = [
        raw(b"", "empty"),
        raw(b"\x00\x01\x02 not mail at all \xff" * 10, "garbage"),
        RawMessage(where="INBOX uid 7", raw=None, source="imap", error="FETCH failed"),
        raw(human_reply(original, NOW - timedelta(hours=1)), "good"),
    ]
    report = ingest_messages(engine, batch, now=NOW, config=config)
    assert report.kinds["human"] == 1
    assert len(report.errors) == 3
    assert report.errors[2].startswith("INBOX uid 7: FETCH failed")
    assert all(e.split(":")[0] in ("empty", "garbage", "INBOX uid 7") for e in report.errors)
    kinds = sorted(r["kind"] for r in rows(engine, InboundMessage.__table__))
    assert kinds == ["human", "invalid", "invalid", "invalid"]
    assert "person1@example.com" not in " ".join(report.errors)
    again = ingest_messages(engine, batch, now=NOW, config=config)
    assert again.stored == 0 and again.duplicates == 4


def test_a_record_from_an_import_file_gets_no_crm_write_back(engine, config) -> None:
    original = seed(engine, 1, source="import")
    ingest_messages(engine, [raw(human_reply(original, NOW))], now=NOW, config=config)
    assert rows(engine, WriteBack.__table__) == []
    assert len(rows(engine, Task.__table__)) == 1


def test_unmatched_notices_and_soft_bounces_are_still_counted(engine, config) -> None:
    stranger = seed(engine, 1)
    stranger = dict(
        stranger, to=["stranger@example.net"], headers={}, reply_to={"email": f"replies@{DOMAIN}"}
    )
    report = ingest_messages(
        engine,
        [
            raw(out_of_office(stranger, NOW - timedelta(hours=1), NOW + timedelta(days=3)), "a"),
            raw(bounce_for(stranger, NOW - timedelta(hours=1), "4.2.2"), "b"),
        ],
        now=NOW,
        config=config,
    )
    assert (report.unmatched, report.out_of_office, report.soft_bounces) == (2, 1, 1)
    assert rows(engine, Event.__table__) == []


@pytest.mark.parametrize(
    ("make", "reason"),
    [(bounce_for, "bounced"), (unsubscribe_reply, "unsubscribed")],
    ids=["bounce", "unsubscribe"],
)
def test_a_notice_for_an_address_no_one_has_yet_holds_when_they_arrive(
    engine, config, make, reason
) -> None:
    from outreach.contacts import normalize_phone
    from outreach.records import CandidateIn
    from outreach.store.candidates import upsert_candidates

    stranger = {
        "to": ["Later@Example.net"],
        "subject": "Hello",
        "headers": {"Message-ID": f"<elsewhere.1@{DOMAIN}>"},
        "reply_to": {"email": f"replies@{DOMAIN}"},
        "from": {"email": f"talent@{DOMAIN}"},
        "content": [{"type": "text/plain", "value": "Hi"}],
    }
    report = ingest_messages(
        engine, [raw(make(stranger, NOW - timedelta(hours=1)))], now=NOW, config=config
    )
    assert report.unmatched == 1
    later = CandidateIn(
        source="lever",
        external_id="l9",
        first_name="Lee",
        email="later@example.net",
        phone=normalize_phone("+1 415 555 0100"),
    )
    with engine.begin() as conn:
        upsert_candidates(conn, [later], NOW + timedelta(days=3))
    email, phone = sorted(rows(engine, ContactPoint.__table__), key=lambda r: r["kind"])
    assert email["suppressed"] and email["suppressed_reason"] == reason
    assert not phone["suppressed"]


def test_nul_characters_in_a_message_do_not_fail_the_batch(engine, config) -> None:
    """PostgreSQL refuses NUL in text and in query parameters: a message with one in its
    subject or body failed the whole batch (503 on Inbound Parse; found by
    tests/fuzz on PostgreSQL). They are dropped; the message and the next one are stored."""
    original = seed(engine, 1)
    reply = human_reply(original, NOW - timedelta(hours=2))
    head, body = reply.split(b"\n\n", 1)
    # a NUL in the header block makes it binary (invalid); an encoded word carries one
    head = head.replace(b"Subject: Re:", b"Subject: =?utf-8?q?Re=00=3A?=", 1)
    nul = head + b"\n\nSee you\x00 then\n\n" + body
    report = ingest_messages(
        engine, [raw(nul, "nul"), raw(b"From:\n\x00", "bare")], now=NOW, config=config
    )
    assert report.stored == 2
    stored = {m["origin"]: m for m in rows(engine, InboundMessage.__table__)}
    assert all("\x00" not in (m["new_text"] or "") + (m["subject"] or "") for m in stored.values())
    assert stored["nul"]["matched_by"] == "token" and "See you then" in stored["nul"]["new_text"]
