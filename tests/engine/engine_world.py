"""A small world for engine tests: a store, a cadence config, a fake clock, dry-run channels."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from channels import DryRunChannel
from outreach.cadence import CadenceConfig, load_cadence_file
from outreach.clock import FixedClock
from outreach.engine.tick import Tick, TickSummary, engine_transactions
from outreach.records import normalize_record
from outreach.store.candidates import upsert_candidates
from outreach.store.schema import Task, Touch


class World:
    """A store, a cadence config, a fake clock and dry-run channels, driven by a test."""

    def __init__(self, engine, config: CadenceConfig, start: datetime) -> None:
        self.engine = engine
        self.config = config
        self.clock = FixedClock(start)
        self.email = DryRunChannel("email")
        self.sms = DryRunChannel("sms")
        self.summaries: list[TickSummary] = []

    @property
    def channels(self) -> dict[str, DryRunChannel]:
        return {"email": self.email, "sms": self.sms}

    def add(self, *rows: dict[str, Any], at: datetime | None = None) -> None:
        """Import candidate rows (keys as in an import file) at ``at`` (default: now)."""
        records = [
            normalize_record(
                {"source": "import", **row},
                where=f"row {i}",
                default_region=self.config.policy.default_region,
                canonical_stage=self.config.canonical_stage,
            )
            for i, row in enumerate(rows)
        ]
        with self.engine.begin() as conn:
            upsert_candidates(conn, records, at or self.clock.now())

    def tick(self, at: datetime | None = None, **options: Any) -> TickSummary:
        """Run one tick at ``at`` (default: the clock's time).

        Leases run on ``wall_clock`` when given, else on the World's clock: never the real one.
        """
        if at is not None:
            self.clock.set(at)
        options.setdefault("wall_clock", self.clock)
        tick = Tick(
            self.config,
            self.clock,
            self.channels,
            engine_transactions(self.engine),
            dialect=self.engine.dialect.name,
            **options,
        )
        summary = tick.run()
        self.summaries.append(summary)
        return summary

    def nightly(self, first: datetime, days: int) -> None:
        """A tick every day at ``first``'s time of day, ``days`` times."""
        for day in range(days):
            self.tick(first + timedelta(days=day))

    def touches(self, **filters: Any) -> list[Any]:
        """Ledger rows, oldest delivery first."""
        query = select(Touch).order_by(Touch.planned_at, Touch.id)
        for name, value in filters.items():
            query = query.where(getattr(Touch, name) == value)
        with self.engine.connect() as conn:
            return list(conn.execute(query).all())

    def tasks(self) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(Task).order_by(Task.due_at)).all())

    def sent_messages(self) -> Iterable[Any]:
        return [*self.email.sent, *self.sms.sent]


def write_config(
    tmp_path: Path, text: str, templates: dict[str, str] | None = None
) -> CadenceConfig:
    """A cadence file in ``tmp_path`` with the given templates (name.kind.j2 -> text)."""
    folder = tmp_path / "templates"
    folder.mkdir(exist_ok=True)
    for name, body in (templates or {}).items():
        (folder / name).write_text(body)
    path = tmp_path / "cadences.yaml"
    path.write_text(text)
    return load_cadence_file(path)
