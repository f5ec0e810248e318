"""Mailchimp Transactional (Mandrill) webhooks: the signature and the event batch.

Mandrill POSTs ``application/x-www-form-urlencoded`` with one field, ``mandrill_events``:
a JSON array of up to 1,000 events. ``X-Mandrill-Signature`` is the base64 HMAC-SHA1,
keyed with the webhook's key, of the webhook URL exactly as configured followed by every
POST parameter's name and value, sorted by name (:func:`sign`).

Message events carry ``event``, ``ts`` (Unix seconds), ``_id`` (the message id) and
``msg`` (``email``, ``state``, ``metadata``: our ``touch_id``). They map onto the engine's
events as SendGrid's do (:mod:`outreach.events`):

* ``hard_bounce`` -> bounce; ``spam`` -> opt_out; ``unsub`` -> unsubscribe;
* ``reject`` (Mandrill's rejection list refused it) -> bounce, unsubscribe or opt_out by
  the message's ``reject``/``bounce_description`` reason, nothing for other reasons;
* ``send`` -> a ``delivered`` delivery event, ``open`` -> open, ``click`` -> click (for
  the report; never the address, user agent or URL);
* ``deferral``, ``soft_bounce`` and sync events (``whitelist``, ``blacklist``) record
  nothing: a soft bounce may yet be delivered.

Inbound route events (``event: inbound``) carry the whole message in ``msg.raw_msg``; it
goes to :func:`outreach.inbound.intake.ingest_messages` like an Inbound Parse post.

Each event's dedupe id is ``mandrill:<_id>:<event>:<ts>`` (an open repeats with a new
``ts``), so a replayed batch records nothing new.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from outreach.errors import InputError
from outreach.events import DeliveryEvent, InboundEvent

__all__ = [
    "EVENTS_FIELD",
    "MAX_BODY_BYTES",
    "SIGNATURE_HEADER",
    "MandrillBatch",
    "read_mandrill_batch",
    "sign",
    "verify",
]

SIGNATURE_HEADER = "X-Mandrill-Signature"
#: largest webhook post accepted: an inbound message (Mandrill takes up to 25 MB) travels
#: as raw_msg and again parsed (text, html, base64 attachments) inside the JSON
MAX_BODY_BYTES = 96 * 1024 * 1024
EVENTS_FIELD = "mandrill_events"
_INBOUND_TYPES = {"hard_bounce": "bounce", "spam": "opt_out", "unsub": "unsubscribe"}
_DELIVERY_TYPES = {"send": "delivered", "open": "open", "click": "click"}
_QUIET = {"deferral", "soft_bounce", "whitelist", "blacklist"}
_MAX_TS = 253402300799  # 9999-12-31T23:59:59Z


def sign(key: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """``X-Mandrill-Signature`` for a POST of ``params`` to ``url``, keyed with ``key``."""
    data = url + "".join(name + value for name, value in sorted(params, key=lambda p: p[0]))
    digest = hmac.new(key.encode("utf-8"), data.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def verify(key: str, url: str, params: Iterable[tuple[str, str]], signature: str) -> bool:
    """Whether ``signature`` signs ``params`` posted to ``url`` (constant-time compare)."""
    expected = sign(key, url, params)
    given = signature.strip().encode("ascii", "replace")
    return hmac.compare_digest(expected.encode("ascii"), given)


@dataclass
class MandrillBatch:
    """One webhook post read: events for :func:`outreach.events.ingest_events`, delivery
    events, inbound raw messages (place, bytes) and how many items recorded nothing."""

    items: int = 0
    events: list[tuple[str, InboundEvent | str]] = field(default_factory=list)
    deliveries: list[tuple[str, DeliveryEvent]] = field(default_factory=list)
    inbound: list[tuple[str, bytes]] = field(default_factory=list)
    quiet: int = 0


def read_mandrill_batch(text: str | None) -> MandrillBatch:
    """Read the ``mandrill_events`` field; raise :class:`InputError` when it is missing or
    not a JSON array. An item that cannot be read is reported in ``events`` as a string
    with its index; the others go on."""
    if text is None:
        raise InputError(f"no {EVENTS_FIELD} field")
    try:
        items = json.loads(text)
    except (ValueError, RecursionError):
        raise InputError(f"{EVENTS_FIELD} is not JSON") from None
    if not isinstance(items, list):
        raise InputError(f"{EVENTS_FIELD} is not a JSON array")
    batch = MandrillBatch(items=len(items))
    for index, item in enumerate(items):
        where = f"[{index}]"
        read = _item(item)
        if read is None:
            batch.quiet += 1
        elif isinstance(read, str):
            batch.events.append((where, read))
        elif isinstance(read, DeliveryEvent):
            batch.deliveries.append((where, read))
        elif isinstance(read, bytes):
            batch.inbound.append((where, read))
        else:
            batch.events.append((where, read))
    return batch


def _item(item: Any) -> InboundEvent | DeliveryEvent | bytes | str | None:
    if not isinstance(item, dict):
        return "expected a JSON object"
    name = item.get("event")
    if not isinstance(name, str):
        return "event: missing or not text" if "type" not in item else None  # sync event
    msg = item.get("msg")
    if not isinstance(msg, dict):
        return "msg: missing or not an object"
    if name == "inbound":
        raw = msg.get("raw_msg")
        if not isinstance(raw, str) or not raw.strip():
            return "msg.raw_msg: missing or empty"
        try:
            return raw.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return "msg.raw_msg: holds characters no mail can (a lone surrogate)"
    if name in _QUIET:
        return None
    at = _ts(item.get("ts"))
    if isinstance(at, str):
        return f"ts: {at}"
    ident = item.get("_id") or msg.get("_id")
    if not isinstance(ident, str) or not ident:
        return "_id: missing or not text"
    dedupe = f"mandrill:{ident}:{name}:{item.get('ts')}"[:500]
    touch_id = _touch_id(msg.get("metadata"))
    try:
        if name in _DELIVERY_TYPES:
            raw_event: dict[str, Any] = {
                "type": _DELIVERY_TYPES[name],
                "channel": "email",
                "touch_id": touch_id,
                "at": at,
                "id": dedupe,
            }
            return DeliveryEvent.model_validate(raw_event)
        kind = _INBOUND_TYPES.get(name) or (_reject_type(msg) if name == "reject" else None)
        if kind is None:
            return None
        return InboundEvent.model_validate(
            {
                "type": kind,
                "channel": "email",
                "address": msg.get("email") if isinstance(msg.get("email"), str) else None,
                "touch_id": touch_id,
                "at": at,
                "id": dedupe,
                "detail": f"mandrill {name}"[:200],
            }
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        place = ".".join(str(p) for p in first.get("loc", ())) or "event"
        return f"{place}: {first.get('msg', 'invalid')}"


def _reject_type(msg: dict[str, Any]) -> str | None:
    """A ``reject`` event's meaning, from why Mandrill's rejection list holds the address."""
    words = " ".join(
        str(msg.get(k) or "") for k in ("reject", "reject_reason", "bounce_description", "state")
    ).lower()
    if "hard-bounce" in words or "hard_bounce" in words:
        return "bounce"
    if "unsub" in words:
        return "unsubscribe"
    if "spam" in words:
        return "opt_out"
    return None


def _touch_id(metadata: Any) -> int | None:
    if not isinstance(metadata, dict):
        return None
    value = metadata.get("touch_id")
    readable = isinstance(value, str | int) and not isinstance(value, bool)
    text = str(value).strip() if readable else ""
    if text.isascii() and text.isdigit() and len(text) <= 18 and int(text) > 0:
        return int(text)
    return None


def _ts(value: Any) -> datetime | str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "missing or not a number"
    if value != value or value < 0 or value > _MAX_TS:
        return "out of range"
    return datetime.fromtimestamp(value, tz=UTC)
