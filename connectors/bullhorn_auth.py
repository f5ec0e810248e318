"""Bullhorn's two-step sign-in: OAuth for an access token, then REST ``/login`` for a session.

1. **Access token** from ``{BULLHORN_AUTH_URL}/token``: ``grant_type=refresh_token`` with the
   stored refresh token, or, with ``BULLHORN_USERNAME``/``BULLHORN_PASSWORD``, an
   authorization code read from the ``Location`` of ``{BULLHORN_AUTH_URL}/authorize``
   (``action=Login``) and exchanged with ``grant_type=authorization_code``. Access tokens
   live about ten minutes.
2. **Session** from ``{BULLHORN_REST_URL}/login?version=*&access_token=…``: a ``BhRestToken``
   (sent as the ``BhRestToken`` header) and the corporation's own ``restUrl`` that every
   later call is made against. A session that times out answers 401; :class:`BhRestAuth`
   then signs in again (a fresh access token, a fresh session) and resends once.

Refresh tokens are single-use: every token answer carries a new one and the old one is dead.
The new one is written at once to a private file (``0600``, :class:`RefreshTokenFile`), never
to logs or to the database, before it is used: a crash after the exchange must not lose the
only valid token. The file remembers a fingerprint of the ``BULLHORN_REFRESH_TOKEN`` it
descends from, so setting a new token in the environment wins over an older file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import re
import threading
from collections.abc import Generator, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx

from outreach.errors import ConfigError, PermanentError, RetryableError
from outreach.private_files import create_private, write_private_text

__all__ = ["BhRestAuth", "BullhornLogin", "RefreshTokenFile", "Session", "redact"]

_PROVIDER = "bullhorn"


_SECRET_PARAM = re.compile(
    r"(?i)\b(access_token|refresh_token|client_secret|password|code|BhRestToken)=[^&\s\"']*"
)


class _RedactSecrets(logging.Filter):
    """Masks Bullhorn's secrets in httpx's request log lines (``outreach --verbose``): the
    REST login takes the access token, and the API user's login its password, in the URL."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(str(a)) if "=" in str(a) else a for a in record.args)
        if isinstance(record.msg, str) and "=" in record.msg:
            record.msg = redact(record.msg)
        return True


def redact(text: str) -> str:
    """``text`` with the values of Bullhorn's secret URL parameters masked."""
    return _SECRET_PARAM.sub(r"\1=***", text)


if not any(isinstance(f, _RedactSecrets) for f in logging.getLogger("httpx").filters):
    logging.getLogger("httpx").addFilter(_RedactSecrets())

_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _thread_lock(path: Path) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(path.resolve(), threading.Lock())


def _fingerprint(token: str | None) -> str | None:
    return hashlib.sha256(token.encode()).hexdigest()[:16] if token else None


class RefreshTokenFile:
    """The latest refresh token, in a file only its owner can read.

    ``origin`` is the refresh token configured in the environment: a file written from
    another origin (the user has since set a new ``BULLHORN_REFRESH_TOKEN``) is ignored.
    """

    def __init__(self, path: Path, origin: str | None) -> None:
        self.path = path
        self.origin = _fingerprint(origin)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the file while a token is exchanged: one exchange at a time, across the
        threads of this process (a sync and a write-back) and across processes."""
        with _thread_lock(self.path):
            lock_path = self.path.with_name(self.path.name + ".lock")
            try:
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                create_private(lock_path)
            except OSError as exc:
                raise ConfigError(
                    f"bullhorn: cannot create {lock_path} beside the refresh token file "
                    f"({exc.strerror}); set BULLHORN_TOKEN_FILE to a writable path"
                ) from None
            with lock_path.open("a") as handle:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def load(self) -> str | None:
        """The stored token descending from ``origin``, or None."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("origin") != self.origin:
            return None
        token = data.get("refresh_token")
        return token if isinstance(token, str) and token else None

    def save(self, token: str) -> None:
        """Keep ``token`` (``0600``) in place of the one it replaces."""
        write_private_text(
            self.path, json.dumps({"refresh_token": token, "origin": self.origin}) + "\n"
        )


class Session:
    """One REST session: the ``BhRestToken`` and the corporation's ``restUrl``."""

    __slots__ = ("rest_url", "token")

    def __init__(self, token: str, rest_url: str) -> None:
        self.token = token
        self.rest_url = rest_url


class BullhornLogin:
    """Gets and renews Bullhorn sessions (thread-safe); counts what it did for tests.

    Example::

        login = BullhornLogin("client-id", "secret", refresh_token="rt-…",
                              auth_url="https://auth.bullhornstaffing.com/oauth",
                              login_url="https://rest.bullhornstaffing.com/rest-services",
                              token_file=RefreshTokenFile(Path(".bullhorn-token"), "rt-…"))
        session = login.session()      # BhRestToken and restUrl
    """

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        *,
        auth_url: str,
        login_url: str,
        refresh_token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        token_file: RefreshTokenFile | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
    ) -> None:
        if not refresh_token and not (username and password):
            raise ConfigError(
                "bullhorn: set BULLHORN_REFRESH_TOKEN, or BULLHORN_USERNAME and "
                "BULLHORN_PASSWORD, beside BULLHORN_CLIENT_ID and BULLHORN_CLIENT_SECRET"
            )
        self.auth_url = auth_url.rstrip("/")
        self.login_url = login_url.rstrip("/")
        self._client = (client_id, client_secret)
        self._user = (username, password) if username and password else None
        self.token_file = token_file
        self._refresh_token = refresh_token
        self._http = httpx.Client(transport=transport, timeout=timeout, follow_redirects=False)
        self._lock = threading.Lock()
        self._session: Session | None = None
        self.logins = 0
        self.refreshes = 0

    def close(self) -> None:
        """Close the sign-in connection pool."""
        self._http.close()

    def session(self) -> Session:
        """The current session, signing in when there is none."""
        with self._lock:
            if self._session is None:
                self._session = self._sign_in()
            return self._session

    def renew(self, stale: str | None) -> Session:
        """A new session after ``stale`` was refused (kept if another thread renewed it)."""
        with self._lock:
            if self._session is None or self._session.token == stale:
                self._session = self._sign_in()
            return self._session

    # -- the two steps ---------------------------------------------------------------

    def _sign_in(self) -> Session:
        access = self._access_token()
        response = self._send(
            "POST",
            f"{self.login_url}/login",
            params={"version": "*", "access_token": access},
            what="the REST login (BULLHORN_REST_URL)",
        )
        if response.status_code >= 400:
            raise ConfigError(
                f"bullhorn: the REST login refused the access token (HTTP "
                f"{response.status_code}); check BULLHORN_REST_URL (your data center's "
                "rest-services URL)"
            )
        try:
            body = response.json()
            token, rest_url = str(body["BhRestToken"]), str(body["restUrl"])
        except (ValueError, KeyError, TypeError):
            raise PermanentError(
                "bullhorn: the REST login answered without BhRestToken and restUrl; check "
                "BULLHORN_REST_URL",
                provider=_PROVIDER,
            ) from None
        if urlsplit(rest_url).scheme not in ("http", "https"):
            raise PermanentError(
                "bullhorn: the REST login's restUrl is not an http(s) URL", provider=_PROVIDER
            )
        self.logins += 1
        return Session(token, rest_url)

    def _access_token(self) -> str:
        if self.token_file is None:
            return self._exchange()
        with self.token_file.locked():
            # Another connector or process may have rotated the token since: the file
            # always holds the newest one.
            self._refresh_token = self.token_file.load() or self._refresh_token
            return self._exchange()

    def _exchange(self) -> str:
        if self._refresh_token:
            form = {"grant_type": "refresh_token", "refresh_token": self._refresh_token}
            answer = self._token(form, refused=None if self._user else _REFUSED_REFRESH)
            if answer is not None:
                self.refreshes += 1
                return answer
            # The stored refresh token is dead; sign in with the user instead.
            self._refresh_token = None
        code = self._authorization_code()
        answer = self._token(
            {"grant_type": "authorization_code", "code": code}, refused=_REFUSED_CODE
        )
        assert answer is not None
        return answer

    def _token(self, form: dict[str, str], *, refused: str | None) -> str | None:
        client_id, client_secret = self._client
        response = self._send(
            "POST",
            f"{self.auth_url}/token",
            data={**form, "client_id": client_id, "client_secret": client_secret},
            what="the OAuth token URL (BULLHORN_AUTH_URL)",
        )
        if response.status_code in (400, 401, 403):
            if refused is None:
                return None
            raise ConfigError(f"bullhorn: {refused}")
        if response.status_code >= 300:
            raise PermanentError(
                f"bullhorn: the OAuth token URL answered HTTP {response.status_code}; "
                "check BULLHORN_AUTH_URL",
                provider=_PROVIDER,
                status=response.status_code,
            )
        try:
            body = response.json()
            access = str(body["access_token"])
        except (ValueError, KeyError, TypeError):
            raise PermanentError(
                "bullhorn: the OAuth token answer has no access_token; check BULLHORN_AUTH_URL",
                provider=_PROVIDER,
            ) from None
        rotated = body.get("refresh_token")
        if isinstance(rotated, str) and rotated:
            # Single-use: the old one is dead from now on, so keep the new one first.
            self._refresh_token = rotated
            if self.token_file is not None:
                try:
                    self.token_file.save(rotated)
                except OSError as exc:
                    raise ConfigError(
                        "bullhorn: the new refresh token could not be kept in "
                        f"BULLHORN_TOKEN_FILE ({exc.strerror or type(exc).__name__}); the old "
                        "one is spent, so set BULLHORN_REFRESH_TOKEN to a fresh one once the "
                        "file can be written"
                    ) from None
        return access

    def _authorization_code(self) -> str:
        if self._user is None:
            raise ConfigError(f"bullhorn: {_REFUSED_REFRESH}")
        username, password = self._user
        response = self._send(
            "GET",
            f"{self.auth_url}/authorize",
            params={
                "client_id": self._client[0],
                "response_type": "code",
                "action": "Login",
                "username": username,
                "password": password,
            },
            what="the OAuth authorize URL (BULLHORN_AUTH_URL)",
        )
        location = response.headers.get("Location", "")
        codes = parse_qs(urlsplit(location).query).get("code")
        if response.status_code not in (301, 302, 303, 307) or not codes:
            raise ConfigError(f"bullhorn: {_REFUSED_USER}")
        return codes[0]

    def _send(self, method: str, url: str, *, what: str, **kwargs: object) -> httpx.Response:
        try:
            response = self._http.request(method, url, **kwargs)  # type: ignore[arg-type]
        except httpx.TransportError as exc:
            raise RetryableError(
                f"bullhorn: cannot reach {what} ({type(exc).__name__})", provider=_PROVIDER
            ) from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise RetryableError(
                f"bullhorn: {what} answered HTTP {response.status_code}",
                provider=_PROVIDER,
                status=response.status_code,
            )
        return response


_REFUSED_REFRESH = (
    "the OAuth token URL refused the refresh token (used already, revoked, or for another "
    "client); set a new BULLHORN_REFRESH_TOKEN, or BULLHORN_USERNAME and BULLHORN_PASSWORD, "
    "and check BULLHORN_CLIENT_ID and BULLHORN_CLIENT_SECRET"
)
_REFUSED_CODE = (
    "the OAuth token URL refused the authorization code; check BULLHORN_CLIENT_ID and "
    "BULLHORN_CLIENT_SECRET"
)
_REFUSED_USER = (
    "the OAuth authorize URL gave no authorization code; check BULLHORN_USERNAME, "
    "BULLHORN_PASSWORD and BULLHORN_CLIENT_ID (the API user must have accepted the terms once)"
)


class BhRestAuth(httpx.Auth):
    """Sends the session's ``BhRestToken``; on a 401 signs in again and resends once.

    A 401 means the session was refused before anything was processed, so even a create
    (``PUT /entity/Note``) is safe to send again.
    """

    requires_response_body = False

    def __init__(self, login: BullhornLogin) -> None:
        self.login = login

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        """Send with the current session; renew it once on a 401."""
        token = self.login.session().token
        request.headers["BhRestToken"] = token
        response = yield request
        if response.status_code == 401:
            request.headers["BhRestToken"] = self.login.renew(token).token
            yield request
