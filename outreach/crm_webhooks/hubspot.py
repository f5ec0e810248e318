"""HubSpot webhooks (v3 signature): verify the request and read the batch of events.

HubSpot posts a JSON array of up to 100 events and signs the request (v3):
``X-HubSpot-Signature-v3`` is the base64 HMAC-SHA256, keyed with the app's client secret
(``HUBSPOT_CLIENT_SECRET``), of ``method + URI + body + timestamp``, where the timestamp is
``X-HubSpot-Request-Timestamp`` (epoch milliseconds) and the URI is the full URL HubSpot
called (``OUTREACH_PUBLIC_URL`` + path and query behind a proxy; the request's own URL
otherwise), with the characters HubSpot decodes (``%3A`` ``%2F`` ``%3F`` ``%40`` ``%21``
``%24`` ``%27`` ``%28`` ``%29`` ``%2A`` ``%2C`` ``%3B``) decoded. A timestamp more than
five minutes from now is refused (a replay, or a wrong clock).

Each event carries ``eventId`` (the idempotency key), ``occurredAt`` (epoch ms),
``subscriptionType`` and ``objectId``. Read: ``contact.propertyChange`` of
``lifecyclestage`` (the property ``stage_map.hubspot`` maps; ``propertyValue`` is the new
value), ``contact.deletion``, and ``contact.merge`` (``mergedObjectIds`` into
``primaryObjectId``); the same for the generic ``object.*`` types with ``objectTypeId``
``0-1`` (contacts). Other events are recorded and ignored. Events are applied in
``occurredAt`` order, since HubSpot does not promise any. An item that cannot be read is
a ``bad`` change (counted, left out); the batch is 400 only when none can be read.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from datetime import datetime, timedelta
from typing import Any, ClassVar

from werkzeug.wrappers import Request

from outreach.crm_webhooks.change import BadPayload, CrmChange, from_epoch_ms

__all__ = ["MAX_AGE", "SIGNATURE_HEADER", "TIMESTAMP_HEADER", "HubSpotHook", "sign"]

SIGNATURE_HEADER = "X-HubSpot-Signature-v3"
TIMESTAMP_HEADER = "X-HubSpot-Request-Timestamp"
#: how far the request timestamp may be from now
MAX_AGE = timedelta(minutes=5)
STAGE_PROPERTY = "lifecyclestage"
_DECODED = {
    "%3A": ":",
    "%2F": "/",
    "%3F": "?",
    "%40": "@",
    "%21": "!",
    "%24": "$",
    "%27": "'",
    "%28": "(",
    "%29": ")",
    "%2A": "*",
    "%2C": ",",
    "%3B": ";",
}
_CONTACT_TYPES = {
    "contact.propertyChange": "stage",
    "contact.deletion": "delete",
    "contact.merge": "merge",
    "object.propertyChange": "stage",
    "object.deletion": "delete",
    "object.merge": "merge",
}


def decode_uri(uri: str) -> str:
    """The URI as HubSpot signs it: the listed percent-escapes decoded (any case)."""
    out = []
    i = 0
    while i < len(uri):
        escape = uri[i : i + 3].upper()
        if escape in _DECODED:
            out.append(_DECODED[escape])
            i += 3
        else:
            out.append(uri[i])
            i += 1
    return "".join(out)


def sign(secret: str, method: str, uri: str, body: bytes, timestamp: int) -> str:
    """The ``X-HubSpot-Signature-v3`` HubSpot sends (tests, the sandbox)."""
    message = method.encode() + decode_uri(uri).encode() + body + str(timestamp).encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


class HubSpotHook:
    """``POST /webhooks/hubspot``: see the module docstring."""

    source: ClassVar[str] = "hubspot"
    variable: ClassVar[str] = "HUBSPOT_CLIENT_SECRET"

    def __init__(self, secret: str | None, public_url: str | None) -> None:
        self._secret = secret.encode() if secret else None
        self._public_url = public_url.rstrip("/") if public_url else None

    @property
    def problem(self) -> str | None:
        """Why every post is refused (503), or ``None``."""
        if self._secret is None:
            return (
                "HUBSPOT_CLIENT_SECRET is not set: set it to the client secret of the HubSpot "
                "app whose webhooks post here (app settings > Auth)"
            )
        return None

    def uri(self, request: Request) -> str:
        """The URL HubSpot called, as it signs it."""
        base = self._public_url or f"{request.scheme}://{request.host}{request.root_path}"
        url = base + request.path
        if request.query_string:
            url += "?" + request.query_string.decode("latin-1")
        return decode_uri(url)

    def digest(self, request: Request) -> Any:
        """The HMAC over method and URI, which the body is then fed into."""
        assert self._secret is not None
        prefix = request.method.encode() + self.uri(request).encode()
        return hmac.new(self._secret, prefix, hashlib.sha256)

    def refusal(self, request: Request, body: bytes, digest: Any, now: datetime) -> str | None:
        """Why the request is refused (401), or ``None`` when signed and fresh."""
        signature = request.headers.get(SIGNATURE_HEADER, "").strip()
        stamp = request.headers.get(TIMESTAMP_HEADER, "").strip()
        if not signature or not stamp:
            return "unsigned request (no X-HubSpot-Signature-v3 or timestamp header)"
        try:
            sent = from_epoch_ms(stamp, "the timestamp")
        except BadPayload:
            return "the X-HubSpot-Request-Timestamp header is not epoch milliseconds"
        if abs(now - sent) > MAX_AGE:
            return "the timestamp is more than 5 minutes from now (a replay, or a wrong clock)"
        digest.update(stamp.encode())
        try:
            given = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            return "the signature is not base64"
        if not hmac.compare_digest(digest.digest(), given):
            return "the signature does not match HUBSPOT_CLIENT_SECRET (or the URL differs)"
        return None

    def changes(self, request: Request, body: bytes, now: datetime) -> list[CrmChange]:
        """The batch's readable events, oldest first; :class:`BadPayload` when the body is
        not a JSON array or none of its items can be read."""
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise BadPayload("the body is not JSON") from None
        if not isinstance(data, list):
            raise BadPayload("the body is not a JSON array of events")
        changes: list[CrmChange] = []
        bad: list[CrmChange] = []
        for index, item in enumerate(data):
            try:
                changes.extend(_read(item))
            except BadPayload as exc:
                bad.append(CrmChange("hubspot", "", "bad", None, what=f"item {index}: {exc}"))
        if data and not changes:
            reasons = "; ".join(c.what for c in bad[:3])
            raise BadPayload(f"no event of the batch can be read ({reasons})")
        changes.sort(key=lambda c: c.occurred_at or now)
        return changes + bad


def _read(item: Any) -> list[CrmChange]:
    if not isinstance(item, dict):
        raise BadPayload("not an object")
    event_id = item.get("eventId")
    if isinstance(event_id, bool) or not isinstance(event_id, int | str) or str(event_id) == "":
        raise BadPayload("eventId is missing")
    delivery = str(event_id)[:200]
    occurred = from_epoch_ms(item.get("occurredAt"), "occurredAt")
    kind_of = item.get("subscriptionType")
    if not isinstance(kind_of, str):
        raise BadPayload("subscriptionType is missing")
    kind = _CONTACT_TYPES.get(kind_of)
    if kind_of.startswith("object.") and str(item.get("objectTypeId")) != "0-1":
        kind = None  # not a contact
    if kind == "stage" and item.get("propertyName") != STAGE_PROPERTY:
        kind = None
    if kind is None:
        return [CrmChange("hubspot", delivery, "ignore", None, occurred, what=kind_of)]
    if kind == "merge":
        primary = _id(item.get("primaryObjectId"), "primaryObjectId")
        merged = item.get("mergedObjectIds")
        if not isinstance(merged, list) or not merged:
            raise BadPayload("mergedObjectIds is missing")
        ids = [_id(value, "mergedObjectIds[]") for value in merged]
        return [
            CrmChange(
                "hubspot",
                f"{delivery}:{n}" if n else delivery,
                "merge",
                loser,
                occurred,
                into=primary,
                what=kind_of,
            )
            for n, loser in enumerate(i for i in ids if i != primary)
        ]
    object_id = _id(item.get("objectId"), "objectId")
    if kind == "delete":
        return [CrmChange("hubspot", delivery, "delete", object_id, occurred, what=kind_of)]
    value = item.get("propertyValue")
    if value is not None and not isinstance(value, str):
        raise BadPayload("propertyValue is not text")
    stage = value.strip() if value else None
    return [CrmChange("hubspot", delivery, "stage", object_id, occurred, stage=stage, what=kind_of)]


def _id(value: Any, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str) or str(value).strip() == "":
        raise BadPayload(f"{name} is missing or not an id")
    text = str(value).strip()
    if len(text) > 128:
        raise BadPayload(f"{name} is too long to be an id")
    return text
