"""Alembic environment: runs against the engine stripeline hands over."""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import Engine

from stripeline.db.engine import VERSION_TABLE, make_engine
from stripeline.db.models import Base

config = context.config
target_metadata = Base.metadata


def _include_name(name: str | None, type_: str, _parents: Any) -> bool:
    """Only stripeline's tables: an application's own tables in a shared
    database are not ours to compare (``alembic check``) or drop."""
    return type_ != "table" or (name or "").startswith("stripeline_")


def _run() -> None:
    engine = config.attributes.get("engine")
    if isinstance(engine, Engine):
        _migrate(engine)  # the caller's engine: the caller disposes it
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no engine or sqlalchemy.url given to the migrations")
    own = make_engine(url)
    try:
        _migrate(own)
    finally:
        own.dispose()  # else its pooled connection stays open until collected


def _migrate(engine: Engine) -> None:
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
            # Its own version table: an application's Alembic keeps alembic_version.
            version_table=VERSION_TABLE,
            include_name=_include_name,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


_run()
