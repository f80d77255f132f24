"""``Stripeline.engine`` (and the API fetcher and limiter) are built lazily,
the first time something asks: threads that ask at the same moment (a thread
pool's first calls, a threaded server's first requests) share one, so
``dispose()`` closes every connection they opened."""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import alembic.command
import pytest
from click.testing import CliRunner
from pydantic import SecretStr
from sqlalchemy import Engine, text

from stripeline.app import Stripeline
from stripeline.cli import main
from stripeline.db.engine import alembic_config, make_engine
from stripeline.settings import Settings
from tests.factories import other_backends

THREADS = 8
TRIES = 20


@contextmanager
def switching_often() -> Iterator[None]:
    """Threads take turns far more often than every 5 ms: a check-then-build
    that is not atomic is interleaved within a few tries."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def all_at_once(ask: Callable[[], Any]) -> list[Any]:
    """``ask()`` from ``THREADS`` threads released together; what each got."""
    start = threading.Barrier(THREADS)
    got: list[Any] = []

    def run() -> None:
        start.wait()
        got.append(ask())

    threads = [threading.Thread(target=run) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(got) == THREADS
    return got


def connect_once(app: Stripeline) -> Engine:
    """Connect with the app's engine; the engine it was."""
    engine = app.engine
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    return engine


def test_threads_asking_at_once_share_one_engine_and_dispose_closes_it(
    database_url: str,
) -> None:
    """Each thread connects with what it was given. Two engines built side by
    side left the one the app forgot with its pooled connections open, to a
    garbage collection that came whenever it came."""
    for _ in range(TRIES):
        app = Stripeline(Settings(database_url=database_url))
        got: list[Engine] = []
        try:
            with switching_often():
                got = all_at_once(functools.partial(connect_once, app))
        finally:
            app.dispose()
            for engine in {id(e): e for e in got}.values():
                engine.dispose()  # a second engine, had there been one
        assert len({id(engine) for engine in got}) == 1
        assert got[0] is app.engine
        if not database_url.startswith("sqlite"):
            assert other_backends(database_url) == 0


def test_threads_asking_at_once_share_one_fetcher_and_one_limiter() -> None:
    """One token bucket for the process's API reads, whoever reads first
    (nothing here connects: the database is never asked)."""
    settings = Settings(database_url="sqlite://", stripe_secret_key=SecretStr("sk_test_shared01"))
    for _ in range(TRIES):
        app = Stripeline(settings)
        with switching_often():
            fetchers = all_at_once(functools.partial(getattr, app, "fetcher"))
        assert len({id(f) for f in fetchers}) == 1
        assert app.fetcher is fetchers[0]
        app = Stripeline(settings)
        with switching_often():
            limiters = all_at_once(functools.partial(getattr, app, "api_limiter"))
        assert len({id(limiter) for limiter in limiters}) == 1
        assert app.api_limiter is limiters[0]


@pytest.mark.postgres
@pytest.mark.parametrize("command", ["worker", "serve"])
def test_a_command_refusing_an_old_schema_leaves_no_connection_open(
    command: str, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``stripeline worker`` and ``serve`` read the schema's revision on the
    app's engine before refusing (exit 2): run in-process, they dispose it."""
    engine = make_engine(postgres_url)
    try:
        alembic.command.downgrade(alembic_config(engine), "-1")
    finally:
        engine.dispose()
    monkeypatch.setenv("STRIPELINE_DATABASE_URL", postgres_url)
    result = CliRunner().invoke(main, [command, "--port", "0"] if command == "serve" else [command])
    assert result.exit_code == 2, result.output
    assert "stripeline migrate" in result.output
    assert other_backends(postgres_url) == 0
