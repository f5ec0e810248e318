"""Group commit for in-flight marks: the channel's worker threads each wait until their
request's touches are durably ``in_flight``, and those who arrive while a commit is under
way share the next one.

A request is made only after its own mark has committed (so a kill never leaves a request
on the wire that the ledger calls ``claimed``), but eight workers sending one message each
need not pay for eight transactions: the first to arrive commits for itself; whoever
arrives meanwhile queues, and the next leader commits the whole queue at once.

Example::

    gate = FlightGate(lambda ids: mark_in_db(ids))   # returns the ids it marked
    gate.mark([17, 18])   # returns once committed; raises NotInFlight otherwise
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

__all__ = ["ChannelLanes", "FlightGate", "NotInFlight"]


class NotInFlight(Exception):
    """The touches of a request could not be recorded as in flight: it is not made."""


class _Ticket:
    __slots__ = ("done", "error", "ids")

    def __init__(self, ids: frozenset[int]) -> None:
        self.ids = ids
        self.done = False
        self.error: NotInFlight | None = None


class FlightGate:
    """Marks touches in flight with one commit per group of concurrent callers.

    ``commit(ids)`` writes the marks for ``ids`` in one transaction and returns the ids it
    actually marked (a touch no longer claimed by this run is left out); it may raise.
    """

    def __init__(self, commit: Callable[[list[int]], Iterable[int]]) -> None:
        self._commit = commit
        self._cond = threading.Condition()
        self._queue: list[_Ticket] = []
        self._leading = False

    def mark(self, ids: Iterable[int]) -> None:
        """Return once every id is committed as in flight; raise :class:`NotInFlight`."""
        ticket = _Ticket(frozenset(ids))
        with self._cond:
            self._queue.append(ticket)
            self._cond.notify_all()  # whoever watches the queue (tests) sees it grow
            while not ticket.done and self._leading:
                self._cond.wait()
            if ticket.done:
                return self._outcome(ticket)
            self._leading = True
            group, self._queue = self._queue, []
        try:
            self._lead(group)
        finally:
            with self._cond:
                self._leading = False
                self._cond.notify_all()
        return self._outcome(ticket)

    def _lead(self, group: list[_Ticket]) -> None:
        wanted = sorted(set().union(*(t.ids for t in group)))
        try:
            marked = set(self._commit(wanted))
        except Exception as exc:
            error = NotInFlight(
                f"could not record the request as in flight ({type(exc).__name__}); not sent"
            )
            error.__cause__ = exc
            for ticket in group:
                ticket.error = error
                ticket.done = True
            return
        for ticket in group:
            missing = len(ticket.ids - marked)
            if missing:
                ticket.error = NotInFlight(
                    f"{missing} of {len(ticket.ids)} touches were no longer claimed by this "
                    "run; not sent"
                )
            ticket.done = True

    @staticmethod
    def _outcome(ticket: _Ticket) -> None:
        if ticket.error is not None:
            raise ticket.error


class ChannelLanes:
    """Sends each channel's chunks on a thread of its own while the caller confirms.

    The tick used to send a chunk, confirm it, then send the next, one channel after the
    other: the provider idled while the ledger was written, and SendGrid idled while
    Twilio worked. Here every channel (``lanes``: name -> its chunks, in order) gets a
    sender thread that hands its results to the calling thread, which confirms them one
    chunk at a time, in the order they finish. A lane sends at most ``ahead`` chunks
    beyond those confirmed, so what is sent but not yet confirmed (and would be reconciled
    after a kill) stays bounded; confirms stay on the caller's thread, which owns the
    summary and the ledger writes.

    ``send(name, chunk)`` runs on the lane's thread and must return, never raise (the
    tick's ``_send`` turns any channel failure into results); ``confirm(name, results)``
    runs on the calling thread. :meth:`run` returns the confirms' outputs in the order
    they were made.

    Example::

        outputs = ChannelLanes(send, confirm).run({"email": [c1, c2], "sms": [c3]})
    """

    def __init__(
        self,
        send: Callable[[str, Any], Any],
        confirm: Callable[[str, Any], Any],
        *,
        ahead: int = 1,
    ) -> None:
        self._send = send
        self._confirm = confirm
        self._ahead = max(0, ahead)

    def run(self, lanes: Mapping[str, Sequence[Any]]) -> list[Any]:
        """Send every lane's chunks, confirm each result; the confirms' outputs."""
        busy = {name: chunks for name, chunks in lanes.items() if chunks}
        if len(busy) <= 1 and self._ahead == 0:
            return [self._confirm(n, self._send(n, c)) for n, cs in busy.items() for c in cs]
        done: queue.SimpleQueue[tuple[str, Any, BaseException | None]] = queue.SimpleQueue()
        credits = {name: threading.Semaphore(1 + self._ahead) for name in busy}
        stop = threading.Event()

        def lane(name: str, chunks: Sequence[Any]) -> None:
            for chunk in chunks:
                credits[name].acquire()
                if stop.is_set():
                    break
                try:
                    done.put((name, self._send(name, chunk), None))
                except BaseException as exc:  # handed to the caller, which re-raises
                    done.put((name, None, exc))
                    return

        threads = [
            threading.Thread(target=lane, args=(name, chunks), name=f"lane-{name}", daemon=True)
            for name, chunks in busy.items()
        ]
        for thread in threads:
            thread.start()
        outputs: list[Any] = []
        remaining = sum(len(chunks) for chunks in busy.values())
        try:
            while remaining:
                name, results, error = done.get()
                if error is not None:
                    raise error
                remaining -= 1
                try:
                    outputs.append(self._confirm(name, results))
                finally:
                    credits[name].release()
        finally:
            stop.set()
            for semaphore in credits.values():
                semaphore.release()
            for thread in threads:
                thread.join()
        return outputs
