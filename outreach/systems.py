"""Which outside systems a setup uses: what `outreach config check` prints under the file.

The settings say which CRMs and channels have credentials (:meth:`Settings.integrations`)
and which webhook routes can verify what they receive; the cadence file says which
channels its steps may use and which sources its ``stage_map`` names. Put side by side
they answer the questions a new setup raises before the first night: which CRMs are
synced, will the SMS steps go out, will a provider's webhook be refused? Nothing here
talks to a provider; it reads settings and the file only.
"""

from __future__ import annotations

from dataclasses import dataclass

from outreach.cadence import TASK_CHANNELS, CadenceConfig
from outreach.settings import Settings

__all__ = ["SystemLine", "systems"]

#: webhook routes of ``outreach serve``, the setting each one verifies with, and whether
#: the signature covers the URL the provider posted to (OUTREACH_PUBLIC_URL + the path)
_WEBHOOKS: tuple[tuple[str, str, str, bool], ...] = (
    (
        "/webhooks/sendgrid/events",
        "sendgrid_webhook_public_key",
        "SENDGRID_WEBHOOK_PUBLIC_KEY",
        False,
    ),
    ("/webhooks/sendgrid/inbound", "sendgrid_inbound_token", "SENDGRID_INBOUND_TOKEN", False),
    ("/webhooks/twilio/*", "twilio_auth_token", "TWILIO_AUTH_TOKEN", True),
    ("/webhooks/greenhouse", "greenhouse_webhook_secret", "GREENHOUSE_WEBHOOK_SECRET", False),
    ("/webhooks/lever", "lever_webhook_token", "LEVER_WEBHOOK_TOKEN", False),
    ("/webhooks/hubspot", "hubspot_client_secret", "HUBSPOT_CLIENT_SECRET", False),
    ("/webhooks/mailchimp", "mailchimp_webhook_key", "MAILCHIMP_WEBHOOK_KEY", True),
)


@dataclass(frozen=True)
class SystemLine:
    """One system: ``kind`` (source, channel, tasks, webhook), on or off, and why."""

    name: str
    kind: str
    on: bool
    detail: str
    #: what the cadence file asks of it that cannot happen as things are set, if anything
    note: str | None = None


def systems(settings: Settings, config: CadenceConfig) -> list[SystemLine]:
    """Every source, channel, task channel and webhook route, with the file's use of it."""
    mapped = set(config.stage_map)
    used = _channels_used(config)
    lines: list[SystemLine] = []
    known_sources: set[str] = set()
    for item in settings.integrations():
        note = None
        if item.kind == "source":
            known_sources.add(item.name)
        elif item.kind == "channel" and not item.on and item.name in used:
            note = f"steps that may use it: {_steps(used[item.name])}"
        lines.append(SystemLine(item.name, item.kind, item.on, item.detail, note))
    for source in sorted(mapped - known_sources - {"import"}):
        detail = f"no connector: the map applies to imported rows whose source is {source!r}"
        lines.append(SystemLine(source, "source", False, detail))
    for channel in sorted(TASK_CHANNELS & set(used)):
        lines.append(
            SystemLine(
                channel,
                "tasks",
                True,
                "recruiter tasks: `outreach tasks`, and the person's CRM where it takes tasks",
            )
        )
    public = settings.public_url is not None
    for route, field, variable, over_url in _WEBHOOKS:
        if getattr(settings, field, None) is None:
            lines.append(SystemLine(route, "webhook", False, f"no {variable}: refused"))
        elif field == "lever_webhook_token" and settings.lever_api_key is None:
            detail = "no LEVER_API_KEY: the opportunity a webhook names cannot be read"
            lines.append(SystemLine(route, "webhook", False, detail))
        elif over_url and not public:
            detail = "no OUTREACH_PUBLIC_URL: the signature over the URL cannot be checked"
            lines.append(SystemLine(route, "webhook", False, detail))
        else:
            lines.append(SystemLine(route, "webhook", True, f"verified with {variable}"))
    return lines


def _channels_used(config: CadenceConfig) -> dict[str, list[str]]:
    used: dict[str, list[str]] = {}
    for cadence in config.cadences:
        for step in cadence.steps:
            for channel in config.channels_for(step):
                used.setdefault(channel, []).append(f"{cadence.id}.{step.id}")
    return used


def _steps(names: list[str]) -> str:
    shown = ", ".join(names[:4])
    return shown + (f" and {len(names) - 4} more" if len(names) > 4 else "")
