"""``outreach import``: good rows load, bad rows are named by line, re-import updates."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import func, select
from tests_data import HEADER, ROWS

from outreach.cadence import load_cadence_file
from outreach.importer import import_file
from outreach.paths import default_config_dir
from outreach.store.schema import CandidateRecord, ContactPoint, Event, Person


def write_csv(tmp_path: Path, rows: list[str], name: str = "people.csv") -> Path:
    path = tmp_path / name
    path.write_text(HEADER + "\n".join(rows) + "\n")
    return path


def test_ten_rows_two_bad_loads_eight_and_names_the_lines(cli, tmp_path: Path) -> None:
    path = write_csv(tmp_path, ROWS)
    result = cli("import", str(path), "--now", "2026-11-25T15:00:00Z")
    assert result.exit_code == 1, result.output
    assert "10 rows, 8 loaded" in result.stdout
    assert "2 bad" in result.stdout
    assert "line 4 (import c3): email is not valid" in result.stderr
    assert "line 7 (import c6): timezone 'Mars/Base' is not an IANA zone" in result.stderr

    listed = cli("candidates", "--format", "json")
    assert listed.exit_code == 0
    people = json.loads(listed.stdout)
    assert len(people) == 8
    ann = next(p for p in people if p["first_name"] == "Ann")
    assert ann["stage"] == "applied"
    assert ann["stage_entered_at"] == "2026-11-20T14:00:00+00:00"
    phone = next(c for c in ann["contacts"] if c["kind"] == "phone")
    assert phone["value"] == "+12125550101" and phone["sms_consent"] is True
    dan = next(p for p in people if p["first_name"] == "Dan")
    assert {c["kind"] for c in dan["contacts"]} == {"email", "phone", "linkedin"}


def test_reimport_updates_and_records_a_stage_change(cli, tmp_path: Path, engine) -> None:
    first = write_csv(tmp_path, ROWS[:2], "a.csv")
    assert cli("import", str(first), "--now", "2026-11-25T15:00:00Z").exit_code == 0
    moved = [ROWS[0].replace(",applied,2026-11-20T09:00:00-05:00,", ",interview,,"), ROWS[1]]
    second = write_csv(tmp_path, moved, "b.csv")
    result = cli("import", str(second), "--now", "2026-11-26T15:00:00Z")
    assert result.exit_code == 0, result.output
    assert "0 new, 2 updated" in result.stdout and "1 stage changes" in result.stdout

    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(CandidateRecord)) == 2
        record = conn.execute(
            select(CandidateRecord).where(CandidateRecord.external_id == "c1")
        ).one()
        assert record.stage == "interview"
        assert record.stage_entered_at.isoformat() == "2026-11-26T15:00:00+00:00"
        changes = (
            conn.execute(
                select(Event.payload)
                .where(Event.type == "stage_change", Event.record_id == record.id)
                .order_by(Event.id)
            )
            .scalars()
            .all()
        )
        assert [(c["from"], c["to"]) for c in changes] == [
            (None, "applied"),
            ("applied", "interview"),
        ]


def test_jsonl_rows_and_bad_json_lines(cli, tmp_path: Path) -> None:
    path = tmp_path / "people.jsonl"
    path.write_text(
        json.dumps(
            {
                "source": "import",
                "external_id": "j1",
                "email": "j1@example.com",
                "stage": "applied",
                "tags": ["a", "b"],
                "sms_consent": True,
                "portfolio": "https://example.com/j1",
            }
        )
        + "\n"
        "\n"
        "{not json\n"
        "[1, 2]\n" + json.dumps({"source": "import", "external_id": "j2", "phone": "12"}) + "\n"
    )
    result = cli("import", str(path))
    assert result.exit_code == 1
    assert "line 3: not valid JSON" in result.stderr
    assert "line 4: expected a JSON object, got list" in result.stderr
    assert "line 5 (import j2): phone is not a valid number" in result.stderr
    assert "4 rows, 1 loaded" in result.stdout


def test_csv_structure_problems(cli, tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text(HEADER + ROWS[0] + ",extra\n" + '"import","q"\n' + ROWS[1] + "\n")
    result = cli("import", str(path))
    assert result.exit_code == 1
    assert "line 2: has 18 fields but the header has 17" in result.stderr
    assert "line 3: has 2 fields" in result.stderr
    assert "3 rows, 1 loaded" in result.stdout


def test_whole_file_problems_exit_2(cli, tmp_path: Path) -> None:
    no_id = tmp_path / "noid.csv"
    no_id.write_text("source,email\nimport,a@example.com\n")
    result = cli("import", str(no_id))
    assert result.exit_code == 2 and "no external_id column" in result.stderr
    assert cli("import", str(tmp_path / "missing.csv")).exit_code == 2
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert cli("import", str(empty)).exit_code == 2
    weird = tmp_path / "data.txt"
    weird.write_text("hello world\n")
    result = cli("import", str(weird))
    assert result.exit_code == 2 and "cannot tell the format" in result.stderr


def test_same_person_in_two_sources_is_one_person(engine, clock, tmp_path: Path) -> None:
    config = load_cadence_file(default_config_dir() / "cadences.yaml")
    path = tmp_path / "two.csv"
    path.write_text(
        HEADER
        + "greenhouse,g1,Ann,Lee,ANN@Example.com,,,,Application Review,,,,,,,,\n"
        + "lever,l1,Ann,Lee,,212-555-0101,,,Phone screen,,,,,,,,\n"
        + "hubspot,h1,Ann,Lee,ann@example.com,(212) 555-0101,,,lead,,,,,,,,\n"
    )
    report = import_file(path, engine, config, clock, batch_size=1)
    assert not report.errors
    assert report.stats.merged == 1  # g1 and l1 were two people until h1 linked them
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Person)) == 1
        person_ids = set(conn.execute(select(CandidateRecord.person_id)).scalars())
        assert len(person_ids) == 1
        stages = dict(conn.execute(select(CandidateRecord.source, CandidateRecord.stage)).all())
        assert stages == {"greenhouse": "applied", "lever": "screening", "hubspot": "prospect"}
        merges = conn.execute(select(Event.payload).where(Event.type == "merge")).scalars().all()
        assert len(merges) == 1


def test_import_never_clears_suppression(engine, clock, tmp_path: Path) -> None:
    config = load_cadence_file(default_config_dir() / "cadences.yaml")
    path = write_csv(tmp_path, ROWS[:1])
    import_file(path, engine, config, clock)
    with engine.begin() as conn:
        conn.execute(
            ContactPoint.__table__.update()
            .where(ContactPoint.kind == "email")
            .values(suppressed=True, suppressed_reason="bounce")
        )
    import_file(path, engine, config, clock)
    with engine.connect() as conn:
        row = conn.execute(select(ContactPoint).where(ContactPoint.kind == "email")).one()
        assert row.suppressed and row.suppressed_reason == "bounce"


def test_unmapped_stage_is_kept_and_warned_once(cli, tmp_path: Path) -> None:
    rows = [r.replace(",applied,", ",Sourcing Call,") for r in ROWS if ",applied," in r]
    path = write_csv(tmp_path, [r for r in rows if "cat@" not in r and "Mars" not in r])
    result = cli("import", str(path))
    assert result.exit_code == 0, result.output
    assert result.stderr.count("stage 'Sourcing Call' of source 'import' is not mapped") == 1
    people = json.loads(cli("candidates", "--format", "json").stdout)
    assert people and all(p["stage"] is None for p in people)


def test_candidates_filters_and_formats(cli, tmp_path: Path) -> None:
    path = write_csv(tmp_path, ROWS)
    cli("import", str(path))
    result = cli("candidates", "--stage", "applied", "--format", "csv")
    assert result.exit_code == 0
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("person_id,first_name")
    assert sorted(line.split(",")[1] for line in lines[1:]) == ["Ann", "Jon"]
    table = cli("candidates")
    assert table.exit_code == 0 and "8 people" in table.stdout
    assert cli("candidates", "--stage", "nowhere").exit_code == 2
    assert cli("candidates", "--format", "xml").exit_code == 2
    assert (
        json.loads(
            cli("candidates", "--stage", "hired", "--format", "json", "--limit", "5").stdout
        )[0]["first_name"]
        == "Hal"
    )


def test_too_long_values_are_row_errors_not_batch_failures(cli, tmp_path: Path) -> None:
    long_name = "x" * 250
    path = write_csv(tmp_path, [ROWS[0].replace("Ann", long_name, 1), ROWS[1]])
    result = cli("import", str(path))
    assert result.exit_code == 1
    assert "first_name is 250 characters long" in result.stderr
    assert "2 rows, 1 loaded" in result.stdout


def test_row_errors_never_echo_addresses_or_phone_numbers(cli, tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        [
            "import,x1,Al,Bo,al@@example.com,,,,applied,,SRE,Jo,jo@example.com,rec-1,,,",
            "import,x2,Al,Bo,,+1 212 55,,,applied,,SRE,Jo,jo@example.com,rec-1,,,",
        ],
    )
    result = cli("import", str(path))
    assert result.exit_code == 1
    assert "al@@example.com" not in result.stderr and "212 55" not in result.stderr
    assert "line 2 (import x1): email is not valid" in result.stderr


# -- damaged input: each bad line is named, the lines around it load --------------------


def loaded_ids(engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(conn.execute(select(CandidateRecord.external_id)).scalars())


def import_report(engine, clock, path: Path):
    config = load_cadence_file(default_config_dir() / "cadences.yaml")
    return import_file(path, engine, config, clock)


def errors_of(report) -> list[str]:
    return [str(error) for error in report.errors]


def test_a_bad_byte_costs_only_its_line(engine, clock, tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    rows = [r.encode() for r in (ROWS[0], ROWS[1], ROWS[3], ROWS[4])]
    rows[1] = rows[1].replace(b"Ben", b"B\xe9n")  # Latin-1, not UTF-8
    path.write_bytes(HEADER.encode() + b"\n".join(rows) + b"\n")
    report = import_report(engine, clock, path)
    assert errors_of(report) == [
        "line 3: not UTF-8 text (byte 0xe9 at column 12); save the file as UTF-8"
    ]
    assert report.rows == 4 and report.loaded == 3
    assert loaded_ids(engine) == ["c1", "c4", "c5"]


def test_a_bad_byte_in_jsonl_costs_only_its_line(engine, clock, tmp_path: Path) -> None:
    path = tmp_path / "people.jsonl"
    good = [
        json.dumps({"source": "import", "external_id": f"j{n}", "email": f"j{n}@example.com"})
        for n in (1, 2, 3)
    ]
    path.write_bytes(
        good[0].encode()
        + b"\n"
        + good[1].encode().replace(b"j2@", b"\xffj2@")
        + b"\n"
        + good[2].encode()
        + b"\n"
    )
    report = import_report(engine, clock, path)
    assert [e.where for e in report.errors] == ["line 2"]
    assert "not UTF-8 text (byte 0xff" in errors_of(report)[0]
    assert loaded_ids(engine) == ["j1", "j3"]


def test_a_bad_byte_in_the_header_is_a_file_error(cli, tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    path.write_bytes(b"source,external_id,first_n\xe4me,email\nimport,x1,A,a@example.com\n")
    result = cli("import", str(path))
    assert result.exit_code == 2
    assert "line 1: not UTF-8 text" in result.stderr


def test_an_unclosed_quote_is_named_and_the_next_rows_load(engine, clock, tmp_path: Path) -> None:
    broken = ROWS[0].replace(",Ann,", ',"Ann,', 1)
    # A later quoted field must not close the runaway one and hide the damage.
    quoted = ROWS[4].replace(",Eve,", ',"Eve",', 1)
    path = write_csv(tmp_path, [broken, ROWS[1], ROWS[3], quoted, ROWS[6]])
    report = import_report(engine, clock, path)
    messages = errors_of(report)
    assert len(messages) == 1 and messages[0].startswith("line 2: unclosed quote"), messages
    assert loaded_ids(engine) == ["c2", "c4", "c5", "c7"]
    assert report.rows == 5


def test_an_unclosed_quote_on_the_last_line(engine, clock, tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    path.write_text(HEADER + ROWS[1] + "\n" + ROWS[3].replace(",Dan,", ',"Dan,', 1))
    report = import_report(engine, clock, path)
    assert [e.where for e in report.errors] == ["line 3"]
    assert "unclosed quote" in errors_of(report)[0]
    assert loaded_ids(engine) == ["c2"]


def test_quoted_fields_over_several_lines_still_load(engine, clock, tmp_path: Path) -> None:
    multi = ROWS[0].replace("the Spark talk", '"the Spark talk,\nand ""the"" demo\r\nafter"')
    path = write_csv(tmp_path, [multi, ROWS[1]])
    report = import_report(engine, clock, path)
    assert not report.errors
    with engine.connect() as conn:
        custom = conn.execute(
            select(CandidateRecord.custom).where(CandidateRecord.external_id == "c1")
        ).scalar_one()
    assert custom["highlight"] == 'the Spark talk,\nand "the" demo\r\nafter'
    assert loaded_ids(engine) == ["c1", "c2"]


def test_json_objects_and_arrays_in_scalar_fields_are_row_errors(
    engine, clock, tmp_path: Path
) -> None:
    def row(n: int, **fields) -> str:
        base = {"source": "import", "external_id": f"j{n}", "email": f"j{n}@example.com"}
        return json.dumps({**base, **fields})

    path = tmp_path / "people.jsonl"
    path.write_text(
        "\n".join(
            [
                row(1, first_name={"$gt": ""}),
                row(2, email=["a@example.com", "b@example.com"]),
                row(3, tags=["ok", {"nested": True}]),
                row(4, first_name="Ada", tags=["ok"], portfolio={"links": ["x"]}),
            ]
        )
        + "\n"
    )
    report = import_report(engine, clock, path)
    assert errors_of(report) == [
        "line 1 (import j1): first_name is a JSON object; it must be text",
        "line 2 (import j2): email is a JSON array; it must be text",
        "line 3 (import j3): tags must be a list of text values; item 2 is a JSON object",
    ]
    assert loaded_ids(engine) == ["j4"]  # a custom field may hold any JSON


def test_nul_characters_are_row_errors(engine, clock, tmp_path: Path) -> None:
    csv_path = write_csv(tmp_path, [ROWS[0].replace("Lee", "L\x00ee"), ROWS[1]])
    report = import_report(engine, clock, csv_path)
    assert errors_of(report) == [
        "line 2 (import c1): last_name contains a NUL character (\\0); remove it"
    ]
    jsonl = tmp_path / "people.jsonl"
    jsonl.write_text(
        json.dumps(
            {"source": "import", "external_id": "j1", "email": "j1@example.com", "note": "a\u0000b"}
        )
        + "\n"
        + json.dumps(
            {
                "source": "import",
                "external_id": "j2",
                "email": "j2@example.com",
                "tags": ["x\u0000"],
            }
        )
        + "\n"
        + json.dumps({"source": "import", "external_id": "j3", "email": "j3@example.com"})
        + "\n"
    )
    report = import_report(engine, clock, jsonl)
    assert errors_of(report) == [
        "line 1 (import j1): note contains a NUL character (\\0); remove it",
        "line 2 (import j2): tags contains a NUL character (\\0); remove it",
    ]
    assert loaded_ids(engine) == ["c2", "j3"]


def test_an_unpaired_surrogate_escape_is_a_row_error(engine, clock, tmp_path: Path) -> None:
    path = tmp_path / "people.jsonl"
    rows = [
        {
            "source": "import",
            "external_id": "j1",
            "email": "j1@example.com",
            "first_name": "A\ud800",
        },
        {
            "source": "import",
            "external_id": "j2",
            "email": "j2@example.com",
            "first_name": "\U0001f600",
        },
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    report = import_report(engine, clock, path)
    assert errors_of(report) == [
        "line 1 (import j1): first_name contains an unpaired UTF-16 surrogate "
        "(a \\ud800-\\udfff escape); remove it"
    ]
    assert loaded_ids(engine) == ["j2"]


def test_a_runaway_quote_closed_by_a_later_row_swallows_nothing(
    engine, clock, tmp_path: Path
) -> None:
    path = tmp_path / "people.csv"
    path.write_text(
        "source,external_id,first_name,email\n"
        'import,x1,"Ann,a@example.com\n'  # the quote never closes on its line
        "import,x2,Ben,b@example.com\n"
        'import,x3,Cat",c@example.com\n'  # a stray quote that would close it: 4 fields
    )
    report = import_report(engine, clock, path)
    assert [e.where for e in report.errors] == ["line 2"]
    assert "unclosed quote" in errors_of(report)[0] and "line 3" in errors_of(report)[0]
    assert loaded_ids(engine) == ["x2", "x3"]


def test_json_nested_too_deeply_is_a_row_error(engine, clock, tmp_path: Path) -> None:
    path = tmp_path / "people.jsonl"
    good = {"source": "import", "external_id": "j1", "email": "j1@example.com"}
    deep = '{"source": "import", "external_id": "j2", "x": ' + "[" * 5000 + "]" * 5000 + "}"
    path.write_text(deep + "\n" + json.dumps(good) + "\n")
    report = import_report(engine, clock, path)
    assert errors_of(report) == ["line 1: JSON nested too deeply to read"]
    assert loaded_ids(engine) == ["j1"]
