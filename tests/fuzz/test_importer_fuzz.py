"""Fuzz: damaged CSV and JSONL files through the importer never crash it.

Valid candidate files are generated, then some of their records are damaged (a byte that
is not UTF-8, a NUL, a stray quote, a quote that opens a field and another that closes
it records later, a lost or extra comma, random bytes, a cut line, a JSON object where
text belongs). Each file goes through :func:`outreach.importer.import_file`,
the code path of ``outreach import``, into a real throwaway database (SQLite, or PostgreSQL
with ``OUTREACH_TEST_DATABASE=postgresql``). Whatever the damage:

* the import returns: no exception escapes for a file whose header is intact;
* every record is accounted for: loaded, or reported as an error naming its line;
* every record that was not damaged is loaded, however damaged its neighbours are;
* a line that is not UTF-8 is reported by its own line number; no NUL is ever stored.

``OUTREACH_FUZZ_EXAMPLES`` sets the examples per test (40 by default, so the normal
suite stays quick; ``benchmarks/fuzz.py`` runs 1000).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from throwaway_db import throwaway_database

from outreach.cadence import load_cadence_file
from outreach.clock import FixedClock
from outreach.errors import InputError
from outreach.importer import ImportReport, import_file
from outreach.paths import default_config_dir
from outreach.store import make_engine, upgrade
from outreach.store.schema import CandidateRecord

FUZZ = settings(
    max_examples=int(os.environ.get("OUTREACH_FUZZ_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
CONFIG = load_cadence_file(default_config_dir() / "cadences.yaml")
CLOCK = FixedClock(datetime(2026, 11, 25, 15, 0, tzinfo=UTC))
HEADER = ["source", "external_id", "first_name", "last_name", "email", "stage", "note"]
STAGES = ["", "applied", "screening", "interview", "offer", "hired", "rejected"]
LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZéüßØ"
_examples = itertools.count()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    """One database for every example; each example writes under its own source name."""
    with throwaway_database(tmp_path_factory.mktemp("fuzz-db")) as url:
        engine = make_engine(url)
        upgrade(engine)
        yield engine
        engine.dispose()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-files")


# -- valid records ------------------------------------------------------------------------

# A value starts with a letter: a CSV field that opens with a quote followed by a comma
# is where a runaway quote and a real row cannot be told apart, and no name looks so.
name = st.builds(
    lambda head, tail: head + tail,
    st.sampled_from(LETTERS),
    st.text(alphabet=LETTERS + " '-,\"", max_size=12),
)
note = st.one_of(
    st.just(""),
    st.builds(
        lambda head, tail: head + tail,
        st.sampled_from(LETTERS),
        # Line breaks make a quoted field over several lines; no commas, so no line of a
        # note reads as a row of its own.
        st.text(alphabet=LETTERS + " \"'\n\r", max_size=30),
    ),
)


@dataclass
class Record:
    """One candidate: its fields, and whether the fuzzer damaged it."""

    fields: dict[str, str]
    damage: str | None = None


@st.composite
def records(draw: st.DrawFn, source: str) -> list[Record]:
    count = draw(st.integers(min_value=1, max_value=12))
    return [
        Record(
            {
                "source": source,
                "external_id": f"r{i}",
                "first_name": draw(name),
                "last_name": draw(st.one_of(st.just(""), name)),
                "email": f"r{i}.{source}@example.com",
                "stage": draw(st.sampled_from(STAGES)),
                "note": draw(note),
            }
        )
        for i in range(count)
    ]


# -- damage ------------------------------------------------------------------------------

DAMAGE = [
    "bad_byte",
    "nul",
    "quote",
    "quote_opens_field",
    "quote_closes_field",
    "drop_comma",
    "add_comma",
    "garbage",
    "cut",
]


def damage(raw: bytes, kind: str, where: int, garbage: bytes) -> bytes:
    """``raw`` (one record with its line ending) damaged; the line ending stays."""
    body, ending = (raw[:-2], raw[-2:]) if raw.endswith(b"\r\n") else (raw[:-1], raw[-1:])
    at = where % (len(body) + 1)
    if kind == "bad_byte":
        body = body[:at] + bytes([0x80 + where % 0x80]) + body[at:]
    elif kind == "nul":
        body = body[:at] + b"\x00" + body[at:]
    elif kind == "quote":
        body = body[:at] + b'"' + body[at:]
    elif kind in ("quote_opens_field", "quote_closes_field"):
        # A quote at the start of one record's field and another at the end of the same
        # field of a later record: read as one record, the two have the header's width.
        commas = [-1, *(i for i, byte in enumerate(body) if byte == ord(","))]
        field = where % len(commas)
        if kind == "quote_opens_field":
            at = commas[field] + 1
        else:
            at = commas[field + 1] if field + 1 < len(commas) else len(body)
        body = body[:at] + b'"' + body[at:]
    elif kind == "drop_comma":
        body = body.replace(b",", b"", 1)
    elif kind == "add_comma":
        body = body[:at] + b"," + body[at:]
    elif kind == "garbage":
        body = garbage
    elif kind == "cut":
        body = body[:at]
    return body + ending


@dataclass
class Damaged:
    """A generated file and what the fuzzer knows about it."""

    data: bytes
    records: list[Record]
    #: line numbers (1-based, as the importer counts) that must be reported as not UTF-8
    bad_byte_lines: set[int]


def _lines_before(data: bytes) -> int:
    # Lines as the importer counts them: LF, CRLF, or a lone CR ends one.
    return len(re.findall(rb"\r\n|\r|\n", data))


@st.composite
def damaged_csv(draw: st.DrawFn, source: str) -> Damaged:
    rows = draw(records(source))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=newline)
    writer.writerow(HEADER)
    data = buffer.getvalue().encode()
    plan: list[tuple[str, int] | None] = [
        (draw(st.sampled_from(DAMAGE)), draw(st.integers(min_value=0, max_value=10_000)))
        if draw(st.integers(min_value=0, max_value=3)) == 0
        else None
        for _ in rows
    ]
    if len(rows) >= 3 and draw(st.booleans()):
        # A runaway quote and a later stray quote that would close it at the same field,
        # with records between that must not be swallowed.
        first = draw(st.integers(min_value=0, max_value=len(rows) - 3))
        last = draw(st.integers(min_value=first + 2, max_value=len(rows) - 1))
        field = draw(st.integers(min_value=0, max_value=len(HEADER) - 1))
        plan[first], plan[last] = ("quote_opens_field", field), ("quote_closes_field", field)
    bad_lines: set[int] = set()
    for row, planned in zip(rows, plan, strict=True):
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator=newline).writerow(row.fields[c] for c in HEADER)
        raw = buffer.getvalue().encode()
        if planned is not None:
            row.damage, where = planned
            junk = draw(st.binary(max_size=60)) if row.damage == "garbage" else b""
            damaged = damage(raw, row.damage, where, junk)
            if row.damage == "bad_byte":
                at = where % (len(raw.rstrip(b"\r\n")) + 1)
                bad_lines.add(_lines_before(data + raw[:at]) + 1)
            raw = damaged
        data += raw
    return Damaged(data, rows, bad_lines)


json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=20),
)
json_value = st.recursive(
    json_scalar,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(alphabet=LETTERS, min_size=1, max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
JSONL_DAMAGE = ["bad_byte", "nul_escape", "object_in_name", "array_in_email", "garbage", "cut"]


@st.composite
def damaged_jsonl(draw: st.DrawFn, source: str) -> Damaged:
    rows = draw(records(source))
    data = b""
    bad_lines: set[int] = set()
    for row in rows:
        value: dict[str, object] = {k: v for k, v in row.fields.items() if v}
        value["extra"] = draw(json_value)  # a custom field may hold any JSON
        raw = json.dumps(value).encode() + b"\n"
        if draw(st.integers(min_value=0, max_value=3)) == 0:
            row.damage = draw(st.sampled_from(JSONL_DAMAGE))
            where = draw(st.integers(min_value=0, max_value=10_000))
            if row.damage == "nul_escape":
                raw = json.dumps({**value, "first_name": "A\x00B"}).encode() + b"\n"
            elif row.damage == "object_in_name":
                raw = json.dumps({**value, "first_name": {"$ne": None}}).encode() + b"\n"
            elif row.damage == "array_in_email":
                raw = json.dumps({**value, "email": [value["email"]]}).encode() + b"\n"
            else:
                if row.damage == "bad_byte":
                    bad_lines.add(_lines_before(data) + 1)
                raw = damage(raw, row.damage, where, draw(st.binary(max_size=60)))
        data += raw
    return Damaged(data, rows, bad_lines)


# -- the properties ------------------------------------------------------------------------

LINE = re.compile(r"^line (\d+)(?: \(.+\))?$", re.DOTALL)  # a label may quote a value


def check(report: ImportReport, generated: Damaged, store, source: str) -> None:
    total_lines = _lines_before(generated.data) + 1
    # Every record read is loaded or reported, never both, never neither.
    assert report.rows == report.loaded + len(report.errors), report
    lines = []
    for error in report.errors:
        match = LINE.match(error.where)
        assert match, f"an error that names no line: {error}"
        lines.append(int(match.group(1)))
        assert 1 <= lines[-1] <= total_lines, error
    assert len(lines) == len(set(lines)), f"a line reported twice: {report.errors}"
    reported = set(lines)
    # A line that is not UTF-8 is reported as such, under its own number.
    for line in generated.bad_byte_lines:
        assert line in reported, (line, report.errors)
        (error,) = [e for e in report.errors if int(LINE.match(e.where).group(1)) == line]
        assert "not UTF-8" in error.reason
    with store.connect() as conn:
        stored = conn.execute(
            select(
                CandidateRecord.external_id,
                CandidateRecord.first_name,
                CandidateRecord.last_name,
                CandidateRecord.custom,
            ).where(CandidateRecord.source == source)
        ).all()
    loaded = {row.external_id for row in stored}
    # Records the fuzzer left alone are loaded, whatever happened around them.
    intact = {r.fields["external_id"] for r in generated.records if r.damage is None}
    assert intact <= loaded, (sorted(intact - loaded), report.errors)
    for row in stored:
        assert "\x00" not in f"{row.external_id}{row.first_name}{row.last_name}"
        assert "\\u0000" not in json.dumps(row.custom)


def run_import(folder: Path, store, data: bytes, suffix: str) -> ImportReport:
    path = folder / f"import-{next(_examples)}{suffix}"
    path.write_bytes(data)
    try:
        return import_file(path, store, CONFIG, CLOCK)
    finally:
        path.unlink()


@FUZZ
@given(data=st.data())
def test_damaged_csv_rows_cost_only_themselves(store, folder: Path, data) -> None:
    source = f"fz{next(_examples)}"
    generated = data.draw(damaged_csv(source))
    report = run_import(folder, store, generated.data, ".csv")
    check(report, generated, store, source)


@FUZZ
@given(data=st.data())
def test_damaged_jsonl_rows_cost_only_themselves(store, folder: Path, data) -> None:
    source = f"fz{next(_examples)}"
    generated = data.draw(damaged_jsonl(source))
    report = run_import(folder, store, generated.data, ".jsonl")
    check(report, generated, store, source)


@FUZZ
@given(body=st.binary(max_size=400), suffix=st.sampled_from([".csv", ".jsonl"]))
def test_random_bytes_after_a_header_never_crash(store, folder: Path, body, suffix) -> None:
    head = (",".join(HEADER) + "\n").encode() if suffix == ".csv" else b""
    report = run_import(folder, store, head + body, suffix)
    first, last = (2 if head else 1), _lines_before(head + body) + 1
    assert report.rows == report.loaded + len(report.errors)
    for error in report.errors:
        match = LINE.match(error.where)
        assert match and first <= int(match.group(1)) <= last, error


@FUZZ
@given(whole=st.binary(max_size=400), suffix=st.sampled_from([".csv", ".jsonl", ".txt"]))
def test_a_random_file_is_read_or_refused_as_a_whole(store, folder: Path, whole, suffix) -> None:
    try:
        report = run_import(folder, store, whole, suffix)
    except InputError as exc:
        assert str(exc)  # a whole-file problem, said in words (exit code 2)
        return
    assert report.rows == report.loaded + len(report.errors)
