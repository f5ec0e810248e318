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

import threading
from collections.abc import Callable, Iterable

__all__ = ["FlightGate", "NotInFlight"]


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
