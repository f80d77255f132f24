"""Engines for SQLite (WAL, one writer) and PostgreSQL (psycopg 3), and migrations."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.pool import NullPool

#: How long SQLite waits for the write lock before giving up (and we answer 503).
SQLITE_BUSY_TIMEOUT_MS = 5_000
T = TypeVar("T")

#: A pooled PostgreSQL connection idle longer than this is pinged before use.
PING_AFTER_IDLE_SECONDS = 1.0
#: How long a PostgreSQL connection attempt may take before we answer 503.
POSTGRES_CONNECT_TIMEOUT_S = 3


def insert_for(bind: Connection | Engine) -> Any:
    """The dialect's ``insert`` (PostgreSQL's or SQLite's), which has
    ``on_conflict_do_nothing`` / ``on_conflict_do_update``: the one place that
    chooses between them."""
    from sqlalchemy.dialects import postgresql, sqlite

    return postgresql.insert if bind.dialect.name == "postgresql" else sqlite.insert


def normalize_url(url: str) -> str:
    """``postgres://`` and ``postgresql://`` mean psycopg 3 here."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def is_postgres(engine_or_url: Engine | str) -> bool:
    url = engine_or_url if isinstance(engine_or_url, str) else str(engine_or_url.url)
    return url.startswith(("postgresql", "postgres"))


def make_engine(
    url: str,
    *,
    pool_size: int = 5,
    sqlite_busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS,
    **kwargs: Any,
) -> Engine:
    """An engine configured for stripeline's access patterns.

    SQLite: WAL journal, ``synchronous=FULL`` (a 2xx means the event is on
    disk), a busy timeout, and explicit ``BEGIN`` so SAVEPOINTs work; write
    transactions start with ``BEGIN IMMEDIATE`` so that two writers queue on
    the lock instead of failing on a stale snapshot. PostgreSQL: idle connections
    are pinged before use (``_ping_idle_connections``) so a
    restarted server is reconnected to without a restart of ours.
    """
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": sqlite_busy_timeout_ms / 1000},
            poolclass=kwargs.pop("poolclass", None) or _sqlite_pool(url),
            **kwargs,
        )
        _configure_sqlite(engine, sqlite_busy_timeout_ms)
        return engine
    connect_args = {"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S, **kwargs.pop("connect_args", {})}
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=kwargs.pop("max_overflow", 10),
        pool_timeout=kwargs.pop("pool_timeout", 10),
        connect_args=connect_args,
        **kwargs,
    )
    _ping_idle_connections(engine)
    return engine


def _ping_idle_connections(engine: Engine) -> None:
    """Pre-ping, but only connections idle for a while.

    A ping on every checkout is a round trip on every read (a third of a
    mirror lookup). A connection used within ``PING_AFTER_IDLE_SECONDS`` is
    taken as alive; if the server went away meanwhile, the first statement
    fails, SQLAlchemy drops the pool's connections, and the next one is new.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        record.info["used"] = time.monotonic()

    @event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_connection: Any, record: Any) -> None:
        record.info["used"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        if time.monotonic() - record.info.get("used", 0.0) < PING_AFTER_IDLE_SECONDS:
            return
        try:
            cursor = dbapi_connection.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
            dbapi_connection.rollback()
        except Exception as exc:
            # The pool retries the checkout with a new connection.
            raise DisconnectionError() from exc


def _sqlite_pool(url: str) -> Any:
    from sqlalchemy.pool import QueuePool, StaticPool

    database = make_url(url).database
    if not database or database == ":memory:":
        return StaticPool
    return QueuePool


def _configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if mode == "IMMEDIATE" else "BEGIN")


@contextmanager
def connect(engine: Engine, *, readonly: bool = False) -> Iterator[Connection]:
    """A connection in a transaction, committed on success.

    ``readonly=True`` starts a deferred SQLite transaction that never takes the
    write lock (reads in WAL mode never wait for the writer); on PostgreSQL it
    runs in autocommit, each statement its own snapshot.
    """
    conn = engine.connect()
    if readonly:
        # SQLite: a deferred transaction never takes the write lock.
        # PostgreSQL: autocommit, so a read costs no BEGIN and COMMIT round trips.
        conn = conn.execution_options(
            sqlite_begin="DEFERRED",
            **({} if engine.dialect.name == "sqlite" else {"isolation_level": "AUTOCOMMIT"}),
        )
    try:
        with conn.begin():
            yield conn
    finally:
        conn.close()


def read(engine: Engine, fn: Callable[[Connection], T]) -> T:
    """Run the read-only ``fn`` on a connection; once more on a new one if the
    pooled connection had died (the server restarted since it was last used:
    see ``_ping_idle_connections``). Reads are safe to repeat."""
    try:
        with connect(engine, readonly=True) as conn:
            return fn(conn)
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
    with connect(engine, readonly=True) as conn:
        return fn(conn)


def alembic_config(engine: Engine | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", "stripeline.db:migrations")
    if engine is not None:
        cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to ``revision`` (Alembic ``upgrade``)."""
    command.upgrade(alembic_config(engine), revision)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def migrations_current(engine: Engine) -> bool:
    """True when the database is at the newest migration."""
    return current_revision(engine) == head_revision()


def null_pool_engine(url: str) -> Engine:
    """A short-lived engine for one-off checks (doctor, CLI)."""
    return (
        make_engine(url, poolclass=NullPool)
        if url.startswith("sqlite")
        else create_engine(
            normalize_url(url),
            poolclass=NullPool,
            connect_args={"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S},
        )
    )
