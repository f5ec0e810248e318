"""The edge of the Mailchimp Transactional (Mandrill) API: the official SDK, its errors
translated into :mod:`outreach.errors`.

The ``mailchimp-transactional`` SDK POSTs JSON to ``host + /messages/<call>.json`` with the
API key *in the body* (``"key"``); ``ApiClient.host`` is the base URL, so
``MAILCHIMP_TRANSACTIONAL_BASE_URL`` reaches the sandbox fake. It raises ``ApiClientError``
(``text``: the parsed error body, ``status_code``) for a non-2xx answer with a body, and
hands back the raw ``requests.Response`` when the body is empty (``[]`` included).

Mandrill answers errors as ``{"status": "error", "code": -1, "name": "Invalid_Key",
"message": "Invalid API key"}`` (HTTP 500 for most of them), so the ``name`` decides
before the status does:

* ``Invalid_Key``, ``PaymentRequired``, ``Unknown_Subaccount``, 401, 403, 404:
  :class:`ConfigError` (the setting to fix is named);
* 429, 503 without an error name, a refused connection: :class:`RetryableError`, retried
  here with backoff (``Retry-After`` honoured; a wait over a minute is left to the engine);
* ``ValidationError`` and other named 4xx-style errors: :class:`PermanentError`
  (``Unknown_Message``: :class:`UnknownMessage`);
* a read timeout, a connection lost after the request left, ``GeneralError`` or any other
  5xx: :class:`AmbiguousError`, never retried.

Messages never contain the API key (it is scrubbed from whatever the provider echoes).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import requests
from mailchimp_transactional.api.messages_api import MessagesApi
from mailchimp_transactional.api_client import ApiClient, ApiClientError

from connectors.http import retry_after_seconds
from outreach.clock import Clock, SystemClock
from outreach.errors import (
    AmbiguousError,
    ConfigError,
    OutreachError,
    PermanentError,
    RetryableError,
)

__all__ = ["DEFAULT_BASE_URL", "MandrillApi", "UnknownMessage", "Unsent"]

PROVIDER = "mailchimp"
CREDENTIAL = "MAILCHIMP_TRANSACTIONAL_API_KEY"
DEFAULT_BASE_URL = "https://mandrillapp.com/api/1.3"
#: a longer wait than this is not slept through here; the engine reschedules instead
MAX_IN_PROCESS_WAIT = 60.0
_CONFIG_NAMES = {
    "Invalid_Key": f"the API key in {CREDENTIAL} was rejected; check its value",
    "PaymentRequired": "the account needs a positive balance (scheduled mail is paid)",
    "Unknown_Subaccount": "the subaccount does not exist",
}


class UnknownMessage(PermanentError):
    """``Unknown_Message``: Mandrill holds no message with that id (any more)."""


class Unsent(OutreachError):
    """The request could not be made at all (a bad URL or header): nothing left."""


class _ApiClient(ApiClient):
    """The SDK's client with the answer's headers kept per thread (for ``Retry-After``,
    which ``ApiClientError`` does not carry)."""

    def __init__(self, host: str, timeout: float) -> None:
        super().__init__()
        self.host = host
        self.timeout = timeout
        self._last = threading.local()

    def request(self, method, url, body=None, headers=None, timeout=None):
        self._last.headers = {}
        response = super().request(method, url, body, headers, timeout)
        self._last.headers = dict(response.headers)
        return response

    def last_headers(self) -> Mapping[str, str]:
        return getattr(self._last, "headers", {}) or {}


class MandrillApi:
    """The ``/messages/*`` calls the channel makes, errors translated, retries included.

    Example::

        api = MandrillApi(key, base_url="http://127.0.0.1:8025/api/1.3")
        api.call("send", {"message": {...}})          # [{"email", "status", "_id", ...}]
        api.call("cancel_scheduled", {"id": "abc"}, attempts=1)
    """

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 10.0,
        max_attempts: int = 4,
        clock: Clock | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._key = api_key
        self.timeout = timeout
        self.max_attempts = max(1, max_attempts)
        self._clock = clock or SystemClock()
        self._sleep = sleep
        self._client = _ApiClient(base_url.rstrip("/"), timeout)
        self._messages = MessagesApi(api_key, self._client)

    def __repr__(self) -> str:
        return "MandrillApi()"  # never the key

    def call(self, name: str, body: dict[str, Any], *, attempts: int | None = None) -> Any:
        """``POST /messages/<name>`` with ``body`` (the SDK adds the key); the parsed answer.

        Retryable failures are retried up to ``attempts`` (default ``max_attempts``)."""
        limit = attempts or self.max_attempts
        method = getattr(self._messages, name)
        attempt = 0
        while True:
            attempt += 1
            try:
                answer = method(dict(body))
                return self._parsed(answer)
            except Exception as exc:
                error = self.translate(exc)
                if not isinstance(error, RetryableError):
                    raise error from None
                wait = error.retry_after if error.retry_after is not None else _backoff(attempt)
                if attempt >= limit or wait > MAX_IN_PROCESS_WAIT:
                    plural = "s" if attempt > 1 else ""
                    raise RetryableError(
                        f"{error} after {attempt} attempt{plural}",
                        provider=PROVIDER,
                        status=error.status,
                        retry_after=wait,
                    ) from None
                self._sleep(wait)

    def _parsed(self, answer: Any) -> Any:
        if not isinstance(answer, requests.Response):
            return answer
        # The SDK hands back the response itself when the body is empty or falsy ([]).
        if not answer.ok:
            raise ApiClientError(answer.text, answer.status_code)
        try:
            return answer.json()
        except ValueError:
            raise AmbiguousError(
                "Mailchimp answered something that is not JSON", provider=PROVIDER
            ) from None

    def translate(self, exc: Exception) -> OutreachError:
        """The engine's error for an SDK or ``requests`` exception (the key scrubbed)."""
        if isinstance(exc, OutreachError):
            return exc
        if isinstance(exc, ApiClientError):
            return self._from_answer(exc.status_code, exc.text)
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            why = "cannot connect to Mailchimp (connect timeout)"
            return RetryableError(why, provider=PROVIDER)
        if isinstance(exc, requests.exceptions.Timeout):
            return AmbiguousError(
                f"Mailchimp did not answer within {self.timeout:g} s after the request was "
                "sent; it may have been accepted",
                provider=PROVIDER,
            )
        if isinstance(exc, requests.exceptions.ConnectionError):
            if _never_connected(exc):
                return RetryableError("cannot connect to Mailchimp", provider=PROVIDER)
            return AmbiguousError(
                "the connection to Mailchimp failed after the request was sent; it may have "
                "been accepted",
                provider=PROVIDER,
            )
        if isinstance(
            exc,
            requests.exceptions.InvalidURL
            | requests.exceptions.MissingSchema
            | requests.exceptions.InvalidSchema
            | requests.exceptions.InvalidHeader,
        ):
            return Unsent(
                f"Mailchimp request not sent: {type(exc).__name__} "
                "(check MAILCHIMP_TRANSACTIONAL_BASE_URL)"
            )
        return AmbiguousError(
            f"unexpected {type(exc).__name__} from the Mailchimp SDK; it may have been sent",
            provider=PROVIDER,
        )

    def _from_answer(self, status: int, text: Any) -> OutreachError:
        name, detail = _error_fields(text)
        # Scrubbed whole, then cut: a key the answer echoes must not survive half-cut.
        detail = self._scrub(detail)[:300]
        if name in _CONFIG_NAMES:
            return ConfigError(f"Mailchimp {name}: {_CONFIG_NAMES[name]} ({detail})")
        if status == 429:
            return RetryableError(
                "Mailchimp 429 (rate limited)",
                provider=PROVIDER,
                status=429,
                retry_after=self._retry_after(),
            )
        if status == 503 and name is None:
            return RetryableError(
                f"Mailchimp 503 ({detail})",
                provider=PROVIDER,
                status=503,
                retry_after=self._retry_after(),
            )
        if status in (401, 403):
            return ConfigError(f"Mailchimp {status}: {detail}; check {CREDENTIAL}")
        if status == 404:
            return ConfigError(
                f"Mailchimp 404: no such API path ({detail}); "
                "check MAILCHIMP_TRANSACTIONAL_BASE_URL"
            )
        if name == "Unknown_Message":
            return UnknownMessage(f"Mailchimp Unknown_Message: {detail}", provider=PROVIDER)
        if name == "ValidationError" or (name not in (None, "GeneralError") and status < 500):
            return PermanentError(f"Mailchimp {name}: {detail}", provider=PROVIDER, status=status)
        if name is not None and name != "GeneralError" and status >= 500:
            # Mandrill answers its named refusals with 500: nothing was accepted.
            return PermanentError(f"Mailchimp {name}: {detail}", provider=PROVIDER, status=status)
        return AmbiguousError(
            f"Mailchimp {status} ({name or 'no error name'}: {detail}); the request may have "
            "been accepted",
            provider=PROVIDER,
            status=status,
        )

    def _retry_after(self) -> float | None:
        headers = self._client.last_headers()
        value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
        return retry_after_seconds(value, now=self._now())

    def _now(self) -> datetime:
        return self._clock.now()

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "[api key]") if self._key else text


def _error_fields(text: Any) -> tuple[str | None, str]:
    """(``name``, ``message``) of a Mandrill error body, parsed or not."""
    body = text
    if isinstance(text, str | bytes):
        try:
            body = json.loads(text or b"")
        except (ValueError, UnicodeDecodeError):
            raw = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
            return None, raw.strip() or "no details"
    if isinstance(body, dict):
        name = body.get("name")
        message = body.get("message")
        return (
            name if isinstance(name, str) and name else None,
            str(message) if message else "no details",
        )
    return None, "no details"


def _never_connected(exc: BaseException) -> bool:
    """Whether a ``requests`` connection error happened while connecting (nothing sent)."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        item = stack.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        name = type(item).__name__
        if name in ("NewConnectionError", "ConnectTimeoutError", "NameResolutionError"):
            return True
        if isinstance(item, ConnectionRefusedError):
            return True
        stack.extend([getattr(item, "reason", None), item.__cause__, item.__context__])
        stack.extend(a for a in item.args if isinstance(a, BaseException))
    return False


def _backoff(attempt: int) -> float:
    return min(30.0, 0.5 * 2 ** (attempt - 1))
