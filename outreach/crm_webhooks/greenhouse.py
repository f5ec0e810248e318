"""Greenhouse (Harvest) web hooks: verify the ``Signature`` header and read the event.

Greenhouse posts ``{"action": ..., "payload": {...}}`` as JSON and signs the whole body:
``Signature: sha256 <hex>``, the HMAC-SHA256 of the raw body keyed with the web hook's
secret key (``GREENHOUSE_WEBHOOK_SECRET``). Every delivery carries a ``Greenhouse-Event-ID``
header, unique to the event and kept across Greenhouse's retries: the idempotency key
(a delivery without it is keyed on the body's SHA-256, which a retry repeats byte for byte).

Actions read:

* ``candidate_stage_change``, ``hire_candidate``, ``reject_candidate``,
  ``unreject_candidate``, ``new_candidate_application``, ``new_prospect_application``,
  ``prospect_created``: ``payload.application`` with its ``candidate`` embedded; flattened
  with :func:`connectors.greenhouse.flatten_candidate`, as a sync flattens the candidate
  (``hire_candidate`` is ``hired`` whatever its ``status`` field says). The event's time
  is ``rejected_at`` for a rejection, else the application's ``last_activity_at``, else
  the offer's ``resolved_at`` for a hire, else the time it arrived.
* ``update_candidate``: ``payload.candidate``, contact fields only (no stage).
* ``delete_candidate``: ``payload.person.id``; ``merge_candidate``: ``payload.person.id``
  merged into ``payload.person.new_candidate_id``.
* ``ping`` (sent when the hook is created) and any other action: 200, nothing changes.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from typing import Any, ClassVar

from werkzeug.wrappers import Request

from connectors.greenhouse import flatten_candidate
from outreach.crm_webhooks.change import BadPayload, CrmChange, json_object, parse_time

__all__ = ["EVENT_ID_HEADER", "SIGNATURE_HEADER", "GreenhouseHook", "sign"]

SIGNATURE_HEADER = "Signature"
EVENT_ID_HEADER = "Greenhouse-Event-ID"
_APPLICATION_ACTIONS = frozenset(
    {
        "candidate_stage_change",
        "hire_candidate",
        "reject_candidate",
        "unreject_candidate",
        "new_candidate_application",
        "new_prospect_application",
        "prospect_created",
    }
)
_SCALARS = (str, int, float, bool)


def sign(secret: str, body: bytes) -> str:
    """The ``Signature`` header Greenhouse sends for ``body`` (tests, the sandbox)."""
    return "sha256 " + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class GreenhouseHook:
    """``POST /webhooks/greenhouse``: see the module docstring."""

    source: ClassVar[str] = "greenhouse"
    variable: ClassVar[str] = "GREENHOUSE_WEBHOOK_SECRET"

    def __init__(self, secret: str | None) -> None:
        self._secret = secret.encode() if secret else None

    @property
    def problem(self) -> str | None:
        """Why every post is refused (503), or ``None``."""
        if self._secret is None:
            return (
                "GREENHOUSE_WEBHOOK_SECRET is not set: set it to the secret key of the web "
                "hook (Greenhouse: Configure > Dev Center > Web Hooks)"
            )
        return None

    def digest(self, request: Request) -> Any:
        """The HMAC the body is fed into as it streams in."""
        assert self._secret is not None
        return hmac.new(self._secret, digestmod=hashlib.sha256)

    def refusal(self, request: Request, body: bytes, digest: Any, now: datetime) -> str | None:
        """Why the delivery is refused (401), or ``None`` when the signature matches."""
        header = request.headers.get(SIGNATURE_HEADER, "").strip()
        if not header:
            return "unsigned request (no Signature header)"
        algorithm, _, value = header.partition(" ")
        if algorithm.lower() != "sha256" or not value.strip():
            return "the Signature header is not 'sha256 <hex>'"
        given = value.strip().lower().encode("utf-8", "surrogatepass")
        if not hmac.compare_digest(digest.hexdigest().encode(), given):
            return "the signature does not match GREENHOUSE_WEBHOOK_SECRET"
        return None

    def changes(self, request: Request, body: bytes, now: datetime) -> list[CrmChange]:
        """The delivery's one change; :class:`BadPayload` when it cannot be read."""
        delivery = request.headers.get(EVENT_ID_HEADER, "").strip()[:200]
        if not delivery:
            delivery = "sha256:" + hashlib.sha256(body).hexdigest()
        return [read_event(json_object(body), delivery)]


def read_event(data: dict[str, Any], delivery: str) -> CrmChange:
    """One Greenhouse web hook body as a :class:`CrmChange`."""
    action = data.get("action")
    payload = data.get("payload")
    if not isinstance(action, str) or not action:
        raise BadPayload("no action")
    if action == "ping" or not isinstance(payload, dict):
        if action != "ping" and payload is not None:
            raise BadPayload("payload is not an object")
        return CrmChange("greenhouse", delivery, "ignore", None, what=action)
    if action in _APPLICATION_ACTIONS:
        return _application_change(action, payload, delivery)
    if action == "update_candidate":
        candidate = _object(payload, "candidate")
        record = _flatten({**candidate, "applications": [], "custom_fields": _values(candidate)})
        record.pop("stage", None)  # a candidate update says nothing about the stage
        return CrmChange(
            "greenhouse",
            delivery,
            "record",
            record["external_id"],
            parse_time(candidate.get("updated_at"), "candidate.updated_at"),
            record=record,
            what=action,
        )
    if action in ("delete_candidate", "merge_candidate"):
        person = _object(payload, "person")
        person_id = _id(person.get("id"), "person.id")
        if action == "delete_candidate":
            return CrmChange("greenhouse", delivery, "delete", person_id, what=action)
        into = _id(person.get("new_candidate_id"), "person.new_candidate_id")
        return CrmChange("greenhouse", delivery, "merge", person_id, into=into, what=action)
    return CrmChange("greenhouse", delivery, "ignore", None, what=action)


def _application_change(action: str, payload: dict[str, Any], delivery: str) -> CrmChange:
    application = dict(_object(payload, "application"))
    candidate = _object(application, "candidate")
    if action == "hire_candidate":
        application["status"] = "hired"
    elif action == "reject_candidate":
        application["status"] = "rejected"
    application.setdefault(
        "jobs", [application["job"]] if isinstance(application.get("job"), dict) else []
    )
    offer = application.get("offer") if isinstance(application.get("offer"), dict) else {}
    occurred = (
        (
            parse_time(application.get("rejected_at"), "application.rejected_at")
            if action == "reject_candidate"
            else None
        )
        or parse_time(application.get("last_activity_at"), "application.last_activity_at")
        or (
            parse_time(offer.get("resolved_at"), "offer.resolved_at")
            if action == "hire_candidate"
            else None
        )
    )
    raw = {
        **candidate,
        # The v1 shape flatten_candidate reads: the application and the recruiter beside it.
        "applications": [application],
        "updated_at": None,
        "custom_fields": _values(candidate),
    }
    record = _flatten(raw)
    return CrmChange(
        "greenhouse",
        delivery,
        "record",
        record["external_id"],
        occurred,
        record=record,
        what=action,
    )


def _values(candidate: dict[str, Any]) -> dict[str, Any]:
    """Web hook custom fields (``{key: {name, type, value}}``) as the API's ``{key: value}``."""
    fields = candidate.get("custom_fields")
    if not isinstance(fields, dict):
        return {}
    return {
        key: field.get("value") if isinstance(field, dict) else field
        for key, field in fields.items()
    }


def _flatten(raw: dict[str, Any]) -> dict[str, Any]:
    _id(raw.get("id"), "candidate.id")
    try:
        record = flatten_candidate(raw)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BadPayload(f"the candidate cannot be read: {type(exc).__name__}") from None
    record.pop("updated_at", None)
    return {
        key: value
        for key, value in record.items()
        if key in ("tags", "stage") or value is None or isinstance(value, _SCALARS)
    }


def _object(parent: dict[str, Any], key: str) -> dict[str, Any]:
    value = parent.get(key)
    if not isinstance(value, dict):
        raise BadPayload(f"{key} is missing or not an object")
    return value


def _id(value: Any, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str) or str(value).strip() == "":
        raise BadPayload(f"{name} is missing or not an id")
    text = str(value).strip()
    if len(text) > 128:
        raise BadPayload(f"{name} is too long to be an id")
    return text
