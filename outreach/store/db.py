"""Engine creation and schema migrations.

SQLite runs in WAL mode with foreign keys on and a busy timeout, so that several
processes can share one file. A new database file (and so its -wal and -shm files) is
created readable by its owner only: it holds names, addresses and phone numbers.
PostgreSQL uses the same Alembic migrations.
:func:`ensure_schema` upgrades an empty database on first use and refuses to work on an
outdated one (run ``outreach db upgrade``).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

from outreach.errors import ConfigError, StoreError
from outreach.private_files import create_private

__all__ = ["current_revision", "ensure_schema", "head_revision", "make_engine", "upgrade"]

_MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def make_engine(url: str) -> Engine:
    """Create an engine for ``url`` (``sqlite:///file.db`` or ``postgresql+psycopg://...``)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            f"OUTREACH_DATABASE_URL is not a database URL; use sqlite:///outreach.db or "
            f"postgresql+psycopg://user@host/db (got {_redact(url)!r})"
        ) from None
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    try:
        if parsed.get_backend_name() == "sqlite":
            engine = create_engine(parsed, connect_args={"timeout": 30, "check_same_thread": False})
            in_memory = parsed.database in (None, "", ":memory:")
            _sqlite_setup(engine, in_memory=in_memory)
            if not in_memory and not parsed.query.get("uri"):
                _create_private_on_connect(engine, Path(parsed.database))
        else:
            engine = create_engine(parsed, pool_pre_ping=True)
    except NoSuchModuleError:
        raise ConfigError(
            f"OUTREACH_DATABASE_URL uses an unknown database driver {parsed.drivername!r}; "
            "use sqlite:/// or postgresql+psycopg://"
        ) from None
    return engine


def _redact(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable>"


def _sqlite_setup(engine: Engine, *, in_memory: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        conn.exec_driver_sql(conn.info.pop("sqlite_begin", "BEGIN"))


def _create_private_on_connect(engine: Engine, path: Path) -> None:
    # SQLite would create the file 0644 (under the usual umask) on first connect; made
    # 0600 first, it stays so, and SQLite gives its -wal and -shm files the same mode.
    @event.listens_for(engine, "do_connect")
    def _before_connect(_dialect, _record, _cargs, _cparams) -> None:
        # A missing folder or no permission: SQLite's own error says it better.
        with contextlib.suppress(OSError):
            create_private(path)


def _alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def head_revision() -> str:
    """The newest migration this version of the engine knows."""
    script = ScriptDirectory.from_config(_alembic_config_static())
    head = script.get_current_head()
    assert head is not None
    return head


def _alembic_config_static() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or ``None`` when it has no schema yet."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Create or upgrade the schema to ``revision``."""
    try:
        command.upgrade(_alembic_config(engine), revision)
    except OperationalError as exc:
        raise StoreError(f"cannot upgrade the database: {exc.orig}") from None


def ensure_schema(engine: Engine) -> None:
    """Make the database usable: upgrade it when empty, refuse when it is outdated."""
    try:
        current = current_revision(engine)
        tables = set(inspect(engine).get_table_names())
    except OperationalError as exc:
        raise StoreError(f"cannot open the database: {exc.orig}") from None
    head = head_revision()
    if current == head:
        return
    if current is None:
        if tables - {"alembic_version"}:
            raise StoreError(
                "the database has tables but no outreach schema version; point "
                "OUTREACH_DATABASE_URL at an empty database or the engine's own"
            )
        upgrade(engine)
        return
    raise StoreError(
        f"the database schema is at revision {current}, this engine needs {head}; "
        "run `outreach db upgrade`"
    )
