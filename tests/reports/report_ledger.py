"""Hand-built stores for the report tests: people, records, enrollments, touches, events."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import count
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert

from outreach.cadence import CadenceConfig, load_cadence_file
from outreach.store.schema import CandidateRecord, Enrollment, Event, Person, Task, Touch

CREATED = datetime(2026, 10, 1, tzinfo=UTC)


def cadence_config(tmp_path: Path, text: str) -> CadenceConfig:
    """A cadence file with ``text`` loaded without template checks."""
    path = tmp_path / "cadences.yaml"
    path.write_text(text)
    return load_cadence_file(path, check_templates=False)


class ReportLedger:
    """Inserts rows straight into the store, one small transaction each."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._keys = count(1)

    def _insert(self, table: Any, **values: Any) -> int:
        with self.engine.begin() as conn:
            return conn.execute(insert(table).values(**values)).inserted_primary_key[0]

    def person(
        self,
        *,
        timezone: str | None = None,
        phone: str | None = None,
        source: str = "greenhouse",
        owner: str | None = None,
        job: str | None = None,
        tags: list[str] | None = None,
        stage: str = "applied",
    ) -> tuple[int, int]:
        """A person with one CRM record; returns ``(person_id, record_id)``."""
        person = self._insert(Person, created_at=CREATED, updated_at=CREATED)
        record = self._insert(
            CandidateRecord,
            person_id=person,
            source=source,
            external_id=f"x{person}",
            phone=phone,
            stage=stage,
            timezone=timezone,
            job_title=job,
            owner_id=owner,
            tags=tags or [],
            custom={},
            created_at=CREATED,
            updated_at=CREATED,
        )
        return person, record

    def enrollment(
        self, who: tuple[int, int], cadence: str = "apply", stage: str = "applied"
    ) -> tuple[int, int]:
        """An enrollment of ``who`` in ``cadence``; returns ``(enrollment_id, person_id)``."""
        person, record = who
        enrollment = self._insert(
            Enrollment,
            person_id=person,
            record_id=record,
            cadence_id=cadence,
            trigger_stage=stage,
            triggered_at=CREATED,
            status="active",
            created_at=CREATED,
            updated_at=CREATED,
        )
        return enrollment, person

    def touch(
        self,
        enrolled: tuple[int, int],
        step: str,
        at: datetime,
        *,
        cadence: str = "apply",
        status: str = "sent",
        channel: str | None = "email",
        variant: str | None = "a",
    ) -> int:
        """A ledger row placed at ``at`` (delivery time of a sent touch, due time of a
        holdout row, update time of a failed one, planned time of a cancelled one)."""
        enrollment, person = enrolled
        return self._insert(
            Touch,
            idempotency_key=f"k{next(self._keys)}",
            enrollment_id=enrollment,
            person_id=person,
            cadence_id=cadence,
            step_id=step,
            status=status,
            channel=channel,
            variant=variant,
            due_at=at,
            planned_at=at,
            claimed_at=at,
            sent_at=at if status == "sent" else None,
            delivery_at=at if status == "sent" else None,
            updated_at=at,
        )

    def event(
        self,
        type_: str,
        person: int | None,
        at: datetime,
        *,
        touch: int | None = None,
        payload: dict[str, Any] | None = None,
    ) -> int:
        """An event row (processed, as delivery-side events are written)."""
        return self._insert(
            Event,
            type=type_,
            person_id=person,
            touch_id=touch,
            at=at,
            dedupe_key=f"e{next(self._keys)}",
            payload=payload or {},
            processed_at=at,
            created_at=at,
        )

    def stage_change(self, person: int, at: datetime, source: str, target: str) -> int:
        """A stage change event from ``source`` to ``target``."""
        return self.event("stage_change", person, at, payload={"from": source, "to": target})

    def task(
        self,
        person: int,
        created: datetime,
        *,
        due: datetime,
        done: datetime | None = None,
        owner: str | None = "o1",
        kind: str = "linkedin",
    ) -> int:
        """A recruiter task, done at ``done`` when given."""
        return self._insert(
            Task,
            person_id=person,
            owner_id=owner,
            kind=kind,
            title="t",
            due_at=due,
            status="done" if done else "open",
            created_at=created,
            completed_at=done,
        )
