"""The sandbox's keep-alive HTTP/1.1 server (:mod:`outreach.sandbox.server`)."""

from __future__ import annotations

import socket

import pytest

from outreach.sandbox.base import SandboxServer


def _echo(environ, start_response):
    body = environ["wsgi.input"].read()
    if environ["PATH_INFO"] == "/boom":
        raise RuntimeError("boom")
    text = (
        f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']}?{environ['QUERY_STRING']} "
        f"{environ.get('HTTP_X_TWO', '')} {environ['REMOTE_PORT']} "
    ).encode() + body
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [text]


@pytest.fixture
def server():
    with SandboxServer(_echo) as running:
        yield running


def _exchange(sock: socket.socket, request: bytes) -> bytes:
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_one_connection_serves_several_requests(server) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        mine = sock.getsockname()[1]
        first = _exchange(
            sock, b"POST /a%20b?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
        )
        second = _exchange(sock, b"GET /c HTTP/1.1\r\nHost: h\r\nX-Two: 1\r\nX-Two: 2\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200 OK\r\n")
    assert first.endswith(b"POST /a b?x=1  %d abc" % mine)
    assert b"Connection: close" not in first
    assert second.endswith(b"GET /c? 1,2 %d " % mine)


def test_a_chunked_body_is_read_whole(server) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        answer = _exchange(
            sock,
            b"POST /d HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        )
    assert answer.endswith(b"abcde")


def test_connection_close_and_http_1_0_end_the_connection(server) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    for request in (
        b"GET /e HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        b"GET /e HTTP/1.0\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            answer = _exchange(sock, request)
            assert b"Connection: close" in answer
            assert sock.recv(10) == b""  # the server closed it


def test_a_bad_request_gets_400_and_an_error_500(server) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        assert _exchange(sock, b"NONSENSE\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    with socket.create_connection(("127.0.0.1", port)) as sock:
        answer = _exchange(sock, b"GET /boom HTTP/1.1\r\nHost: h\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 500 ")


def test_stop_closes_open_connections() -> None:
    server = SandboxServer(_echo).start()
    port = int(server.url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port))
    _exchange(sock, b"GET /f HTTP/1.1\r\nHost: h\r\n\r\n")
    server.stop()
    sock.settimeout(5)
    assert sock.recv(10) == b""
    sock.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)
