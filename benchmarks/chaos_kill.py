"""Kill ``outreach run`` with SIGKILL at random moments; nothing may be duplicated, lost or
stranded.

Run: ``python benchmarks/chaos_kill.py [--kills 20] [--people 2000] [--seed 1]
[--database-url postgresql+psycopg://…]``

The SendGrid and Twilio fakes run in a process of their own (they are other machines and
outlive every kill). The store (SQLite in a temporary folder unless ``--database-url``) is
seeded with ``--people`` candidates, half due for an email step, half for an SMS step, all
due now and inside the send window. Then, again and again, the real CLI ``outreach run
--now T`` starts and is killed with SIGKILL after a random delay, until ``--kills`` runs
have been killed mid-work (at a random moment up to ``--max-delay`` seconds after its first
claim committed; a run that finishes before its kill is not counted), each run a
simulated 15 minutes after the last, as an hourly cron would be. Finally runs go unkilled
until nothing is left to do.

Printed figures (all must be 0; the exit status is 1 otherwise):

* **duplicates**: messages the fakes received beyond one per person;
* **lost**: people due a message who received none;
* **stranded**: touches left ``claimed``, ``in_flight`` or ``ambiguous`` (not reconciled);
* **ledger mismatches**: ``sent`` rows whose provider id the fakes do not hold, or
  messages received that the ledger does not call ``sent``.

Also printed: how many claims the reruns released and how many in-flight sends they
reconciled, which is the work the kills caused.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)  # Wednesday 10:00 in New York
KEY = "SG.sandbox-key"
FROM_EMAIL = "talent@northwind.example"
FROM_NUMBER = "+15005550006"
RERUN_EVERY = timedelta(minutes=15)
_PREFIXES = ("OUTREACH_", "SENDGRID_", "TWILIO_", "GREENHOUSE_", "LEVER_", "HUBSPOT_")

CONFIG = """\
company: {name: Northwind}
policy:
  default_timezone: America/New_York
  send_window: {start: "00:00", end: "23:59", days: [mon, tue, wed, thu, fri, sat, sun]}
  holidays: none
  max_touches: {count: 5, per: 7d}
  min_gap: 1m
  channel_order: [email, sms, linkedin]
  sms_requires_consent: true
  rate_limits: {email: 50/s, sms: 50/s}
cadences:
  - id: apply
    trigger: {stage: applied}
    steps:
      - {id: hello, after: 0m, channel: email, template: t}
  - id: screen
    trigger: {stage: screening}
    steps:
      - {id: text, after: 0m, channel: sms, template: t}
"""
TEMPLATES = {
    "t.email.j2": "Subject: Hello {{ candidate.first_name }}\n\nThanks for applying, "
    "{{ candidate.first_name }}.\n\n{{ company.name }} recruiting",
    "t.sms.j2": "Hi {{ candidate.first_name }}, thanks for applying to {{ company.name }}.",
}


def _rows(people: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(people):
        row = {
            "source": "import",
            "external_id": f"p{i}",
            "first_name": f"Person{i}",
            "last_name": "Lee",
            "timezone": "America/New_York",
            "recruiter_name": "Jo",
            "recruiter_email": "jo@northwind.example",
        }
        if i % 2:
            row.update(stage="applied", email=f"person{i}@example.com")
        else:
            row.update(stage="screening", phone=f"+1415{2_000_000 + i:07d}", sms_consent="true")
        rows.append(row)
    return rows


def _serve(ready: Any, ask: Any) -> None:
    """Both fakes on loopback in this process, until asked for what they received."""
    from outreach.clock import FixedClock
    from outreach.sandbox.base import SandboxServer
    from outreach.sandbox.sendgrid import FakeSendGrid
    from outreach.sandbox.twilio import FakeTwilio

    # The fakes' clock stands a day after the last run, so every message has been
    # processed (and is in SendGrid's activity feed) by the time anyone asks.
    clock = FixedClock(NOW + timedelta(days=1))
    sendgrid = FakeSendGrid(api_key=KEY, clock=clock)
    twilio = FakeTwilio(clock=clock, from_numbers=(FROM_NUMBER,))
    for fake in (sendgrid, twilio):
        fake.log_bodies = False
    servers = [SandboxServer(sendgrid).start(), SandboxServer(twilio).start()]
    ready.put((servers[0].url, servers[1].url, twilio.account_sid, twilio.auth_token))
    ask.get()
    with sendgrid.lock, twilio.lock:
        ready.put(
            {
                "email": [(m["to"][0], m["message_id"]) for m in sendgrid.messages],
                "sms": [(m["to"], m["sid"]) for m in twilio.messages],
            }
        )
    for server in servers:
        server.stop()


def _due_left(url: str) -> int:
    """Work the job still has: unprocessed events, active enrollments, unsettled touches."""
    from sqlalchemy import func, select

    from outreach.store import make_engine
    from outreach.store.schema import Enrollment, Event, Touch

    engine = make_engine(url)
    with engine.connect() as conn:
        left = conn.scalar(
            select(func.count()).select_from(Event).where(Event.processed_at.is_(None))
        )
        left += conn.scalar(
            select(func.count()).select_from(Enrollment).where(Enrollment.status == "active")
        )
        left += conn.scalar(
            select(func.count())
            .select_from(Touch)
            .where(Touch.status.in_(("claimed", "in_flight", "ambiguous")))
        )
    engine.dispose()
    return int(left or 0)


def _ledger_size(url: str) -> int:
    from sqlalchemy import func, select

    from outreach.store import make_engine
    from outreach.store.schema import Touch

    engine = make_engine(url)
    with engine.connect() as conn:
        size = conn.scalar(select(func.count()).select_from(Touch))
    engine.dispose()
    return int(size or 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--people", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--max-delay", type=float, default=3.0, help="latest kill after the first claim, s"
    )
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    outreach = str(Path(sys.executable).with_name("outreach"))

    from sqlalchemy import select

    from outreach.cadence import load_cadence_file
    from outreach.records import normalize_record
    from outreach.store import make_engine, upgrade
    from outreach.store.candidates import upsert_candidates
    from outreach.store.schema import Touch

    ctx = multiprocessing.get_context("fork")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "templates").mkdir()
        for name, text in TEMPLATES.items():
            (folder / "templates" / name).write_text(text)
        cadence_file = folder / "cadences.yaml"
        cadence_file.write_text(CONFIG)
        url = args.database_url or f"sqlite:///{folder / 'chaos.db'}"

        engine = make_engine(url)
        upgrade(engine)
        config = load_cadence_file(cadence_file)
        records = [
            normalize_record(
                row, where=f"row {i}", default_region="US", canonical_stage=config.canonical_stage
            )
            for i, row in enumerate(_rows(args.people))
        ]
        with engine.begin() as conn:
            upsert_candidates(conn, records, NOW)
        engine.dispose()

        ready, ask = ctx.Queue(), ctx.Queue()
        fakes = ctx.Process(target=_serve, args=(ready, ask), daemon=True)
        fakes.start()
        sendgrid_url, twilio_url, account_sid, auth_token = ready.get(timeout=60)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(_PREFIXES)},
            "OUTREACH_DATABASE_URL": url,
            "OUTREACH_CONFIG": str(cadence_file),
            "SENDGRID_API_KEY": KEY,
            "SENDGRID_BASE_URL": sendgrid_url,
            "SENDGRID_FROM_EMAIL": FROM_EMAIL,
            "TWILIO_ACCOUNT_SID": account_sid,
            "TWILIO_AUTH_TOKEN": auth_token,
            "TWILIO_FROM_NUMBER": FROM_NUMBER,
            "TWILIO_BASE_URL": twilio_url,
        }

        at = NOW
        kills = finished = runs = 0
        started = time.perf_counter()

        def run(kill_after: float | None) -> bool:
            """One ``outreach run``; True if it was killed before it ended.

            With ``kill_after``, the run is killed that many seconds after its first claim
            committed (the ledger grew), so every kill lands with work under way: while it
            claims more, sends, or confirms."""
            nonlocal at, runs
            runs += 1
            before = _ledger_size(url)
            proc = subprocess.Popen(
                [outreach, "run", "--now", at.isoformat()],
                env=env,
                cwd=tmp,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            at += RERUN_EVERY
            if kill_after is not None:
                deadline = time.monotonic() + 300
                while proc.poll() is None and time.monotonic() < deadline:
                    if _ledger_size(url) > before:
                        break
                    time.sleep(0.05)
                try:
                    out, _ = proc.communicate(timeout=kill_after)
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGKILL)
                    proc.communicate()
                    return True
            else:
                out, _ = proc.communicate(timeout=600)
            if proc.returncode not in (0, 1):
                print(f"run at {at - RERUN_EVERY:%H:%M} exited {proc.returncode}:\n{out}")
            return False

        while kills < args.kills and _due_left(url):
            if run(rng.uniform(0.0, args.max_delay)):
                kills += 1
            else:
                finished += 1
        # Then the job carries on unkilled until nothing is left (ambiguous sends whose
        # provider needs time are asked again by the next run).
        for _ in range(6):
            run(None)
            if not _due_left(url):
                break
        run(None)
        elapsed = time.perf_counter() - started

        ask.put("stats")
        served = ready.get(timeout=120)
        fakes.join(timeout=30)
        engine = make_engine(url)
        with engine.connect() as conn:
            touches = conn.execute(
                select(Touch.channel, Touch.status, Touch.provider_message_id, Touch.reason)
            ).all()
        engine.dispose()

    received = Counter(to for to, _ in served["email"]) + Counter(to for to, _ in served["sms"])
    expected = {r.get("email") or r.get("phone") for r in _rows(args.people)}
    duplicates = sum(n - 1 for n in received.values() if n > 1)
    lost = sum(1 for address in expected if received[address] == 0)
    statuses = Counter(t.status for t in touches)
    stranded = statuses["claimed"] + statuses["in_flight"] + statuses["ambiguous"]
    held = {mid for _, mid in served["email"]} | {sid for _, sid in served["sms"]}
    sent_ids = [t.provider_message_id for t in touches if t.status == "sent"]
    mismatches = sum(1 for mid in sent_ids if mid not in held) + abs(len(held) - len(set(sent_ids)))
    print(
        f"people {args.people}, runs {runs}: {kills} killed mid-work, {finished} finished "
        f"before their kill, then unkilled runs; {elapsed:.1f} s"
    )
    print(
        f"messages received: {sum(received.values())} (email {len(served['email'])}, "
        f"sms {len(served['sms'])}); ledger: "
        + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
    )
    reconciled = sum(1 for t in touches if t.status == "sent" and "reconciled" in (t.reason or ""))
    absent = sum(1 for t in touches if "provider never received" in (t.reason or ""))
    print(
        f"what the kills left, handled by the reruns: {statuses['released'] - absent} claims "
        f"released (never requested), {reconciled} in-flight sends found at the provider, "
        f"{absent} in-flight sends the provider never received (sent again)"
    )
    print(
        f"duplicates {duplicates}, lost {lost}, stranded {stranded}, ledger mismatches {mismatches}"
    )
    ok = kills >= args.kills and not (duplicates or lost or stranded or mismatches)
    if kills < args.kills:
        print(f"only {kills} kills landed mid-work: raise --people or --max-delay")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
