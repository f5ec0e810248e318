"""A HubSpot CRM v3 sandbox: contacts (list, search, read), tasks, notes and owners.

:class:`FakeHubSpot` serves one contact per seeded person it is given, in the shapes of
docs/crm-apis.md section 4: numeric string ids, every property value a string (times as
ISO strings with milliseconds), ``{results, paging: {next: {after, link}}}`` lists, Bearer
auth and ``{"status": "error", "message", "correlationId", "category"}`` error bodies::

    fake = FakeHubSpot(Population(300).in_crm("hubspot"))
    with SandboxServer(fake) as server:
        hubspot = HubSpot("sandbox-hubspot-token", base_url=server.url)
        fake.move(3, "interview", at=now)      # a recruiter moves someone

What the fake holds to, beyond the happy path:

* list ``limit`` at most 100 and search ``limit`` at most 200 (else 400); ``properties``
  comma-separated or repeated, unknown names ignored;
* search filters (``EQ``, ``NEQ``, ``LT``, ``LTE``, ``GT``, ``GTE``, ``BETWEEN``, ``IN``,
  ``NOT_IN``, ``HAS_PROPERTY``, ``NOT_HAS_PROPERTY``; groups OR'ed, filters AND'ed, at
  most 5 groups, 10 filters a group, 25 in all), one sort, ``after`` as a numeric offset,
  and a 400 when ``after + limit`` would page past ``search_cap`` (10,000);
* tasks and notes need ``hs_timestamp``, a note body fits 65,536 characters, and their
  associations (204 task to contact, 202 note to contact) must name existing contacts;
* two rate windows, both off unless given: the general one (``X-HubSpot-RateLimit-Max``,
  ``-Remaining``, ``-Interval-Milliseconds`` on every answer, 429 ``TEN_SECONDLY_ROLLING``)
  and the search one (429 ``SECONDLY``). HubSpot documents no ``Retry-After`` on its
  429s, so the fake sends none.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import phonenumbers
from phonenumbers import timezone as phone_zones
from werkzeug.wrappers import Request, Response

from outreach.clock import Clock, parse_instant
from outreach.sandbox.base import FakeProvider, RateWindow, Route, json_response
from outreach.sandbox.seed import RECRUITERS, SeedPerson

__all__ = ["LIFECYCLE", "FakeHubSpot"]

#: canonical stage -> ``lifecyclestage``; ``other`` is left out of stage_map.hubspot on
#: purpose, so the engine reports it as unmapped
LIFECYCLE: dict[str, str] = {
    "prospect": "lead",
    "applied": "salesqualifiedlead",
    "screening": "opportunity",
    "interview": "opportunity",
    "offer": "opportunity",
    "hired": "customer",
    "rejected": "other",
}
#: every contact property the fake knows; others asked for are ignored
CONTACT_PROPERTIES = (
    "firstname",
    "lastname",
    "email",
    "phone",
    "mobilephone",
    "hs_timezone",
    "lifecyclestage",
    "hubspot_owner_id",
    "hs_email_optout",
    "hs_linkedin_url",
    "twitterhandle",
    "jobtitle",
    "createdate",
    "lastmodifieddate",
    "hs_object_id",
)
_CONTACT_DEFAULTS = (
    "createdate",
    "email",
    "firstname",
    "hs_object_id",
    "lastmodifieddate",
    "lastname",
)
_ENGAGEMENT_DEFAULTS = ("hs_createdate", "hs_lastmodifieddate", "hs_object_id")
_TASK_STATUSES = frozenset({"NOT_STARTED", "IN_PROGRESS", "WAITING", "COMPLETED", "DEFERRED"})
_TASK_PRIORITIES = frozenset({"LOW", "MEDIUM", "HIGH", "NONE"})
_TASK_TYPES = frozenset({"EMAIL", "CALL", "TODO"})
_NOTE_MAX = 65_536
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Properties compared as numbers (times in epoch ms) in search filters and sorts.
_NUMERIC = frozenset({"createdate", "lastmodifieddate", "hs_object_id"})
_OPERATORS = frozenset(
    {
        "EQ",
        "NEQ",
        "LT",
        "LTE",
        "GT",
        "GTE",
        "BETWEEN",
        "IN",
        "NOT_IN",
        "HAS_PROPERTY",
        "NOT_HAS_PROPERTY",
    }
)


def _ms(at: datetime) -> int:
    return (at.astimezone(UTC) - _EPOCH) // timedelta(milliseconds=1)


def _iso(at: datetime) -> str:
    at = at.astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def _instant(value: object) -> datetime:
    """A HubSpot time value: epoch ms (number or digits) or an ISO string."""
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return _EPOCH + timedelta(milliseconds=int(text))
    return parse_instant(text)


def _hubspot_zone(zone: str) -> str:
    """An IANA zone in ``hs_timezone`` form: ``America/New_York`` -> ``america_slash_new_york``."""
    return zone.lower().replace("/", "_slash_")


def _error(status: int, message: str, category: str, **extra: Any) -> Response:
    body = {
        "status": "error",
        "message": message,
        "correlationId": str(uuid.uuid4()),
        "category": category,
        **extra,
    }
    return json_response(body, status)


def _invalid(message: str) -> Response:
    return _error(400, message, "VALIDATION_ERROR")


def _not_found(kind: str, object_id: str) -> Response:
    return _error(404, f"resource not found: no {kind} with id {object_id}", "OBJECT_NOT_FOUND")


class _Invalid(Exception):
    """A request body the fake answers 400 to."""


@dataclass
class _Object:
    """One CRM object: its properties (strings) and, for engagements, associated contacts."""

    id: str
    properties: dict[str, str | None]
    created: datetime
    updated: datetime
    contacts: list[str] = field(default_factory=list)
    # Search compares times as epoch ms: kept ready, since every search reads them all.
    created_ms: int = field(init=False)
    updated_ms: int = field(init=False)
    number: int = field(init=False)

    def __post_init__(self) -> None:
        self.created_ms = _ms(self.created)
        self.updated_ms = _ms(self.updated)
        self.number = int(self.id)

    def touch(self, at: datetime) -> None:
        """Mark the object modified at ``at``."""
        self.updated = at
        self.updated_ms = _ms(at)

    def sort_key(self, name: str) -> Any:
        if name == "lastmodifieddate":
            return self.updated_ms
        if name == "createdate":
            return self.created_ms
        if name == "hs_object_id":
            return self.number
        return self.properties.get(name)


class FakeHubSpot(FakeProvider):
    """HubSpot CRM v3 for the sandbox: contacts from seeded people, tasks, notes, owners."""

    name: ClassVar[str] = "hubspot"
    routes: ClassVar[tuple[Route, ...]] = (
        Route("GET", "/crm/v3/objects/contacts", "list_contacts"),
        Route("POST", "/crm/v3/objects/contacts/search", "search_contacts"),
        Route("GET", "/crm/v3/objects/contacts/<object_id>", "get_contact"),
        Route("GET", "/crm/v3/objects/tasks", "list_tasks"),
        Route("POST", "/crm/v3/objects/tasks", "create_task"),
        Route("POST", "/crm/v3/objects/tasks/batch/read", "read_tasks"),
        Route("GET", "/crm/v3/objects/tasks/<object_id>", "get_task"),
        Route("GET", "/crm/v3/objects/notes", "list_notes"),
        Route("POST", "/crm/v3/objects/notes", "create_note"),
        Route("GET", "/crm/v3/objects/notes/<object_id>", "get_note"),
        Route("GET", "/crm/v3/owners", "list_owners"),
    )

    def __init__(
        self,
        people: Sequence[SeedPerson] = (),
        *,
        access_token: str = "sandbox-hubspot-token",
        clock: Clock | None = None,
        rate: RateWindow | None = None,
        search_rate: RateWindow | None = None,
        search_cap: int = 10_000,
    ) -> None:
        super().__init__(clock=clock, rate=rate)
        self.access_token = access_token
        self.search_rate = search_rate
        self.search_cap = search_cap
        self.contacts: dict[str, _Object] = {}
        self.tasks: dict[str, _Object] = {}
        self.notes: dict[str, _Object] = {}
        self._by_index: dict[int, str] = {}
        self._malformed: set[str] = set()
        self._next_task = 2_000_000
        self._next_note = 3_000_000
        zones: dict[str, str | None] = {}
        for p in people:
            contact_id = str(1_000_000 + p.index)
            if contact_id in self.contacts:
                raise ValueError(f"person {p.index} is given twice")
            self._by_index[p.index] = contact_id
            self.contacts[contact_id] = self._contact(p, contact_id, zones)

    def _contact(self, p: SeedPerson, contact_id: str, zones: dict[str, str | None]) -> _Object:
        zone = p.timezone
        if zone is None and p.phone_e164:
            # One zone per area code: look each up once.
            prefix = p.phone_e164[:5]
            if prefix not in zones:
                found = phone_zones.time_zones_for_number(phonenumbers.parse(p.phone_e164))
                zones[prefix] = found[0] if len(found) == 1 and "/" in found[0] else None
            zone = zones[prefix]
        created = p.created_at
        properties: dict[str, str | None] = {
            "firstname": p.first_name,
            "lastname": p.last_name,
            "email": p.email,
            "phone": p.phone,
            "mobilephone": None,
            "hs_timezone": _hubspot_zone(zone) if zone else None,
            "lifecyclestage": LIFECYCLE[p.stage],
            "hubspot_owner_id": p.recruiter.hubspot_id,
            "hs_email_optout": "true" if p.email_opt_out else "false",
            "hs_linkedin_url": p.linkedin_url,
            "twitterhandle": p.x_handle,
            "jobtitle": None,
            "createdate": _iso(created),
            "lastmodifieddate": _iso(created),
            "hs_object_id": contact_id,
        }
        return _Object(contact_id, properties, created, created)

    # -- overrides ---------------------------------------------------------------------

    def authorize(self, request: Request) -> Response | None:
        """Bearer with the sandbox token, else HubSpot's 401."""
        if request.headers.get("Authorization") == f"Bearer {self.access_token}":
            return None
        return _error(
            401,
            "Authentication credentials not found. This API supports OAuth 2.0 authentication "
            "and you can find more details at https://developers.hubspot.com/docs/methods/auth/"
            "oauth-overview",
            "INVALID_AUTHENTICATION",
        )

    def rate_headers(self, remaining: int, reset: float) -> dict[str, str]:
        """HubSpot's per-interval headers for the general window."""
        assert self.rate is not None
        return {
            "X-HubSpot-RateLimit-Max": str(self.rate.limit),
            "X-HubSpot-RateLimit-Remaining": str(remaining),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(self.rate.seconds * 1000)),
        }

    def too_many_requests(self, retry_after: float | None) -> Response:
        """The 429 of the general ten-second window (no Retry-After: none is documented)."""
        return self._rate_limited("TEN_SECONDLY_ROLLING", "ten_secondly_rolling")

    def server_error(self, status: int) -> Response:
        """A 5xx with HubSpot's error shape."""
        return _error(status, "internal error", "INTERNAL_ERROR")

    def _rate_limited(self, policy: str, words: str) -> Response:
        return json_response(
            {
                "status": "error",
                "message": f"You have reached your {words} limit.",
                "errorType": "RATE_LIMIT",
                "correlationId": str(uuid.uuid4()),
                "policyName": policy,
                "requestId": str(uuid.uuid4()),
            },
            429,
        )

    # -- contacts ----------------------------------------------------------------------

    def list_contacts(self, request: Request) -> Response:
        """``GET /crm/v3/objects/contacts``: by id, ``after`` = the next page's first id."""
        try:
            limit = _limit(request.args.get("limit"), default=10, most=100)
            after = request.args.get("after")
            if after is not None and not after.isdigit():
                raise _Invalid(f"after {after!r} is not a valid paging cursor")
            names = _requested(request.args.getlist("properties"), _CONTACT_DEFAULTS)
        except _Invalid as exc:
            return _invalid(str(exc))
        with self.lock:
            ordered = sorted(self.contacts.values(), key=lambda o: o.number)
            if after is not None:
                ordered = [o for o in ordered if o.number >= int(after)]
            if request.args.get("archived", "false").lower() == "true":
                ordered = []
            page = ordered[:limit]
            body: dict[str, Any] = {"results": [self._contact_json(o, names) for o in page]}
            if len(ordered) > limit:
                following = ordered[limit].id
                body["paging"] = {"next": {"after": following, "link": f"?after={following}"}}
        return json_response(body)

    def get_contact(self, request: Request, object_id: str) -> Response:
        """``GET /crm/v3/objects/contacts/{id}``."""
        names = _requested(request.args.getlist("properties"), _CONTACT_DEFAULTS)
        with self.lock:
            found = self.contacts.get(object_id)
            if found is None:
                return _not_found("contact", object_id)
            return json_response(self._contact_json(found, names))

    def search_contacts(self, request: Request) -> Response:
        """``POST /crm/v3/objects/contacts/search`` with filters, one sort and offsets."""
        if self.search_rate is not None:
            allowed, _, _ = self.search_rate.take()
            if not allowed:
                return self._rate_limited("SECONDLY", "secondly")
        try:
            body = _json_object(request)
            limit = _limit(body.get("limit"), default=10, most=200)
            after = body.get("after")
            offset = 0
            if after not in (None, ""):
                if not str(after).isdigit():
                    raise _Invalid(f"after {after!r} is not a valid paging cursor")
                offset = int(str(after))
            if offset + limit > self.search_cap:
                raise _Invalid(
                    f"Paging past {self.search_cap} results is not supported: after {offset} "
                    f"with limit {limit} asks for results up to {offset + limit}; narrow the "
                    "query (e.g. by lastmodifieddate) instead"
                )
            match = _matcher(body.get("filterGroups") or [])
            sort = _sort(body.get("sorts") or [])
            names = _requested(body.get("properties") or [], _CONTACT_DEFAULTS)
            query = str(body.get("query") or "").strip().lower()
        except _Invalid as exc:
            return _invalid(str(exc))
        with self.lock:
            found = [o for o in self.contacts.values() if match(o)]
            if query:
                found = [o for o in found if query in _searchable(o)]
            name, descending = sort
            # Ties (and ``None`` values) in a stable order: by id.
            found.sort(key=lambda o: o.number)
            found.sort(key=lambda o: _orderable(o.sort_key(name)), reverse=descending)
            page = found[offset : offset + limit]
            response: dict[str, Any] = {
                "total": len(found),
                "results": [self._contact_json(o, names) for o in page],
            }
            if offset + limit < len(found):
                following = str(offset + limit)
                response["paging"] = {"next": {"after": following, "link": f"?after={following}"}}
        return json_response(response)

    def _contact_json(self, contact: _Object, names: Iterable[str]) -> dict[str, Any]:
        properties = {n: contact.properties.get(n) for n in names if n in CONTACT_PROPERTIES}
        if contact.id in self._malformed and "lastmodifieddate" in properties:
            properties["lastmodifieddate"] = "last Tuesday"
        return {
            "id": contact.id,
            "properties": properties,
            "createdAt": _iso(contact.created),
            "updatedAt": _iso(contact.updated),
            "archived": False,
        }

    # -- tasks and notes ---------------------------------------------------------------

    def create_task(self, request: Request) -> Response:
        """``POST /crm/v3/objects/tasks`` (201, the new task)."""
        try:
            body = _json_object(request)
            properties = _engagement_properties(body)
            for name, allowed in (
                ("hs_task_status", _TASK_STATUSES),
                ("hs_task_priority", _TASK_PRIORITIES),
                ("hs_task_type", _TASK_TYPES),
            ):
                value = properties.get(name)
                if value is not None and value not in allowed:
                    raise _Invalid(
                        f"{value!r} is not a valid option for {name}; "
                        f"allowed: {', '.join(sorted(allowed))}"
                    )
            properties.setdefault("hs_task_status", "NOT_STARTED")
            with self.lock:
                contacts = self._associated(body.get("associations"), 204)
                self._next_task += 1
                task = self._engagement(str(self._next_task), properties, contacts)
                self.tasks[task.id] = task
        except _Invalid as exc:
            return _invalid(str(exc))
        return json_response(_engagement_json(task, task.properties), 201)

    def create_note(self, request: Request) -> Response:
        """``POST /crm/v3/objects/notes`` (201, the new note)."""
        try:
            body = _json_object(request)
            properties = _engagement_properties(body)
            text = properties.get("hs_note_body") or ""
            if len(text) > _NOTE_MAX:
                raise _Invalid(
                    f"hs_note_body is {len(text)} characters long; at most {_NOTE_MAX} fit"
                )
            with self.lock:
                contacts = self._associated(body.get("associations"), 202)
                self._next_note += 1
                note = self._engagement(str(self._next_note), properties, contacts)
                self.notes[note.id] = note
        except _Invalid as exc:
            return _invalid(str(exc))
        return json_response(_engagement_json(note, note.properties), 201)

    def _associated(self, associations: Any, type_id: int) -> list[str]:
        """Contact ids of ``associations`` (type ``type_id`` only), each an existing contact."""
        if associations is None:
            return []
        if not isinstance(associations, list):
            raise _Invalid("associations must be a list")
        contacts = []
        for item in associations:
            if not isinstance(item, dict) or not isinstance(item.get("to"), dict):
                raise _Invalid("each association needs to: {id} and types")
            target = str(item["to"].get("id"))
            types = item.get("types")
            if not isinstance(types, list) or not types:
                raise _Invalid(f"the association to {target} has no types")
            for kind in types:
                if not isinstance(kind, dict) or kind.get("associationTypeId") != type_id:
                    raise _Invalid(
                        f"association type {kind!r} is not valid here; use "
                        f"HUBSPOT_DEFINED {type_id} (to a contact)"
                    )
                if kind.get("associationCategory") != "HUBSPOT_DEFINED":
                    raise _Invalid("associationCategory must be HUBSPOT_DEFINED")
            if target not in self.contacts:
                raise _Invalid(f"One or more associations are invalid: no contact {target}")
            contacts.append(target)
        return contacts

    def _engagement(
        self, object_id: str, properties: dict[str, str | None], contacts: list[str]
    ) -> _Object:
        now = self.clock.now()
        properties = {
            **properties,
            "hs_createdate": _iso(now),
            "hs_lastmodifieddate": _iso(now),
            "hs_object_id": object_id,
        }
        return _Object(object_id, properties, now, now, contacts)

    def get_task(self, request: Request, object_id: str) -> Response:
        """``GET /crm/v3/objects/tasks/{id}``."""
        return self._get(self.tasks, "task", request, object_id)

    def get_note(self, request: Request, object_id: str) -> Response:
        """``GET /crm/v3/objects/notes/{id}``."""
        return self._get(self.notes, "note", request, object_id)

    def list_tasks(self, request: Request) -> Response:
        """``GET /crm/v3/objects/tasks``."""
        return self._list(self.tasks, request)

    def list_notes(self, request: Request) -> Response:
        """``GET /crm/v3/objects/notes``."""
        return self._list(self.notes, request)

    def _get(
        self, store: dict[str, _Object], kind: str, request: Request, object_id: str
    ) -> Response:
        names = _requested(request.args.getlist("properties"), _ENGAGEMENT_DEFAULTS)
        with self.lock:
            found = store.get(object_id)
            if found is None:
                return _not_found(kind, object_id)
            body = _engagement_json(found, {n: found.properties.get(n) for n in names})
            if "contacts" in request.args.getlist("associations"):
                body["associations"] = _associations_json(found, kind)
        return json_response(body)

    def _list(self, store: dict[str, _Object], request: Request) -> Response:
        try:
            limit = _limit(request.args.get("limit"), default=10, most=100)
            after = request.args.get("after")
            if after is not None and not after.isdigit():
                raise _Invalid(f"after {after!r} is not a valid paging cursor")
            names = _requested(request.args.getlist("properties"), _ENGAGEMENT_DEFAULTS)
        except _Invalid as exc:
            return _invalid(str(exc))
        with self.lock:
            ordered = sorted(store.values(), key=lambda o: o.number)
            if after is not None:
                ordered = [o for o in ordered if o.number >= int(after)]
            body: dict[str, Any] = {
                "results": [
                    _engagement_json(o, {n: o.properties.get(n) for n in names})
                    for o in ordered[:limit]
                ]
            }
            if len(ordered) > limit:
                following = ordered[limit].id
                body["paging"] = {"next": {"after": following, "link": f"?after={following}"}}
        return json_response(body)

    def read_tasks(self, request: Request) -> Response:
        """``POST /crm/v3/objects/tasks/batch/read``: 200, or 207 naming the unknown ids."""
        try:
            body = _json_object(request)
            inputs = body.get("inputs")
            if not isinstance(inputs, list) or not inputs:
                raise _Invalid("inputs must be a non-empty list of {id}")
            if len(inputs) > 100:
                raise _Invalid(f"at most 100 inputs per batch, got {len(inputs)}")
            ids = [str(i.get("id")) if isinstance(i, dict) else "" for i in inputs]
            names = _requested(body.get("properties") or [], _ENGAGEMENT_DEFAULTS)
        except _Invalid as exc:
            return _invalid(str(exc))
        now = _iso(self.clock.now())
        with self.lock:
            results = [
                _engagement_json(self.tasks[i], {n: self.tasks[i].properties.get(n) for n in names})
                for i in dict.fromkeys(ids)
                if i in self.tasks
            ]
        missing = [i for i in dict.fromkeys(ids) if i not in self.tasks]
        response: dict[str, Any] = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": now,
            "completedAt": now,
        }
        if not missing:
            return json_response(response)
        response["numErrors"] = 1
        response["errors"] = [
            {
                "status": "error",
                "category": "OBJECT_NOT_FOUND",
                "message": "Could not get some TASK objects, they may be deleted or not exist. "
                "Check that ids are valid.",
                "context": {"ids": missing},
            }
        ]
        return json_response(response, 207)

    # -- owners ------------------------------------------------------------------------

    def list_owners(self, request: Request) -> Response:
        """``GET /crm/v3/owners``: the seeded recruiters."""
        results = []
        for number, recruiter in enumerate(RECRUITERS):
            first, _, last = recruiter.name.partition(" ")
            results.append(
                {
                    "id": recruiter.hubspot_id,
                    "email": recruiter.email,
                    "firstName": first,
                    "lastName": last,
                    "userId": 9_100_000 + number,
                    "createdAt": "2026-01-05T09:00:00.000Z",
                    "updatedAt": "2026-01-05T09:00:00.000Z",
                    "archived": False,
                }
            )
        return json_response({"results": results})

    # -- admin (Python only) -----------------------------------------------------------

    def contact_id(self, person_index: int) -> str:
        """The contact id of seeded person ``person_index``."""
        return self._by_index[person_index]

    def move(self, who: int | str, stage: str, at: datetime | None = None) -> None:
        """A recruiter moves a contact (a person index, or a contact id) to canonical ``stage``."""
        contact_id = self._by_index[who] if isinstance(who, int) else who
        if stage not in LIFECYCLE:
            raise ValueError(f"{stage!r} is not a canonical stage ({', '.join(LIFECYCLE)})")
        with self.lock:
            self._touch(self.contacts[contact_id], at)
            self.contacts[contact_id].properties["lifecyclestage"] = LIFECYCLE[stage]

    def malform(self, contact_id: str, at: datetime | None = None) -> None:
        """Make the contact unreadable: its ``lastmodifieddate`` is served as garbage."""
        with self.lock:
            self._touch(self.contacts[contact_id], at)
            self._malformed.add(contact_id)

    def _touch(self, contact: _Object, at: datetime | None) -> None:
        at = at or self.clock.now()
        contact.touch(at)
        contact.properties["lastmodifieddate"] = _iso(at)

    def tasks_for(self, contact_id: str) -> list[dict[str, Any]]:
        """The tasks associated with a contact: ``{id, properties, contact_ids, owner_id}``."""
        return self._engagements_for(self.tasks, contact_id)

    def notes_for(self, contact_id: str) -> list[dict[str, Any]]:
        """The notes associated with a contact, shaped like :meth:`tasks_for`."""
        return self._engagements_for(self.notes, contact_id)

    def _engagements_for(self, store: dict[str, _Object], contact_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [
                {
                    "id": o.id,
                    "properties": copy.deepcopy(o.properties),
                    "contact_ids": list(o.contacts),
                    "owner_id": o.properties.get("hubspot_owner_id"),
                }
                for o in sorted(store.values(), key=lambda o: o.number)
                if contact_id in o.contacts
            ]

    def complete_task(self, task_id: str) -> None:
        """The owner ticks the task off (``hs_task_status`` COMPLETED)."""
        with self.lock:
            task = self.tasks[task_id]
            now = self.clock.now()
            task.properties["hs_task_status"] = "COMPLETED"
            task.properties["hs_lastmodifieddate"] = _iso(now)
            task.touch(now)


# -- request reading ---------------------------------------------------------------------


def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(request.get_data(cache=True) or b"null")
    except ValueError:
        raise _Invalid("Invalid input JSON on line 1: the body is not JSON") from None
    if not isinstance(body, dict):
        raise _Invalid("the body must be a JSON object")
    return body


def _limit(value: Any, *, default: int, most: int) -> int:
    if value in (None, ""):
        return default
    try:
        limit = int(value)
    except (TypeError, ValueError):
        raise _Invalid(f"limit {value!r} is not a number") from None
    if not 1 <= limit <= most:
        raise _Invalid(f"limit must be between 1 and {most}, got {limit}")
    return limit


def _requested(values: Iterable[Any], defaults: Sequence[str]) -> list[str]:
    """Property names from repeated and comma-separated values (the defaults when none)."""
    names = [n.strip() for v in values for n in str(v).split(",") if n.strip()]
    return list(dict.fromkeys(names)) or list(defaults)


def _engagement_properties(body: dict[str, Any]) -> dict[str, str | None]:
    properties = body.get("properties")
    if not isinstance(properties, dict):
        raise _Invalid("properties must be an object")
    out = {str(k): None if v is None else str(v) for k, v in properties.items()}
    stamp = out.get("hs_timestamp")
    if not stamp:
        raise _Invalid("Property values were not valid: hs_timestamp is required")
    try:
        out["hs_timestamp"] = _iso(_instant(stamp))
    except ValueError:
        raise _Invalid(f"hs_timestamp {stamp!r} is not epoch milliseconds or ISO 8601") from None
    return out


def _engagement_json(found: _Object, properties: dict[str, str | None]) -> dict[str, Any]:
    return {
        "id": found.id,
        "properties": properties,
        "createdAt": _iso(found.created),
        "updatedAt": _iso(found.updated),
        "archived": False,
    }


def _associations_json(found: _Object, kind: str) -> dict[str, Any]:
    return {
        "contacts": {
            "results": [{"id": c, "type": f"{kind}_to_contact"} for c in found.contacts],
        }
    }


def _searchable(found: _Object) -> str:
    p = found.properties
    return " ".join(str(p.get(n) or "") for n in ("firstname", "lastname", "email")).lower()


def _orderable(value: Any) -> tuple[int, Any]:
    # None sorts first ascending, as an empty value would.
    return (0, "") if value is None else (1, value)


def _operand(name: str, value: Any) -> Any:
    if value is None:
        raise _Invalid(f"the filter on {name} has no value")
    if name in ("lastmodifieddate", "createdate"):
        try:
            return _ms(_instant(value))
        except ValueError:
            raise _Invalid(f"{value!r} is not a valid time for {name}") from None
    if name == "hs_object_id":
        try:
            return int(str(value))
        except ValueError:
            raise _Invalid(f"{value!r} is not a valid number for {name}") from None
    return str(value).lower()


def _condition(item: Any) -> Callable[[_Object], bool]:
    if not isinstance(item, dict):
        raise _Invalid("each filter must be an object")
    name = item.get("propertyName")
    operator = item.get("operator")
    if not isinstance(name, str) or not name:
        raise _Invalid("each filter needs a propertyName")
    if operator not in _OPERATORS:
        raise _Invalid(f"operator {operator!r} is not one of {', '.join(sorted(_OPERATORS))}")

    def actual(found: _Object) -> Any:
        value = found.sort_key(name)
        return value.lower() if isinstance(value, str) else value

    if operator == "HAS_PROPERTY":
        return lambda o: actual(o) not in (None, "")
    if operator == "NOT_HAS_PROPERTY":
        return lambda o: actual(o) in (None, "")
    if operator in ("IN", "NOT_IN"):
        values = item.get("values")
        if not isinstance(values, list):
            raise _Invalid(f"{operator} needs values")
        wanted = {_operand(name, v) for v in values}
        if operator == "IN":
            return lambda o: actual(o) in wanted
        return lambda o: actual(o) not in wanted
    low = _operand(name, item.get("value"))
    if operator == "BETWEEN":
        high = _operand(name, item.get("highValue"))
        return lambda o: actual(o) is not None and low <= actual(o) <= high
    compare: dict[str, Callable[[Any, Any], bool]] = {
        "EQ": lambda a, b: a == b,
        "NEQ": lambda a, b: a != b,
        "LT": lambda a, b: a < b,
        "LTE": lambda a, b: a <= b,
        "GT": lambda a, b: a > b,
        "GTE": lambda a, b: a >= b,
    }
    test = compare[operator]

    def check(found: _Object) -> bool:
        value = actual(found)
        if value is None:
            return operator == "NEQ"
        try:
            return test(value, low)
        except TypeError:
            return False

    return check


def _matcher(groups: Any) -> Callable[[_Object], bool]:
    """One predicate for ``filterGroups``: groups OR'ed, filters within a group AND'ed."""
    if not isinstance(groups, list):
        raise _Invalid("filterGroups must be a list")
    if len(groups) > 5:
        raise _Invalid(f"at most 5 filterGroups are allowed, got {len(groups)}")
    compiled: list[list[Callable[[_Object], bool]]] = []
    total = 0
    for group in groups:
        filters = group.get("filters") if isinstance(group, dict) else None
        if not isinstance(filters, list):
            raise _Invalid("each filter group needs a filters list")
        if len(filters) > 10:
            raise _Invalid(f"at most 10 filters per group are allowed, got {len(filters)}")
        total += len(filters)
        compiled.append([_condition(f) for f in filters])
    if total > 25:
        raise _Invalid(f"at most 25 filters in all are allowed, got {total}")
    if not compiled:
        return lambda found: True
    if len(compiled) == 1 and len(compiled[0]) == 1:
        return compiled[0][0]
    return lambda found: any(all(c(found) for c in group) for group in compiled)


def _sort(sorts: Any) -> tuple[str, bool]:
    """``(property, descending)``; by id when none is given."""
    if not isinstance(sorts, list):
        raise _Invalid("sorts must be a list")
    if len(sorts) > 1:
        raise _Invalid("at most one sort is allowed")
    if not sorts:
        return "hs_object_id", False
    item = sorts[0]
    if isinstance(item, str):  # the older SDKs send bare property names
        return item, False
    if not isinstance(item, dict) or not isinstance(item.get("propertyName"), str):
        raise _Invalid("a sort needs propertyName and direction")
    direction = item.get("direction", "ASCENDING")
    if direction not in ("ASCENDING", "DESCENDING"):
        raise _Invalid(f"direction {direction!r} is not ASCENDING or DESCENDING")
    return item["propertyName"], direction == "DESCENDING"
