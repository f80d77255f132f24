"""A database shared with an application that uses Alembic too: stripeline
keeps its history in ``stripeline_alembic_version``, the application in
``alembic_version``, and ``stripeline migrate`` moves an older database's
revision out of ``alembic_version``."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from click.testing import CliRunner
from sqlalchemy import Engine, inspect, text

from stripeline.cli import main
from stripeline.commands.doctor import check_migrations
from stripeline.db import make_engine, migrate, migrations_current
from stripeline.db.engine import (
    LEGACY_VERSION_TABLE,
    VERSION_TABLE,
    alembic_config,
    current_revision,
    head_revision,
    legacy_revision,
    normalize_url,
)
from tests.factories import other_backends

APP_REVISION = "5f1c0ab2e9d3"

APP_ENV = """
from alembic import context
from sqlalchemy import create_engine

config = context.config


def include_name(name, type_, parents):
    # The application's own tables only: stripeline's are not its to drop.
    return type_ != "table" or not (name or "").startswith("stripeline_")


engine = create_engine(config.get_main_option("sqlalchemy.url"))
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=None, include_name=include_name)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
engine.dispose()
"""

APP_REVISION_FILE = f'''
"""app orders"""
from alembic import op
import sqlalchemy as sa

revision = "{APP_REVISION}"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "app_orders",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("total", sa.Integer, nullable=False),
    )


def downgrade():
    op.drop_table("app_orders")
'''


@pytest.fixture
def empty_engine(database_url: str) -> Iterator[Engine]:
    """The test database with nothing of stripeline's in it."""
    engine = make_engine(database_url)
    command.downgrade(alembic_config(engine), "base")
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE {VERSION_TABLE}"))
    assert inspect(engine).get_table_names() == []
    yield engine
    engine.dispose()


def app_config(tmp_path: Path, engine: Engine) -> Config:
    """The application's own Alembic environment: its script location, one revision."""
    location = tmp_path / "app_migrations"
    (location / "versions").mkdir(parents=True)
    (location / "env.py").write_text(APP_ENV)
    (location / "versions" / f"{APP_REVISION}_orders.py").write_text(APP_REVISION_FILE)
    cfg = Config(stdout=io.StringIO())
    cfg.set_main_option("script_location", str(location))
    url = engine.url.render_as_string(hide_password=False)
    cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return cfg


def app_current(cfg: Config) -> str:
    """What ``alembic current`` of the application prints."""
    out = cfg.stdout
    assert isinstance(out, io.StringIO)
    out.seek(0)
    out.truncate()
    command.current(cfg)
    return out.getvalue()


def stripeline_migrate(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> str:
    """``stripeline migrate``, the command; its output."""
    url = engine.url.render_as_string(hide_password=False)
    monkeypatch.setenv("STRIPELINE_DATABASE_URL", url)
    result = CliRunner().invoke(main, ["migrate"])
    assert result.exit_code == 0, result.output
    assert "database is at the newest migration" in result.output
    return result.output


def assert_both_current(engine: Engine, cfg: Config) -> None:
    assert f"{APP_REVISION} (head)" in app_current(cfg)
    assert current_revision(engine) == head_revision()
    assert migrations_current(engine)
    check = check_migrations(engine)
    assert check.ok, check.detail
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars()
        assert list(rows) == [APP_REVISION]
        ours = conn.execute(text("SELECT version_num FROM stripeline_alembic_version")).scalars()
        assert list(ours) == [head_revision()]
    tables = set(inspect(engine).get_table_names())
    assert {"app_orders", "stripeline_events", VERSION_TABLE, LEGACY_VERSION_TABLE} <= tables


def test_stripeline_first_then_the_application(
    empty_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = app_config(tmp_path, empty_engine)
    stripeline_migrate(empty_engine, monkeypatch)
    command.upgrade(cfg, "head")
    assert_both_current(empty_engine, cfg)
    # And again, each: nothing to do, nothing fails.
    stripeline_migrate(empty_engine, monkeypatch)
    command.upgrade(cfg, "head")
    assert_both_current(empty_engine, cfg)


def test_the_application_first_then_stripeline(
    empty_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = app_config(tmp_path, empty_engine)
    command.upgrade(cfg, "head")
    # The application's row in alembic_version is not stripeline's: nothing moves.
    assert "moved" not in stripeline_migrate(empty_engine, monkeypatch)
    assert_both_current(empty_engine, cfg)
    command.upgrade(cfg, "head")
    stripeline_migrate(empty_engine, monkeypatch)
    assert_both_current(empty_engine, cfg)


def to_old_layout(engine: Engine, *extra: str) -> str:
    """Put the database back at stripeline's previous layout: its revision
    in ``alembic_version`` (with ``extra`` rows), no ``stripeline_alembic_version``."""
    head = head_revision()
    assert head is not None
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE {VERSION_TABLE}"))
        conn.execute(
            text(
                f"CREATE TABLE {LEGACY_VERSION_TABLE} (version_num VARCHAR(32) NOT NULL,"
                " CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
            )
        )
        for revision in (head, *extra):
            conn.execute(text("INSERT INTO alembic_version VALUES (:r)"), {"r": revision})
    return head


def test_an_old_database_is_moved_by_migrate(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    head = to_old_layout(engine)
    # Before: not current, and doctor says why and what to run.
    assert current_revision(engine) is None
    assert legacy_revision(engine) == head
    check = check_migrations(engine)
    assert not check.ok
    assert "alembic_version" in check.detail and "stripeline migrate" in check.detail
    assert f"to {VERSION_TABLE}" in stripeline_migrate(engine, monkeypatch)
    assert current_revision(engine) == head
    assert legacy_revision(engine) is None
    assert check_migrations(engine).ok
    # Left empty: dropped.
    assert LEGACY_VERSION_TABLE not in inspect(engine).get_table_names()


def test_moving_keeps_the_applications_row(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An old database where the application's revision sat next to
    stripeline's in ``alembic_version``: only stripeline's row moves."""
    cfg = app_config(tmp_path, engine)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE app_orders (id INTEGER PRIMARY KEY, total INTEGER)"))
    to_old_layout(engine, APP_REVISION)
    migrate(engine)
    assert_both_current(engine, cfg)
    command.upgrade(cfg, "head")
    assert_both_current(engine, cfg)


def test_a_revision_of_another_history_is_not_taken(engine: Engine) -> None:
    """``alembic_version`` holding only an application's revision is left alone."""
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE {LEGACY_VERSION_TABLE} (version_num VARCHAR(32))"))
        conn.execute(text("INSERT INTO alembic_version VALUES (:r)"), {"r": APP_REVISION})
    assert legacy_revision(engine) is None
    migrate(engine)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars()
        assert list(rows) == [APP_REVISION]


@pytest.mark.postgres
def test_the_migrations_run_by_url_leave_no_connection_open(postgres_url: str) -> None:
    """Alembic pointed at stripeline's migrations with ``sqlalchemy.url`` (no
    engine handed over): they build an engine of their own and dispose it."""
    engine = make_engine(postgres_url)
    try:
        command.downgrade(alembic_config(engine), "-1")
    finally:
        engine.dispose()
    cfg = Config(stdout=io.StringIO())
    cfg.set_main_option("script_location", "stripeline.db:migrations")
    cfg.set_main_option("sqlalchemy.url", normalize_url(postgres_url).replace("%", "%%"))
    command.upgrade(cfg, "head")
    assert other_backends(postgres_url) == 0
    engine = make_engine(postgres_url)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()
