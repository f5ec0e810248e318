"""Reading SendGrid dynamic templates through the official SDK (``GET /v3/templates/{id}``).

The email channel's :meth:`channels.email.SendGridEmail.read_template` and ``outreach
config check`` use :class:`SendGridTemplates` to fetch a template's active version (the
one SendGrid renders), so that the engine can check each touch's data against the
variables it uses (:mod:`outreach.dynamic_templates`).

Errors are translated here, at the edge:

* 401, 403: :class:`ConfigError` naming ``SENDGRID_API_KEY`` (and, for 403, the
  ``templates.read`` scope the key needs);
* 404 (``resource not found``), another 4xx, a template that is not a dynamic one or has
  no active version: :class:`ConfigError` naming the step's ``sendgrid_template_id``;
* no connection, a timeout, 429, 5xx, an answer that is not a template: retried (it is a
  read) up to ``max_attempts`` with backoff, honouring ``Retry-After`` and
  ``X-RateLimit-Reset`` up to ``max_wait`` seconds, then :class:`RetryableError`.

Messages never hold the API key.

Example::

    templates = SendGridTemplates(api_key, base_url="https://api.sendgrid.com")
    active = templates.read("d-5f2c8a0e1b7d4c9a8e6f0a1b2c3d4e5f")
    active.html_content
"""

from __future__ import annotations

import json
import time
import urllib.error
from collections.abc import Callable
from datetime import datetime
from typing import Any

from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient

from channels.email import CREDENTIAL, PROVIDER, _backoff, _describe, _errors, _retry_after, _scrub
from outreach.clock import Clock, SystemClock
from outreach.dynamic_templates import DynamicTemplate
from outreach.errors import ConfigError, RetryableError

__all__ = ["SendGridTemplates"]


class SendGridTemplates:
    """Reads dynamic templates' active versions with the ``sendgrid`` SDK.

    ``base_url`` is the same override the channel uses (the sandbox, a regional host);
    ``client`` replaces the SDK client (tests); ``sleep`` and ``clock`` are injected so
    tests never wait.
    """

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = "https://api.sendgrid.com",
        timeout: float = 10.0,
        max_attempts: int = 3,
        max_wait: float = 60.0,
        clock: Clock | None = None,
        sleep: Callable[[float], None] = time.sleep,
        client: Any | None = None,
    ) -> None:
        self._api_key = api_key
        self.timeout = timeout
        self.max_attempts = max(1, max_attempts)
        #: a longer wait than this is not slept through: the template is unavailable now
        self.max_wait = max_wait
        self._clock = clock or SystemClock()
        self._sleep = sleep
        self._client = client or SendGridAPIClient(api_key, host=base_url.rstrip("/"))

    def __repr__(self) -> str:
        return "SendGridTemplates()"  # never the key

    def read(self, template_id: str) -> DynamicTemplate:
        """The active version of ``template_id``; raises as the module docstring says."""
        body = self._get(template_id)
        if not isinstance(body, dict) or not isinstance(body.get("versions", []), list):
            raise RetryableError(
                f"SendGrid answered something other than a template for {template_id}",
                provider=PROVIDER,
            )
        generation = body.get("generation")
        if generation is not None and generation != "dynamic":
            raise ConfigError(
                f"SendGrid template {template_id} is a {generation} template, not a dynamic "
                "one; set the step's sendgrid_template_id to a dynamic template (d-…)"
            )
        active = [v for v in body.get("versions") or [] if isinstance(v, dict) and v.get("active")]
        if not active:
            raise ConfigError(
                f"SendGrid template {template_id} ({body.get('name')!r}) has no active "
                "version; activate one in SendGrid (Email API › Dynamic Templates)"
            )
        version = active[0]
        return DynamicTemplate(
            template_id=template_id,
            name=str(body.get("name") or template_id),
            version=str(version.get("name") or version.get("id") or "?"),
            subject=_text(version.get("subject")),
            html_content=_text(version.get("html_content")),
            plain_content=_text(version.get("plain_content")),
        )

    def _get(self, template_id: str) -> Any:
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._client.client.templates._(template_id).get(timeout=self.timeout)
                return json.loads(response.body or b"null")
            except HTTPError as exc:
                if exc.status_code not in (429,) and exc.status_code < 500:
                    raise _refused(template_id, exc.status_code, exc.body, self._api_key) from None
                detail = "; ".join(_describe(f, m) for f, m in _errors(exc.body)) or "no details"
                problem = f"SendGrid {exc.status_code} ({_scrub(detail, self._api_key)})"
                wait = _retry_after(exc.headers or {}, self._now())
            except urllib.error.URLError as exc:
                reason = exc.reason
                text = getattr(reason, "strerror", None) or type(reason).__name__
                problem, wait = f"cannot connect to SendGrid ({text})", None
            except Exception as exc:  # a timeout, a lost connection, a body that is not JSON
                problem, wait = f"{type(exc).__name__} while reading from SendGrid", None
            wait = wait if wait is not None else _backoff(attempt)
            if attempt >= self.max_attempts or wait > self.max_wait:
                plural = "s" if attempt > 1 else ""
                raise RetryableError(
                    f"cannot read dynamic template {template_id}: {problem} after {attempt} "
                    f"attempt{plural}",
                    provider=PROVIDER,
                    retry_after=wait,
                )
            self._sleep(wait)

    def _now(self) -> datetime:
        return self._clock.now()


def _refused(template_id: str, status: int, body: Any, api_key: str) -> ConfigError:
    detail = _scrub("; ".join(_describe(f, m) for f, m in _errors(body)) or "no details", api_key)
    if status == 401:
        return ConfigError(
            f"SendGrid 401 reading template {template_id}: the API key in {CREDENTIAL} was "
            f"rejected ({detail}); check its value"
        )
    if status == 403:
        return ConfigError(
            f"SendGrid 403 reading template {template_id} ({detail}): give the key in "
            f"{CREDENTIAL} the templates.read scope (API Keys › Restricted Access › Template "
            "Engine: read)"
        )
    if status == 404:
        return ConfigError(
            f"SendGrid has no template {template_id} (404: {detail}); check the step's "
            "sendgrid_template_id against Email API › Dynamic Templates, in the account "
            f"(or subuser) of {CREDENTIAL}"
        )
    return ConfigError(
        f"SendGrid {status} reading template {template_id} ({detail}); check the step's "
        "sendgrid_template_id"
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
