"""``outreach demo``: the whole nightly job against the sandbox, 30 simulated days in seconds.

Nothing to set up: the fakes start in-process on loopback, the engine uses its own
throwaway SQLite database (or ``database_url``), and every night of the simulation runs
what a deployed job runs: inbound events from the providers, ``sync`` of the four CRMs,
``run`` (one tick with a 24-hour horizon), and the CRM write-back. Between nights the
fake CRMs move candidates on a seeded script (applications arrive, interviews happen,
offers, rejections, hires) and candidates answer: some reply, some send out-of-office
notices with a return date, some unsubscribe by reply, some addresses bounce (all as real
MIME messages posted through SendGrid Inbound Parse to the engine's own ``serve`` app, at
the moment they are sent, so a reply cancels what SendGrid still holds for that person);
new hires click a one-click rating link in their welcome or feedback email (a GET to the
same app), a few of them twice with a changed mind;
one email bounces at SendGrid, one candidate turns out to have an invalid phone, one
texts STOP, and one person applies in two CRMs at once.

Time is simulated end to end: one clock drives the engine and the fakes, and every rate
limiter and retry pause runs on a manual timer, so a month of nights takes seconds.

The summary is built from the ledger and from what the fakes received, side by side;
:class:`DemoReport` keeps every figure for the end-to-end tests.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select

from channels.factory import build_channels
from connectors.factory import build_connectors
from outreach.cadence import CadenceConfig, load_cadence_file
from outreach.clock import FixedClock, ManualTimer
from outreach.contacts import normalize_email
from outreach.engine.tick import Tick, TickSummary, engine_transactions
from outreach.events import (
    DELIVERY_TYPES,
    InboundEvent,
    from_sendgrid,
    from_twilio_inbound,
    ingest_events,
)
from outreach.paths import default_config_dir
from outreach.reports import build_report
from outreach.reports.render_table import print_report
from outreach.sandbox.seed import SeedPerson
from outreach.sandbox.suite import Sandbox
from outreach.settings import Settings
from outreach.store.schema import CandidateRecord, ContactPoint, Enrollment, Event, Task, Touch
from outreach.sync import sync_source
from outreach.writeback import process_write_backs

__all__ = ["DEMO_START", "Demo", "DemoReport", "Story", "delivered_at", "mismatches", "render"]

#: a Monday, 02:00 in New York: the nightly job's hour
DEMO_START = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)
#: where the fakes reach the engine's webhook app (in process, never on the network)
DEMO_URL = "http://outreach.demo"
#: Event Webhook items per post (SendGrid batches its posts too)
_SENDGRID_POST_ITEMS = 500

SOURCES = ("greenhouse", "lever", "hubspot", "bullhorn")

# Chance per night that a person in a stage moves on (weekday nights only), by stage.
_MOVES: dict[str, tuple[tuple[str, float], ...]] = {
    "prospect": (("applied", 0.05),),
    "applied": (("screening", 0.07), ("rejected", 0.03)),
    "screening": (("interview", 0.10), ("rejected", 0.04)),
    "interview": (("offer", 0.08), ("rejected", 0.05)),
    "offer": (("hired", 0.20),),
}
#: share of emails that get a reply (the reply comes a few hours after delivery)
REPLY_SHARE = 0.08
#: shares of emails answered by an out-of-office notice, an unsubscribe by reply, a DSN
OOO_SHARE = 0.03
UNSUBSCRIBE_SHARE = 0.01
DSN_SHARE = 0.006
#: where the demo's in-process ``serve`` app is reached: the base of the rating links
DEMO_PUBLIC_URL = "http://outreach.demo"
#: share of emails with rating links whose reader clicks one, and of those who click again
RATE_SHARE = 0.6
RERATE_SHARE = 0.1
#: how likely each score is (1 to 5) when a candidate clicks
_SCORE_WEIGHTS = (0.05, 0.1, 0.2, 0.35, 0.3)
_RATING_LINK = re.compile(re.escape(DEMO_PUBLIC_URL) + r"(/r/[A-Za-z0-9_-]+/([1-5]))")


@dataclass(frozen=True)
class Story:
    """A scripted candidate whose timeline the summary shows."""

    label: str
    person: SeedPerson
    plot: str


@dataclass
class DemoReport:
    """Every figure of a demo run, from the ledger and from the fakes."""

    start: datetime
    nights: int
    people: int
    #: (cadence, step, channel) -> status -> count, from the ledger
    touches: dict[tuple[str, str, str], Counter[str]] = field(default_factory=dict)
    #: reason -> deferrals (a touch deferred on several nights counts each night)
    deferred: Counter[str] = field(default_factory=Counter)
    #: sent touches by channel, from the ledger
    ledger_sent: Counter[str] = field(default_factory=Counter)
    #: what the providers received
    emails_accepted: int = 0
    sms_accepted: int = 0
    email_requests: int = 0
    #: tasks by CRM: created there (fake's records) and in the ledger
    crm_tasks: Counter[str] = field(default_factory=Counter)
    ledger_tasks: Counter[str] = field(default_factory=Counter)
    notes: Counter[str] = field(default_factory=Counter)
    #: provider-side SLA cross-check: applications (moves to applied) the engine could see
    #: and answer by email, and how many SendGrid delivered within 48 h; likewise
    #: interviews and thanks within 24 h (see Demo._timeliness)
    applications: int = 0
    acknowledged_48h: int = 0
    acknowledged_late: int = 0
    interviews: int = 0
    thanked_24h: int = 0
    thanked_late: int = 0
    #: moves left out of the cross-check: to a stage the person's CRMs cannot record
    #: (HubSpot's lifecycle has no interview stage), or of people who cannot be emailed
    #: (opted out in the CRM, unsubscribed, bounced): by stage
    not_recorded: Counter[str] = field(default_factory=Counter)
    not_emailable: Counter[str] = field(default_factory=Counter)
    #: the report's SLA per step (:func:`outreach.reports.sla.per_step`), from the ledger
    sla: list[dict[str, Any]] = field(default_factory=list)
    inbound: Counter[str] = field(default_factory=Counter)
    #: emails that came back through Inbound Parse, by how the engine classified them
    came_back: Counter[str] = field(default_factory=Counter)
    unmatched: int = 0
    #: answers never sent because the email they answer was cancelled before delivery
    answers_not_sent: int = 0
    #: held touches cancelled at the provider, and those that could not be recalled
    recalled: int = 0
    unrecallable: int = 0
    #: deliveries of a cadence after the person's reply stopped it (the fakes' records)
    touched_after_reply: int = 0
    replied_people: int = 0
    stage_moves: Counter[str] = field(default_factory=Counter)
    sync_bad: int = 0
    failed: int = 0
    ambiguous: int = 0
    timelines: dict[str, list[tuple[datetime, str]]] = field(default_factory=dict)
    stories: list[Story] = field(default_factory=list)
    #: moves the script made: (seed index, stage, at)
    moves: list[tuple[int, str, datetime]] = field(default_factory=list)
    #: inbound events fed to the engine: (type, channel, seed index, at)
    inbound_log: list[tuple[str, str | None, int, datetime]] = field(default_factory=list)
    #: delivery-side events the engine stored from the providers' webhooks, by type
    #: (``open`` human opens, ``machine_open`` opens marked ``sg_machine_open``)
    delivery_events: Counter[str] = field(default_factory=Counter)
    #: rating links clicked: (the link's path, at), in click order; a changed mind is two
    rating_clicks: list[tuple[str, datetime]] = field(default_factory=list)
    #: the report's ``ratings`` object over the demo's month (from the store)
    ratings: dict[str, Any] = field(default_factory=dict)
    #: the whole report object of the demo's month (:func:`outreach.reports.build_report`)
    kpis: dict[str, Any] = field(default_factory=dict)


class Demo:
    """One demo run. ``run()`` plays the nights and returns the :class:`DemoReport`.

    Example::

        report = Demo(nights=30, people=400).run()
    """

    def __init__(
        self,
        *,
        nights: int = 30,
        people: int = 400,
        seed: int = 7,
        start: datetime = DEMO_START,
        database_url: str | None = None,
        config: CadenceConfig | None = None,
        on_night: Callable[[int, TickSummary], None] | None = None,
    ) -> None:
        self.nights = nights
        self.seed = seed
        self.start = start
        self.clock = FixedClock(start)
        self.timer = ManualTimer()
        self.config = config or load_cadence_file(default_config_dir() / "cadences.yaml")
        self.on_night = on_night
        self._database_url = database_url
        from outreach.sandbox.seed import Population

        population = list(Population(people, seed=seed))
        self.stories = _pick_stories(population)
        bounce, no_email, _cross = (s.person for s in self.stories)
        self.sandbox = Sandbox(
            population,
            clock=self.clock,
            seed=seed,
            bouncing=[bounce.email],
            invalid_phones=[no_email.phone_e164 or ""],
        )
        self.people = population
        self.by_email = {p.email.lower(): p for p in population}
        self.by_phone = {p.phone_e164: p for p in population if p.phone_e164}
        self.stage = {p.index: p.stage for p in population}
        self.report = DemoReport(start=start, nights=nights, people=people, stories=self.stories)
        self._story_index = {s.person.index for s in self.stories}
        self._pending: list[tuple[datetime, InboundEvent, int]] = []
        #: Event Webhook items SendGrid has produced for a time still ahead on the clock
        self._sendgrid_ahead: list[dict[str, Any]] = []
        #: candidates' emails to send back: (when, kind, the message answered, person)
        self._answers: list[tuple[datetime, str, dict[str, Any], SeedPerson]] = []
        #: rating links to click: (when, the link's path, the message it is in)
        self._clicks: list[tuple[datetime, str, dict[str, Any]]] = []
        self._http: Any = None
        self._inbound_token = ""
        self._seen_emails = 0
        self._seen_sms = 0

    # -- the run --------------------------------------------------------------------------

    def run(self) -> DemoReport:
        """Play every night; stop the fakes; return the report."""
        with tempfile.TemporaryDirectory(prefix="outreach-demo-") as tmp:
            url = self._database_url or f"sqlite:///{Path(tmp) / 'demo.db'}"
            from outreach.store import ensure_schema, make_engine

            engine = make_engine(url)
            try:
                ensure_schema(engine)
                with self.sandbox:
                    self._play(engine)
                    self._summarise(engine)
            finally:
                engine.dispose()
        return self.report

    def _play(self, engine: Engine) -> None:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None, **self.sandbox.env(), OUTREACH_PUBLIC_URL=DEMO_URL
        )
        pacing = {"sleep": self.timer.sleep, "monotonic": self.timer.monotonic}
        connectors, off = build_connectors(settings, SOURCES, self.clock, **pacing)
        if off:
            raise RuntimeError(f"sandbox sources off: {off}")
        channels, off = build_channels(settings, self.config, self.clock, sleep=self.timer.sleep)
        if off:
            raise RuntimeError(f"sandbox channels off: {off}")
        by_name = {c.name: c for c in connectors}
        import httpx

        from outreach.serve import make_app

        # The engine's own webhook receiver, in process: candidates' mail arrives through
        # Inbound Parse exactly as SendGrid would post it.
        app = make_app(engine, settings, self.config, self.clock, channels)
        self._http = httpx.Client(transport=httpx.WSGITransport(app=app), base_url=DEMO_URL)
        self._inbound_token = self.sandbox.credentials.sendgrid_inbound_token
        try:
            for night in range(self.nights):
                now = self.start + timedelta(days=night)
                self.clock.set(now)
                if night > 0:
                    self._script(night, now)
                else:
                    self._opening_moves(now)
                self._inbound(engine, now)
                for connector in connectors:
                    result = sync_source(connector, engine, self.config, self.clock)
                    self.report.sync_bad += len(result.bad)
                tick = Tick(
                    self.config,
                    self.clock,
                    channels,
                    engine_transactions(engine),
                    horizon=timedelta(hours=24),
                    sleep=self.timer.sleep,
                    monotonic=self.timer.monotonic,
                    dialect=engine.dialect.name,
                    reply_to=settings.reply_to,
                    public_url=DEMO_PUBLIC_URL,
                )
                summary = tick.run()
                for counts in summary.steps.values():
                    self.report.deferred.update(counts.deferred)
                process_write_backs(engine, by_name, self.clock)
                self._answer(now)
                if self.on_night is not None:
                    self.on_night(night, summary)
        finally:
            self._http.close()
            for connector in connectors:
                connector.close()
            for channel in channels.values():
                close = getattr(channel, "close", None)
                if close is not None:
                    close()

    # -- the script -----------------------------------------------------------------------

    def _move(self, person: SeedPerson, stage: str, at: datetime) -> None:
        self.sandbox.move(person, stage, at)
        self.stage[person.index] = stage
        self.report.moves.append((person.index, stage, at))
        self.report.stage_moves[stage] += 1

    def _opening_moves(self, now: datetime) -> None:
        """The scripted people apply the evening before the first night.

        The second one tells the recruiter not to email them (Greenhouse ``can_email``).
        """
        for story in self.stories:
            self._move(story.person, "applied", now - timedelta(hours=10))
        no_email = self.stories[1].person
        greenhouse = self.sandbox.greenhouse
        position = greenhouse.position(self.sandbox.greenhouse_id(no_email))
        greenhouse.update(position, at=now - timedelta(hours=9), can_email=False)

    def _script(self, night: int, now: datetime) -> None:
        """Recruiters move candidates during the day before this night (weekdays only)."""
        day = now - timedelta(days=1)
        if day.weekday() >= 5:
            return
        rng = random.Random(f"{self.seed}:{night}")
        cross = self.stories[2].person
        if night in _CROSS_PLOT:
            self._move(cross, _CROSS_PLOT[night], now - timedelta(hours=rng.uniform(6, 12)))
        for person in self.people:
            if person.index in self._story_index:
                continue
            for stage, chance in _MOVES.get(self.stage[person.index], ()):
                if rng.random() < chance:
                    self._move(person, stage, now - timedelta(hours=rng.uniform(5, 14)))
                    break

    def _answer(self, now: datetime) -> None:
        """Candidates answer what was delivered this night: replies, and one STOP."""
        stop = self.stories[0].person
        messages = self.sandbox.sendgrid.messages[self._seen_emails :]
        self._seen_emails += len(messages)
        for message in messages:
            person = self.by_email.get(message["to"][0].lower())
            if person is None or person.index in self._story_index:
                continue
            delivered = delivered_at(message)
            self._plan_clicks(message, person, delivered)
            key = _message_key(message)
            roll = _share(f"reply:{key}:{person.index}")
            for kind, share, after in (
                ("reply", REPLY_SHARE, _reply_delay(key)),
                ("ooo", OOO_SHARE, timedelta(minutes=2)),
                ("unsubscribe", UNSUBSCRIBE_SHARE, timedelta(hours=3)),
                ("dsn", DSN_SHARE, timedelta(minutes=10)),
            ):
                if roll < share:
                    self._answers.append((delivered + after, kind, message, person))
                    break
                roll -= share
        texts = self.sandbox.twilio.messages[self._seen_sms :]
        self._seen_sms += len(texts)
        for text in texts:
            person = self.by_phone.get(text["to"])
            if person is stop and not self.report.inbound["stop"]:
                delivered = delivered_at(text)
                self.clock.set(delivered + timedelta(hours=3))
                form = self.sandbox.twilio.inbound(text["to"], "STOP")
                self.clock.set(now)
                event = from_twilio_inbound(form, delivered + timedelta(hours=3))
                if event is not None:
                    self._queue(event, person)
                self.report.inbound["stop"] += 1

    def _plan_clicks(self, message: dict[str, Any], person: SeedPerson, at: datetime) -> None:
        """A share of the readers of an email with rating links click one, hours later."""
        links = {
            int(score): path
            for part in message.get("content") or []
            for path, score in _RATING_LINK.findall(str(part.get("value", "")))
        }
        key = f"{_message_key(message)}:{person.index}"
        if len(links) != 5 or _share(f"rate:{key}") >= RATE_SHARE:
            return
        rng = random.Random(f"{self.seed}:rate:{key}")
        first = rng.choices(range(1, 6), weights=_SCORE_WEIGHTS)[0]
        when = at + timedelta(hours=rng.uniform(1, 30))
        self._clicks.append((when, links[first], message))
        if _share(f"rerate:{key}") < RERATE_SHARE:
            second = rng.choice([n for n in range(1, 6) if n != first])
            self._clicks.append(
                (when + timedelta(minutes=rng.uniform(1, 90)), links[second], message)
            )

    def _click_ratings(self, now: datetime) -> None:
        """Rating links clicked since the last night, in time order, through ``serve``."""
        due = sorted((c for c in self._clicks if c[0] <= now), key=lambda c: c[0])
        self._clicks = [c for c in self._clicks if c[0] > now]
        for at, path, message in due:
            self.clock.set(at)
            self.sandbox.sendgrid.deliver_due()
            if message.get("state") not in (None, "processed"):
                continue  # cancelled before delivery: nobody read it
            answer = self._http.get(path)
            if answer.status_code != 200:
                raise RuntimeError(f"a rating link answered {answer.status_code}")
            self.report.rating_clicks.append((path, at))
        self.clock.set(now)

    def _queue(self, event: InboundEvent, person: SeedPerson) -> None:
        self._pending.append((event.at, event, person.index))

    def _mail_back(self, now: datetime) -> None:
        """Candidates' emails since the last night, in time order, each posted through
        Inbound Parse at the moment it is sent; an answer to an email that was cancelled
        before delivery is never written."""
        from outreach.sandbox.answers import (
            bounce_for,
            human_reply,
            out_of_office,
            unsubscribe_reply,
        )
        from outreach.sandbox.inbound_parse import post_inbound

        due = sorted((a for a in self._answers if a[0] <= now), key=lambda a: a[0])
        self._answers = [a for a in self._answers if a[0] > now]
        sendgrid = self.sandbox.sendgrid
        for at, kind, message, person in due:
            self.clock.set(at)
            sendgrid.deliver_due()
            if message.get("state") not in (None, "processed"):
                self.report.answers_not_sent += 1
                continue
            choice = int(_share(f"choice:{_message_key(message)}") * 4)
            if kind == "reply":
                raw = human_reply(message, at, choice)
            elif kind == "ooo":
                back = (at + timedelta(days=3 + choice * 2)).replace(hour=0, minute=0)
                raw = out_of_office(message, at, back)
            elif kind == "unsubscribe":
                raw = unsubscribe_reply(message, at)
            else:
                raw = bounce_for(message, at, "5.1.1")
            mode = "raw" if choice % 2 else "parsed"
            answer = post_inbound(
                "http://outreach.demo/",
                raw,
                token=self._inbound_token,
                mode=mode,
                client=self._http,
            )
            if answer.status_code != 200:
                raise RuntimeError(f"Inbound Parse answered {answer.status_code}: {answer.text}")
            self.report.inbound_log.append((f"mail:{kind}", "email", person.index, at))
            self.report.inbound[f"mail:{kind}"] += 1
        self.clock.set(now)

    def _inbound(self, engine: Engine, now: datetime) -> None:
        """Feed the engine what the providers reported since the last night: SendGrid's
        Event Webhook and Twilio's status callbacks are posted to the engine's webhook app,
        signed as the providers sign them; the rest is ingested as events."""
        self._mail_back(now)
        self._click_ratings(now)
        due = [(at, e, i) for at, e, i in self._pending if at <= now]
        self._pending = [(at, e, i) for at, e, i in self._pending if at > now]
        events: list[tuple[str, InboundEvent]] = [
            (f"demo:{e.type}:{i}", e) for _, e, i in sorted(due, key=lambda x: x[0])
        ]
        items = self._sendgrid_ahead + self.sandbox.sendgrid.drain_events()
        stamp = now.timestamp()
        posted = [item for item in items if item["timestamp"] <= stamp]
        self._sendgrid_ahead = [item for item in items if item["timestamp"] > stamp]
        for event in from_sendgrid(posted):
            person = self.by_email.get((event.address or "").lower())
            if person is not None:
                self.report.inbound_log.append((event.type, event.channel, person.index, event.at))
            self.report.inbound[event.type] += 1
        for _, event, index in due:
            if index >= 0:
                self.report.inbound_log.append((event.type, event.channel, index, event.at))
            if event.type == "reply":
                self.report.inbound["reply"] += 1
        if events:
            ingest_events(engine, events, now=now, default_region=self.config.policy.default_region)
        self._post_sendgrid_events(posted, now)
        answers = self.sandbox.twilio.post_status_callbacks(self._http)
        if any(code != 200 for code in answers):
            raise RuntimeError(f"the status callback route answered {sorted(set(answers))}")

    def _post_sendgrid_events(self, items: list[dict[str, Any]], now: datetime) -> None:
        """POST Event Webhook items to the engine's route, signed with the fake's key."""
        sendgrid = self.sandbox.sendgrid
        for start in range(0, len(items), _SENDGRID_POST_ITEMS):
            payload = json.dumps(items[start : start + _SENDGRID_POST_ITEMS]).encode()
            answer = self._http.post(
                "/webhooks/sendgrid/events",
                content=payload,
                headers={
                    **sendgrid.sign_events(payload, int(now.timestamp())),
                    "Content-Type": "application/json",
                },
            )
            if answer.status_code != 200:
                raise RuntimeError(
                    f"the Event Webhook answered {answer.status_code}: {answer.text}"
                )

    # -- the summary ----------------------------------------------------------------------

    def _summarise(self, engine: Engine) -> None:
        report = self.report
        touches = Touch.__table__
        with engine.connect() as conn:
            rows = conn.execute(
                select(
                    touches.c.cadence_id,
                    touches.c.step_id,
                    touches.c.channel,
                    touches.c.status,
                )
            ).all()
            for cadence, step, channel, status in rows:
                key = (cadence, step, channel or "task")
                report.touches.setdefault(key, Counter())[status] += 1
                if status == "sent" and channel:
                    report.ledger_sent[channel] += 1
                report.failed += status == "failed"
                report.ambiguous += status == "ambiguous"
            tasks = Task.__table__
            for source in conn.execute(select(tasks.c.source)).scalars():
                report.ledger_tasks[source or "engine"] += 1
            self._came_back(conn)
            self._delivery_events(conn)
            self._timelines(conn)
            end = self.start + timedelta(days=self.nights)
            # The month's report, as `outreach report` would print it; the SLA and ratings
            # lines of the summary are read from it, so both say the same.
            report.kpis = build_report(conn, self.config, since=self.start, until=end, now=end)
            report.sla = report.kpis["sla"]
            report.ratings = report.kpis["ratings"]
        sendgrid, twilio, hubspot = self.sandbox.sendgrid, self.sandbox.twilio, self.sandbox.hubspot
        # What the providers still deliver: a cancelled scheduled send is not a delivery.
        report.emails_accepted = sum(m.get("state") != "cancelled" for m in sendgrid.messages)
        report.email_requests = len(sendgrid.mail_requests)
        report.sms_accepted = sum(m.get("status") != "canceled" for m in twilio.messages)
        report.crm_tasks["hubspot"] = len(hubspot.tasks)
        report.notes["hubspot"] = len(hubspot.notes)
        greenhouse_notes = list(self.sandbox.greenhouse.notes)
        report.crm_tasks["greenhouse"] = sum(_is_task_note(n) for n in greenhouse_notes)
        report.notes["greenhouse"] = len(greenhouse_notes) - report.crm_tasks["greenhouse"]
        lever_notes = [n for notes in self.sandbox.lever.notes.values() for n in notes]
        report.crm_tasks["lever"] = sum(_is_task_note(n) for n in lever_notes)
        report.notes["lever"] = len(lever_notes) - report.crm_tasks["lever"]
        report.crm_tasks["bullhorn"] = len(self.sandbox.bullhorn.tasks)
        report.notes["bullhorn"] = len(self.sandbox.bullhorn.notes)
        self._timeliness()

    def _came_back(self, conn: Any) -> None:
        """What came back by email, what was recalled, and who was touched after replying."""
        from outreach.store.schema import InboundMessage, Recall

        report = self.report
        inbound = InboundMessage.__table__
        replied: dict[int, datetime] = {}
        for row in conn.execute(
            select(
                inbound.c.kind,
                inbound.c.out_of_office,
                inbound.c.person_id,
                inbound.c.received_at,
            )
        ):
            kind = "out of office" if row.out_of_office else row.kind
            report.came_back[kind] += 1
            report.unmatched += row.person_id is None
            if row.kind == "human" and row.person_id is not None:
                replied[row.person_id] = min(
                    row.received_at, replied.get(row.person_id, row.received_at)
                )
        touches = Touch.__table__
        report.recalled = conn.execute(
            select(func.count()).select_from(touches).where(touches.c.status == "cancelled")
        ).scalar_one()
        recalls = Recall.__table__
        report.unrecallable = conn.execute(
            select(func.count())
            .select_from(recalls)
            .where(recalls.c.status.in_(("too_late", "unsupported", "failed")))
        ).scalar_one()
        # From the fakes' records: a delivery of a touch whose enrollment a reply stopped,
        # later than that stop.
        enrollments = Enrollment.__table__
        stopped_at = dict(
            conn.execute(
                select(enrollments.c.id, enrollments.c.stopped_at).where(
                    enrollments.c.stop_reason.like("reply%")
                )
            ).all()
        )
        enrollment_of = dict(conn.execute(select(touches.c.id, touches.c.enrollment_id)).all())
        report.replied_people = len(replied)
        for message in self.sandbox.sendgrid.messages:
            if message.get("state") == "cancelled":
                continue
            touch_id = int((message.get("custom_args") or {}).get("touch_id") or 0)
            stop = stopped_at.get(enrollment_of.get(touch_id))
            if stop is not None and delivered_at(message) > stop:
                report.touched_after_reply += 1

    def _timeliness(self) -> None:
        """Acknowledged within 48 h, thanked within 24 h: from the script and SendGrid.

        The provider-side twin of the ledger's SLA (:attr:`DemoReport.sla`): from the time
        a recruiter moved the candidate to the first email SendGrid delivers for the step.
        Counted over the moves the engine owes an answer to by email: a move the person's
        CRMs cannot record as that stage, or of a person who may not be emailed (opted out
        in the CRM, unsubscribed or bounced by then), is counted apart.
        """
        report = self.report
        off_email: dict[int, datetime] = {}
        for kind, _channel, index, at in report.inbound_log:
            if kind in _OFF_EMAIL and (index not in off_email or at < off_email[index]):
                off_email[index] = at
        first: dict[tuple[int, str], datetime] = {}
        for message in self.sandbox.sendgrid.messages:
            person = self.by_email.get(message["to"][0].lower())
            if person is None:
                continue
            at = delivered_at(message)
            for step in ("acknowledge", "thank-you"):
                if step in message["categories"]:
                    key = (person.index, step)
                    if key not in first or at < first[key]:
                        first[key] = at
        # stage moved to -> (the step that answers it, its goal, the report's three counters)
        goals = {
            "applied": ("acknowledge", timedelta(hours=48), "applications", "acknowledged"),
            "interview": ("thank-you", timedelta(hours=24), "interviews", "thanked"),
        }
        for index, stage, moved_at in report.moves:
            if stage not in goals:
                continue
            step, goal, total, met = goals[stage]
            person = self.people[index]
            if not self._recorded(person, stage):
                report.not_recorded[stage] += 1
                continue
            gone = off_email.get(index)
            if person.email_opt_out or (gone is not None and gone < moved_at + goal):
                report.not_emailable[stage] += 1
                continue
            hours = int(goal.total_seconds() // 3600)
            setattr(report, total, getattr(report, total) + 1)
            sent = first.get((index, step))
            if sent is not None and sent >= moved_at:
                name = f"{met}_{hours}h" if sent - moved_at <= goal else f"{met}_late"
                setattr(report, name, getattr(report, name) + 1)

    def _recorded(self, person: SeedPerson, stage: str) -> bool:
        """Whether one of ``person``'s CRMs records ``stage`` as a stage the engine maps back
        to it (HubSpot's lifecycle stage ``opportunity`` stands for screening to offer)."""
        from outreach.sandbox.bullhorn import STATUS_OF
        from outreach.sandbox.greenhouse import STAGE_NAMES
        from outreach.sandbox.hubspot import LIFECYCLE
        from outreach.sandbox.lever import _STAGE_OF, STAGES

        lever = {row["id"]: row["text"] for row in STAGES}
        names = {
            "greenhouse": STAGE_NAMES.get(stage),
            "lever": lever.get(_STAGE_OF.get(stage, "")),
            "hubspot": LIFECYCLE.get(stage),
            "bullhorn": STATUS_OF.get(stage, "New Lead" if stage == "prospect" else None),
        }
        return any(
            names.get(crm) is not None
            and self.config.stage_map.get(crm, {}).get(names[crm] or "") == stage
            for crm in person.crms
        )

    def _delivery_events(self, conn: Any) -> None:
        """Count the delivered, open and click events the webhooks stored."""
        events = Event.__table__
        for kind, payload in conn.execute(
            select(events.c.type, events.c.payload).where(events.c.type.in_(DELIVERY_TYPES))
        ):
            machine = kind == "open" and (payload or {}).get("machine")
            self.report.delivery_events["machine_open" if machine else kind] += 1

    def _timelines(self, conn: Any) -> None:
        points = ContactPoint.__table__
        touches = Touch.__table__
        events = Event.__table__
        records = CandidateRecord.__table__
        for story in self.stories:
            person = story.person
            person_id = conn.execute(
                select(points.c.person_id).where(
                    points.c.kind == "email", points.c.value == normalize_email(person.email)
                )
            ).scalar()
            lines: list[tuple[datetime, str]] = []
            for index, stage, at in self.report.moves:
                if index == person.index:
                    lines.append((at, f"moved to {stage} in the CRM"))
            if person_id is not None:
                sources = sorted(
                    conn.execute(
                        select(records.c.source).where(records.c.person_id == person_id)
                    ).scalars()
                )
                lines.append((self.start, f"one person in the store: {', '.join(sources)}"))
                for row in conn.execute(
                    select(touches).where(touches.c.person_id == person_id).order_by(touches.c.id)
                ).mappings():
                    when = row["planned_at"] or row["due_at"]
                    what = f"{row['cadence_id']}/{row['step_id']}: {row['status']}"
                    if row["channel"]:
                        what += f" by {row['channel']}"
                    if row["reason"] and row["status"] != "sent":
                        what += f" ({row['reason']})"
                    lines.append((when, what))
                for row in conn.execute(
                    select(events.c.type, events.c.channel, events.c.at).where(
                        events.c.person_id == person_id,
                        events.c.type.not_in(("stage_change", *DELIVERY_TYPES)),
                    )
                ).all():
                    lines.append((row.at, f"{row.type} on {row.channel or 'every channel'}"))
            self.report.timelines[story.label] = sorted(lines, key=lambda line: line[0])


#: inbound events after which a person may no longer be emailed
_OFF_EMAIL = frozenset({"mail:unsubscribe", "mail:dsn", "unsubscribe", "bounce", "opt_out"})

# Stage moves of the person who lives in two CRMs (night -> stage).
_CROSS_PLOT = {5: "screening", 10: "interview", 17: "offer", 22: "hired"}


def _pick_stories(people: Iterable[SeedPerson]) -> list[Story]:
    """The scripted people, chosen from the population by what their story needs.

    SMS needs consent, which only Greenhouse carries (a custom field), so the two SMS
    stories are Greenhouse candidates with a consenting phone and a LinkedIn profile.
    """
    bounce = no_email = cross = None
    for p in people:
        if p.stage != "prospect" or p.email_opt_out:
            continue
        texting = p.phone_e164 and p.sms_consent and p.linkedin_url
        if len(p.crms) == 2 and cross is None:
            cross = p
        elif p.crms == ("greenhouse",) and texting:
            if bounce is None:
                bounce = p
            elif no_email is None:
                no_email = p
        if bounce and no_email and cross:
            break
    if not (bounce and no_email and cross):
        raise ValueError(
            "the seeded population has no one for each of the demo's stories; "
            "use more --people or another --seed"
        )
    return [
        Story("email bounces, then texts STOP", bounce, "bounce"),
        Story("asks not to be emailed, phone invalid", no_email, "invalid phone"),
        Story("one person in two CRMs", cross, "cross"),
    ]


def _message_key(message: dict[str, Any]) -> str:
    """What the candidates' dice are keyed on: the touch the email carries, so a seed plays
    out the same whichever order the concurrent dispatch sent the night's emails in and
    whatever random id SendGrid gave each; the message id only for an email without one."""
    touch_id = (message.get("custom_args") or {}).get("touch_id")
    return f"touch:{touch_id}" if touch_id else str(message["message_id"])


def _reply_delay(key: str) -> timedelta:
    """How long a candidate takes to answer: log-uniform from 30 minutes to 4 days (most
    answer the same day, some after a weekend), drawn from the message's key."""
    low, high = 0.5, 96.0
    return timedelta(hours=low * (high / low) ** _share(f"delay:{key}"))


def _share(text: str) -> float:
    """A stable number in [0, 1) for ``text``."""
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def delivered_at(message: dict[str, Any]) -> datetime:
    """When a provider delivers a message it accepted: its ``send_at``, else on receipt.

    Works for the SendGrid fake's messages (``send_at`` epoch seconds, ``received_at``)
    and the Twilio fake's (``send_at`` datetime, ``date_created``).
    """
    for key in ("send_at", "received_at", "date_created"):
        value = message.get(key)
        if isinstance(value, datetime):
            return value.astimezone(UTC)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, UTC)
        if isinstance(value, str) and value:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
    raise ValueError("the message has no delivery time")


def _is_task_note(note: dict[str, Any]) -> bool:
    body = str(note.get("body") or note.get("value") or note.get("text") or "")
    return body.startswith("[Task")


def mismatches(report: DemoReport) -> list[str]:
    """Where the ledger and the providers' records disagree (empty when they agree)."""
    problems = []
    if report.ledger_sent["email"] != report.emails_accepted:
        problems.append(
            f"ledger has {report.ledger_sent['email']} emails sent, "
            f"SendGrid accepted {report.emails_accepted}"
        )
    if report.ledger_sent["sms"] != report.sms_accepted:
        problems.append(
            f"ledger has {report.ledger_sent['sms']} SMS sent, "
            f"Twilio accepted {report.sms_accepted}"
        )
    for crm in SOURCES:
        if report.ledger_tasks[crm] != report.crm_tasks[crm]:
            problems.append(
                f"ledger has {report.ledger_tasks[crm]} {crm} tasks, "
                f"{crm} holds {report.crm_tasks[crm]}"
            )
    return problems


def render(report: DemoReport, console: Any) -> None:
    """Print the summary a recruiter reads: what went out, what waited, what came back."""
    from rich.table import Table

    end = report.start + timedelta(days=report.nights - 1)
    console.print(
        f"[bold]Outreach demo[/]: {report.nights} nightly runs, {report.start:%a %d %b %Y} "
        f"to {end:%a %d %b %Y}, {report.people} seeded candidates in Greenhouse, Lever, "
        "HubSpot and Bullhorn",
        highlight=False,
    )
    moves = ", ".join(f"{n} to {stage}" for stage, n in sorted(report.stage_moves.items()))
    console.print(f"Recruiters moved candidates in the CRMs: {moves}.", highlight=False)

    table = Table(title="Touches by cadence, step and channel (ledger)", header_style="bold")
    for column in ("cadence", "step", "channel", "sent", "tasks", "skipped", "failed", "ambig."):
        table.add_column(column, justify="right" if column not in ("cadence", "step") else "left")
    for (cadence, step, channel), counts in sorted(report.touches.items()):
        table.add_row(
            cadence,
            step,
            channel,
            *(str(counts.get(k, 0) or "") for k in ("sent", "task", "skipped", "failed")),
            str(counts.get("ambiguous", 0) or ""),
        )
    console.print(table)

    waited = Table(title="Deferred touches by reason (one per night waited)", header_style="bold")
    waited.add_column("reason")
    waited.add_column("deferrals", justify="right")
    for reason, n in report.deferred.most_common():
        waited.add_row(reason, str(n))
    console.print(waited)

    providers = Table(title="The ledger against what the providers hold", header_style="bold")
    for column in ("what", "ledger", "provider", "note"):
        right = column in ("ledger", "provider")
        providers.add_column(column, justify="right" if right else "left")
    providers.add_row(
        "emails",
        str(report.ledger_sent["email"]),
        str(report.emails_accepted),
        f"SendGrid, in {report.email_requests} requests",
    )
    providers.add_row("SMS", str(report.ledger_sent["sms"]), str(report.sms_accepted), "Twilio")
    for crm, kind in (
        ("hubspot", "HubSpot task objects"),
        ("greenhouse", "Greenhouse notes marked as tasks"),
        ("lever", "Lever notes marked as tasks"),
        ("bullhorn", "Bullhorn Task entities"),
    ):
        providers.add_row(
            f"tasks in {crm}", str(report.ledger_tasks[crm]), str(report.crm_tasks[crm]), kind
        )
    providers.add_row(
        "CRM notes",
        "",
        str(sum(report.notes.values())),
        ", ".join(f"{crm} {n}" for crm, n in sorted(report.notes.items())),
    )
    console.print(providers)

    inbound = report.inbound
    back = report.came_back
    console.print(
        "Came back by email, through SendGrid Inbound Parse: "
        f"{back['human']} replies (each stops that person's cadence and becomes a recruiter "
        f"task), {back['out of office']} out-of-office notices (touches paused until the "
        f"return date), {back['unsubscribe']} unsubscribes by reply, {back['bounce']} "
        f"bounce notices, {back['auto']} other automatic replies; {report.unmatched} matched "
        f"no one. Also {inbound['bounce']} bounce reported by SendGrid and {inbound['stop']} "
        f"STOP by SMS; {report.failed} failed and {report.ambiguous} ambiguous sends.",
        highlight=False,
    )
    console.print(
        f"After a reply: {report.touched_after_reply} deliveries of a stopped cadence reached "
        f"any of the {report.replied_people} people who replied; {report.recalled} touches "
        f"SendGrid or Twilio held for later were cancelled there, {report.unrecallable} "
        f"could not be recalled, and {report.answers_not_sent} answers never came because "
        "their email was cancelled first.",
        highlight=False,
    )
    ratings = report.ratings
    if ratings.get("count"):
        stages = ", ".join(
            f"{stage} {cell['mean']:.1f} ({cell['count']})"
            for stage, cell in sorted(ratings["by_stage"].items())
        )
        console.print(
            f"Candidate experience: {ratings['count']} emails rated by one click "
            f"({len(report.rating_clicks)} clicks; a changed mind replaces the score), mean "
            f"{ratings['mean']:.1f} of 5; by stage: {stages}.",
            highlight=False,
        )
    for story in report.stories:
        person = story.person
        console.print(
            f"\n[bold]{person.name}[/] ({story.label}; {', '.join(person.crms)})",
            highlight=False,
        )
        for at, what in report.timelines.get(story.label, []):
            console.print(f"  {at:%a %d %b %H:%M} UTC  {what}", highlight=False)
    problems = mismatches(report)
    for problem in problems:
        console.print(f"[red]mismatch:[/] {problem}", highlight=False)
    if not problems:
        console.print(
            "\nEvery email, SMS and task in the ledger is in the providers' records, and "
            "nothing more.",
            highlight=False,
        )
    if report.kpis:
        console.print(
            "\n[bold]The month in figures[/] (what `outreach report` prints, from the ledger "
            "and the events the providers' webhooks posted):",
            highlight=False,
        )
        print_report(report.kpis, console)
    for what, done, late, total, stage, goal in (
        ("Acknowledged", report.acknowledged_48h, report.acknowledged_late, report.applications,
         "applied", "48 h"),
        ("Thanked", report.thanked_24h, report.thanked_late, report.interviews, "interview",
         "24 h"),
    ):  # fmt: skip
        apart = []
        if report.not_emailable[stage]:
            apart.append(f"{report.not_emailable[stage]} of people who may not be emailed")
        if report.not_recorded[stage]:
            apart.append(
                f"{report.not_recorded[stage]} in a CRM without that stage (HubSpot's "
                "lifecycle has no interview)"
            )
        share = f" ({done / total:.0%})" if total else ""
        console.print(
            f"Cross-check at SendGrid: {what.lower()} within {goal} of the CRM move: {done} of "
            f"{total}{share}; {late} later, {total - done - late} not by email"
            + (f"; set apart: {', '.join(apart)}" if apart else "")
            + ".",
            highlight=False,
        )
