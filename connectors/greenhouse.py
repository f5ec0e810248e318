"""Greenhouse Harvest connectors: v3 (OAuth client credentials) and legacy v1 (API key).

* :class:`GreenhouseV3` gets a Bearer token from the token URL (Basic client id/secret,
  ``grant_type=client_credentials``, ``sub`` = the acting user), caches it until shortly
  before its ``expires_at`` and renews it once on a 401. Lists put the filters and
  ``per_page`` on the first request only and then follow the ``Link: rel="next"`` URL,
  whose ``cursor`` must be the only parameter. v3 parents do not carry child ids, so a
  candidate's stage comes from ``/applications?candidate_ids=…`` and stage, job and user
  names from cached lookups; an incremental run also reads applications changed since the
  cursor, so a stage move that leaves the candidate untouched is still seen.
* :class:`GreenhouseV1` is used when only ``GREENHOUSE_API_KEY`` is set: Basic auth,
  ``updated_after`` and ``per_page=500``, ``Link`` rel next; notes go to the activity feed
  with ``On-Behalf-Of``.

Greenhouse has no task API: a task becomes a note marked as a task, and the engine keeps
the task in its own queue. The v3 field names the fake and this module use are recorded in
docs/crm-apis.md (Greenhouse publishes no v3 response bodies).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Generator, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from connectors.base import Connector, NoteRef, Page, TaskSpec
from connectors.http import ApiClient
from outreach.clock import Clock, SystemClock, parse_instant
from outreach.errors import ConfigError, PermanentError, RetryableError
from outreach.profiles import pick_profile

__all__ = ["ClientCredentials", "GreenhouseV1", "GreenhouseV3", "flatten_candidate"]

# Changes made while a sync runs are read again by the next one.
_OVERLAP = timedelta(minutes=5)


class GreenhouseV1(Connector):
    """Harvest v1: Basic auth with the API key as user name and an empty password."""

    name: ClassVar[str] = "greenhouse"
    page_size: ClassVar[int] = 500
    # Harvest allows 50 requests per 10 seconds; the X-RateLimit headers pace the rest.
    requests_per_second: ClassVar[float | None] = 5.0

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = "https://harvest.greenhouse.io/v1",
        user_id: str | None = None,
        clock: Clock | None = None,
        transport: httpx.BaseTransport | None = None,
        **client_options: Any,
    ) -> None:
        self.user_id = user_id
        self.clock = clock or SystemClock()
        self.client = ApiClient(
            "greenhouse",
            base_url,
            credential="GREENHOUSE_API_KEY",
            auth=(api_key, ""),
            rate=self.requests_per_second,
            transport=transport,
            **client_options,
        )

    def close(self) -> None:
        """Release the connection pool."""
        self.client.close()

    def pages(self, cursor: str | None, *, full: bool = False) -> Iterator[Page]:
        """Candidates updated since the cursor's ``since`` (all with ``full``)."""
        state = json.loads(cursor) if cursor else {}
        started = state.get("started") or self.clock.now().isoformat()
        since = None if full else state.get("since")
        next_url = state.get("next") if not full or state.get("full") else None
        if next_url:
            response = self.client.get(next_url)
        else:
            params: dict[str, Any] = {"per_page": self.page_size}
            if since:
                params["updated_after"] = (parse_instant(since) - _OVERLAP).isoformat()
            response = self.client.get("/candidates", params=params)
        guard = _LoopGuard(self.client)
        while True:
            body = _json_list(response)
            records, problems = [], []
            for raw in body:
                try:
                    records.append(flatten_candidate(raw))
                except (KeyError, TypeError, ValueError, AttributeError) as exc:
                    problems.append((_source_id(raw), f"unreadable candidate: {exc}"))
            next_url = guard.next_url(response)
            if next_url:
                state = {"since": since, "next": next_url, "started": started, "full": full}
                yield Page(records, json.dumps(state), problems)
                response = self.client.get(next_url)
            else:
                yield Page(records, json.dumps({"since": started}), problems, done=True)
                return

    def write_note(self, ref: NoteRef, text: str) -> str | None:
        """Add a note to the candidate's activity feed, on behalf of GREENHOUSE_USER_ID."""
        if not self.user_id:
            raise ConfigError(
                "greenhouse: notes need GREENHOUSE_USER_ID (the user the engine writes as, "
                "sent as On-Behalf-Of)"
            )
        response = self.client.post(
            f"/candidates/{quote(ref.external_id, safe='')}/activity_feed/notes",
            headers={"On-Behalf-Of": self.user_id},
            json={"user_id": self.user_id, "body": text, "visibility": "public"},
        )
        note_id = response.json().get("id") if response.content else None
        return str(note_id) if note_id is not None else None

    def create_task(self, task: TaskSpec) -> str | None:
        """Greenhouse has no task API: log the task as a note; the engine's queue keeps it."""
        due = task.due_at.strftime("%Y-%m-%d %H:%M UTC")
        self.write_note(NoteRef(task.external_id), f"[Task, due {due}] {task.title}\n\n{task.body}")
        return None


class ClientCredentials(httpx.Auth):
    """Harvest v3 Bearer tokens from the OAuth client-credentials grant.

    The token is fetched on first use, reused until a minute before its ``expires_at``,
    and renewed once when the API answers 401 (a token revoked early). The token request
    sends the client id and secret as Basic auth and ``grant_type=client_credentials`` and
    ``sub`` (the Greenhouse user the engine acts as) in the form body.
    """

    requires_response_body = False
    #: renew this long before ``expires_at``
    margin = timedelta(seconds=60)

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        user_id: str | None,
        *,
        clock: Clock,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.token_url = token_url
        self.user_id = user_id
        self.clock = clock
        self._credentials = (client_id, client_secret)
        self._http = httpx.Client(transport=transport, timeout=timeout)
        self._lock = threading.Lock()
        self._header: str | None = None
        self._expires_at: datetime | None = None
        self.fetched = 0

    def close(self) -> None:
        """Close the token endpoint's connection pool."""
        self._http.close()

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        """Send with the cached token; on a 401 renew it once and send again."""
        request.headers["Authorization"] = self.header()
        response = yield request
        if response.status_code == 401:
            request.headers["Authorization"] = self.header(renew=True)
            yield request

    def header(self, *, renew: bool = False) -> str:
        """The ``Authorization`` value, fetching a token when none is valid."""
        with self._lock:
            now = self.clock.now()
            fresh = (
                self._header is not None
                and self._expires_at is not None
                and now < self._expires_at - self.margin
            )
            if renew or not fresh:
                self._header, self._expires_at = self._fetch()
            assert self._header is not None
            return self._header

    def _fetch(self) -> tuple[str, datetime]:
        form = {"grant_type": "client_credentials"}
        if self.user_id:
            form["sub"] = self.user_id
        try:
            response = self._http.post(self.token_url, data=form, auth=self._credentials)
        except httpx.TransportError as exc:
            raise RetryableError(
                f"greenhouse: cannot reach the token URL ({type(exc).__name__}); "
                "check GREENHOUSE_AUTH_URL",
                provider="greenhouse",
            ) from exc
        if response.status_code in (400, 401, 403):
            raise ConfigError(
                f"greenhouse: the token URL refused the client credentials (HTTP "
                f"{response.status_code}); check GREENHOUSE_CLIENT_ID, GREENHOUSE_CLIENT_SECRET "
                "and GREENHOUSE_USER_ID (the user must exist and have the Harvest permissions)"
            )
        if response.status_code == 429 or response.status_code >= 500:
            raise RetryableError(
                f"greenhouse: the token URL answered HTTP {response.status_code}",
                provider="greenhouse",
                status=response.status_code,
            )
        try:
            body = response.json()
            header = f"{body['token_type']} {body['access_token']}"
            expires_at = parse_instant(str(body["expires_at"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise PermanentError(
                "greenhouse: the token URL answered without token_type, access_token and "
                f"expires_at ({type(exc).__name__}); check GREENHOUSE_AUTH_URL",
                provider="greenhouse",
            ) from None
        self.fetched += 1
        return header, expires_at


class _Lookup:
    """Names of v3 objects by id (job stages, jobs, users), fetched once per connector."""

    chunk = 100

    def __init__(self, client: ApiClient, path: str) -> None:
        self.client = client
        self.path = path
        self.items: dict[str, dict[str, Any]] = {}

    def resolve(self, ids: Iterable[Any]) -> None:
        wanted = sorted({str(i) for i in ids if i is not None} - self.items.keys())
        for start in range(0, len(wanted), self.chunk):
            chunk = wanted[start : start + self.chunk]
            params = {"ids": ",".join(chunk), "per_page": self.chunk}
            for body in _v3_lists(self.client, self.path, params):
                for item in body:
                    if isinstance(item, dict) and "id" in item:
                        self.items[str(item["id"])] = item
            for missing in set(chunk) - self.items.keys():
                self.items[missing] = {}  # deleted or not visible: asked once

    def get(self, item_id: Any) -> dict[str, Any]:
        return self.items.get(str(item_id), {}) if item_id is not None else {}


def _v3_lists(client: ApiClient, path: str, params: dict[str, Any]) -> Iterator[list[Any]]:
    """Every page of a v3 list: filters on the first request, then only the Link URL."""
    guard = _LoopGuard(client)
    response = client.get(path, params=params)
    while True:
        yield _json_list(response)
        next_url = guard.next_url(response)
        if not next_url:
            return
        response = client.get(next_url)


class GreenhouseV3(Connector):
    """Harvest v3: OAuth client credentials, cursor paging, applications joined by id."""

    name: ClassVar[str] = "greenhouse"
    page_size: ClassVar[int] = 500
    # 50 requests per 10 seconds; a little under, so latency jitter never crosses it.
    requests_per_second: ClassVar[float | None] = 4.9

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        user_id: str,
        *,
        base_url: str = "https://harvest.greenhouse.io/v3",
        auth_url: str = "https://auth.greenhouse.io/token",
        clock: Clock | None = None,
        transport: httpx.BaseTransport | None = None,
        **client_options: Any,
    ) -> None:
        self.user_id = user_id
        self.clock = clock or SystemClock()
        self.auth = ClientCredentials(
            auth_url, client_id, client_secret, user_id, clock=self.clock, transport=transport
        )
        self.client = ApiClient(
            "greenhouse",
            base_url,
            credential="GREENHOUSE_CLIENT_ID/GREENHOUSE_CLIENT_SECRET",
            auth=self.auth,
            rate=self.requests_per_second,
            transport=transport,
            **client_options,
        )
        self.stages = _Lookup(self.client, "/job_stages")
        self.jobs = _Lookup(self.client, "/jobs")
        self.users = _Lookup(self.client, "/users")

    def close(self) -> None:
        """Release the connection pools."""
        self.client.close()
        self.auth.close()

    def pages(self, cursor: str | None, *, full: bool = False) -> Iterator[Page]:
        """Candidates updated since the cursor, then candidates whose applications changed.

        The cursor names the phase (``candidates`` or ``applications``) and the Link URL
        to resume from, so a killed run restarts at the first page it did not commit.
        """
        state = json.loads(cursor) if cursor else {}
        started = state.get("started") or self.clock.now().isoformat()
        since = None if full else state.get("since")
        resuming = bool(state.get("next")) and (not full or state.get("full"))
        phase = state.get("phase", "candidates") if resuming else "candidates"
        next_url = state.get("next") if resuming else None
        base = {"since": since, "started": started, "full": full}
        if phase == "candidates":
            params: dict[str, Any] = {"per_page": self.page_size}
            if since:
                params["updated_at"] = "gte|" + _iso(parse_instant(since) - _OVERLAP)
            response = (
                self.client.get(next_url)
                if next_url
                else self.client.get("/candidates", params=params)
            )
            guard = _LoopGuard(self.client)
            while True:
                candidates = _json_list(response)
                page = self._join(candidates)
                next_url = guard.next_url(response)
                if next_url:
                    page.cursor = json.dumps({**base, "phase": "candidates", "next": next_url})
                    yield page
                    response = self.client.get(next_url)
                    continue
                if since is None:
                    page.cursor, page.done = json.dumps({"since": started}), True
                    yield page
                    return
                page.cursor = json.dumps({**base, "phase": "applications", "next": None})
                yield page
                break
            next_url = None
        yield from self._changed_applications(since, next_url, base, started)

    def _changed_applications(
        self, since: str | None, next_url: str | None, base: dict[str, Any], started: str
    ) -> Iterator[Page]:
        assert since is not None
        if next_url:
            response = self.client.get(next_url)
        else:
            response = self.client.get(
                "/applications",
                params={
                    "per_page": self.page_size,
                    "updated_at": "gte|" + _iso(parse_instant(since) - _OVERLAP),
                },
            )
        guard = _LoopGuard(self.client)
        while True:
            applications = _json_list(response)
            ids = sorted(
                {
                    str(a["candidate_id"])
                    for a in applications
                    if isinstance(a, dict) and a.get("candidate_id") is not None
                }
            )
            candidates: list[Any] = []
            for start in range(0, len(ids), self.page_size):
                chunk = ids[start : start + self.page_size]
                for body in _v3_lists(
                    self.client, "/candidates", {"ids": ",".join(chunk), "per_page": len(chunk)}
                ):
                    candidates.extend(body)
            page = self._join(candidates)
            next_url = guard.next_url(response)
            if next_url:
                page.cursor = json.dumps({**base, "phase": "applications", "next": next_url})
                yield page
                response = self.client.get(next_url)
            else:
                page.cursor, page.done = json.dumps({"since": started}), True
                yield page
                return

    def _join(self, candidates: list[Any]) -> Page:
        """Flatten a page of v3 candidates with their applications, stages, jobs, users."""
        readable = [c for c in candidates if isinstance(c, dict) and c.get("id") is not None]
        problems = [
            (_source_id(c), "unreadable candidate: no id") for c in candidates if c not in readable
        ]
        by_candidate: dict[str, list[dict[str, Any]]] = {}
        ids = [str(c["id"]) for c in readable]
        for start in range(0, len(ids), self.page_size):
            chunk = ids[start : start + self.page_size]
            params = {"candidate_ids": ",".join(chunk), "per_page": self.page_size}
            for body in _v3_lists(self.client, "/applications", params):
                for app in body:
                    if isinstance(app, dict) and app.get("candidate_id") is not None:
                        by_candidate.setdefault(str(app["candidate_id"]), []).append(app)
        apps = [a for group in by_candidate.values() for a in group]
        self.stages.resolve(a.get("current_stage_id") for a in apps)
        self.jobs.resolve(a.get("job_id") for a in apps)
        self.users.resolve(
            [c.get("recruiter_id") for c in readable] + [a.get("recruiter_id") for a in apps]
        )
        records = []
        for raw in readable:
            try:
                records.append(
                    flatten_candidate(self._as_v1(raw, by_candidate.get(str(raw["id"]))))
                )
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                problems.append((_source_id(raw), f"unreadable candidate: {exc}"))
        return Page(records, None, problems)

    def _as_v1(self, raw: dict[str, Any], apps: list[dict[str, Any]] | None) -> dict[str, Any]:
        """The v1 candidate shape (applications with stage and job names, recruiter)."""

        def user(user_id: Any) -> dict[str, Any] | None:
            found = self.users.get(user_id)
            if user_id is None:
                return None
            name = found.get("name") or " ".join(
                str(found[k]) for k in ("first_name", "last_name") if found.get(k)
            )
            return {"id": user_id, "name": name or None}

        applications = []
        for app in apps or []:
            stage = self.stages.get(app.get("current_stage_id"))
            job = self.jobs.get(app.get("job_id"))
            applications.append(
                {
                    "status": app.get("status"),
                    "prospect": app.get("prospect"),
                    "last_activity_at": app.get("last_activity_at") or app.get("updated_at"),
                    "current_stage": {"name": stage.get("name")} if stage else None,
                    "jobs": [{"name": job.get("name")}] if job else [],
                    "recruiter": user(app.get("recruiter_id")),
                }
            )
        return {**raw, "applications": applications, "recruiter": user(raw.get("recruiter_id"))}

    def write_note(self, ref: NoteRef, text: str) -> str | None:
        """Add a note to the candidate (``POST /notes``); the token's user is the author."""
        response = self.client.post(
            "/notes",
            json={
                "candidate_id": int(ref.external_id)
                if ref.external_id.isdigit()
                else ref.external_id,
                "body": text,
                "visibility": "public",
            },
        )
        note_id = response.json().get("id") if response.content else None
        return str(note_id) if note_id is not None else None

    def create_task(self, task: TaskSpec) -> str | None:
        """Greenhouse has no task API: log the task as a note; the engine's queue keeps it."""
        due = task.due_at.strftime("%Y-%m-%d %H:%M UTC")
        self.write_note(NoteRef(task.external_id), f"[Task, due {due}] {task.title}\n\n{task.body}")
        return None


def _iso(at: datetime) -> str:
    at = at.astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


class _LoopGuard:
    """Follows ``Link: rel="next"`` and stops a provider that links back to a page.

    A link off the base URL's origin is refused here, before a cursor carrying it is
    committed: following it would send the credential to that host.
    """

    def __init__(self, client: ApiClient) -> None:
        self.client = client
        self.seen: set[str] = set()

    def next_url(self, response: httpx.Response) -> str | None:
        next_url = response.links.get("next", {}).get("url") or None
        if next_url:
            self.client.same_origin(next_url, what="the Link header")
        if next_url in self.seen:
            raise PermanentError(
                f"greenhouse: the Link header points back to {next_url}; stopping a "
                "pagination loop (the committed cursor is kept)",
                provider="greenhouse",
            )
        if next_url:
            self.seen.add(next_url)
        return next_url


def _json_list(response: httpx.Response) -> list[Any]:
    try:
        body = response.json()
    except ValueError:
        raise PermanentError(
            f"greenhouse: GET {response.request.url} did not return JSON "
            f"(HTTP {response.status_code}); the committed cursor is kept",
            provider="greenhouse",
        ) from None
    if not isinstance(body, list):
        raise ConfigError(
            f"greenhouse: GET {response.request.url} returned {type(body).__name__}, "
            "not a list; check GREENHOUSE_BASE_URL"
        )
    return body


def _source_id(raw: Any) -> str:
    return str(raw.get("id", "?")) if isinstance(raw, dict) else "?"


def _pick(items: list[dict[str, Any]] | None, preferred: tuple[str, ...]) -> str | None:
    values = [i for i in (items or []) if isinstance(i, dict) and i.get("value")]
    for kind in preferred:
        for item in values:
            if item.get("type") == kind:
                return str(item["value"])
    return str(values[0]["value"]) if values else None


def _application(raw: dict[str, Any]) -> dict[str, Any] | None:
    applications = [a for a in raw.get("applications") or [] if isinstance(a, dict)]
    if not applications:
        return None

    def rank(app: dict[str, Any]) -> tuple[int, int, str]:
        active = app.get("status") == "active"
        return (int(active), int(not app.get("prospect")), app.get("last_activity_at") or "")

    return max(applications, key=rank)


def flatten_candidate(raw: dict[str, Any]) -> dict[str, Any]:
    """A Harvest v1 candidate as the engine's import keys.

    The stage comes from the candidate's most relevant application (active before
    closed, applications before prospects, most recent activity): ``rejected`` or
    ``hired`` by its status, ``prospect`` for a prospect, else its current stage's name
    (mapped through ``stage_map.greenhouse``).
    """
    application = _application(raw)
    stage = None
    job_title = None
    recruiter = raw.get("recruiter") or {}
    if application is not None:
        status = application.get("status")
        if status in ("rejected", "hired"):
            stage = status
        elif application.get("prospect"):
            stage = "prospect"
        else:
            stage = (application.get("current_stage") or {}).get("name")
        jobs = application.get("jobs") or []
        job_title = jobs[0].get("name") if jobs else None
        recruiter = application.get("recruiter") or recruiter
    linkedin = next(
        (
            str(item["value"])
            for item in (raw.get("social_media_addresses") or [])
            + (raw.get("website_addresses") or [])
            if isinstance(item, dict) and "linkedin.com" in str(item.get("value", "")).lower()
        ),
        None,
    )
    links = [
        item.get("value")
        for item in (raw.get("social_media_addresses") or []) + (raw.get("website_addresses") or [])
        if isinstance(item, dict)
    ]
    record: dict[str, Any] = {
        "source": "greenhouse",
        "external_id": str(raw["id"]),
        "first_name": raw.get("first_name"),
        "last_name": raw.get("last_name"),
        "email": _pick(raw.get("email_addresses"), ("personal", "other", "work")),
        "phone": _pick(raw.get("phone_numbers"), ("mobile", "home", "other", "work")),
        "linkedin_url": linkedin,
        "x_url": pick_profile(links, "x"),
        "facebook_url": pick_profile(links, "facebook"),
        "stage": stage,
        "job_title": job_title,
        "recruiter_name": recruiter.get("name"),
        "owner_id": str(recruiter["id"]) if recruiter.get("id") is not None else None,
        "tags": [str(t) for t in raw.get("tags") or []],
        "updated_at": raw.get("updated_at"),
        # can_email false: the candidate may not be emailed (an opt-out the engine keeps).
        "email_opt_out": raw.get("can_email") is False,
    }
    for key, value in (raw.get("custom_fields") or {}).items():
        if isinstance(value, str | int | float | bool) and key not in record:
            record[key] = value
    if isinstance(record["updated_at"], str):
        datetime.fromisoformat(record["updated_at"].replace("Z", "+00:00"))  # fail early
    return record
