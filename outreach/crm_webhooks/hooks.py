"""Build the three CRM webhook hooks from the settings (one place, for ``outreach serve``)."""

from __future__ import annotations

from outreach.clock import Clock
from outreach.crm_webhooks.greenhouse import GreenhouseHook
from outreach.crm_webhooks.hubspot import HubSpotHook
from outreach.crm_webhooks.lever import LeverHook
from outreach.settings import Settings

__all__ = ["build_hooks"]


def build_hooks(settings: Settings, clock: Clock) -> tuple[GreenhouseHook, LeverHook, HubSpotHook]:
    """The Greenhouse, Lever and HubSpot hooks; a hook whose secret is unset refuses (503)."""
    secret = settings.greenhouse_webhook_secret
    greenhouse = GreenhouseHook(secret.get_secret_value() if secret else None)

    lever_token = settings.lever_webhook_token
    api_key = settings.lever_api_key
    make = None
    if api_key is not None:
        key = api_key.get_secret_value()

        def make():  # built on the first delivery: serve starts without a network call
            from connectors.lever import Lever

            # One attempt: Lever retries an unanswered webhook itself, and a delivery must
            # not hold a server thread through a backoff.
            return Lever(
                key,
                base_url=settings.lever_base_url,
                user_id=settings.lever_user_id,
                clock=clock,
                attempts=1,
                timeout=10.0,
            )

    lever = LeverHook(lever_token.get_secret_value() if lever_token else None, make)

    client_secret = settings.hubspot_client_secret
    hubspot = HubSpotHook(
        client_secret.get_secret_value() if client_secret else None, settings.public_url
    )
    return greenhouse, lever, hubspot
