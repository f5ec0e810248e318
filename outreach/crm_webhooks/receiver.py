"""The HTTP side of the CRM webhooks, shared by the three routes of ``outreach serve``.

Every route answers alike: 503 naming the variable while its secret is not set (nothing
unsigned is ever taken in); 413 past :data:`CRM_MAX_BODY_BYTES` (read in chunks, hashed as
it arrives, never held past the limit); 401 when the signature is missing, forged or (for
HubSpot) older than five minutes; 400 when a signed body cannot be read (a retry would
not change it); 503 when the store or, for Lever, the CRM's API fails (the CRM retries,
and the event id keeps a retry from counting twice); otherwise 200 with what became of
each event: ``applied``, ``unchanged``, ``stale``, ``unknown``, ``ignored``, ``bad`` and
``duplicates`` (a replayed or retried delivery is a duplicate, answered 200).
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Engine
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Request, Response

from outreach.cadence import CadenceConfig
from outreach.crm_webhooks.apply import apply_changes, seen
from outreach.crm_webhooks.change import BadPayload, CrmChange
from outreach.errors import ConfigError, ProviderError

__all__ = ["CRM_MAX_BODY_BYTES", "CrmHook", "receive"]

log = logging.getLogger("outreach.serve")

#: largest CRM webhook body accepted (a Greenhouse application with every custom field and
#: attachment link is tens of kilobytes; a HubSpot batch of 100 events about 40)
CRM_MAX_BODY_BYTES = 1024 * 1024
_READ_CHUNK = 64 * 1024
_LOG_ITEMS = 20


class CrmHook(Protocol):
    """What :func:`receive` needs of one CRM's webhook (see the three modules).

    A hook may also have ``resolve(change) -> change`` (Lever: read the record the event
    names from the CRM's API).
    """

    source: str

    @property
    def problem(self) -> str | None:
        """Why every post is refused (503), or ``None``."""

    def digest(self, request: Request) -> Any:
        """What the body is hashed into as it streams in (``None``: nothing)."""

    def refusal(self, request: Request, body: bytes, digest: Any, now: datetime) -> str | None:
        """Why the delivery is refused (401), or ``None`` when its signature holds."""

    def changes(self, request: Request, body: bytes, now: datetime) -> list[CrmChange]:
        """The delivery's events; :class:`BadPayload` when it cannot be read (400)."""


def receive(
    hook: CrmHook,
    request: Request,
    *,
    engine: Engine,
    config: CadenceConfig | None,
    now: datetime,
    act_now: Callable[[set[int], datetime, str], None],
    limit: int = CRM_MAX_BODY_BYTES,
) -> Response:
    """Answer one delivery to ``hook``'s route (see the module docstring)."""
    name = hook.source
    problem = hook.problem or (
        None if config is not None else "no cadence config is loaded (OUTREACH_CONFIG)"
    )
    if problem is not None:
        log.warning("%s webhook refused (503): %s", name, problem)
        return _text(problem, 503)
    digest = hook.digest(request)
    body = _read(request, digest, limit)
    if body is None:
        log.warning("%s webhook refused (413): body over %d bytes", name, limit)
        response = _text(
            f"content too large: a {name} webhook may have at most {limit} bytes; "
            "nothing was recorded",
            413,
        )
        response.headers["Connection"] = "close"
        return response
    try:
        refused = hook.refusal(request, body, digest, now)
        if refused is not None:
            log.warning("%s webhook refused (401): %s", name, refused)
            return _text(f"unauthorized: {refused}", 401)
        items = hook.changes(request, body, now)
    except BadPayload as exc:
        log.warning("%s webhook (%d bytes) refused (400): %s", name, len(body), exc)
        return _text(f"bad request: {exc}", 400)
    assert config is not None
    changes = [c for c in items if c.kind != "bad"]
    bad = [c.what for c in items if c.kind == "bad"]
    known = seen(engine, name, [c.delivery_id for c in changes])
    resolve = getattr(hook, "resolve", None)
    try:
        fresh = [
            resolve(c) if resolve is not None and c.delivery_id not in known else c for c in changes
        ]
    except (ProviderError, ConfigError) as exc:
        log.warning("%s webhook: reading the record failed (%s); answered 503", name, exc)
        return _text(f"the {name} API could not be read; try again later", 503)
    report = apply_changes(engine, config, fresh, now)
    for note in report.notes[:_LOG_ITEMS]:
        log.info("%s webhook: %s", name, note)
    for reason in bad[:_LOG_ITEMS]:
        log.warning("%s webhook: left out %s", name, reason)
    answer = report.as_json()
    answer["bad"] += len(bad)
    log.info(
        "%s webhook: %d events; %s; candidates %s",
        name,
        len(changes),
        ", ".join(f"{k} {v}" for k, v in answer.items() if v),
        ",".join(str(p) for p in sorted(report.person_ids)) or "none",
    )
    act_now(report.person_ids, now, f"{name} webhook")
    return Response(
        json.dumps(answer, separators=(",", ":")), status=200, content_type="application/json"
    )


def _read(request: Request, digest: Any, limit: int) -> bytes | None:
    """The body, fed into ``digest`` as it arrives; ``None`` past ``limit`` bytes."""
    if (request.content_length or 0) > limit:
        return None
    request.max_content_length = limit
    out = io.BytesIO()
    size = 0
    try:
        stream = request.stream
        while chunk := stream.read(_READ_CHUNK):
            size += len(chunk)
            if size > limit:
                return None
            if digest is not None:
                digest.update(chunk)
            out.write(chunk)
    except RequestEntityTooLarge:
        return None
    return out.getvalue()


def _text(message: str, status: int) -> Response:
    return Response(message + "\n", status=status, content_type="text/plain; charset=utf-8")
