"""``outreach import FILE``: load candidates from CSV or JSONL, streaming, in batches.

Each bad row is reported with its line number and reason; the other rows load. That
holds for damage below the row too: a line that is not UTF-8, an unclosed quote (which
would otherwise swallow the rows after it), a JSON object or array where text belongs,
and NUL characters or unpaired surrogates (no database stores them) each cost only their
own row. Rows are
normalised (:func:`outreach.records.normalize_record`) and written in batches with
:func:`outreach.store.candidates.upsert_candidates`, one transaction per batch, so memory
stays flat whatever the file size and an interrupted import can simply be run again
(re-importing a row updates it).
"""

from __future__ import annotations

import codecs
import csv
import json
import re
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from outreach.cadence import CadenceConfig
from outreach.clock import Clock
from outreach.errors import InputError, RecordError
from outreach.gcpause import frozen_heap
from outreach.records import KNOWN_FIELDS, CandidateIn, normalize_record
from outreach.store.candidates import UpsertStats, upsert_candidates

__all__ = ["ImportReport", "import_file", "read_rows"]

BATCH_SIZE = 2000
_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


@dataclass
class ImportReport:
    """The outcome of one import."""

    rows: int = 0
    loaded: int = 0
    errors: list[RecordError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    stats: UpsertStats = field(default_factory=UpsertStats)


def detect_format(path: Path) -> str:
    """``csv`` or ``jsonl`` from the extension, else from the first character."""
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt:
        return fmt
    try:
        with path.open("rb") as handle:
            head = handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    if head.startswith(b"{"):
        return "jsonl"
    if b"," in head.split(b"\n", 1)[0]:
        return "csv"
    raise InputError(
        f"{path}: cannot tell the format; name the file .csv (with a header row) or "
        ".jsonl (one JSON object per line)"
    )


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | RecordError]]:
    """Yield ``(line, row)`` for every row, or ``(line, RecordError)`` for unreadable ones.

    The file is read line by line as bytes, so a byte that is not UTF-8, an unclosed
    quote, a JSON value of the wrong shape or a NUL character costs only its own row.
    Raises :class:`InputError` when the file as a whole cannot be read (no file, no
    usable CSV header).
    """
    fmt = detect_format(path)
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    with handle:
        lines = _text_lines(handle)
        if fmt == "csv":
            yield from _csv_rows(path, lines)
        else:
            yield from _jsonl_rows(lines)


#: a lone CR ends a line too (old Mac and some Excel exports), as in csv's own reading
_LONE_CR = re.compile(rb"(?<=\r)(?!\n)")


def _text_lines(handle: IO[bytes]) -> Iterator[tuple[int, str | RecordError]]:
    """``(line number, text with its line ending)``, or a RecordError for a line that is
    not UTF-8; a byte-order mark at the start is dropped."""
    number = 0
    for raw in handle:
        if number == 0 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        parts = _LONE_CR.split(raw) if raw.find(b"\r", 0, len(raw) - 2) >= 0 else (raw,)
        for part in parts:
            if not part:
                continue
            number += 1
            try:
                yield number, part.decode("utf-8")
            except UnicodeDecodeError as exc:
                column = len(part[: exc.start].decode("utf-8", "replace")) + 1
                yield (
                    number,
                    RecordError(
                        f"line {number}",
                        f"not UTF-8 text (byte 0x{part[exc.start]:02x} at column {column}); "
                        "save the file as UTF-8",
                    ),
                )


#: how far a quoted field may run over line breaks before its quote counts as unclosed
MAX_RECORD_LINES = 100
MAX_RECORD_CHARS = 1_000_000


class _CsvRecords:
    """Splits CSV lines into records, each ``(first line, fields)`` or a RecordError.

    A quoted field may hold line breaks, so a record can span lines. A quote that is
    never closed would swallow the rows after it (the csv module reads on to the end of
    the file); so a record over several lines must parse strictly, have the header's
    width, not run past :data:`MAX_RECORD_LINES` and not take in a line that reads as a
    row of its own. Otherwise its first line is reported as an unclosed quote and reading
    goes on from the line after it.
    """

    def __init__(self, lines: Iterator[tuple[int, str | RecordError]]) -> None:
        self._lines = lines
        self._replay: deque[tuple[int, str | RecordError]] = deque()
        #: fields per record (from the header); ``None`` while reading the header
        self.width: int | None = None

    def _next_line(self) -> tuple[int, str | RecordError] | None:
        if self._replay:
            return self._replay.popleft()
        return next(self._lines, None)

    def __iter__(self) -> Iterator[tuple[int, list[str] | RecordError]]:
        while (item := self._next_line()) is not None:
            number, text = item
            if isinstance(text, RecordError):
                yield number, text
            elif '"' not in text:
                yield number, text.rstrip("\r\n").split(",")
            else:
                yield number, self._quoted(number, text)

    def _quoted(self, start: int, text: str) -> list[str] | RecordError:
        taken: list[tuple[int, str]] = [(start, text)]
        size = len(text)
        while True:
            chunk = [line for _, line in taken]
            try:
                rows = list(csv.reader(chunk, strict=True))
            except csv.Error as exc:
                if str(exc) != "unexpected end of data":
                    if len(taken) == 1:
                        # One line with a stray quote: read it as leniently as before.
                        return _lenient(start, text)
                    return self._unclosed(taken, "it does not close cleanly")
                if len(taken) >= MAX_RECORD_LINES or size > MAX_RECORD_CHARS:
                    return self._unclosed(taken, f"within {len(taken)} lines")
                item = self._next_line()
                if item is None:
                    return self._unclosed(taken, "before the end of the file")
                number, line = item
                if isinstance(line, RecordError):
                    self._replay.appendleft(item)
                    return self._unclosed(taken, f"before line {number}")
                if self._reads_as_a_row(line):
                    self._replay.appendleft(item)
                    return self._unclosed(taken, f"before line {number}, a row of its own")
                taken.append((number, line))
                size += len(line)
                continue
            # Lines that each end a record never join, so this is one record.
            (fields,) = rows
            if len(taken) > 1 and self.width is not None and len(fields) != self.width:
                return self._unclosed(
                    taken, f"(closing it on line {taken[-1][0]} leaves {len(fields)} fields)"
                )
            return fields

    def _reads_as_a_row(self, line: str) -> bool:
        # A line without quotes and with the header's number of fields is a row that a
        # runaway quote would swallow, not the inside of a quoted field.
        return self.width is not None and '"' not in line and line.count(",") == self.width - 1

    def _unclosed(self, taken: list[tuple[int, str]], how: str) -> RecordError:
        # Read the lines after the first again, as records of their own.
        self._replay.extendleft(reversed(taken[1:]))
        return RecordError(
            f"line {taken[0][0]}",
            f"unclosed quote: a quoted field starts on this line and does not end {how}; "
            "check the quotes in this row (reading goes on at the next line)",
        )


def _lenient(line: int, text: str) -> list[str] | RecordError:
    try:
        (fields,) = csv.reader([text])
    except csv.Error as exc:  # e.g. a field over csv.field_size_limit()
        return RecordError(f"line {line}", f"malformed CSV: {exc}")
    return fields


def _csv_rows(
    path: Path, lines: Iterator[tuple[int, str | RecordError]]
) -> Iterator[tuple[int, dict[str, Any] | RecordError]]:
    records = _CsvRecords(lines)
    reader = iter(records)
    first = next(reader, None)
    if first is None:
        raise InputError(f"{path}: the file is empty; a CSV needs a header row")
    if isinstance(first[1], RecordError):
        raise InputError(f"{path}:1: cannot read the header: {first[1]}")
    names = [name.strip() for name in first[1]]
    duplicates = sorted({n for n in names if n and names.count(n) > 1})
    if duplicates:
        raise InputError(f"{path}:1: duplicate column(s) {', '.join(duplicates)} in the header")
    if any("\x00" in name for name in names):
        raise InputError(f"{path}:1: the header contains a NUL character (\\0); remove it")
    if "external_id" not in names:
        raise InputError(
            f"{path}:1: the header has no external_id column; every row needs an id that "
            "is unique within its source"
        )
    width = records.width = len(names)
    for start, values in reader:
        if isinstance(values, RecordError):
            yield start, values
            continue
        if not values or (len(values) == 1 and not values[0].strip()):
            continue
        if len(values) != width:
            yield (
                start,
                RecordError(
                    f"line {start}",
                    f"has {len(values)} fields but the header has {width}; check quoting and "
                    "commas in this row",
                ),
            )
            continue
        row = dict(zip(names, values, strict=True))
        if "\x00" in "".join(values):
            yield start, _text_error(start, row)
            continue
        yield start, row


def _jsonl_rows(
    lines: Iterator[tuple[int, str | RecordError]],
) -> Iterator[tuple[int, dict[str, Any] | RecordError]]:
    for number, text in lines:
        if isinstance(text, RecordError):
            yield number, text
            continue
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            yield (
                number,
                RecordError(f"line {number}", f"not valid JSON: {exc.msg} at column {exc.colno}"),
            )
            continue
        except RecursionError:
            yield number, RecordError(f"line {number}", "JSON nested too deeply to read")
            continue
        if not isinstance(value, dict):
            yield (
                number,
                RecordError(
                    f"line {number}", f"expected a JSON object, got {type(value).__name__}"
                ),
            )
            continue
        problem = _shape_problem(value)
        if problem is not None:
            yield number, RecordError(_label(number, value), problem)
            continue
        try:
            bad_text = bool(_MAYBE_BAD_TEXT.search(text)) and _text_problem(value) is not None
        except RecursionError:
            yield number, RecordError(_label(number, value), "JSON nested too deeply to read")
            continue
        yield number, (_text_error(number, value) if bad_text else value)


_SCALARS = frozenset(KNOWN_FIELDS) - {"tags"}
_JSON_KINDS = {dict: "object", list: "array"}


def _shape_problem(row: dict[str, Any]) -> str | None:
    """Why a JSON row cannot be read as a record: an object or array where text goes."""
    for name in _SCALARS & row.keys():
        kind = _JSON_KINDS.get(type(row[name]))
        if kind is not None:
            return f"{name} is a JSON {kind}; it must be text"
    tags = row.get("tags")
    if isinstance(tags, dict):
        return "tags is a JSON object; give a list of text values or one comma-separated text"
    if isinstance(tags, list):
        for index, tag in enumerate(tags, start=1):
            kind = _JSON_KINDS.get(type(tag))
            if kind is not None:
                return f"tags must be a list of text values; item {index} is a JSON {kind}"
    return None


#: JSON escapes that decode to text no database stores: NUL, and UTF-16 surrogates
#: (only a pair is a character; a lone one cannot be encoded)
_MAYBE_BAD_TEXT = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")


def _text_problem(value: Any) -> str | None:
    """What in ``value`` (or inside it) is not storable text, or None."""
    if isinstance(value, str):
        if "\x00" in value:
            return "a NUL character (\\0)"
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return "an unpaired UTF-16 surrogate (a \\ud800-\\udfff escape)"
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            problem = _text_problem(key) or _text_problem(item)
            if problem:
                return problem
    elif isinstance(value, list):
        for item in value:
            problem = _text_problem(item)
            if problem:
                return problem
    return None


def _text_error(line: int, row: dict[str, Any]) -> RecordError:
    # PostgreSQL cannot store NUL in text, and no real name or address holds one.
    for key, value in row.items():
        problem = _text_problem(key) or _text_problem(value)
        if problem:
            name = key if _text_problem(key) is None else repr(key)
            return RecordError(_label(line, row), f"{name} contains {problem}; remove it")
    raise AssertionError("no text problem in the row")  # pragma: no cover


def _label(line: int, row: dict[str, Any]) -> str:
    source, external_id = row.get("source"), row.get("external_id")
    if isinstance(source, str | int) and isinstance(external_id, str | int):
        source, external_id = str(source).strip(), str(external_id).strip()
        if source and external_id and not _text_problem(source + external_id):
            return f"line {line} ({source.lower()} {external_id})"
    return f"line {line}"


@frozen_heap()
def import_file(
    path: Path,
    engine: Engine,
    config: CadenceConfig,
    clock: Clock,
    *,
    default_source: str | None = None,
    batch_size: int = BATCH_SIZE,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Load ``path`` into the store; return counts, row errors and warnings."""
    report = ImportReport()
    unmapped: set[tuple[str, str]] = set()
    region = config.policy.default_region
    batch: list[CandidateIn] = []
    lines: list[int] = []

    def flush() -> None:
        if not batch:
            return
        try:
            with engine.begin() as conn:
                stats = upsert_candidates(conn, batch, clock.now())
        except SQLAlchemyError:
            # Find the rows the database refuses; write the others one by one.
            stats = UpsertStats()
            for line, record in zip(lines, batch, strict=True):
                try:
                    with engine.begin() as conn:
                        stats.add(upsert_candidates(conn, [record], clock.now()))
                except SQLAlchemyError as exc:
                    report.errors.append(
                        RecordError(
                            f"line {line} ({record.source} {record.external_id})",
                            f"the database refused the row: {type(exc.orig or exc).__name__}: "
                            f"{str(exc.orig or exc).splitlines()[0]}",
                        )
                    )
                else:
                    report.loaded += 1
        else:
            report.loaded += len(batch)
        report.stats.add(stats)
        batch.clear()
        lines.clear()

    for line, row in read_rows(path):
        report.rows += 1
        if isinstance(row, RecordError):
            report.errors.append(row)
        else:
            try:
                record = normalize_record(
                    row,
                    where=f"line {line}",
                    default_region=region,
                    canonical_stage=config.canonical_stage,
                    default_source=default_source,
                )
            except RecordError as exc:
                report.errors.append(exc)
            else:
                if record.source_stage and record.stage is None:
                    key = (record.source, record.source_stage)
                    if key not in unmapped:
                        unmapped.add(key)
                        report.warnings.append(
                            f"stage {record.source_stage!r} of source {record.source!r} is "
                            f"not mapped (first at line {line}); add it to "
                            f"stage_map.{record.source} in the cadence file; these records "
                            "are kept but not enrolled"
                        )
                batch.append(record)
                lines.append(line)
                if len(batch) >= batch_size:
                    flush()
        if progress is not None:
            progress(report.rows)
    flush()
    return report
