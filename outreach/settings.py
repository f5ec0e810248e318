"""Environment settings (contract names from DESIGN.md), read with pydantic-settings.

Every variable may also come from a ``.env`` file in the working directory. Secrets are
``SecretStr``: their values never appear in ``repr``, logs, errors or the database.
A source or channel without credentials is *off*; :meth:`Settings.integrations` says
which are on and why the others are off, without raising.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Integration", "Settings"]

DEFAULT_CONFIG = "config/cadences.yaml"


def _env(name: str):
    # Exactly the contract's variable name, nothing else (no prefixes, no aliases).
    return Field(default=None, validation_alias=AliasChoices(name))


@dataclass(frozen=True)
class Integration:
    """Whether one source or channel is usable, and why not when it is off."""

    name: str
    kind: str  # "source" or "channel"
    on: bool
    detail: str


class Settings(BaseSettings):
    """All environment settings of the engine.

    Example::

        settings = Settings()                       # from the environment and .env
        settings = Settings(_env_file=None, OUTREACH_DATABASE_URL="sqlite://")
    """

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=True,
        populate_by_name=False,
    )

    database_url: str = Field(
        default="sqlite:///outreach.db",
        validation_alias=AliasChoices("OUTREACH_DATABASE_URL"),
    )
    config: str = Field(default=DEFAULT_CONFIG, validation_alias=AliasChoices("OUTREACH_CONFIG"))
    public_url: str | None = _env("OUTREACH_PUBLIC_URL")

    greenhouse_client_id: str | None = _env("GREENHOUSE_CLIENT_ID")
    greenhouse_client_secret: SecretStr | None = _env("GREENHOUSE_CLIENT_SECRET")
    greenhouse_user_id: str | None = _env("GREENHOUSE_USER_ID")
    greenhouse_base_url: str | None = _env("GREENHOUSE_BASE_URL")
    greenhouse_auth_url: str = Field(
        default="https://auth.greenhouse.io/token",
        validation_alias=AliasChoices("GREENHOUSE_AUTH_URL"),
    )
    greenhouse_api_key: SecretStr | None = _env("GREENHOUSE_API_KEY")
    #: the web hook's secret key: verifies ``Signature`` on ``POST /webhooks/greenhouse``
    greenhouse_webhook_secret: SecretStr | None = _env("GREENHOUSE_WEBHOOK_SECRET")

    lever_api_key: SecretStr | None = _env("LEVER_API_KEY")
    lever_base_url: str = Field(
        default="https://api.lever.co/v1", validation_alias=AliasChoices("LEVER_BASE_URL")
    )
    lever_user_id: str | None = _env("LEVER_USER_ID")
    #: the webhooks' signature token: verifies ``POST /webhooks/lever``
    lever_webhook_token: SecretStr | None = _env("LEVER_WEBHOOK_TOKEN")

    hubspot_access_token: SecretStr | None = _env("HUBSPOT_ACCESS_TOKEN")
    hubspot_base_url: str = Field(
        default="https://api.hubapi.com", validation_alias=AliasChoices("HUBSPOT_BASE_URL")
    )
    #: the app's client secret: verifies ``X-HubSpot-Signature-v3`` on ``POST /webhooks/hubspot``
    hubspot_client_secret: SecretStr | None = _env("HUBSPOT_CLIENT_SECRET")

    bullhorn_client_id: str | None = _env("BULLHORN_CLIENT_ID")
    bullhorn_client_secret: SecretStr | None = _env("BULLHORN_CLIENT_SECRET")
    bullhorn_refresh_token: SecretStr | None = _env("BULLHORN_REFRESH_TOKEN")
    bullhorn_username: str | None = _env("BULLHORN_USERNAME")
    bullhorn_password: SecretStr | None = _env("BULLHORN_PASSWORD")
    bullhorn_auth_url: str = Field(
        default="https://auth.bullhornstaffing.com/oauth",
        validation_alias=AliasChoices("BULLHORN_AUTH_URL"),
    )
    bullhorn_rest_url: str = Field(
        default="https://rest.bullhornstaffing.com/rest-services",
        validation_alias=AliasChoices("BULLHORN_REST_URL"),
    )
    #: where the rotating refresh token is kept (0600), never in logs or the database
    bullhorn_token_file: str = Field(
        default=".bullhorn-token", validation_alias=AliasChoices("BULLHORN_TOKEN_FILE")
    )
    #: the account's API URL (Settings > Developer), e.g. https://acme.api-us1.com
    activecampaign_api_url: str | None = _env("ACTIVECAMPAIGN_API_URL")
    activecampaign_api_token: SecretStr | None = _env("ACTIVECAMPAIGN_API_TOKEN")

    sendgrid_api_key: SecretStr | None = _env("SENDGRID_API_KEY")
    sendgrid_base_url: str = Field(
        default="https://api.sendgrid.com", validation_alias=AliasChoices("SENDGRID_BASE_URL")
    )
    sendgrid_from_email: str | None = _env("SENDGRID_FROM_EMAIL")
    sendgrid_webhook_public_key: SecretStr | None = _env("SENDGRID_WEBHOOK_PUBLIC_KEY")

    sendgrid_inbound_token: SecretStr | None = _env("SENDGRID_INBOUND_TOKEN")
    sendgrid_inbound_public_key: SecretStr | None = _env("SENDGRID_INBOUND_PUBLIC_KEY")

    reply_to: str | None = _env("OUTREACH_REPLY_TO")
    imap_host: str | None = _env("OUTREACH_IMAP_HOST")
    imap_port: int = Field(default=993, validation_alias=AliasChoices("OUTREACH_IMAP_PORT"))
    imap_user: str | None = _env("OUTREACH_IMAP_USER")
    imap_password: SecretStr | None = _env("OUTREACH_IMAP_PASSWORD")
    imap_folder: str = Field(default="INBOX", validation_alias=AliasChoices("OUTREACH_IMAP_FOLDER"))
    imap_ssl: bool = Field(default=True, validation_alias=AliasChoices("OUTREACH_IMAP_SSL"))

    #: where the provider rate limits shared by all workers live (may carry a password)
    redis_url: SecretStr | None = _env("OUTREACH_REDIS_URL")

    #: which provider sends email: ``sendgrid`` (default) or ``mailchimp``
    email_provider: Literal["sendgrid", "mailchimp"] = Field(
        default="sendgrid", validation_alias=AliasChoices("OUTREACH_EMAIL_PROVIDER")
    )
    mailchimp_transactional_api_key: SecretStr | None = _env("MAILCHIMP_TRANSACTIONAL_API_KEY")
    mailchimp_transactional_base_url: str = Field(
        default="https://mandrillapp.com/api/1.3",
        validation_alias=AliasChoices("MAILCHIMP_TRANSACTIONAL_BASE_URL"),
    )
    mailchimp_from_email: str | None = _env("MAILCHIMP_FROM_EMAIL")
    mailchimp_webhook_key: SecretStr | None = _env("MAILCHIMP_WEBHOOK_KEY")

    twilio_account_sid: str | None = _env("TWILIO_ACCOUNT_SID")
    twilio_auth_token: SecretStr | None = _env("TWILIO_AUTH_TOKEN")
    twilio_from_number: str | None = _env("TWILIO_FROM_NUMBER")
    twilio_messaging_service_sid: str | None = _env("TWILIO_MESSAGING_SERVICE_SID")
    twilio_base_url: str = Field(
        default="https://api.twilio.com", validation_alias=AliasChoices("TWILIO_BASE_URL")
    )

    @field_validator("imap_port", mode="before")
    @classmethod
    def _default_imap_port(cls, value: object) -> object:
        # `OUTREACH_IMAP_PORT=` means the default (993), like every other blank variable.
        if value is None or (isinstance(value, str) and not value.strip()):
            return 993
        return value

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # `FOO=` in a .env file means "not set", not "set to the empty string"; a key pasted
        # with a trailing newline or space would otherwise reach an HTTP header as is.
        if isinstance(value, str):
            return value.strip() or None
        return value

    @field_validator("bullhorn_token_file", mode="after")
    @classmethod
    def _default_token_file(cls, value: str | None) -> str:
        return value or ".bullhorn-token"

    @field_validator("email_provider", mode="before")
    @classmethod
    def _provider_name(cls, value: object) -> object:
        if value is None:
            return "sendgrid"
        return value.lower() if isinstance(value, str) else value

    @field_validator("mailchimp_transactional_base_url", mode="after")
    @classmethod
    def _mailchimp_base_url(cls, value: str | None) -> str:
        return value or "https://mandrillapp.com/api/1.3"

    @field_validator("database_url", "config", mode="after")
    @classmethod
    def _required_text(cls, value: str | None, info) -> str:
        if value is None:
            defaults = {"database_url": "sqlite:///outreach.db", "config": DEFAULT_CONFIG}
            return defaults[info.field_name]
        return value

    @property
    def greenhouse_v1_base_url(self) -> str:
        """Base URL for legacy Harvest v1 (``GREENHOUSE_BASE_URL`` when set)."""
        return self.greenhouse_base_url or "https://harvest.greenhouse.io/v1"

    @property
    def greenhouse_v3_base_url(self) -> str:
        """Base URL for Harvest v3 (``GREENHOUSE_BASE_URL`` when set)."""
        return self.greenhouse_base_url or "https://harvest.greenhouse.io/v3"

    @property
    def config_path(self) -> Path:
        """The cadence file to use (see :func:`outreach.paths.resolve_config`)."""
        from outreach.paths import resolve_config

        return resolve_config(self.config)

    def integrations(self) -> list[Integration]:
        """Every source and channel with whether it is on, never raising."""
        items: list[Integration] = []

        if self.greenhouse_client_id and self.greenhouse_client_secret and self.greenhouse_user_id:
            items.append(Integration("greenhouse", "source", True, "Harvest v3 (OAuth)"))
        elif self.greenhouse_api_key:
            items.append(Integration("greenhouse", "source", True, "Harvest v1 (legacy API key)"))
        elif self.greenhouse_client_id or self.greenhouse_client_secret:
            items.append(
                Integration(
                    "greenhouse",
                    "source",
                    False,
                    "incomplete: Harvest v3 needs GREENHOUSE_CLIENT_ID, "
                    "GREENHOUSE_CLIENT_SECRET and GREENHOUSE_USER_ID",
                )
            )
        else:
            items.append(
                Integration(
                    "greenhouse",
                    "source",
                    False,
                    "no GREENHOUSE_CLIENT_ID/GREENHOUSE_CLIENT_SECRET/GREENHOUSE_USER_ID "
                    "or GREENHOUSE_API_KEY",
                )
            )

        items.append(
            Integration("lever", "source", True, "API key")
            if self.lever_api_key
            else Integration("lever", "source", False, "no LEVER_API_KEY")
        )
        items.append(
            Integration("hubspot", "source", True, "private app token")
            if self.hubspot_access_token
            else Integration("hubspot", "source", False, "no HUBSPOT_ACCESS_TOKEN")
        )
        items.append(self._bullhorn())
        if self.activecampaign_api_url and self.activecampaign_api_token:
            items.append(Integration("activecampaign", "source", True, "API token"))
        else:
            missing = [
                name
                for name, value in (
                    ("ACTIVECAMPAIGN_API_URL", self.activecampaign_api_url),
                    ("ACTIVECAMPAIGN_API_TOKEN", self.activecampaign_api_token),
                )
                if not value
            ]
            items.append(
                Integration("activecampaign", "source", False, "no " + " and ".join(missing))
            )

        if self.email_provider == "mailchimp":
            items.append(self._mailchimp_integration())
        elif self.sendgrid_api_key and self.sendgrid_from_email:
            items.append(Integration("email", "channel", True, "SendGrid"))
        else:
            missing = [
                name
                for name, value in (
                    ("SENDGRID_API_KEY", self.sendgrid_api_key),
                    ("SENDGRID_FROM_EMAIL", self.sendgrid_from_email),
                )
                if not value
            ]
            items.append(Integration("email", "channel", False, "no " + " and ".join(missing)))

        twilio_sender = self.twilio_from_number or self.twilio_messaging_service_sid
        if self.twilio_account_sid and self.twilio_auth_token and twilio_sender:
            items.append(Integration("sms", "channel", True, "Twilio"))
        else:
            missing = [
                name
                for name, value in (
                    ("TWILIO_ACCOUNT_SID", self.twilio_account_sid),
                    ("TWILIO_AUTH_TOKEN", self.twilio_auth_token),
                    ("TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID", twilio_sender),
                )
                if not value
            ]
            items.append(Integration("sms", "channel", False, "no " + " and ".join(missing)))
        return items

    def _bullhorn(self) -> Integration:
        """Bullhorn is on with a client and a refresh token or a user's name and password."""
        client = self.bullhorn_client_id and self.bullhorn_client_secret
        user = self.bullhorn_username and self.bullhorn_password
        if client and self.bullhorn_refresh_token:
            return Integration("bullhorn", "source", True, "OAuth (refresh token)")
        if client and user:
            return Integration("bullhorn", "source", True, "OAuth (API user login)")
        parts = (
            self.bullhorn_client_id,
            self.bullhorn_client_secret,
            self.bullhorn_refresh_token,
            self.bullhorn_username,
            self.bullhorn_password,
        )
        if any(parts):
            return Integration(
                "bullhorn",
                "source",
                False,
                "incomplete: Bullhorn needs BULLHORN_CLIENT_ID, BULLHORN_CLIENT_SECRET and "
                "BULLHORN_REFRESH_TOKEN (or BULLHORN_USERNAME and BULLHORN_PASSWORD)",
            )
        return Integration(
            "bullhorn",
            "source",
            False,
            "no BULLHORN_CLIENT_ID/BULLHORN_CLIENT_SECRET with BULLHORN_REFRESH_TOKEN "
            "or BULLHORN_USERNAME/BULLHORN_PASSWORD",
        )

    def _mailchimp_integration(self) -> Integration:
        """The email channel when ``OUTREACH_EMAIL_PROVIDER=mailchimp``."""
        missing = [
            name
            for name, value in (
                ("MAILCHIMP_TRANSACTIONAL_API_KEY", self.mailchimp_transactional_api_key),
                ("MAILCHIMP_FROM_EMAIL", self.mailchimp_from_email),
            )
            if not value
        ]
        if missing:
            return Integration(
                "email",
                "channel",
                False,
                "OUTREACH_EMAIL_PROVIDER=mailchimp but no " + " and ".join(missing),
            )
        return Integration("email", "channel", True, "Mailchimp Transactional")
