"""Signed CRM webhook deliveries built the way Greenhouse, Lever and HubSpot build them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from outreach.crm_webhooks import greenhouse, hubspot, lever
from outreach.sandbox.greenhouse import FakeGreenhouse

GREENHOUSE_SECRET = "gh-webhook-secret"
LEVER_TOKEN = "lever-signature-token"
HUBSPOT_SECRET = "hubspot-client-secret"
PUBLIC = "https://hooks.example.org/outreach"


def ms(at: datetime) -> int:
    """Epoch milliseconds."""
    return int(at.astimezone(UTC).timestamp() * 1000)


def greenhouse_application_body(
    fake: FakeGreenhouse, position: int, action: str = "candidate_stage_change"
) -> dict[str, Any]:
    """The web hook Greenhouse posts for the candidate at ``position`` as the fake holds
    it now: ``payload.application`` with the candidate embedded (the v1 shapes)."""
    candidate = fake.v1_candidate_json(position)
    (application,) = candidate.pop("applications")
    candidate.pop("application_ids")
    candidate["custom_fields"] = {
        key: {"name": key, "type": "short_text", "value": value}
        for key, value in candidate["custom_fields"].items()
    }
    application["candidate"] = candidate
    return {"action": action, "payload": {"application": application}}


def greenhouse_headers(body: bytes, event_id: str, secret: str = GREENHOUSE_SECRET) -> dict:
    """``Signature`` and ``Greenhouse-Event-ID`` as Greenhouse sends them."""
    return {
        "Signature": greenhouse.sign(secret, body),
        "Greenhouse-Event-ID": event_id,
        "Content-Type": "application/json",
    }


def lever_body(
    event: str,
    opportunity_id: str,
    at: datetime,
    *,
    event_id: str,
    token: str = LEVER_TOKEN,
    data: dict | None = None,
) -> bytes:
    """A Lever webhook body, signed with ``token`` over ``token + triggeredAt``."""
    triggered = ms(at)
    request_token = f"tok-{event_id}"
    return json.dumps(
        {
            "id": event_id,
            "event": event,
            "triggeredAt": triggered,
            "token": request_token,
            "signature": lever.sign(token, request_token, triggered),
            "data": {"opportunityId": opportunity_id, "contactId": "c-1", **(data or {})},
        }
    ).encode()


def hubspot_event(
    event_id: int, object_id: str, value: str, at: datetime, prop: str = "lifecyclestage"
) -> dict[str, Any]:
    """One ``contact.propertyChange`` event of a HubSpot webhook batch."""
    return {
        "eventId": event_id,
        "subscriptionId": 2001,
        "portalId": 62515,
        "appId": 1160452,
        "occurredAt": ms(at),
        "subscriptionType": "contact.propertyChange",
        "attemptNumber": 0,
        "objectId": int(object_id) if object_id.isdigit() else object_id,
        "propertyName": prop,
        "propertyValue": value,
        "changeSource": "CRM_UI",
    }


def hubspot_headers(
    body: bytes,
    sent: datetime,
    url: str = PUBLIC + "/webhooks/hubspot",
    secret: str = HUBSPOT_SECRET,
) -> dict[str, str]:
    """The v3 signature headers HubSpot sends for a POST of ``body`` to ``url`` at ``sent``."""
    stamp = ms(sent)
    return {
        "X-HubSpot-Signature-v3": hubspot.sign(secret, "POST", url, body, stamp),
        "X-HubSpot-Request-Timestamp": str(stamp),
        "Content-Type": "application/json",
    }
