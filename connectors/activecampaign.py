"""ActiveCampaign API v3 connector: contacts as candidates, deals as their stage, notes, tasks.

* ``ACTIVECAMPAIGN_API_URL`` is the account's API URL (``https://<account>.api-us1.com``,
  Settings → Developer); every path is under ``/api/3``. ``ACTIVECAMPAIGN_API_TOKEN`` goes
  in the ``Api-Token`` header. A bad token answers 401/403: a :class:`ConfigError` naming it.
* One limit for the whole account: 5 requests per second, a 429 with ``Retry-After`` past
  it (and ``RateLimit-Remaining`` on answers). Requests are paced a little under it.
* Contacts are read with ``GET /contacts?orders[id]=ASC&id_greater=<last id>`` (the
  documented fast way to page through many contacts; keyset paging also never skips a
  contact when others change mid-run), ``limit`` 100, with ``include=contactTags,
  fieldValues,deals`` so each page brings its tags, custom field values and deals in the
  same answer. An incremental run adds ``filters[updated_after]=<last start - 5 min>``.
  Tag names (``/tags``), custom field names (``/fields``) and stage titles
  (``/dealStages``) are small account lists, read once per connector when first needed.
* A deal changing does not change its contact's ``udate``, so an incremental run then reads
  ``GET /deals?filters[updated_after]=...&orders[cdate]=ASC`` (offset paging; creation
  order is not moved by edits) and re-reads the contacts of those deals by ``ids[]``.
  A contact may thus come twice in one run; the store's upsert makes that harmless.
* **Stage.** A contact's deals decide it: a won deal (``status`` 1) makes the candidate
  ``hired`` (a hire ends outreach whatever else is open); otherwise the most recently
  changed open deal (``status`` 0, latest ``mdate``) gives its stage title, mapped through
  ``stage_map.activecampaign``; otherwise a lost deal (``status`` 2) makes them
  ``rejected``; a contact without deals has no stage. That deal also gives the owner
  (task assignee), ``stage_entered_at`` (its ``mdate``) and the job title (its title).
* Notes: ``POST /notes`` ``{"note": {"note", "relid": <contact id>, "reltype":
  "Subscriber"}}``. Tasks: ``POST /dealTasks`` with ``relid`` the contact, ``reltype``
  ``Subscriber`` (``ownerType`` ``contact``), ``duedate``, ``dealTasktype`` (the account's
  type named like the task: Call for calls, else To-do/Todo, else the first) and
  ``assignee`` the owner. A write is never re-sent after a 5xx other than 503 (it may
  have been processed), nor when the answer lacks the new id.

The facts and their sources are in docs/activecampaign-api.md.

If an account's contact list ignores ``include=deals`` (the ``deals`` key is absent), each
contact's deals are read with ``GET /contacts/{id}/deals`` instead: slower, same result.
"""

from __future__ import annotations

import json
import re
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import httpx

from connectors.activecampaign_records import (
    OPEN,
    choose_deal,
    field_key,
    flatten_contact,
    numeric_id,
    source_id,
    status_of,
)
from connectors.base import Connector, NoteRef, Page, TaskSpec, load_cursor
from connectors.http import ApiClient, HeaderPacer
from outreach.clock import Clock, SystemClock, parse_instant
from outreach.errors import ConfigError, PermanentError

__all__ = ["ActiveCampaign", "choose_deal", "flatten_contact"]

API = "/api/3"
CONTACTS = f"{API}/contacts"
DEALS = f"{API}/deals"
STAGES = f"{API}/dealStages"
TAGS = f"{API}/tags"
FIELDS = f"{API}/fields"
NOTES = f"{API}/notes"
TASKS = f"{API}/dealTasks"
TASK_TYPES = f"{API}/dealTasktypes"

# Changes made while a sync runs are read again by the next one.
_OVERLAP = timedelta(minutes=5)
_INCLUDE = "contactTags,fieldValues,deals"


class _Pacer(HeaderPacer):
    """The steady pacer, plus ActiveCampaign's ``RateLimit-Limit``/``-Remaining`` headers.

    The account's window is one second and the answer names no reset time. Our own pace
    (under the limit) already spreads requests over the window, so a spent window
    (``Remaining: 0``, e.g. other integrations sharing the account) holds the next request
    for one request's share of the second (``1 / Limit``); holding a whole second each time
    would halve the throughput for nothing, and a 429's ``Retry-After`` covers the rest.
    """

    def observe(self, headers: Mapping[str, str]) -> None:
        """Hold briefly when the account's window is used up."""
        super().observe(headers)
        try:
            remaining = int(str(headers.get("RateLimit-Remaining", "")).strip())
        except ValueError:
            return
        if remaining <= 0:
            try:
                limit = max(1, int(str(headers.get("RateLimit-Limit", "5")).strip()))
            except ValueError:
                limit = 5
            self.hold(1.0 / limit)


class ActiveCampaign(Connector):
    """ActiveCampaign contacts as candidate records; notes and tasks on the contact.

    Example::

        ac = ActiveCampaign("https://acme.api-us1.com", token)
        for page in ac.pages(committed_cursor):
            store(page.records, page.cursor)
        ac.create_task(TaskSpec(contact_id, owner_id, "Connect on LinkedIn", body, due))
    """

    name: ClassVar[str] = "activecampaign"
    #: ``limit`` is at most 100
    page_size: ClassVar[int] = 100
    #: 5 requests per second per account, paced a little under it so latency jitter
    #: never puts a sixth request into one of the server's seconds
    requests_per_second: ClassVar[float | None] = 4.5

    def __init__(
        self,
        api_url: str,
        api_token: str,
        *,
        clock: Clock | None = None,
        transport: httpx.BaseTransport | None = None,
        **client_options: Any,
    ) -> None:
        self.clock = clock or SystemClock()
        base = re.sub(r"/api/3/?$", "", api_url.strip().rstrip("/"))
        self.client = ApiClient(
            "activecampaign",
            base,
            credential="ACTIVECAMPAIGN_API_TOKEN",
            headers={"Api-Token": api_token, "Accept": "application/json"},
            rate=self.requests_per_second,
            transport=transport,
            **client_options,
        )
        self.client.pacer = _Pacer(
            self.requests_per_second,
            window_seconds=1.0,
            monotonic=client_options.get("monotonic", time.monotonic),
            sleep=client_options.get("sleep", time.sleep),
        )
        self._tags: dict[str, str] | None = None
        self._fields: dict[str, str] | None = None
        self._stages: dict[str, str] | None = None
        self._task_types: list[dict[str, Any]] | None = None

    def close(self) -> None:
        """Release the connection pool."""
        self.client.close()

    # -- reading -----------------------------------------------------------------------

    def pages(self, cursor: str | None, *, full: bool = False) -> Iterator[Page]:
        """Contacts changed since the cursor's ``since`` (every contact on a first run or ``full``).

        Mid-run cursors say where the next page starts: ``{"phase": "contacts",
        "after_id", ...}`` or ``{"phase": "deals", "offset", ...}``, with ``since``,
        ``started`` and ``full``, so a killed run resumes at the first page it did not
        commit. The last page's cursor is ``{"since": <when this run started>}``.
        """
        state = load_cursor("activecampaign", cursor)
        resuming = state.get("phase") in ("contacts", "deals") and (
            not full or bool(state.get("full"))
        )
        if not resuming:
            state = {
                "phase": "contacts",
                "since": None if full else state.get("since"),
                "started": self.clock.now().isoformat(),
                "full": full,
                "after_id": None,
            }
        since = state.get("since")
        if state["phase"] == "contacts":
            for page, after_id in self._contact_pages(since, state.get("after_id")):
                if after_id is not None:
                    page.cursor = json.dumps({**state, "after_id": after_id})
                    yield page
                    continue
                if not since:
                    page.cursor, page.done = json.dumps({"since": state["started"]}), True
                    yield page
                    return
                # The contacts are read; the deals changed since come next.
                page.cursor = json.dumps({**state, "phase": "deals", "offset": 0, "after_id": None})
                yield page
            state = {**state, "phase": "deals", "offset": 0}
        yield from self._deal_pages(state)

    def _contact_pages(
        self, since: str | None, after_id: str | None
    ) -> Iterator[tuple[Page, str | None]]:
        """Pages of contacts by id, and the last id read (None after the last page)."""
        last = after_id
        while True:
            params: list[tuple[str, Any]] = [
                ("limit", self.page_size),
                ("orders[id]", "ASC"),
                ("include", _INCLUDE),
            ]
            if last:
                params.append(("id_greater", last))
            if since:
                params.append(("filters[updated_after]", _filter_time(since)))
            body = _body(self.client.get(CONTACTS, params=params), "contacts")
            contacts = body["contacts"]
            page = self._page(body)
            ids = [numeric_id(raw) for raw in contacts]
            ids = [i for i in ids if i is not None]
            if len(contacts) < self.page_size or not ids:
                yield page, None
                return
            following = str(max(ids))
            if last is not None and int(following) <= int(last):
                raise PermanentError(
                    f"activecampaign: id_greater={last} returned no higher id; stopping a "
                    "pagination loop (the committed cursor is kept)",
                    provider="activecampaign",
                )
            last = following
            yield page, last

    def _deal_pages(self, state: dict[str, Any]) -> Iterator[Page]:
        """Contacts of the deals changed since ``since``, a page of deals at a time."""
        since = state["since"]
        offset = int(state.get("offset") or 0)
        previous: list[Any] = []
        while True:
            params: list[tuple[str, Any]] = [
                ("limit", self.page_size),
                ("offset", offset),
                ("orders[cdate]", "ASC"),
                ("filters[updated_after]", _filter_time(since)),
            ]
            body = _body(self.client.get(DEALS, params=params), "deals")
            deals = body["deals"]
            _check_advance(previous, deals, DEALS, offset)
            previous = deals
            contact_ids = list(
                dict.fromkeys(
                    str(d["contact"])
                    for d in deals
                    if isinstance(d, dict) and str(d.get("contact") or "").isdigit()
                )
            )
            page = self._contacts_by_id(contact_ids) if contact_ids else Page([], None)
            offset += len(deals)
            if len(deals) < self.page_size:
                page.cursor, page.done = json.dumps({"since": state["started"]}), True
                yield page
                return
            page.cursor = json.dumps({**state, "phase": "deals", "offset": offset})
            yield page

    def _contacts_by_id(self, ids: list[str]) -> Page:
        params: list[tuple[str, Any]] = [("ids[]", i) for i in ids]
        params += [("limit", self.page_size), ("include", _INCLUDE)]
        return self._page(_body(self.client.get(CONTACTS, params=params), "contacts"))

    def _page(self, body: Mapping[str, Any]) -> Page:
        """Flatten one answer of contacts with its sideloaded tags, values and deals."""
        by_contact: dict[str, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
        for key in ("contactTags", "fieldValues", "deals"):
            for item in body.get(key) or []:
                if isinstance(item, dict) and item.get("contact") is not None:
                    by_contact[str(item["contact"])][key].append(item)
        sideloaded_deals = isinstance(body.get("deals"), list)
        records: list[dict[str, Any]] = []
        problems: list[tuple[str, str]] = []
        contacts = body["contacts"]
        tags = self.tag_names() if body.get("contactTags") else {}
        fields = self.field_names() if body.get("fieldValues") else {}
        for raw in contacts:
            raw_id = source_id(raw)
            try:
                related = by_contact.get(raw_id, {})
                deals = related.get("deals", []) if sideloaded_deals else self._deals_of(raw_id)
                stages = self.stage_titles() if any(status_of(d) == OPEN for d in deals) else {}
                records.append(
                    flatten_contact(
                        raw,
                        tags=[
                            tags.get(str(t.get("tag")), "") for t in related.get("contactTags", [])
                        ],
                        field_values=related.get("fieldValues", []),
                        field_names=fields,
                        deals=deals,
                        stage_titles=stages,
                    )
                )
            except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
                problems.append((raw_id, f"unreadable contact: {exc}"))
        return Page(records, None, problems)

    def _deals_of(self, contact_id: str) -> list[Any]:
        if not contact_id.isdigit():
            return []
        return _body(self.client.get(f"{CONTACTS}/{contact_id}/deals"), "deals")["deals"]

    def tag_names(self) -> dict[str, str]:
        """Tag id → tag name, read once per connector."""
        if self._tags is None:
            self._tags = {
                str(t["id"]): str(t.get("tag") or "")
                for t in self._list_all(TAGS, "tags")
                if isinstance(t, dict) and t.get("id") is not None
            }
        return self._tags

    def field_names(self) -> dict[str, str]:
        """Custom field id → import key (its personalisation tag, lower-case), read once."""
        if self._fields is None:
            self._fields = {
                str(f["id"]): field_key(f)
                for f in self._list_all(FIELDS, "fields")
                if isinstance(f, dict) and f.get("id") is not None and field_key(f)
            }
        return self._fields

    def stage_titles(self) -> dict[str, str]:
        """Deal stage id → stage title, read once per connector."""
        if self._stages is None:
            self._stages = {
                str(s["id"]): str(s["title"])
                for s in self._list_all(STAGES, "dealStages")
                if isinstance(s, dict) and s.get("id") is not None and s.get("title")
            }
        return self._stages

    def _list_all(self, path: str, key: str) -> list[Any]:
        """Every item of a small account list, paged by ``offset``."""
        items: list[Any] = []
        offset = 0
        while True:
            params = {"limit": self.page_size, "offset": offset}
            page = _body(self.client.get(path, params=params), key)[key]
            _check_advance(items[-len(page) :] if page else [], page, path, offset)
            items.extend(page)
            offset += len(page)
            if len(page) < self.page_size:
                return items

    # -- writing -----------------------------------------------------------------------

    def write_note(self, ref: NoteRef, text: str) -> str | None:
        """Add a note to the contact (``reltype`` ``Subscriber``); return the note's id."""
        body = {"note": {"note": text, "relid": ref.external_id, "reltype": "Subscriber"}}
        return _created_id(self.client.post(NOTES, json=body), "note")

    def create_task(self, task: TaskSpec) -> str | None:
        """Create a task on the contact for its owner; return the task's id."""
        deal_task: dict[str, Any] = {
            "title": task.title,
            "ownerType": "contact",
            "relid": task.external_id,
            "reltype": "Subscriber",
            "status": 0,
            "note": task.body,
            "duedate": _iso(task.due_at),
            "edate": _iso(task.due_at + timedelta(minutes=15)),
            "dealTasktype": self._task_type(task.title),
        }
        if task.owner_id:
            deal_task["assignee"] = task.owner_id
        return _created_id(self.client.post(TASKS, json={"dealTask": deal_task}), "dealTask")

    def task_status(self, external_ids: list[str]) -> Mapping[str, str]:
        """``done`` for completed tasks (``status`` 1), else ``open``; unknown ids absent."""
        states: dict[str, str] = {}
        for task_id in dict.fromkeys(str(i) for i in external_ids):
            if not task_id.isdigit():
                continue
            try:
                response = self.client.get(f"{TASKS}/{task_id}")
            except PermanentError as exc:
                if exc.status == 404:
                    continue
                raise
            item = _body(response, "dealTask")["dealTask"]
            if isinstance(item, dict):
                states[task_id] = "done" if str(item.get("status")) == "1" else "open"
        return states

    def _task_type(self, title: str) -> str:
        if self._task_types is None:
            self._task_types = [
                t
                for t in self._list_all(TASK_TYPES, "dealTasktypes")
                if isinstance(t, dict) and t.get("id") is not None
            ]
        if not self._task_types:
            raise ConfigError(
                "activecampaign: the account has no task types (Deals → Settings → Task "
                "types); add one, e.g. To-do, so tasks can be created"
            )
        wanted = ("call",) if "call" in title.lower() else ("to-do", "todo", "to do")
        for kind in self._task_types:
            if str(kind.get("title", "")).strip().lower() in wanted:
                return str(kind["id"])
        return str(self._task_types[0]["id"])


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).replace(microsecond=0).isoformat()


def _filter_time(since: str) -> str:
    """The ``filters[updated_after]`` value: the last start less the overlap, in UTC."""
    return _iso(parse_instant(since) - _OVERLAP)


def _where(response: httpx.Response) -> str:
    request = response.request
    return f"{request.method} {request.url.copy_with(query=None)}"


def _body(response: httpx.Response, key: str) -> dict[str, Any]:
    """The JSON body of an answer, which must carry ``key`` (a list, or the one object)."""
    try:
        body = response.json()
    except ValueError:
        raise PermanentError(
            f"activecampaign: {_where(response)} did not return JSON "
            f"(HTTP {response.status_code}); the committed cursor is kept",
            provider="activecampaign",
        ) from None
    if not isinstance(body, dict) or key not in body:
        raise ConfigError(
            f"activecampaign: {_where(response)} answered without {key!r}; check "
            "ACTIVECAMPAIGN_API_URL (the account's API URL, e.g. https://acme.api-us1.com)"
        )
    if key.endswith("s") and not isinstance(body[key], list):
        raise ConfigError(
            f"activecampaign: {_where(response)} answered {key!r} that is not a list; check "
            "ACTIVECAMPAIGN_API_URL"
        )
    return body


def _created_id(response: httpx.Response, kind: str) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    item = body.get(kind) if isinstance(body, dict) else None
    if not isinstance(item, dict) or item.get("id") in (None, ""):
        # It may well exist: never re-send (that would make a second one).
        raise PermanentError(
            f"activecampaign: {_where(response)} answered HTTP {response.status_code} "
            f"without the new {kind}'s id; not retried",
            provider="activecampaign",
            status=response.status_code,
        )
    return str(item["id"])


def _check_advance(previous: list[Any], page: list[Any], path: str, offset: int) -> None:
    """Stop offset paging whose next page repeats the last one (a server that ignores
    ``offset`` would otherwise be read forever)."""
    if page and previous and page == previous:
        raise PermanentError(
            f"activecampaign: {path} answered the same page again at offset {offset}; "
            "paging stopped",
            provider="activecampaign",
        )
