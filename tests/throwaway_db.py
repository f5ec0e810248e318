"""Throwaway test databases: SQLite files, or PostgreSQL databases created and dropped.

``OUTREACH_TEST_DATABASE=postgresql`` selects the PostgreSQL server at
``OUTREACH_TEST_POSTGRES_URL`` (default: the local server, trust auth). A module of its own
(not conftest) so module-scoped fixtures in any folder can import it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

BACKEND = os.environ.get("OUTREACH_TEST_DATABASE", "sqlite").lower()
POSTGRES_URL = os.environ.get(
    "OUTREACH_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@contextmanager
def throwaway_database(directory: Path) -> Iterator[str]:
    """The URL of an empty database that lives as long as the ``with`` block."""
    if BACKEND == "sqlite":
        yield f"sqlite:///{directory / 'outreach-test.db'}"
        return
    if BACKEND != "postgresql":
        raise pytest.UsageError("OUTREACH_TEST_DATABASE must be sqlite or postgresql")
    name = f"outreach_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
