"""The SendGrid SDK's HTTP client, sending over a kept-alive connection.

``SendGridAPIClient.client`` is a ``python_http_client.Client``: it builds the URL from
attribute chains (``client.mail.send.post``), keeps the API key and User-Agent headers,
encodes the JSON body and maps error statuses to its ``HTTPError`` subclasses
(``handle_error``). Only its transport is costly: a new ``urllib`` opener per call (an
environment scan for proxies) and a new connection per request. :class:`KeepAliveClient`
is that same client with the request made through :class:`channels.keepalive.KeepAlive`,
and errors raised as ``urllib`` raises them (a connection or write failure as
``urllib.error.URLError``, a status outside 2xx as the SDK's ``HTTPError`` subclass, a
failure after the request was written as it is), so the channel's translation at the edge
is unchanged. Redirects are not followed (SendGrid's API does not redirect; a redirect is
answered as the error it is, and the key never goes to another host).

Where a proxy applies to the host (``HTTPS_PROXY`` and the like, honoured by ``urllib``),
:func:`sendgrid_client` keeps the SDK's own transport.

Example::

    sg = sendgrid_client(api_key, "https://api.sendgrid.com")
    sg.client.mail.send.post(request_body=body, timeout=10)
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from python_http_client.client import Client, Response
from python_http_client.exceptions import handle_error
from sendgrid import SendGridAPIClient

from channels.keepalive import Answer, KeepAlive, NotConnected, NotWritten

__all__ = ["KeepAliveClient", "sendgrid_client"]


class _Received:
    """An :class:`Answer` in the shapes ``python_http_client`` reads: a urllib response
    (``Response``) and a urllib ``HTTPError`` (``handle_error``: code, reason, hdrs)."""

    def __init__(self, answer: Answer) -> None:
        self._answer = answer
        self.code = answer.status
        self.reason = answer.reason
        self.hdrs = answer.headers

    def getcode(self) -> int:
        return self._answer.status

    def read(self) -> bytes:
        return self._answer.body

    def info(self) -> Any:
        return self._answer.headers


class KeepAliveClient(Client):
    """``python_http_client.Client`` whose requests reuse one connection per host.

    Used by one thread at a time (the channel lends each worker its own SDK client), like
    the :class:`KeepAlive` it holds; every client built from it by attribute access shares
    that ``KeepAlive``.
    """

    def __init__(self, *args: Any, transport: KeepAlive, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._transport = transport

    def _build_client(self, name: str | None = None) -> KeepAliveClient:
        url_path = [*self._url_path, name] if name else self._url_path
        return KeepAliveClient(
            host=self.host,
            version=self._version,
            request_headers=self.request_headers,
            url_path=url_path,
            append_slash=self.append_slash,
            timeout=self.timeout,
            transport=self._transport,
        )

    def __getattr__(self, name: str) -> Any:
        if name in self.methods:
            method = name.upper()

            def http_request(
                request_body: Any = None,
                query_params: dict[str, Any] | None = None,
                request_headers: dict[str, str] | None = None,
                timeout: float | None = None,
                **_: Any,
            ) -> Response:
                return self._request(method, request_body, query_params, request_headers, timeout)

            return http_request
        return super().__getattr__(name)

    def _request(
        self,
        method: str,
        request_body: Any,
        query_params: dict[str, Any] | None,
        request_headers: dict[str, str] | None,
        timeout: float | None,
    ) -> Response:
        # The body and headers exactly as python_http_client's http_request makes them.
        if request_headers:
            self._update_headers(request_headers)
        if request_body is None:
            data = None
        elif (
            "Content-Type" in self.request_headers
            and self.request_headers["Content-Type"] != "application/json"
        ):
            data = request_body.encode("utf-8")
        else:
            self.request_headers.setdefault("Content-Type", "application/json")
            data = json.dumps(request_body).encode("utf-8")
        url = self._build_url(query_params)
        try:
            answer = self._transport.request(
                method, url, data, dict(self.request_headers), timeout or self.timeout
            )
        except (NotConnected, NotWritten) as exc:
            # urllib's own wrapping of a failure while connecting or writing the request
            raise urllib.error.URLError(exc.__cause__ or exc) from exc
        received = _Received(answer)
        if not 200 <= answer.status < 300:
            # what urllib's HTTPErrorProcessor raises, as the SDK's handle_error reads it
            raise handle_error(received)
        return Response(received)


def sendgrid_client(api_key: str, host: str) -> SendGridAPIClient:
    """A SendGrid SDK client for ``host`` that keeps its connection alive between requests,
    unless a proxy applies to ``host`` (then the SDK's own ``urllib`` transport)."""
    sdk = SendGridAPIClient(api_key, host=host)
    hostname = urlsplit(host).hostname or ""
    if urllib.request.getproxies() and not urllib.request.proxy_bypass(hostname):
        return sdk
    plain = sdk.client
    sdk.client = KeepAliveClient(
        host=plain.host,
        request_headers=plain.request_headers,
        version=plain._version,
        url_path=plain._url_path,
        append_slash=plain.append_slash,
        timeout=plain.timeout,
        transport=KeepAlive(),
    )
    return sdk
