"""The production HTTP server under ``outreach serve``: waitress, with a read deadline and a
draining shutdown.

Why waitress. The receiver faces the internet, so a client that opens a connection and
sends a few bytes a minute must cost a socket, not a thread. Waitress reads every request
in one asyncore loop (``poll()``, so past 1,024 descriptors too) and hands a worker thread
only a request that has fully arrived, buffered in memory or, past ``inbuf_overflow``, in a
temporary file; it caps connections (``connection_limit``), header and body sizes (431 and
413 before the app runs) and runs the app on a fixed pool of threads. It is pure Python,
WSGI, and maintained (Pylons). The others looked at:

* gunicorn ``sync``/``gthread`` workers read the request in the worker thread, so each
  slow client holds a thread for as long as its ``--timeout`` lets it (the failure this
  replaces); its ``gevent``/``eventlet`` workers would need a monkey-patched process.
* uvicorn and hypercorn are ASGI servers: ``WebhookApp`` is WSGI and its work (SQLAlchemy,
  ECDSA) is blocking, so it would run through a WSGI adapter in a thread pool anyway.
* cheroot waits for idle keep-alive connections with selectors but reads a request's
  headers and body in the worker thread: a dribbling client again holds a thread.

What waitress lacks is added here:

* A **read deadline**: waitress only closes a connection that has been *silent* for
  ``channel_timeout``; one byte every few seconds keeps it open forever. :class:`_Channel`
  notes when a request's first byte arrived, and the server's periodic maintenance closes a
  connection whose request has not fully arrived ``read_timeout`` seconds later (and, as
  waitress does, one idle that long between requests).
* A **draining shutdown**: waitress stops by killing its loop. :meth:`WebhookServer.stop`
  closes the listening socket (new connections are refused), closes idle and half-read
  connections, lets every request that fully arrived run to its answer and that answer
  reach the client, and only then ends the worker threads. A request the app answered 2xx
  has been stored before the answer was written, so nothing acknowledged is lost; a
  request still arriving when the stop came was never acknowledged and the provider
  retries it.

The access log (INFO) carries the method, the path (a rating token redacted) and the
status, never a query string or a client's data.
"""

from __future__ import annotations

import contextlib
import logging
import resource
import select
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer

from outreach.http_poller import QuietPoller
from outreach.ratings import redact_rating_path

__all__ = ["ServerLimits", "WebhookServer", "raise_open_files_limit", "serve"]

log = logging.getLogger("outreach.serve")

#: the asyncore loop wakes at least this often (seconds) to run maintenance
_LOOP_TIMEOUT = 1.0


@dataclass(frozen=True)
class ServerLimits:
    """What one ``outreach serve`` process allows its clients.

    ``read_timeout``: seconds from a request's first byte until it must have fully arrived,
    and how long a connection may sit idle between requests. ``connection_limit``: open
    connections at most (past it the server stops accepting until some close).
    ``threads``: requests run at once. ``max_header_bytes`` (431 past it) and
    ``max_body_bytes`` (413 past it) are checked while the request arrives, before the app
    sees it; the app keeps its own per-route body limits below this one. ``drain_timeout``:
    how long a stop waits for requests in flight.
    """

    threads: int = 8
    connection_limit: int = 10_000
    read_timeout: float = 30.0
    max_header_bytes: int = 64 * 1024
    max_body_bytes: int = 40 * 1024 * 1024
    backlog: int = 2048
    drain_timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ValueError("threads must be at least 1")
        if self.connection_limit < 1:
            raise ValueError("connection_limit must be at least 1")
        if self.read_timeout <= 0 or self.drain_timeout <= 0:
            raise ValueError("read_timeout and drain_timeout must be positive")
        if self.max_header_bytes < 1024 or self.max_body_bytes < 1:
            raise ValueError("max_header_bytes must be at least 1024, max_body_bytes positive")

    @property
    def cleanup_interval(self) -> float:
        """How often the deadlines are checked: a tenth of the read timeout, at most 1 s,
        so a slow client is cut off within ``read_timeout`` plus a little."""
        return min(1.0, max(0.05, self.read_timeout / 10))


class _Channel(HTTPChannel):
    """One client connection; remembers when the request being read began to arrive."""

    #: ``time.monotonic()`` of the first byte of the request not yet fully read, else None
    read_started: float | None = None

    def received(self, data: bytes) -> bool:
        """Read ``data`` (waitress parses it) and track the partial request's start."""
        before = self.request
        result = super().received(data)
        if self.request is None:
            self.read_started = None
        elif self.request is not before:
            self.read_started = time.monotonic()
        return result

    def busy(self) -> bool:
        """Whether a request that fully arrived is queued, running or still being sent."""
        return bool(self.requests) or bool(self.total_outbufs_len)

    def settled(self) -> bool:
        """Whether only new bytes from the client can change what this connection waits
        for (see :class:`outreach.http_poller.QuietPoller`)."""
        return not (
            self.requests or self.total_outbufs_len or self.will_close or self.close_when_flushed
        )

    def add_channel(self, map: dict[int, Any] | None = None) -> None:
        """Register the new connection, and have the poller look at it."""
        super().add_channel(map)
        poller = getattr(self.server, "poller", None)
        if poller is not None:
            poller.watch(self)


class _Server(TcpWSGIServer):
    """Waitress's TCP server with the read deadline and a draining stop."""

    channel_class = _Channel

    def __init__(self, app: Callable[..., Any], adj: Adjustments, read_timeout: float) -> None:
        self.read_timeout = read_timeout
        self.poller: QuietPoller | None = None
        super().__init__(app, map={}, adj=adj)
        if hasattr(select, "epoll"):
            self.poller = QuietPoller(self._map)

    def add_task(self, task: Any) -> None:
        """Queue a connection's request for a worker; watch it until it is answered."""
        if self.poller is not None:
            self.poller.watch(task)
        super().add_task(task)

    def poll(self, timeout: float) -> None:
        """One turn of the loop."""
        if self.poller is not None:
            self.poller.poll(timeout)
        else:
            wasyncore.poll2(timeout, self._map)

    def maintenance(self, now: float) -> None:
        """Close connections idle too long (waitress) or too slow to send a request."""
        super().maintenance(now)
        cutoff = time.monotonic() - self.read_timeout
        slow = 0
        for channel in list(self.active_channels.values()):
            started = getattr(channel, "read_started", None)
            if started is not None and started < cutoff and not channel.requests:
                channel.read_started = None
                channel.will_close = True
                slow += 1
        if slow:
            log.info(
                "server: closing %d connections whose request took over %ss to arrive",
                slow,
                f"{self.read_timeout:g}",
            )

    def channels(self) -> Iterable[_Channel]:
        """The open client connections."""
        return list(self.active_channels.values())


def _access_log(app: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``app`` to log method, path and status of every request (no query string)."""

    def logged(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if log.isEnabledFor(logging.INFO):
                path = redact_rating_path(environ.get("PATH_INFO", ""))
                log.info("%s %s %s", environ.get("REQUEST_METHOD"), path, status[:3])
            return start_response(status, headers, exc_info)

        return app(environ, start)

    return logged


class WebhookServer:
    """``app`` on ``host``:``port`` behind waitress, bound at construction.

    >>> server = WebhookServer(app, "127.0.0.1", 0)   # doctest: +SKIP
    >>> threading.Thread(target=server.run).start()   # serves until stop()
    >>> server.stop()                                  # drains, then run() returns

    Raises :class:`OSError` when the address cannot be bound.
    """

    def __init__(
        self,
        app: Callable[..., Any],
        host: str,
        port: int,
        limits: ServerLimits | None = None,
    ) -> None:
        self.limits = limits or ServerLimits()
        adj = Adjustments(
            host=host,
            port=port,
            threads=self.limits.threads,
            # waitress counts every descriptor of its loop: the listening socket and the
            # wake-up pipe too
            connection_limit=self.limits.connection_limit + 2,
            channel_timeout=max(1, round(self.limits.read_timeout)),
            cleanup_interval=1,  # replaced below: waitress wants an int
            max_request_header_size=self.limits.max_header_bytes,
            max_request_body_size=self.limits.max_body_bytes,
            backlog=self.limits.backlog,
            asyncore_use_poll=True,
            ident="outreach",
            expose_tracebacks=False,
            log_socket_errors=False,
        )
        adj.cleanup_interval = self.limits.cleanup_interval  # type: ignore[assignment]
        adj.channel_timeout = self.limits.read_timeout  # type: ignore[assignment]
        self._server = _Server(_access_log(app), adj, self.limits.read_timeout)
        # "Task queue depth is N" on every request that waits for a thread is noise under
        # load; the access log and the load test show queueing as latency.
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        #: set once a stop has closed the listening socket (new connections are refused)
        self.draining = threading.Event()

    @property
    def port(self) -> int:
        """The bound port (the one picked when ``port`` was 0)."""
        return int(self._server.effective_port)

    def run(self) -> None:
        """Serve until :meth:`stop`, then drain and close. Blocks; call it once."""
        server = self._server
        try:
            while not self._stopping.is_set():
                server.poll(min(_LOOP_TIMEOUT, self.limits.cleanup_interval))
            self._drain()
        finally:
            self._close_all()
            # Workers are idle once drained; past the drain timeout they are abandoned
            # (daemon threads) and the requests they hold were never answered.
            server.task_dispatcher.shutdown(cancel_pending=True, timeout=1)
            if server.poller is not None:
                server.poller.close()
            self._stopped.set()

    def stop(self) -> None:
        """Ask :meth:`run` to stop accepting, finish what arrived, and return. Thread-safe."""
        self._stopping.set()
        with contextlib.suppress(OSError):  # the loop has closed already
            self._server.pull_trigger()

    def wait_stopped(self, timeout: float | None = None) -> bool:
        """Wait until :meth:`run` has returned; whether it did within ``timeout``."""
        return self._stopped.wait(timeout)

    def _drain(self) -> None:
        server = self._server
        # Stop listening first, so that the port refuses new connections at once.
        server.accepting = False
        server.del_channel()
        server.socket.close()
        self.draining.set()
        deadline = time.monotonic() + self.limits.drain_timeout
        while True:
            busy = 0
            for channel in server.channels():
                if channel.busy():
                    busy += 1
                    # answer this request, then close: no new request on this connection
                    channel.close_when_flushed = channel.close_when_flushed or not channel.requests
                elif not channel.will_close:
                    channel.will_close = True  # idle, or a request that never fully arrived
            if not busy:
                return
            if time.monotonic() >= deadline:
                log.warning(
                    "server: stopped with %d requests unanswered after %ss",
                    busy,
                    f"{self.limits.drain_timeout:g}",
                )
                return
            wasyncore.poll2(0.05, server._map)

    def _close_all(self) -> None:
        server = self._server
        for channel in server.channels():
            with contextlib.suppress(OSError):
                channel.handle_close()
        server.accepting = False
        with contextlib.suppress(OSError):
            server.close()
        # the trigger's pipe is in the map too; close whatever is left
        wasyncore.close_all(server._map)


def raise_open_files_limit(wanted: int) -> int:
    """Raise this process's soft limit of open files towards ``wanted`` (at most the hard
    limit), so the connection limit is not cut short by ``EMFILE``; the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
        return target
    return soft


def serve(
    app: Callable[..., Any],
    host: str,
    port: int,
    stop: threading.Event | None = None,
    *,
    on_ready: Callable[[int], None] | None = None,
    limits: ServerLimits | None = None,
) -> None:
    """Serve ``app`` on ``host``:``port`` until ``stop`` is set, then drain and return.

    Blocks. ``on_ready(port)`` is called once the socket is bound (``port=0`` picks a free
    one). Without ``stop`` it runs until interrupted (``KeyboardInterrupt``). A stop lets
    every request that fully arrived finish and reach its client (see the module
    docstring). Raises :class:`OSError` when the address cannot be bound.
    """
    server = WebhookServer(app, host, port, limits)
    watcher: threading.Thread | None = None
    done = threading.Event()
    if stop is not None:

        def _watch() -> None:
            while not stop.wait(0.5):
                if done.is_set():
                    return
            server.stop()

        watcher = threading.Thread(target=_watch, name="outreach-serve-stop", daemon=True)
        watcher.start()
    if on_ready is not None:
        on_ready(server.port)
    try:
        server.run()
    except KeyboardInterrupt:
        server.stop()
    finally:
        done.set()
