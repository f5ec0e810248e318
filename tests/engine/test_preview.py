"""``outreach preview``: a stable, documented JSON plan; sends and writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import func, select

from outreach.store import make_engine
from outreach.store.schema import Enrollment, Event, Task, Touch

CSV = (
    "source,external_id,first_name,email,phone,sms_consent,timezone,stage,stage_entered_at,job_title,recruiter_name\n"
    "import,a1,Ann,ann@example.com,,,America/New_York,applied,2026-11-02T10:00:00-05:00,SRE,Jo\n"
    "import,b2,Bo,bo@example.com,+1 206 555 0100,true,,interview,2026-11-02T15:00:00-08:00,Designer,Jo\n"
)
KEYS = [
    "at",
    "local_time",
    "timezone",
    "person_id",
    "name",
    "cadence",
    "step",
    "occurrence",
    "channel",
    "template",
    "variant",
    "status",
    "rule",
]


def counts(database_url: str) -> tuple[int, ...]:
    engine = make_engine(database_url)
    with engine.connect() as conn:
        tables = [
            conn.scalar(select(func.count()).select_from(t)) for t in (Touch, Task, Enrollment)
        ]
        unprocessed = conn.scalar(
            select(func.count()).select_from(Event).where(Event.processed_at.is_(None))
        )
        result = (*tables, unprocessed)
    engine.dispose()
    return result


def test_preview_json_is_stable_and_documented(cli, tmp_path: Path, database_url: str) -> None:
    (tmp_path / "c.csv").write_text(CSV)
    assert cli("import", str(tmp_path / "c.csv"), "--now", "2026-11-02T20:00:00Z").exit_code == 0
    before = counts(database_url)
    args = ("preview", "--format", "json", "--days", "10", "--now", "2026-11-03T07:00:00Z")
    first = cli(*args)
    assert first.exit_code == 0, first.output
    assert cli(*args).stdout == first.stdout
    assert counts(database_url) == before  # nothing written

    plan = json.loads(first.stdout)
    assert all(list(entry) == KEYS for entry in plan)
    summary = [
        (e["local_time"], e["name"], e["cadence"], e["step"], e["channel"], e["status"])
        for e in plan
    ]
    assert summary == [
        (
            "2026-11-03T08:00:00-05:00",
            "Ann",
            "application-follow-up",
            "acknowledge",
            "email",
            "scheduled",
        ),
        (
            "2026-11-03T08:00:00-08:00",
            "Bo",
            "interview-follow-up",
            "thank-you",
            "email",
            "scheduled",
        ),
        (
            "2026-11-10T08:00:00-05:00",
            "Ann",
            "application-follow-up",
            "check-in",
            "email",
            "scheduled",
        ),
        (
            "2026-11-10T08:00:00-08:00",
            "Bo",
            "interview-follow-up",
            "check-in",
            "email",
            "scheduled",
        ),
    ]
    ack = plan[0]
    assert ack["timezone"] == "America/New_York" and ack["at"] == "2026-11-03T13:00:00+00:00"
    assert ack["rule"].startswith("0m after entering applied, within 2d; held by send window")
    assert plan[1]["timezone"] == "America/Los_Angeles"  # from the phone number

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for key in KEYS:
        assert f"`{key}`" in readme, f"preview JSON key {key} is not documented in README.md"


def test_preview_for_one_candidate(cli, tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_text(CSV)
    cli("import", str(tmp_path / "c.csv"), "--now", "2026-11-02T20:00:00Z")
    result = cli(
        "preview",
        "--candidate",
        "import:b2",
        "--format",
        "json",
        "--days",
        "3",
        "--now",
        "2026-11-03T07:00:00Z",
    )
    assert {e["name"] for e in json.loads(result.stdout)} == {"Bo"}
    table = cli("preview", "--candidate", "1", "--days", "3", "--now", "2026-11-03T07:00:00Z")
    assert table.exit_code == 0 and "planned touches over 3 days" in table.stdout
    missing = cli("preview", "--candidate", "import:nobody")
    assert missing.exit_code == 2 and "no such person" in missing.stderr
