"""The store: schema, engine and migrations, and bulk writers."""

from __future__ import annotations

from outreach.store.db import ensure_schema, make_engine, upgrade

__all__ = ["ensure_schema", "make_engine", "upgrade"]
