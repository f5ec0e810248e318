"""The dispatch stage: claimed touches to their channels, paced, marked in flight first.

:class:`Dispatcher` groups a batch of :class:`~outreach.engine.batch.Pending` touches by
channel and by what can share one provider request (up to the channel's batch), paces
them with the channel's rate limiter, and marks each request's touches ``in_flight`` in a
short transaction (shared by the requests a channel's workers are about to make) before
the request leaves; each chunk's results go to the record stage
(:class:`~outreach.engine.record.Confirmer`) as soon as it returns. Each channel sends on
a lane of its own (:class:`~outreach.engine.flight.ChannelLanes`), so SendGrid and Twilio
work side by side while this thread confirms.

Invariant carried: a touch is ``in_flight`` (committed) before its request leaves, so a
crash leaves it ambiguous (reconciled, never re-sent blindly) or still ``claimed`` (it
never left: released and sent at the next run); a channel that raises or returns no
result makes its touches ambiguous, never lost (invariant 2). What is sent but not yet
confirmed at any moment is at most two chunks per channel (one being confirmed, one being
sent). Messages go no faster than the policy's and the provider's rate: a channel's
limiter is only ever called from its own lane.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update

from channels.base import Channel, OutgoingMessage, SendResult
from outreach.cadence import CadenceConfig
from outreach.clock import Clock
from outreach.engine.batch import Pending, Transactions
from outreach.engine.flight import ChannelLanes, FlightGate, NotInFlight
from outreach.engine.ratelimit import LimiterFactory, in_process_limiters
from outreach.store.schema import Touch

__all__ = ["Confirm", "Dispatcher", "channel_rate"]

_touches = Touch.__table__

#: writes a chunk's results; returns the touches to try on another channel
Confirm = Callable[[list[tuple[Pending, SendResult]], datetime], list[Pending]]


class Dispatcher:
    """The dispatch stage (see the module docstring).

    ``channels`` are the channels on; ``run_id`` is the run whose claims may be marked in
    flight; a claim's ``lease`` is renewed while a long, paced dispatch still sends.
    """

    def __init__(
        self,
        config: CadenceConfig,
        channels: Mapping[str, Channel],
        transaction: Transactions,
        run_id: str,
        wall_clock: Clock,
        lease: timedelta,
        *,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        limiters: LimiterFactory | None = None,
    ) -> None:
        self.channels = channels
        self.transaction = transaction
        self.run_id = run_id
        self.wall_clock = wall_clock
        self.lease = lease
        #: when the claims being dispatched were last leased (the claim sets it)
        self.claimed_at = wall_clock.now()
        self.gate = FlightGate(self._mark_in_flight)
        # Per process by default; shared by all workers when given (see shared_limits).
        make_limiter = limiters or in_process_limiters(monotonic=monotonic, sleep=sleep)
        #: whether ``transaction`` may be used from several threads at once (each a
        #: connection of its own): then the channels send side by side
        self.concurrent = bool(getattr(transaction, "concurrent", False))
        self._renewing = threading.Lock()
        self.limiters = {
            name: make_limiter(name, rate)
            for name, channel in channels.items()
            if channel.paced and (rate := channel_rate(config, channel)) is not None
        }

    def __call__(self, pending: list[Pending], now: datetime, confirm: Confirm) -> None:
        """Send ``pending`` chunk by chunk, each channel on a lane of its own; ``confirm``
        each chunk on this thread as it comes back.

        ``confirm`` writes a chunk's results and returns the touches to try again on
        another channel (a fallback); they go out in the next round, up to four rounds.
        Channels send side by side (:class:`~outreach.engine.flight.ChannelLanes`, one
        chunk ahead of the confirms) when the transactions may be used from several
        threads (``concurrent``); otherwise one chunk after the other, as a dry run's
        single connection requires.
        """
        rounds = 0
        while pending and rounds < 4:
            rounds += 1
            lanes = self._lanes(pending)

            def send(name: str, chunk: list[Pending], pending: list[Pending] = pending) -> Any:
                with self._renewing:
                    self.renew_leases(pending)
                return self._send(self.channels[name], chunk)

            def confirmed(name: str, results: list[tuple[Pending, SendResult]]) -> list[Pending]:
                return confirm(results, now)

            if self.concurrent:
                outputs = ChannelLanes(send, confirmed).run(lanes)
            else:
                outputs = [
                    confirmed(name, send(name, chunk))
                    for name, chunks in lanes.items()
                    for chunk in chunks
                ]
            pending = [item for output in outputs for item in output]

    def _lanes(self, pending: list[Pending]) -> dict[str, list[list[Pending]]]:
        """Each channel's chunks, in the order they go out.

        Messages that can share a provider request go out in the same chunks, up to the
        channel's batch; a message that is a request of its own (an empty key) is handed
        over no faster than the rate, so a 1/s policy is 1/s. Confirmed chunk by chunk:
        what is in flight at any moment (and would be ambiguous after a kill) is a chunk
        per channel, and one more sent ahead.
        """
        by_channel: dict[str, list[Pending]] = defaultdict(list)
        for item in pending:
            by_channel[item.message.channel].append(item)
        lanes: dict[str, list[list[Pending]]] = {}
        for name, items in by_channel.items():
            channel = self.channels[name]
            limiter = self.limiters.get(name)
            items.sort(key=lambda item, ch=channel: ch.batch_key(item.message))
            chunks: list[list[Pending]] = []
            for key, group in itertools.groupby(
                items, key=lambda item, ch=channel: ch.batch_key(item.message)
            ):
                members = list(group)
                size = channel.max_batch
                if limiter is not None and not key:
                    size = max(1, min(size, limiter.chunk))
                chunks.extend(members[i : i + size] for i in range(0, len(members), size))
            lanes[name] = chunks
        return lanes

    def renew_leases(self, pending: list[Pending]) -> None:
        """Keep the claims of a long, paced dispatch from expiring while it still sends.

        Past half the lease, every claim of this dispatch still unconfirmed gets a fresh
        lease, so a run started meanwhile does not report them ambiguous.
        """
        wall = self.wall_clock.now()
        if wall - self.claimed_at < self.lease / 2:
            return
        self.claimed_at = wall
        ids = [item.touch_id for item in pending]
        with self.transaction() as conn:
            for start in range(0, len(ids), 500):
                conn.execute(
                    update(_touches)
                    .where(
                        _touches.c.id.in_(ids[start : start + 500]),
                        _touches.c.status.in_(("claimed", "in_flight")),
                    )
                    .values(lease_until=wall + self.lease)
                )

    def _send(self, channel: Channel, chunk: list[Pending]) -> list[tuple[Pending, SendResult]]:
        """One provider request (or one per message): results, ambiguous where unknown."""
        by_id = {item.touch_id: item for item in chunk}
        limiter = self.limiters.get(channel.name)
        if limiter is not None:
            limiter.acquire(len(chunk))
        messages = [item.message for item in chunk]
        try:
            if channel.announces_requests:
                results = channel.send(messages, departing=self._departing)
            else:
                self._departing(messages)
                results = channel.send(messages)
        except NotInFlight as exc:
            return [
                (item, SendResult.failed(item.message, str(exc), permanent=False)) for item in chunk
            ]
        except Exception as exc:  # a channel bug must not lose the ledger's truth
            return [
                (
                    item,
                    SendResult.ambiguous(
                        item.message, f"channel {channel.name} raised {type(exc).__name__}: {exc}"
                    ),
                )
                for item in chunk
            ]
        seen = {result.touch_id for result in results}
        out = [(by_id[result.touch_id], result) for result in results if result.touch_id in by_id]
        for item in chunk:
            if item.touch_id not in seen:
                out.append(
                    (
                        item,
                        SendResult.ambiguous(
                            item.message, f"channel {channel.name} returned no result"
                        ),
                    )
                )
        return out

    def _departing(self, messages: Sequence[OutgoingMessage]) -> None:
        """Record ``messages`` as in flight, immediately before their provider request.

        Called from the channel's worker threads; committed before it returns (requests
        made at the same moment share one commit), so a kill after it leaves them
        ``in_flight`` (reconciled) and a kill before it leaves them ``claimed`` (released).
        Raises :class:`NotInFlight` when they cannot all be marked: no request then.
        """
        self.gate.mark(m.touch_id for m in messages)

    def _mark_in_flight(self, ids: list[int]) -> list[int]:
        """One transaction: ``ids`` still claimed by this run become ``in_flight``."""
        wall = self.wall_clock.now()
        marked: list[int] = []
        with self.transaction() as conn:
            for start in range(0, len(ids), 500):
                marked.extend(
                    conn.execute(
                        update(_touches)
                        .where(
                            _touches.c.id.in_(ids[start : start + 500]),
                            # Again in flight: a request re-sent after a 400 for others.
                            _touches.c.status.in_(("claimed", "in_flight")),
                            _touches.c.run_id == self.run_id,
                        )
                        .values(status="in_flight", lease_until=wall + self.lease)
                        .returning(_touches.c.id)
                    ).scalars()
                )
        return marked


def channel_rate(config: CadenceConfig, channel: Channel) -> float | None:
    """Messages per second for a channel: the policy's limit, capped by the provider's."""
    limit = config.policy.rate_limits.get(channel.name)  # type: ignore[call-overload]
    rates = [r for r in (limit.per_second if limit else None, channel.rate_per_second) if r]
    return min(rates) if rates else None
