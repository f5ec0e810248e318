"""The dispatch stage: chunks per channel, in flight before the request, never lost."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from stage_data import NOW, config, person

from channels.base import Channel, OutgoingMessage, SendResult
from outreach.clock import FixedClock
from outreach.engine.batch import Pending, outgoing_message
from outreach.engine.dispatch import Dispatcher
from outreach.engine.flight import FlightGate
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
