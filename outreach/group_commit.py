"""Group commit for SendGrid Event Webhook posts: posts that arrive together are stored
together.

``outreach serve`` answers several posts at once (one per worker thread). Stored one by
one, each post costs its own transaction and its own handful of statements (look up the
keys already stored, the contact points, the suppression list; insert), and on SQLite the
writes queue behind one lock anyway. :class:`SendGridWriter` lets the first post that finds
the store free write every post queued behind it in one
:func:`outreach.events.ingest_events` and one :func:`outreach.events.ingest_deliveries`
call, then hands each post its own share of the reports. A post is answered only after the
transactions that hold its events have committed (a 2xx still means stored). A group is not
one transaction: ``ingest_events`` commits every 500 items and the delivery events are a
second one, so a failed group may leave part of itself stored; the dedupe keys make the
retry of that part record nothing twice. When a group's write fails, each of its posts is
written again on its own, so one post the store refuses does not fail the posts that
happened to arrive with it; a post whose own write fails gets the error (and answers 503:
SendGrid retries). A post that arrives alone is written alone, exactly as before.

Each post's share is exact: its events' places carry the post's number, so ``unmatched``,
``bad``, ``ignored`` and the duplicates (``duplicate_places``) split by it, and ``recorded``
is what remains of the post's items.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from outreach.events import (
    DeliveryEvent,
    DeliveryReport,
    InboundEvent,
    IngestReport,
    ingest_deliveries,
    ingest_events,
)

__all__ = ["PostReports", "SendGridWriter"]

#: what separates a post's number from an item's place while a group is written
_SEP = "\t"


@dataclass
class _Post:
    events: Sequence[tuple[str, InboundEvent | str]]
    deliveries: Sequence[tuple[str, DeliveryEvent]]
    done: bool = False
    result: PostReports | None = None
    error: BaseException | None = None


@dataclass
class PostReports:
    """What storing one post did: its inbound events and its delivery events."""

    events: IngestReport = field(default_factory=IngestReport)
    deliveries: DeliveryReport = field(default_factory=DeliveryReport)


class SendGridWriter:
    """Stores SendGrid posts, grouping those that arrive while another group is written.

    >>> writer = SendGridWriter(engine, "US")                  # doctest: +SKIP
    >>> reports = writer.write(batch.events, batch.deliveries, now)  # blocks until stored
    """

    def __init__(self, engine: Engine, default_region: str = "US") -> None:
        self.engine = engine
        self.default_region = default_region
        self._cond = threading.Condition()
        self._queue: list[_Post] = []
        self._writing = False

    def write(
        self,
        events: Sequence[tuple[str, InboundEvent | str]],
        deliveries: Sequence[tuple[str, DeliveryEvent]],
        now: datetime,
    ) -> PostReports:
        """Store one post's items; its reports once they are committed. Raises what the
        store raised (``SQLAlchemyError``, ``StoreError``) when the group's write failed."""
        post = _Post(events, deliveries)
        with self._cond:
            self._queue.append(post)
            self._queued(len(self._queue))
            while self._writing and not post.done:
                self._cond.wait()
            if not post.done:
                self._writing = True
                group, self._queue = self._queue, []
        if not post.done:
            try:
                outcomes = self._store(group, now)
            except BaseException as exc:
                with self._cond:
                    for member in group:
                        member.error, member.done = exc, True
                    self._writing = False
                    self._cond.notify_all()
                raise
            with self._cond:
                for member, outcome in zip(group, outcomes, strict=True):
                    if isinstance(outcome, PostReports):
                        member.result = outcome
                    else:
                        member.error = outcome
                    member.done = True
                self._writing = False
                self._cond.notify_all()
        if post.error is not None:
            raise post.error
        assert post.result is not None
        return post.result

    def _store(self, group: list[_Post], now: datetime) -> list[PostReports | Exception]:
        """Each post's reports, or the error its own write raised."""
        try:
            return list(self._write_group(group, now))
        except Exception as exc:
            if len(group) == 1:
                return [exc]
        outcomes: list[PostReports | Exception] = []
        for member in group:
            try:
                outcomes.extend(self._write_group([member], now))
            except Exception as exc:
                outcomes.append(exc)
        return outcomes

    def _queued(self, waiting: int) -> None:
        """Called (under the lock) when a post has joined the queue; a hook for tests."""

    def _write_group(self, group: list[_Post], now: datetime) -> list[PostReports]:
        if len(group) == 1:
            post = group[0]
            return [
                PostReports(
                    ingest_events(
                        self.engine, post.events, now=now, default_region=self.default_region
                    ),
                    ingest_deliveries(self.engine, post.deliveries, now=now),
                )
            ]
        events = ingest_events(
            self.engine,
            [
                (f"{n}{_SEP}{where}", item)
                for n, post in enumerate(group)
                for where, item in post.events
            ],
            now=now,
            default_region=self.default_region,
            report=IngestReport(duplicate_places=[]),
        )
        deliveries = ingest_deliveries(
            self.engine,
            [
                (f"{n}{_SEP}{where}", item)
                for n, post in enumerate(group)
                for where, item in post.deliveries
            ],
            now=now,
            report=DeliveryReport(duplicate_places=[]),
        )
        return _split(group, events, deliveries)


def _split(
    group: list[_Post], events: IngestReport, deliveries: DeliveryReport
) -> list[PostReports]:
    """Each post's share of the group's reports."""
    shares = [PostReports() for _ in group]
    for n, post in enumerate(group):
        shares[n].events.read = len(post.events)
        shares[n].deliveries.read = len(post.deliveries)

    def spread(messages: list[str], pick: Callable[[PostReports], Any]) -> None:
        for message in messages:
            number, _, rest = message.partition(_SEP)
            pick(shares[int(number)]).append(rest)

    spread(events.unmatched, lambda share: share.events.unmatched)
    spread(events.bad, lambda share: share.events.bad)
    spread(deliveries.ignored, lambda share: share.deliveries.ignored)
    spread(deliveries.bad, lambda share: share.deliveries.bad)
    for where in events.duplicate_places or ():
        shares[int(where.partition(_SEP)[0])].events.duplicates += 1
    for where in deliveries.duplicate_places or ():
        shares[int(where.partition(_SEP)[0])].deliveries.duplicates += 1
    for share in shares:
        inbound, delivery = share.events, share.deliveries
        inbound.recorded = (
            inbound.read - inbound.duplicates - len(inbound.unmatched) - len(inbound.bad)
        )
        delivery.recorded = (
            delivery.read - delivery.duplicates - len(delivery.ignored) - len(delivery.bad)
        )
    return shares
