"""Lever Data API connector: opportunities, archive reasons, stages, notes.

* Basic auth with the API key as user name and an empty password (``LEVER_API_KEY``).
* ``GET /opportunities`` with ``expand=stage``, ``expand=owner`` and
  ``confidentiality=all`` (the default hides confidential opportunities); incremental runs
  add ``updated_at_start`` in epoch milliseconds. Pages are followed by sending the
  previous answer's opaque ``next`` token as ``offset`` while ``hasNext`` is true, with
  the same filters.
* An archived opportunity is ``hired`` or ``rejected`` by its archive reason's ``type``;
  the reasons (and the stage names, when a stage comes back as a bare id) are read once
  per connector, when a page first needs them.
* Notes go to ``POST /opportunities/{id}/notes?perform_as=<LEVER_USER_ID>``. Lever has no
  task API: a task becomes a note marked as a task, and the engine keeps the task in its
  own queue.

The facts and their sources are in docs/crm-apis.md, section 3.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from connectors.base import Connector, NoteRef, Page, TaskSpec
from connectors.http import ApiClient
from outreach.clock import Clock, SystemClock, parse_instant
from outreach.errors import ConfigError, PermanentError
from outreach.profiles import pick_profile

__all__ = ["Lever", "flatten_opportunity"]

# Changes made while a sync runs are read again by the next one.
_OVERLAP = timedelta(minutes=5)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PHONE_PREFERENCE = ("mobile", "other", "home", "work")


class Lever(Connector):
    """Lever opportunities as candidate records; notes (and tasks as notes) written back.

    Example::

        lever = Lever(api_key, user_id="a1b2…")
        for page in lever.pages(committed_cursor):
            store(page.records, page.cursor)
    """

    name: ClassVar[str] = "lever"
    #: Lever's ``limit`` is 1..100
    page_size: ClassVar[int] = 100
    #: 10 requests per second steady per key (bursts to 20 are allowed, not relied on)
    requests_per_second: ClassVar[float | None] = 10.0

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = "https://api.lever.co/v1",
        user_id: str | None = None,
        clock: Clock | None = None,
        transport: httpx.BaseTransport | None = None,
        **client_options: Any,
    ) -> None:
        self.user_id = user_id
        self.clock = clock or SystemClock()
        self.client = ApiClient(
            "lever",
            base_url,
            credential="LEVER_API_KEY",
            auth=(api_key, ""),
            rate=self.requests_per_second,
            transport=transport,
            **client_options,
        )
        self._archive_types: dict[str, str] | None = None
        self._stage_names: dict[str, str] | None = None

    def close(self) -> None:
        """Release the connection pool."""
        self.client.close()

    def pages(self, cursor: str | None, *, full: bool = False) -> Iterator[Page]:
        """Opportunities updated since the cursor's ``since`` (all with ``full``).

        A mid-run cursor carries the ``offset`` token of the next page, so a killed run
        resumes at the first page it did not commit; the last page's cursor is
        ``{"since": <when this run started>}``.
        """
        state = json.loads(cursor) if cursor else {}
        resuming = bool(state.get("offset")) and (not full or bool(state.get("full")))
        started = (state.get("started") if resuming else None) or self.clock.now().isoformat()
        since = None if full else state.get("since")
        offset: str | None = state.get("offset") if resuming else None
        query: list[tuple[str, Any]] = [
            ("limit", self.page_size),
            ("expand", "stage"),
            ("expand", "owner"),
            ("confidentiality", "all"),
        ]
        if since:
            query.append(("updated_at_start", _epoch_ms(parse_instant(since) - _OVERLAP)))
        seen = {offset} if offset else set()
        while True:
            params = [*query, ("offset", offset)] if offset else query
            body = _envelope(self.client.get("/opportunities", params=params))
            page = self._page(body["data"])
            offset = _next_token(body, seen)
            if offset is None:
                page.cursor, page.done = json.dumps({"since": started}), True
                yield page
                return
            page.cursor = json.dumps(
                {"since": since, "offset": offset, "started": started, "full": full}
            )
            yield page

    def _page(self, items: list[Any]) -> Page:
        """Flatten one page of opportunities; unreadable ones become problems."""
        readable = [raw for raw in items if isinstance(raw, dict) and _has_id(raw)]
        problems = [
            (_source_id(raw), "unreadable opportunity: not an object with an id")
            for raw in items
            if not (isinstance(raw, dict) and _has_id(raw))
        ]
        archive_types: Mapping[str, str] = {}
        if any(isinstance(raw.get("archived"), dict) for raw in readable):
            archive_types = self.archive_reason_types()
        stage_names: Mapping[str, str] = {}
        if any(isinstance(raw.get("stage"), str) for raw in readable):
            stage_names = self.stage_names()
        records = []
        for raw in readable:
            try:
                records.append(flatten_opportunity(raw, archive_types, stage_names=stage_names))
            except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
                problems.append((_source_id(raw), f"unreadable opportunity: {exc}"))
        return Page(records, None, problems)

    def archive_reason_types(self) -> dict[str, str]:
        """Archive reason id → ``type`` (``hired``/``non-hired``), read once per connector.

        A reason created after the first read maps to ``rejected`` until the next run.
        """
        if self._archive_types is None:
            self._archive_types = {
                str(item["id"]): str(item.get("type") or "")
                for item in self._list_all("/archive_reasons")
                if isinstance(item, dict) and item.get("id") is not None
            }
        return self._archive_types

    def stage_names(self) -> dict[str, str]:
        """Stage id → stage name (``text``), read once per connector."""
        if self._stage_names is None:
            self._stage_names = {
                str(item["id"]): str(item["text"])
                for item in self._list_all("/stages")
                if isinstance(item, dict) and item.get("id") is not None and item.get("text")
            }
        return self._stage_names

    def _list_all(self, path: str) -> list[Any]:
        """Every item of a small Lever list, following ``hasNext``/``next``."""
        items: list[Any] = []
        seen: set[str] = set()
        offset: str | None = None
        while True:
            params: dict[str, Any] = {"limit": self.page_size}
            if offset:
                params["offset"] = offset
            body = _envelope(self.client.get(path, params=params))
            items.extend(body["data"])
            offset = _next_token(body, seen)
            if offset is None:
                return items

    def write_note(self, ref: NoteRef, text: str) -> str | None:
        """Add a note to the opportunity, authored by LEVER_USER_ID (``perform_as``)."""
        if not self.user_id:
            raise ConfigError(
                "lever: notes need LEVER_USER_ID (the Lever user id the engine writes as, "
                "sent as perform_as)"
            )
        response = self.client.post(
            f"/opportunities/{quote(ref.external_id, safe='')}/notes",
            params={"perform_as": self.user_id},
            json={"value": text, "secret": False},
        )
        try:
            body = response.json() if response.content else None
        except ValueError:
            return None
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            return None
        note_id = data.get("noteId") if data.get("noteId") is not None else data.get("id")
        return str(note_id) if note_id is not None else None

    def create_task(self, task: TaskSpec) -> str | None:
        """Lever has no task API: log the task as a note; the engine's queue keeps it."""
        due = task.due_at.strftime("%Y-%m-%d %H:%M UTC")
        self.write_note(NoteRef(task.external_id), f"[Task, due {due}] {task.title}\n\n{task.body}")
        return None


def _epoch_ms(at: datetime) -> int:
    return (at.astimezone(UTC) - _EPOCH) // timedelta(milliseconds=1)


def _from_ms(value: Any, name: str) -> str | None:
    """ISO-8601 UTC from Lever's epoch milliseconds (None stays None)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} is {type(value).__name__}, not epoch milliseconds")
    return (_EPOCH + timedelta(milliseconds=value)).isoformat()


def _envelope(response: httpx.Response) -> dict[str, Any]:
    """The ``{"data": [...], "hasNext": ..., "next": ...}`` body of a list answer."""
    try:
        body = response.json()
    except ValueError:
        raise PermanentError(
            f"lever: GET {response.request.url} did not return JSON "
            f"(HTTP {response.status_code}); the committed cursor is kept",
            provider="lever",
        ) from None
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise ConfigError(
            f"lever: GET {response.request.url} did not answer with a data list "
            f"(got {type(body).__name__}); check LEVER_BASE_URL (e.g. https://api.lever.co/v1)"
        )
    return body


def _next_token(body: dict[str, Any], seen: set[str]) -> str | None:
    """The next page's ``offset`` token, or None on the last page; stops a loop."""
    if body.get("hasNext") is not True:
        return None
    token = body.get("next")
    if not isinstance(token, str) or not token:
        # Declaring the run done here would move the cursor past unread records.
        raise PermanentError(
            "lever: hasNext is true but no next token came back; stopping (the committed "
            "cursor is kept)",
            provider="lever",
        )
    if token in seen:
        raise PermanentError(
            f"lever: the next token {token!r} came back twice; stopping a pagination loop "
            "(the committed cursor is kept)",
            provider="lever",
        )
    seen.add(token)
    return token


def _has_id(raw: dict[str, Any]) -> bool:
    return isinstance(raw.get("id"), str) and bool(raw["id"])


def _source_id(raw: Any) -> str:
    if isinstance(raw, dict) and isinstance(raw.get("id"), str | int) and raw["id"] != "":
        return str(raw["id"])
    return "?"


def _text(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is None or isinstance(value, str):
        return value or None
    raise TypeError(f"{key} is {type(value).__name__}, not text")


def _items(raw: Mapping[str, Any], key: str) -> list[Any]:
    value = raw.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise TypeError(f"{key} is {type(value).__name__}, not a list")
    return value


def _object(raw: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    value = raw.get(key)
    if value is None or isinstance(value, dict):
        return value
    raise TypeError(f"{key} is {type(value).__name__}, not an object")


def _phone(phones: list[Any]) -> str | None:
    usable = [
        p
        for p in phones
        if isinstance(p, dict)
        and isinstance(p.get("value"), str)
        and p["value"].strip()
        and p.get("type") != "skype"
    ]
    for kind in _PHONE_PREFERENCE:
        for item in usable:
            if item.get("type") == kind:
                return str(item["value"])
    return str(usable[0]["value"]) if usable else None


def _stage(
    raw: Mapping[str, Any], archive_types: Mapping[str, str], stage_names: Mapping[str, str]
) -> str | None:
    archived = _object(raw, "archived")
    if archived is not None:
        # Unknown reasons are treated as a rejection: only a reason typed hired is a hire.
        return "hired" if archive_types.get(str(archived.get("reason"))) == "hired" else "rejected"
    stage = raw.get("stage")
    if stage is None:
        return None
    if isinstance(stage, dict):
        return _text(stage, "text")
    if isinstance(stage, str):
        return stage_names.get(stage)
    raise TypeError(f"stage is {type(stage).__name__}, not an id or an object")


def _job_title(raw: Mapping[str, Any]) -> str | None:
    """The posting's title, only when ``applications`` were expanded with posting objects."""
    for application in _items(raw, "applications"):
        if isinstance(application, dict) and isinstance(application.get("posting"), dict):
            title = application["posting"].get("text")
            if isinstance(title, str) and title.strip():
                return title
    return None


def flatten_opportunity(
    raw: dict[str, Any],
    archive_types: Mapping[str, str],
    *,
    stage_names: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A Lever opportunity as the engine's import keys.

    ``archive_types`` maps archive reason ids to their ``type``: an archived opportunity is
    ``hired`` when its reason's type is ``hired`` and ``rejected`` otherwise. An active
    one's stage is the expanded ``stage.text`` or, for a bare stage id, its name in
    ``stage_names`` (mapped through ``stage_map.lever`` by the normaliser). Raises
    ``TypeError``/``ValueError`` for a record whose fields have the wrong shape.

    Example::

        flatten_opportunity({"id": "o1", "name": "Ada Okafor", "stage": {"text": "Offer"}}, {})
        # {"source": "lever", "external_id": "o1", "first_name": "Ada", ...}
    """
    if not isinstance(raw, dict):
        raise TypeError(f"the opportunity is {type(raw).__name__}, not an object")
    opportunity_id = raw.get("id")
    if not isinstance(opportunity_id, str) or not opportunity_id:
        raise ValueError("the opportunity has no id")
    name = _text(raw, "name")
    parts = name.split(None, 1) if name else []
    emails = [e for e in _items(raw, "emails") if isinstance(e, str) and e.strip()]
    links = [str(link) for link in _items(raw, "links") if isinstance(link, str)]
    owner = raw.get("owner")
    if isinstance(owner, dict):
        owner_id, recruiter_name = owner.get("id"), _text(owner, "name")
        recruiter_email = _text(owner, "email")
    elif owner is None or isinstance(owner, str):
        owner_id, recruiter_name, recruiter_email = owner, None, None
    else:
        raise TypeError(f"owner is {type(owner).__name__}, not an id or an object")
    archived = _object(raw, "archived")
    entered = _from_ms((archived or {}).get("archivedAt"), "archived.archivedAt") or _from_ms(
        raw.get("lastAdvancedAt"), "lastAdvancedAt"
    )
    contact_consent = (_object(raw, "dataProtection") or {}).get("contact")
    record: dict[str, Any] = {
        "source": "lever",
        "external_id": opportunity_id,
        "first_name": parts[0] if parts else None,
        "last_name": parts[1] if len(parts) > 1 else None,
        "email": emails[0].strip() if emails else None,
        "phone": _phone(_items(raw, "phones")),
        "linkedin_url": next((link for link in links if "linkedin.com" in link.lower()), None),
        "x_url": pick_profile(links, "x"),
        "facebook_url": pick_profile(links, "facebook"),
        "stage": _stage(raw, archive_types, stage_names or {}),
        "stage_entered_at": entered,
        "job_title": _job_title(raw),
        "owner_id": str(owner_id) if owner_id else None,
        "recruiter_name": recruiter_name,
        "recruiter_email": recruiter_email,
        "tags": [str(t) for t in _items(raw, "tags") if t is not None],
        "updated_at": _from_ms(raw.get("updatedAt"), "updatedAt")
        or _from_ms(raw.get("createdAt"), "createdAt"),
        # Lever's contact consent withdrawn: the person must not be emailed.
        "email_opt_out": isinstance(contact_consent, dict)
        and contact_consent.get("allowed") is False,
    }
    headline = _text(raw, "headline")
    if headline:
        record["headline"] = headline
    contact = raw.get("contact")
    if isinstance(contact, str) and contact:
        record["lever_contact"] = contact
    return record
