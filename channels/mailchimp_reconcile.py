"""Reconciling ambiguous Mailchimp Transactional sends: does Mandrill hold the touch?

A send whose answer was lost (invariant 2) is looked for, never re-sent blindly:

1. ``/messages/search`` for the recipient's messages since the day before the claim
   (``email:"<address>"``): each result carries its ``metadata``, so the one whose
   ``touch_id`` is this touch's is found without a custom metadata search index (Mandrill
   indexes metadata for search only when told to). Found: delivered. A full page of other
   messages proves nothing: later.
2. ``/messages/list-scheduled`` for the recipient (search shows sent mail only): each
   message created since the claim that is no other touch's (``known_ids``) is read with
   ``/messages/info``; its metadata naming this touch: delivered, with its id to recall;
   naming another: not this one. One left whose metadata could not be read: delivered
   (nothing else was sent to the address since the claim); several: a person checks.
3. Nothing: absent once ``search_delay`` has passed since the claim and the send time
   (the touch is sent again); sooner, later.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from channels.base import Inquiry, ReconcileResult
from channels.mandrill_api import MandrillApi
from outreach.errors import ConfigError, OutreachError, RetryableError

__all__ = ["reconcile"]


def reconcile(
    api: MandrillApi,
    inquiries: Sequence[Inquiry],
    now: datetime,
    *,
    search_delay: timedelta,
    searches_per_run: int,
    search_limit: int,
) -> list[ReconcileResult]:
    """One result per inquiry; at most ``searches_per_run`` are asked, the rest later."""
    results: list[ReconcileResult] = []
    later: str | None = None
    for done, inquiry in enumerate(inquiries):
        if later is None and done >= searches_per_run:
            later = "Mailchimp search is metered; asked by the next run"
        if later is not None:
            results.append(ReconcileResult(inquiry.touch_id, "later", later))
            continue
        try:
            results.append(_one(api, inquiry, now, search_delay, search_limit))
        except ConfigError as exc:
            results.append(ReconcileResult(inquiry.touch_id, "unknown", str(exc)))
        except RetryableError as exc:
            later = f"Mailchimp search: {exc}"
            results.append(ReconcileResult(inquiry.touch_id, "later", later))
        except OutreachError as exc:
            results.append(ReconcileResult(inquiry.touch_id, "later", str(exc)))
    return results


def _one(
    api: MandrillApi, inquiry: Inquiry, now: datetime, delay: timedelta, limit: int
) -> ReconcileResult:
    since = _utc(inquiry.since)
    address = inquiry.to.replace("\\", "").replace('"', "")
    found = api.call(
        "search",
        {
            "query": f'email:"{address}"',
            "date_from": (since - timedelta(days=1)).strftime("%Y-%m-%d"),
            "limit": limit,
        },
        attempts=1,
    )
    if not isinstance(found, list):
        # An answer that is not Mailchimp's list (a gateway's HTML page) proves nothing:
        # reading it as "no messages" would send the touch again.
        return ReconcileResult(inquiry.touch_id, "later", "Mailchimp search answered no list")
    listed = [item for item in found if isinstance(item, dict)]
    for item in listed:
        if _names(item.get("metadata"), inquiry.touch_id):
            return ReconcileResult(
                inquiry.touch_id,
                "delivered",
                f"Mailchimp shows it {item.get('state') or 'sent'}",
                provider_message_id=_id(item),
            )
    if len(listed) >= limit:
        why = "Mailchimp search returned a full page of other messages to the address"
        return ReconcileResult(inquiry.touch_id, "later", why)
    held = _scheduled(api, inquiry, since)
    if held is not None:
        return held
    if now >= max(since, _utc(inquiry.send_at)) + delay:
        return ReconcileResult(inquiry.touch_id, "absent", "Mailchimp has no such message")
    return ReconcileResult(inquiry.touch_id, "later", "Mailchimp search may still be indexing")


def _scheduled(api: MandrillApi, inquiry: Inquiry, since: datetime) -> ReconcileResult | None:
    """The touch among the recipient's scheduled messages, or None when it is not there."""
    scheduled = api.call("list_scheduled", {"to": inquiry.to}, attempts=1)
    if not isinstance(scheduled, list):
        why = "Mailchimp's scheduled messages answered no list"
        return ReconcileResult(inquiry.touch_id, "later", why)
    unread: list[str] = []
    for item in scheduled:
        ident = _id(item) if isinstance(item, dict) else None
        if ident is None or ident in inquiry.known_ids:
            continue
        if not _created_since(item.get("created_at"), since):
            continue
        try:
            info = api.call("info", {"id": ident}, attempts=1)
        except OutreachError:
            info = None
        metadata = info.get("metadata") if isinstance(info, dict) else None
        if _names(metadata, inquiry.touch_id):
            return _held(inquiry, ident, "Mailchimp holds it scheduled")
        if isinstance(metadata, dict) and metadata.get("touch_id") is not None:
            continue  # another touch's
        unread.append(ident)
    if len(unread) == 1:
        return _held(inquiry, unread[0], "Mailchimp holds one scheduled message to the address")
    if len(unread) > 1:
        return ReconcileResult(
            inquiry.touch_id,
            "unknown",
            "Mailchimp holds several scheduled messages to the address; a person checks",
        )
    return None


def _held(inquiry: Inquiry, ident: str, why: str) -> ReconcileResult:
    return ReconcileResult(
        inquiry.touch_id, "delivered", why, provider_message_id=ident, recall_ref=ident
    )


def _names(metadata: Any, touch_id: int) -> bool:
    return isinstance(metadata, dict) and str(metadata.get("touch_id")) == str(touch_id)


def _id(item: dict[str, Any]) -> str | None:
    ident = item.get("_id")
    return ident if isinstance(ident, str) and ident else None


def _created_since(value: Any, since: datetime) -> bool:
    """Whether a Mandrill ``created_at`` (UTC ``YYYY-MM-DD HH:MM:SS``) is at or after
    ``since`` less a minute of clock skew; unreadable counts as not."""
    if not isinstance(value, str):
        return False
    try:
        created = datetime.strptime(value[:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return False
    return created >= since - timedelta(minutes=1)


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
