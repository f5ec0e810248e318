"""Plain data for testing the tick's stages alone: a cadence file, people, occurrences."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from engine_world import write_config

from outreach.cadence import CadenceConfig
from outreach.engine.batch import Occurrence, StepCounts
from outreach.engine.people import Contact, PersonState

NY = ZoneInfo("America/New_York")
#: a Tuesday, 09:00 in New York
NOW = datetime(2026, 11, 3, 14, 0, tzinfo=UTC)

CONFIG = """\
policy:
  default_timezone: America/New_York
  send_window: {start: "08:00", end: "19:00", days: [mon, tue, wed, thu, fri]}
  holidays: none
  max_touches: {count: 2, per: 7d}
  min_gap: 1d
  channel_order: [email, sms, linkedin]
  rate_limits: {linkedin: 2/d}
cadences:
  - id: a
    trigger: {stage: applied}
    steps:
      - {id: one, after: 0m, channel: email, fallback: sms, template: t}
      - {id: two, after: 2d, from: previous, channel: linkedin, template: t}
      - {id: late, after: 0m, within: 1h, on_late: skip, channel: email, template: t}
      - {id: broken, after: 0m, channel: email, template: broken}
      - {id: ack, after: 0m, channel: email, template: t, transactional: true}
  - id: b
    trigger: {stage: applied}
    steps:
      - {id: one, after: 0m, channel: email, template: t}
"""
TEMPLATES = {
    "t.email.j2": "Subject: Hi {{ candidate.first_name }}\n\nHello {{ candidate.first_name }}",
    "t.sms.j2": "Hi {{ candidate.first_name }}",
    "t.task.j2": "Title: Connect with {{ candidate.first_name }}\n\nSay hi",
    "broken.email.j2": "Subject: Hi\n\nYour {{ candidate.custom.portfolio }} is great",
}


def config(tmp_path: Path, text: str = CONFIG) -> CadenceConfig:
    """The stage tests' cadence file and templates, written to ``tmp_path``."""
    return write_config(tmp_path, text, TEMPLATES)


def person(
    person_id: int = 1,
    *,
    email: bool = True,
    phone: bool = False,
    linkedin: bool = True,
    consent: bool | None = True,
    owner: str | None = "rec-1",
    history: list[datetime] | None = None,
    paused_until: datetime | None = None,
    opted_out: bool = False,
) -> PersonState:
    """A person in New York with one record (id ``person_id * 10``) and contact points."""
    record: dict[str, Any] = {
        "id": person_id * 10,
        "person_id": person_id,
        "source": "import",
        "external_id": f"p{person_id}",
        "first_name": "Ann",
        "last_name": "Lee",
        "stage": "applied",
        "stage_entered_at": NOW - timedelta(days=1),
        "timezone": "America/New_York",
        "job_title": "SRE",
        "job_department": None,
        "recruiter_name": "Jo",
        "recruiter_email": None,
        "recruiter_phone": None,
        "owner_id": owner,
        "preferred_channel": None,
        "tags": [],
        "custom": {},
        "updated_at": NOW - timedelta(days=1),
    }
    contacts = []
    if email:
        contacts.append(
            Contact(
                person_id * 10 + 1,
                "email",
                f"p{person_id}@example.com",
                True,
                None,
                None,
                False,
                None,
            )
        )
    if phone:
        contacts.append(
            Contact(
                person_id * 10 + 2, "phone", "+12125550101", True, "mobile", consent, False, None
            )
        )
    if linkedin:
        contacts.append(
            Contact(
                person_id * 10 + 3,
                "linkedin",
                f"https://www.linkedin.com/in/p{person_id}",
                True,
                None,
                None,
                False,
                None,
            )
        )
    return PersonState(
        id=person_id,
        global_opt_out=opted_out,
        records=[record],
        contacts=contacts,
        history=sorted(history or []),
        zone=NY,
        paused_until=paused_until,
    )


def occurrence(
    cfg: CadenceConfig,
    who: PersonState,
    cadence_id: str = "a",
    step: int = 0,
    *,
    due: datetime = NOW,
    seq: int = 0,
    enrollment_id: int | None = None,
) -> Occurrence:
    """A planned occurrence of ``cadence_id``'s step ``step`` for ``who``, due at ``due``."""
    cadence = cfg.cadence(cadence_id)
    enrollment = {
        "id": enrollment_id if enrollment_id is not None else who.id * 100 + seq,
        "person_id": who.id,
        "record_id": who.records[0]["id"],
        "cadence_id": cadence_id,
        "status": "active",
        "stop_reason": None,
        "stopped_at": None,
        "next_step": step,
        "next_occurrence": 0,
        "step_due_at": due,
        "next_due_at": due,
        "last_touch_at": None,
        "defer_reason": None,
        "triggered_at": due - timedelta(days=1),
    }
    return Occurrence(
        enrollment,
        who,
        who.records[0],
        cadence,
        cadence.steps[step],
        0,
        due,
        due,
        StepCounts(),
        seq=seq,
        not_before=due,
    )
