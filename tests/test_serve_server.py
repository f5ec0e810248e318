"""``outreach serve``'s production server: read deadline, limits, concurrency, draining stop.

Real sockets on a free loopback port; waits are on sockets and events, with timeouts.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import select
from test_serve import (  # noqa: F401 (fixtures)
    NOW,
    SENDGRID,
    STAMP,
    _clean_env,
    config,
    full_settings,
    sendgrid,
    store,
    twilio,
)

from outreach.clock import FixedClock
from outreach.http_server import ServerLimits, WebhookServer, serve
from outreach.serve import make_app
from outreach.store.schema import Event

WAIT = 10.0  # the most any one wait may take before the test fails


@contextmanager
def running(app: Callable[..., Any], limits: ServerLimits) -> Iterator[WebhookServer]:
    """``app`` served on a free loopback port in a thread; stopped (drained) at the end."""
    server = WebhookServer(app, "127.0.0.1", 0, limits)
    thread = threading.Thread(target=server.run, name="test-serve")
    thread.start()
    try:
        yield server
    finally:
        server.stop()
        thread.join(WAIT)
        assert not thread.is_alive()


def batch(ids: list[str]) -> bytes:
    """A SendGrid batch of bounces of Ben (a candidate in the store), one per event id."""
    return json.dumps(
        [
            {
                "email": "ben@example.com",
                "timestamp": STAMP - 60,
                "event": "bounce",
                "type": "bounce",
                "sg_event_id": event_id,
                "sg_message_id": "m.0",
                "status": "5.1.1",
            }
            for event_id in ids
        ]
    ).encode()


def post(port: int, signer, payload: bytes) -> tuple[int, bytes]:
    """POST a signed SendGrid batch; the status and body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
    try:
        headers = {**signer.sign_events(payload, STAMP), "Content-Type": "application/json"}
        conn.request("POST", SENDGRID, payload, headers)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def stored_ids(engine) -> set[str]:
    with engine.connect() as conn:
        payloads = conn.execute(select(Event.payload).where(Event.type == "bounce")).scalars()
        return {p["id"] for p in payloads if p and "id" in p}


def refused(port: int) -> bool:
    """Whether a new connection to ``port`` is refused."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=WAIT).close()
    except ConnectionRefusedError:
        return True
    return False


def closed_by_server(sock: socket.socket, wait: float) -> bool:
    """Whether the server closes ``sock`` within ``wait`` seconds (a read sees EOF/reset)."""
    sock.settimeout(wait)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.fixture
def app(store, full_settings, config):  # noqa: F811
    return make_app(store, full_settings, config, FixedClock(NOW))


def test_a_dribbling_client_is_cut_off_while_others_are_served(app, sendgrid) -> None:  # noqa: F811
    # One worker thread: were a slow client to hold it, the normal request could not run.
    limits = ServerLimits(threads=1, read_timeout=0.6)
    with running(app, limits) as server:
        slow = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(5)]
        for sock in slow:
            sock.sendall(b"POST /webhooks/sendgrid/events HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        served = False
        open_ = list(slow)
        # A byte every 0.1 s keeps each connection busy (waitress's own idle timeout never
        # fires); only the read deadline ends them. Each pause is a wait on the socket.
        while open_ and time.monotonic() - started < WAIT:
            for sock in list(open_):
                try:
                    sock.sendall(b"X")
                except (BrokenPipeError, ConnectionResetError):
                    open_.remove(sock)
                    continue
                if closed_by_server(sock, 0.02):
                    open_.remove(sock)
            if not served:
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=WAIT)
                conn.request("GET", "/healthz")
                answer = conn.getresponse()
                assert (answer.status, answer.read().strip()) == (200, b"ok")
                conn.close()
                served = True
        elapsed = time.monotonic() - started
        assert not open_, "the slow clients were never cut off"
        assert served
        assert 0.5 <= elapsed < 0.6 + 2.0, elapsed
        for sock in slow:
            sock.close()
        # The server is still well.
        status, body = post(server.port, sendgrid, batch(["after-slow"]))
        assert status == 200, body


def test_an_idle_connection_is_closed_after_the_read_timeout(app) -> None:
    with running(app, ServerLimits(read_timeout=0.3)) as server:
        sock = socket.create_connection(("127.0.0.1", server.port))
        started = time.monotonic()
        assert closed_by_server(sock, WAIT)
        assert time.monotonic() - started >= 0.25
        sock.close()


def test_closed_connections_leave_the_poller_watch_set(app) -> None:
    # Every request handed to a worker is watched until settled; one whose connection
    # closed first (Connection: close) must leave the set too, or it grows without end
    # and every loop turn walks it.
    with running(app, ServerLimits(threads=2)) as server:
        for _ in range(200):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=WAIT)
            conn.request("GET", "/healthz", headers={"Connection": "close"})
            assert conn.getresponse().read() is not None
            conn.close()
        poller = server._server.poller
        deadline = time.monotonic() + WAIT
        while len(poller._watched) > 2 and time.monotonic() < deadline:
            # a keep-alive request wakes the loop, as the next provider post would
            status, _ = _get(server.port, "/healthz")
            assert status == 200
        assert len(poller._watched) <= 2, len(poller._watched)


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
    try:
        conn.request("GET", path)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def test_many_concurrent_signed_posts_all_stored(app, store, sendgrid) -> None:  # noqa: F811
    posts = 40
    results: list[tuple[int, bytes]] = []
    lock = threading.Lock()
    with running(app, ServerLimits(threads=4)) as server:

        def send(n: int) -> None:
            answer = post(server.port, sendgrid, batch([f"c{n}-a", f"c{n}-b"]))
            with lock:
                results.append(answer)

        threads = [threading.Thread(target=send, args=(n,)) for n in range(posts)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
    assert len(results) == posts
    assert all(status == 200 for status, _ in results), results[:3]
    assert sum(json.loads(body)["recorded"] for _, body in results) == 2 * posts
    assert stored_ids(store) >= {f"c{n}-{x}" for n in range(posts) for x in "ab"}


def test_past_the_connection_limit_a_client_waits_for_a_free_slot(app) -> None:
    with running(app, ServerLimits(connection_limit=3)) as server:
        held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
        for sock in held:  # each accepted (a request, answered), then kept open idle
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.settimeout(WAIT)
            assert sock.recv(1024).startswith(b"HTTP/1.1 200")
        waiting = socket.create_connection(("127.0.0.1", server.port))  # the kernel's backlog
        waiting.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        waiting.settimeout(0.5)
        with pytest.raises(TimeoutError):
            waiting.recv(1024)  # not accepted while three are open
        held.pop().close()
        waiting.settimeout(WAIT)
        assert waiting.recv(1024).startswith(b"HTTP/1.1 200")
        for sock in [*held, waiting]:
            sock.close()


def raw_exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` and read what comes back until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_oversized_body_is_413_and_oversized_headers_431(app, store) -> None:  # noqa: F811
    # Small limits, so that each refused request arrives in one read: a server that answers
    # and closes with bytes still unread resets the connection, and the answer may be lost.
    limits = ServerLimits(max_body_bytes=4096, max_header_bytes=4096)
    with running(app, limits) as server:
        declared = raw_exchange(
            server.port,
            b"POST /webhooks/sendgrid/events HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 70000\r\n\r\n[",
        )
        assert declared.startswith(b"HTTP/1.1 413"), declared[:80]
        chunked = raw_exchange(
            server.port,
            b"POST /webhooks/sendgrid/events HTTP/1.1\r\nHost: x\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            + (b"800\r\n" + b"x" * 0x800 + b"\r\n") * 3
            + b"0\r\n\r\n",
        )
        assert chunked.startswith(b"HTTP/1.1 413"), chunked[:80]
        headers = raw_exchange(
            server.port,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n",
        )
        assert headers.split(b" ", 2)[1] == b"431", headers[:80]
        # Just under the limits is fine.
        fine = raw_exchange(
            server.port,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: "
            + b"a" * 3000
            + b"\r\n\r\n",
        )
        assert fine.startswith(b"HTTP/1.1 200"), fine[:80]
    with store.connect() as conn:
        assert conn.execute(select(Event.id).where(Event.type == "bounce")).first() is None


def test_stop_finishes_the_request_in_flight_then_closes_the_port(app, store, sendgrid):  # noqa: F811
    entered, release = threading.Event(), threading.Event()

    def slow_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ["PATH_INFO"] == SENDGRID:
            entered.set()
            assert release.wait(WAIT)
        return app(environ, start_response)

    server = WebhookServer(slow_app, "127.0.0.1", 0, ServerLimits(threads=2))
    runner = threading.Thread(target=server.run)
    runner.start()
    port = server.port
    answers: list[tuple[int, bytes]] = []
    client = threading.Thread(
        target=lambda: answers.append(post(port, sendgrid, batch(["in-flight"])))
    )
    idle = socket.create_connection(("127.0.0.1", port))
    half = socket.create_connection(("127.0.0.1", port))
    half.sendall(
        b"POST /webhooks/sendgrid/events HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n["
    )
    try:
        client.start()
        assert entered.wait(WAIT)
        server.stop()
        assert server.draining.wait(WAIT)
        assert refused(port)  # no new connections once stopping
        # The idle connection and the request that never fully arrived are closed...
        assert closed_by_server(idle, WAIT)
        assert closed_by_server(half, WAIT)
        assert runner.is_alive() and not answers  # ...the request in flight is not.
        release.set()
        client.join(WAIT)
        runner.join(WAIT)
        assert not runner.is_alive()
    finally:
        release.set()
        server.stop()
        idle.close()
        half.close()
    assert len(answers) == 1 and answers[0][0] == 200, answers
    assert json.loads(answers[0][1])["recorded"] == 1
    assert "in-flight" in stored_ids(store)
    assert refused(port)


def test_serve_returns_when_stop_is_set(app) -> None:
    stop = threading.Event()
    ports: list[int] = []
    ready = threading.Event()

    def on_ready(port: int) -> None:
        ports.append(port)
        ready.set()

    thread = threading.Thread(
        target=serve,
        args=(app, "127.0.0.1", 0, stop),
        kwargs={"on_ready": on_ready, "limits": ServerLimits(threads=2)},
    )
    thread.start()
    assert ready.wait(WAIT)
    conn = http.client.HTTPConnection("127.0.0.1", ports[0], timeout=WAIT)
    conn.request("GET", "/healthz")
    assert conn.getresponse().status == 200
    conn.close()
    stop.set()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert refused(ports[0])


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="threads"):
        ServerLimits(threads=0)
    with pytest.raises(ValueError, match="connection_limit"):
        ServerLimits(connection_limit=0)
    with pytest.raises(ValueError, match="positive"):
        ServerLimits(read_timeout=0)
    with pytest.raises(ValueError, match="max_header_bytes"):
        ServerLimits(max_header_bytes=10)


def test_a_taken_port_is_an_os_error(app) -> None:
    with running(app, ServerLimits()) as server, pytest.raises(OSError):
        WebhookServer(app, "127.0.0.1", server.port)


def test_outreach_serve_cli_cuts_slow_clients_and_stops_on_term(tmp_path, database_url) -> None:
    from test_entrypoint import outreach_script

    env = {k: v for k, v in os.environ.items() if not k.startswith(("OUTREACH_", "SENDGRID_"))}
    env["OUTREACH_DATABASE_URL"] = database_url
    bad = subprocess.run(
        [outreach_script(), "serve", "--threads", "0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "--threads" in bad.stderr
    proc = subprocess.Popen(
        [outreach_script(), "serve", "--port", "0", "--threads", "2", "--read-timeout", "0.5"],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        lines: list[str] = []
        while True:
            line = proc.stderr.readline()
            assert line, "".join(lines)
            lines.append(line)
            found = re.search(r"listening on http://127\.0\.0\.1:(\d+) ", line)
            if found:
                break
        port = int(found.group(1))
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"GET /healthz HTTP/1.1\r\n")
        assert closed_by_server(slow, WAIT)
        slow.close()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
        conn.request("GET", "/healthz")
        answer = conn.getresponse()
        assert (answer.status, answer.read().strip()) == (200, b"ok")
        conn.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0
    assert refused(port)
