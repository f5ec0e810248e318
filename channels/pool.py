"""A channel's worker threads, kept between ``send`` calls, and the in-flight records
they wait for (:class:`Departures`).

A channel sends the requests of one ``send`` on at most ``workers`` threads at once (the
concurrency each provider is asked to bear). Starting those threads anew for every call
costs more than a request on loopback when the engine hands over small chunks, so the
threads are started once, on first use, and kept until :meth:`WorkerPool.close`.

Example::

    pool = WorkerPool(8, "sendgrid")
    results = pool.map(send_one, requests)   # in order, at most 8 at a time
    pool.close()                              # a later map starts new threads
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["Departures", "WorkerPool"]

T = TypeVar("T")
R = TypeVar("R")


class WorkerPool:
    """At most ``workers`` threads named ``name``-N, started on demand, shared by calls."""

    def __init__(self, workers: int, name: str) -> None:
        self.workers = max(1, workers)
        self.name = name
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    def map(self, work: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """``work`` over ``items`` on the pool's threads; the results in ``items``' order.

        A single item runs on the calling thread (no hand-over is cheaper)."""
        items = list(items)
        if len(items) <= 1 or self.workers == 1:
            return [work(item) for item in items]
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=self.workers, thread_name_prefix=self.name
                )
            executor = self._executor
        return list(executor.map(work, items))

    def close(self) -> None:
        """Stop the threads once their work is done; safe to call again."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)


class Departures:
    """Records the requests of one ``send`` in flight a window at a time, ahead of the
    workers that make them.

    The engine must have a request's touches committed ``in_flight`` before the request
    leaves (``departing``). Calling it once per request costs a transaction per message;
    with ``workers`` requests in the air at once, their touches may as well be recorded
    together: when a worker needs request ``i`` recorded and it is not yet, the requests
    ``i`` to ``i + window - 1`` (in the order the workers take them) are recorded in one
    call. The channels use a window of twice their workers: a kill then leaves at most
    that many requests in flight that had not left yet, besides the ``workers`` whose
    answer was lost; all of them are reconciled with the provider (which finds the
    first kind absent, so they are sent then), never re-sent blindly. The first request
    is recorded alone, since it goes alone (a wrong key costs one request).

    Example::

        departures = Departures(departing, requests, window=8)
        departures.depart(5)   # returns once request 5 is in flight; raises otherwise
    """

    def __init__(
        self,
        departing: Callable[[list[Any]], None],
        requests: Sequence[Sequence[Any]],
        window: int,
    ) -> None:
        self._departing = departing
        self._requests = requests
        self._window = max(1, window)
        self._lock = threading.Lock()
        self._recorded = 0  # requests [0, _recorded) have been handed to ``departing``
        self._errors: list[tuple[int, int, Exception]] = []

    def depart(self, index: int) -> None:
        """Return once request ``index`` is recorded in flight; raise what ``departing``
        raised for its window (the request must then not be made)."""
        with self._lock:
            while index >= self._recorded:
                start = self._recorded
                end = min(len(self._requests), start + (1 if start == 0 else self._window))
                messages = [m for request in self._requests[start:end] for m in request]
                self._recorded = end
                try:
                    self._departing(messages)
                except Exception as exc:
                    self._errors.append((start, end, exc))
            for start, end, exc in self._errors:
                if start <= index < end:
                    raise exc
