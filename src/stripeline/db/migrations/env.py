"""Alembic environment: runs against the engine stripeline hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from stripeline.db.engine import make_engine
from stripeline.db.models import Base

config = context.config
target_metadata = Base.metadata


def _run() -> None:
    engine = config.attributes.get("engine")
    if not isinstance(engine, Engine):
        url = config.get_main_option("sqlalchemy.url")
        if not url:
            raise RuntimeError("no engine or sqlalchemy.url given to the migrations")
        engine = make_engine(url)
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


_run()
