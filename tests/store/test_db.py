"""Schema, migrations and engine setup, on SQLite and (in CI) PostgreSQL."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import insert, inspect, select, text

from outreach.errors import ConfigError, StoreError
from outreach.store import ensure_schema, make_engine, upgrade
from outreach.store.db import current_revision, head_revision
from outreach.store.schema import Base, Person

TABLES = {
    "people",
    "candidate_records",
    "contact_points",
    "enrollments",
    "touches",
    "events",
    "tasks",
    "sync_state",
}


def test_upgrade_creates_every_table(engine) -> None:
    assert set(inspect(engine).get_table_names()) >= TABLES
    assert current_revision(engine) == head_revision()


def test_migrations_match_the_models(engine) -> None:
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diffs == []


def test_ensure_schema_upgrades_an_empty_database(database_url) -> None:
    eng = make_engine(database_url)
    assert current_revision(eng) is None
    ensure_schema(eng)
    assert current_revision(eng) == head_revision()
    ensure_schema(eng)  # idempotent
    eng.dispose()


def test_ensure_schema_refuses_an_outdated_database(engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0000_older'"))
    with pytest.raises(StoreError, match="outreach db upgrade"):
        ensure_schema(engine)


def test_ensure_schema_refuses_a_foreign_database(database_url) -> None:
    eng = make_engine(database_url)
    with eng.begin() as conn:
        conn.execute(text("CREATE TABLE somebody_elses (id integer)"))
    with pytest.raises(StoreError, match="no outreach schema version"):
        ensure_schema(eng)
    eng.dispose()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(engine) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite only")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_instants_round_trip_as_aware_utc(engine) -> None:
    local = datetime(2026, 3, 8, 1, 30, tzinfo=timezone(timedelta(hours=-5)))
    with engine.begin() as conn:
        conn.execute(
            insert(Person).values(global_opt_out=False, created_at=local, updated_at=local)
        )
        stored = conn.execute(select(Person.created_at)).scalar_one()
    assert stored == local and stored.tzinfo is not None
    assert stored.utcoffset() == timedelta(0)


def test_naive_instants_are_refused(engine) -> None:
    naive = datetime(2026, 1, 1, 12, 0)
    with pytest.raises(Exception, match="naive datetime"), engine.begin() as conn:
        conn.execute(
            insert(Person).values(global_opt_out=False, created_at=naive, updated_at=naive)
        )


def test_bad_database_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="OUTREACH_DATABASE_URL"):
        make_engine("not a url")
    with pytest.raises(ConfigError, match="unknown database driver"):
        make_engine("nosuchdb://x")


def test_db_upgrade_command(cli) -> None:
    first = cli("db", "upgrade")
    assert first.exit_code == 0 and "upgraded from empty" in first.stdout
    second = cli("db", "upgrade")
    assert second.exit_code == 0 and "already at revision" in second.stdout


def test_other_commands_upgrade_an_empty_database_on_first_use(cli) -> None:
    result = cli("candidates")
    assert result.exit_code == 0, result.output
    assert "0 people" in result.stdout


def test_outdated_database_makes_commands_exit_2(cli, database_url) -> None:
    eng = make_engine(database_url)
    upgrade(eng)
    with eng.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0000_older'"))
    eng.dispose()
    result = cli("candidates")
    assert result.exit_code == 2 and "outreach db upgrade" in result.stderr


def test_unreachable_database_exits_2(cli, tmp_path) -> None:
    result = cli(
        "candidates",
        env={"OUTREACH_DATABASE_URL": "postgresql+psycopg://nobody:secret-pw@127.0.0.1:1/x"},
    )
    assert result.exit_code == 2
    assert "cannot open the database" in result.stderr
    assert "secret-pw" not in result.stderr


def test_now_is_aware(clock) -> None:
    assert clock.now().tzinfo is UTC


@pytest.fixture
def umask_022():
    """The common default umask, under which a plain file would be world-readable."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_sqlite_database_and_wal_files_are_private(tmp_path: Path, umask_022) -> None:
    db = tmp_path / "private.db"
    eng = make_engine(f"sqlite:///{db}")
    try:
        upgrade(eng)
        with eng.connect() as conn:  # held open, so the -wal and -shm files stay
            now = datetime.now(UTC)
            conn.execute(insert(Person).values(created_at=now, updated_at=now))
            conn.commit()
            files = [db, Path(f"{db}-wal"), Path(f"{db}-shm")]
            assert {f.name: _mode(f) for f in files} == {f.name: 0o600 for f in files}
    finally:
        eng.dispose()


def test_cli_commands_create_the_database_private(
    cli, tmp_path: Path, umask_022, monkeypatch
) -> None:
    monkeypatch.setenv("OUTREACH_DATABASE_URL", "sqlite:///fresh.db")
    assert cli("db", "upgrade").exit_code == 0
    assert _mode(tmp_path / "fresh.db") == 0o600
    monkeypatch.setenv("OUTREACH_DATABASE_URL", "sqlite:///other.db")
    assert cli("candidates").exit_code == 0
    assert _mode(tmp_path / "other.db") == 0o600
