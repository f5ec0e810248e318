"""End to end with Mailchimp Transactional: ``outreach run`` with
``OUTREACH_EMAIL_PROVIDER=mailchimp`` sends through the real SDK to the sandbox fake on
loopback; a hard bounce that the fake posts, signed, to ``outreach serve`` suppresses the
address, and the next run sends it nothing."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from test_entrypoint import outreach_script

from outreach.clock import FixedClock
from outreach.sandbox.suite import Sandbox
from outreach.store import make_engine
from outreach.store.schema import ContactPoint, Event

# A Tuesday, 10:00 in New York: inside the default send window.
NOW = datetime(2026, 11, 3, 15, 0, tzinfo=UTC)


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(60, clock=FixedClock(NOW)) as running:
        for person in running.people[:20]:
            running.move(person, "applied", NOW - timedelta(hours=1))
        yield running


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(env: dict[str, str], *args: str, cwd: Path) -> str:
    done = subprocess.run(
        [outreach_script(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


def test_run_sends_through_mailchimp_and_a_bounce_webhook_suppresses_the_address(
    sandbox: Sandbox, database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OUTREACH_", "MAILCHIMP_"))}
    env = {
        **base,
        **sandbox.env(),
        "OUTREACH_DATABASE_URL": database_url,
        "OUTREACH_EMAIL_PROVIDER": "mailchimp",
        "OUTREACH_PUBLIC_URL": public,
    }
    run(env, "sync", "--now", NOW.isoformat(), cwd=tmp_path)
    run(env, "run", "--now", NOW.isoformat(), cwd=tmp_path)

    fake = sandbox.mailchimp
    sent = list(fake.messages.values())
    assert sent and not sandbox.sendgrid.messages  # every email went through Mailchimp
    touches = Counter(m.metadata["touch_id"] for m in sent)
    assert max(touches.values()) == 1
    assert all(m.headers["Reply-To"].startswith("replies+") for m in sent)
    assert {p.email.lower() for p in sandbox.people[:20]} <= {m.email.lower() for m in sent}

    victim = sent[0]
    server = subprocess.Popen(
        [outreach_script(), "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(public + "/healthz", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                assert server.poll() is None, server.communicate()[1]
                assert time.monotonic() < deadline, "outreach serve did not start"
                time.sleep(0.1)
        head = urllib.request.Request(public + "/webhooks/mailchimp", method="HEAD")
        with urllib.request.urlopen(head, timeout=5) as answer:
            assert answer.status == 200
        status = fake.post_events(
            public + "/webhooks/mailchimp", [fake.event("hard_bounce", victim.id)]
        )
        assert status == 200
    finally:
        server.terminate()
        server.communicate(timeout=30)

    later = NOW + timedelta(days=1)
    run(env, "run", "--now", later.isoformat(), cwd=tmp_path)
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            event = conn.execute(select(Event).where(Event.type == "bounce")).one()
            point = conn.execute(
                select(ContactPoint).where(
                    ContactPoint.kind == "email", ContactPoint.value == victim.email.lower()
                )
            ).one()
    finally:
        engine.dispose()
    assert event.touch_id == int(victim.metadata["touch_id"])
    assert point.suppressed and point.suppressed_reason == "bounced"
    before = len(fake.sent_to(victim.email))
    run(env, "run", "--now", (later + timedelta(days=3)).isoformat(), cwd=tmp_path)
    assert len(fake.sent_to(victim.email)) == before
