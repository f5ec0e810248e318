"""Mailchimp Transactional through the engine's tick: a touch held for later is cancelled
when its cadence stops, and a send whose answer was lost is reconciled, never re-sent."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from test_delivery import person
from test_recall import NOW, RecallHarness, recall_config

from channels.mailchimp import MailchimpEmail
from outreach.sandbox.base import SandboxServer
from outreach.sandbox.mailchimp import FakeMailchimp
from outreach.sandbox.sendgrid import FakeSendGrid
from outreach.sandbox.twilio import FakeTwilio

KEY = "md-recall-key"


@pytest.fixture
def harness(engine, tmp_path: Path) -> Iterator[RecallHarness]:
    h = RecallHarness(engine, recall_config(tmp_path), FakeSendGrid(), FakeTwilio())
    h.mailchimp = FakeMailchimp(api_key=KEY, clock=h.clock)
    server = SandboxServer(h.mailchimp).start()
    h.servers.append(server)
    h.email = MailchimpEmail(
        KEY,
        "talent@northwind.example",
        base_url=server.url + "/api/1.3",
        clock=h.clock,
        sleep=h.timer.sleep,
    )
    yield h
    h.email.close()
    h.close()


def test_a_reply_cancels_the_email_mailchimp_holds_for_later(harness) -> None:
    h = harness
    h.add([person(1, "applied")])
    first = h.tick()
    assert first.total("sent") == 2  # the hello now, the follow-up scheduled for 16:00 UTC
    later = h.touch("later")
    held = h.mailchimp.messages[later.recall_ref]
    assert held.state == "scheduled" and held.send_at == NOW + timedelta(hours=6)
    assert held.metadata == {"touch_id": str(later.id)}
    assert held.headers["Reply-To"] == f"replies+{later.reply_token}@reply.northwind.example"
    assert held.headers["Message-Id"] == f"<{later.message_id}>"
    assert not h.sendgrid.messages

    h.event("reply", h.touch("hello").id, NOW + timedelta(hours=1))
    summary = h.tick(NOW + timedelta(hours=2))
    assert summary.recall.cancelled == 1 and not summary.recall.unrecallable
    assert h.touch("later").status == "cancelled"
    assert later.recall_ref not in h.mailchimp.messages
    h.clock.set(NOW + timedelta(hours=7))
    assert h.mailchimp.deliver_due() == 0


def test_a_lost_answer_is_reconciled_and_not_sent_twice(harness, lost_answers) -> None:
    h = harness
    h.add([person(1, "applied")])
    h.mailchimp.faults.timeouts(1, seconds=0)

    first = h.tick()

    # The hello's answer was lost; the tick reconciles it with Mailchimp's search.
    assert first.total("ambiguous") == 1
    hello = h.touch("hello")
    sent = [m for m in h.mailchimp.messages.values() if m.metadata["touch_id"] == str(hello.id)]
    assert len(sent) == 1
    assert hello.status == "sent" and hello.provider_message_id == sent[0].id
    assert len(h.mailchimp.messages) == 2
    h.tick(NOW + timedelta(minutes=30))
    assert len(h.mailchimp.messages) == 2
