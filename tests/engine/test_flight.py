"""The in-flight gate: a request waits for its own mark to commit; concurrent requests
share one commit; a touch that cannot be marked stops only its own request."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from outreach.engine.flight import FlightGate, NotInFlight


def test_one_caller_commits_its_own_ids() -> None:
    commits: list[list[int]] = []
    gate = FlightGate(lambda ids: commits.append(ids) or ids)
    gate.mark([3, 1, 3])
    assert commits == [[1, 3]]


def test_callers_arriving_during_a_commit_share_the_next_one() -> None:
    started, release = threading.Event(), threading.Event()
    commits: list[list[int]] = []

    def commit(ids: list[int]) -> list[int]:
        commits.append(ids)
        if len(commits) == 1:
            started.set()
            assert release.wait(30)
        return ids

    gate = FlightGate(commit)
    with ThreadPoolExecutor(max_workers=6) as pool:
        first = pool.submit(gate.mark, [0])
        assert started.wait(30)
        others = [pool.submit(gate.mark, [i]) for i in range(1, 6)]
        # Everyone else is queued behind the first commit, none has returned.
        with gate._cond:
            assert gate._cond.wait_for(lambda: len(gate._queue) == 5, timeout=30)
        assert not any(f.done() for f in others)
        release.set()
        for future in [first, *others]:
            future.result(timeout=30)
    assert commits == [[0], [1, 2, 3, 4, 5]]


def test_a_touch_no_longer_claimed_stops_only_its_own_request() -> None:
    gate = FlightGate(lambda ids: [i for i in ids if i != 2])
    gate.mark([1])
    with pytest.raises(NotInFlight, match="1 of 2 touches were no longer claimed"):
        gate.mark([2, 3])


def test_a_failed_commit_fails_the_group_and_the_next_caller_tries_again() -> None:
    calls = []

    def commit(ids: list[int]) -> list[int]:
        calls.append(ids)
        if len(calls) == 1:
            raise OSError("database is locked")
        return ids

    gate = FlightGate(commit)
    with pytest.raises(NotInFlight, match=r"could not record .* \(OSError\); not sent"):
        gate.mark([1])
    gate.mark([1])
    assert calls == [[1], [1]]
