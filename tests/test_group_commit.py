"""SendGrid posts that arrive together are stored together, each told exactly its share."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.exc import SQLAlchemyError
from test_serve import NOW, STAMP, config, store  # noqa: F401 (fixtures)

from outreach.events import read_sendgrid_batch
from outreach.group_commit import PostReports, SendGridWriter
from outreach.store.schema import Event

WAIT = 10.0


def item(event_id: str, email: str = "ben@example.com", event: str = "bounce") -> dict:
    return {
        "email": email,
        "timestamp": STAMP - 60,
        "event": event,
        "sg_event_id": event_id,
        "sg_message_id": "m.0",
    }


def read(*items: object):
    return read_sendgrid_batch(json.dumps(list(items)).encode(), now=NOW)


class GatedWriter(SendGridWriter):
    """Holds its first group until released, so that the next posts queue behind it."""

    def __init__(self, engine) -> None:
        super().__init__(engine)
        self.entered, self.release = threading.Event(), threading.Event()
        self.groups: list[int] = []
        self.expect_queued, self.all_queued = 0, threading.Event()

    def _queued(self, waiting: int) -> None:
        if self.expect_queued and waiting >= self.expect_queued:
            self.all_queued.set()

    def _write_group(self, group, now):
        self.groups.append(len(group))
        if len(self.groups) == 1:
            self.entered.set()
            assert self.release.wait(WAIT)
        return super()._write_group(group, now)


def write_together(writer: GatedWriter, posts: list) -> list[PostReports | BaseException]:
    """Write ``posts[0]`` alone (held), the rest queued behind it as one group."""
    results: list[PostReports | BaseException | None] = [None] * len(posts)

    def send(n: int) -> None:
        try:
            results[n] = writer.write(posts[n].events, posts[n].deliveries, NOW)
        except BaseException as exc:  # handed to the test
            results[n] = exc

    writer.expect_queued = len(posts) - 1
    first = threading.Thread(target=send, args=(0,))
    first.start()
    assert writer.entered.wait(WAIT)
    others = [threading.Thread(target=send, args=(n,)) for n in range(1, len(posts))]
    for thread in others:
        thread.start()
    assert writer.all_queued.wait(WAIT)  # all queued behind the held group
    writer.release.set()
    for thread in [first, *others]:
        thread.join(WAIT)
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


def counts(report: PostReports) -> tuple:
    e, d = report.events, report.deliveries
    return (e.read, e.recorded, e.duplicates, len(e.unmatched), len(e.bad), d.read, d.ignored)


def test_a_group_is_one_write_and_each_post_gets_its_own_counts(store) -> None:  # noqa: F811
    writer = GatedWriter(store)
    posts = [
        read(item("first")),
        read(item("a1"), item("a2")),
        read(item("a2"), item("b1", "hal@example.com", "spamreport")),  # a2: the post before
        read(item("first"), item("c1", "stranger@example.org"), 5),  # stored; no one; bad
        read({**item("d1"), "event": "open", "touch_id": 999999}),  # a delivery of no touch
    ]
    results = write_together(writer, posts)
    assert writer.groups == [1, 4]
    assert [counts(r) for r in results] == [  # type: ignore[arg-type]
        (1, 1, 0, 0, 0, 0, []),
        (2, 2, 0, 0, 0, 0, []),
        (2, 1, 1, 0, 0, 0, []),
        (3, 0, 1, 1, 1, 0, []),
        (0, 0, 0, 0, 0, 1, [results[4].deliveries.ignored[0]]),  # type: ignore[union-attr]
    ]
    fourth = results[3]
    assert isinstance(fourth, PostReports)
    # Places are the post's own, without the group's numbering.
    assert fourth.events.unmatched[0].startswith("[1]")
    assert fourth.events.bad[0].startswith("[2]")
    assert "999999" in results[4].deliveries.ignored[0]  # type: ignore[union-attr]
    with store.connect() as conn:
        ids = {p["id"] for p in conn.execute(select(Event.payload)).scalars() if p and "id" in p}
    assert {"first", "a1", "a2", "b1"} <= ids and "c1" not in ids


def test_a_failed_group_write_fails_every_post_of_the_group(tmp_path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'empty.db'}")  # no schema: writes fail
    writer = GatedWriter(engine)
    posts = [read(item(f"x{n}")) for n in range(3)]
    results = write_together(writer, posts)
    assert writer.groups == [1, 2, 1, 1]  # the failed group's posts tried again alone
    assert all(isinstance(r, SQLAlchemyError) for r in results), results
    # The writer is free again afterwards.
    with pytest.raises(SQLAlchemyError):
        writer.write(posts[0].events, posts[0].deliveries, NOW + timedelta(seconds=1))
    engine.dispose()


def test_a_post_the_store_refuses_fails_alone_not_its_group(store) -> None:  # noqa: F811
    # The store refuses any write holding the poisoned event (as a constraint or a driver
    # error would); the posts that arrived with it are written on their own and stored.
    class Refusing(GatedWriter):
        def _write_group(self, group, now):
            if any(where for post in group for where, e in post.events if _poisoned(e)):
                self.groups.append(len(group))
                raise SQLAlchemyError("refused")
            return super()._write_group(group, now)

    def _poisoned(event) -> bool:
        return getattr(event, "address", None) == "poison@example.com"

    writer = Refusing(store)
    posts = [
        read(item("g0")),
        read(item("g1")),
        read(item("bad", "poison@example.com")),
        read(item("g2")),
    ]
    results = write_together(writer, posts)
    assert isinstance(results[2], SQLAlchemyError)
    assert all(isinstance(results[n], PostReports) for n in (0, 1, 3)), results
    assert [results[n].events.recorded for n in (0, 1, 3)] == [1, 1, 1]  # type: ignore[union-attr]
    with store.connect() as conn:
        ids = {p["id"] for p in conn.execute(select(Event.payload)).scalars() if p and "id" in p}
    assert {"g0", "g1", "g2"} <= ids and "bad" not in ids


def test_a_post_alone_is_written_alone(store) -> None:  # noqa: F811
    writer = SendGridWriter(store)
    report = writer.write(read(item("solo"), item("solo")).events, [], NOW)
    assert (report.events.recorded, report.events.duplicates) == (1, 1)
