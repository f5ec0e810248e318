"""ActiveCampaign records: a contact, its tags, custom field values and deals as import keys.

The reading half of :mod:`connectors.activecampaign`, kept apart so each module has one
job: this one knows the shapes of the v3 objects (string ids, ``status`` 0/1/2 deals,
times with the account's offset) and how a contact's deals decide its stage.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC
from typing import Any

from outreach.clock import parse_instant

__all__ = [
    "LOST",
    "OPEN",
    "WON",
    "choose_deal",
    "field_key",
    "flatten_contact",
    "numeric_id",
    "source_id",
    "status_of",
]

OPEN, WON, LOST = "0", "1", "2"
# Import keys a custom field may not overwrite (the connector sets them from the record).
_RESERVED = frozenset(
    {
        "source",
        "external_id",
        "first_name",
        "last_name",
        "email",
        "phone",
        "stage",
        "stage_entered_at",
        "owner_id",
        "tags",
        "updated_at",
        "job_title",
    }
)
# Custom field personalisation tags that mean an import key.
_FIELD_ALIASES = {
    "linkedin": "linkedin_url",
    "linkedin_profile": "linkedin_url",
    "twitter": "x_url",
    "twitter_url": "x_url",
    "x": "x_url",
    "facebook": "facebook_url",
}


def choose_deal(deals: list[Any]) -> dict[str, Any] | None:
    """The deal that sets a contact's stage: the latest won, else open, else lost one."""
    readable = [d for d in deals if isinstance(d, dict) and status_of(d) in (OPEN, WON, LOST)]
    for status in (WON, OPEN, LOST):
        chosen = [d for d in readable if status_of(d) == status]
        if chosen:
            return max(chosen, key=_changed)
    return None


def flatten_contact(
    raw: dict[str, Any],
    *,
    tags: list[str] | None = None,
    field_values: list[Any] | None = None,
    field_names: Mapping[str, str] | None = None,
    deals: list[Any] | None = None,
    stage_titles: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """An ActiveCampaign contact and its tags, custom field values and deals as import keys.

    The stage comes from :func:`choose_deal`: ``hired`` for a won deal, the open deal's
    stage title (``stage_titles`` by stage id; ``stage_map.activecampaign`` maps it), or
    ``rejected`` for a lost one. Custom fields pass through under their personalisation
    tag in lower case (``LINKEDIN_URL`` → ``linkedin_url``). Raises ``KeyError``,
    ``TypeError`` or ``ValueError`` for a record that cannot be read.

    Example::

        flatten_contact({"id": "7", "email": "ada@example.com", "firstName": "Ada"},
                        deals=[{"status": "0", "stage": "3", "mdate": "..."}],
                        stage_titles={"3": "Interview"})
        # {"source": "activecampaign", "external_id": "7", "stage": "Interview", ...}
    """
    if not isinstance(raw, dict):
        raise TypeError(f"the contact is {type(raw).__name__}, not an object")
    contact_id = numeric_id(raw)
    if contact_id is None:
        raise ValueError("the contact has no numeric id")
    updated = _time(raw.get("udate")) or _time(raw.get("cdate"))
    record: dict[str, Any] = {
        "source": "activecampaign",
        "external_id": str(contact_id),
        "first_name": _text(raw, "firstName"),
        "last_name": _text(raw, "lastName"),
        "email": _text(raw, "email"),
        "phone": _text(raw, "phone"),
        "tags": [t for t in (tags or []) if t],
        "updated_at": updated,
    }
    deal = choose_deal(list(deals or []))
    if deal is not None:
        status = status_of(deal)
        if status == WON:
            record["stage"] = "hired"
        elif status == LOST:
            record["stage"] = "rejected"
        else:
            stage_id = deal.get("stage")
            record["stage"] = (stage_titles or {}).get(str(stage_id)) if stage_id else None
        record["stage_entered_at"] = _time(deal.get("mdate")) or _time(deal.get("cdate"))
        owner = deal.get("owner")
        record["owner_id"] = str(owner) if owner not in (None, "", "0") else None
        title = deal.get("title")
        record["job_title"] = title.strip() if isinstance(title, str) and title.strip() else None
    names = field_names or {}
    for item in field_values or []:
        if not isinstance(item, dict):
            continue
        key = names.get(str(item.get("field")))
        value = item.get("value")
        if not key or key in _RESERVED or value is None or str(value).strip() == "":
            continue
        record[key] = str(value).strip()
    return record


def field_key(field: Mapping[str, Any]) -> str:
    """A custom field's import key: its personalisation tag (or title), lower-case."""
    tag = str(field.get("perstag") or field.get("title") or "").strip().lower()
    key = re.sub(r"[^a-z0-9]+", "_", tag).strip("_")
    return _FIELD_ALIASES.get(key, key)


def status_of(deal: Any) -> str | None:
    """A deal's ``status`` as text (``0`` open, ``1`` won, ``2`` lost), or None."""
    if not isinstance(deal, dict):
        return None
    status = deal.get("status")
    return str(status) if status is not None else None


def _changed(deal: Mapping[str, Any]) -> tuple[str, int]:
    when = _time(deal.get("mdate")) or _time(deal.get("cdate")) or ""
    # Equal times: the higher (newer) deal id wins.
    deal_id = str(deal.get("id") or "")
    return when, int(deal_id) if deal_id.isdigit() else 0


def _time(value: Any) -> str | None:
    """ISO-8601 UTC from ActiveCampaign's ``2017-01-25T23:58:14-06:00`` (None when empty)."""
    if value is None or value == "" or str(value).startswith("0000-00-00"):
        return None
    if not isinstance(value, str):
        raise TypeError(f"a time is {type(value).__name__}, not text")
    at = parse_instant(value)
    return at.astimezone(UTC).isoformat()


def _text(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{key} is {type(value).__name__}, not text")
    return value.strip() or None


def numeric_id(raw: Any) -> int | None:
    """A record's ``id`` as a number (ActiveCampaign sends ids as text), or None."""
    if not isinstance(raw, dict):
        return None
    value = raw.get("id")
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def source_id(raw: Any) -> str:
    """The id to name a record by in a problem report (``?`` when it has none)."""
    if isinstance(raw, dict) and isinstance(raw.get("id"), str | int) and raw["id"] != "":
        return str(raw["id"])
    return "?"
