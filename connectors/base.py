"""The small interface every CRM connector implements, and what it hands back.

A connector streams pages of candidate records changed since a cursor; the sync commits
each page's rows together with the cursor it carries, so an interrupted sync resumes from
the last committed page. Write-back (notes, tasks) goes through the same connector.

Example::

    class Acme(Connector):
        name = "acme"
        page_size = 100
        requests_per_second = 5.0

        def pages(self, cursor, *, full=False):
            ...
            yield Page(records=[{...}], cursor=json.dumps({...}))
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from outreach.errors import ConfigError

__all__ = ["Connector", "NoteRef", "Page", "TaskSpec", "load_cursor"]


@dataclass
class Page:
    """One page of raw-but-flattened records and the cursor to commit after it.

    ``records`` hold the engine's import keys (``external_id``, ``first_name``, ``email``,
    ``stage`` ...); ``problems`` name records the connector could not read at all, as
    ``(source id, reason)``; ``done`` is true on the last page of a run.
    """

    records: list[dict[str, Any]]
    cursor: str | None
    problems: list[tuple[str, str]] = field(default_factory=list)
    done: bool = False


@dataclass(frozen=True)
class NoteRef:
    """Where a note goes: the record's id in its source."""

    external_id: str


@dataclass(frozen=True)
class TaskSpec:
    """A recruiter task to create in the CRM."""

    external_id: str
    owner_id: str | None
    title: str
    body: str
    due_at: datetime


class Connector:
    """Base class of the CRM connectors. Limits are class attributes."""

    name: ClassVar[str] = ""
    #: records per page asked of the provider
    page_size: ClassVar[int] = 100
    #: steady request ceiling (the provider's headers may slow it further)
    requests_per_second: ClassVar[float | None] = None

    def pages(self, cursor: str | None, *, full: bool = False) -> Iterator[Page]:
        """Records changed since ``cursor`` (everything with ``full``), page by page."""
        raise NotImplementedError

    def write_note(self, ref: NoteRef, text: str) -> str | None:
        """Log ``text`` on the record; return the CRM's note id when it gives one."""
        raise NotImplementedError

    def create_task(self, task: TaskSpec) -> str | None:
        """Create a task for the record's owner; return its CRM id (None: no task API)."""
        raise NotImplementedError

    def task_status(self, external_ids: list[str]) -> Mapping[str, str]:
        """``open`` or ``done`` for each task id the CRM knows."""
        return {}

    def close(self) -> None:
        """Release connections."""


def load_cursor(source: str, cursor: str | None) -> dict[str, Any]:
    """A connector's stored sync cursor as the JSON object it wrote; empty for none.

    Raises :class:`~outreach.errors.ConfigError` naming the source and the fix when the
    stored text is not a JSON object (a cursor from another version or edited by hand).
    """
    if not cursor:
        return {}
    try:
        state = json.loads(cursor)
    except ValueError:
        state = None
    if not isinstance(state, dict):
        raise ConfigError(
            f"{source}: the stored sync cursor {cursor[:80]!r} is not a JSON object; "
            "run the sync with --full to start over"
        )
    return state
