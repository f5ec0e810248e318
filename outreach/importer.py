"""``outreach import FILE``: load candidates from CSV or JSONL, streaming, in batches.

Each bad row is reported with its line number and reason; the other rows load. Rows are
normalised (:func:`outreach.records.normalize_record`) and written in batches with
:func:`outreach.store.candidates.upsert_candidates`, one transaction per batch, so memory
stays flat whatever the file size and an interrupted import can simply be run again
(re-importing a row updates it).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from outreach.cadence import CadenceConfig
from outreach.clock import Clock
from outreach.errors import InputError, RecordError
from outreach.records import CandidateIn, normalize_record
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

    Raises :class:`InputError` when the file as a whole cannot be read.
    """
    fmt = detect_format(path)
    try:
        handle = path.open("r", encoding="utf-8-sig", newline="")
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    with handle:
        try:
            if fmt == "csv":
                yield from _csv_rows(path, handle)
            else:
                yield from _jsonl_rows(handle)
        except UnicodeDecodeError as exc:
            raise InputError(
                f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start} of a read block); "
                "save the file as UTF-8 and import it again (rows before were loaded)"
            ) from None


def _csv_rows(path: Path, handle) -> Iterator[tuple[int, dict[str, Any] | RecordError]]:
    reader = csv.reader(handle)
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(f"{path}: the file is empty; a CSV needs a header row") from None
    except csv.Error as exc:
        raise InputError(f"{path}:1: cannot read the header: {exc}") from None
    names = [name.strip() for name in header]
    duplicates = sorted({n for n in names if n and names.count(n) > 1})
    if duplicates:
        raise InputError(f"{path}:1: duplicate column(s) {', '.join(duplicates)} in the header")
    if "external_id" not in names:
        raise InputError(
            f"{path}:1: the header has no external_id column; every row needs an id that "
            "is unique within its source"
        )
    width = len(names)
    line = reader.line_num
    while True:
        start = line + 1
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            line = reader.line_num
            yield start, RecordError(f"line {start}", f"malformed CSV: {exc}")
            continue
        line = reader.line_num
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
        yield start, dict(zip(names, values, strict=True))


def _jsonl_rows(handle) -> Iterator[tuple[int, dict[str, Any] | RecordError]]:
    for number, text in enumerate(handle, start=1):
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
        if not isinstance(value, dict):
            yield (
                number,
                RecordError(
                    f"line {number}", f"expected a JSON object, got {type(value).__name__}"
                ),
            )
            continue
        yield number, value


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
