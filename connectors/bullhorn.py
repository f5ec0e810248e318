"""Bullhorn REST connector: candidates, their job submissions, notes and tasks.

* Sign-in (OAuth, then ``/login`` for a ``BhRestToken`` and the corporation's ``restUrl``)
  is :mod:`connectors.bullhorn_auth`; every call below goes to that ``restUrl``.
* ``GET query/Candidate`` reads candidates (``isDeleted=false``) changed since the cursor,
  ``orderBy=dateLastModified,id``, ``count=500`` (Bullhorn's maximum). Pages are keyed on
  the last record's ``(dateLastModified, id)`` rather than on ``start``: a record edited
  while the run reads moves to the end instead of shifting unread ones past an offset.
* A candidate's stage comes from its job submissions (``query/JobSubmission`` for the
  page's candidate ids): the submission that is still open before a closed one, then the
  most recently modified; its ``status`` is mapped through ``stage_map.bullhorn``. A
  candidate without submissions is staged by its own ``status``. An incremental run then
  reads the submissions changed since the cursor, so a status move that leaves the
  candidate untouched is still seen (as the Greenhouse v3 connector reads applications).
* Notes: ``PUT entity/Note`` with ``personReference`` (the candidate) and
  ``commentingPerson`` (the API user, from ``settings/userId``), which associates the note
  to the candidate. Tasks: ``PUT entity/Task`` with ``candidate`` and ``owner``. A create
  is never resent after an answer that may mean it was processed (a 500, a timeout), so a
  retried write-back cannot duplicate a note; a 401 (session timed out) or a 429/503 is
  resent, as nothing was processed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import httpx

from connectors.base import Connector, NoteRef, Page, TaskSpec
from connectors.bullhorn_auth import BhRestAuth, BullhornLogin
from connectors.bullhorn_records import flatten_candidate, int_id, ref_id, source_id
from connectors.http import ApiClient
from outreach.clock import Clock, SystemClock, parse_instant
from outreach.errors import ConfigError, PermanentError

__all__ = ["Bullhorn", "flatten_candidate"]

# Changes made while a sync runs are read again by the next one.
_OVERLAP = timedelta(minutes=5)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CANDIDATE_FIELDS = (
    "id,firstName,lastName,email,email2,mobile,phone,status,owner(id,firstName,lastName,email),"
    "dateAdded,dateLastModified,isDeleted,massMailOptOut,smsOptIn,occupation,"
    "customText1,customText2,customText3"
)
SUBMISSION_FIELDS = "id,status,dateAdded,dateLastModified,candidate,jobOrder(id,title)"
#: candidate ids per ``candidate.id IN (…)`` clause: a GET's URL stays near 2 KB
_IDS_PER_QUERY = 250


class Bullhorn(Connector):
    """Bullhorn candidates as records; notes and tasks written back.

    Example::

        login = BullhornLogin(client_id, secret, refresh_token=…, auth_url=…, login_url=…)
        bullhorn = Bullhorn(login)
        for page in bullhorn.pages(committed_cursor):
            store(page.records, page.cursor)
    """

    name: ClassVar[str] = "bullhorn"
    #: ``count`` is capped at 500 by Bullhorn
    page_size: ClassVar[int] = 500
    #: Bullhorn publishes no per-second figure; it answers 429 past the corporation's limit
    requests_per_second: ClassVar[float | None] = 10.0

    def __init__(
        self,
        login: BullhornLogin,
        *,
        clock: Clock | None = None,
        transport: httpx.BaseTransport | None = None,
        **client_options: Any,
    ) -> None:
        self.login = login
        self.clock = clock or SystemClock()
        self._transport = transport
        self._client_options = client_options
        self._client: ApiClient | None = None
        self._lock = threading.Lock()
        self._user_id: int | None = None

    @property
    def client(self) -> ApiClient:
        """The HTTP client on the corporation's ``restUrl`` (signing in on first use)."""
        with self._lock:
            if self._client is None:
                session = self.login.session()
                self._client = ApiClient(
                    "bullhorn",
                    session.rest_url,
                    credential="BULLHORN_CLIENT_ID/BULLHORN_CLIENT_SECRET/BULLHORN_REFRESH_TOKEN",
                    auth=BhRestAuth(self.login),
                    rate=self.requests_per_second,
                    transport=self._transport,
                    **self._client_options,
                )
            return self._client

    def close(self) -> None:
        """Release the connection pools."""
        if self._client is not None:
            self._client.close()
        self.login.close()

    # -- reading -----------------------------------------------------------------------

    def pages(self, cursor: str | None, *, full: bool = False) -> Iterator[Page]:
        """Candidates changed since the cursor's ``since`` (all with ``full``), then, on an
        incremental run, candidates whose submissions changed.

        A mid-run cursor names the phase and the ``(dateLastModified, id)`` key after
        which to go on; the last page's cursor is ``{"since": <when this run started>}``.
        """
        try:
            state = json.loads(cursor) if cursor else {}
        except ValueError:
            raise ConfigError(
                "bullhorn: the stored sync cursor is not JSON; run `outreach sync --source "
                "bullhorn --full` to start over"
            ) from None
        resuming = state.get("after") is not None and (not full or bool(state.get("full")))
        started = (state.get("started") if resuming else None) or self.clock.now().isoformat()
        since = None if full else state.get("since")
        phase = state.get("phase", "candidates") if resuming else "candidates"
        after = _key(state.get("after")) if resuming else None
        base = {"since": since, "started": started, "full": full}
        floor = _epoch_ms(parse_instant(since) - _OVERLAP) if since else None
        if phase == "candidates":
            for raws, key, last in self._keyset("Candidate", CANDIDATE_FIELDS, floor, after):
                page = self._join(raws)
                if not last:
                    page.cursor = json.dumps({**base, "phase": "candidates", "after": key})
                    yield page
                elif since is None:
                    page.cursor, page.done = json.dumps({"since": started}), True
                    yield page
                    return
                else:
                    page.cursor = json.dumps({**base, "phase": "submissions", "after": [0, 0]})
                    yield page
            after = (0, 0)
        assert floor is not None
        for subs, key, last in self._keyset("JobSubmission", "id,candidate", floor, after):
            ids = sorted({cid for s in subs if (cid := ref_id(s, "candidate")) is not None})
            page = self._join(self._candidates_by_id(ids))
            if last:
                page.cursor, page.done = json.dumps({"since": started}), True
            else:
                page.cursor = json.dumps({**base, "phase": "submissions", "after": key})
            yield page

    def _keyset(
        self, entity: str, fields: str, floor: int | None, after: tuple[int, int] | None
    ) -> Iterator[tuple[list[Any], tuple[int, int] | None, bool]]:
        """Pages of ``entity`` modified at or after ``floor``, from the key ``after`` on.

        Yields ``(items, key of the last item, whether this is the last page)``.
        """
        seen: set[tuple[int, int]] = set()
        while True:
            clauses = ["isDeleted=false"]
            if floor is not None:
                clauses.append(f"dateLastModified>={floor}")
            if after is not None and after != (0, 0):
                t, i = after
                clauses.append(f"(dateLastModified>{t} OR (dateLastModified={t} AND id>{i}))")
            items = _data(
                self.client.get(
                    f"query/{entity}",
                    params={
                        "where": " AND ".join(clauses),
                        "fields": fields,
                        "orderBy": "dateLastModified,id",
                        "start": 0,
                        "count": self.page_size,
                    },
                )
            )
            last = len(items) < self.page_size
            keys = [k for item in items if (k := _item_key(item)) is not None]
            if not last:
                if not keys:
                    raise PermanentError(
                        f"bullhorn: a full page of {entity} without one readable "
                        "(dateLastModified, id); stopping (the committed cursor is kept)",
                        provider="bullhorn",
                    )
                if keys[-1] in seen or (after is not None and keys[-1] <= after):
                    raise PermanentError(
                        f"bullhorn: query/{entity} did not move past {keys[-1]}; stopping a "
                        "pagination loop (the committed cursor is kept)",
                        provider="bullhorn",
                    )
                seen.add(keys[-1])
                after = keys[-1]
            yield items, after, last
            if last:
                return

    def _candidates_by_id(self, ids: list[int]) -> list[Any]:
        found: list[Any] = []
        for start in range(0, len(ids), _IDS_PER_QUERY):  # keeps the URL near 2 KB
            chunk = ids[start : start + _IDS_PER_QUERY]
            found.extend(
                _data(
                    self.client.get(
                        "query/Candidate",
                        params={
                            "where": f"id IN ({','.join(map(str, chunk))}) AND isDeleted=false",
                            "fields": CANDIDATE_FIELDS,
                            "start": 0,
                            "count": self.page_size,
                        },
                    )
                )
            )
        return found

    def _submissions(self, ids: Iterable[int]) -> dict[int, list[dict[str, Any]]]:
        """Every live submission of these candidates, by candidate id (paged by ``start``)."""
        wanted = sorted(set(ids))
        by_candidate: dict[int, list[dict[str, Any]]] = {}
        for offset in range(0, len(wanted), _IDS_PER_QUERY):
            chunk = wanted[offset : offset + _IDS_PER_QUERY]
            start = 0
            while True:
                items = _data(
                    self.client.get(
                        "query/JobSubmission",
                        params={
                            "where": f"candidate.id IN ({','.join(map(str, chunk))}) "
                            "AND isDeleted=false",
                            "fields": SUBMISSION_FIELDS,
                            "orderBy": "id",
                            "start": start,
                            "count": self.page_size,
                        },
                    )
                )
                for item in items:
                    cid = ref_id(item, "candidate") if isinstance(item, dict) else None
                    if cid is not None:
                        by_candidate.setdefault(cid, []).append(item)
                if len(items) < self.page_size:
                    break
                start += len(items)
        return by_candidate

    def _join(self, candidates: list[Any]) -> Page:
        """Flatten candidates with their submissions; unreadable ones become problems."""
        readable = [c for c in candidates if isinstance(c, dict) and int_id(c) is not None]
        problems = [
            (source_id(c), "unreadable candidate: not an object with an id")
            for c in candidates
            if not (isinstance(c, dict) and int_id(c) is not None)
        ]
        submissions = self._submissions(int_id(c) for c in readable) if readable else {}
        records = []
        for raw in readable:
            try:
                records.append(flatten_candidate(raw, submissions.get(int_id(raw) or 0, [])))
            except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
                problems.append((source_id(raw), f"unreadable candidate: {exc}"))
        return Page(records, None, problems)

    # -- writing -----------------------------------------------------------------------

    def user_id(self) -> int:
        """The API user's CorporateUser id (``settings/userId``), read once."""
        if self._user_id is None:
            body = _json_body(self.client.get("settings/userId"))
            value = body.get("userId") if isinstance(body, dict) else None
            if isinstance(value, bool) or not isinstance(value, int):
                raise PermanentError(
                    "bullhorn: settings/userId answered without a userId", provider="bullhorn"
                )
            self._user_id = value
        return self._user_id

    def write_note(self, ref: NoteRef, text: str) -> str | None:
        """A Note on the candidate, by the API user (``PUT entity/Note``)."""
        candidate = _candidate_id(ref.external_id)
        body = {
            "personReference": {"id": candidate},
            "commentingPerson": {"id": self.user_id()},
            "action": "Outreach",
            "comments": text,
        }
        return _created(self.client.request("PUT", "entity/Note", idempotent=False, json=body))

    def create_task(self, task: TaskSpec) -> str | None:
        """A Task on the candidate for its owner (``PUT entity/Task``); its id."""
        due = _epoch_ms(task.due_at)
        body: dict[str, Any] = {
            "candidate": {"id": _candidate_id(task.external_id)},
            "subject": task.title[:100],
            "description": task.body,
            "type": "Follow-Up",
            "dateBegin": due,
            "dateEnd": due,
            "isCompleted": False,
        }
        if task.owner_id and task.owner_id.isdigit():
            body["owner"] = {"id": int(task.owner_id)}
        return _created(self.client.request("PUT", "entity/Task", idempotent=False, json=body))

    def task_status(self, external_ids: list[str]) -> Mapping[str, str]:
        """``done`` or ``open`` per Task id (``GET entity/Task/{ids}``, 100 at a time)."""
        ids = [i for i in external_ids if i.isdigit()]
        states: dict[str, str] = {}
        for start in range(0, len(ids), 100):
            chunk = ids[start : start + 100]
            response = self.client.get(
                f"entity/Task/{','.join(chunk)}", params={"fields": "id,isCompleted,isDeleted"}
            )
            body = _json_body(response)
            data = body.get("data") if isinstance(body, dict) else None
            for item in data if isinstance(data, list) else [data]:
                if isinstance(item, dict) and item.get("id") is not None:
                    done = item.get("isCompleted") is True or item.get("isDeleted") is True
                    states[str(item["id"])] = "done" if done else "open"
        return states


# -- helpers ----------------------------------------------------------------------------


def _epoch_ms(at: datetime) -> int:
    return (at.astimezone(UTC) - _EPOCH) // timedelta(milliseconds=1)


def _key(value: Any) -> tuple[int, int] | None:
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return value[0], value[1]
    raise ConfigError(
        "bullhorn: the stored sync cursor is damaged; run `outreach sync --source bullhorn "
        "--full` to start over"
    )


def _item_key(item: Any) -> tuple[int, int] | None:
    if not isinstance(item, dict):
        return None
    modified, item_id = item.get("dateLastModified"), item.get("id")
    if isinstance(modified, bool) or isinstance(item_id, bool):
        return None
    if isinstance(modified, int) and isinstance(item_id, int):
        return modified, item_id
    return None


def _json_body(response: httpx.Response) -> Any:
    """The answer's JSON; :class:`PermanentError` naming the path when it is not JSON."""
    try:
        return response.json()
    except ValueError:
        raise PermanentError(
            f"bullhorn: {response.request.method} {response.request.url.path} did not return "
            f"JSON (HTTP {response.status_code}); the committed cursor is kept",
            provider="bullhorn",
        ) from None


def _data(response: httpx.Response) -> list[Any]:
    """The ``data`` list of a query answer."""
    body = _json_body(response)
    if not isinstance(body, dict) or not isinstance(body.get("data", []), list):
        raise PermanentError(
            f"bullhorn: GET {response.request.url.path} did not answer with a data list; "
            "the committed cursor is kept",
            provider="bullhorn",
        )
    return body.get("data", [])


def _created(response: httpx.Response) -> str | None:
    """The id of a created entity (``changedEntityId``), or None when none came back."""
    try:
        body = response.json() if response.content else None
    except ValueError:
        return None
    value = body.get("changedEntityId") if isinstance(body, dict) else None
    return str(value) if value is not None else None


def _candidate_id(external_id: str) -> int:
    if not external_id.isdigit():
        raise PermanentError(
            f"bullhorn: candidate id {external_id!r} is not a Bullhorn id", provider="bullhorn"
        )
    return int(external_id)
