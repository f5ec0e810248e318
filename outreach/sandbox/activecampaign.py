"""An ActiveCampaign API v3 sandbox: contacts, tags, custom fields, deals, notes, deal tasks.

:class:`FakeActiveCampaign` serves one contact and one deal per seeded person, in the
shapes of the v3 reference (``developers.activecampaign.com/reference``): string ids,
times like ``2026-09-01T09:00:00-05:00``, ``{"contacts": [...], "meta": {"total"}}`` lists
paged by ``limit`` (at most 100) and ``offset`` or, for contacts, ``orders[id]=ASC`` with
``id_greater``; ``filters[updated_after]`` on contacts (``udate``) and deals (``mdate``);
``include=contactTags,fieldValues,deals`` sideloaded as top-level lists; the
``Api-Token`` header (403 without a good one); 5 requests per second per account with
``RateLimit-Limit``/``RateLimit-Remaining`` headers and a 429 with ``Retry-After``::

    fake = FakeActiveCampaign(Population(250))
    with SandboxServer(fake) as server:
        ac = ActiveCampaign(server.url, "sandbox-activecampaign-token")
        fake.move(3, "interview", at=now)     # a recruiter moves someone's deal

Deals: status 0 open, 1 won, 2 lost; a hire is a won deal in the Offer stage, a rejection
a lost deal in Phone Screen. Notes and deal tasks are kept per contact for tests.
"""

from __future__ import annotations

import copy
import json
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, ClassVar

from werkzeug.wrappers import Request, Response

from outreach.clock import Clock, parse_instant
from outreach.sandbox.base import FakeProvider, RateWindow, Route, json_response
from outreach.sandbox.seed import RECRUITERS, SeedPerson

__all__ = ["STAGES", "TASK_TYPES", "FakeActiveCampaign"]

#: the account's time zone offset, in which ActiveCampaign writes its times
_ZONE = timezone(timedelta(hours=-5))
#: one pipeline (deal group) of stages, titled as in config/cadences.yaml
STAGES: tuple[dict[str, str], ...] = tuple(
    {"id": str(n), "title": title, "group": "1", "order": str(n)}
    for n, title in enumerate(
        ("To Contact", "Applied", "Phone Screen", "Interview", "Offer"), start=1
    )
)
_STAGE_OF = {"prospect": "1", "applied": "2", "screening": "3", "interview": "4", "offer": "5"}
TASK_TYPES: tuple[dict[str, str], ...] = (
    {"id": "1", "title": "Call", "status": "0"},
    {"id": "2", "title": "Email", "status": "0"},
    {"id": "3", "title": "To-do", "status": "0"},
)
_FIELDS = (
    {"id": "1", "title": "LinkedIn URL", "perstag": "LINKEDIN_URL", "type": "text"},
    {"id": "2", "title": "Time zone", "perstag": "TIMEZONE", "type": "text"},
    {"id": "3", "title": "X profile", "perstag": "X_URL", "type": "text"},
    {"id": "4", "title": "Facebook profile", "perstag": "FACEBOOK_URL", "type": "text"},
)
_INCLUDABLE = frozenset({"contactTags", "fieldValues", "deals"})


def _at(at: datetime) -> str:
    return at.astimezone(_ZONE).replace(microsecond=0).isoformat()


def _error(message: str, status: int) -> Response:
    return json_response({"message": message}, status)


def _unprocessable(title: str, pointer: str) -> Response:
    """ActiveCampaign's 422: ``{"errors": [{"title", "source": {"pointer"}}]}``."""
    return json_response(
        {
            "errors": [
                {
                    "title": title,
                    "detail": "",
                    "code": "field_invalid",
                    "source": {"pointer": pointer},
                }
            ]
        },
        422,
    )


class FakeActiveCampaign(FakeProvider):
    """An in-memory ActiveCampaign account serving ``people`` as contacts with one deal each.

    ``rate`` defaults to the documented 5 requests per second (pass ``None`` for none).
    Admin methods (:meth:`move`, :meth:`malform`, :meth:`notes_for`, :meth:`tasks_for`,
    :meth:`contact_id`) change or read the state directly, as a recruiter would.
    """

    name: ClassVar[str] = "activecampaign"
    routes: ClassVar[tuple[Route, ...]] = (
        Route("GET", "/api/3/contacts", "list_contacts"),
        Route("GET", "/api/3/contacts/<contact_id>/deals", "contact_deals"),
        Route("GET", "/api/3/deals", "list_deals"),
        Route("GET", "/api/3/dealStages", "list_stages"),
        Route("GET", "/api/3/tags", "list_tags"),
        Route("GET", "/api/3/fields", "list_fields"),
        Route("GET", "/api/3/dealTasktypes", "list_task_types"),
        Route("POST", "/api/3/notes", "create_note"),
        Route("POST", "/api/3/dealTasks", "create_task"),
        Route("GET", "/api/3/dealTasks/<task_id>", "get_task"),
    )

    def __init__(
        self,
        people: Sequence[SeedPerson] = (),
        *,
        api_token: str = "sandbox-activecampaign-token",
        clock: Clock | None = None,
        rate: RateWindow | bool | None = True,
    ) -> None:
        super().__init__(clock=clock, rate=RateWindow(5, 1.0) if rate is True else rate or None)
        self.api_token = api_token
        self.contacts: dict[int, dict[str, Any]] = {}
        self.deals: dict[int, dict[str, Any]] = {}
        self.tags: dict[str, dict[str, Any]] = {}
        self.contact_tags: list[dict[str, Any]] = []
        self.field_values: list[dict[str, Any]] = []
        # contact id -> its tags, field values and deals (the same objects), for sideloads
        self._links: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(
            lambda: {"contactTags": [], "fieldValues": [], "deals": []}
        )
        self.notes: list[dict[str, Any]] = []
        self.tasks: dict[int, dict[str, Any]] = {}
        self._by_index: dict[int, int] = {}
        for p in people:
            self._seed(p)

    # -- seeding -----------------------------------------------------------------------

    def _seed(self, p: SeedPerson) -> None:
        contact_id = len(self.contacts) + 1
        created = _at(p.created_at)
        self.contacts[contact_id] = {
            "id": str(contact_id),
            "email": p.email,
            "phone": p.phone or "",
            "firstName": p.first_name,
            "lastName": p.last_name,
            "orgid": "0",
            "cdate": created,
            "udate": created,
            "deleted": "0",
            "anonymized": "0",
            "links": {"deals": f"/api/3/contacts/{contact_id}/deals"},
        }
        self._by_index[p.index] = contact_id
        tag = self.tags.setdefault(
            p.department,
            {"id": str(len(self.tags) + 1), "tag": p.department, "tagType": "contact"},
        )
        link = {"id": str(len(self.contact_tags) + 1), "contact": str(contact_id), "tag": tag["id"]}
        self.contact_tags.append(link)
        self._links[str(contact_id)]["contactTags"].append(link)
        x_url = f"@{p.x_handle}" if p.x_handle else None
        for field, value in (
            ("1", p.linkedin_url),
            ("2", p.timezone),
            ("3", x_url),
            ("4", p.facebook_url),
        ):
            if value:
                self._add_value(
                    {
                        "id": str(len(self.field_values) + 1),
                        "contact": str(contact_id),
                        "field": field,
                        "value": value,
                        "cdate": created,
                        "udate": created,
                    }
                )
        owner = str(RECRUITERS.index(p.recruiter) + 1)
        stage, status = self._stage_status(p.stage)
        deal_id = len(self.deals) + 1
        self.deals[deal_id] = {
            "id": str(deal_id),
            "contact": str(contact_id),
            "owner": owner,
            "group": "1",
            "stage": stage,
            "status": status,
            "title": p.job_title,
            "value": "0",
            "currency": "usd",
            "cdate": created,
            "mdate": created,
        }
        self._links[str(contact_id)]["deals"].append(self.deals[deal_id])

    def _add_value(self, value: dict[str, Any]) -> None:
        self.field_values.append(value)
        self._links[value["contact"]]["fieldValues"].append(value)

    @staticmethod
    def _stage_status(canonical: str) -> tuple[str, str]:
        if canonical == "hired":
            return _STAGE_OF["offer"], "1"
        if canonical == "rejected":
            return _STAGE_OF["screening"], "2"
        if canonical in _STAGE_OF:
            return _STAGE_OF[canonical], "0"
        raise ValueError(f"unknown canonical stage {canonical!r}")

    # -- admin (Python, not HTTP) ------------------------------------------------------

    def contact_id(self, person_index: int) -> str:
        """The contact id of the seeded person with this ``index``."""
        return str(self._by_index[person_index])

    def move(self, ref: int | str, canonical_stage: str, at: datetime | None = None) -> None:
        """Move the deal of a contact (person index, or contact id as text) at ``at``.

        Only the deal's ``mdate`` changes, not the contact's ``udate``: a sync must read
        changed deals to see it.
        """
        contact_id = self._by_index[ref] if isinstance(ref, int) else int(ref)
        stage, status = self._stage_status(canonical_stage)
        with self.lock:
            for deal in self.deals.values():
                if deal["contact"] == str(contact_id):
                    deal.update(stage=stage, status=status, mdate=_at(at or self.clock.now()))

    def malform(self, ref: int | str) -> None:
        """Make a contact unreadable on the wire (``firstName`` an object, ``udate`` junk)."""
        contact_id = self._by_index[ref] if isinstance(ref, int) else int(ref)
        with self.lock:
            self.contacts[contact_id]["firstName"] = {"broken": True}

    def notes_for(self, contact_id: str) -> list[dict[str, Any]]:
        """Copies of the notes on a contact, oldest first."""
        with self.lock:
            return [
                copy.deepcopy(n)
                for n in self.notes
                if n["reltype"] == "Subscriber" and n["relid"] == str(contact_id)
            ]

    def tasks_for(self, contact_id: str) -> list[dict[str, Any]]:
        """Copies of the deal tasks on a contact, oldest first."""
        with self.lock:
            return [
                copy.deepcopy(t)
                for t in self.tasks.values()
                if t["reltype"] == "Subscriber" and t["relid"] == str(contact_id)
            ]

    # -- provider shapes ---------------------------------------------------------------

    def authorize(self, request: Request) -> Response | None:
        """The ``Api-Token`` header must hold the account's key."""
        if request.headers.get("Api-Token") != self.api_token:
            return _error("Forbidden", 403)
        return None

    def rate_headers(self, remaining: int, reset: float) -> dict[str, str]:
        """``RateLimit-Limit`` and ``RateLimit-Remaining`` (no X- prefix)."""
        assert self.rate is not None
        return {"RateLimit-Limit": str(self.rate.limit), "RateLimit-Remaining": str(remaining)}

    def too_many_requests(self, retry_after: float | None) -> Response:
        """A 429 with ``Retry-After`` in whole seconds, as ActiveCampaign sends it."""
        response = _error("Too Many Requests", 429)
        if retry_after is not None:
            response.headers["Retry-After"] = str(max(1, int(-(-float(retry_after) // 1))))
        return response

    # -- endpoints ---------------------------------------------------------------------

    def list_contacts(self, request: Request) -> Response:
        """``GET /contacts``: ``ids[]``, ``id_greater``, ``filters[updated_after]``, ``include``."""
        args = request.args
        paging = _paging(args)
        if isinstance(paging, Response):
            return paging
        limit, offset = paging
        include = [i for i in (args.get("include") or "").split(",") if i]
        unknown = [i for i in include if i not in _INCLUDABLE]
        if unknown:
            return _error(f"Unable to include {', '.join(unknown)}", 400)
        after = args.get("id_greater")
        if after is not None and not after.isdigit():
            return _unprocessable("id_greater must be an integer", "/id_greater")
        since = _instant(args.get("filters[updated_after]"))
        if isinstance(since, Response):
            return since
        wanted = {v for v in args.getlist("ids[]") + args.getlist("ids") for v in v.split(",")}
        with self.lock:
            # Contact ids run 1..N in creation order (none is ever deleted here).
            first = int(after) + 1 if after is not None else 1
            if wanted:
                order = sorted(int(w) for w in wanted if w.isdigit())
                scan = [i for i in order if i >= first and i in self.contacts]
            else:
                scan = range(first, len(self.contacts) + 1)
            if since is None and not wanted:
                total = len(scan)
                page = [self.contacts[i] for i in scan[offset : offset + limit]]
            else:
                chosen = [
                    self.contacts[i]
                    for i in scan
                    if since is None or _when(self.contacts[i].get("udate")) >= since
                ]
                total, page = len(chosen), chosen[offset : offset + limit]
            body: dict[str, Any] = {"contacts": copy.deepcopy(page)}
            for key in include:
                body[key] = [dict(item) for c in page for item in self._links[str(c["id"])][key]]
            body["meta"] = {
                "total": str(total),
                "page_input": {"limit": limit, "offset": offset},
            }
        return json_response(body)

    def contact_deals(self, request: Request, contact_id: str) -> Response:
        """``GET /contacts/{id}/deals``."""
        with self.lock:
            if not contact_id.isdigit() or int(contact_id) not in self.contacts:
                return _error("No Result found for Subscriber with id " + contact_id, 404)
            return json_response({"deals": [dict(d) for d in self._links[contact_id]["deals"]]})

    def list_deals(self, request: Request) -> Response:
        """``GET /deals``: ``filters[updated_after]`` (``mdate``), ``orders[cdate]``, paging."""
        args = request.args
        paging = _paging(args)
        if isinstance(paging, Response):
            return paging
        limit, offset = paging
        since = _instant(args.get("filters[updated_after]"))
        if isinstance(since, Response):
            return since
        with self.lock:
            chosen = [
                d for d in self.deals.values() if since is None or _when(d.get("mdate")) >= since
            ]
            if args.get("orders[cdate]"):
                reverse = args["orders[cdate]"].upper() == "DESC"
                chosen.sort(key=lambda d: (_when(d["cdate"]), int(d["id"])), reverse=reverse)
            page = copy.deepcopy(chosen[offset : offset + limit])
        return json_response({"deals": page, "meta": {"total": len(chosen)}})

    def list_stages(self, request: Request) -> Response:
        """``GET /dealStages``."""
        return self._small_list(request, "dealStages", [dict(s) for s in STAGES])

    def list_tags(self, request: Request) -> Response:
        """``GET /tags``."""
        with self.lock:
            items = [dict(t) for t in self.tags.values()]
        return self._small_list(request, "tags", items)

    def list_fields(self, request: Request) -> Response:
        """``GET /fields``."""
        return self._small_list(request, "fields", [dict(f) for f in _FIELDS])

    def list_task_types(self, request: Request) -> Response:
        """``GET /dealTasktypes``."""
        return self._small_list(request, "dealTasktypes", [dict(t) for t in TASK_TYPES])

    def _small_list(self, request: Request, key: str, items: list[dict[str, Any]]) -> Response:
        paging = _paging(request.args)
        if isinstance(paging, Response):
            return paging
        limit, offset = paging
        return json_response(
            {key: items[offset : offset + limit], "meta": {"total": str(len(items))}}
        )

    def create_note(self, request: Request) -> Response:
        """``POST /notes`` with ``{"note": {"note", "relid", "reltype"}}``."""
        note = _payload(request, "note")
        if isinstance(note, Response):
            return note
        if not isinstance(note.get("note"), str) or not note["note"]:
            return _unprocessable("Note text is required", "/data/attributes/note")
        reltype = note.get("reltype")
        if reltype not in ("Subscriber", "Deal", "Activity", "DealTask", "CustomerAccount"):
            return _unprocessable("reltype is invalid", "/data/attributes/reltype")
        relid = str(note.get("relid", ""))
        with self.lock:
            if not self._related(reltype, relid):
                return _error(f"No Result found for {reltype} with id {relid}", 404)
            now = _at(self.clock.now())
            created = {
                "id": str(len(self.notes) + 1),
                "note": note["note"],
                "relid": relid,
                "reltype": reltype,
                "userid": "1",
                "is_draft": "0",
                "cdate": now,
                "mdate": now,
            }
            self.notes.append(created)
        return json_response({"note": dict(created)}, 201)

    def create_task(self, request: Request) -> Response:
        """``POST /dealTasks`` with ``relid``, ``reltype``/``ownerType``, ``duedate`` ..."""
        task = _payload(request, "dealTask")
        if isinstance(task, Response):
            return task
        reltype = task.get("reltype") or {"contact": "Subscriber", "deal": "Deal"}.get(
            str(task.get("ownerType", "")).lower()
        )
        if reltype not in ("Subscriber", "Deal"):
            return _unprocessable("reltype or ownerType is invalid", "/dealTask/reltype")
        relid = str(task.get("relid", ""))
        if str(task.get("dealTasktype")) not in {t["id"] for t in TASK_TYPES}:
            return _unprocessable("Task type is invalid", "/dealTask/dealTasktype")
        due = _instant(task.get("duedate"))
        if due is None or isinstance(due, Response):
            return _unprocessable("Due date is required", "/dealTask/duedate")
        assignee = task.get("assignee")
        if assignee is not None and str(assignee) not in {
            str(n) for n in range(1, len(RECRUITERS) + 1)
        }:
            return _unprocessable("Assignee is not a user", "/dealTask/assignee")
        with self.lock:
            if not self._related(reltype, relid):
                return _error(f"No Result found for {reltype} with id {relid}", 404)
            now = _at(self.clock.now())
            task_id = len(self.tasks) + 1
            created = {
                "id": str(task_id),
                "title": task.get("title"),
                "note": task.get("note"),
                "relid": relid,
                "reltype": reltype,
                "status": int(task.get("status") or 0),
                "duedate": _at(due),
                "edate": task.get("edate"),
                "dealTasktype": str(task["dealTasktype"]),
                "assignee": str(assignee) if assignee is not None else None,
                "user": "1",
                "owner": {"type": "contact" if reltype == "Subscriber" else "deal", "id": relid},
                "cdate": now,
                "udate": now,
            }
            self.tasks[task_id] = created
        return json_response({"dealTask": dict(created)}, 201)

    def get_task(self, request: Request, task_id: str) -> Response:
        """``GET /dealTasks/{id}``."""
        with self.lock:
            task = self.tasks.get(int(task_id)) if task_id.isdigit() else None
            if task is None:
                return _error(f"No Result found for DealTask with id {task_id}", 404)
            return json_response({"dealTask": dict(task)})

    def _related(self, reltype: str, relid: str) -> bool:
        if not relid.isdigit():
            return False
        return int(relid) in (self.contacts if reltype == "Subscriber" else self.deals)


def _paging(args: Any) -> tuple[int, int] | Response:
    try:
        limit = int(args.get("limit", "20"))
        offset = int(args.get("offset", "0"))
    except ValueError:
        return _unprocessable("limit and offset must be integers", "/limit")
    if limit < 1 or offset < 0:
        return _unprocessable("limit must be positive and offset not negative", "/limit")
    return min(limit, 100), offset


def _instant(value: Any) -> datetime | Response | None:
    if value in (None, ""):
        return None
    try:
        at = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except ValueError:
        return _unprocessable(f"{value!r} is not a date", "/filters")
    # A time without an offset is in the account's own time zone.
    return at if at.tzinfo else at.replace(tzinfo=_ZONE)


def _when(value: Any) -> datetime:
    try:
        return parse_instant(str(value))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)


def _payload(request: Request, key: str) -> dict[str, Any] | Response:
    try:
        body = json.loads(request.get_data(cache=True) or b"null")
    except ValueError:
        return _error("The body is not JSON", 400)
    item = body.get(key) if isinstance(body, dict) else None
    if not isinstance(item, dict):
        return _unprocessable(f"{key} is required", f"/{key}")
    return item
