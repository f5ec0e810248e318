"""A channel's worker threads, kept between ``send`` calls.

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
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["WorkerPool"]

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
