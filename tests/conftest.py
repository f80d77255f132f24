"""Shared fixtures: real SQLite files and real PostgreSQL databases.

PostgreSQL tests read ``STRIPELINE_TEST_POSTGRES_URL`` and skip with a clear
reason without it on a developer's machine; under CI (``CI=true``) a missing URL
fails the run instead, so PostgreSQL tests never silently skip there.

Both databases are copied from one template migrated by Alembic once per test
session (once per xdist worker, each in its own temporary directory or under its
own database name, so parallel workers never share one): each test gets a copy
of the SQLite file, or a fresh ``CREATE DATABASE … TEMPLATE``. The migration
tests still run Alembic for real.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from stripeline.db import make_engine, migrate
from stripeline.db.engine import normalize_url

POSTGRES_URL = os.environ.get("STRIPELINE_TEST_POSTGRES_URL")
NO_POSTGRES = (
    "STRIPELINE_TEST_POSTGRES_URL is not set (CI sets it; export it to run PostgreSQL tests)"
)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def pytest_configure(config: pytest.Config) -> None:
    if _in_ci() and not POSTGRES_URL:
        raise pytest.UsageError(f"CI is set but {NO_POSTGRES}: PostgreSQL tests would not run")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Slow (multi-process) tests first: under xdist they start at once and
    overlap the rest of the suite instead of running alone at its end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's own Stripe or stripeline settings."""
    for name in list(os.environ):
        if name.startswith("STRIPELINE_") and name != "STRIPELINE_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)
        if name.startswith("STRIPE_"):
            monkeypatch.delenv(name)


def _admin_engine() -> Engine:
    assert POSTGRES_URL
    return create_engine(
        make_url(normalize_url(POSTGRES_URL)).set(database="postgres"), isolation_level="AUTOCOMMIT"
    )


def _url_for(database: str) -> str:
    assert POSTGRES_URL
    return (
        make_url(normalize_url(POSTGRES_URL))
        .set(database=database)
        .render_as_string(hide_password=False)
    )


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    if not POSTGRES_URL:
        pytest.skip(NO_POSTGRES)
    name = f"stripeline_tpl_{uuid.uuid4().hex[:12]}"
    admin = _admin_engine()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = make_engine(_url_for(name))
    migrate(engine)
    engine.dispose()
    yield name
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def postgres_url(postgres_template: str) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test."""
    name = f"stripeline_t_{uuid.uuid4().hex[:12]}"
    admin = _admin_engine()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{postgres_template}"'))
        # Commits do not wait for the WAL flush: only a server crash could lose
        # one, which no test does; every commit is still atomic and ordered.
        conn.execute(text(f'ALTER DATABASE "{name}" SET synchronous_commit TO off'))
    yield _url_for(name)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite file migrated by Alembic, per session (per xdist worker)."""
    path = tmp_path_factory.mktemp("template") / "stripeline.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()  # checkpoints the WAL: the main file holds everything
    return path


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    """A fresh, migrated SQLite file for this test (a copy of the template)."""
    path = tmp_path / "stripeline.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test that takes this runs on SQLite and on PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()
