"""Entry points the CLI uses: one live or dry-run tick, and the preview simulation."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from sqlalchemy import Engine

from channels.base import Channel
from channels.dryrun import DryRunChannel
from outreach.cadence import CadenceConfig
from outreach.clock import Clock, FixedClock
from outreach.engine.liveness import liveness_for
from outreach.engine.ratelimit import LimiterFactory
from outreach.engine.tick import (
    PlannedTouch,
    Tick,
    TickSummary,
    engine_transactions,
    nested_transactions,
)

__all__ = ["dry_run_channels", "preview", "run_tick"]


def dry_run_channels() -> dict[str, Channel]:
    """A dry-run stand-in for every message channel."""
    return {"email": DryRunChannel("email"), "sms": DryRunChannel("sms")}


def run_tick(
    engine: Engine,
    config: CadenceConfig,
    clock: Clock,
    channels: Mapping[str, Channel],
    *,
    dry_run: bool = False,
    horizon: timedelta = timedelta(hours=24),
    wall_clock: Clock | None = None,
    reply_to: str | None = None,
    mail_domain: str | None = None,
    public_url: str | None = None,
    limiters: LimiterFactory | None = None,
    batch_size: int = 2000,
) -> TickSummary:
    """Run one tick. A dry run uses stand-in channels and rolls every write back.

    ``public_url`` (OUTREACH_PUBLIC_URL) is where the touches' rating links point.
    ``limiters`` makes the channels' rate limiters: by default each process paces itself;
    workers sharing a database pass :func:`outreach.engine.shared_limits.limiters_for`'s
    factory, so the providers' limits hold for all of them together. A dry run sends
    nothing and takes no shared slots. ``batch_size`` is how many due enrollments one
    claim takes: workers sharing a paced channel share the work batch by batch.
    """
    dialect = engine.dialect.name
    if not dry_run:
        tick = Tick(
            config,
            clock,
            channels,
            engine_transactions(engine),
            horizon=horizon,
            wall_clock=wall_clock,
            dialect=dialect,
            reply_to=reply_to,
            mail_domain=mail_domain,
            liveness=liveness_for(engine),
            public_url=public_url,
            limiters=limiters,
            batch_size=batch_size,
        )
        return tick.run()
    with engine.connect() as conn:
        if dialect == "sqlite":
            conn.info["sqlite_begin"] = "BEGIN IMMEDIATE"
        outer = conn.begin()
        try:
            tick = Tick(
                config,
                clock,
                dry_run_channels(),
                nested_transactions(conn),
                horizon=horizon,
                wall_clock=wall_clock,
                dialect=dialect,
                public_url=public_url,
            )
            return tick.run()
        finally:
            outer.rollback()


def preview(
    engine: Engine,
    config: CadenceConfig,
    clock: Clock,
    *,
    days: int,
    person_ids: set[int] | None = None,
    public_url: str | None = None,
) -> list[PlannedTouch]:
    """Simulate ``days`` nightly ticks from ``clock.now()``; write nothing, send nothing.

    Every decision of the simulated ticks is returned (scheduled touches, tasks, skips),
    sorted by time. All channels are assumed on. Without ``public_url`` a step whose
    template needs rating links shows as skipped, as a run would skip it.
    """
    start = clock.now()
    journal: list[PlannedTouch] = []
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.info["sqlite_begin"] = "BEGIN IMMEDIATE"
        outer = conn.begin()
        try:
            simulated = FixedClock(start)
            for day in range(days):
                simulated.set(start + timedelta(days=day))
                tick = Tick(
                    config,
                    simulated,
                    dry_run_channels(),
                    nested_transactions(conn),
                    horizon=timedelta(days=1),
                    person_ids=person_ids,
                    journal=True,
                    dialect=engine.dialect.name,
                    public_url=public_url,
                )
                journal.extend(tick.run().journal)
        finally:
            outer.rollback()
    end = start + timedelta(days=days)
    return sorted(
        (entry for entry in journal if entry.at < end),
        key=lambda e: (e.at, e.person_id, e.cadence_id, e.step_id, e.occurrence),
    )
