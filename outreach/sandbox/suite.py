"""All the sandbox fakes together: seeded, served on loopback, with the environment to use them.

::

    with Sandbox(people=600) as sandbox:
        env = sandbox.env()          # GREENHOUSE_*, LEVER_*, HUBSPOT_*, BULLHORN_*, SENDGRID_*, …
        ...                          # run `outreach sync` and `outreach run` with env
        sandbox.hubspot.tasks_for(contact_id)
        sandbox.sendgrid.messages, sandbox.twilio.messages

One seeded population is split across the CRMs as :mod:`outreach.sandbox.seed` assigns
it (about one person in twenty-five lives in two CRMs). Each fake gets its own server and
port, as each provider has its own base URL.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from outreach.clock import Clock, SystemClock
from outreach.sandbox.activecampaign import FakeActiveCampaign
from outreach.sandbox.base import RateWindow, SandboxServer
from outreach.sandbox.bullhorn import FakeBullhorn
from outreach.sandbox.greenhouse import FakeGreenhouse
from outreach.sandbox.hubspot import FakeHubSpot
from outreach.sandbox.lever import FakeLever
from outreach.sandbox.mailchimp import SANDBOX_API_KEY, SANDBOX_WEBHOOK_KEY, FakeMailchimp
from outreach.sandbox.seed import RECRUITERS, Population, SeedPerson
from outreach.sandbox.sendgrid import FakeSendGrid
from outreach.sandbox.twilio import SANDBOX_ACCOUNT_SID, SANDBOX_MESSAGING_SERVICE_SID, FakeTwilio

__all__ = ["Sandbox"]


@dataclass(frozen=True)
class _Credentials:
    greenhouse_client_id: str = "sandbox-greenhouse-client"
    greenhouse_client_secret: str = "sandbox-greenhouse-secret"
    lever_api_key: str = "sandbox-lever-key"
    hubspot_token: str = "sandbox-hubspot-token"
    bullhorn_client_id: str = "sandbox-bullhorn-client"
    bullhorn_client_secret: str = "sandbox-bullhorn-secret"
    bullhorn_refresh_token: str = "sandbox-bullhorn-refresh"
    activecampaign_token: str = "sandbox-activecampaign-token"
    sendgrid_api_key: str = "SG.sandbox-key"
    sendgrid_from_email: str = "talent@northwind.example"
    #: where candidates' answers go (plus-addressed per touch), and the Inbound Parse token
    reply_to: str = "replies@reply.northwind.example"
    sendgrid_inbound_token: str = "sandbox-inbound-token"
    twilio_account_sid: str = SANDBOX_ACCOUNT_SID
    twilio_auth_token: str = "sandbox-twilio-token"
    twilio_messaging_service_sid: str = SANDBOX_MESSAGING_SERVICE_SID
    mailchimp_api_key: str = SANDBOX_API_KEY
    mailchimp_webhook_key: str = SANDBOX_WEBHOOK_KEY


class Sandbox:
    """The six fakes over one seeded population (``limits``: the providers' rate limits).

    ``bouncing`` email addresses bounce at SendGrid; ``invalid_phones`` and
    ``opted_out_phones`` answer Twilio's 21211 and 21610.
    """

    credentials = _Credentials()

    def __init__(
        self,
        people: int | Sequence[SeedPerson] = 600,
        *,
        clock: Clock | None = None,
        seed: int = 7,
        limits: bool = False,
        host: str = "127.0.0.1",
        bouncing: Iterable[str] = (),
        invalid_phones: Iterable[str] = (),
        opted_out_phones: Iterable[str] = (),
        activecampaign_people: int | Sequence[SeedPerson] = 0,
    ) -> None:
        self.clock = clock or SystemClock()
        self.people = Population(people, seed=seed) if isinstance(people, int) else people
        self.host = host
        c = self.credentials
        self.greenhouse = FakeGreenhouse(
            self.in_crm("greenhouse"),
            client_id=c.greenhouse_client_id,
            client_secret=c.greenhouse_client_secret,
            clock=self.clock,
            rate=RateWindow(50, 10.0) if limits else None,
        )
        self.lever = FakeLever(
            self.in_crm("lever"),
            api_key=c.lever_api_key,
            clock=self.clock,
            rate=RateWindow(20, 1.0) if limits else None,
        )
        self.hubspot = FakeHubSpot(
            self.in_crm("hubspot"),
            access_token=c.hubspot_token,
            clock=self.clock,
            rate=RateWindow(190, 10.0) if limits else None,
            search_rate=RateWindow(4, 1.0) if limits else None,
        )
        self.bullhorn = FakeBullhorn(
            self.in_crm("bullhorn"),
            client_id=c.bullhorn_client_id,
            client_secret=c.bullhorn_client_secret,
            refresh_token=c.bullhorn_refresh_token,
            clock=self.clock,
            rate=RateWindow(100, 10.0) if limits else None,
        )
        #: holds the Bullhorn refresh token the engine rotates (a private temporary folder)
        self._private: Path | None = None
        # ActiveCampaign keeps its own people (none unless asked for), so the seeded
        # split across the three recruiting CRMs, and the demo's figures, stay as they are.
        #: the people in the ActiveCampaign account (apart from ``people``)
        self.activecampaign_people: Sequence[SeedPerson] = (
            Population(activecampaign_people, seed=seed + 1)
            if isinstance(activecampaign_people, int)
            else activecampaign_people
        )
        self.activecampaign = FakeActiveCampaign(
            self.activecampaign_people,
            api_token=c.activecampaign_token,
            clock=self.clock,
            rate=RateWindow(5, 1.0) if limits else None,
        )
        self.sendgrid = FakeSendGrid(
            api_key=c.sendgrid_api_key,
            clock=self.clock,
            rate=RateWindow(600, 1.0) if limits else None,
            bouncing=bouncing,
            seed=seed,
        )
        self.twilio = FakeTwilio(
            account_sid=c.twilio_account_sid,
            auth_token=c.twilio_auth_token,
            clock=self.clock,
            rate=RateWindow(100, 1.0) if limits else None,
            invalid=invalid_phones,
            opted_out=opted_out_phones,
            messaging_service_sid=c.twilio_messaging_service_sid,
        )
        #: Mailchimp Transactional, for OUTREACH_EMAIL_PROVIDER=mailchimp (the demo keeps
        #: SendGrid); ``bouncing`` addresses are on its rejection list as hard bounces
        self.mailchimp = FakeMailchimp(
            api_key=c.mailchimp_api_key,
            webhook_key=c.mailchimp_webhook_key,
            clock=self.clock,
            rate=RateWindow(600, 1.0) if limits else None,
            rejected={address: "hard-bounce" for address in bouncing},
        )
        self.servers: dict[str, SandboxServer] = {}
        self._greenhouse_positions: dict[int, int] | None = None

    def greenhouse_id(self, person: SeedPerson) -> int:
        """The Greenhouse candidate id of a seeded person who lives in Greenhouse."""
        if self._greenhouse_positions is None:
            self._greenhouse_positions = {
                p.index: k for k, p in enumerate(self.in_crm("greenhouse"))
            }
        return self.greenhouse.candidate_id(self._greenhouse_positions[person.index])

    def move(self, person: SeedPerson, stage: str, at: datetime | None = None) -> None:
        """A recruiter moves ``person`` to canonical ``stage`` in every CRM they live in."""
        for crm in person.crms:
            if crm == "greenhouse":
                self.greenhouse_id(person)  # builds the position map
                assert self._greenhouse_positions is not None
                self.greenhouse.move(self._greenhouse_positions[person.index], stage, at)
            elif crm == "lever":
                self.lever.move(person.index, stage, at)
            elif crm == "hubspot":
                self.hubspot.move(person.index, stage, at)
            elif crm == "bullhorn":
                self.bullhorn.move(person.index, stage, at)

    def in_crm(self, crm: str) -> list[SeedPerson]:
        """The seeded people who live in ``crm``, in creation order."""
        return [p for p in self.people if crm in p.crms]

    @property
    def fakes(self) -> dict[str, object]:
        """The fakes by provider name."""
        return {
            "greenhouse": self.greenhouse,
            "lever": self.lever,
            "hubspot": self.hubspot,
            "bullhorn": self.bullhorn,
            "activecampaign": self.activecampaign,
            "sendgrid": self.sendgrid,
            "twilio": self.twilio,
            "mailchimp": self.mailchimp,
        }

    def start(self) -> Sandbox:
        """Serve every fake on its own loopback port."""
        self._private = Path(tempfile.mkdtemp(prefix="outreach-sandbox-"))
        for name, fake in self.fakes.items():
            self.servers[name] = SandboxServer(fake, host=self.host).start()
        return self

    def stop(self) -> None:
        """Stop every server."""
        for server in self.servers.values():
            server.stop()
        self.servers.clear()
        if self._private is not None:
            shutil.rmtree(self._private, ignore_errors=True)
            self._private = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, name: str) -> str:
        """The base URL of one fake's server."""
        return self.servers[name].url

    def env(self) -> dict[str, str]:
        """Environment variables that point the engine at the running fakes."""
        c = self.credentials
        acting = RECRUITERS[0]
        return {
            "GREENHOUSE_CLIENT_ID": c.greenhouse_client_id,
            "GREENHOUSE_CLIENT_SECRET": c.greenhouse_client_secret,
            "GREENHOUSE_USER_ID": str(acting.greenhouse_id),
            "GREENHOUSE_BASE_URL": self.url("greenhouse") + "/v3",
            "GREENHOUSE_AUTH_URL": self.url("greenhouse") + "/token",
            "LEVER_API_KEY": c.lever_api_key,
            "LEVER_USER_ID": acting.lever_id,
            "LEVER_BASE_URL": self.url("lever") + "/v1",
            "HUBSPOT_ACCESS_TOKEN": c.hubspot_token,
            "HUBSPOT_BASE_URL": self.url("hubspot"),
            "BULLHORN_CLIENT_ID": c.bullhorn_client_id,
            "BULLHORN_CLIENT_SECRET": c.bullhorn_client_secret,
            "BULLHORN_REFRESH_TOKEN": c.bullhorn_refresh_token,
            "BULLHORN_AUTH_URL": self.url("bullhorn") + "/oauth",
            "BULLHORN_REST_URL": self.url("bullhorn") + "/rest-services",
            "BULLHORN_TOKEN_FILE": str((self._private or Path(".")) / "bullhorn-token"),
            "ACTIVECAMPAIGN_API_URL": self.url("activecampaign"),
            "ACTIVECAMPAIGN_API_TOKEN": c.activecampaign_token,
            "SENDGRID_API_KEY": c.sendgrid_api_key,
            "SENDGRID_BASE_URL": self.url("sendgrid"),
            "SENDGRID_FROM_EMAIL": c.sendgrid_from_email,
            "SENDGRID_WEBHOOK_PUBLIC_KEY": self.sendgrid.webhook_public_key,
            "SENDGRID_INBOUND_TOKEN": c.sendgrid_inbound_token,
            "OUTREACH_REPLY_TO": c.reply_to,
            "TWILIO_ACCOUNT_SID": c.twilio_account_sid,
            "TWILIO_AUTH_TOKEN": c.twilio_auth_token,
            "TWILIO_MESSAGING_SERVICE_SID": c.twilio_messaging_service_sid,
            "TWILIO_BASE_URL": self.url("twilio"),
            "MAILCHIMP_TRANSACTIONAL_API_KEY": c.mailchimp_api_key,
            "MAILCHIMP_TRANSACTIONAL_BASE_URL": self.url("mailchimp") + "/api/1.3",
            "MAILCHIMP_FROM_EMAIL": c.sendgrid_from_email,
            "MAILCHIMP_WEBHOOK_KEY": c.mailchimp_webhook_key,
        }
