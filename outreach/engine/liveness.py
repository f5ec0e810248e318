"""Is the run that claimed a touch still alive? Locks the operating system or database
releases when a process dies answer at once, where a lease would make a rerun wait.

A run *holds* its liveness for as long as it works: on PostgreSQL a session advisory lock
on a connection of its own, on a SQLite file an exclusive ``flock`` on a small file beside
the database (``<db>.runs/<run id>.lock``). A killed process loses both the instant it
dies, so the next run can tell a dead owner's touches from a live one's and hand them back
without waiting out a 15-minute lease. Where neither works (an in-memory database, another
machine's lock directory), :meth:`Liveness.alive` answers ``None`` and the caller falls
back to the lease.

Example::

    liveness = liveness_for(engine)
    with liveness.hold(run_id):
        ...                                    # claims by run_id are alive here
    liveness.alive(["run-a", "run-b"])         # {"run-a": False, "run-b": None}
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from sqlalchemy import Engine, text

__all__ = ["FileLiveness", "Liveness", "PostgresLiveness", "liveness_for"]


class Liveness:
    """No liveness information: every owner is unknown and leases decide."""

    @contextlib.contextmanager
    def hold(self, run_id: str) -> Iterator[None]:
        """Mark ``run_id`` alive for the duration of the ``with`` block."""
        yield

    def alive(self, run_ids: Iterable[str]) -> dict[str, bool | None]:
        """For each run id: True (running), False (dead), None (cannot tell)."""
        return {run_id: None for run_id in run_ids}


def _key(run_id: str) -> int:
    """A signed 64-bit advisory-lock key for ``run_id``."""
    digest = hashlib.blake2b(f"outreach-run:{run_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class PostgresLiveness(Liveness):
    """Session advisory locks: held on a dedicated connection while the run works."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextlib.contextmanager
    def hold(self, run_id: str) -> Iterator[None]:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _key(run_id)})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _key(run_id)})
                conn.commit()

    def alive(self, run_ids: Iterable[str]) -> dict[str, bool | None]:
        out: dict[str, bool | None] = {}
        ids = [r for r in run_ids if r]
        if not ids:
            return out
        with self.engine.connect() as conn:
            for run_id in ids:
                got = conn.execute(
                    text("SELECT pg_try_advisory_lock(:k)"), {"k": _key(run_id)}
                ).scalar_one()
                if got:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _key(run_id)})
                out[run_id] = not got
            conn.commit()
        return out


class FileLiveness(Liveness):
    """``flock`` on ``directory/<run id>.lock``: one machine, one SQLite file."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, run_id: str) -> Path:
        safe = "".join(ch for ch in run_id if ch.isalnum() or ch == "-")[:64]
        return self.directory / f"{safe}.lock"

    @contextlib.contextmanager
    def hold(self, run_id: str) -> Iterator[None]:
        import fcntl

        try:
            self.directory.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(self._path(run_id), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            yield  # no lock directory: the lease still protects the claims
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            with contextlib.suppress(OSError):
                self._path(run_id).unlink()
            os.close(fd)

    def alive(self, run_ids: Iterable[str]) -> dict[str, bool | None]:
        import fcntl

        out: dict[str, bool | None] = {}
        for run_id in run_ids:
            if not run_id:
                continue
            path = self._path(run_id)
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                # A run removes its file as it ends; none there means it ended or never
                # held one here (another machine): only the lease can tell.
                out[run_id] = None
                continue
            except OSError:
                out[run_id] = None
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                out[run_id] = True
            except OSError:
                out[run_id] = None
            else:
                out[run_id] = False  # a dead run's lock, left behind by the kill
                with contextlib.suppress(OSError):
                    path.unlink()
            finally:
                os.close(fd)
        return out


def liveness_for(engine: Engine) -> Liveness:
    """The liveness check that fits ``engine``'s database."""
    url = engine.url
    if url.get_backend_name() == "postgresql":
        return PostgresLiveness(engine)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        database = Path(url.database)
        if not str(url.database).startswith("file:"):
            return FileLiveness(database.parent / f"{database.name}.runs")
    return Liveness()
