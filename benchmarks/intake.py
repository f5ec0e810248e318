"""Benchmark: ``replies poll`` over a real Dovecot mailbox of 10,000 messages.

Run: ``python benchmarks/intake.py [--messages 10000] [--tls]``.

Starts Dovecot on loopback (the tests' helper, tests/inbound/dovecot.py), seeds a SQLite
store with the touches the messages answer (people, email addresses, sent touches with
reply tokens and Message-IDs), APPENDs the messages (not timed): human replies quoting
the original (80 %), out-of-office notices with return dates (8 %), Postfix DSNs (7 %,
hard and soft) and unsubscribes by reply (5 %), all built by the sandbox's
``outreach/sandbox/answers.py``. Then times one poll: fetch over IMAP, parse, classify,
match, store, record events, flag; prints messages/s and peak RSS, and checks every
message was stored once and matched. Aim: >= 1,000 messages/s.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "inbound"))

NOW = datetime(2026, 11, 3, 14, 0, tzinfo=UTC)
DOMAIN = "reply.northwind.example"


def seed(engine, count: int) -> list[dict]:
    """People, addresses and one sent touch each; returns what each touch looked like."""
    from sqlalchemy import insert

    from outreach.store.schema import CandidateRecord, ContactPoint, Enrollment, Person, Touch

    sent = NOW - timedelta(days=1)
    people, records, points, enrollments, touches, messages = [], [], [], [], [], []
    for i in range(1, count + 1):
        token = f"{i:016x}"
        people.append({"id": i, "global_opt_out": False, "created_at": sent, "updated_at": sent})
        records.append(
            {
                "id": i,
                "person_id": i,
                "source": "greenhouse",
                "external_id": f"c{i}",
                "first_name": "Ann",
                "email": f"person{i}@example.com",
                "stage": "applied",
                "tags": [],
                "custom": {},
                "created_at": sent,
                "updated_at": sent,
            }
        )
        points.append(
            {
                "id": i,
                "person_id": i,
                "kind": "email",
                "value": f"person{i}@example.com",
                "valid": True,
                "suppressed": False,
                "created_at": sent,
                "updated_at": sent,
            }
        )
        enrollments.append(
            {
                "id": i,
                "person_id": i,
                "record_id": i,
                "cadence_id": "application",
                "trigger_stage": "applied",
                "triggered_at": sent,
                "status": "active",
                "next_step": 1,
                "next_occurrence": 0,
                "created_at": sent,
                "updated_at": sent,
            }
        )
        touches.append(
            {
                "id": i,
                "idempotency_key": f"{i}:acknowledge:0",
                "enrollment_id": i,
                "person_id": i,
                "cadence_id": "application",
                "step_id": "acknowledge",
                "occurrence": 0,
                "status": "sent",
                "channel": "email",
                "contact_point_id": i,
                "transactional": False,
                "due_at": sent,
                "planned_at": sent,
                "claimed_at": sent,
                "sent_at": sent,
                "reply_token": token,
                "message_id": f"outreach.{token}@{DOMAIN}",
                "updated_at": sent,
            }
        )
        messages.append(
            {
                "to": [f"person{i}@example.com"],
                "subject": "Your application to Northwind",
                "headers": {"Message-ID": f"<outreach.{token}@{DOMAIN}>"},
                "reply_to": {"email": f"replies+{token}@{DOMAIN}"},
                "from": {"email": f"talent@{DOMAIN}", "name": "Northwind Talent"},
                "content": [
                    {
                        "type": "text/plain",
                        "value": "Hi Ann,\n\nThanks for applying to the Data Engineer role. "
                        "We will be in touch within a week.\n\nJo",
                    }
                ],
            }
        )
    with engine.begin() as conn:
        for table, rows in (
            (Person, people),
            (CandidateRecord, records),
            (ContactPoint, points),
            (Enrollment, enrollments),
            (Touch, touches),
        ):
            for start in range(0, len(rows), 5000):
                conn.execute(insert(table.__table__), rows[start : start + 5000])
    return messages


def mailbox_messages(originals: list[dict]) -> tuple[list[bytes], dict[str, int]]:
    """The messages candidates send back, and how many of each kind were made."""
    from outreach.sandbox.answers import bounce_for, human_reply, out_of_office, unsubscribe_reply

    rng = random.Random(12)
    raws, kinds = [], {"human": 0, "auto": 0, "bounce": 0, "unsubscribe": 0}
    for i, original in enumerate(originals):
        at = NOW - timedelta(hours=rng.uniform(1, 20))
        roll = rng.random()
        if roll < 0.80:
            raws.append(human_reply(original, at, choice=i))
            kinds["human"] += 1
        elif roll < 0.88:
            raws.append(out_of_office(original, at, NOW + timedelta(days=rng.randint(2, 20))))
            kinds["auto"] += 1
        elif roll < 0.95:
            raws.append(bounce_for(original, at, "5.1.1" if roll < 0.93 else "4.2.2"))
            kinds["bounce"] += 1
        else:
            raws.append(unsubscribe_reply(original, at))
            kinds["unsubscribe"] += 1
    return raws, kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--tls", action="store_true", help="poll over IMAPS instead of IMAP")
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()

    from dovecot import Dovecot
    from sqlalchemy import func, select

    from outreach.cadence import load_cadence_file
    from outreach.inbound.imap import ImapMailbox
    from outreach.inbound.poll import poll_mailbox
    from outreach.paths import default_config_dir
    from outreach.store import make_engine, upgrade
    from outreach.store.schema import Event, InboundMessage

    config = load_cadence_file(default_config_dir() / "cadences.yaml")
    with tempfile.TemporaryDirectory(prefix="outreach-intake-") as tmp, Dovecot() as server:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'intake.db'}")
        upgrade(engine)
        originals = seed(engine, args.messages)
        raws, made = mailbox_messages(originals)
        account = server.add_user()
        started = time.perf_counter()
        with server.client(account.user) as imap:  # MULTIAPPEND: one command per 500
            for start in range(0, len(raws), 500):
                imap.multiappend("INBOX", raws[start : start + 500])
        appended = time.perf_counter() - started
        size = sum(len(r) for r in raws)
        print(
            f"mailbox: {len(raws)} messages, {size / 1e6:.1f} MB, appended in {appended:.1f} s",
            flush=True,
        )
        kwargs = {"ssl": False}
        port = server.port
        if args.tls:
            kwargs = {"ssl": True, "ssl_context": server.ssl_context()}
            port = server.ssl_port
        mailbox = ImapMailbox(server.host, port, account.user, account.password, **kwargs)
        started = time.perf_counter()
        report = poll_mailbox(engine, mailbox, now=NOW, config=config, batch_size=args.batch)
        seconds = time.perf_counter() - started
        intake = report.intake
        with engine.connect() as conn:
            stored = conn.execute(select(func.count()).select_from(InboundMessage)).scalar()
            events = conn.execute(select(func.count()).select_from(Event)).scalar()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"poll: {intake.read} messages in {seconds:.2f} s = {intake.read / seconds:,.0f} "
            f"messages/s (fetched, parsed, classified, matched, stored, flagged; "
            f"{'IMAPS' if args.tls else 'IMAP'} on loopback, SQLite)",
            flush=True,
        )
        print(
            f"kinds: {dict(intake.kinds)} (made {made}); out of office {intake.out_of_office}; "
            f"unmatched {intake.unmatched}; errors {len(intake.errors)}; events {events}; "
            f"flagged {report.flagged}; peak RSS {rss:.0f} MB"
        )
        problems = []
        if stored != len(raws):
            problems.append(f"stored {stored} of {len(raws)}")
        if intake.unmatched:
            problems.append(f"{intake.unmatched} unmatched")
        if report.flagged != len(raws):
            problems.append(f"flagged {report.flagged} of {len(raws)}")
        again = poll_mailbox(engine, mailbox, now=NOW, config=config)
        if again.intake.read:
            problems.append(f"a second poll read {again.intake.read} messages again")
        print("check: " + ("; ".join(problems) if problems else "every message stored once"))
        engine.dispose()
        if problems:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
