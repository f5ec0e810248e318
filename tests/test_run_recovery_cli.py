"""``outreach run`` says what an interrupted run left and exits 1 when a send nobody can
confirm was handed to a person."""

from __future__ import annotations

from datetime import UTC, datetime

from ledger_rows import sent_touch
from sqlalchemy import select, update

from outreach.records import CandidateIn
from outreach.sandbox.base import SandboxServer
from outreach.sandbox.sendgrid import FakeSendGrid
from outreach.store.candidates import upsert_candidates
from outreach.store.schema import ContactPoint, Task, Touch

AT = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


def test_an_ambiguous_send_sendgrid_cannot_answer_for_is_a_check_task_and_exit_1(
    cli, engine
) -> None:
    with engine.begin() as conn:
        upsert_candidates(
            conn,
            [
                CandidateIn(
                    source="import", external_id="a1", first_name="Ann", email="ann@example.com"
                )
            ],
            AT,
        )
        point = conn.execute(select(ContactPoint.id, ContactPoint.person_id)).one()
    touch = sent_touch(engine, point.person_id, point.id, "k1", at=AT)
    with engine.begin() as conn:
        conn.execute(update(Touch).where(Touch.id == touch).values(status="ambiguous"))
    fake = FakeSendGrid(api_key="SG.key")
    fake.email_activity = False  # the account has no Email Activity add-on
    with SandboxServer(fake) as server:
        env = {
            "SENDGRID_API_KEY": "SG.key",
            "SENDGRID_BASE_URL": server.url,
            "SENDGRID_FROM_EMAIL": "jobs@acme.example",
        }
        result = cli("run", "--now", AT.isoformat(), env=env)
    assert result.exit_code == 1
    assert "1 ambiguous sends could not be reconciled" in result.output
    with engine.connect() as conn:
        (task,) = conn.execute(select(Task.kind, Task.touch_id)).all()
    assert task == ("check", touch)


def test_a_dry_run_asks_no_provider_and_hands_nothing_over(cli, engine) -> None:
    with engine.begin() as conn:
        upsert_candidates(
            conn,
            [
                CandidateIn(
                    source="import", external_id="a1", first_name="Ann", email="ann@example.com"
                )
            ],
            AT,
        )
        point = conn.execute(select(ContactPoint.id, ContactPoint.person_id)).one()
    touch = sent_touch(engine, point.person_id, point.id, "k1", at=AT)
    with engine.begin() as conn:
        conn.execute(update(Touch).where(Touch.id == touch).values(status="ambiguous"))
    result = cli("run", "--dry-run", "--now", AT.isoformat())
    assert "could not be reconciled" not in result.output
    assert "1 ambiguous to ask again next run" in result.output
    with engine.connect() as conn:
        assert conn.execute(select(Task.id)).all() == []
        assert conn.execute(select(Touch.status)).scalars().all() == ["ambiguous"]
