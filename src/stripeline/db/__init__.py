"""Storage: SQLAlchemy tables, engines and Alembic migrations (SQLite and PostgreSQL)."""

from __future__ import annotations

from stripeline.db.engine import connect, is_postgres, make_engine, migrate, migrations_current
from stripeline.db.models import Base

__all__ = ["Base", "connect", "is_postgres", "make_engine", "migrate", "migrations_current"]
