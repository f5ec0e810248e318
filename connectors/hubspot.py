"""HubSpot CRM v3 connector: contacts as candidate records, notes and tasks written back.

* A private-app (or OAuth) access token as ``Authorization: Bearer`` (``HUBSPOT_ACCESS_TOKEN``).
* A first run, or ``full``, lists every contact with ``GET /crm/v3/objects/contacts``
  (``limit`` at most 100, ``properties`` named, ``paging.next.after`` followed to the end;
  the list endpoint has no result cap).
* An incremental run searches ``POST /crm/v3/objects/contacts/search`` for
  ``lastmodifieddate GTE <last start - 5 min>`` sorted ascending, 200 per page. Every
  page is a query of its own starting at the ``lastmodifieddate`` of the last record
  read, never an ``after`` offset: a contact edited mid-run would otherwise shift the
  rows behind it and the one at the page boundary would be skipped for good. Records at
  exactly that instant are read twice and dropped the second time. Each query reads one
  page, so none comes near the 10,000-result cap (HubSpot answers 400 past it). When
  more than a page of records share one instant, that instant is read on its own,
  sorted by ``hs_object_id`` and windowed by ``hs_object_id GT <last id>``.
* Search has its own, slower rate limit (4 requests per second per token), so search
  requests wait for a second pacer on top of the general one.
* Notes (association type 202, note to contact) and tasks (204, task to contact) are
  created with their association in the same request; task states are read back in
  batches of 100.

The facts and their sources are in docs/crm-apis.md, section 4.
"""

from __future__ import annotations

import json
import threading
import time
import zoneinfo
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, ClassVar

import httpx

from connectors.base import Connector, NoteRef, Page, TaskSpec, load_cursor
from connectors.http import ApiClient, HeaderPacer
from outreach.clock import Clock, SystemClock, parse_instant
from outreach.errors import ConfigError, PermanentError
from outreach.profiles import x_from_handle
from outreach.records import KNOWN_FIELDS

__all__ = ["HubSpot", "flatten_contact", "iana_zone"]

CONTACTS = "/crm/v3/objects/contacts"
SEARCH = "/crm/v3/objects/contacts/search"
NOTES = "/crm/v3/objects/notes"
TASKS = "/crm/v3/objects/tasks"
TASKS_READ = "/crm/v3/objects/tasks/batch/read"

#: HUBSPOT_DEFINED association type ids
NOTE_TO_CONTACT = 202
TASK_TO_CONTACT = 204
#: ``hs_note_body`` holds at most this many characters
NOTE_MAX = 65_536

# Changes made while a sync runs are read again by the next one.
_OVERLAP = timedelta(minutes=5)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Properties read and turned into import keys; anything else a contact carries (other
# than HubSpot's own bookkeeping) passes through as a custom field.
_READ = (
    "firstname",
    "lastname",
    "email",
    "phone",
    "mobilephone",
    "hs_timezone",
    "hubspot_owner_id",
    "hs_email_optout",
    # HubSpot's LinkedIn property; portals that predate it often keep a custom one.
    "hs_linkedin_url",
    "linkedin_url",
    # HubSpot's "Twitter Username" (a handle, with or without @); it has no Facebook
    # profile property for contacts, so portals keep custom x_url / facebook_url ones.
    "twitterhandle",
    "x_url",
    "facebook_url",
    "jobtitle",
    "lastmodifieddate",
    "createdate",
    "hs_object_id",
)
_CONSUMED = frozenset(_READ)


def _properties(stage_property: str) -> list[str]:
    """The contact properties asked for (a search returns only these, not the defaults)."""
    return list(dict.fromkeys([*_READ[:6], stage_property, *_READ[6:]]))


class _SearchPacer(HeaderPacer):
    """The general pacer, plus a slower one that search requests also wait for.

    :class:`ApiClient` paces every attempt (retries included) through its ``pacer``; a
    search is sent inside :meth:`searching`, so its attempts wait for the search pacer too,
    and the rate-limit headers and 429 holds of a search answer apply to the search pacer.
    """

    def __init__(
        self,
        rate: float | None,
        search_rate: float | None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(rate, monotonic=monotonic, sleep=sleep)
        self.search = HeaderPacer(search_rate, window_seconds=1.0, monotonic=monotonic, sleep=sleep)
        self._local = threading.local()

    @contextmanager
    def searching(self) -> Iterator[None]:
        """Within this block, requests from this thread are searches."""
        self._local.search = True
        try:
            yield
        finally:
            self._local.search = False

    def _is_search(self) -> bool:
        return bool(getattr(self._local, "search", False))

    def wait(self) -> None:
        """Block until the next request may go (a search waits for both pacers)."""
        if self._is_search():
            before = self.search.slept
            self.search.wait()
            self.slept += self.search.slept - before
        super().wait()

    def hold(self, seconds: float) -> None:
        """Send nothing of this kind (search or general) for ``seconds``."""
        if self._is_search():
            self.search.hold(seconds)
        else:
            super().hold(seconds)

    def observe(self, headers: Mapping[str, str]) -> None:
        """Read the rate-limit headers into the pacer of the request's kind."""
        if self._is_search():
            self.search.observe(headers)
        else:
            super().observe(headers)


@dataclass
class _Window:
    """The next search query: records changed at or after ``start`` (epoch ms).

    With ``last_id`` set the query reads only the instant ``start``, sorted by
    ``hs_object_id``, after that id (the tie-break for one instant holding more records
    than one page). ``seen`` holds the ids already read at instant ``start``; a query
    that starts there returns them again and they are dropped.
    """

    start: int
    last_id: str | None = None
    seen: frozenset[str] = frozenset()

    def body(self, properties: list[str], limit: int) -> dict[str, Any]:
        if self.last_id is None:
            filters = [_filter("lastmodifieddate", "GTE", self.start)]
            sort = "lastmodifieddate"
        else:
            filters = [
                _filter("lastmodifieddate", "GTE", self.start),
                _filter("lastmodifieddate", "LT", self.start + 1),
                _filter("hs_object_id", "GT", self.last_id),
            ]
            sort = "hs_object_id"
        # No ``after``: every page is a query of its own (see HubSpot._search).
        return {
            "filterGroups": [{"filters": filters}],
            "sorts": [{"propertyName": sort, "direction": "ASCENDING"}],
            "properties": properties,
            "limit": limit,
        }


def _filter(name: str, operator: str, value: object) -> dict[str, str]:
    return {"propertyName": name, "operator": operator, "value": str(value)}


class HubSpot(Connector):
    """HubSpot contacts as candidate records; notes and tasks on the contact's timeline.

    Example::

        hubspot = HubSpot(access_token)
        for page in hubspot.pages(committed_cursor):
            store(page.records, page.cursor)
        hubspot.create_task(TaskSpec(contact_id, owner_id, "Connect on LinkedIn", body, due))
    """

    name: ClassVar[str] = "hubspot"
    #: search pages hold at most 200 records
    page_size: ClassVar[int] = 200
    #: list pages hold at most 100 records
    list_page_size: ClassVar[int] = 100
    #: the general limit is 100 (Free, Starter) to 190 (Professional, Enterprise) per 10 s
    requests_per_second: ClassVar[float | None] = 9.0
    #: search has its own limit, 4 requests per second per token; a little under, so
    #: latency jitter never puts a fifth request into one second
    search_requests_per_second: ClassVar[float | None] = 3.8
    #: one search query returns at most this many results (a plain attribute: tests and
    #: sandboxes may lower it on an instance)

    def __init__(
        self,
        access_token: str,
        *,
        base_url: str = "https://api.hubapi.com",
        stage_property: str = "lifecyclestage",
        clock: Clock | None = None,
        transport: httpx.BaseTransport | None = None,
        **client_options: Any,
    ) -> None:
        self.stage_property = stage_property
        self.properties = _properties(stage_property)
        self.clock = clock or SystemClock()
        self.client = ApiClient(
            "hubspot",
            base_url,
            credential="HUBSPOT_ACCESS_TOKEN",
            headers={"Authorization": f"Bearer {access_token}"},
            rate=self.requests_per_second,
            transport=transport,
            **client_options,
        )
        self.pacer = _SearchPacer(
            self.requests_per_second,
            self.search_requests_per_second,
            monotonic=client_options.get("monotonic", time.monotonic),
            sleep=client_options.get("sleep", time.sleep),
        )
        self.client.pacer = self.pacer

    def close(self) -> None:
        """Release the connection pool."""
        self.client.close()

    # -- reading -----------------------------------------------------------------------

    def pages(self, cursor: str | None, *, full: bool = False) -> Iterator[Page]:
        """Contacts changed since the cursor's ``since``; every contact on a first run or ``full``.

        Mid-run cursors name the mode and the next page: ``{"mode": "list", "after",
        "started"}`` or ``{"mode": "search", "since", "started", "window_start", "after",
        "offset", "last_id"}``, so a killed run resumes at the first page it did not
        commit. The last page's cursor is ``{"since": <when this run started>}``.
        """
        state = load_cursor("hubspot", cursor)
        if state.get("mode") == "list":
            yield from self._list(state)
        elif full or not state.get("since"):
            yield from self._list({})
        else:
            yield from self._search(state)

    def _list(self, state: dict[str, Any]) -> Iterator[Page]:
        started = state.get("started") or self.clock.now().isoformat()
        after: str | None = state.get("after")
        guard = _AfterGuard(after)
        properties = ",".join(self.properties)
        while True:
            params: list[tuple[str, Any]] = [
                ("limit", self.list_page_size),
                ("properties", properties),
            ]
            if after:
                params.append(("after", after))
            body = _results(self.client.get(CONTACTS, params=params))
            records, problems = self._flatten(body["results"])
            after = guard.next(body)
            if after is None:
                yield Page(records, json.dumps({"since": started}), problems, done=True)
                return
            cursor = {"mode": "list", "after": after, "started": started}
            yield Page(records, json.dumps(cursor), problems)

    def _search(self, state: dict[str, Any]) -> Iterator[Page]:
        since: str = state["since"]
        resuming = state.get("mode") == "search"
        started = (state.get("started") if resuming else None) or self.clock.now().isoformat()
        if resuming:
            window = _Window(
                int(state["window_start"]),
                state.get("last_id"),
                frozenset(str(i) for i in state.get("seen") or ()),
            )
        else:
            window = _Window(_ms(parse_instant(since) - _OVERLAP))
        reported: set[str] = set()
        while True:
            with self.pacer.searching():
                response = self.client.post(
                    SEARCH, json=window.body(self.properties, self.page_size), idempotent=True
                )
            body = _results(response)
            results = body["results"]
            fresh, window, more = self._advance(window, results, body)
            records, problems = self._flatten(fresh)
            problems = [p for p in problems if p[0] == "?" or p[0] not in reported]
            reported.update(p[0] for p in problems)
            if not more:
                yield Page(records, json.dumps({"since": started}), problems, done=True)
                return
            cursor = {
                "mode": "search",
                "since": since,
                "started": started,
                "window_start": window.start,
                "last_id": window.last_id,
                "seen": sorted(window.seen),
            }
            yield Page(records, json.dumps(cursor), problems)

    def _advance(
        self, window: _Window, results: list[Any], body: Mapping[str, Any]
    ) -> tuple[list[Any], _Window, bool]:
        """The records of one answer not read before, the next query, and whether one is due.

        Paging a search with ``after`` offsets is unsafe while contacts change: an edit
        moves a contact already read to the end of the sort, the rows behind it shift up
        one place, and the contact at the page boundary is never returned. So every page
        is a new query starting at the last instant read, and the ids already read at
        that instant are dropped. This also keeps every query far below the 10,000 cap.
        """
        fresh: list[Any] = []
        last_ms: int | None = None
        last_id: str | None = None
        at_ms = window.start
        at_ids = set(window.seen)
        for raw in results:
            raw_id = _source_id(raw)
            if raw_id != "?":
                last_id = raw_id
            modified = _modified_ms(raw)
            if modified is None:
                fresh.append(raw)  # unreadable: flatten reports it
                continue
            last_ms = modified if last_ms is None else max(last_ms, modified)
            if modified == at_ms and raw_id in at_ids:
                continue
            if modified > at_ms:
                at_ms, at_ids = modified, set()
            at_ids.add(raw_id)
            fresh.append(raw)
        following = body.get("paging", {}).get("next") if isinstance(body, dict) else None
        full = len(results) >= self.page_size or bool(following)
        if window.last_id is not None:
            # Reading one crowded instant by id.
            if not full:
                return fresh, _Window(window.start + 1), True
            if not (last_id and last_id.isdigit()) or int(last_id) <= int(window.last_id):
                raise PermanentError(
                    f"hubspot: a search for lastmodifieddate {window.start} made no progress "
                    "by hs_object_id; stopping (the committed cursor is kept)",
                    provider="hubspot",
                )
            return fresh, _Window(window.start, last_id=last_id, seen=window.seen), True
        if not full:
            return fresh, window, False
        if last_ms is not None and last_ms > window.start:
            seen = frozenset(at_ids) if at_ms == last_ms else frozenset()
            return fresh, _Window(last_ms, seen=seen), True
        # A whole page changed at the same millisecond: read that instant by id, dropping
        # the ids this query already returned.
        return fresh, _Window(window.start, last_id="0", seen=frozenset(at_ids)), True

    def _flatten(self, items: list[Any]) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
        records: list[dict[str, Any]] = []
        problems: list[tuple[str, str]] = []
        for raw in items:
            try:
                records.append(flatten_contact(raw, self.stage_property))
            except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
                problems.append((_source_id(raw), f"unreadable contact: {exc}"))
        return records, problems

    # -- writing -----------------------------------------------------------------------

    def write_note(self, ref: NoteRef, text: str) -> str | None:
        """Log ``text`` on the contact's timeline (a note, association type 202)."""
        body = {
            "properties": {
                "hs_timestamp": _iso(self.clock.now()),
                "hs_note_body": text[:NOTE_MAX],
            },
            "associations": [_association(ref.external_id, NOTE_TO_CONTACT)],
        }
        return _created_id(self.client.post(NOTES, json=body), "note")

    def create_task(self, task: TaskSpec) -> str | None:
        """Create a to-do for the contact's owner (association type 204); return its id."""
        properties = {
            "hs_timestamp": _iso(task.due_at),
            "hs_task_subject": task.title,
            "hs_task_body": task.body,
            "hs_task_status": "NOT_STARTED",
            "hs_task_priority": "MEDIUM",
            "hs_task_type": "TODO",
        }
        if task.owner_id:
            properties["hubspot_owner_id"] = task.owner_id
        body = {
            "properties": properties,
            "associations": [_association(task.external_id, TASK_TO_CONTACT)],
        }
        return _created_id(self.client.post(TASKS, json=body), "task")

    def task_status(self, external_ids: list[str]) -> Mapping[str, str]:
        """``done`` for COMPLETED tasks, else ``open``; ids HubSpot does not know are absent."""
        wanted = list(dict.fromkeys(str(i) for i in external_ids))
        states: dict[str, str] = {}
        for start in range(0, len(wanted), 100):
            chunk = wanted[start : start + 100]
            body = {"properties": ["hs_task_status"], "inputs": [{"id": i} for i in chunk]}
            try:
                response = self.client.post(TASKS_READ, json=body, idempotent=True)
            except PermanentError as exc:
                if exc.status == 404:  # none of the chunk exists
                    continue
                raise
            for item in _results(response)["results"]:
                if isinstance(item, dict) and item.get("id") is not None:
                    status = (item.get("properties") or {}).get("hs_task_status")
                    states[str(item["id"])] = "done" if status == "COMPLETED" else "open"
        return states


# -- records ---------------------------------------------------------------------------


def flatten_contact(raw: dict[str, Any], stage_property: str = "lifecyclestage") -> dict[str, Any]:
    """A HubSpot contact (``{id, properties, updatedAt, ...}``) as the engine's import keys.

    The stage is the raw ``stage_property`` value (``lead``, ``opportunity`` ...), mapped
    later through ``stage_map.hubspot``; ``jobtitle`` is the person's own current title,
    kept as the custom field ``current_title`` (not the job they are considered for).
    Other properties pass through as custom fields. Raises ``KeyError``, ``TypeError`` or
    ``ValueError`` for a record that cannot be read.
    """
    props = raw["properties"]
    if not isinstance(props, dict):
        raise TypeError(f"properties is {type(props).__name__}, not an object")

    def text(name: str) -> str | None:
        value = props.get(name)
        if value is None:
            return None
        value = str(value).strip()
        return value or None

    updated = text("lastmodifieddate") or raw.get("updatedAt")
    if isinstance(updated, str) and updated.isdigit():
        updated = _iso(_from_ms(int(updated)))
    elif isinstance(updated, str):
        parse_instant(updated)  # fail early, with the offending text
    record: dict[str, Any] = {
        "source": "hubspot",
        "external_id": str(raw["id"]),
        "first_name": text("firstname"),
        "last_name": text("lastname"),
        "email": text("email"),
        "phone": text("mobilephone") or text("phone"),
        "timezone": iana_zone(text("hs_timezone")),
        "stage": text(stage_property),
        "owner_id": text("hubspot_owner_id"),
        "email_opt_out": _flag(text("hs_email_optout")),
        "linkedin_url": text("hs_linkedin_url") or text("linkedin_url"),
        "x_url": text("x_url") or _handle(text("twitterhandle")),
        "facebook_url": text("facebook_url"),
        "current_title": text("jobtitle"),
        "updated_at": updated,
    }
    for key, value in props.items():
        if (
            key in _CONSUMED
            or key == stage_property
            or key in KNOWN_FIELDS
            or key in record
            or value is None
            or value == ""
        ):
            continue
        record[key] = value
    return record


def _handle(value: str | None) -> str | None:
    """HubSpot's ``twitterhandle`` as :func:`outreach.profiles.normalize_x` reads it."""
    return x_from_handle(value) if value else None


def _flag(value: str | None) -> bool | str | None:
    """HubSpot booleans are the strings ``true`` and ``false``; anything else is kept."""
    if value is None:
        return None
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    return value


@lru_cache(maxsize=1)
def _zone_names() -> dict[str, str]:
    names: dict[str, str] = {}
    for zone in sorted(zoneinfo.available_timezones()):
        key = zone.lower()
        names.setdefault(key, zone)
        names.setdefault(key.replace("/", "_slash_"), zone)
    return names


def iana_zone(value: str | None) -> str | None:
    """The IANA zone of a HubSpot ``hs_timezone`` value, or ``None`` when unknown.

    HubSpot stores zones lower-cased with ``/`` spelled ``_slash_``
    (``america_slash_new_york``, ``us_slash_eastern``); a value already in IANA form is
    accepted as it is.
    """
    if not value:
        return None
    return _zone_names().get(value.strip().lower())


# -- helpers ---------------------------------------------------------------------------


def _ms(at: datetime) -> int:
    return (at.astimezone(UTC) - _EPOCH) // timedelta(milliseconds=1)


def _from_ms(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def _iso(at: datetime) -> str:
    """UTC with milliseconds, as HubSpot writes its own times: 2019-10-30T03:30:17.883Z."""
    at = at.astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def _modified_ms(raw: Any) -> int | None:
    """A search result's ``lastmodifieddate`` (or ``updatedAt``) in epoch ms, if readable."""
    if not isinstance(raw, dict):
        return None
    props = raw.get("properties")
    candidates = [props.get("lastmodifieddate") if isinstance(props, dict) else None]
    candidates.append(raw.get("updatedAt"))
    for value in candidates:
        if value is None:
            continue
        text = str(value).strip()
        if text.isdigit():
            return int(text)
        try:
            return _ms(parse_instant(text))
        except ValueError:
            continue
    return None


def _association(contact_id: str, type_id: int) -> dict[str, Any]:
    return {
        "to": {"id": contact_id},
        "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}],
    }


def _created_id(response: httpx.Response, kind: str) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or body.get("id") in (None, ""):
        # It may well exist: never re-send (that would make a second one).
        raise PermanentError(
            f"hubspot: {_where(response)} answered HTTP {response.status_code} "
            f"without the new {kind}'s id; not retried",
            provider="hubspot",
            status=response.status_code,
        )
    return str(body["id"])


def _results(response: httpx.Response) -> dict[str, Any]:
    """The JSON body of a list, search or batch answer, which must carry ``results``."""
    try:
        body = response.json()
    except ValueError:
        raise PermanentError(
            f"hubspot: {_where(response)} did not return JSON (HTTP {response.status_code}); "
            "the committed cursor is kept",
            provider="hubspot",
        ) from None
    if not isinstance(body, dict) or not isinstance(body.get("results"), list):
        raise ConfigError(
            f"hubspot: {_where(response)} answered without a results list; check "
            "HUBSPOT_BASE_URL (it should be https://api.hubapi.com)"
        )
    return body


def _where(response: httpx.Response) -> str:
    """``GET https://api.hubapi.com/crm/v3/objects/contacts`` (the query left out)."""
    request = response.request
    return f"{request.method} {request.url.copy_with(query=None)}"


class _AfterGuard:
    """Reads ``paging.next.after`` and stops a provider that hands back one seen before."""

    def __init__(self, first: str | None) -> None:
        self.seen: set[str] = {first} if first else set()

    def next(self, body: Mapping[str, Any]) -> str | None:
        paging = body.get("paging")
        following = paging.get("next") if isinstance(paging, dict) else None
        after = following.get("after") if isinstance(following, dict) else None
        if after is None or after == "":
            return None
        after = str(after)
        if after in self.seen:
            raise PermanentError(
                f"hubspot: paging.next.after {after!r} was already read; stopping a "
                "pagination loop (the committed cursor is kept)",
                provider="hubspot",
            )
        self.seen.add(after)
        return after


def _source_id(raw: Any) -> str:
    if isinstance(raw, dict) and raw.get("id") not in (None, ""):
        return str(raw["id"])
    return "?"
