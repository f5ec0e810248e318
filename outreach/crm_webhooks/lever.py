"""Lever webhooks: verify the body's signature, then read the opportunity from the API.

Lever posts JSON: ``{"id", "event", "triggeredAt" (epoch ms), "token", "signature",
"data": {"opportunityId", "contactId", ...}}``. The signature is the hex HMAC-SHA256 of
``token + triggeredAt`` keyed with the webhook's signature token (``LEVER_WEBHOOK_TOKEN``);
it does not cover the rest of the body. ``id`` is the idempotency key.

Events read: ``candidateStageChange`` (``data.toStageId``), ``candidateHired``,
``candidateArchiveChange`` (``data.toArchived``): all three say only *which* opportunity
changed, with stage and archive-reason ids. The engine therefore reads that opportunity
with ``GET /opportunities/{id}`` (``LEVER_API_KEY``) and flattens it with
:func:`connectors.lever.flatten_opportunity`, exactly as a sync does: stage names,
archive reasons (``hired`` by the reason's type, else ``rejected``) and all. Since only
the id is taken from the body, a replayed signature with an altered body can at most make
the engine read the CRM's own truth. ``candidateDeleted`` stops the opportunity's
cadences. Other events: 200, nothing changes.

A read that fails (Lever down, rate-limited) answers 503 so that Lever retries; an
opportunity Lever no longer has is treated as deleted.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import quote

from werkzeug.wrappers import Request

from connectors.lever import Lever, flatten_opportunity
from outreach.crm_webhooks.change import BadPayload, CrmChange, from_epoch_ms, json_object
from outreach.errors import PermanentError

__all__ = ["LeverHook", "sign"]

_FETCHED = frozenset({"candidateStageChange", "candidateHired", "candidateArchiveChange"})


def sign(signature_token: str, token: str, triggered_at: int) -> str:
    """The ``signature`` Lever puts in a body with ``token`` and ``triggeredAt``."""
    message = f"{token}{triggered_at}".encode()
    return hmac.new(signature_token.encode(), message, hashlib.sha256).hexdigest()


class LeverHook:
    """``POST /webhooks/lever``: see the module docstring.

    ``connector`` builds the :class:`connectors.lever.Lever` the opportunities are read
    with (``None``: ``LEVER_API_KEY`` is not set, and every post answers 503).
    """

    source: ClassVar[str] = "lever"
    variable: ClassVar[str] = "LEVER_WEBHOOK_TOKEN"

    def __init__(self, token: str | None, connector: Callable[[], Lever] | None) -> None:
        self._token = token.encode() if token else None
        self._make = connector
        self._connector: Lever | None = None

    @property
    def problem(self) -> str | None:
        """Why every post is refused (503), or ``None``."""
        missing = []
        if self._token is None:
            missing.append("LEVER_WEBHOOK_TOKEN")
        if self._make is None:
            missing.append("LEVER_API_KEY")
        if not missing:
            return None
        return (
            " and ".join(missing)
            + (" is" if len(missing) == 1 else " are")
            + " not set: Lever webhooks are verified with the webhook's signature token "
            "(Settings > Integrations and API > Webhooks) and name only the opportunity, "
            "which is then read with the API key"
        )

    def digest(self, request: Request) -> Any:
        """Lever signs no body bytes: nothing to hash while reading."""
        return None

    def refusal(self, request: Request, body: bytes, digest: Any, now: datetime) -> str | None:
        """Why the delivery is refused (401), or ``None``; :class:`BadPayload` for a body
        that is not a JSON object (the signature is inside it)."""
        assert self._token is not None
        data = json_object(body)
        token, triggered, signature = (
            data.get("token"),
            data.get("triggeredAt"),
            data.get("signature"),
        )
        if not isinstance(signature, str) or not signature or not isinstance(token, str):
            return "unsigned request (no token or signature in the body)"
        if isinstance(triggered, bool) or not isinstance(triggered, int | str):
            return "unsigned request (no triggeredAt in the body)"
        signed = f"{token}{triggered}".encode("utf-8", "surrogatepass")
        expected = hmac.new(self._token, signed, hashlib.sha256).hexdigest().encode()
        given = signature.strip().lower().encode("utf-8", "surrogatepass")
        if not hmac.compare_digest(expected, given):
            return "the signature does not match LEVER_WEBHOOK_TOKEN"
        return None

    def changes(self, request: Request, body: bytes, now: datetime) -> list[CrmChange]:
        """The delivery's one change (still to be read from the API: ``fetch``)."""
        data = json_object(body)
        event_id = data.get("id")
        if not isinstance(event_id, str) or not event_id.strip() or len(event_id) > 200:
            raise BadPayload("id is missing or not an event id")
        event = data.get("event")
        if not isinstance(event, str) or not event:
            raise BadPayload("event is missing")
        occurred = from_epoch_ms(data.get("triggeredAt"), "triggeredAt")
        if event not in _FETCHED and event != "candidateDeleted":
            return [CrmChange("lever", event_id, "ignore", None, occurred, what=event)]
        details = data.get("data")
        if not isinstance(details, dict):
            raise BadPayload("data is missing or not an object")
        opportunity = details.get("opportunityId")
        if not isinstance(opportunity, str) or not opportunity.strip() or len(opportunity) > 128:
            raise BadPayload("data.opportunityId is missing or not an id")
        # A deletion is read back too: Lever signs only token + triggeredAt, not the body,
        # so a body naming another opportunity could otherwise delete it. Lever answering
        # 404 is the deletion; an opportunity still there is written as Lever holds it.
        return [CrmChange("lever", event_id, "fetch", opportunity, occurred, what=event)]

    def resolve(self, change: CrmChange) -> CrmChange:
        """A ``fetch`` change as the ``record`` a sync would write (API errors propagate:
        :class:`~outreach.errors.RetryableError` is the caller's 503)."""
        if change.kind != "fetch" or change.external_id is None:
            return change
        connector = self._lever()
        try:
            response = connector.client.get(
                f"/opportunities/{quote(change.external_id, safe='')}",
                params=[("expand", "stage"), ("expand", "owner")],
            )
        except PermanentError as exc:
            if exc.status == 404:  # gone from Lever: as if deleted
                return CrmChange(
                    "lever",
                    change.delivery_id,
                    "delete",
                    change.external_id,
                    change.occurred_at,
                    what=change.what,
                )
            raise
        try:
            raw = response.json()["data"]
            archive = (
                connector.archive_reason_types() if isinstance(raw.get("archived"), dict) else {}
            )
            names = connector.stage_names() if isinstance(raw.get("stage"), str) else {}
            record = flatten_opportunity(raw, archive, stage_names=names)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise PermanentError(
                f"lever: the opportunity could not be read ({type(exc).__name__})", provider="lever"
            ) from None
        return CrmChange(
            "lever",
            change.delivery_id,
            "record",
            change.external_id,
            change.occurred_at,
            record=record,
            what=change.what,
        )

    def close(self) -> None:
        """Release the API client."""
        if self._connector is not None:
            self._connector.close()

    def _lever(self) -> Lever:
        if self._connector is None:
            assert self._make is not None
            self._connector = self._make()
        return self._connector
