"""Fast bulk writes straight to the DB-API driver for the hot import and sync paths.

SQLAlchemy Core spends most of a bulk INSERT turning each row's values into parameters.
For the few statements that carry every imported row, :func:`bulk_write` renders the SQL
once (``INSERT ... ON CONFLICT ... DO UPDATE``, which SQLite and PostgreSQL spell the same)
and hands plain tuples to the driver's ``executemany``, converting values with one cheap
function per column chosen from the column's type.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import JSON, Boolean, Connection, Table

from outreach.store.types import UTCDateTime, sqlite_text

__all__ = ["bulk_update", "bulk_write"]


# Cached: a batch carries the same few instants (its `now`) on most rows.
_sqlite_instant = lru_cache(maxsize=8192)(sqlite_text)


def _pg_instant(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r} cannot be stored; give it a time zone")
    return value


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def _sqlite_bool(value: bool | None) -> int | None:
    return None if value is None else int(value)


def _identity(value: Any) -> Any:
    return value


def _converter(column, dialect: str) -> Callable[[Any], Any]:
    kind = column.type
    if isinstance(kind, UTCDateTime):
        return _sqlite_instant if dialect == "sqlite" else _pg_instant
    if isinstance(kind, JSON):
        return _json
    if isinstance(kind, Boolean) and dialect == "sqlite":
        return _sqlite_bool
    return _identity


def bulk_write(
    conn: Connection,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    conflict: Sequence[str] = (),
    update: Mapping[str, str] | None = None,
) -> None:
    """Insert ``rows`` (all with the same keys) into ``table`` in one ``executemany``.

    ``conflict`` names the unique columns; ``update`` maps columns to SQL expressions
    for ``ON CONFLICT (...) DO UPDATE SET column = expression`` (``excluded.<column>`` is
    the incoming value). Without ``update`` a conflict is left alone (``DO NOTHING``).
    """
    if not rows:
        return
    dialect = conn.dialect.name
    if dialect not in ("sqlite", "postgresql"):
        raise NotImplementedError(f"bulk writes are not supported on {dialect}")
    names = list(rows[0].keys())
    columns = [table.c[name] for name in names]
    marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    placeholders = []
    for column in columns:
        if dialect == "postgresql" and isinstance(column.type, JSON):
            placeholders.append(f"CAST({marker} AS JSON)")
        else:
            placeholders.append(marker)
    sql = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join(placeholders)})"
    if conflict:
        sql += f" ON CONFLICT ({', '.join(conflict)}) "
        if update:
            sets = ", ".join(f"{name} = {expression}" for name, expression in update.items())
            sql += f"DO UPDATE SET {sets}"
        else:
            sql += "DO NOTHING"
    conn.exec_driver_sql(sql, _params(rows, names, columns, dialect))


def bulk_update(
    conn: Connection,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    key: str = "id",
) -> None:
    """``UPDATE table SET ... WHERE key = ...`` for every row, in one ``executemany``.

    All rows carry the same columns; ``key`` names the column that identifies a row.
    """
    if not rows:
        return
    dialect = conn.dialect.name
    names = [name for name in rows[0] if name != key]
    marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    sets = []
    for name in names:
        column = table.c[name]
        if dialect == "postgresql" and isinstance(column.type, JSON):
            sets.append(f"{name} = CAST({marker} AS JSON)")
        else:
            sets.append(f"{name} = {marker}")
    sql = f"UPDATE {table.name} SET {', '.join(sets)} WHERE {key} = {marker}"
    order = [*names, key]
    conn.exec_driver_sql(sql, _params(rows, order, [table.c[n] for n in order], dialect))


def _params(
    rows: Sequence[Mapping[str, Any]], names: Sequence[str], columns: Sequence[Any], dialect: str
) -> list[tuple[Any, ...]]:
    """Rows as driver parameter tuples, converting only the columns that need it."""
    converted = [
        (index, convert)
        for index, convert in enumerate(_converter(column, dialect) for column in columns)
        if convert is not _identity
    ]
    params = []
    for row in rows:
        values = [row[name] for name in names]
        for index, convert in converted:
            values[index] = convert(values[index])
        params.append(tuple(values))
    return params
