"""End to end through ``outreach serve``: a candidate's reply, posted by SendGrid Inbound Parse,
stops the cadence and cancels at once what SendGrid still holds for that person.

The tick sends through the real SendGrid SDK to the fake (a follow-up scheduled for later the
same day, with its own batch id); the reply is built from what the fake received (its
Reply-To token and Message-ID) and posted exactly as SendGrid posts it, signed.
"""

from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy import select
from test_delivery import person
from test_recall import NOW, REPLY_TO, harness  # noqa: F401  (the fixture)

from outreach.sandbox.answers import human_reply, out_of_office
from outreach.sandbox.inbound_parse import new_signing_key, post_inbound, public_key_text
from outreach.serve import make_app
from outreach.settings import Settings
from outreach.store.schema import Enrollment, InboundMessage, Person, Task

TOKEN = "inbound-token-for-tests"


def client_for(h, key=None) -> httpx.Client:
    env = {"SENDGRID_INBOUND_TOKEN": TOKEN, "OUTREACH_REPLY_TO": REPLY_TO}
    if key is not None:
        env["SENDGRID_INBOUND_PUBLIC_KEY"] = public_key_text(key)
    settings = Settings(_env_file=None, **env)  # type: ignore[call-arg]
    app = make_app(h.engine, settings, h.config, h.clock, {"email": h.email, "sms": h.sms})
    return httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://serve.test")


def held_message(h) -> dict:
    (message,) = [m for m in h.sendgrid.messages if m["batch_id"]]
    return message


def test_a_reply_through_inbound_parse_cancels_the_held_follow_up_at_once(harness) -> None:  # noqa: F811
    h = harness
    h.add([person(1, "applied")])
    h.tick()
    hello = next(m for m in h.sendgrid.messages if not m["batch_id"])
    held = held_message(h)
    key = new_signing_key()
    at = NOW + timedelta(hours=2)
    h.clock.set(at)
    with client_for(h, key) as http:
        answer = post_inbound(
            "http://serve.test/",
            human_reply(hello, at),
            token=TOKEN,
            mode="parsed",
            signing_key=key,
            clock=h.clock,
            client=http,
        )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"stored": 1, "duplicates": 0}
    # Applied at once: the cadence stopped and SendGrid holds a cancel for the follow-up.
    assert h.touch("later").status == "cancelled"
    assert h.sendgrid.scheduled_sends[held["batch_id"]]["status"] == "cancel"
    with h.engine.connect() as conn:
        (enrollment,) = conn.execute(select(Enrollment)).all()
        (message,) = conn.execute(select(InboundMessage)).all()
        (task,) = conn.execute(select(Task)).all()
    assert enrollment.status == "stopped"
    assert message.kind == "human" and message.matched_by == "token"
    assert task.title.startswith("replied")
    h.clock.set(NOW + timedelta(hours=7))
    h.sendgrid.deliver_due()
    assert held["state"] == "cancelled"


def test_an_out_of_office_through_inbound_parse_pauses_and_recalls(harness) -> None:  # noqa: F811
    h = harness
    h.add([person(1, "applied")])
    h.tick()
    hello = next(m for m in h.sendgrid.messages if not m["batch_id"])
    at = NOW + timedelta(minutes=30)
    h.clock.set(at)
    back = NOW + timedelta(days=4)
    with client_for(h) as http:
        answer = post_inbound(
            "http://serve.test/",
            out_of_office(hello, at, back),
            token=TOKEN,
            mode="raw",
            client=http,
        )
    assert answer.status_code == 200, answer.text
    assert h.touch("later").status == "cancelled"
    with h.engine.connect() as conn:
        (someone,) = conn.execute(select(Person)).all()
        (enrollment,) = conn.execute(select(Enrollment)).all()
    assert someone.paused_until is not None and someone.paused_until.date() == back.date()
    assert enrollment.status == "active", "an out-of-office notice stops nothing"


def test_a_forged_post_changes_nothing(harness) -> None:  # noqa: F811
    h = harness
    h.add([person(1, "applied")])
    h.tick()
    hello = next(m for m in h.sendgrid.messages if not m["batch_id"])
    with client_for(h, new_signing_key()) as http:
        forged = post_inbound(
            "http://serve.test/",
            human_reply(hello, NOW),
            token=TOKEN,
            signing_key=new_signing_key(),
            clock=h.clock,
            client=http,
        )
        wrong_token = post_inbound(
            "http://serve.test/", human_reply(hello, NOW), token="guess", client=http
        )
    assert forged.status_code == 401 and wrong_token.status_code == 403
    assert h.touch("later").status == "sent"
    with h.engine.connect() as conn:
        assert conn.execute(select(InboundMessage)).all() == []
