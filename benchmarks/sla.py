"""Benchmark: the seed's deadlines over 10,000 simulated candidates (issue 14, item 6).

Run: ``python benchmarks/sla.py`` (10,000 people, 28 days, a tick every hour) or e.g.
``python benchmarks/sla.py --people 2000 --tick-every 15 --database-url postgresql+psycopg://…``.

The shipped ``config/cadences.yaml`` and the real planner (``Tick``, with dry-run channels
that hold scheduled messages and give them back on recall as SendGrid does, up to 10
minutes before delivery) run over a simulated month:
candidates apply, are screened, interviewed, offered, hired or rejected, **at any hour of
any day of the week** (uniform over the clock, weekends and the night included), in eight
time zones from Honolulu to London; 5 % of them reply at some point (a reply stops their
cadences). A CRM sync and a tick run every ``--tick-every`` minutes (default 60: cron
running ``outreach sync && outreach run`` hourly), so the engine sees a move at the next
tick with the move's own time as ``stage_entered_at``.

Printed and checked (exit 1 when an aim is missed):

* the report's SLA per step (:func:`outreach.reports.sla.per_step` on the ledger), aim:
  ``acknowledge`` (48 h) and ``thank-you`` (24 h) met for >= 95 % of the occurrences due;
* the same from the channels' records: from each move to the first message of the step
  delivered to that person (moves of people whose reply stopped the cadence before the
  deadline, with nothing sent, are set apart);
* invariant 1 on the channels' records: deliveries of non-transactional touches closer
  than ``min_gap`` to an earlier one, or over ``max_touches`` in the window (aim: 0);
* invariant 5: deliveries outside the step's window (its own, else the policy's) in the
  candidate's zone (aim: 0).
"""

from __future__ import annotations

import argparse
import bisect
import json
import random
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

START = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)  # a Monday
ZONES = (
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Phoenix",
    "America/Los_Angeles",
    "America/Anchorage",
    "Pacific/Honolulu",
    "Europe/London",
)
#: (from stage, to stage, chance, days after the previous move: low, high)
PATH = (
    ("applied", "screening", 0.55, 1, 6),
    ("screening", "interview", 0.6, 1, 6),
    ("interview", "offer", 0.45, 2, 8),
    ("interview", "rejected", 0.35, 2, 8),
    ("offer", "hired", 0.7, 2, 6),
)
REPLY_SHARE = 0.05
GOALS = {"applied": ("acknowledge", 48), "interview": ("thank-you", 24)}
AIM = 0.95


@dataclass
class Script:
    """What the simulated recruiters and candidates do, decided up front from the seed."""

    zones: dict[int, str] = field(default_factory=dict)
    #: (at, person index, stage), in time order
    moves: list[tuple[datetime, int, str]] = field(default_factory=list)
    #: person index -> when they reply
    replies: dict[int, datetime] = field(default_factory=dict)


def script(people: int, days: int, seed: int) -> Script:
    """Every stage change and reply of the simulation."""
    rng = random.Random(seed)
    out = Script()
    span = timedelta(days=days)
    for index in range(people):
        out.zones[index] = rng.choice(ZONES)
        # Applications arrive all month; each later move comes days after the previous,
        # at a uniformly random instant (any hour, any day of the week).
        at = START + span * rng.random() * 0.85
        stage = "applied"
        out.moves.append((at, index, stage))
        while True:
            options = [p for p in PATH if p[0] == stage]
            if not options:
                break
            roll, nxt = rng.random(), None
            for _, to, chance, low, high in options:
                if roll < chance:
                    nxt = (to, low, high)
                    break
                roll -= chance
            if nxt is None:
                break
            stage, low, high = nxt
            at = at + timedelta(days=rng.uniform(low, high))
            if at >= START + span:
                break
            out.moves.append((at, index, stage))
        if rng.random() < REPLY_SHARE:
            out.replies[index] = START + span * rng.random()
    out.moves.sort()
    return out


def holding_channel(name: str):
    """A dry-run channel that holds scheduled messages as SendGrid does and can take them
    back until 10 minutes before their delivery time (the engine recalls a scheduled touch
    whose cadence stopped); :meth:`delivered` is what reached the candidates."""
    from channels import DryRunChannel
    from channels.base import RecallResult, SendResult

    class HoldingChannel(DryRunChannel):
        cutoff = timedelta(minutes=10)

        def __init__(self) -> None:
            super().__init__(name)
            self.cancelled: set[int] = set()

        def send(self, batch):
            self.sent.extend(batch)
            return [
                SendResult.sent(
                    m,
                    f"bench:{m.idempotency_key}",
                    recall_ref=f"bench:{m.touch_id}" if m.recallable else None,
                )
                for m in batch
            ]

        def cancel(self, recalls, now):
            out = []
            for recall in recalls:
                if now <= recall.send_at - self.cutoff:
                    self.cancelled.add(recall.touch_id)
                    out.append(RecallResult(recall.touch_id, "cancelled"))
                else:
                    out.append(RecallResult(recall.touch_id, "too_late", "inside the cut-off"))
            return out

        def delivered(self):
            return [m for m in self.sent if m.touch_id not in self.cancelled]

    return HoldingChannel()


def simulate(url: str, people: int, days: int, every: timedelta, seed: int) -> dict:
    """Run the month; return the figures (see the module docstring)."""
    from outreach.cadence import load_cadence_file
    from outreach.clock import FixedClock
    from outreach.engine.tick import Tick, engine_transactions
    from outreach.events import InboundEvent, ingest_events
    from outreach.paths import default_config_dir
    from outreach.records import normalize_record
    from outreach.reports.sla import per_step
    from outreach.store import make_engine, upgrade
    from outreach.store.candidates import upsert_candidates

    config = load_cadence_file(default_config_dir() / "cadences.yaml")
    plan = script(people, days, seed)
    engine = make_engine(url)
    upgrade(engine)
    channels = {"email": holding_channel("email"), "sms": holding_channel("sms")}
    clock = FixedClock(START)
    end = START + timedelta(days=days)

    def record(index: int, stage: str, at: datetime):
        return normalize_record(
            {
                "source": "import",
                "external_id": f"c{index}",
                "first_name": f"Cand{index}",
                "email": f"c{index}@example.com",
                "timezone": plan.zones[index],
                "job_title": "Engineer",
                "recruiter_name": "Jo Smith",
                "owner_id": f"rec-{index % 20}",
                "stage": stage,
                "stage_entered_at": at.isoformat(),
            },
            where=f"candidate {index}",
            default_region=config.policy.default_region,
            canonical_stage=config.canonical_stage,
        )

    moves = iter(plan.moves)
    upcoming = next(moves, None)
    replies = sorted((at, index) for index, at in plan.replies.items())
    reply_at = 0
    ticks = 0
    started = time.perf_counter()
    now = START
    while now < end:
        clock.set(now)
        # The CRM sync of this tick: every move made since the last one, at its own time.
        batch = []
        while upcoming is not None and upcoming[0] <= now:
            at, index, stage = upcoming
            batch.append(record(index, stage, at))
            upcoming = next(moves, None)
        if batch:
            with engine.begin() as conn:
                upsert_candidates(conn, batch, now)
        events = []
        while reply_at < len(replies) and replies[reply_at][0] <= now:
            at, index = replies[reply_at]
            event = InboundEvent(
                type="reply", channel="email", address=f"c{index}@example.com", at=at
            )
            events.append((f"reply:{index}", event))
            reply_at += 1
        if events:
            ingest_events(engine, events, now=now)
        Tick(
            config,
            clock,
            channels,
            engine_transactions(engine),
            wall_clock=clock,
            dialect=engine.dialect.name,
        ).run()
        ticks += 1
        now += every
    elapsed = time.perf_counter() - started
    with engine.connect() as conn:
        sla = per_step(conn, config, START, end, end)
    engine.dispose()
    messages = [m for channel in channels.values() for m in channel.delivered()]
    recalled = sum(len(channel.cancelled) for channel in channels.values())
    return {
        "people": people,
        "days": days,
        "tick_every_minutes": every.total_seconds() / 60,
        "ticks": ticks,
        "seconds": round(elapsed, 1),
        "moves": len(plan.moves),
        "messages": len(messages),
        "recalled": recalled,
        "sla": [row for row in sla if row["step"] in ("acknowledge", "thank-you")],
        "provider": _provider_side(plan, messages, end),
        "violations": _violations(config, plan, messages),
    }


def _provider_side(plan: Script, messages: list, end: datetime) -> dict[str, dict[str, int]]:
    """From each move to the first message of its answering step delivered to the person."""
    first: dict[tuple[int, str], list[datetime]] = defaultdict(list)
    for message in messages:
        index = int(message.to.split("@")[0][1:]) if message.channel == "email" else None
        if index is not None:
            first[(index, message.step_id)].append(message.send_at)
    for times in first.values():
        times.sort()
    out: dict[str, dict[str, int]] = {}
    for at, index, stage in plan.moves:
        if stage not in GOALS:
            continue
        step, hours = GOALS[stage]
        deadline = at + timedelta(hours=hours)
        if deadline >= end:
            continue  # not due within the run
        row = out.setdefault(step, {"due": 0, "met": 0, "late": 0, "never": 0, "stopped": 0})
        times = first.get((index, step), [])
        position = bisect.bisect_left(times, at)
        sent = times[position] if position < len(times) else None
        replied = plan.replies.get(index)
        if sent is None and replied is not None and replied < deadline:
            row["stopped"] += 1  # the reply stopped the cadence first: nothing owed
            continue
        row["due"] += 1
        if sent is None:
            row["never"] += 1
        elif sent <= deadline:
            row["met"] += 1
        else:
            row["late"] += 1
    return out


def _violations(config, plan: Script, messages: list) -> dict[str, int]:
    """Invariant 1 among non-transactional deliveries, invariant 5 for every delivery."""
    from outreach.engine.window import SendCalendar

    policy = config.policy
    transactional = set()
    calendars = {}
    default = SendCalendar(policy)
    for cadence in config.cadences:
        for step in cadence.steps:
            if step.transactional:
                transactional.add((cadence.id, step.id))
            calendars[(cadence.id, step.id)] = SendCalendar.for_step(policy, step, default)
    by_person: dict[int, list] = defaultdict(list)
    for message in messages:
        by_person[message.person_id].append(message)
    zone_of = {}
    for message in messages:
        index = int(message.to.split("@")[0][1:]) if message.channel == "email" else None
        if index is not None:
            zone_of[message.person_id] = ZoneInfo(plan.zones[index])
    gap = cap = window = checked = 0
    for person, items in by_person.items():
        items.sort(key=lambda m: m.send_at)
        times = [m.send_at for m in items]
        zone = zone_of.get(person, ZoneInfo(policy.default_timezone))
        for position, message in enumerate(items):
            key = (message.cadence_id, message.step_id)
            if not calendars[key].allowed(message.send_at, zone):
                window += 1
            if key in transactional:
                continue  # counts toward the caps, never blocked by them
            checked += 1
            at = message.send_at
            if any(at - earlier < policy.min_gap for earlier in times[:position]):
                gap += 1
            inside = sum(1 for t in times if at - policy.max_touches.per < t <= at)
            if inside > policy.max_touches.count:
                cap += 1
    return {
        "checked_non_transactional": checked,
        "min_gap": gap,
        "max_touches": cap,
        "outside_window": window,
    }


def main() -> int:
    """Parse the options, run the month, print the figures; 1 when an aim is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--tick-every", type=int, default=60, help="minutes between ticks")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="outreach-sla-") as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'sla.db'}"
        result = simulate(
            url, args.people, args.days, timedelta(minutes=args.tick_every), args.seed
        )
    missed = [
        f"{row['step']} met {row['met_rate']}"
        for row in result["sla"]
        if row["met_rate"] is None or row["met_rate"] < AIM
    ]
    missed += [
        f"{step} at the channel {row['met']}/{row['due']}"
        for step, row in result["provider"].items()
        if not row["due"] or row["met"] < AIM * row["due"]
    ]
    missed += [
        f"{name} {n}"
        for name, n in result["violations"].items()
        if name != "checked_non_transactional" and n
    ]
    result["missed"] = missed
    if args.json:
        print(json.dumps(result, default=str))
        return 1 if missed else 0
    print(
        f"{result['people']:,} candidates, {result['days']} days, a tick every "
        f"{result['tick_every_minutes']:g} min ({result['ticks']} ticks, {result['seconds']} s); "
        f"{result['moves']:,} stage changes at any hour and day; "
        f"{result['messages']:,} messages delivered ({result['recalled']} recalled before "
        "delivery when their cadence stopped)"
    )
    for row in result["sla"]:
        reasons = ", ".join(f"{n} {why}" for why, n in row["never_by_reason"].items()) or "-"
        print(
            f"ledger   {row['step']:<12} within {row['within_hours']:g} h: due {row['due']:,}, "
            f"met {row['met']:,} ({row['met_rate']:.1%}), late {row['late']}, never "
            f"{row['never']} ({reasons}); unreachable {row['unreachable']}, pending "
            f"{row['pending']}"
        )
    for step, row in result["provider"].items():
        rate = row["met"] / row["due"] if row["due"] else 0.0
        print(
            f"channels {step:<12} due {row['due']:,}, met {row['met']:,} ({rate:.1%}), late "
            f"{row['late']}, never {row['never']}; stopped by a reply first {row['stopped']}"
        )
    v = result["violations"]
    print(
        f"invariants: {v['checked_non_transactional']:,} non-transactional deliveries checked, "
        f"min_gap violations {v['min_gap']}, max_touches violations {v['max_touches']}; "
        f"deliveries outside their window {v['outside_window']}"
    )
    print("aims met" if not missed else "MISSED: " + "; ".join(missed))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
