"""A fake Greenhouse Harvest: v3 (OAuth token, cursor paging) and legacy v1 on one server.

Served paths (base ``/v3`` and ``/v1``, token at ``/token``):

* ``POST /token``: client credentials as Basic auth, ``grant_type=client_credentials``
  in the query or the form, ``sub`` optional (a known user); answers ``token_type``,
  ``access_token`` and ``expires_at`` (one hour on the fake's clock).
* ``GET /v3/candidates``, ``/v3/applications``, ``/v3/job_stages``, ``/v3/jobs``,
  ``/v3/users``: filters (``ids``, ``candidate_ids``, ``updated_at=gte|ISO`` or ``gt|``)
  and ``per_page`` (1–500) on the first request; the ``Link: rel="next"`` URL carries an
  opaque ``cursor`` that must be the only parameter (400 otherwise). v3 parents carry no
  child ids: a candidate has ``recruiter_id`` but no applications; an application has
  ``candidate_id``, ``current_stage_id`` and ``job_id``.
* ``POST /v3/notes`` and ``GET /v3/notes?candidate_ids=``: notes written as the token's user.
* ``GET /v1/candidates`` (``per_page`` 1–500, ``page``, ``updated_after``, Link with
  ``next``/``last``), ``GET /v1/candidates/{id}``, ``POST
  /v1/candidates/{id}/activity_feed/notes`` (``On-Behalf-Of`` required) and ``GET
  /v1/candidates/{id}/activity_feed``, in the shapes of the published v1 examples.

Candidates come from a seeded population and are built on demand: a million cost no
memory until they change (:meth:`FakeGreenhouse.move`, :meth:`FakeGreenhouse.update`).
Rate limits (off unless a :class:`RateWindow` is given) answer like Harvest: ``X-RateLimit-
Limit``/``-Remaining`` on every answer, 429 with ``Retry-After`` (seconds) and
``X-RateLimit-Reset`` (a Unix time).
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import secrets
import time
from bisect import bisect_left
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import urlencode

from werkzeug.wrappers import Request, Response

from outreach.clock import Clock, parse_instant
from outreach.sandbox.base import FakeProvider, RateWindow, Route, json_response
from outreach.sandbox.seed import JOBS, RECRUITERS, SeedPerson

__all__ = ["STAGE_NAMES", "FakeGreenhouse"]

CANDIDATE_BASE = 10_000_000
APPLICATION_BASE = 20_000_000
JOB_BASE = 50_000
STAGE_BASE = 60_000
#: the Greenhouse stage an application sits in for each canonical stage (config stage_map)
STAGE_NAMES = {
    "applied": "Application Review",
    "screening": "Phone Screen",
    "interview": "Face to Face",
    "offer": "Offer",
    "hired": "Offer",
    "rejected": "Application Review",
}
_STAGE_ORDER = ("Application Review", "Phone Screen", "Face to Face", "Offer")
_MAX_PAGE = 500


def _iso(at: datetime) -> str:
    at = at.astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def _stage_id(job_index: int, stage_name: str) -> int:
    return STAGE_BASE + job_index * 10 + _STAGE_ORDER.index(stage_name)


class _View:
    """Positions whose update time passes a filter, in id order, indexable by offset.

    Unchanged positions have nondecreasing base times, so those at or after ``since``
    are one range ``[k, n)``; changed positions are few and kept sorted. Counting and
    seeking are binary searches, so a page of a million costs no more than a page of ten.
    """

    def __init__(
        self, roster: _Roster, changed: dict[int, datetime], since: datetime | None, strict: bool
    ) -> None:
        self.n = roster.n
        self.changed = changed
        positions = sorted(changed)
        if since is None:  # everything: the range alone covers every position
            self.k = 0
            self.excluded: list[int] = []
            self.included: list[int] = []
        else:
            self.k = roster.first_at_or_after(since, strict)
            self.excluded = [p for p in positions if p >= self.k]
            self.included = [
                p for p in positions if (changed[p] > since if strict else changed[p] >= since)
            ]
        self._included = set(self.included)
        self._excluded = set(self.excluded)

    def _below(self, x: int) -> int:
        return max(0, x - self.k) - bisect_left(self.excluded, x) + bisect_left(self.included, x)

    def __len__(self) -> int:
        return self._below(self.n)

    def _member(self, p: int) -> bool:
        return p in self._included or (p >= self.k and p not in self._excluded)

    def page(self, offset: int, count: int) -> list[int]:
        """Up to ``count`` positions starting at ``offset``."""
        if not self.excluded and not self.included and self.k == 0:
            return list(range(offset, min(self.n, offset + count)))
        lo, hi = 0, self.n
        while lo < hi:  # the first x with offset + 1 members in [0, x]
            mid = (lo + hi) // 2
            if self._below(mid + 1) > offset:
                hi = mid
            else:
                lo = mid + 1
        out: list[int] = []
        p = lo
        while p < self.n and len(out) < count:
            if self._member(p):
                out.append(p)
            p += 1
        return out


class _Roster:
    """The seeded people by position, with base update times from their creation."""

    def __init__(self, people: Sequence[SeedPerson]) -> None:
        self.people = people
        self.n = len(people)

    def base_time(self, position: int) -> datetime:
        return self.people[position].created_at

    def first_at_or_after(self, since: datetime, strict: bool) -> int:
        lo, hi = 0, self.n
        while lo < hi:
            mid = (lo + hi) // 2
            at = self.base_time(mid)
            if at > since or (not strict and at == since):
                hi = mid
            else:
                lo = mid + 1
        return lo


class FakeGreenhouse(FakeProvider):
    """Harvest v3 and v1 over one seeded population (see the module docstring)."""

    name: ClassVar[str] = "greenhouse"
    routes: ClassVar[tuple[Route, ...]] = (
        Route("POST", "/token", "token", metered=False),
        Route("GET", "/v3/candidates", "v3_candidates"),
        Route("GET", "/v3/applications", "v3_applications"),
        Route("GET", "/v3/job_stages", "v3_job_stages"),
        Route("GET", "/v3/jobs", "v3_jobs"),
        Route("GET", "/v3/users", "v3_users"),
        Route("GET", "/v3/notes", "v3_notes"),
        Route("POST", "/v3/notes", "v3_create_note"),
        Route("GET", "/v1/candidates", "v1_candidates"),
        Route("GET", "/v1/candidates/<int:candidate_id>", "v1_candidate"),
        Route("GET", "/v1/candidates/<int:candidate_id>/activity_feed", "v1_activity_feed"),
        Route("POST", "/v1/candidates/<int:candidate_id>/activity_feed/notes", "v1_create_note"),
    )

    def __init__(
        self,
        people: Sequence[SeedPerson] = (),
        *,
        client_id: str = "sandbox-greenhouse-client",
        client_secret: str = "sandbox-greenhouse-secret",
        api_key: str = "sandbox-greenhouse-key",
        clock: Clock | None = None,
        rate: RateWindow | None = None,
        token_lifetime: timedelta = timedelta(hours=1),
    ) -> None:
        super().__init__(clock=clock, rate=rate)
        for earlier, later in itertools.pairwise(people[:50]):
            if later.created_at < earlier.created_at:
                raise ValueError("sandbox people must be in creation order")
        self.roster = _Roster(people)
        self.client_id = client_id
        self.client_secret = client_secret
        self.api_key = api_key
        self.token_lifetime = token_lifetime
        self.tokens: dict[str, tuple[str | None, datetime]] = {}
        self.tokens_issued = 0
        # position -> overrides; position -> when changed
        self.stage_of: dict[int, str] = {}
        self.fields_of: dict[int, dict[str, Any]] = {}
        self.app_changed: dict[int, datetime] = {}
        self.cand_changed: dict[int, datetime] = {}
        self.broken: set[int] = set()
        self.notes: list[dict[str, Any]] = []
        self.users = {str(r.greenhouse_id): r for r in RECRUITERS}

    # -- admin (tests, demo) -----------------------------------------------------------

    def candidate_id(self, position: int) -> int:
        """The Greenhouse id of the person at ``position``."""
        return CANDIDATE_BASE + position

    def position(self, candidate_id: int | str) -> int:
        """The position of a Greenhouse candidate id (ValueError if unknown)."""
        position = int(candidate_id) - CANDIDATE_BASE
        if not 0 <= position < self.roster.n:
            raise ValueError(f"no candidate {candidate_id}")
        return position

    def move(self, position: int, stage: str, at: datetime | None = None) -> None:
        """Move the person's application to canonical ``stage`` (the application changes)."""
        with self.lock:
            self.stage_of[position] = stage
            self.app_changed[position] = at or self.clock.now()

    def update(self, position: int, at: datetime | None = None, **fields: Any) -> None:
        """Change candidate fields (``first_name``, ``email``, ``phone``, ``can_email``)."""
        with self.lock:
            self.fields_of.setdefault(position, {}).update(fields)
            self.cand_changed[position] = at or self.clock.now()

    def malform(self, position: int) -> None:
        """Serve that candidate with an unreadable ``updated_at``."""
        with self.lock:
            self.broken.add(position)

    def notes_for(self, candidate_id: int | str) -> list[dict[str, Any]]:
        """Notes written on a candidate (v1 and v3), oldest first."""
        with self.lock:
            return [n for n in self.notes if str(n["candidate_id"]) == str(candidate_id)]

    # -- building records --------------------------------------------------------------

    def _stage(self, position: int) -> str:
        return self.stage_of.get(position) or self.roster.people[position].stage

    def _times(self, position: int) -> tuple[datetime, datetime, datetime]:
        base = self.roster.base_time(position)
        return (
            base,
            self.cand_changed.get(position, base),
            self.app_changed.get(position, base),
        )

    def _job(self, person: SeedPerson) -> int:
        return next(i for i, job in enumerate(JOBS) if job[0] == person.job_title)

    def _contact(self, position: int, person: SeedPerson) -> dict[str, Any]:
        fields = self.fields_of.get(position, {})
        email = fields.get("email", person.email)
        phone = fields.get("phone", person.phone)
        social = [{"value": person.linkedin_url}] if person.linkedin_url else []
        if person.x_handle:
            social.append({"value": f"twitter.com/{person.x_handle}"})
        if person.facebook_url:
            social.append({"value": person.facebook_url})
        return {
            "id": CANDIDATE_BASE + position,
            "first_name": fields.get("first_name", person.first_name),
            "last_name": fields.get("last_name", person.last_name),
            "company": None,
            "title": None,
            "is_private": False,
            "can_email": fields.get("can_email", not person.email_opt_out),
            "email_addresses": [{"value": email, "type": "personal"}] if email else [],
            "phone_numbers": [{"value": phone, "type": "mobile"}] if phone else [],
            "addresses": [],
            "website_addresses": [],
            "social_media_addresses": social,
            "tags": ["sandbox"],
            "custom_fields": {"sms_consent": person.sms_consent},
        }

    def _application(self, position: int, person: SeedPerson) -> dict[str, Any]:
        stage = self._stage(position)
        created, _, app_at = self._times(position)
        job = self._job(person)
        status = stage if stage in ("hired", "rejected") else "active"
        name = STAGE_NAMES.get(stage)
        return {
            "id": APPLICATION_BASE + position,
            "candidate_id": CANDIDATE_BASE + position,
            "prospect": stage == "prospect",
            "applied_at": _iso(created),
            "rejected_at": _iso(app_at) if status == "rejected" else None,
            "last_activity_at": _iso(app_at),
            "status": status,
            "current_stage_id": _stage_id(job, name) if name else None,
            "job_id": JOB_BASE + job,
            "recruiter_id": person.recruiter.greenhouse_id,
            "created_at": _iso(created),
            "updated_at": _iso(app_at),
        }

    def v3_candidate(self, position: int) -> dict[str, Any]:
        """A candidate as the v3 list serves it."""
        person = self.roster.people[position]
        created, cand_at, _ = self._times(position)
        record = {
            **self._contact(position, person),
            "recruiter_id": person.recruiter.greenhouse_id,
            "coordinator_id": None,
            "created_at": _iso(created),
            "updated_at": _iso(cand_at),
            "last_activity_at": _iso(max(self._times(position)[1:])),
        }
        if position in self.broken:
            record["updated_at"] = "not a date"
        return record

    def v1_candidate_json(self, position: int) -> dict[str, Any]:
        """A candidate in the v1 shape (applications and recruiter embedded)."""
        person = self.roster.people[position]
        created, cand_at, app_at = self._times(position)
        app = self._application(position, person)
        stage_id = app.pop("current_stage_id")
        job_id = app.pop("job_id")
        app.pop("recruiter_id")
        app.pop("created_at")
        app.pop("updated_at")
        name = STAGE_NAMES.get(self._stage(position))
        app["current_stage"] = {"id": stage_id, "name": name} if name else None
        app["jobs"] = [{"id": job_id, "name": person.job_title}]
        recruiter = person.recruiter
        first, _, last = recruiter.name.partition(" ")
        record = {
            **self._contact(position, person),
            "created_at": _iso(created),
            "updated_at": _iso(max(cand_at, app_at)),
            "last_activity": _iso(max(cand_at, app_at)),
            "application_ids": [app["id"]],
            "applications": [app],
            "recruiter": {
                "id": recruiter.greenhouse_id,
                "first_name": first,
                "last_name": last,
                "name": recruiter.name,
                "employee_id": None,
            },
            "coordinator": None,
        }
        if position in self.broken:
            record["updated_at"] = "not a date"
        return record

    # -- auth and limits ---------------------------------------------------------------

    def authorize(self, request: Request) -> Response | None:
        """Bearer tokens for /v3, the API key (Basic) for /v1, client credentials for /token."""
        if request.path == "/token":
            auth = request.authorization
            if (
                auth is None
                or auth.type != "basic"
                or (auth.username, auth.password) != (self.client_id, self.client_secret)
            ):
                return json_response({"error": "invalid_client"}, 401)
            return None
        if request.path.startswith("/v1/"):
            auth = request.authorization
            if auth is None or auth.type != "basic" or auth.username != self.api_key:
                return json_response({"message": "Invalid Basic Auth credentials"}, 401)
            return None
        header = request.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else None
        with self.lock:
            found = self.tokens.get(token or "")
        if found is None or found[1] <= self.clock.now():
            return json_response({"message": "invalid or expired access token"}, 401)
        return None

    def rate_headers(self, remaining: int, reset: float) -> dict[str, str]:
        """``X-RateLimit-Limit`` (per 10 s) and ``-Remaining`` on every answer."""
        assert self.rate is not None
        return {"X-RateLimit-Limit": str(self.rate.limit), "X-RateLimit-Remaining": str(remaining)}

    def too_many_requests(self, retry_after: float | None) -> Response:
        """Harvest's 429: Retry-After in seconds and X-RateLimit-Reset as a Unix time."""
        wait = retry_after if retry_after is not None else 1.0
        return json_response(
            {"message": "API rate limit exceeded"},
            429,
            {
                "Retry-After": str(max(1, round(wait + 0.4999))) if wait else "0",
                "X-RateLimit-Reset": str(int(time.time() + wait)),
            },
        )

    # -- token -------------------------------------------------------------------------

    def token(self, request: Request) -> Response:
        """Issue a Bearer token for the client credentials."""
        grant = request.form.get("grant_type") or request.args.get("grant_type")
        if grant != "client_credentials":
            return json_response({"error": "unsupported_grant_type"}, 400)
        sub = request.form.get("sub") or request.args.get("sub")
        if sub is not None and sub not in self.users:
            return json_response({"error": "invalid_request", "message": "unknown sub"}, 400)
        token = secrets.token_urlsafe(24)
        expires = self.clock.now() + self.token_lifetime
        with self.lock:
            self.tokens[token] = (sub, expires)
            self.tokens_issued += 1
        return json_response(
            {"token_type": "Bearer", "access_token": token, "expires_at": expires.isoformat()}
        )

    def expire_tokens(self) -> None:
        """Revoke every token (the next API call answers 401)."""
        with self.lock:
            self.tokens.clear()

    # -- v3 ----------------------------------------------------------------------------

    def _v3_list(self, request: Request, kind: str, allowed: set[str]) -> Response:
        """Parse filters or a cursor, page the matching items, set the Link header."""
        args = request.args
        if "cursor" in args:
            if len(args) != 1 or len(args.getlist("cursor")) != 1:
                return json_response(
                    {"message": "when cursor is given it must be the only query parameter"}, 400
                )
            try:
                state = json.loads(base64.urlsafe_b64decode(args["cursor"].encode()))
                filters, offset = state["f"], int(state["o"])
                if state["k"] != kind:
                    raise ValueError(kind)
            except (ValueError, KeyError, TypeError, binascii.Error):
                return json_response({"message": "invalid cursor"}, 400)
        else:
            unknown = set(args) - allowed - {"per_page"}
            if unknown:
                return json_response({"message": f"unknown parameter {sorted(unknown)[0]}"}, 422)
            filters = {k: args[k] for k in allowed if k in args}
            try:
                filters["per_page"] = int(args.get("per_page", "100"))
            except ValueError:
                return json_response({"message": "per_page must be a number"}, 422)
            if not 1 <= filters["per_page"] <= _MAX_PAGE:
                return json_response({"message": f"per_page must be 1 to {_MAX_PAGE}"}, 422)
            offset = 0
        try:
            items, total = self._select(kind, filters, offset, filters["per_page"])
        except ValueError as exc:
            return json_response({"message": str(exc)}, 422)
        headers = {}
        if offset + filters["per_page"] < total:
            token = base64.urlsafe_b64encode(
                json.dumps({"k": kind, "f": filters, "o": offset + filters["per_page"]}).encode()
            ).decode()
            url = f"{request.host_url.rstrip('/')}{request.path}?{urlencode({'cursor': token})}"
            headers["Link"] = f'<{url}>; rel="next"'
        return json_response(items, 200, headers)

    def _select(
        self, kind: str, filters: dict[str, Any], offset: int, count: int
    ) -> tuple[list[dict[str, Any]], int]:
        since, strict = _since(filters.get("updated_at"))
        if kind in ("candidates", "applications"):
            ids = filters.get("ids") or filters.get("candidate_ids")
            if ids:
                positions = []
                for raw in str(ids).split(","):
                    try:
                        position = self.position(raw)
                    except ValueError:
                        continue
                    at = self._times(position)[1 if kind == "candidates" else 2]
                    if since is None or at > since or (not strict and at == since):
                        positions.append(position)
                positions = sorted(set(positions))
                chosen, total = positions[offset : offset + count], len(positions)
            else:
                with self.lock:
                    changed = dict(self.cand_changed if kind == "candidates" else self.app_changed)
                view = _View(self.roster, changed, since, strict)
                chosen, total = view.page(offset, count), len(view)
            if kind == "candidates":
                return [self.v3_candidate(p) for p in chosen], total
            people = self.roster.people
            return [self._application(p, people[p]) for p in chosen], total
        items = self._catalogue(kind)
        if filters.get("ids"):
            wanted = set(str(filters["ids"]).split(","))
            items = [i for i in items if str(i["id"]) in wanted]
        return items[offset : offset + count], len(items)

    def _catalogue(self, kind: str) -> list[dict[str, Any]]:
        created = _iso(datetime(2026, 1, 5, tzinfo=UTC))
        if kind == "jobs":
            return [
                {
                    "id": JOB_BASE + i,
                    "name": title,
                    "status": "open",
                    "created_at": created,
                    "updated_at": created,
                }
                for i, (title, _) in enumerate(JOBS)
            ]
        if kind == "job_stages":
            return [
                {
                    "id": _stage_id(j, name),
                    "job_id": JOB_BASE + j,
                    "name": name,
                    "sort_order": k,
                    "created_at": created,
                    "updated_at": created,
                }
                for j in range(len(JOBS))
                for k, name in enumerate(_STAGE_ORDER)
            ]
        first_last = [(r, *r.name.split(" ", 1)) for r in RECRUITERS]
        return [
            {
                "id": r.greenhouse_id,
                "name": r.name,
                "first_name": first,
                "last_name": last,
                "primary_email_address": r.email,
                "created_at": created,
                "updated_at": created,
            }
            for r, first, last in first_last
        ]

    def v3_candidates(self, request: Request) -> Response:
        """``GET /v3/candidates``."""
        return self._v3_list(request, "candidates", {"ids", "updated_at"})

    def v3_applications(self, request: Request) -> Response:
        """``GET /v3/applications``."""
        return self._v3_list(request, "applications", {"ids", "candidate_ids", "updated_at"})

    def v3_job_stages(self, request: Request) -> Response:
        """``GET /v3/job_stages``."""
        return self._v3_list(request, "job_stages", {"ids"})

    def v3_jobs(self, request: Request) -> Response:
        """``GET /v3/jobs``."""
        return self._v3_list(request, "jobs", {"ids"})

    def v3_users(self, request: Request) -> Response:
        """``GET /v3/users``."""
        return self._v3_list(request, "users", {"ids"})

    def v3_notes(self, request: Request) -> Response:
        """``GET /v3/notes?candidate_ids=…`` (no paging: sandbox note counts are small)."""
        wanted = set(filter(None, request.args.get("candidate_ids", "").split(",")))
        with self.lock:
            notes = [n for n in self.notes if not wanted or str(n["candidate_id"]) in wanted]
        return json_response(notes)

    def v3_create_note(self, request: Request) -> Response:
        """``POST /v3/notes``: ``candidate_id``, ``body``, ``visibility``; the token's user."""
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("body"), str):
            return json_response({"message": "body is required"}, 422)
        try:
            self.position(body.get("candidate_id"))
        except (ValueError, TypeError):
            return json_response({"message": "candidate_id does not exist"}, 422)
        token = request.headers.get("Authorization", "")[7:]
        with self.lock:
            user = self.tokens.get(token, (None, None))[0]
            note = self._note(body["candidate_id"], user, body["body"], body.get("visibility"))
            note["via"] = "v3"
        return json_response(note, 201)

    def _note(self, candidate_id: Any, user: str | None, text: str, visibility: Any) -> dict:
        note = {
            "id": 90_000_000 + len(self.notes),
            "candidate_id": int(candidate_id),
            "user_id": int(user) if user else None,
            "body": text,
            "visibility": visibility
            if visibility in ("admin_only", "private", "public")
            else "public",
            "created_at": _iso(self.clock.now()),
        }
        self.notes.append(note)
        return note

    # -- v1 ----------------------------------------------------------------------------

    def v1_candidates(self, request: Request) -> Response:
        """``GET /v1/candidates`` with ``per_page``, ``page``, ``updated_after``."""
        try:
            per_page = int(request.args.get("per_page", "100"))
            page = int(request.args.get("page", "1"))
        except ValueError:
            return json_response({"message": "per_page and page must be numbers"}, 422)
        if not 1 <= per_page <= _MAX_PAGE or page < 1:
            return json_response({"message": f"per_page must be 1 to {_MAX_PAGE}"}, 422)
        since = None
        if "updated_after" in request.args:
            try:
                since = parse_instant(request.args["updated_after"])
            except ValueError:
                return json_response({"message": "updated_after is not a date"}, 422)
        with self.lock:
            changed = {
                p: max(self.cand_changed.get(p, at), at) for p, at in self.app_changed.items()
            }
            for p, at in self.cand_changed.items():
                changed.setdefault(p, at)
        view = _View(self.roster, changed, since, strict=True)
        total = len(view)
        chosen = view.page((page - 1) * per_page, per_page)
        last = max(1, -(-total // per_page))
        links = []
        base = f"{request.host_url.rstrip('/')}{request.path}"
        keep = {k: v for k, v in request.args.items() if k != "page"}
        if page < last:
            links.append(f'<{base}?{urlencode({**keep, "page": page + 1})}>; rel="next"')
        if page > 1:
            links.append(f'<{base}?{urlencode({**keep, "page": page - 1})}>; rel="prev"')
        if request.args.get("skip_count") != "true":
            links.append(f'<{base}?{urlencode({**keep, "page": last})}>; rel="last"')
        headers = {"Link": ", ".join(links)} if total > per_page else {}
        return json_response([self.v1_candidate_json(p) for p in chosen], 200, headers)

    def v1_candidate(self, request: Request, candidate_id: int) -> Response:
        """``GET /v1/candidates/{id}``."""
        try:
            position = self.position(candidate_id)
        except ValueError:
            return json_response({"message": "Resource not found"}, 404)
        return json_response(self.v1_candidate_json(position))

    def v1_activity_feed(self, request: Request, candidate_id: int) -> Response:
        """``GET /v1/candidates/{id}/activity_feed`` (notes only; emails and activities empty)."""
        notes = self.notes_for(candidate_id)
        return json_response({"notes": notes, "emails": [], "activities": []})

    def v1_create_note(self, request: Request, candidate_id: int) -> Response:
        """``POST /v1/candidates/{id}/activity_feed/notes`` with ``On-Behalf-Of``."""
        behalf = request.headers.get("On-Behalf-Of")
        if behalf not in self.users:
            return json_response(
                {
                    "errors": [
                        {
                            "message": "On-Behalf-Of must name a Greenhouse user",
                            "field": "On-Behalf-Of",
                        }
                    ]
                },
                422,
            )
        try:
            self.position(candidate_id)
        except ValueError:
            return json_response({"message": "Resource not found"}, 404)
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not body.get("body") or not body.get("user_id"):
            return json_response(
                {"errors": [{"message": "user_id and body are required", "field": "body"}]}, 422
            )
        with self.lock:
            note = self._note(candidate_id, behalf, body["body"], body.get("visibility"))
            note["via"] = "v1"
            note["on_behalf_of"] = behalf
        recruiter = self.users[behalf]
        shown = {**note, "user": {"id": int(behalf), "name": recruiter.name}}
        shown["visiblity"] = shown["visibility"]  # the published response carries the typo
        return json_response(shown, 201)


def _since(value: Any) -> tuple[datetime | None, bool]:
    if not value:
        return None, False
    operator, _, instant = str(value).partition("|")
    if operator not in ("gte", "gt") or not instant:
        raise ValueError("updated_at takes gte|ISO-8601 or gt|ISO-8601 in the sandbox")
    return parse_instant(instant), operator == "gt"
