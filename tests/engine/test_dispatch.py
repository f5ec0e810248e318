"""The dispatch stage: chunks per channel, in flight before the request, never lost."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from engine_world import World, write_config
from sqlalchemy import select
from stage_data import NOW, config, person
from tick_world import (
    ONE_STEP,
    PERSON,
    SMALL,
    CountingSMS,
    ny,
)
from tick_world import (
    TEMPLATES as TICK_TEMPLATES,
)

from channels.base import Channel, OutgoingMessage, SendResult
from outreach.clock import FixedClock, ManualTimer
from outreach.engine.batch import Pending, outgoing_message
from outreach.engine.dispatch import Dispatcher
from outreach.engine.flight import FlightGate
from outreach.store.schema import Touch
from outreach.templates import RenderedMessage


class Recording(Channel):
    """Accepts batches of up to three; ``fail`` raises, ``drop`` returns no result."""

    name = "email"
    max_batch = 3
    paced = False

    def __init__(self, events: list, *, fail: bool = False, drop: bool = False) -> None:
        self.events, self.fail, self.drop = events, fail, drop

    def batch_key(self, message: OutgoingMessage) -> tuple[str, ...]:
        return ("shared",)

    def send(self, batch: Sequence[OutgoingMessage]) -> list[SendResult]:
        self.events.append(("send", [m.touch_id for m in batch]))
        if self.fail:
            raise RuntimeError("boom")
        kept = batch[1:] if self.drop else batch
        return [SendResult.sent(m, f"id-{m.touch_id}") for m in kept]


def pending(cfg, touch_ids) -> list[Pending]:
    ann = person()
    cadence = cfg.cadence("a")
    step = cadence.steps[0]
    out = []
    for touch_id in touch_ids:
        rendered = RenderedMessage("t", "email", "Hello Ann", subject="Hi Ann")
        message = outgoing_message(
            touch_id,
            f"{touch_id}:one:0",
            ann,
            ann.records[0],
            cadence,
            step,
            "email",
            "p1@example.com",
            NOW,
            rendered,
            "t",
            "a",
        )
        out.append(
            Pending(touch_id, message, ann, ann.records[0], cadence, step, "a", "t", 11, ["email"])
        )
    return out


def dispatcher(cfg, channel: Channel, events: list, marked: set[int] | None = None) -> Dispatcher:
    clock = FixedClock(NOW)
    out = Dispatcher(
        cfg, {"email": channel}, _no_transactions, "run-1", clock, timedelta(minutes=15)
    )

    def mark(ids: list[int]) -> list[int]:
        events.append(("in_flight", sorted(ids)))
        return [i for i in ids if marked is None or i in marked]

    out.gate = FlightGate(mark)
    return out


def _no_transactions(immediate: bool = True):
    raise AssertionError("the stage opened a transaction it did not need")


def test_chunks_are_marked_in_flight_before_their_request_and_confirmed_each(
    tmp_path: Path,
) -> None:
    cfg = config(tmp_path)
    events: list = []
    confirmed: list = []

    def confirm(results, now):
        confirmed.append(sorted(item.touch_id for item, _ in results))
        events.append(("confirm", confirmed[-1]))
        return []

    dispatcher(cfg, Recording(events), events)(pending(cfg, range(1, 6)), NOW, confirm)
    assert events == [
        ("in_flight", [1, 2, 3]),
        ("send", [1, 2, 3]),
        ("confirm", [1, 2, 3]),
        ("in_flight", [4, 5]),
        ("send", [4, 5]),
        ("confirm", [4, 5]),
    ]


def test_a_channel_that_raises_or_returns_nothing_makes_its_touches_ambiguous(
    tmp_path: Path,
) -> None:
    cfg = config(tmp_path)
    results: list = []

    def confirm(chunk, now):
        results.extend((item.touch_id, result.status) for item, result in chunk)
        return []

    dispatcher(cfg, Recording([], fail=True), [])(pending(cfg, [1, 2]), NOW, confirm)
    dispatcher(cfg, Recording([], drop=True), [])(pending(cfg, [3, 4]), NOW, confirm)
    assert sorted(results) == [(1, "ambiguous"), (2, "ambiguous"), (3, "ambiguous"), (4, "sent")]


def test_touches_that_cannot_be_marked_in_flight_are_not_sent(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    events: list = []
    results: list = []

    def confirm(chunk, now):
        results.extend((item.touch_id, result.status, result.permanent) for item, result in chunk)
        return []

    # touch 2 is no longer claimed by this run: no request leaves for the chunk
    dispatcher(cfg, Recording(events), events, marked={1})(pending(cfg, [1, 2]), NOW, confirm)
    assert ("send", [1, 2]) not in events
    assert sorted(results) == [(1, "failed", False), (2, "failed", False)]


def test_a_fallback_returned_by_confirm_goes_out_in_the_next_round(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    events: list = []
    rounds: list = []

    def confirm(chunk, now):
        rounds.append([item.touch_id for item, _ in chunk])
        return [item for item, _ in chunk] if len(rounds) < 10 else []

    dispatcher(cfg, Recording(events), events)(pending(cfg, [1]), NOW, confirm)
    # retried at most four rounds in one dispatch
    assert rounds == [[1], [1], [1], [1]]


def test_sms_is_handed_over_no_faster_than_the_policy_rate(engine, tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        SMALL.replace("rate_limits: {linkedin: 1/d}", "rate_limits: {linkedin: 1/d, sms: 2/s}"),
        TICK_TEMPLATES,
    )
    world = World(engine, config, ny(2026, 11, 2, 9, 0))
    world.sms = CountingSMS()  # type: ignore[assignment]
    world.add(
        *[
            {
                **PERSON,
                "external_id": f"p{i}",
                "email": "",
                "phone": f"+1 212 555 01{i:02d}",
                "stage": "applied",
            }
            for i in range(7)
        ]
    )
    timer = ManualTimer()
    summary = world.tick(sleep=timer.sleep, monotonic=timer.monotonic)
    assert summary.total("sent") == 7
    # Two a second: never a burst of twenty requests at a 2/s provider limit.
    assert max(world.sms.batches) <= 2 and sum(world.sms.batches) == 7
    assert timer.now >= 2.5  # 7 messages at 2/s after a burst of 2


def test_claims_of_a_long_paced_dispatch_keep_their_lease(engine, tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        ONE_STEP.replace("channel: email, fallback: sms", "channel: sms") + "",
        TICK_TEMPLATES,
    )
    world = World(engine, config, ny(2026, 11, 2, 9, 0))
    wall = FixedClock(datetime(2026, 11, 2, 14, 0, tzinfo=ZoneInfo("UTC")))
    seen: list[bool] = []

    class SlowSMS(CountingSMS):
        def send(self, batch):
            wall.advance(timedelta(minutes=5))  # a slow provider: five minutes a message
            with world.engine.connect() as conn:
                leases = (
                    conn.execute(select(Touch.lease_until).where(Touch.status == "claimed"))
                    .scalars()
                    .all()
                )
            seen.append(all(lease > wall.now() for lease in leases))
            return super().send(batch)

    world.sms = SlowSMS()  # type: ignore[assignment]
    world.add(
        *[
            {
                **PERSON,
                "external_id": f"p{i}",
                "email": "",
                "phone": f"+1 212 555 01{i:02d}",
                "stage": "applied",
            }
            for i in range(8)
        ]
    )
    timer = ManualTimer()
    world.tick(wall_clock=wall, sleep=timer.sleep, monotonic=timer.monotonic)
    assert len(world.sms.sent) == 8  # 40 minutes of sending against a 15-minute lease
    assert all(seen)


class CountingEmail(Channel):
    """Email where ``grouped`` messages share one request (a dynamic template)."""

    name = "email"
    max_batch = 1000

    def __init__(self, grouped: bool) -> None:
        self.grouped = grouped
        self.batches: list[int] = []

    def batch_key(self, message):
        return ("template",) if self.grouped else ()

    def send(self, batch):
        self.batches.append(len(batch))
        return [SendResult.sent(m) for m in batch]


@pytest.mark.parametrize(("grouped", "largest"), [(False, 3), (True, 9)])
def test_requests_are_paced_and_shared_requests_are_not_split(
    engine, tmp_path: Path, grouped: bool, largest: int
) -> None:
    config = write_config(
        tmp_path,
        SMALL.replace("rate_limits: {linkedin: 1/d}", "rate_limits: {linkedin: 1/d, email: 3/s}"),
        TICK_TEMPLATES,
    )
    world = World(engine, config, ny(2026, 11, 2, 9, 0))
    world.email = CountingEmail(grouped)  # type: ignore[assignment]
    world.add(
        *[
            {
                **PERSON,
                "external_id": f"p{i}",
                "email": f"p{i}@example.com",
                "phone": "",
                "stage": "applied",
            }
            for i in range(9)
        ]
    )
    timer = ManualTimer()
    world.tick(sleep=timer.sleep, monotonic=timer.monotonic)
    assert sum(world.email.batches) == 9
    # One message per request: three at a time at 3/s. One shared request: all nine at once.
    assert max(world.email.batches) == largest


class OnLane(Recording):
    """Records the thread each send ran on."""

    def __init__(self, name: str, events: list) -> None:
        super().__init__(events)
        self.name = name  # type: ignore[misc]

    def send(self, batch: Sequence[OutgoingMessage]) -> list[SendResult]:
        self.events.append((self.name, threading.current_thread().name))
        return super().send(batch)


@pytest.mark.parametrize("concurrent", [True, False])
def test_channels_send_on_lanes_of_their_own_when_transactions_allow(
    tmp_path: Path, concurrent: bool
) -> None:
    cfg = config(tmp_path)
    events: list = []
    confirms: list = []

    def transactions(immediate: bool = True):
        raise AssertionError("the stage opened a transaction it did not need")

    if concurrent:
        transactions.concurrent = True  # type: ignore[attr-defined]
    channels = {"email": OnLane("email", events), "sms": OnLane("sms", events)}
    stage = Dispatcher(cfg, channels, transactions, "run-1", FixedClock(NOW), timedelta(minutes=15))
    stage.gate = FlightGate(lambda ids: ids)
    work = pending(cfg, range(1, 6)) + [
        dataclasses.replace(item, message=dataclasses.replace(item.message, channel="sms"))
        for item in pending(cfg, range(6, 9))
    ]

    def confirm(results, now):
        confirms.append((threading.current_thread().name, sorted(i.touch_id for i, _ in results)))
        return []

    stage(work, NOW, confirm)

    threads = {(name, thread) for name, thread in events if name in ("email", "sms")}
    caller = threading.current_thread().name
    if concurrent:
        assert threads == {("email", "lane-email"), ("sms", "lane-sms")}
    else:
        assert threads == {("email", caller), ("sms", caller)}
    assert {thread for thread, _ in confirms} == {caller}
    assert sorted(i for _, ids in confirms for i in ids) == list(range(1, 9))
