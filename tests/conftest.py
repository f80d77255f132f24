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
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import Pool

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


#: The PostgreSQL connections SQLAlchemy's pools opened while this test ran.
_OPENED: list[weakref.ref[Any]] = []
#: Set on a test whose setup or call failed.
_FAILED = pytest.StashKey[bool]()


@event.listens_for(Pool, "connect")
def _remember_postgres_connection(dbapi_connection: Any, _record: Any) -> None:
    if type(dbapi_connection).__module__.startswith("psycopg"):
        _OPENED.append(weakref.ref(dbapi_connection))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        item.stash[_FAILED] = True
    return report


@pytest.fixture(autouse=True)
def _no_connection_left_open(request: pytest.FixtureRequest) -> Iterator[None]:
    """Once a test and its fixtures are done, no connection they opened to a
    database other than the server's ``postgres`` is still open: an engine
    or app left undisposed (on any path) fails its own test here, instead of
    a garbage collection turning it into a ResourceWarning in whichever test
    runs then. The connections found are closed, so that a test that failed
    anyway does not fail another one too."""
    _OPENED.clear()
    request.node.stash[_FAILED] = False  # a rerun starts afresh
    yield
    left = [
        conn
        for ref in _OPENED
        if (conn := ref()) is not None and not conn.closed and conn.info.dbname != "postgres"
    ]
    _OPENED.clear()
    for conn in left:
        conn.close()
    if left and not request.node.stash.get(_FAILED, False):
        pytest.fail(
            f"{len(left)} PostgreSQL connection(s) opened by this test were left open: "
            "dispose every engine and app it makes, on every path"
        )


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
