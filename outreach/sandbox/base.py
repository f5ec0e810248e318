"""What every sandbox fake shares: a WSGI app with routes, auth, rate limits, faults, a log.

Each provider module subclasses :class:`FakeProvider`, lists its documented paths as
:class:`Route` entries and implements one method per route. The base class answers
what every provider does alike (authentication through :meth:`FakeProvider.authorize`,
rate limiting through a :class:`RateWindow`, injected faults, the request log), and
:class:`SandboxServer` serves any fake on loopback in a background thread::

    fake = FakeLever(people)
    with SandboxServer(fake) as server:
        connector = Lever("sandbox-key", base_url=server.url + "/v1")
        ...
    assert fake.requests[0].path == "/v1/opportunities"

Fakes keep their state in memory behind one lock; the clock that stamps records
(``updated_at``) is injected, while rate windows use real monotonic time because they
meter real requests.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from outreach.clock import Clock, SystemClock
from outreach.sandbox.server import KeepAliveServer

__all__ = [
    "FAULT_HEADER",
    "FakeProvider",
    "Fault",
    "Faults",
    "Logged",
    "RateWindow",
    "Route",
    "SandboxServer",
    "json_response",
]

FAULT_KINDS = ("429", "5xx", "slow", "timeout")
#: set on the answer to a request hit by a ``timeout`` fault
FAULT_HEADER = "X-Sandbox-Fault"


def json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """A JSON response with ``status`` and extra ``headers``."""
    return Response(
        json.dumps(body, separators=(",", ":")),
        status=status,
        headers=dict(headers or {}),
        content_type="application/json; charset=utf-8",
    )


@dataclass(frozen=True)
class Route:
    """One documented path: ``Route("GET", "/v1/opportunities", "list_opportunities")``.

    ``path`` uses werkzeug's rule syntax (``/v1/candidates/<candidate_id>/notes``); the
    fake's method named ``endpoint`` is called with the request and the path values.
    """

    method: str
    path: str
    endpoint: str
    #: counted against the rate window (admin-free reads and writes are)
    metered: bool = True


@dataclass(frozen=True)
class Logged:
    """One request the fake received (after auth), for tests to read back."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    status: int
    at: float

    def json(self) -> Any:
        """The request body parsed as JSON."""
        return json.loads(self.body) if self.body else None


@dataclass(frozen=True)
class Fault:
    """A fault to inject: ``kind`` is ``429``, ``5xx``, ``slow`` or ``timeout``.

    ``429`` and ``5xx`` answer before the request is processed; ``slow`` processes it
    after ``seconds``; ``timeout`` processes it and answers only after ``seconds`` (longer
    than the client waits), so the client cannot know it was processed. That answer carries
    ``X-Sandbox-Fault: timeout`` (:data:`FAULT_HEADER`): a test's HTTP client can raise its
    read timeout on it at once, with ``seconds=0``, instead of waiting for a real timeout.
    """

    kind: str
    status: int = 0
    retry_after: float | None = 1.0
    seconds: float = 0.0


class Faults:
    """Fault injection switches, shared by every request of one fake (thread-safe).

    ``queue`` faults hit the next matching requests in order; ``rate`` (0..1) picks a
    random fault of ``kinds`` for that share of requests, from a seeded generator so runs
    repeat. ``paths`` limits both to requests whose path contains one of the strings.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[Fault] = deque()
        self.rate = 0.0
        self.kinds: tuple[Fault, ...] = ()
        self.paths: tuple[str, ...] = ()
        self._random = random.Random(1)
        self.injected: dict[str, int] = {}

    def add(self, fault: Fault, count: int = 1) -> None:
        """Queue ``fault`` for the next ``count`` matching requests."""
        with self._lock:
            self._queue.extend([fault] * count)

    def rate_limited(self, count: int = 1, *, retry_after: float | None = 1.0) -> None:
        """The next ``count`` requests answer 429."""
        self.add(Fault("429", 429, retry_after), count)

    def server_errors(self, count: int = 1, *, status: int = 503) -> None:
        """The next ``count`` requests answer ``status`` without processing."""
        self.add(Fault("5xx", status), count)

    def slow(self, count: int = 1, *, seconds: float = 0.2) -> None:
        """The next ``count`` requests are processed after ``seconds``."""
        self.add(Fault("slow", seconds=seconds), count)

    def timeouts(self, count: int = 1, *, seconds: float = 2.0) -> None:
        """The next ``count`` requests are processed, then answered after ``seconds``
        (marked with :data:`FAULT_HEADER`; tests pass ``seconds=0``)."""
        self.add(Fault("timeout", seconds=seconds), count)

    def random(
        self,
        rate: float,
        kinds: Iterable[Fault],
        *,
        seed: int = 1,
        paths: Iterable[str] = (),
    ) -> None:
        """Inject one of ``kinds`` into a ``rate`` share of requests (0 turns it off)."""
        with self._lock:
            self.rate = rate
            self.kinds = tuple(kinds)
            self.paths = tuple(paths)
            self._random = random.Random(seed)

    def clear(self) -> None:
        """No more faults."""
        with self._lock:
            self._queue.clear()
            self.rate = 0.0

    def take(self, path: str) -> Fault | None:
        """The fault for a request to ``path``, if any."""
        with self._lock:
            if self.paths and not any(p in path for p in self.paths):
                return None
            fault = None
            if self._queue:
                fault = self._queue.popleft()
            elif self.rate and self.kinds and self._random.random() < self.rate:
                fault = self._random.choice(self.kinds)
            if fault is not None:
                self.injected[fault.kind] = self.injected.get(fault.kind, 0) + 1
            return fault


class RateWindow:
    """A fixed-window request limit: ``limit`` requests per ``seconds`` (real time)."""

    def __init__(
        self, limit: int, seconds: float, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.seconds = seconds
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._start = 0.0
        self._used = 0
        self.rejected = 0
        self.allowed = 0

    def take(self) -> tuple[bool, int, float]:
        """Count one request: (allowed, remaining in the window, seconds until it resets)."""
        with self._lock:
            now = self._monotonic()
            if now - self._start >= self.seconds:
                self._start, self._used = now, 0
            reset = max(0.0, self._start + self.seconds - now)
            if self._used >= self.limit:
                self.rejected += 1
                return False, 0, reset
            self._used += 1
            self.allowed += 1
            return True, self.limit - self._used, reset


class FakeProvider:
    """Base class of the sandbox fakes: a WSGI application.

    Subclasses set ``name`` and ``routes`` and implement :meth:`authorize`, and may
    override :meth:`rate_headers`, :meth:`too_many_requests` and :meth:`server_error` to
    answer in their provider's documented shapes.
    """

    name: ClassVar[str] = ""
    routes: ClassVar[tuple[Route, ...]] = ()

    def __init__(self, *, clock: Clock | None = None, rate: RateWindow | None = None) -> None:
        self.clock = clock or SystemClock()
        self.rate = rate
        self.faults = Faults()
        self.lock = threading.RLock()
        self.requests: list[Logged] = []
        self.log_bodies = True
        self._map = Map(
            [Rule(r.path, endpoint=r, methods=[r.method]) for r in self.routes],
            strict_slashes=False,
        )
        # Routes match on path and method only, so one adapter serves every request
        # (binding one per request costs more than the match).
        self._adapter = self._map.bind("sandbox")

    # -- to override -------------------------------------------------------------------

    def authorize(self, request: Request) -> Response | None:
        """None when the request's credentials are good, else the provider's 401."""
        return None

    def rate_headers(self, remaining: int, reset: float) -> dict[str, str]:
        """Rate-limit headers on every metered answer."""
        assert self.rate is not None
        return {
            "X-RateLimit-Limit": str(self.rate.limit),
            "X-RateLimit-Remaining": str(remaining),
        }

    def too_many_requests(self, retry_after: float | None) -> Response:
        """The provider's 429."""
        headers = {} if retry_after is None else {"Retry-After": _seconds(retry_after)}
        return json_response({"message": "Too Many Requests"}, 429, headers)

    def server_error(self, status: int) -> Response:
        """The provider's 5xx."""
        return json_response({"message": "Service Unavailable"}, status)

    # -- WSGI --------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        response = self.handle(request)
        return response(environ, start_response)

    def handle(self, request: Request) -> Response:
        """Route, authorise, meter, inject faults, call the endpoint, log."""
        try:
            route, values = self._adapter.match(request.path, request.method)
        except MethodNotAllowed:
            return json_response({"message": "Method Not Allowed"}, 405)
        except NotFound:
            return json_response({"message": f"no such path in the {self.name} sandbox"}, 404)
        denied = self.authorize(request)
        if denied is not None:
            return denied
        extra: dict[str, str] = {}
        if self.rate is not None and route.metered:
            allowed, remaining, reset = self.rate.take()
            extra = self.rate_headers(remaining, reset)
            if not allowed:
                response = self.too_many_requests(max(reset, 0.001))
                response.headers.update(extra)
                return response
        fault = self.faults.take(request.path) if route.metered else None
        if fault is not None and fault.kind == "429":
            response = self.too_many_requests(fault.retry_after)
            response.headers.update(extra)
            return response
        if fault is not None and fault.kind == "5xx":
            return self.server_error(fault.status or 503)
        if fault is not None and fault.kind == "slow":
            time.sleep(fault.seconds)
        try:
            response = getattr(self, route.endpoint)(request, **values)
        except HTTPException as exc:  # pragma: no cover - endpoints answer their own errors
            response = json_response({"message": exc.description}, exc.code or 500)
        response.headers.update(extra)
        self._log(request, response.status_code)
        if fault is not None and fault.kind == "timeout":
            response.headers[FAULT_HEADER] = "timeout"
            if fault.seconds > 0:
                time.sleep(fault.seconds)
        return response

    def _log(self, request: Request, status: int) -> None:
        logged = Logged(
            request.method,
            request.path,
            request.query_string.decode("latin-1"),
            {k: v for k, v in request.headers.items() if k.lower() != "authorization"},
            request.get_data(cache=True) if self.log_bodies else b"",
            status,
            time.monotonic(),
        )
        with self.lock:
            self.requests.append(logged)

    def requests_to(self, method: str, path_part: str) -> list[Logged]:
        """Logged requests with ``method`` whose path contains ``path_part``."""
        with self.lock:
            return [r for r in self.requests if r.method == method and path_part in r.path]


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"


@dataclass
class SandboxServer:
    """Serve a WSGI app (a fake, or a dispatcher of several) on loopback in a thread.

    ``port=0`` picks a free port; :attr:`url` is the base URL once started. Use it as a
    context manager, or call :meth:`start` and :meth:`stop`. Connections are kept alive
    between requests (:class:`outreach.sandbox.server.KeepAliveServer`), as the providers'
    own servers keep them: an SDK that reuses its connections pays no handshake per call.
    """

    app: Callable[..., Any]
    host: str = "127.0.0.1"
    port: int = 0
    _server: KeepAliveServer | None = field(default=None, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        if self._server is None:
            raise RuntimeError("the sandbox server is not started")
        return f"http://{self.host}:{self._server.server_port}"

    def start(self) -> SandboxServer:
        """Bind and serve in a daemon thread."""
        self._server = KeepAliveServer((self.host, self.port), self.app)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"sandbox:{self.url}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.close_connections()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
