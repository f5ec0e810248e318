"""A Lever Data API sandbox: opportunities, stages, archive reasons, users and notes.

:class:`FakeLever` serves one opportunity per seeded person it is given, in the shapes of
docs/crm-apis.md section 3: epoch-millisecond times, ``stage`` and ``owner`` as ids unless
expanded, archived opportunities with an archive reason typed ``hired`` or ``non-hired``,
``{"data": [...], "hasNext": ..., "next": ...}`` lists paged by an opaque ``offset`` token,
Basic auth with the API key as user name, and ``{"code", "message"}`` error bodies::

    fake = FakeLever(Population(250).in_crm("lever"))
    with SandboxServer(fake) as server:
        lever = Lever("sandbox-lever-key", base_url=server.url + "/v1")
        fake.move(3, "interview", at=now)      # a recruiter moves someone

Lists are ordered by ``updatedAt`` then ``id`` and the ``offset`` token names the last
item served, so a record changed during a run moves to the end and is still read.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from werkzeug.wrappers import Request, Response

from outreach.clock import Clock
from outreach.sandbox.base import FakeProvider, RateWindow, Route, json_response
from outreach.sandbox.seed import RECRUITERS, SeedPerson

__all__ = ["ARCHIVE_REASONS", "STAGES", "FakeLever"]

_NAMESPACE = uuid.UUID("5e1f0c1a-7a3b-4c55-9f27-6c6576657221")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _uid(kind: str, key: object) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{kind}:{key}"))


#: pipeline stages, named as in config/cadences.yaml ``stage_map.lever``
STAGES: tuple[dict[str, str], ...] = tuple(
    {"id": _uid("stage", text), "text": text}
    for text in ("New lead", "New applicant", "Phone screen", "On-site interview", "Offer")
)
_STAGE_OF = {
    "prospect": STAGES[0]["id"],
    "applied": STAGES[1]["id"],
    "screening": STAGES[2]["id"],
    "interview": STAGES[3]["id"],
    "offer": STAGES[4]["id"],
}
#: archive reasons: one hire, two rejections
ARCHIVE_REASONS: tuple[dict[str, str], ...] = tuple(
    {"id": _uid("archive_reason", text), "text": text, "status": "active", "type": kind}
    for text, kind in (
        ("Hired", "hired"),
        ("Underqualified", "non-hired"),
        ("Withdrew", "non-hired"),
    )
)
_HIRED = ARCHIVE_REASONS[0]["id"]
_REJECTED = (ARCHIVE_REASONS[1]["id"], ARCHIVE_REASONS[2]["id"])
_EXPANDABLE = frozenset({"stage", "owner", "followers", "sourcedBy", "applications", "contact"})


def _ms(at: datetime) -> int:
    return (at.astimezone(UTC) - _EPOCH) // timedelta(milliseconds=1)


def _error(code: str, message: str, status: int) -> Response:
    return json_response({"code": code, "message": message}, status)


def _bad_request(message: str) -> Response:
    return _error("BadRequestError", message, 400)


class FakeLever(FakeProvider):
    """An in-memory Lever account serving ``people`` as opportunities.

    ``rate`` is off by default (Lever's limit is a token bucket of 10 requests per second
    with bursts to 20); pass a :class:`RateWindow` to have it answer 429. Admin methods
    (:meth:`move`, :meth:`malform`, :meth:`notes_for`, :meth:`opportunity_id`) change or
    read the state directly, as a recruiter working in Lever would.
    """

    name: ClassVar[str] = "lever"
    routes: ClassVar[tuple[Route, ...]] = (
        Route("GET", "/v1/opportunities", "list_opportunities"),
        Route("GET", "/v1/opportunities/<opportunity_id>", "get_opportunity"),
        Route("GET", "/v1/opportunities/<opportunity_id>/notes", "list_notes"),
        Route("POST", "/v1/opportunities/<opportunity_id>/notes", "create_note"),
        Route("GET", "/v1/stages", "list_stages"),
        Route("GET", "/v1/archive_reasons", "list_archive_reasons"),
        Route("GET", "/v1/users", "list_users"),
    )

    def __init__(
        self,
        people: Sequence[SeedPerson] = (),
        *,
        api_key: str = "sandbox-lever-key",
        clock: Clock | None = None,
        rate: RateWindow | None = None,
        page_limit_max: int = 100,
    ) -> None:
        super().__init__(clock=clock, rate=rate)
        self.api_key = api_key
        self.page_limit_max = page_limit_max
        self.users: dict[str, dict[str, Any]] = {
            r.lever_id: {
                "id": r.lever_id,
                "name": r.name,
                "username": r.email.split("@", 1)[0],
                "email": r.email,
                "accessRole": "team member",
                "photo": None,
                "createdAt": _ms(datetime(2024, 1, 8, tzinfo=UTC)),
                "deactivatedAt": None,
                "externalDirectoryId": None,
                "jobTitle": "Recruiter",
                "managerId": None,
            }
            for r in RECRUITERS
        }
        self.opportunities: dict[str, dict[str, Any]] = {}
        self.notes: dict[str, list[dict[str, Any]]] = {}
        self._by_index: dict[int, str] = {}
        for p in people:
            opportunity = self._opportunity(p)
            self.opportunities[opportunity["id"]] = opportunity
            self._by_index[p.index] = opportunity["id"]

    # -- seeding -----------------------------------------------------------------------

    def _opportunity(self, p: SeedPerson) -> dict[str, Any]:
        created = _ms(p.created_at)
        owner = p.recruiter.lever_id
        opportunity_id = _uid("opportunity", p.index)
        if p.stage in _STAGE_OF:
            stage_id, archived = _STAGE_OF[p.stage], None
        else:
            # Hires are archived from the offer stage, rejections from the phone screen.
            reason = _HIRED if p.stage == "hired" else _REJECTED[p.index % 2]
            stage_id = _STAGE_OF["offer" if p.stage == "hired" else "screening"]
            archived = {"archivedAt": created, "reason": reason}
        opportunity: dict[str, Any] = {
            "id": opportunity_id,
            "name": p.name,
            "headline": f"{p.job_title} ({p.department})",
            "contact": _uid("contact", p.index),
            "emails": [p.email],
            "phones": [{"type": "mobile", "value": p.phone}] if p.phone else [],
            "confidentiality": "non-confidential",
            "location": "",
            "links": [
                link
                for link in (
                    p.linkedin_url,
                    f"https://twitter.com/{p.x_handle}" if p.x_handle else None,
                    p.facebook_url,
                )
                if link
            ],
            "stage": stage_id,
            "stageChanges": [
                {"toStageId": stage_id, "toStageIndex": 0, "userId": owner, "updatedAt": created}
            ],
            "tags": [p.department],
            "sources": ["Sandbox"],
            "origin": "sourced" if p.stage == "prospect" else "applied",
            "sourcedBy": owner,
            "owner": owner,
            "followers": [owner],
            "applications": [],
            "createdAt": created,
            "updatedAt": created,
            "lastInteractionAt": created,
            "lastAdvancedAt": created,
            "snoozedUntil": None,
            "urls": {
                "list": "https://hire.sandbox.lever.co/candidates",
                "show": f"https://hire.sandbox.lever.co/candidates/{opportunity_id}",
            },
            "dataProtection": (
                {
                    "store": {"allowed": True, "expiresAt": None},
                    "contact": {"allowed": False, "expiresAt": None},
                }
                if p.email_opt_out
                else None
            ),
            "isAnonymized": False,
            "archived": archived,
        }
        if archived is None and p.index % 2:
            # The live API has been seen to omit ``archived`` on active opportunities.
            del opportunity["archived"]
        return opportunity

    # -- admin (Python, not HTTP) ------------------------------------------------------

    def opportunity_id(self, person_index: int) -> str:
        """The opportunity id of the seeded person with this ``index``."""
        return self._by_index[person_index]

    def _resolve(self, ref: int | str) -> dict[str, Any]:
        opportunity_id = self._by_index[ref] if isinstance(ref, int) else ref
        return self.opportunities[opportunity_id]

    def move(self, ref: int | str, canonical_stage: str, at: datetime | None = None) -> None:
        """Move an opportunity (person index or id) to a canonical stage at ``at``.

        ``hired`` and ``rejected`` archive it with a reason of that type; any other stage
        unarchives it into the matching Lever stage. ``updatedAt`` becomes ``at`` (the
        fake's clock when not given), so an incremental read sees the change.
        """
        when = _ms(at or self.clock.now())
        with self.lock:
            opportunity = self._resolve(ref)
            if canonical_stage in _STAGE_OF:
                stage_id = _STAGE_OF[canonical_stage]
                opportunity["archived"] = None
                opportunity["stage"] = stage_id
                opportunity["lastAdvancedAt"] = when
                opportunity["stageChanges"].append(
                    {
                        "toStageId": stage_id,
                        "toStageIndex": [s["id"] for s in STAGES].index(stage_id),
                        "userId": opportunity["owner"],
                        "updatedAt": when,
                    }
                )
            elif canonical_stage in ("hired", "rejected"):
                reason = _HIRED if canonical_stage == "hired" else _REJECTED[0]
                opportunity["archived"] = {"archivedAt": when, "reason": reason}
            else:
                raise ValueError(f"unknown canonical stage {canonical_stage!r}")
            opportunity["updatedAt"] = when

    def malform(self, ref: int | str) -> None:
        """Make an opportunity unreadable on the wire (``name`` an object, ``emails`` text)."""
        with self.lock:
            opportunity = self._resolve(ref)
            opportunity["name"] = {"first": "broken"}
            opportunity["emails"] = "not-a-list@example.com"

    def notes_for(self, opportunity_id: str) -> list[dict[str, Any]]:
        """Copies of the notes written on an opportunity, oldest first."""
        with self.lock:
            return copy.deepcopy(self.notes.get(opportunity_id, []))

    # -- provider shapes ---------------------------------------------------------------

    def authorize(self, request: Request) -> Response | None:
        """Basic auth: the API key as user name, an empty password."""
        auth = request.authorization
        if (
            auth is None
            or auth.type != "basic"
            or auth.username != self.api_key
            or (auth.password or "") != ""
        ):
            return _error("UnauthorizedError", "Invalid API key", 401)
        return None

    def rate_headers(self, remaining: int, reset: float) -> dict[str, str]:
        """Lever documents no rate-limit headers: a client learns only from a 429."""
        return {}

    def too_many_requests(self, retry_after: float | None) -> Response:
        """Lever's 429 body, with ``Retry-After`` when one is given."""
        response = _error("TooManyRequestsError", "Rate limit exceeded; retry later", 429)
        if retry_after is not None:
            seconds = float(retry_after)
            response.headers["Retry-After"] = (
                str(int(seconds)) if seconds.is_integer() else f"{seconds:.3f}"
            )
        return response

    def server_error(self, status: int) -> Response:
        """A 5xx in Lever's error shape."""
        return _error("InternalServerError", "Service unavailable, please retry", status)

    # -- endpoints ---------------------------------------------------------------------

    def list_opportunities(self, request: Request) -> Response:
        """``GET /v1/opportunities``: filters, ``expand``, ``limit`` and ``offset``."""
        args = request.args
        limit = _int(args.get("limit", "100"))
        if limit is None or not 1 <= limit <= self.page_limit_max:
            return _bad_request(f"limit must be an integer from 1 to {self.page_limit_max}")
        bounds = []
        for name in ("updated_at_start", "updated_at_end"):
            value = args.get(name)
            if value is not None and _int(value) is None:
                return _bad_request(f"{name} must be a timestamp in milliseconds")
            bounds.append(_int(value) if value is not None else None)
        start, end = bounds
        archived = args.get("archived")
        if archived not in (None, "true", "false"):
            return _bad_request("archived must be true or false")
        confidentiality = args.get("confidentiality", "non-confidential")
        if confidentiality not in ("non-confidential", "confidential", "all"):
            return _bad_request("confidentiality must be non-confidential, confidential or all")
        expand = args.getlist("expand")
        unknown = [e for e in expand if e not in _EXPANDABLE]
        if unknown:
            return _bad_request(f"cannot expand {', '.join(unknown)}")
        after: tuple[int, str] | None = None
        token = args.get("offset")
        if token is not None:
            after = _decode(token)
            if after is None:
                return _bad_request("offset is not a valid pagination token")
        with self.lock:
            chosen = []
            for opportunity in self.opportunities.values():
                updated = _sort_time(opportunity)
                if start is not None and updated < start:
                    continue
                if end is not None and updated > end:
                    continue
                is_archived = isinstance(opportunity.get("archived"), dict)
                if archived is not None and is_archived != (archived == "true"):
                    continue
                if confidentiality != "all" and (
                    opportunity.get("confidentiality", "non-confidential") != confidentiality
                ):
                    continue
                key = (updated, str(opportunity.get("id", "")))
                if after is not None and key <= after:
                    continue
                chosen.append((key, opportunity))
            chosen.sort(key=lambda item: item[0])
            page = chosen[:limit]
            body: dict[str, Any] = {
                "data": [self._expanded(o, expand) for _, o in page],
                "hasNext": len(chosen) > limit,
            }
        if body["hasNext"]:
            body["next"] = _encode(page[-1][0])
        return json_response(body)

    def get_opportunity(self, request: Request, opportunity_id: str) -> Response:
        """``GET /v1/opportunities/<id>`` with ``expand``."""
        with self.lock:
            opportunity = self.opportunities.get(opportunity_id)
            if opportunity is None:
                return _error("NotFoundError", f"Opportunity {opportunity_id} not found", 404)
            return json_response(
                {"data": self._expanded(opportunity, request.args.getlist("expand"))}
            )

    def list_notes(self, request: Request, opportunity_id: str) -> Response:
        """``GET /v1/opportunities/<id>/notes``: every note, one page."""
        with self.lock:
            if opportunity_id not in self.opportunities:
                return _error("NotFoundError", f"Opportunity {opportunity_id} not found", 404)
            return json_response({"data": self.notes.get(opportunity_id, []), "hasNext": False})

    def create_note(self, request: Request, opportunity_id: str) -> Response:
        """``POST /v1/opportunities/<id>/notes?perform_as=<user>`` with ``{"value": ...}``."""
        perform_as = request.args.get("perform_as")
        if not perform_as or perform_as not in self.users:
            return _bad_request("perform_as must name an active user")
        try:
            body = json.loads(request.get_data(cache=True) or b"null")
        except ValueError:
            return _bad_request("the body is not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("value"), str):
            return _bad_request("value is required and must be a string")
        with self.lock:
            if opportunity_id not in self.opportunities:
                return _error("NotFoundError", f"Opportunity {opportunity_id} not found", 404)
            notes = self.notes.setdefault(opportunity_id, [])
            note_id = _uid("note", f"{opportunity_id}:{len(notes)}")
            value = body["value"]
            notes.append(
                {
                    "id": note_id,
                    "opportunity": opportunity_id,
                    "user": perform_as,
                    "value": value,
                    "text": value,
                    "fields": [{"type": "note", "text": "Note", "value": value}],
                    "secret": bool(body.get("secret", False)),
                    "completedAt": None,
                    "createdAt": _ms(self.clock.now()),
                    "deletedAt": None,
                }
            )
        return json_response({"data": {"noteId": note_id}}, 201)

    def list_stages(self, request: Request) -> Response:
        """``GET /v1/stages``."""
        return json_response({"data": list(STAGES), "hasNext": False})

    def list_archive_reasons(self, request: Request) -> Response:
        """``GET /v1/archive_reasons``."""
        return json_response({"data": list(ARCHIVE_REASONS), "hasNext": False})

    def list_users(self, request: Request) -> Response:
        """``GET /v1/users``."""
        with self.lock:
            return json_response({"data": list(self.users.values()), "hasNext": False})

    def _expanded(self, opportunity: dict[str, Any], expand: list[str]) -> dict[str, Any]:
        out = copy.deepcopy(opportunity)
        if "stage" in expand and isinstance(out.get("stage"), str):
            out["stage"] = next((dict(s) for s in STAGES if s["id"] == out["stage"]), None)
        if "owner" in expand and isinstance(out.get("owner"), str):
            out["owner"] = copy.deepcopy(self.users.get(out["owner"]))
        return out


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _sort_time(opportunity: dict[str, Any]) -> int:
    value = opportunity.get("updatedAt") or opportunity.get("createdAt") or 0
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _encode(key: tuple[int, str]) -> str:
    raw = json.dumps([key[0], key[1]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(token: str) -> tuple[int, str] | None:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        updated, last_id = json.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        return None
    if isinstance(updated, bool) or not isinstance(updated, int) or not isinstance(last_id, str):
        return None
    return updated, last_id
