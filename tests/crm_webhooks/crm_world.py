"""A store synced from the three sandbox CRMs: helpers for the CRM webhook tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from crm_hook_posts import GREENHOUSE_SECRET, HUBSPOT_SECRET, LEVER_TOKEN, PUBLIC
from sqlalchemy import Engine, func, select

from connectors.factory import build_connectors
from outreach.cadence import CadenceConfig
from outreach.clock import FixedClock
from outreach.sandbox.seed import SeedPerson
from outreach.sandbox.suite import Sandbox
from outreach.settings import Settings
from outreach.store.schema import CandidateRecord, CrmDelivery, Enrollment, Event
from outreach.sync import sync_source

#: the sandbox's clock: the CRMs' changes and the first sync happen here
SYNCED = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
#: when the webhooks arrive (serve's clock)
NOW = SYNCED + timedelta(hours=1)
PEOPLE = 60


def crm_settings(sandbox: Sandbox, **extra: str | None) -> Settings:
    env = {
        **sandbox.env(),
        "OUTREACH_PUBLIC_URL": PUBLIC,
        "GREENHOUSE_WEBHOOK_SECRET": GREENHOUSE_SECRET,
        "LEVER_WEBHOOK_TOKEN": LEVER_TOKEN,
        "HUBSPOT_CLIENT_SECRET": HUBSPOT_SECRET,
        **extra,
    }
    return Settings(_env_file=None, **{k: v for k, v in env.items() if v is not None})


def sync_all(sandbox: Sandbox, engine: Engine, config: CadenceConfig, at: datetime) -> None:
    connectors, off = build_connectors(
        crm_settings(sandbox), ("greenhouse", "lever", "hubspot"), FixedClock(at)
    )
    assert not off
    for connector in connectors:
        try:
            report = sync_source(connector, engine, config, FixedClock(at))
            assert not report.bad, report.bad
        finally:
            connector.close()


def only_in(sandbox: Sandbox, crm: str, stages: tuple[str, ...]) -> SeedPerson:
    """A seeded person who lives in ``crm`` alone, at one of ``stages``."""
    for person in sandbox.in_crm(crm):
        if person.crms == (crm,) and person.stage in stages and person.email:
            return person
    raise AssertionError(f"no {crm}-only person at {stages}")


def record(engine: Engine, source: str, external_id: str):
    with engine.connect() as conn:
        return conn.execute(
            select(CandidateRecord).where(
                CandidateRecord.source == source, CandidateRecord.external_id == external_id
            )
        ).one_or_none()


def enrollments(engine: Engine, person_id: int) -> list:
    with engine.connect() as conn:
        return conn.execute(
            select(Enrollment).where(Enrollment.person_id == person_id).order_by(Enrollment.id)
        ).all()


def stage_events(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(
            select(func.count()).select_from(Event).where(Event.type == "stage_change")
        ).scalar_one()


def deliveries(engine: Engine) -> list:
    with engine.connect() as conn:
        return conn.execute(select(CrmDelivery).order_by(CrmDelivery.received_at)).all()
