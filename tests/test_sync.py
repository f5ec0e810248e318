"""Sync: pages committed with their cursors; a killed sync resumes to the same store."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import pytest
import respx
from sqlalchemy import select

from connectors.greenhouse import GreenhouseV1
from outreach.cadence import load_cadence_file
from outreach.clock import FixedClock, ManualTimer
from outreach.paths import default_config_dir
from outreach.store import make_engine, upgrade
from outreach.store.schema import CandidateRecord, ContactPoint, Event, SyncState
from outreach.sync import sync_source

BASE = "https://harvest.greenhouse.io/v1"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


class Killed(BaseException):
    """The process dies mid-sync."""


FakeTime = ManualTimer


def candidate(i: int, stage: str = "Application Review") -> dict:
    return {
        "id": i,
        "first_name": f"P{i}",
        "last_name": "Lee",
        "email_addresses": [{"value": f"p{i}@example.com", "type": "personal"}],
        "phone_numbers": [{"value": "555-555-5555", "type": "mobile"}] if i == 2 else [],
        "applications": [
            {
                "status": "active",
                "prospect": False,
                "current_stage": {"name": stage},
                "jobs": [{"name": "SRE"}],
                "last_activity_at": "2026-11-20T00:00:00Z",
            }
        ],
        "updated_at": "2026-11-20T00:00:00Z",
    }


PAGES = [
    [candidate(1), candidate(2)],
    [candidate(3, "Face to Face"), {"id": 4, "first_name": "No contact"}],
    [candidate(5), candidate(1, "Phone Screen")],  # 1 again, moved on: a stage change
]


def responses(kill_at: int | None = None):
    """The three pages in order; with ``kill_at``, the process dies on that request."""
    out = []
    for index, page in enumerate(PAGES):
        link = (
            {"Link": f'<{BASE}/candidates?page={index + 2}&per_page=500>; rel="next"'}
            if index < len(PAGES) - 1
            else {}
        )
        out.append(httpx.Response(200, json=page, headers=link))
    served = iter(out)

    def respond(request: httpx.Request) -> httpx.Response:
        if kill_at is not None and request.url.params.get("page") == str(kill_at + 1):
            raise Killed()
        return next(served)

    return respond


def resumed_responses():
    """Only the last page, for the run that resumes after the kill."""
    return [httpx.Response(200, json=PAGES[2])]


def connector() -> GreenhouseV1:
    fake = FakeTime()
    return GreenhouseV1("key", clock=FixedClock(NOW), sleep=fake.sleep, monotonic=fake.monotonic)


def snapshot(engine) -> tuple:
    with engine.connect() as conn:
        records = sorted(
            conn.execute(
                select(CandidateRecord.external_id, CandidateRecord.stage, CandidateRecord.email)
            ).all()
        )
        contacts = sorted(conn.execute(select(ContactPoint.kind, ContactPoint.value)).all())
        events = sorted(conn.execute(select(Event.external_id, Event.type)).all())
    return records, contacts, events


def test_a_killed_sync_resumes_to_the_same_store(engine, database_url, tmp_path) -> None:
    config = load_cadence_file(default_config_dir() / "cadences.yaml")
    with respx.mock:
        respx.get(url__startswith=f"{BASE}/candidates").mock(side_effect=responses(kill_at=2))
        with pytest.raises(Killed):
            sync_source(connector(), engine, config, FixedClock(NOW))
    with engine.connect() as conn:
        state = conn.execute(select(SyncState)).one()
    assert json.loads(state.cursor)["next"].endswith("page=3&per_page=500")
    with respx.mock:
        route = respx.get(url__startswith=f"{BASE}/candidates").mock(
            side_effect=resumed_responses()
        )
        report = sync_source(connector(), engine, config, FixedClock(NOW))
    assert route.calls[0].request.url.params["page"] == "3"
    assert report.complete and report.fetched == 2 and report.stage_changes == 2

    other = make_engine(f"sqlite:///{tmp_path / 'straight.db'}")
    upgrade(other)
    with respx.mock:
        respx.get(url__startswith=f"{BASE}/candidates").mock(side_effect=responses())
        straight = sync_source(connector(), other, config, FixedClock(NOW))
    assert straight.complete and straight.fetched == 6
    assert snapshot(engine) == snapshot(other)
    other.dispose()


def test_sync_reports_bad_records_and_dropped_contacts(engine) -> None:
    config = load_cadence_file(default_config_dir() / "cadences.yaml")
    with respx.mock:
        respx.get(url__startswith=f"{BASE}/candidates").mock(side_effect=responses())
        report = sync_source(connector(), engine, config, FixedClock(NOW))
    assert report.new == 4 and report.updated == 1 and report.pages == 3
    assert (
        len(report.bad) == 1
        and "greenhouse 4" in report.bad[0]
        and "no contact point" in report.bad[0]
    )
    assert (
        len(report.warnings) == 1
        and "phone is not a valid number" in report.warnings[0]
        and "555" not in report.warnings[0]
    )
    with engine.connect() as conn:
        state = conn.execute(select(SyncState)).one()
        stage = conn.execute(
            select(CandidateRecord.stage).where(CandidateRecord.external_id == "1")
        ).scalar()
    assert json.loads(state.cursor) == {"since": NOW.isoformat()} and state.last_completed_at == NOW
    assert stage == "screening"


def test_sync_command(cli) -> None:
    off = cli("sync")
    assert off.exit_code == 0
    assert "greenhouse: off" in off.stderr and "lever: off" in off.stderr
    assert cli("sync", "--source", "workday").exit_code == 2
    env = {"GREENHOUSE_API_KEY": "gh-secret-value", "GREENHOUSE_BASE_URL": BASE}
    with respx.mock:
        respx.get(url__startswith=f"{BASE}/candidates").mock(side_effect=responses())
        result = cli("sync", "--source", "greenhouse", "--now", NOW.isoformat(), env=env)
    assert result.exit_code == 1, result.output  # one bad record
    assert "greenhouse 4" in result.stderr and "complete" in result.stdout
    assert "gh-secret-value" not in result.stdout + result.stderr
    listed = json.loads(cli("candidates", "--format", "json").stdout)
    assert len(listed) == 4
    with respx.mock:
        respx.get(url__startswith=f"{BASE}/candidates").mock(
            return_value=httpx.Response(401, json={"message": "bad key"})
        )
        denied = cli("sync", "--source", "greenhouse", env=env)
    assert denied.exit_code == 2 and "GREENHOUSE_API_KEY" in denied.stderr


def test_a_sync_applies_an_unsubscribe_that_came_before_the_person(engine) -> None:
    from outreach.events import InboundEvent, ingest_events

    report = ingest_events(
        engine,
        [("sendgrid", InboundEvent(type="unsubscribe", address="P3@example.com", at=NOW))],
        now=NOW,
    )
    assert report.unmatched == [
        "sendgrid: no person has that email address; kept on the suppression list"
    ]
    config = load_cadence_file(default_config_dir() / "cadences.yaml")
    with respx.mock:
        respx.get(url__startswith=f"{BASE}/candidates").mock(side_effect=responses())
        sync_source(connector(), engine, config, FixedClock(NOW))
    with engine.connect() as conn:
        suppressed = dict(
            conn.execute(
                select(ContactPoint.value, ContactPoint.suppressed).where(
                    ContactPoint.kind == "email"
                )
            ).all()
        )
    assert suppressed == {
        "p1@example.com": False,
        "p2@example.com": False,
        "p3@example.com": True,
        "p5@example.com": False,
    }
