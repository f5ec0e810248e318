"""Greenhouse Harvest v1 (legacy API key) connector.

Used when only ``GREENHOUSE_API_KEY`` is set (Harvest v3 with OAuth client credentials is
the next step; see docs/crm-apis.md). Candidates are listed with ``updated_after`` and
``per_page=500``, following the ``Link: rel="next"`` URLs; notes go to the activity feed
with ``On-Behalf-Of``. Greenhouse has no task API: a task becomes a note marked as a task,
and the engine keeps the task in its own queue.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any, ClassVar

import httpx

from connectors.base import Connector, NoteRef, Page, TaskSpec
from connectors.http import ApiClient
from outreach.clock import Clock, SystemClock, parse_instant
from outreach.errors import ConfigError, PermanentError

__all__ = ["GreenhouseV1", "flatten_candidate"]

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
        seen: set[str] = set()
        while True:
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
                    f"greenhouse: GET {response.request.url} returned "
                    f"{type(body).__name__}, not a list of candidates; check GREENHOUSE_BASE_URL"
                )
            records, problems = [], []
            for raw in body:
                try:
                    records.append(flatten_candidate(raw))
                except (KeyError, TypeError, ValueError, AttributeError) as exc:
                    source_id = str(raw.get("id", "?")) if isinstance(raw, dict) else "?"
                    problems.append((source_id, f"unreadable candidate: {exc}"))
            next_url = response.links.get("next", {}).get("url")
            if next_url in seen:
                raise PermanentError(
                    f"greenhouse: the Link header points back to {next_url}; stopping a "
                    "pagination loop (the committed cursor is kept)",
                    provider="greenhouse",
                )
            if next_url:
                seen.add(next_url)
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
            f"/candidates/{ref.external_id}/activity_feed/notes",
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
    record: dict[str, Any] = {
        "source": "greenhouse",
        "external_id": str(raw["id"]),
        "first_name": raw.get("first_name"),
        "last_name": raw.get("last_name"),
        "email": _pick(raw.get("email_addresses"), ("personal", "other", "work")),
        "phone": _pick(raw.get("phone_numbers"), ("mobile", "home", "other", "work")),
        "linkedin_url": linkedin,
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
