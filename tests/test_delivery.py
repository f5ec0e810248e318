"""Delivery semantics end to end: the tick, the real SendGrid and Twilio SDKs, the loopback fakes.

What the fakes received is the evidence: a step reaches a person at most once, a
permanent refusal suppresses the contact point and falls back to the next channel, a
retryable error is retried, and a send whose outcome is unknown is never sent again.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from channels.email import SendGridEmail
from channels.sms import TwilioSMS
from outreach.cadence import CadenceConfig, load_cadence_file
from outreach.clock import FixedClock, ManualTimer
from outreach.engine.tick import Tick, TickSummary, engine_transactions
from outreach.records import normalize_record
from outreach.sandbox.base import Fault, SandboxServer
from outreach.sandbox.sendgrid import FakeSendGrid
from outreach.sandbox.twilio import FakeTwilio
from outreach.store.candidates import upsert_candidates
from outreach.store.schema import ContactPoint, Task, Touch

NOW = datetime(2026, 11, 2, 15, 0, tzinfo=UTC)
TEMPLATE_ID = "d-0123456789abcdef0123456789abcdef"
KEY = "SG.sandbox-key"
FROM_EMAIL = "talent@northwind.example"
FROM_NUMBER = "+15005550006"

CONFIG = """\
policy:
  default_timezone: America/New_York
  send_window: {start: "00:00", end: "23:59", days: [mon, tue, wed, thu, fri, sat, sun]}
  holidays: none
  max_touches: {count: 5, per: 7d}
  min_gap: 1h
  channel_order: [email, sms, linkedin]
  rate_limits: {email: 100000/s, sms: 100000/s}
cadences:
  - id: apply
    trigger: {stage: applied}
    steps:
      - {id: hello, after: 0m, channel: email, fallback: sms, template: t}
  - id: screen
    trigger: {stage: screening}
    steps:
      - {id: text, after: 0m, channel: sms, fallback: email, template: t}
  - id: offer
    trigger: {stage: offer}
    steps:
      - {id: news, after: 0m, channel: email, template: news,
         sendgrid_template_id: d-0123456789abcdef0123456789abcdef}
"""
TEMPLATES = {
    "t.email.j2": "Subject: Hello {{ candidate.first_name }}\n\nHi {{ candidate.first_name }},\n\nThanks.",
    "t.sms.j2": "Hi {{ candidate.first_name }}, thanks for applying.",
}


def config_in(tmp_path: Path) -> CadenceConfig:
    folder = tmp_path / "templates"
    folder.mkdir(exist_ok=True)
    for name, text in TEMPLATES.items():
        (folder / name).write_text(text)
    (tmp_path / "cadences.yaml").write_text(CONFIG)
    return load_cadence_file(tmp_path / "cadences.yaml")


def phone(i: int) -> str:
    return f"+1415{2_000_000 + i:07d}"


def person(i: int, stage: str) -> dict[str, Any]:
    return {
        "source": "import",
        "external_id": f"p{i}",
        "first_name": f"Person{i}",
        "email": f"person{i}@example.com",
        "phone": phone(i),
        "sms_consent": "true",
        "stage": stage,
        "timezone": "America/New_York",
    }


class RejectingSendGrid(FakeSendGrid):
    """Answers SendGrid's documented 400 for the ``rejected`` recipients."""

    def __init__(self, *, rejected: set[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rejected = rejected

    def mail_send(self, request):
        body = request.get_json(silent=True) or {}
        for i, p in enumerate(body.get("personalizations") or []):
            for j, to in enumerate(p.get("to") or []):
                if to.get("email") in self.rejected:
                    return self.json_error(
                        [
                            {
                                "message": "Does not contain a valid address.",
                                "field": f"personalizations.{i}.to.{j}.email",
                                "help": "http://sendgrid.com/docs/API_Reference/Web_API_v3/"
                                "Mail/errors.html#message.personalizations.to",
                            }
                        ]
                    )
        return super().mail_send(request)

    @staticmethod
    def json_error(errors: list[dict[str, Any]]):
        from outreach.sandbox.base import json_response

        return json_response({"errors": errors}, 400)


class Harness:
    """A store, the two fakes on loopback, the real channels, and a tick to run."""

    def __init__(
        self,
        engine,
        config: CadenceConfig,
        sendgrid: FakeSendGrid,
        twilio: FakeTwilio,
        timeout: float = 5.0,
    ) -> None:
        self.engine = engine
        self.config = config
        self.clock = FixedClock(NOW)
        self.timer = ManualTimer()
        self.sendgrid, self.twilio = sendgrid, twilio
        self.servers = [SandboxServer(sendgrid).start(), SandboxServer(twilio).start()]
        self.email = SendGridEmail(
            KEY,
            FROM_EMAIL,
            base_url=self.servers[0].url,
            clock=self.clock,
            sleep=self.timer.sleep,
            timeout=timeout,
        )
        self.sms = TwilioSMS(
            twilio.account_sid,
            twilio.auth_token,
            from_number=FROM_NUMBER,
            base_url=self.servers[1].url,
            clock=self.clock,
            sleep=self.timer.sleep,
            timeout=timeout,
        )

    def close(self) -> None:
        self.sms.close()
        for server in self.servers:
            server.stop()

    def add(self, rows: list[dict[str, Any]]) -> None:
        records = [
            normalize_record(
                row,
                where=f"row {i}",
                default_region="US",
                canonical_stage=self.config.canonical_stage,
            )
            for i, row in enumerate(rows)
        ]
        with self.engine.begin() as conn:
            upsert_candidates(conn, records, self.clock.now())

    def tick(self, at: datetime | None = None) -> TickSummary:
        if at is not None:
            self.clock.set(at)
        return Tick(
            self.config,
            self.clock,
            {"email": self.email, "sms": self.sms},
            engine_transactions(self.engine),
            wall_clock=self.clock,
            sleep=self.timer.sleep,
            monotonic=self.timer.monotonic,
            dialect=self.engine.dialect.name,
        ).run()

    def touches(self) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(Touch).order_by(Touch.id)).all())

    def tasks(self) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(Task).order_by(Task.id)).all())

    def contact(self, kind: str, value: str) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(
                select(ContactPoint).where(ContactPoint.kind == kind, ContactPoint.value == value)
            ).one()


@pytest.fixture
def harness_for(engine, tmp_path: Path) -> Iterator[Any]:
    made: list[Harness] = []

    def build(
        sendgrid: FakeSendGrid | None = None,
        twilio: FakeTwilio | None = None,
        timeout: float = 5.0,  # roomy: a legit answer on a busy machine is never "ambiguous"
    ) -> Harness:
        clock = FixedClock(NOW)
        if sendgrid is None:
            sendgrid = FakeSendGrid(api_key=KEY, clock=clock)
            # The account holds the offer step's dynamic template, as a live one must.
            sendgrid.add_template(
                TEMPLATE_ID,
                name="Offer news",
                subject="News for {{candidate.first_name}}",
                html_content="<p>Hi {{candidate.first_name}}, from {{company.name}}</p>",
            )
        harness = Harness(
            engine,
            config_in(tmp_path),
            sendgrid,
            twilio or FakeTwilio(clock=clock),
            timeout,
        )
        made.append(harness)
        return harness

    yield build
    for harness in made:
        harness.close()


def test_email_and_sms_leave_through_the_sdks_with_their_ids_in_the_ledger(harness_for) -> None:
    h = harness_for()
    h.add([person(1, "applied"), person(2, "screening")])
    summary = h.tick()
    assert summary.total("sent") == 2
    email, text = sorted(h.touches(), key=lambda t: t.channel)
    (message,) = h.sendgrid.messages
    assert message["to"] == ["person1@example.com"]
    assert message["custom_args"] == {"touch_id": str(email.id)}
    assert message["categories"] == ["apply", "hello"]
    assert message["subject"] == "Hello Person1"
    assert email.provider_message_id == message["message_id"]
    (sms,) = h.twilio.messages
    assert sms["to"] == phone(2) and sms["body"] == "Hi Person2, thanks for applying."
    assert text.provider_message_id == sms["sid"]


def test_a_refused_address_is_suppressed_and_the_step_falls_back_to_sms(harness_for) -> None:
    h = harness_for(sendgrid=RejectingSendGrid(api_key=KEY, rejected={"person1@example.com"}))
    h.add([person(1, "applied")])
    h.tick()
    (touch,) = h.touches()
    assert (touch.status, touch.channel) == ("sent", "sms")
    assert "email failed" in touch.reason and "example.com" not in touch.reason
    assert not h.sendgrid.messages and len(h.twilio.messages) == 1
    email = h.contact("email", "person1@example.com")
    assert email.suppressed and email.suppressed_reason == "invalid"


@pytest.mark.parametrize(
    ("switch", "reason"),
    [("opted_out", "opted_out"), ("invalid", "invalid"), ("landlines", "invalid")],
)
def test_a_refused_phone_is_suppressed_and_the_step_falls_back_to_email(
    harness_for, switch: str, reason: str
) -> None:
    twilio = FakeTwilio(**{switch: {phone(1)}})
    h = harness_for(twilio=twilio)
    h.add([person(1, "screening")])
    h.tick()
    (touch,) = h.touches()
    assert (touch.status, touch.channel) == ("sent", "email")
    assert phone(1) not in touch.reason
    assert not twilio.messages and len(h.sendgrid.messages) == 1
    number = h.contact("phone", phone(1))
    assert number.suppressed and number.suppressed_reason == reason
    # The next tick never tries that number again.
    h.add([{**person(1, "applied"), "external_id": "p1-again"}])
    h.tick(NOW + timedelta(hours=2))
    assert not twilio.messages


def test_a_number_a_provider_refused_is_spared_for_whoever_holds_it_later(harness_for) -> None:
    twilio = FakeTwilio(opted_out={phone(1)})
    h = harness_for(twilio=twilio)
    h.add([person(1, "screening")])
    h.tick()
    # Someone else, on the same line (another name, another email): a stranger, not merged.
    stranger = {**person(2, "screening"), "phone": phone(1), "first_name": "Zed"}
    h.add([stranger])
    h.tick(NOW + timedelta(hours=2))
    assert not twilio.messages
    # Twilio was asked once, for the first holder; the stranger's step went to email at once.
    creates = [r for r in twilio.requests if r.method == "POST" and "Messages" in r.path]
    assert len(creates) == 1
    (_first, second) = h.touches()
    assert second.channel == "email" and "sms failed" not in (second.reason or "")


def test_429_and_503_are_retried_and_the_message_goes_out_once(harness_for) -> None:
    h = harness_for()
    h.sendgrid.faults.rate_limited(1, retry_after=2.0)
    h.sendgrid.faults.server_errors(1, status=503)
    h.twilio.faults.rate_limited(1)
    h.twilio.faults.server_errors(1, status=503)
    h.add([person(1, "applied"), person(2, "screening")])
    summary = h.tick()
    assert summary.total("sent") == 2 and summary.total("failed") == 0
    assert len(h.sendgrid.messages) == 1 and len(h.twilio.messages) == 1
    assert h.timer.slept  # waited (on the manual clock) before retrying


@pytest.mark.parametrize("channel", ["email", "sms"])
def test_a_timeout_after_receipt_is_reconciled_and_never_sent_again(
    harness_for, channel, lost_answers
) -> None:
    h = harness_for()
    fake = h.sendgrid if channel == "email" else h.twilio
    fake.faults.timeouts(1, seconds=0)
    h.add([person(1, "applied" if channel == "email" else "screening")])
    summary = h.tick()
    # The send itself was ambiguous; asked before the run reports, the provider has it.
    assert summary.total("ambiguous") == 1 and summary.recovery.confirmed == 1
    (touch,) = h.touches()
    assert touch.status == "sent" and touch.channel == channel and "reconciled" in touch.reason
    for hours in (1, 24):
        h.tick(NOW + timedelta(hours=hours))
    assert len(fake.messages) == 1  # the provider got it once; nobody sent it again
    assert [t.status for t in h.touches()] == ["sent"]


def test_500_is_ambiguous_until_the_activity_feed_proves_it_never_arrived(harness_for) -> None:
    h = harness_for()
    h.sendgrid.faults.server_errors(1, status=500)
    h.add([person(1, "applied")])
    summary = h.tick()
    assert summary.total("ambiguous") == 1 and summary.recovery.waiting == 1
    (touch,) = h.touches()
    assert touch.status == "ambiguous"  # the feed may still be indexing: no conclusion yet
    later = h.tick(NOW + timedelta(hours=2))
    assert later.recovery.absent == 1 and later.total("sent") == 1
    assert len(h.sendgrid.messages) == 1
    assert [t.status for t in h.touches()] == ["released", "sent"]


def test_500_without_the_activity_add_on_is_a_task_and_never_resent(harness_for) -> None:
    h = harness_for()
    h.sendgrid.email_activity = False
    h.sendgrid.faults.server_errors(1, status=500)
    h.add([person(1, "applied")])
    summary = h.tick()
    assert summary.recovery.handed_over == 1
    h.tick(NOW + timedelta(hours=2))
    assert not h.sendgrid.messages and [t.status for t in h.touches()] == ["ambiguous"]
    assert [t.kind for t in h.tasks()] == ["check"]


def test_a_dynamic_template_step_is_batched_1000_to_a_request(harness_for) -> None:
    h = harness_for(timeout=30.0)  # a 1,000-personalization request on a busy machine
    h.add([person(i, "offer") for i in range(2_500)])
    summary = h.tick()
    assert summary.total("sent") == 2_500
    assert len(h.sendgrid.mail_requests) == 3
    sizes = sorted(len(r["body"]["personalizations"]) for r in h.sendgrid.mail_requests)
    assert sizes == [500, 1000, 1000]
    by_touch = {m["custom_args"]["touch_id"]: m for m in h.sendgrid.messages}
    assert len(by_touch) == 2_500
    for touch in h.touches():
        message = by_touch[str(touch.id)]
        data = message["dynamic_template_data"]
        assert data["candidate"]["first_name"] == "Person" + message["to"][0][6:].split("@")[0]
        assert data["company"]["name"] and data["touch"] == {
            "cadence": "offer",
            "step": "news",
            "variant": "a",
        }
        assert message["template_id"] == "d-0123456789abcdef0123456789abcdef"
        assert touch.provider_message_id == message["message_id"]


def test_twenty_percent_faults_on_both_channels_across_5000_touches(
    harness_for, lost_answers
) -> None:
    faults = [
        Fault("429", 429, 1.0),
        Fault("429", 429, None),
        Fault("5xx", 503),
        Fault("5xx", 503),
        Fault("5xx", 500),
        Fault("5xx", 502),
        Fault("5xx", 504),
        Fault("timeout"),  # processed, then the client's read times out at once
    ]
    # Client waits far longer than any loopback answer takes, so only injected faults are
    # ambiguous; an injected timeout costs no waiting (``lost_answers``).
    h = harness_for(timeout=30.0)
    h.sendgrid.faults.random(0.2, faults, seed=11)
    h.twilio.faults.random(0.2, faults, seed=12)
    injected = count_faults(h.sendgrid, h.twilio)
    h.add([person(i, "applied" if i % 2 else "screening") for i in range(5_000)])
    first = h.tick()
    # A later run sends nothing twice: what an ambiguous send's provider proves it never
    # received (SendGrid's feed, once past its indexing delay) goes once more.
    second = h.tick(NOW + timedelta(hours=2))
    confirmed = first.recovery.confirmed + second.recovery.confirmed

    touches = h.touches()
    # One row per step occurrence, plus one per send that failed and was re-planned.
    steps = Counter(t.idempotency_key.split("#")[0] for t in touches)
    assert len(steps) == 5_000
    replanned = [t for t in touches if "#failed" in t.idempotency_key]
    assert all(t.status == "failed" and "re-planned" in t.reason for t in replanned)
    statuses = Counter(t.status for t in touches)
    assert set(statuses) <= {"sent", "failed", "ambiguous", "released"}
    # Injected timeouts hit sends the provider processed (and reconciliation queries, which
    # are asked again): those sends were ambiguous and found at the provider, never re-sent;
    # a 500/502/504 answered before processing is proved absent and sent again, once.
    assert injected["timeout", 0] > 0 and confirmed > 0 and statuses["sent"] > 0
    assert all(t.status == "released" for t in touches if "#released" in t.idempotency_key)
    assert all(t.reason for t in touches if t.status in ("failed", "ambiguous"))

    # What the providers received: each person got their one step at most once.
    received: Counter[str] = Counter()
    for message in h.sendgrid.messages:
        received[message["to"][0].split("@")[0].removeprefix("person")] += 1
    for message in h.twilio.messages:
        received[str(int(message["to"][-7:]) - 2_000_000)] += 1
    assert max(received.values()) == 1
    # Every touch the ledger calls sent was received; so was every lost answer, and nothing
    # else.
    sent_ids = {t.provider_message_id for t in touches if t.status == "sent"}
    received_ids = {m["message_id"] for m in h.sendgrid.messages} | {
        m["sid"] for m in h.twilio.messages
    }
    assert sent_ids <= received_ids
    # Held by a provider but not ``sent`` in the ledger: only ambiguous touches whose
    # reconciliation query itself met a fault (asked again next run).
    unconfirmed = len(received_ids - sent_ids)
    assert unconfirmed <= statuses["ambiguous"]
    assert sum(received.values()) == statuses["sent"] + unconfirmed


def count_faults(*fakes: Any) -> Counter[tuple[str, int]]:
    """A counter, kept up to date, of the faults the fakes inject, by kind and status."""
    injected: Counter[tuple[str, int]] = Counter()
    lock = threading.Lock()  # the fakes answer from several threads
    for fake in fakes:
        take = fake.faults.take

        def counting(path: str, take=take) -> Fault | None:
            fault = take(path)
            if fault is not None:
                with lock:
                    injected[fault.kind, fault.status] += 1
            return fault

        fake.faults.take = counting
    return injected


def test_a_provider_outage_re_plans_the_step_for_the_next_run(harness_for) -> None:
    h = harness_for()
    h.sendgrid.faults.server_errors(4, status=503)  # every attempt of this run
    h.add([person(1, "applied")])
    summary = h.tick()
    assert summary.total("failed") == 1 and summary.total("replanned") == 1
    (failed,) = h.touches()
    assert failed.status == "failed" and "re-planned" in failed.reason
    assert not h.sendgrid.messages
    h.tick(NOW + timedelta(hours=1))
    first, second = h.touches()
    assert (first.status, second.status) == ("failed", "sent")
    assert second.idempotency_key == first.idempotency_key.split("#")[0]
    assert len(h.sendgrid.messages) == 1


def test_a_refused_key_re_plans_until_it_is_fixed(harness_for) -> None:
    h = harness_for()
    good = h.email
    h.email = SendGridEmail("SG.revoked", FROM_EMAIL, base_url=h.servers[0].url, clock=h.clock)
    h.add([person(1, "applied"), person(2, "applied")])
    summary = h.tick()
    assert summary.total("replanned") == 2
    assert all("SENDGRID_API_KEY" in t.reason for t in h.touches())
    h.email = good  # the key is fixed before the next night
    h.tick(NOW + timedelta(days=1))
    assert Counter(t.status for t in h.touches()) == {"failed": 2, "sent": 2}
    assert len(h.sendgrid.messages) == 2


def test_a_step_failing_for_days_stops_being_re_planned(harness_for) -> None:
    h = harness_for()
    h.sendgrid.faults.random(1.0, [Fault("5xx", 503)])
    h.add([person(1, "applied")])
    for day in range(6):
        h.tick(NOW + timedelta(days=day))
    touches = h.touches()
    assert [t.status for t in touches] == ["failed"] * len(touches)
    # Re-planned while at most three days late (days 0 to 3); on day 4 the failure stands.
    assert len(touches) == 5
    assert all("re-planned" in t.reason for t in touches[:4])
    assert "re-planned" not in touches[-1].reason
    assert not h.sendgrid.messages


def test_dynamic_template_messages_of_several_recruiters_fill_whole_requests(harness_for) -> None:
    h = harness_for(timeout=30.0)
    h.add(
        [
            {
                **person(i, "offer"),
                "recruiter_name": f"Rec {i % 2}",
                "recruiter_email": f"rec{i % 2}@northwind.example",
            }
            for i in range(2_000)
        ]
    )
    h.tick()
    sizes = sorted(len(r["body"]["personalizations"]) for r in h.sendgrid.mail_requests)
    # Two senders, one request each: not four half-full ones from interleaved chunks.
    assert sizes == [1000, 1000]
    for request in h.sendgrid.mail_requests:
        senders = {p["to"][0]["email"] for p in request["body"]["personalizations"]}
        assert len(senders) == 1000
        # Person i's recruiter is Rec i % 2: each request answers to its own recruiter.
        (recruiter,) = {int(s.removeprefix("person").split("@")[0]) % 2 for s in senders}
        assert request["body"]["reply_to"]["email"] == f"rec{recruiter}@northwind.example"


def test_a_dynamic_template_touch_lacking_a_variable_is_skipped_and_the_rest_go_out(
    harness_for,
) -> None:
    h = harness_for()
    h.sendgrid.add_template(
        TEMPLATE_ID,
        subject="News for {{candidate.first_name}}",
        html_content="<p>{{#if candidate.phone}}We'll call {{candidate.phone}}.{{/if}}</p>\n"
        "<p>Your offer for {{job.title}}</p>",
        version_name="v2",
    )
    h.add(
        [
            {**person(i, "offer"), **({"job_title": "Engineer"} if i % 2 else {})}
            for i in range(1, 7)
        ]
    )
    summary = h.tick()
    assert summary.total("sent") == 3
    assert summary.total_reasons("skipped") == {"template error": 3}
    touches = {t.status: [] for t in h.touches()}
    for t in h.touches():
        touches[t.status].append(t)
    assert len(touches["sent"]) == 3 and len(touches["skipped"]) == 3
    for touch in touches["skipped"]:
        assert touch.reason.startswith(f"template {TEMPLATE_ID}: ")
        assert "'job.title' (html_content line 2)" in touch.reason
        assert "active version 'v2'" in touch.reason
        assert "example.com" not in touch.reason
    received = sorted(m["to"][0] for m in h.sendgrid.messages)
    assert received == ["person1@example.com", "person3@example.com", "person5@example.com"]
    assert all(
        m["dynamic_template_data"]["job"]["title"] == "Engineer" for m in h.sendgrid.messages
    )
    # The template was read once for the run, through the channel's base URL.
    reads = [r for r in h.sendgrid.requests if r.path == f"/v3/templates/{TEMPLATE_ID}"]
    assert len(reads) == 1


def test_a_dynamic_template_sendgrid_cannot_serve_sends_nothing_until_it_can(harness_for) -> None:
    h = harness_for()
    h.sendgrid.faults.server_errors(2, status=503)  # both attempts to read the template
    h.add([person(1, "offer"), person(2, "applied")])
    summary = h.tick()
    assert not any(m["to"] == ["person1@example.com"] for m in h.sendgrid.messages)
    assert [t.step_id for t in h.touches()] == ["hello"]  # the other cadence went out
    (reason,) = [r for r in summary.total_reasons("deferred") if TEMPLATE_ID in r]
    assert reason.startswith(f"template {TEMPLATE_ID}: not checked, so not sent now: ")
    assert "SendGrid 503" in reason
    h.tick(NOW + timedelta(minutes=30))
    sent = {t.step_id: t.status for t in h.touches()}
    assert sent == {"hello": "sent", "news": "sent"}
    assert sum(m["to"] == ["person1@example.com"] for m in h.sendgrid.messages) == 1
