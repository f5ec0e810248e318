"""Kept-alive connections for the SDKs (:mod:`channels.keepalive`, :mod:`channels.sendgrid_http`)."""

from __future__ import annotations

import json
import socket
import urllib.error

import pytest
from python_http_client.exceptions import BadRequestsError, UnauthorizedError

from channels.keepalive import KeepAlive, NotConnected
from channels.sendgrid_http import KeepAliveClient, sendgrid_client
from outreach.sandbox.base import SandboxServer, json_response


def _app(environ, start_response):
    path = environ["PATH_INFO"]
    if path.endswith("/bad"):
        response = json_response({"errors": [{"field": "to", "message": "bad"}]}, 400)
    elif path.endswith("/denied"):
        response = json_response({"errors": [{"message": "no"}]}, 401)
    elif path == "/close":
        response = json_response({"ok": True}, headers={"Connection": "close"})
    else:
        body = environ["wsgi.input"].read()
        response = json_response(
            {"port": environ["REMOTE_PORT"], "body": body.decode(), "path": path},
            headers={"X-Message-Id": "abc"},
        )
    return response(environ, start_response)


@pytest.fixture
def server():
    with SandboxServer(_app) as running:
        yield running


def test_requests_reuse_one_connection(server) -> None:
    http = KeepAlive()
    answers = [http.request("POST", f"{server.url}/x", b"hi", {}, 5.0) for _ in range(5)]
    http.close()
    assert {a.headers["X-Message-Id"] for a in answers} == {"abc"}
    assert {json.loads(a.body)["body"] for a in answers} == {"hi"}
    assert len({json.loads(a.body)["port"] for a in answers}) == 1


def test_a_connection_the_server_closed_is_replaced_before_it_is_used(server) -> None:
    http = KeepAlive()
    first = http.request("GET", f"{server.url}/x", None, {}, 5.0)
    server._server.close_connections()  # the server drops every idle connection
    second = http.request("GET", f"{server.url}/x", None, {}, 5.0)
    http.close()
    assert first.status == second.status == 200
    assert first.body != second.body  # answered on a new connection (another port)


def test_a_refused_connection_is_not_connected() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    with pytest.raises(NotConnected):
        KeepAlive().request("GET", f"http://127.0.0.1:{port}/x", None, {}, 5.0)


def test_the_sendgrid_sdk_client_keeps_its_connection_and_maps_errors_as_urllib(server) -> None:
    sdk = sendgrid_client("SG.key", server.url)
    assert isinstance(sdk.client, KeepAliveClient)

    answer = sdk.client.mail.send.post(request_body={"a": 1}, timeout=5)
    again = sdk.client.mail.send.post(request_body={"a": 2}, timeout=5)

    assert answer.status_code == 200 and answer.headers.get("x-message-id") == "abc"
    assert answer.to_dict["path"] == "/v3/mail/send" and answer.to_dict["body"] == '{"a": 1}'
    assert answer.to_dict["port"] == again.to_dict["port"]
    with pytest.raises(BadRequestsError) as bad:
        sdk.client._("bad").post(request_body={}, timeout=5)
    assert bad.value.status_code == 400 and b"bad" in bad.value.body
    with pytest.raises(UnauthorizedError):
        sdk.client._("denied").get(timeout=5)


def test_the_sendgrid_sdk_client_cannot_connect_as_urllib_says() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    sdk = sendgrid_client("SG.key", f"http://127.0.0.1:{port}")
    with pytest.raises(urllib.error.URLError):
        sdk.client.mail.send.post(request_body={}, timeout=5)


def test_a_proxy_in_the_environment_keeps_the_sdk_transport(monkeypatch) -> None:
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    sdk = sendgrid_client("SG.key", "https://api.sendgrid.com")
    assert not isinstance(sdk.client, KeepAliveClient)
