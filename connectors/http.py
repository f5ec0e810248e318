"""The HTTP layer every CRM connector shares: one httpx client, pacing, retries, errors.

* :class:`HeaderPacer` paces requests from the provider's own rate-limit headers
  (``X-RateLimit-Limit``/``-Remaining``, HubSpot's ``X-HubSpot-RateLimit-*``) on top of a
  steady per-second ceiling, and honours ``Retry-After``.
* :class:`ApiClient` sends requests through one ``httpx.Client`` (connection reuse,
  timeouts), retries with tenacity what provably was not processed (connection errors,
  429, 5xx on idempotent reads), and translates failures into the engine's error tree:
  401/403 name the credential and the fix; other 4xx are permanent for that request.
* Credentials stay home: a request is sent only to the configured base URL's origin
  (scheme, host and port). A next-page link or a stored cursor that points elsewhere is
  an error naming it (:meth:`ApiClient.same_origin`), and redirects are never followed.

Clocks and sleeping are injected, so tests never wait.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
)

from outreach.clock import SystemClock
from outreach.engine.ratelimit import RateLimiter
from outreach.errors import ConfigError, PermanentError, RetryableError

__all__ = ["ApiClient", "HeaderPacer", "redact_url", "retry_after_seconds"]

_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or SystemClock().now())).total_seconds())


@dataclass
class _Window:
    remaining: int | None = None
    reset_after: float | None = None  # seconds until the provider's window resets


class HeaderPacer:
    """Paces requests to a steady rate and to what the provider's headers say is left.

    ``rate`` is the steady ceiling (requests per second, from the connector's class
    attributes). After each response :meth:`observe` reads the rate-limit headers; when
    the provider says nothing is left in its window, the next :meth:`wait` sleeps until
    the window resets.
    """

    def __init__(
        self,
        rate: float | None,
        *,
        window_seconds: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        # No initial burst: a provider window that allows exactly ``rate`` on average would
        # answer 429 to a client that starts with a burst.
        self.limiter = (
            RateLimiter(rate, burst=1.0, monotonic=monotonic, sleep=sleep) if rate else None
        )
        self.window_seconds = window_seconds
        self._monotonic = monotonic
        self._sleep = sleep
        self._blocked_until = 0.0
        self.slept = 0.0

    def wait(self) -> None:
        """Block until the next request may go."""
        pause = self._blocked_until - self._monotonic()
        if pause > 0:
            self._sleep(pause)
            self.slept += pause
        if self.limiter is not None:
            self.slept += self.limiter.acquire()

    def hold(self, seconds: float) -> None:
        """Send nothing for ``seconds`` (a 429's Retry-After)."""
        self._blocked_until = max(self._blocked_until, self._monotonic() + seconds)

    def observe(self, headers: Mapping[str, str]) -> None:
        """Read the provider's rate-limit headers from a response."""
        window = _read_window(headers, self.window_seconds)
        if window.remaining is not None and window.remaining <= 0:
            self.hold(window.reset_after if window.reset_after is not None else self.window_seconds)


def _read_window(headers: Mapping[str, str], default_window: float) -> _Window:
    lower = {k.lower(): v for k, v in headers.items()}

    def number(name: str) -> float | None:
        try:
            return float(lower[name])
        except (KeyError, ValueError):
            return None

    # HubSpot: per-interval limits with the interval length in milliseconds.
    remaining = number("x-hubspot-ratelimit-remaining")
    if remaining is not None:
        interval = number("x-hubspot-ratelimit-interval-milliseconds")
        return _Window(int(remaining), interval / 1000 if interval else default_window)
    secondly = number("x-hubspot-ratelimit-secondly-remaining")
    if secondly is not None:
        return _Window(int(secondly), 1.0)
    remaining = number("x-ratelimit-remaining")
    if remaining is not None:
        reset = number("x-ratelimit-reset")
        if reset is not None and reset > 1e9:
            # Greenhouse sends the reset as a Unix timestamp; others as seconds.
            reset = max(0.0, reset - time.time())
        return _Window(int(remaining), reset if reset is not None and reset < 3600 else None)
    return _Window()


class ApiClient:
    """One provider's HTTP client: base URL, auth, pacing, retries, error translation.

    Example::

        client = ApiClient("lever", "https://api.lever.co/v1", auth=("key", ""),
                           credential="LEVER_API_KEY", rate=10)
        page = client.get("/opportunities", params={"limit": 100}).json()
    """

    def __init__(
        self,
        provider: str,
        base_url: str,
        *,
        credential: str,
        auth: httpx.Auth | tuple[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        rate: float | None = None,
        attempts: int = 5,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        backoff: Callable[[int], float] | None = None,
        max_wait: float = 120.0,
    ) -> None:
        self.provider = provider
        #: the longest pause a retry may wait in this run; a longer Retry-After (or a daily
        #: quota used up) ends the call at once, for the next run to carry on
        self.max_wait = max_wait
        self.credential = credential
        self.pacer = HeaderPacer(rate, monotonic=monotonic, sleep=sleep)
        self.attempts = attempts
        self._sleep = sleep
        self._backoff = backoff or (lambda attempt: min(30.0, 0.5 * 2 ** (attempt - 1)))
        self.http = httpx.Client(
            base_url=base_url.rstrip("/"),
            auth=auth,
            headers=dict(headers or {}),
            timeout=httpx.Timeout(timeout, connect=10.0),
            transport=transport,
            follow_redirects=False,
        )
        self.retries = 0
        self.base_url = self.http.base_url

    def same_origin(self, url: str | httpx.URL, *, what: str = "a request") -> str:
        """``url`` unchanged when it is on the base URL's origin; else a PermanentError.

        ``what`` says where the URL came from (``the Link header``) for the message, which
        names the URL without any user name or password in it.
        """
        try:
            target = self.http.build_request("GET", url).url
        except httpx.InvalidURL as exc:
            raise PermanentError(
                f"{self.provider}: {what} is not a usable URL ({exc}); not followed",
                provider=self.provider,
            ) from None
        if _origin(target) != _origin(self.base_url):
            raise PermanentError(
                f"{self.provider}: {what} points to {redact_url(target)}, outside the "
                f"configured base URL {redact_url(self.base_url)}; not followed, so the "
                f"credential {self.credential} is not sent there",
                provider=self.provider,
            )
        return str(url)

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        """GET, retried on connection errors, 429 and 5xx."""
        return self.request("GET", path, idempotent=True, **kwargs)

    def post(self, path: str, *, idempotent: bool = False, **kwargs: Any) -> httpx.Response:
        """POST; retried on other 5xx only when ``idempotent`` (a search), always on 429, 503."""
        return self.request("POST", path, idempotent=idempotent, **kwargs)

    def request(self, method: str, path: str, *, idempotent: bool, **kwargs: Any) -> httpx.Response:
        """Send one request with pacing and retries; raise the engine's errors."""
        self.same_origin(path)

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            hinted = getattr(error, "retry_after", None)
            return hinted if hinted is not None else self._backoff(state.attempt_number)

        def worth_waiting(error: BaseException) -> bool:
            hinted = getattr(error, "retry_after", None)
            return isinstance(error, RetryableError) and (hinted is None or hinted <= self.max_wait)

        retrying = Retrying(
            retry=retry_if_exception(worth_waiting),
            stop=stop_after_attempt(self.attempts),
            wait=wait,
            sleep=self._sleep,
            reraise=True,
            before_sleep=self._count_retry,
        )
        for attempt in retrying:
            with attempt:
                return self._once(method, path, idempotent=idempotent, **kwargs)
        raise AssertionError("unreachable")  # pragma: no cover

    def _count_retry(self, state: RetryCallState) -> None:
        self.retries += 1

    def _once(self, method: str, path: str, *, idempotent: bool, **kwargs: Any) -> httpx.Response:
        self.pacer.wait()
        try:
            response = self.http.request(method, path, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise RetryableError(
                f"{self.provider}: cannot connect ({type(exc).__name__})", provider=self.provider
            ) from exc
        except httpx.RemoteProtocolError as exc:
            # A broken answer (a dropped connection, a redirect whose Location is no URL):
            # a read may be tried again; a write may have been processed, so it is not.
            error = RetryableError if idempotent else PermanentError
            raise error(
                f"{self.provider}: {method} {path}: the answer is not valid HTTP ({exc})",
                provider=self.provider,
            ) from exc
        except httpx.TimeoutException as exc:
            if idempotent:
                raise RetryableError(
                    f"{self.provider}: timed out reading {path}", provider=self.provider
                ) from exc
            raise PermanentError(
                f"{self.provider}: {method} {path} timed out after it was sent; not retried "
                "(it may have been processed)",
                provider=self.provider,
            ) from exc
        self.pacer.observe(response.headers)
        status = response.status_code
        if 300 <= status < 400:
            raise PermanentError(
                f"{self.provider}: HTTP {status} on {method} {path} redirects to "
                f"{_location(response)}; redirects "
                "are not followed (the credential goes only to the base URL); check the "
                "base URL setting",
                provider=self.provider,
                status=status,
            )
        if status < 400:
            return response
        detail = _detail(response)
        # 503 says the request was not handled (DESIGN.md invariant 2), so even a write is
        # safe to send again; any other 5xx on a write may have been processed.
        if status in (429, 503) or (status in _RETRYABLE_STATUS and idempotent):
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            if status == 429 and _daily_quota_used_up(response):
                raise RetryableError(
                    f"{self.provider}: the daily API limit is used up ({detail}); the rest "
                    "waits for the next run",
                    provider=self.provider,
                    status=status,
                    retry_after=DAILY_QUOTA_WAIT,
                )
            if status == 429 and (retry_after is None or retry_after <= self.max_wait):
                self.pacer.hold(retry_after if retry_after is not None else 1.0)
            raise RetryableError(
                f"{self.provider}: HTTP {status} on {method} {path}: {detail}",
                provider=self.provider,
                status=status,
                retry_after=retry_after,
            )
        if status in (401, 403):
            what = "rejected" if status == 401 else "lacks the permission (scope) for"
            raise ConfigError(
                f"{self.provider}: HTTP {status}: the credential {self.credential} is {what} "
                f"{method} {path} ({detail}); check the value and its scopes"
            )
        raise PermanentError(
            f"{self.provider}: HTTP {status} on {method} {path}: {detail}",
            provider=self.provider,
            status=status,
        )


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    # httpx lower-cases scheme and host and drops a default port (443, 80).
    return url.scheme, url.host, url.port


def _location(response: httpx.Response) -> str:
    where = response.headers.get("Location")
    if not where:
        return "nowhere (no Location header)"
    try:
        return redact_url(response.url.join(where))
    except httpx.InvalidURL:
        return "an unreadable Location"


def redact_url(url: str | httpx.URL) -> str:
    """``url`` without user name and password, for messages."""
    return str(httpx.URL(url).copy_with(userinfo=b""))


#: how long a used-up daily quota is reported to last (the real reset is the provider's
#: midnight, in the account's own time zone)
DAILY_QUOTA_WAIT = 3600.0


def _daily_quota_used_up(response: httpx.Response) -> bool:
    """HubSpot says which limit a 429 hit: ``policyName`` ``DAILY`` lasts until midnight."""
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and str(body.get("policyName", "")).upper() == "DAILY"


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return (response.text or "").strip()[:200] or response.reason_phrase
    if isinstance(body, dict):
        for key in ("message", "error", "errors", "detail"):
            if key in body:
                return str(body[key])[:200]
    return str(body)[:200]
