"""Build the live channels the settings turn on.

One place decides how email (SendGrid) and SMS (Twilio) are built from the environment
and the cadence policy, so ``outreach run``, the demo and the tests agree. Channels that
are off come back with the reason, for the caller to say once. LinkedIn and call steps
are not channels here: they become tasks in the engine and, through the connectors, in
the recruiter's CRM.
"""

from __future__ import annotations

from typing import Any

from channels.base import Channel
from outreach.cadence import CadenceConfig
from outreach.clock import Clock
from outreach.settings import Settings

__all__ = ["build_channels"]


def build_channels(
    settings: Settings, config: CadenceConfig, clock: Clock, **options: Any
) -> tuple[dict[str, Channel], dict[str, str]]:
    """``({name: channel}, {name: why off})`` for email and SMS.

    ``options`` go to every channel built (tests pass ``sleep``, ``timeout``).
    """
    built: dict[str, Channel] = {}
    off: dict[str, str] = {}
    for item in settings.integrations():
        if item.kind != "channel":
            continue
        if not item.on:
            off[item.name] = item.detail
        elif item.name == "email" and settings.email_provider == "mailchimp":
            from channels.mailchimp import MailchimpEmail

            assert settings.mailchimp_transactional_api_key is not None
            assert settings.mailchimp_from_email
            built["email"] = MailchimpEmail(
                settings.mailchimp_transactional_api_key.get_secret_value(),
                settings.mailchimp_from_email,
                base_url=settings.mailchimp_transactional_base_url,
                company_name=config.company.name,
                clock=clock,
                **options,
            )
        elif item.name == "email":
            from channels.email import SendGridEmail

            assert settings.sendgrid_api_key is not None and settings.sendgrid_from_email
            built["email"] = SendGridEmail(
                settings.sendgrid_api_key.get_secret_value(),
                settings.sendgrid_from_email,
                base_url=settings.sendgrid_base_url,
                company_name=config.company.name,
                asm_group_id=config.policy.sendgrid_unsubscribe_group,
                clock=clock,
                **options,
            )
        elif item.name == "sms":
            from channels.sms import TwilioSMS

            assert settings.twilio_account_sid and settings.twilio_auth_token is not None
            built["sms"] = TwilioSMS(
                settings.twilio_account_sid,
                settings.twilio_auth_token.get_secret_value(),
                from_number=settings.twilio_from_number,
                messaging_service_sid=settings.twilio_messaging_service_sid,
                base_url=settings.twilio_base_url,
                public_url=settings.public_url,
                max_segments=config.policy.sms_max_segments,
                clock=clock,
                **options,
            )
    return built, off
