"""The channels' worker pool and their in-flight windows (:mod:`channels.pool`)."""

from __future__ import annotations

import threading

import pytest

from channels.pool import Departures, WorkerPool


def test_the_pool_keeps_its_threads_between_calls_and_returns_results_in_order() -> None:
    pool = WorkerPool(4, "test")
    seen: set[int] = set()

    def work(item: int) -> int:
        seen.add(threading.get_ident())
        return item * 2

    try:
        assert pool.map(work, range(50)) == [i * 2 for i in range(50)]
        first = set(seen)
        assert pool.map(work, range(50)) == [i * 2 for i in range(50)]
    finally:
        pool.close()
    # Kept between calls: both calls together ran on at most four threads, those of the
    # first among them (the executor may start one it had not needed yet on the second).
    assert first <= seen and len(seen) <= 4
    assert threading.get_ident() not in seen


def test_a_single_item_runs_on_the_calling_thread_and_close_can_repeat() -> None:
    pool = WorkerPool(4, "test")
    assert pool.map(lambda _: threading.get_ident(), [1]) == [threading.get_ident()]
    pool.close()
    pool.close()
    assert pool.map(lambda x: x + 1, [1, 2, 3]) == [2, 3, 4]  # new threads after close
    pool.close()


def test_requests_are_recorded_a_window_at_a_time_the_first_alone() -> None:
    calls: list[list[str]] = []
    requests = [[f"m{i}"] for i in range(10)]
    departures = Departures(calls.append, requests, window=4)

    for index in range(10):
        departures.depart(index)

    assert calls == [["m0"], ["m1", "m2", "m3", "m4"], ["m5", "m6", "m7", "m8"], ["m9"]]


def test_a_request_ahead_of_the_window_records_everything_before_it() -> None:
    calls: list[list[str]] = []
    departures = Departures(calls.append, [[f"m{i}"] for i in range(6)], window=2)

    departures.depart(4)
    departures.depart(1)

    assert calls == [["m0"], ["m1", "m2"], ["m3", "m4"]]


def test_a_failed_record_fails_exactly_the_requests_of_its_window() -> None:
    def departing(messages: list[str]) -> None:
        if "m2" in messages:
            raise RuntimeError("not in flight")

    departures = Departures(departing, [[f"m{i}"] for i in range(6)], window=2)

    departures.depart(0)
    for index in (1, 2):
        with pytest.raises(RuntimeError, match="not in flight"):
            departures.depart(index)
    departures.depart(3)  # the next window is recorded anew
    departures.depart(5)


def test_concurrent_workers_record_each_request_once() -> None:
    recorded: list[str] = []
    lock = threading.Lock()

    def departing(messages: list[str]) -> None:
        with lock:
            recorded.extend(messages)

    requests = [[f"m{i}", f"n{i}"] for i in range(200)]
    departures = Departures(departing, requests, window=16)
    pool = WorkerPool(8, "test")
    try:
        pool.map(departures.depart, range(200))
    finally:
        pool.close()

    assert sorted(recorded) == sorted(m for request in requests for m in request)
