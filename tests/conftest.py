"""Shared fixtures: real SQLite files and real PostgreSQL databases.

PostgreSQL tests read ``STRIPELINE_TEST_POSTGRES_URL`` and skip with a clear
reason without it (CI always sets it). One migrated template database per test
session; each test gets a fresh ``CREATE DATABASE … TEMPLATE`` copy.
"""

from __future__ import annotations

import os
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
    yield _url_for(name)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh, migrated SQLite file for this test."""
    url = f"sqlite:///{tmp_path / 'stripeline.db'}"
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    return url


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
