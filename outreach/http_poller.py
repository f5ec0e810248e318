"""An event loop step for waitress that costs little per *idle* connection.

Waitress's own step (``wasyncore.poll2``) builds a new ``poll()`` set on every turn of the
loop by asking every connection whether it wants to read or write: with 1,000 slow clients
holding connections open that is about 0.5 ms per turn, and a busy server turns thousands
of times a second. :class:`QuietPoller` keeps one ``epoll`` registration per connection and
asks only the connections that can have changed: those that had an event on the last turn,
those that were handed to a worker thread (:meth:`QuietPoller.watch`) until they are
settled again (on the turns after a wake-up: a worker changes a connection, then pulls
waitress's trigger, an object of the loop that is not a connection), the objects that are
not connections (the listening socket, the wake-up pipe), and every connection on a
periodic sweep (``sweep_every`` seconds), so nothing can be missed for longer than that.

A connection is *settled* when its ``settled()`` method says so (nothing queued, running or
waiting to be sent); objects without that method are asked on every turn.
"""

from __future__ import annotations

import contextlib
import select
import threading
import time
from typing import Any

from waitress.wasyncore import readwrite

__all__ = ["QuietPoller"]

_READ = select.POLLIN | select.POLLPRI
_WRITE = select.POLLOUT


class QuietPoller:
    """One loop step over ``socket_map`` (fd -> dispatcher), as ``wasyncore.poll2`` does."""

    def __init__(self, socket_map: dict[int, Any], sweep_every: float = 0.25) -> None:
        self._map = socket_map
        self._epoll = select.epoll()
        self._registered: dict[int, tuple[Any, int]] = {}
        self._sweep_every = sweep_every
        self._next_sweep = 0.0
        self._lock = threading.Lock()
        self._watched: set[Any] = set()
        self._always: list[Any] = []
        self._last: list[Any] = []
        self._woken = True
        self._watch_now = False

    def watch(self, obj: Any) -> None:
        """Ask ``obj`` after each wake-up until it is settled (thread-safe)."""
        with self._lock:
            self._watched.add(obj)
        self._watch_now = True

    def close(self) -> None:
        """Release the ``epoll`` object."""
        self._epoll.close()

    def poll(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for events and handle them."""
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + self._sweep_every
            objects = list(self._map.values())
            self._always = [obj for obj in objects if not hasattr(obj, "settled")]
            self._forget_closed()
        elif self._woken:
            with self._lock:
                watched = list(self._watched)
            objects = [*self._always, *watched, *self._last]
        else:
            objects = [*self._always, *self._last]
        settled = []
        for obj in objects:
            fd = obj._fileno
            if fd is None or self._map.get(fd) is not obj:
                settled.append(obj)  # closed: nothing more to ask it
                continue
            flags = 0
            if obj.readable():
                flags = _READ
            if obj.writable() and not obj.accepting:
                flags |= _WRITE
            self._register(fd, obj, flags)
            check = getattr(obj, "settled", None)
            if check is not None and check():
                settled.append(obj)
        if settled:
            with self._lock:
                self._watched.difference_update(settled)
        try:
            events = self._epoll.poll(timeout)
        except InterruptedError:
            events = []
        last, woken = [], bool(self._watch_now)
        for fd, flags in events:
            obj = self._map.get(fd)
            if obj is None:
                continue
            readwrite(obj, flags)
            last.append(obj)
            woken = woken or not hasattr(obj, "settled")
        self._last = last
        self._woken = woken
        self._watch_now = False

    def _register(self, fd: int, obj: Any, flags: int) -> None:
        old = self._registered.get(fd)
        if old is not None and old[0] is obj and old[1] == flags:
            return
        if not flags:
            if old is not None:
                del self._registered[fd]
                with contextlib.suppress(OSError):
                    self._epoll.unregister(fd)
            return
        self._registered[fd] = (obj, flags)
        try:
            self._epoll.modify(fd, flags)
        except FileNotFoundError:  # new, or an fd number a closed socket used before
            self._epoll.register(fd, flags)

    def _forget_closed(self) -> None:
        with self._lock:
            # A connection closed while watched (Connection: close, a 413) is dropped here
            # at the latest, so the watched set stays as large as the open connections.
            self._watched = {
                obj
                for obj in self._watched
                if obj._fileno is not None and self._map.get(obj._fileno) is obj
            }
        for fd, (obj, _) in list(self._registered.items()):
            if self._map.get(fd) is not obj:
                del self._registered[fd]
                with contextlib.suppress(OSError):
                    self._epoll.unregister(fd)
