"""The real ``outreach serve`` takes signed stage changes from all three CRMs; the next
``outreach run`` (no sync in between) acts on them; a later sync does nothing twice."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from crm_hook_posts import (
    GREENHOUSE_SECRET,
    HUBSPOT_SECRET,
    LEVER_TOKEN,
    PUBLIC,
    greenhouse_application_body,
    greenhouse_headers,
    hubspot_event,
    hubspot_headers,
    lever_body,
)
from crm_world import SYNCED, enrollments, only_in, record, stage_events
from sqlalchemy import select
from test_entrypoint import outreach_script

from outreach.store import make_engine
from outreach.store.schema import Touch

_PREFIXES = ("OUTREACH_", "GREENHOUSE_", "LEVER_", "HUBSPOT_", "SENDGRID_", "TWILIO_")
_KEEP = ("OUTREACH_TEST_DATABASE", "OUTREACH_TEST_POSTGRES_URL")


@pytest.fixture
def served(sandbox, database_url, tmp_path, cli) -> Iterator[str]:
    """``outreach serve --port 0`` in a subprocess, over a store synced from the sandbox."""
    synced = cli("sync", "--now", SYNCED.isoformat(), env=sandbox.env())
    assert synced.exit_code == 0, synced.output
    env = {k: v for k, v in os.environ.items() if not k.startswith(_PREFIXES) or k in _KEEP}
    env.update(sandbox.env())
    env.update(
        OUTREACH_DATABASE_URL=database_url,
        OUTREACH_PUBLIC_URL=PUBLIC,
        GREENHOUSE_WEBHOOK_SECRET=GREENHOUSE_SECRET,
        LEVER_WEBHOOK_TOKEN=LEVER_TOKEN,
        HUBSPOT_CLIENT_SECRET=HUBSPOT_SECRET,
    )
    proc = subprocess.Popen(
        [outreach_script(), "serve", "--port", "0"],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        lines: list[str] = []
        while True:
            line = proc.stderr.readline()
            assert line, "".join(lines)
            lines.append(line)
            found = re.search(r"listening on (http://\S+?) \((.*)\)", line)
            if found:
                break
        for path in ("/webhooks/greenhouse", "/webhooks/lever", "/webhooks/hubspot"):
            assert path in found.group(2)
        assert not any("WEBHOOK_SECRET" in x or "CLIENT_SECRET" in x for x in lines)
        yield found.group(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=15)
    assert code == 0


def touches(engine, person_id: int) -> list[tuple[str, str, str]]:
    with engine.connect() as conn:
        return [
            tuple(row)
            for row in conn.execute(
                select(Touch.cadence_id, Touch.step_id, Touch.status)
                .where(Touch.person_id == person_id)
                .order_by(Touch.id)
            )
        ]


def entries(engine, person_id: int) -> set[tuple]:
    """Each enrollment as one entry into a stage (a sync must add none, stop none)."""
    return {
        (e.id, e.cadence_id, e.triggered_at, e.status == "stopped" and e.stop_reason)
        for e in enrollments(engine, person_id)
    }


def test_stage_changes_pushed_to_serve_act_in_the_next_run_without_a_sync(
    served, sandbox, cli, database_url
) -> None:
    base = served
    env = sandbox.env()
    at = SYNCED + timedelta(hours=1)  # the interviews
    gh = only_in(sandbox, "greenhouse", ("applied", "screening"))
    lv = only_in(sandbox, "lever", ("applied", "screening"))
    hs = only_in(sandbox, "hubspot", ("prospect", "applied"))
    gh_id = str(sandbox.greenhouse_id(gh))
    lv_id = sandbox.lever.opportunity_id(lv.index)
    hs_id = sandbox.hubspot.contact_id(hs.index)
    position = sandbox.greenhouse.position(gh_id)
    sandbox.greenhouse.move(position, "interview", at)
    sandbox.lever.move(lv.index, "interview", at)
    sandbox.hubspot.move(hs.index, "screening", at)

    # Greenhouse, Lever and HubSpot post, signed, to the running server.
    gh_body = json.dumps(greenhouse_application_body(sandbox.greenhouse, position)).encode()
    answer = httpx.post(
        base + "/webhooks/greenhouse",
        content=gh_body,
        headers=greenhouse_headers(gh_body, "gh-evt-1"),
        timeout=10,
    )
    assert answer.status_code == 200 and answer.json()["applied"] == 1, answer.text
    lv_raw = lever_body("candidateStageChange", lv_id, at, event_id="lv-evt-1")
    answer = httpx.post(
        base + "/webhooks/lever",
        content=lv_raw,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert answer.status_code == 200 and answer.json()["applied"] == 1, answer.text
    hs_raw = json.dumps([hubspot_event(501, hs_id, "opportunity", at)]).encode()
    answer = httpx.post(
        base + "/webhooks/hubspot",
        content=hs_raw,
        headers=hubspot_headers(hs_raw, datetime.now(UTC)),
        timeout=10,
    )
    assert answer.status_code == 200 and answer.json()["applied"] == 1, answer.text
    # A forged one through the real server: refused.
    forged = httpx.post(
        base + "/webhooks/greenhouse",
        content=gh_body,
        headers=greenhouse_headers(gh_body, "gh-evt-x", secret="forged"),
        timeout=10,
    )
    assert forged.status_code == 401

    engine = make_engine(database_url)
    try:
        people = {
            crm: record(engine, crm, external).person_id
            for crm, external in (("greenhouse", gh_id), ("lever", lv_id), ("hubspot", hs_id))
        }
        # The next run, no sync in between: the thank-you goes out within its 24 hours.
        run = cli("run", "--now", (at + timedelta(hours=3)).isoformat(), env=env)
        assert run.exit_code == 0, run.output
        for crm in ("greenhouse", "lever"):
            assert ("interview-follow-up", "thank-you", "sent") in touches(engine, people[crm])
        assert ("interview-scheduling", "details", "sent") in touches(engine, people["hubspot"])

        # A rejection posted to the server stops the interview cadence: nothing more of it.
        sandbox.greenhouse.move(position, "rejected", at + timedelta(hours=4))
        rejection = json.dumps(
            greenhouse_application_body(sandbox.greenhouse, position, "reject_candidate")
        ).encode()
        answer = httpx.post(
            base + "/webhooks/greenhouse",
            content=rejection,
            headers=greenhouse_headers(rejection, "gh-evt-2"),
            timeout=10,
        )
        assert answer.status_code == 200 and answer.json()["applied"] == 1, answer.text
        later = cli("run", "--now", (at + timedelta(days=8)).isoformat(), env=env)
        assert later.exit_code == 0, later.output
        interview = [
            t for t in touches(engine, people["greenhouse"]) if t[0] == "interview-follow-up"
        ]
        assert interview == [("interview-follow-up", "thank-you", "sent")]
        (stopped,) = [
            e
            for e in enrollments(engine, people["greenhouse"])
            if e.cadence_id == "interview-follow-up"
        ]
        assert stopped.status == "stopped"

        # The nightly sync then reads the same changes from the CRMs: nothing twice.
        events = stage_events(engine)
        enrolled = {crm: entries(engine, pid) for crm, pid in people.items()}
        synced = cli("sync", "--now", (at + timedelta(days=8, hours=1)).isoformat(), env=env)
        assert synced.exit_code == 0, synced.output
        again = cli("run", "--now", (at + timedelta(days=8, hours=1)).isoformat(), env=env)
        assert again.exit_code == 0, again.output
        assert stage_events(engine) == events
        assert {crm: entries(engine, pid) for crm, pid in people.items()} == enrolled
    finally:
        engine.dispose()
