"""Alembic environment: runs migrations on the engine handed over by outreach.store.db."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from outreach.store.schema import Base

target_metadata = Base.metadata


def run_migrations_online() -> None:
    """Run migrations on the engine the caller passed in (or the URL in alembic.ini)."""
    engine = context.config.attributes.get("engine")
    if engine is None:
        engine = create_engine(context.config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `outreach db upgrade`")
run_migrations_online()
