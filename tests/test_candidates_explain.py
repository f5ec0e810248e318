"""``outreach candidates --explain ID``: which records make a person, and why."""

from __future__ import annotations

import json
from pathlib import Path

HEADER = "source,external_id,first_name,last_name,email,phone,sms_consent,stage\n"
ROWS = [
    "greenhouse,g1,Ann,Lee,ann@example.com,+1 212 555 0199,true,Application Review",
    "lever,l1,ann,LEE,ann.lee@work.example.com,+1 212 555 0199,,New applicant",
    "hubspot,h1,,,ANN@example.com,,,",
    "import,x1,Bo,Kim,bo@example.com,+1 212 555 0199,,",
]


def _import(cli, tmp_path: Path) -> dict[str, int]:
    path = tmp_path / "people.csv"
    path.write_text(HEADER + "\n".join(ROWS) + "\n")
    assert cli("import", str(path), "--now", "2026-11-25T15:00:00Z").exit_code == 0
    people = json.loads(cli("candidates", "--format", "json").stdout)
    return {
        f"{r['source']}:{r['external_id']}": person["id"]
        for person in people
        for r in person["records"]
    }


def test_explain_names_the_records_and_why_they_are_one(cli, tmp_path: Path) -> None:
    who = _import(cli, tmp_path)
    ann, bo = who["greenhouse:g1"], who["import:x1"]
    assert who["lever:l1"] == who["hubspot:h1"] == ann != bo
    found = json.loads(cli("candidates", "--explain", str(ann), "--format", "json").stdout)
    assert [f"{r['source']}:{r['external_id']}" for r in found["records"]] == [
        "greenhouse:g1",
        "lever:l1",
        "hubspot:h1",
    ]
    assert found["links"] == [
        {"records": ["greenhouse:g1", "lever:l1"], "why": ["same phone, names agree"]},
        {"records": ["greenhouse:g1", "hubspot:h1"], "why": ["same email"]},
    ]
    (phone,) = [c for c in found["contacts"] if c["kind"] == "phone"]
    assert phone["shared_with"] == [bo] and phone["sms_consent"] is True
    assert phone["consent_source"] == "greenhouse"


def test_explain_as_a_table_and_for_an_unknown_id(cli, tmp_path: Path) -> None:
    who = _import(cli, tmp_path)
    result = cli("candidates", "--explain", str(who["import:x1"]))
    assert result.exit_code == 0
    assert f"person {who['import:x1']}" in result.stdout
    assert f"shared with person {who['greenhouse:g1']}" in result.stdout
    by_record = cli("candidates", "--explain", "greenhouse:g1", "--format", "json")
    assert json.loads(by_record.stdout)["id"] == who["greenhouse:g1"]
    missing = cli("candidates", "--explain", "999")
    assert missing.exit_code == 2 and "--explain '999': no such person" in missing.stderr
    assert cli("candidates", "--explain", "lever:nobody").exit_code == 2
