"""``outreach report``: formats, the JSON Schema, and exit 2 with a clear message on bad input."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import jsonschema
import pytest
from test_kpis import CADENCES, NOW, SINCE, UNTIL, store  # noqa: F401  (fixture)

from outreach.reports import build_report
from outreach.reports.render_table import print_report

SCHEMA_PATH = (
    Path(__file__).resolve().parents[2] / "outreach" / "reports" / "schema" / "report.schema.json"
)
WINDOW = ["--since", SINCE.isoformat(), "--until", UNTIL.isoformat(), "--now", NOW.isoformat()]


@pytest.fixture
def schema() -> dict:
    document = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(document)
    return document


@pytest.fixture
def config_env(tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "cadences.yaml"
    path.write_text(CADENCES)
    return {"OUTREACH_CONFIG": str(path)}


def test_json_output_follows_the_schema(store, cli, config_env, schema):  # noqa: F811
    result = cli("report", *WINDOW, "--format", "json", "--by", "variant,tag", env=config_env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    jsonschema.validate(report, schema, cls=jsonschema.Draft202012Validator)
    assert report["window"] == {"since": SINCE.isoformat(), "until": UNTIL.isoformat()}
    assert report["totals"]["people_contacted"] == 3
    assert report["by"] == ["variant", "tag"]
    assert len(report["groups"]) == 4  # a x python, a x remote, b x (none), b x python


def test_schema_rejects_a_broken_report(store, config_env, schema, tmp_path):  # noqa: F811
    from report_ledger import cadence_config

    report = build_report(
        store, cadence_config(tmp_path, CADENCES), since=SINCE, until=UNTIL, now=NOW
    )
    jsonschema.validate(report, schema, cls=jsonschema.Draft202012Validator)
    broken = json.loads(json.dumps(report))
    broken["totals"]["response_rate"] = 1.5
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema, cls=jsonschema.Draft202012Validator)
    del broken["totals"]["response_rate"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema, cls=jsonschema.Draft202012Validator)


def test_csv_has_totals_then_groups(store, cli, config_env):  # noqa: F811
    result = cli("report", *WINDOW, "--format", "csv", "--by", "owner", env=config_env)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["group"], r["owner"], r["touches_sent"]) for r in rows] == [
        ("all", "", "4"),
        ("owner=(none)", "(none)", "1"),
        ("owner=o1", "o1", "2"),
        ("owner=o2", "o2", "1"),
    ]
    assert rows[0]["time_to_response_median_hours"] == "24.0"
    assert rows[1]["small"] == "True"


def test_csv_cells_cannot_be_formulas(engine, cli, config_env):
    from report_ledger import ReportLedger

    ledger = ReportLedger(engine)
    who = ledger.person(tags=["=HYPERLINK(1)"])
    ledger.touch(ledger.enrollment(who), "s1", SINCE.replace(day=3))
    result = cli("report", *WINDOW, "--format", "csv", "--by", "tag", env=config_env)
    assert "'=HYPERLINK(1)" in result.stdout


def test_table_marks_small_cells(store, config_env, tmp_path):  # noqa: F811
    from report_ledger import cadence_config
    from rich.console import Console

    report = build_report(
        store,
        cadence_config(tmp_path, CADENCES),
        since=SINCE,
        until=UNTIL,
        now=NOW,
        by="variant",
    )
    console = Console(file=io.StringIO(), width=160)
    print_report(report, console)
    text = console.file.getvalue()
    for expected in ("Summary", "SLA per step", "A/B tests", "Groups: variant", "33.3%"):
        assert expected in text
    assert "† fewer than 30 people" in text
    assert "collecting (min 2 per arm)" in text


def test_table_is_the_default_and_out_writes_a_file(store, cli, config_env, tmp_path):  # noqa: F811
    result = cli("report", *WINDOW, env=config_env)
    assert result.exit_code == 0, result.output
    assert "people contacted" in result.stdout
    target = tmp_path / "r.json"
    result = cli("report", *WINDOW, "--format", "json", "--out", str(target), env=config_env)
    assert result.exit_code == 0
    assert json.loads(target.read_text())["totals"]["touches_sent"] == 4
    assert "wrote the json report to" in result.stderr


def test_html_without_out_writes_report_html(store, cli, config_env, tmp_path):  # noqa: F811
    result = cli("report", *WINDOW, "--format", "html", env=config_env)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert "report.html" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--by", "cadence,weekday"], "unknown key 'weekday'; valid keys are cadence, step"),
        (["--format", "xml"], "--format 'xml' is not supported"),
        (["--since", "2026-11-20T00:00:00Z", "--until", "2026-11-10T00:00:00Z"], "must be before"),
        (["--since", "2026-11-20T00:00:00Z", "--until", "2026-11-20T00:00:00Z"], "must be before"),
        (["--since", "2026-11-01T00:00:00"], "has no UTC offset"),
        (["--until", "yesterday"], "is not an ISO-8601 time"),
        (["--out", "no/such/folder/r.csv", "--format", "csv"], "cannot write there"),
        (["--out", "."], "is a folder"),
    ],
)
def test_bad_input_exits_2(engine, cli, config_env, args, message):
    result = cli("report", "--now", NOW.isoformat(), *args, env=config_env)
    assert result.exit_code == 2
    assert message in " ".join(result.stderr.split())


def test_bad_cadence_file_exits_2(engine, cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("cadences: [{id: x}]\n")
    result = cli("report", "--now", NOW.isoformat(), env={"OUTREACH_CONFIG": str(bad)})
    assert result.exit_code == 2
    assert "bad.yaml" in result.stderr
