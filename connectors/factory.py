"""Build the connectors the settings turn on.

One place decides which class serves a source (Harvest v3 when a client is configured,
else legacy v1 with an API key; Lever; HubSpot) so the CLI, the write-back pass and the
demo agree. Sources that are off come back with the reason, for the caller to say once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from connectors.base import Connector
from outreach.clock import Clock
from outreach.settings import Settings

__all__ = ["build_connectors"]


def build_connectors(
    settings: Settings, wanted: Iterable[str], clock: Clock, **client_options: Any
) -> tuple[list[Connector], dict[str, str]]:
    """The connectors for ``wanted`` sources that are on, and ``{source: why off}``."""
    items = {item.name: item for item in settings.integrations() if item.kind == "source"}
    built: list[Connector] = []
    off: dict[str, str] = {}
    for name in wanted:
        item = items[name]
        if not item.on:
            off[name] = item.detail
        elif name == "greenhouse":
            built.append(_greenhouse(settings, clock, **client_options))
        elif name == "lever":
            from connectors.lever import Lever

            assert settings.lever_api_key is not None
            built.append(
                Lever(
                    settings.lever_api_key.get_secret_value(),
                    base_url=settings.lever_base_url,
                    user_id=settings.lever_user_id,
                    clock=clock,
                    **client_options,
                )
            )
        elif name == "hubspot":
            from connectors.hubspot import HubSpot

            assert settings.hubspot_access_token is not None
            built.append(
                HubSpot(
                    settings.hubspot_access_token.get_secret_value(),
                    base_url=settings.hubspot_base_url,
                    clock=clock,
                    **client_options,
                )
            )
        elif name == "bullhorn":
            built.append(_bullhorn(settings, clock, **client_options))
        elif name == "activecampaign":
            from connectors.activecampaign import ActiveCampaign

            assert settings.activecampaign_api_url is not None
            assert settings.activecampaign_api_token is not None
            built.append(
                ActiveCampaign(
                    settings.activecampaign_api_url,
                    settings.activecampaign_api_token.get_secret_value(),
                    clock=clock,
                    **client_options,
                )
            )
    return built, off


def _bullhorn(settings: Settings, clock: Clock, **client_options: Any) -> Connector:
    from pathlib import Path

    from connectors.bullhorn import Bullhorn
    from connectors.bullhorn_auth import BullhornLogin, RefreshTokenFile

    assert settings.bullhorn_client_id and settings.bullhorn_client_secret
    refresh = settings.bullhorn_refresh_token
    password = settings.bullhorn_password
    login = BullhornLogin(
        settings.bullhorn_client_id,
        settings.bullhorn_client_secret.get_secret_value(),
        auth_url=settings.bullhorn_auth_url,
        login_url=settings.bullhorn_rest_url,
        refresh_token=refresh.get_secret_value() if refresh else None,
        username=settings.bullhorn_username,
        password=password.get_secret_value() if password else None,
        token_file=RefreshTokenFile(
            Path(settings.bullhorn_token_file), refresh.get_secret_value() if refresh else None
        ),
        transport=client_options.get("transport"),
    )
    return Bullhorn(login, clock=clock, **client_options)


def _greenhouse(settings: Settings, clock: Clock, **client_options: Any) -> Connector:
    from connectors.greenhouse import GreenhouseV1, GreenhouseV3

    if settings.greenhouse_client_id and settings.greenhouse_client_secret:
        assert settings.greenhouse_user_id is not None
        return GreenhouseV3(
            settings.greenhouse_client_id,
            settings.greenhouse_client_secret.get_secret_value(),
            settings.greenhouse_user_id,
            base_url=settings.greenhouse_v3_base_url,
            auth_url=settings.greenhouse_auth_url,
            clock=clock,
            **client_options,
        )
    assert settings.greenhouse_api_key is not None
    return GreenhouseV1(
        settings.greenhouse_api_key.get_secret_value(),
        base_url=settings.greenhouse_v1_base_url,
        user_id=settings.greenhouse_user_id,
        clock=clock,
        **client_options,
    )
