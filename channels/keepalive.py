"""Persistent HTTP/1.1 connections for the channels' SDKs, one per host, one thread at a time.

The SendGrid SDK (``python_http_client``) builds a new ``urllib`` opener for every call,
which scans the environment for proxies and opens a new TCP (and TLS) connection each
time; the Twilio SDK's ``requests`` session keeps connections but spends as long again
preparing each request and merging environment settings. At thousands of messages a
second that is most of the engine's time, so each channel worker keeps one
:class:`KeepAlive` (its own connections, never shared between threads) and the SDKs send
through it: Twilio's documented ``http_client`` extension point, and for SendGrid a
``python_http_client.Client`` whose requests go through it.

What can be known about a request that failed is kept apart, because the engine must not
call a request ambiguous that never left, nor retry one that may have been processed:

* :class:`NotConnected`: no connection could be made (refused, unreachable, DNS, a connect
  timeout, a rejected certificate). Nothing was sent.
* :class:`NotWritten`: the connection broke while the request was written; the server
  never had a whole request (a ``Content-Length`` request is not processed in part).
  Callers that cannot tell this apart from a lost answer may still treat it as ambiguous.
* anything raised after the whole request was written (``TimeoutError``, a connection reset,
  ``http.client.RemoteDisconnected``, ``IncompleteRead``): re-raised as it is; the request
  may have been processed.
* an error while the request line and headers are being buffered (``http.client``'s
  ``putrequest``/``putheader``, e.g. a header value with a line break) is re-raised as it
  is from those functions, before anything is written.

An idle connection the server has closed meanwhile is noticed before it is reused (it
reads as ready: end of file) and replaced, so a stale connection does not turn a request
into an ambiguous one.

Example::

    http = KeepAlive()
    answer = http.request("POST", "https://api.example/v3/mail/send", b"{}", headers, 10.0)
    answer.status, answer.headers.get("X-Message-Id"), answer.body
"""

from __future__ import annotations

import http.client
import select
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = ["Answer", "KeepAlive", "NotConnected", "NotWritten"]


class NotConnected(OSError):
    """No connection could be made: the request was not sent."""


class NotWritten(OSError):
    """The connection broke while the request was being written: it did not arrive whole."""


@dataclass(frozen=True)
class Answer:
    """A whole response: status, reason phrase, headers (case-insensitive), body."""

    status: int
    reason: str
    headers: http.client.HTTPMessage
    body: bytes


class KeepAlive:
    """Keeps one connection per (scheme, host, port) open between requests.

    Not thread-safe by design: a worker thread owns its ``KeepAlive``. ``ssl_context``
    verifies HTTPS servers (default: the system's trust store, as ``urllib`` does).
    """

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl_context = ssl_context
        self._connections: dict[tuple[str, str], http.client.HTTPConnection] = {}

    def request(
        self,
        method: str,
        url: str,
        body: bytes | None,
        headers: dict[str, str],
        timeout: float | None,
    ) -> Answer:
        """Send one request and read its whole answer (see the module docstring for errors)."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"cannot send to a {scheme or 'relative'} URL")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn = self._connection(scheme, parts.netloc, timeout)
        try:
            conn.putrequest(method, target, skip_accept_encoding=True)
            for name, value in headers.items():
                conn.putheader(name, value)
            if body is not None or method in ("POST", "PUT", "PATCH"):
                conn.putheader("Content-Length", str(len(body or b"")))
        except BaseException:
            self._drop(scheme, parts.netloc)
            raise
        try:
            conn.endheaders(body)
        except (OSError, http.client.HTTPException) as exc:
            self._drop(scheme, parts.netloc)
            raise NotWritten(f"the request could not be written ({type(exc).__name__})") from exc
        except BaseException:
            self._drop(scheme, parts.netloc)
            raise
        try:
            response = conn.getresponse()
            data = response.read()
        except BaseException:
            self._drop(scheme, parts.netloc)
            raise
        if response.will_close:
            self._drop(scheme, parts.netloc)
        return Answer(response.status, response.reason, response.msg, data)

    def close(self) -> None:
        """Close every connection; a later request opens new ones."""
        for key in list(self._connections):
            self._drop(*key)

    def _connection(
        self, scheme: str, netloc: str, timeout: float | None
    ) -> http.client.HTTPConnection:
        key = (scheme, netloc)
        conn = self._connections.get(key)
        if conn is not None and (conn.sock is None or _dropped(conn.sock)):
            self._drop(scheme, netloc)
            conn = None
        if conn is None:
            kind: Any = (
                http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
            )
            options: dict[str, Any] = {"timeout": timeout}
            if scheme == "https":
                options["context"] = self._ssl_context or ssl.create_default_context()
            conn = kind(netloc, **options)
            try:
                conn.connect()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise NotConnected(f"cannot connect ({_why(exc)})") from exc
            self._connections[key] = conn
        elif conn.sock is not None:
            conn.sock.settimeout(timeout)
        conn.timeout = timeout
        return conn

    def _drop(self, scheme: str, netloc: str) -> None:
        conn = self._connections.pop((scheme, netloc), None)
        if conn is not None:
            conn.close()


def _dropped(sock: Any) -> bool:
    """Whether an idle connection reads as ready: the server closed it (or sent junk)."""
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def _why(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text or type(exc).__name__
