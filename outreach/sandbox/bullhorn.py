"""A Bullhorn REST sandbox: OAuth, REST login, candidates, job submissions, notes, tasks.

:class:`FakeBullhorn` serves one candidate per seeded person, with a job submission whose
status is the person's stage in Bullhorn's default status names (a prospect is a
``New Lead`` candidate without submissions). It follows Bullhorn's documented flow:

* ``GET /oauth/authorize?action=Login&username=…&password=…`` answers 302 with ``code`` in
  the ``Location``; ``POST /oauth/token`` exchanges a code or a refresh token (query or form
  parameters) for an access token valid ten minutes and a new refresh token; a refresh
  token works once.
* ``/rest-services/login?version=*&access_token=…`` answers ``BhRestToken`` and
  ``restUrl`` (``…/rest-services/<corpToken>/``); a session ends after ``session_ttl`` of
  the fake's clock or when :meth:`FakeBullhorn.expire_sessions` is called, and then answers
  401 (no token at all: 412).
* ``GET query/<Entity>`` with ``where`` (:mod:`outreach.sandbox.bullhorn_where`), ``fields``
  (nested ``owner(id,firstName)``), ``orderBy``, ``start`` and ``count`` (at most 500);
  ``GET entity/<Entity>/<ids>``; ``PUT entity/Note`` and ``PUT entity/Task`` answering
  ``changedEntityId``; ``GET settings/userId``. Times are epoch milliseconds.
* A :class:`RateWindow` answers 429 with ``Retry-After``; errors are
  ``{"errorMessage", "errorCode"}``.

::

    fake = FakeBullhorn(Population(250).in_crm("bullhorn"))
    with SandboxServer(fake) as server:
        login = BullhornLogin(..., auth_url=server.url + "/oauth",
                              login_url=server.url + "/rest-services")
"""

from __future__ import annotations

import copy
import json
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import urlencode

from werkzeug.wrappers import Request, Response

from outreach.clock import Clock
from outreach.sandbox.base import FakeProvider, RateWindow, Route, json_response
from outreach.sandbox.bullhorn_where import compile_where
from outreach.sandbox.seed import RECRUITERS, SeedPerson

__all__ = ["CORP_TOKEN", "STATUS_OF", "FakeBullhorn"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CORP_TOKEN = "sbx42"
#: canonical stage -> the JobSubmission status a recruiter sets in Bullhorn
STATUS_OF = {
    "applied": "Submitted",
    "screening": "Client Submission",
    "interview": "Interview Scheduled",
    "offer": "Offer Extended",
    "hired": "Placed",
    "rejected": "Client Rejected",
}
_MAX_COUNT = 500


def _ms(at: datetime) -> int:
    return (at.astimezone(UTC) - _EPOCH) // timedelta(milliseconds=1)


def _error(message: str, status: int) -> Response:
    return json_response({"errorMessage": message, "errorCode": status}, status)


def _split_fields(text: str) -> dict[str, Any]:
    """``"id,owner(id,firstName)"`` -> ``{"id": None, "owner": {"id": None, ...}}``."""
    out: dict[str, Any] = {}
    depth, start, name = 0, 0, ""
    text = text.replace(" ", "")
    for pos, char in enumerate(text + ","):
        if char == "(":
            if depth == 0:
                name, start = text[start:pos], pos + 1
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise ValueError("unbalanced parentheses in fields")
            if depth == 0:
                out[name] = _split_fields(text[start:pos])
                start = pos + 2
                name = ""
        elif char == "," and depth == 0:
            part = text[start:pos]
            if part:
                out[part] = None
            start = pos + 1
    if depth:
        raise ValueError("unbalanced parentheses in fields")
    return out


class FakeBullhorn(FakeProvider):
    """An in-memory Bullhorn corporation serving ``people`` as candidates.

    ``rate`` is off by default; pass a :class:`RateWindow` to have it answer 429.
    """

    name: ClassVar[str] = "bullhorn"
    routes: ClassVar[tuple[Route, ...]] = (
        Route("GET", "/oauth/authorize", "authorize_code", metered=False),
        Route("POST", "/oauth/token", "token", metered=False),
        Route("POST", "/rest-services/login", "rest_login", metered=False),
        Route("GET", "/rest-services/login", "rest_login", metered=False),
        Route("GET", "/rest-services/<corp>/query/<entity>", "query"),
        Route("GET", "/rest-services/<corp>/entity/<entity>/<ids>", "get_entities"),
        Route("PUT", "/rest-services/<corp>/entity/<entity>", "create_entity"),
        Route("GET", "/rest-services/<corp>/settings/userId", "user_id"),
    )

    def __init__(
        self,
        people: Sequence[SeedPerson],
        *,
        client_id: str = "sandbox-bullhorn-client",
        client_secret: str = "sandbox-bullhorn-secret",
        refresh_token: str = "sandbox-bullhorn-refresh",
        username: str = "sandbox.api",
        password: str = "sandbox-password",
        clock: Clock | None = None,
        rate: RateWindow | None = None,
        session_ttl: timedelta = timedelta(minutes=10),
    ) -> None:
        super().__init__(clock=clock, rate=rate)
        self.client_id, self.client_secret = client_id, client_secret
        self.username, self.password = username, password
        self.session_ttl = session_ttl
        self.api_user_id = RECRUITERS[0].bullhorn_id
        self.refresh_tokens: set[str] = {refresh_token}
        self.codes: set[str] = set()
        self.access_tokens: dict[str, datetime] = {}
        self.sessions: dict[str, datetime] = {}
        self.users = {
            r.bullhorn_id: {
                "id": r.bullhorn_id,
                "firstName": r.name.split(" ", 1)[0],
                "lastName": r.name.split(" ", 1)[1],
                "email": r.email,
            }
            for r in RECRUITERS
        }
        self.candidates: dict[int, dict[str, Any]] = {}
        self.submissions: dict[int, dict[str, Any]] = {}
        self.notes: dict[int, dict[str, Any]] = {}
        self.tasks: dict[int, dict[str, Any]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self._by_index: dict[int, int] = {}
        self._next_id = 900_000
        for position, p in enumerate(people):
            self._seed(p, 70_001 + position)

    # -- seeding -----------------------------------------------------------------------

    def _job(self, title: str) -> dict[str, Any]:
        if title not in self.jobs:
            self.jobs[title] = {"id": 3001 + len(self.jobs), "title": title}
        return self.jobs[title]

    def _seed(self, p: SeedPerson, candidate_id: int) -> None:
        created = _ms(p.created_at)
        owner = self.users[p.recruiter.bullhorn_id]
        self.candidates[candidate_id] = {
            "id": candidate_id,
            "firstName": p.first_name,
            "lastName": p.last_name,
            "name": p.name,
            "email": p.email,
            "email2": "",
            "mobile": p.phone or "",
            "phone": "",
            "status": "New Lead" if p.stage == "prospect" else "Active",
            "owner": dict(owner),
            "dateAdded": created,
            "dateLastModified": created,
            "isDeleted": False,
            "massMailOptOut": p.email_opt_out,
            "smsOptIn": p.sms_consent,
            "occupation": p.job_title,
            "customText1": p.linkedin_url or "",
            "customText2": f"https://x.com/{p.x_handle}" if p.x_handle else "",
            "customText3": p.facebook_url or "",
            "source": "Sandbox",
        }
        self._by_index[p.index] = candidate_id
        if p.stage != "prospect":
            self._submit(candidate_id, p.job_title, STATUS_OF[p.stage], created)

    def _submit(self, candidate_id: int, title: str, status: str, at: int) -> dict[str, Any]:
        candidate = self.candidates[candidate_id]
        submission_id = 40_000 + len(self.submissions) + 1
        submission = {
            "id": submission_id,
            "status": status,
            "dateAdded": at,
            "dateLastModified": at,
            "isDeleted": False,
            "candidate": {
                "id": candidate_id,
                "firstName": candidate["firstName"],
                "lastName": candidate["lastName"],
            },
            "jobOrder": dict(self._job(title)),
        }
        self.submissions[submission_id] = submission
        return submission

    # -- admin (Python, not HTTP) ------------------------------------------------------

    def candidate_id(self, person_index: int) -> int:
        """The candidate id of the seeded person with this ``index``."""
        return self._by_index[person_index]

    def move(self, ref: int, canonical_stage: str, at: datetime | None = None) -> None:
        """Set the status of person ``ref``'s latest submission (a recruiter's move).

        Only the submission changes (``dateLastModified`` = ``at``), as in Bullhorn,
        where a status change leaves the candidate record untouched.
        """
        when = _ms(at or self.clock.now())
        with self.lock:
            candidate_id = self._by_index[ref]
            mine = [s for s in self.submissions.values() if s["candidate"]["id"] == candidate_id]
            if canonical_stage == "prospect":
                raise ValueError("a candidate with submissions cannot become a prospect")
            status = STATUS_OF[canonical_stage]
            if mine:
                latest = max(mine, key=lambda s: s["id"])
                latest["status"], latest["dateLastModified"] = status, when
            else:
                title = self.candidates[candidate_id].get("occupation") or "Consultant"
                self._submit(candidate_id, title, status, when)

    def malform(self, ref: int) -> None:
        """Make a candidate unreadable on the wire (``firstName`` an object)."""
        with self.lock:
            self.candidates[self._by_index[ref]]["firstName"] = {"broken": True}

    def expire_sessions(self) -> None:
        """Every open REST session times out (the next call answers 401)."""
        with self.lock:
            self.sessions.clear()

    def notes_for(self, candidate_id: int) -> list[dict[str, Any]]:
        """Copies of the notes on a candidate, oldest first."""
        with self.lock:
            return [
                copy.deepcopy(n)
                for n in self.notes.values()
                if n["personReference"]["id"] == candidate_id
            ]

    def tasks_for(self, candidate_id: int) -> list[dict[str, Any]]:
        """Copies of the tasks on a candidate, oldest first."""
        with self.lock:
            return [
                copy.deepcopy(t)
                for t in self.tasks.values()
                if (t.get("candidate") or {}).get("id") == candidate_id
            ]

    # -- provider shapes ---------------------------------------------------------------

    def authorize(self, request: Request) -> Response | None:
        """REST calls need a live ``BhRestToken`` (header, query or cookie)."""
        if not request.path.startswith("/rest-services/") or request.path.endswith("/login"):
            return None
        token = (
            request.headers.get("BhRestToken")
            or request.args.get("BhRestToken")
            or request.cookies.get("BhRestToken")
        )
        if not token:
            return _error("Missing BhRestToken", 412)
        with self.lock:
            expires = self.sessions.get(token)
        if expires is None or self.clock.now() >= expires:
            return _error("Bad 'BhRestToken' or timed-out.", 401)
        if not request.path.startswith(f"/rest-services/{CORP_TOKEN}/"):
            return _error("The corporation token does not match the session", 401)
        return None

    def rate_headers(self, remaining: int, reset: float) -> dict[str, str]:
        """Bullhorn sends no rate-limit headers: a client learns only from a 429."""
        return {}

    def too_many_requests(self, retry_after: float | None) -> Response:
        """Bullhorn's 429, with ``Retry-After``."""
        response = _error("Too many requests. Please slow down.", 429)
        if retry_after is not None:
            seconds = float(retry_after)
            response.headers["Retry-After"] = (
                str(int(seconds)) if seconds.is_integer() else f"{seconds:.3f}"
            )
        return response

    def server_error(self, status: int) -> Response:
        """A 5xx in Bullhorn's error shape."""
        return _error("We had a problem with our server. Try again later.", status)

    # -- OAuth and login ---------------------------------------------------------------

    def authorize_code(self, request: Request) -> Response:
        """``GET /oauth/authorize?action=Login``: 302 to the redirect URI with a ``code``."""
        args = request.args
        if args.get("client_id") != self.client_id or args.get("response_type") != "code":
            return json_response({"error": "invalid_client"}, 400)
        if (args.get("username"), args.get("password")) != (self.username, self.password):
            # Bullhorn shows its login page again.
            return Response("<html><body>Login</body></html>", 200, content_type="text/html")
        code = secrets.token_urlsafe(12)
        with self.lock:
            self.codes.add(code)
        target = args.get("redirect_uri") or "https://www.bullhorn.com/"
        return Response("", 302, headers={"Location": f"{target}?{urlencode({'code': code})}"})

    def token(self, request: Request) -> Response:
        """``POST /oauth/token``: a code or a (single-use) refresh token for new tokens."""
        params = {**request.args.to_dict(), **request.form.to_dict()}
        if (params.get("client_id"), params.get("client_secret")) != (
            self.client_id,
            self.client_secret,
        ):
            return json_response({"error": "invalid_client"}, 401)
        grant = params.get("grant_type")
        with self.lock:
            if grant == "refresh_token":
                if params.get("refresh_token") not in self.refresh_tokens:
                    return json_response(
                        {
                            "error": "invalid_grant",
                            "error_description": "Invalid, expired, or revoked refresh token.",
                        },
                        400,
                    )
                self.refresh_tokens.discard(params["refresh_token"])
            elif grant == "authorization_code":
                if params.get("code") not in self.codes:
                    return json_response({"error": "invalid_grant"}, 400)
                self.codes.discard(params["code"])
            else:
                return json_response({"error": "unsupported_grant_type"}, 400)
            access, refresh = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
            self.access_tokens[access] = self.clock.now() + timedelta(minutes=10)
            self.refresh_tokens.add(refresh)
        return json_response(
            {
                "access_token": access,
                "token_type": "Bearer",
                "expires_in": 600,
                "refresh_token": refresh,
            }
        )

    def rest_login(self, request: Request) -> Response:
        """``/rest-services/login?version=*&access_token=…``: a session and the restUrl."""
        if not request.args.get("version"):
            return _error("version is required", 400)
        with self.lock:
            expires = self.access_tokens.get(request.args.get("access_token", ""))
            if expires is None or self.clock.now() >= expires:
                return _error("Invalid or expired OAuth access token.", 401)
            token = secrets.token_hex(16)
            self.sessions[token] = self.clock.now() + self.session_ttl
        return json_response(
            {
                "BhRestToken": token,
                "restUrl": f"{request.host_url}rest-services/{CORP_TOKEN}/",
            }
        )

    # -- REST --------------------------------------------------------------------------

    def _table(self, entity: str) -> dict[int, dict[str, Any]] | None:
        return {
            "Candidate": self.candidates,
            "JobSubmission": self.submissions,
            "Note": self.notes,
            "Task": self.tasks,
        }.get(entity)

    def query(self, request: Request, corp: str, entity: str) -> Response:
        """``GET query/<Entity>``: where, fields, orderBy, start, count."""
        table = self._table(entity)
        if table is None:
            return _error(f"Unknown entity {entity}", 404)
        args = request.args
        try:
            predicate = compile_where(args.get("where", ""))
            fields = _split_fields(args.get("fields", ""))
            start = int(args.get("start", "0"))
            count = int(args.get("count", "20"))
        except ValueError as exc:
            return _error(str(exc), 400)
        if not fields:
            return _error("fields or layout is required", 400)
        if start < 0 or count < 1:
            return _error("start and count must be positive", 400)
        count = min(count, _MAX_COUNT)
        order = [f for f in args.get("orderBy", "id").replace(" ", "").split(",") if f]
        with self.lock:
            try:
                chosen = [r for r in table.values() if predicate(r)]
            except TypeError as exc:
                return _error(f"bad comparison in where: {exc}", 400)
            chosen.sort(key=lambda r: tuple(_sortable(r.get(f.lstrip("-"))) for f in order))
            page = chosen[start : start + count]
            data = [_select(r, fields) for r in page]
        return json_response({"start": start, "count": len(data), "data": data})

    def get_entities(self, request: Request, corp: str, entity: str, ids: str) -> Response:
        """``GET entity/<Entity>/<id>[,<id>…]?fields=…``."""
        table = self._table(entity)
        if table is None:
            return _error(f"Unknown entity {entity}", 404)
        try:
            wanted = [int(i) for i in ids.split(",")]
            fields = _split_fields(request.args.get("fields", "id"))
        except ValueError as exc:
            return _error(str(exc), 400)
        with self.lock:
            found = [_select(table[i], fields) for i in wanted if i in table]
        if not found:
            return _error(f"{entity} not found", 404)
        return json_response({"data": found if len(wanted) > 1 else found[0]})

    def create_entity(self, request: Request, corp: str, entity: str) -> Response:
        """``PUT entity/Note`` or ``PUT entity/Task``: answers ``changedEntityId``."""
        if entity not in ("Note", "Task"):
            return _error(f"creating {entity} is not supported by the sandbox", 400)
        try:
            body = json.loads(request.get_data(cache=True) or b"null")
        except ValueError:
            return _error("the body is not JSON", 400)
        if not isinstance(body, dict):
            return _error("the body must be an object", 400)
        with self.lock:
            problem = self._check(entity, body)
            if problem:
                return _error(problem, 400)
            self._next_id += 1
            now = _ms(self.clock.now())
            record = {
                **body,
                "id": self._next_id,
                "dateAdded": now,
                "dateLastModified": now,
                "isDeleted": False,
            }
            if entity == "Task":
                record.setdefault("isCompleted", False)
                record.setdefault("owner", {"id": self.api_user_id})
            (self.notes if entity == "Note" else self.tasks)[self._next_id] = record
        return json_response(
            {
                "changedEntityType": entity,
                "changedEntityId": self._next_id,
                "changeType": "INSERT",
                "data": body,
            }
        )

    def _check(self, entity: str, body: dict[str, Any]) -> str | None:
        if entity == "Note":
            unknown = set(body) - {"personReference", "commentingPerson", "action", "comments"}
            if unknown:
                return f"Invalid field(s) for Note: {', '.join(sorted(unknown))}"
            ref = body.get("personReference")
            if not isinstance(ref, dict) or ref.get("id") not in self.candidates:
                return "personReference must name an existing person"
            if not isinstance(body.get("comments"), str):
                return "comments is required"
            person = body.get("commentingPerson")
            if person is not None and (
                not isinstance(person, dict) or person.get("id") not in self.users
            ):
                return "commentingPerson must name a CorporateUser"
            return None
        allowed = {
            "candidate", "subject", "description", "type", "dateBegin", "dateEnd",
            "isCompleted", "owner", "priority",
        }  # fmt: skip
        unknown = set(body) - allowed
        if unknown:
            return f"Invalid field(s) for Task: {', '.join(sorted(unknown))}"
        if not isinstance(body.get("subject"), str) or not 0 < len(body["subject"]) <= 100:
            return "subject is required (at most 100 characters)"
        candidate = body.get("candidate")
        if candidate is not None and (
            not isinstance(candidate, dict) or candidate.get("id") not in self.candidates
        ):
            return "candidate must name an existing Candidate"
        owner = body.get("owner")
        if owner is not None and (not isinstance(owner, dict) or owner.get("id") not in self.users):
            return "owner must name a CorporateUser"
        return None

    def user_id(self, request: Request, corp: str) -> Response:
        """``GET settings/userId``: the API user's CorporateUser id."""
        return json_response({"userId": self.api_user_id})


def _sortable(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, 0)
    if isinstance(value, bool | int | float):
        return (1, value)
    return (2, str(value))


def _select(record: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    if "*" in fields:
        return copy.deepcopy(record)
    out: dict[str, Any] = {"id": record.get("id")}
    for name, sub in fields.items():
        value = record.get(name)
        if isinstance(value, dict):
            out[name] = {k: value.get(k) for k in ("id", *sub)} if sub else _default_ref(value)
        else:
            out[name] = copy.deepcopy(value)
    return out


def _default_ref(value: dict[str, Any]) -> dict[str, Any]:
    # A to-one association without sub-fields: its id (and a person's names).
    return {k: value[k] for k in ("id", "firstName", "lastName") if k in value}
