"""Bullhorn candidates and job submissions as the engine's import keys.

:func:`flatten_candidate` is the whole mapping; :mod:`connectors.bullhorn` fetches what it
reads. Times arrive as epoch milliseconds and leave as ISO-8601 UTC.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from outreach.profiles import pick_profile

__all__ = ["CLOSED_STATUSES", "flatten_candidate", "int_id", "ref_id", "source_id"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: submission statuses that close it (Bullhorn's defaults; anything else is open)
CLOSED_STATUSES = frozenset(
    {"placed", "client rejected", "candidate rejected", "sales rep rejected", "offer rejected"}
)


def _from_ms(value: Any, name: str) -> str | None:
    """ISO-8601 UTC from Bullhorn's epoch milliseconds (None stays None)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} is {type(value).__name__}, not epoch milliseconds")
    return (_EPOCH + timedelta(milliseconds=value)).isoformat()


def int_id(raw: Mapping[str, Any]) -> int | None:
    """The record's integer ``id`` (None when missing or not an integer)."""
    value = raw.get("id")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def ref_id(raw: Mapping[str, Any], key: str) -> int | None:
    """The id of the to-one association ``key`` (``{"id": …}``), or None."""
    value = raw.get(key)
    if isinstance(value, dict):
        return int_id(value)
    return None


def source_id(raw: Any) -> str:
    """The id to name an unreadable record by (``?`` when it has none)."""
    if isinstance(raw, dict) and isinstance(raw.get("id"), str | int) and raw["id"] != "":
        return str(raw["id"])
    return "?"


def _text(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is None or isinstance(value, str):
        return value.strip() or None if value else None
    raise TypeError(f"{key} is {type(value).__name__}, not text")


def _submission(items: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Open before closed, then the most recently modified (then the newest id)."""
    usable = [s for s in items if isinstance(s, dict)]
    if not usable:
        return None

    def rank(item: dict[str, Any]) -> tuple[int, int, int]:
        status = item.get("status")
        is_open = not (isinstance(status, str) and status.strip().lower() in CLOSED_STATUSES)
        modified = item.get("dateLastModified")
        modified = modified if isinstance(modified, int) and not isinstance(modified, bool) else 0
        return int(is_open), modified, int_id(item) or 0

    return max(usable, key=rank)


def flatten_candidate(raw: dict[str, Any], submissions: list[dict[str, Any]]) -> dict[str, Any]:
    """A Bullhorn candidate and its job submissions as the engine's import keys.

    The stage is the chosen submission's ``status`` (open before closed, latest first),
    or the candidate's own ``status`` when it has none; both are mapped through
    ``stage_map.bullhorn`` by the normaliser. Raises ``TypeError``/``ValueError`` for a
    record whose fields have the wrong shape.

    Example::

        flatten_candidate({"id": 7, "firstName": "Ada", "status": "Active"},
                          [{"id": 1, "status": "Interview Scheduled"}])
        # {"source": "bullhorn", "external_id": "7", "stage": "Interview Scheduled", ...}
    """
    candidate_id = int_id(raw)
    if candidate_id is None:
        raise ValueError("the candidate has no id")
    owner = raw.get("owner")
    if owner is not None and not isinstance(owner, dict):
        raise TypeError(f"owner is {type(owner).__name__}, not an object")
    owner = owner or {}
    chosen = _submission(submissions)
    stage = _text(chosen, "status") if chosen is not None else _text(raw, "status")
    job = chosen.get("jobOrder") if chosen is not None else None
    modified = [_from_ms(raw.get("dateLastModified"), "dateLastModified")]
    entered = None
    if chosen is not None:
        entered = _from_ms(chosen.get("dateLastModified"), "submission dateLastModified")
        modified.append(entered)
    owner_name = " ".join(n for n in (_text(owner, "firstName"), _text(owner, "lastName")) if n)
    custom = [_text(raw, f"customText{n}") for n in (1, 2, 3)]
    record: dict[str, Any] = {
        "source": "bullhorn",
        "external_id": str(candidate_id),
        "first_name": _text(raw, "firstName"),
        "last_name": _text(raw, "lastName"),
        "email": _text(raw, "email") or _text(raw, "email2"),
        "phone": _text(raw, "mobile") or _text(raw, "phone"),
        "linkedin_url": next((c for c in custom if c and "linkedin.com" in c.lower()), None),
        "x_url": pick_profile(list(custom), "x"),
        "facebook_url": pick_profile(list(custom), "facebook"),
        "stage": stage,
        "stage_entered_at": entered or _from_ms(raw.get("dateAdded"), "dateAdded") or modified[0],
        "job_title": _text(job, "title") if isinstance(job, dict) else None,
        "owner_id": str(owner["id"]) if int_id(owner) is not None else None,
        "recruiter_name": owner_name or None,
        "recruiter_email": _text(owner, "email"),
        "tags": [],
        "updated_at": max((m for m in modified if m), default=None),
        # massMailOptOut: the candidate asked for no mass mail; the engine keeps it as an
        # email opt-out.
        "email_opt_out": raw.get("massMailOptOut") is True,
    }
    if raw.get("smsOptIn") is True:
        record["sms_consent"] = True
    occupation = _text(raw, "occupation")
    if occupation:
        record["headline"] = occupation
    return record
