"""CSV exports: cells a spreadsheet would run as formulas are written as text."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tests_data import HEADER, ROWS

from outreach.csvsafe import SafeCsvWriter, safe_cell

HOSTILE = ["=CMD|' /C calc'!A0", "+1+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1"]


@pytest.mark.parametrize("text", HOSTILE)
def test_formula_starts_get_a_leading_quote(text: str) -> None:
    assert safe_cell(text) == "'" + text


@pytest.mark.parametrize("value", ["Ann", "O'Neil", "a=b", " =1", "", "José"])
def test_ordinary_text_is_unchanged(value: str) -> None:
    assert safe_cell(value) == value


def test_numbers_times_and_none() -> None:
    assert safe_cell(-5) == -5 and safe_cell(2.5) == 2.5 and safe_cell(True) is True
    assert safe_cell(None) == ""
    assert safe_cell(datetime(2026, 11, 25, 15, tzinfo=UTC)) == "2026-11-25T15:00:00+00:00"


def test_the_writer_neutralises_every_cell() -> None:
    buffer = io.StringIO()
    writer = SafeCsvWriter(buffer)
    writer.writerow(["name", "n"])
    writer.writerow(['=HYPERLINK("http://evil")', -1])
    rows = list(csv.reader(io.StringIO(buffer.getvalue())))
    assert rows == [["name", "n"], ['\'=HYPERLINK("http://evil")', "-1"]]


def test_candidates_csv_export_does_not_carry_formulas(cli, tmp_path: Path) -> None:
    row = ROWS[0].replace(",Ann,Lee,", ",\"=CMD|' /C calc'!A0\",@SUM(1+1),", 1)
    path = tmp_path / "people.csv"
    path.write_text(HEADER + row + "\n")
    assert cli("import", str(path)).exit_code == 0
    result = cli("candidates", "--format", "csv")
    assert result.exit_code == 0, result.output
    header, values = list(csv.reader(io.StringIO(result.stdout)))
    exported = dict(zip(header, values, strict=True))
    assert exported["first_name"] == "'=CMD|' /C calc'!A0"
    assert exported["last_name"] == "'@SUM(1+1)"
    assert exported["email"] == "ann@example.com"


def test_replies_csv_export_does_not_carry_formulas(cli, tmp_path: Path) -> None:
    eml = tmp_path / "reply.eml"
    eml.write_bytes(
        b"From: Cand <cand@example.org>\nTo: replies@example.com\n"
        b'Subject: =HYPERLINK("http://evil.example")\nMessage-ID: <x1@example.org>\n\n'
        b"-1+2 call me\n"
    )
    assert cli("replies", "import", str(eml), "--now", "2026-11-25T15:00:00Z").exit_code in (0, 1)
    result = cli("replies", "list", "--format", "csv")
    assert result.exit_code == 0, result.output
    header, values = list(csv.reader(io.StringIO(result.stdout)))
    exported = dict(zip(header, values, strict=True))
    assert exported["subject"] == '\'=HYPERLINK("http://evil.example")'
    assert exported["new_text"].startswith("'-1+2")
