"""The in-flight gate: a request waits for its own mark to commit; concurrent requests
share one commit; a touch that cannot be marked stops only its own request."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from outreach.engine.flight import ChannelLanes, FlightGate, NotInFlight


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


# -- lanes: each channel sends on its own thread, the caller confirms ---------------------


def test_lanes_send_every_chunk_and_confirm_each_on_the_calling_thread() -> None:
    caller = threading.get_ident()
    sent: list[tuple[str, int, int]] = []
    confirmed: list[tuple[str, list[int]]] = []

    def send(name: str, chunk: list[int]) -> list[int]:
        sent.append((name, chunk[0], threading.current_thread().name))
        return [x * 10 for x in chunk]

    def confirm(name: str, results: list[int]) -> int:
        assert threading.get_ident() == caller
        confirmed.append((name, results))
        return len(results)

    lanes = {"email": [[1, 2], [3]], "sms": [[4], [5, 6], [7]], "off": []}
    outputs = ChannelLanes(send, confirm).run(lanes)

    assert sorted(outputs) == [1, 1, 1, 2, 2]
    assert sorted(confirmed) == [
        ("email", [10, 20]),
        ("email", [30]),
        ("sms", [40]),
        ("sms", [50, 60]),
        ("sms", [70]),
    ]
    # each lane in its own order, on a thread of its own
    assert [c for n, c, _ in sent if n == "email"] == [1, 3]
    assert [c for n, c, _ in sent if n == "sms"] == [4, 5, 7]
    assert {(n, t) for n, _, t in sent} == {("email", "lane-email"), ("sms", "lane-sms")}


def test_a_lane_sends_at_most_one_chunk_beyond_those_confirmed() -> None:
    second_sent = threading.Event()
    sent: list[int] = []
    seen_while_confirming: list[list[int]] = []

    def send(name: str, chunk: int) -> int:
        sent.append(chunk)
        if chunk == 1:
            second_sent.set()
        return chunk

    def confirm(name: str, chunk: int) -> int:
        if chunk == 0:
            # while the first is being confirmed the lane sends the second, not a third
            assert second_sent.wait(30)
            seen_while_confirming.append(list(sent))
        return chunk

    assert ChannelLanes(send, confirm, ahead=1).run({"sms": [0, 1, 2, 3]}) == [0, 1, 2, 3]
    assert seen_while_confirming == [[0, 1]]


def test_a_failed_confirm_stops_the_lanes_and_is_raised() -> None:
    sent: list[int] = []

    def send(name: str, chunk: int) -> int:
        sent.append(chunk)
        return chunk

    def confirm(name: str, chunk: int) -> int:
        raise OSError("database is locked")

    with pytest.raises(OSError, match="database is locked"):
        ChannelLanes(send, confirm).run({"sms": list(range(50))})
    assert len(sent) <= 3  # the lane stopped instead of sending everything
