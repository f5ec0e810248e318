"""A lean HTTP/1.1 server for the sandbox fakes: keep-alive, one thread per connection.

werkzeug's development server answers every request with ``Connection: close``, so each
request of an SDK costs a TCP handshake and a fresh server thread; a fake then serves a
few hundred requests a second, and the providers it stands for are not that slow. This
server keeps connections open (HTTP/1.1 persistent connections, RFC 9112 section 9.3),
parses the request line and headers itself and calls the same WSGI application, so a fake
answers what it answered before, only sooner.

What it understands: ``Content-Length`` and ``chunked`` request bodies, ``Expect:
100-continue``, ``HEAD``, ``Connection: close`` from the client (and HTTP/1.0, which
closes after each answer unless the client asks otherwise). Answers are buffered and
always carry ``Content-Length``. A request it cannot read gets 400 and the connection is
closed; an application that raises gets 500 (its traceback on stderr), as werkzeug does.

Example::

    server = KeepAliveServer(("127.0.0.1", 0), app)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ...
    server.shutdown(); server.close_connections(); server.server_close()
"""

from __future__ import annotations

import contextlib
import io
import socket
import socketserver
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

__all__ = ["KeepAliveServer"]

_MAX_LINE = 65536
_MAX_HEADERS = 100
#: an idle keep-alive connection is closed after this many seconds (nginx's default)
IDLE_TIMEOUT = 75.0
_REASONS = {status.value: status.phrase for status in HTTPStatus}


class _BadRequest(Exception):
    """The request cannot be read; answered 400 and the connection closed."""


class _Date:
    """The ``Date`` header value, formatted at most once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = ""

    def now(self) -> str:
        second = int(time.time())
        if second != self._second:
            self._value = formatdate(second, usegmt=True)
            self._second = second
        return self._value


class _Connection(socketserver.StreamRequestHandler):
    """Serves the requests of one connection in turn until either side closes it."""

    server: KeepAliveServer
    timeout = IDLE_TIMEOUT

    def handle(self) -> None:
        self.server.opened(self.connection)
        try:
            while self._one():
                pass
        except (OSError, TimeoutError):
            pass  # the client went away or stayed idle too long
        finally:
            self.server.closed(self.connection)

    def _one(self) -> bool:
        """Serve one request; whether the connection stays open for another."""
        line = self.rfile.readline(_MAX_LINE + 1)
        if not line:
            return False
        if line in (b"\r\n", b"\n"):
            return True  # a stray empty line between requests (RFC 9112 section 2.2)
        try:
            environ, keep_alive = self._read(line)
        except _BadRequest as exc:
            self._answer("400 Bad Request", [("Content-Type", "text/plain")], str(exc).encode())
            return False
        status, headers, body = self._call(environ)
        if environ["REQUEST_METHOD"] == "HEAD":
            body = b""
        if not keep_alive:
            headers.append(("Connection", "close"))
        self._answer(status, headers, body)
        return keep_alive

    def _read(self, line: bytes) -> tuple[dict[str, Any], bool]:
        if len(line) > _MAX_LINE:
            raise _BadRequest("request line too long")
        parts = line.decode("iso-8859-1").rstrip("\r\n").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequest("bad request line")
        method, target, version = parts
        headers: list[tuple[str, str]] = []
        while True:
            raw = self.rfile.readline(_MAX_LINE + 1)
            if len(raw) > _MAX_LINE:
                raise _BadRequest("header line too long")
            if raw in (b"\r\n", b"\n", b""):
                break
            if len(headers) >= _MAX_HEADERS:
                raise _BadRequest("too many headers")
            name, colon, value = raw.decode("iso-8859-1").partition(":")
            if not colon or not name or name != name.strip():
                raise _BadRequest("bad header line")
            headers.append((name, value.strip()))
        environ = self._environ(method, target, version, headers)
        connection = environ.get("HTTP_CONNECTION", "").lower()
        if version == "HTTP/1.1":
            keep_alive = "close" not in connection
        else:
            keep_alive = "keep-alive" in connection
        if environ.get("HTTP_EXPECT", "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        environ["wsgi.input"] = io.BytesIO(self._body(environ))
        environ["wsgi.input_terminated"] = True
        return environ, keep_alive

    def _environ(
        self, method: str, target: str, version: str, headers: list[tuple[str, str]]
    ) -> dict[str, Any]:
        if not target.startswith("/"):
            # absolute-form (a proxy request): keep the path and query only
            after_scheme = target.partition("://")[2]
            target = "/" + after_scheme.partition("/")[2] if after_scheme else "/"
        path, _, query = target.partition("?")
        host, port = self.server.server_address[:2]
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": "",
            # WSGI: the unquoted path's UTF-8 bytes seen as Latin-1 (PEP 3333), as werkzeug
            "PATH_INFO": unquote(path).encode("utf-8").decode("iso-8859-1"),
            "QUERY_STRING": query,
            "REQUEST_URI": target,
            "RAW_URI": target,
            "SERVER_NAME": str(host),
            "SERVER_PORT": str(port),
            "SERVER_PROTOCOL": version,
            "REMOTE_ADDR": self.client_address[0],
            "REMOTE_PORT": self.client_address[1],
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for name, value in headers:
            key = name.upper().replace("-", "_")
            if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                environ[key] = value
                continue
            key = "HTTP_" + key
            environ[key] = f"{environ[key]},{value}" if key in environ else value
        return environ

    def _body(self, environ: dict[str, Any]) -> bytes:
        if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            body = self._dechunk()
            environ["CONTENT_LENGTH"] = str(len(body))
            return body
        length = environ.get("CONTENT_LENGTH")
        if not length:
            return b""
        try:
            size = int(length)
        except ValueError:
            raise _BadRequest("bad Content-Length") from None
        if size < 0:
            raise _BadRequest("bad Content-Length")
        body = self.rfile.read(size)
        if len(body) < size:
            raise _BadRequest("the body ended early")
        return body

    def _dechunk(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            line = self.rfile.readline(_MAX_LINE + 1)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BadRequest("bad chunk size") from None
            if size == 0:
                while self.rfile.readline(_MAX_LINE + 1) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunk = self.rfile.read(size)
            if len(chunk) < size:
                raise _BadRequest("a chunk ended early")
            chunks.append(chunk)
            self.rfile.readline(_MAX_LINE + 1)

    def _call(self, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        started: list[Any] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], None]:
            started[:] = [status, list(headers)]
            return pieces.append

        pieces: list[bytes] = []
        try:
            result: Iterable[bytes] = self.server.app(environ, start_response)
            try:
                pieces.extend(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except Exception:
            traceback.print_exc(file=sys.stderr)
            return "500 Internal Server Error", [("Content-Type", "text/plain")], b"error"
        if not started:
            return "500 Internal Server Error", [("Content-Type", "text/plain")], b"error"
        return started[0], started[1], b"".join(pieces)

    def _answer(self, status: str, headers: list[tuple[str, str]], body: bytes) -> None:
        code = status.split(" ", 1)[0]
        if not status[3:].strip():
            status = f"{code} {_REASONS.get(int(code), '')}"
        lines = [f"HTTP/1.1 {status}"]
        named = set()
        for name, value in headers:
            lowered = name.lower()
            named.add(lowered)
            if lowered in ("content-length", "transfer-encoding"):
                continue  # set below from the buffered body
            lines.append(f"{name}: {value}")
        if "date" not in named:
            lines.append(f"Date: {self.server.date.now()}")
        lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("iso-8859-1")
        self.wfile.write(head + body)


class KeepAliveServer(socketserver.ThreadingTCPServer):
    """Serves ``app`` (any WSGI application) over HTTP/1.1 with persistent connections.

    One daemon thread per connection; :meth:`close_connections` ends them all (after
    :meth:`shutdown`), so a stopped server leaves no connection a client could still use.
    """

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: Callable[..., Any]) -> None:
        self.app = app
        self.date = _Date()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        super().__init__(address, _Connection)

    @property
    def server_port(self) -> int:
        """The port it listens on (the one chosen when bound to port 0)."""
        return int(self.server_address[1])

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept a connection; small answers go out at once (no Nagle delay)."""
        conn, address = super().get_request()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, address

    def opened(self, conn: socket.socket) -> None:
        """Track a connection being served."""
        with self._lock:
            self._open.add(conn)

    def closed(self, conn: socket.socket) -> None:
        """Forget a connection that is done."""
        with self._lock:
            self._open.discard(conn)

    def close_connections(self) -> None:
        """Close every open connection: their threads end and their clients see EOF."""
        with self._lock:
            conns, self._open = list(self._open), set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
