"""What a CRM webhook says happened, in one shape for all three CRMs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

__all__ = ["BadPayload", "ChangeKind", "CrmChange", "from_epoch_ms", "json_object", "parse_time"]

#: ``record``: a (full or partial) flattened record to write; ``stage``: only the CRM's
#: stage name changed; ``fetch``: read the record from the CRM's API first (Lever, whose
#: webhooks carry ids only); ``delete``: the record is gone; ``merge``: the record was
#: folded into ``into``; ``ignore``: an event the engine does not act on (still recorded,
#: so a retry of it is a duplicate); ``bad``: an item of a batch that cannot be read
#: (``what`` says why; never recorded)
ChangeKind = Literal["record", "stage", "fetch", "delete", "merge", "ignore", "bad"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: epoch milliseconds past this are not a date (year 9999)
_MAX_MS = 253_402_300_799_999


class BadPayload(ValueError):
    """A delivery that is signed but cannot be read (answered 400: a retry won't help)."""


def json_object(body: bytes) -> dict[str, Any]:
    """A webhook body that must be one JSON object; :class:`BadPayload` (400) otherwise."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadPayload("the body is not JSON") from None
    if not isinstance(data, dict):
        raise BadPayload("the body is not a JSON object")
    return data


@dataclass(frozen=True)
class CrmChange:
    """One event of one delivery.

    ``delivery_id`` is the CRM's id of the event (the idempotency key, with ``source``);
    ``occurred_at`` is when the CRM says it happened (``None``: not said), compared with
    the stored record's change time so an old event never rolls a newer state back.
    """

    source: str
    delivery_id: str
    kind: ChangeKind
    external_id: str | None
    occurred_at: datetime | None = None
    #: the record's import keys (``kind="record"``), as the connector's flattener gives them
    record: dict[str, Any] = field(default_factory=dict)
    #: the CRM's stage name (``kind="stage"``), mapped through ``stage_map``
    stage: str | None = None
    #: the surviving record's external id (``kind="merge"``)
    into: str | None = None
    #: what the event was, for logs (``candidate_stage_change``, ``contact.propertyChange``)
    what: str = ""


def from_epoch_ms(value: Any, name: str) -> datetime:
    """An aware UTC instant from epoch milliseconds; :class:`BadPayload` otherwise."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_MS:
        raise BadPayload(f"{name} is not a time in epoch milliseconds")
    return _EPOCH + timedelta(milliseconds=value)


def parse_time(value: Any, name: str) -> datetime | None:
    """An ISO-8601 instant (``None`` stays ``None``); :class:`BadPayload` otherwise."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadPayload(f"{name} is {type(value).__name__}, not an ISO-8601 time")
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadPayload(f"{name} is not an ISO-8601 time") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
