"""A SQLAlchemy engine on Django's own database connection.

Why: a handler's Django ORM writes must commit together with the event's
``processed`` mark, or not at all. Two connections cannot share a
transaction; one connection can. So stripeline's engine, in a Django project,
does not open connections of its own: each ``engine.connect()`` borrows the
calling thread's Django connection (``django.db.connections[alias]``), and
the worker runs an event's handlers with that same Django connection bound
in their thread. The ORM's ``INSERT`` and stripeline's ``UPDATE … SET
status = 'processed'`` go down one DBAPI connection, inside the one
transaction SQLAlchemy begins and commits.

The rules of the loan (``_borrow``/``DjangoConnection.close``):

* The thread's Django connection is lent only when it is free: in autocommit
  mode, outside ``transaction.atomic()`` and not already lent. While lent,
  Django's autocommit is off (``set_autocommit(False)``) and SQLAlchemy alone
  begins, commits and rolls back; given back, it is rolled back (SQLAlchemy's
  reset on return: nothing is left open) and autocommit is restored.
* Otherwise (inside the user's ``atomic()`` block, or a second connection in
  the same thread) a connection of its own is opened and closed on return:
  stripeline's writes then commit on their own, never the user's
  transaction half-way.
* A connection SQLAlchemy invalidates (a handler given up past its timeout, a
  server gone) is closed for real, and the thread gets a new Django
  connection: whoever still holds the old one (the given-up handler) fails on
  its next statement instead of writing outside any transaction.

SQLAlchemy reads what Django's connection returns as its own driver would:
on PostgreSQL its cursors are plain ``psycopg.Cursor`` objects with psycopg's
JSON loaders (Django loads ``jsonb`` as text); on SQLite the values Django's
``detect_types`` converters made into ``datetime``/``date``/``time`` objects
are handed back as the ISO strings SQLAlchemy parses itself.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.pool import NullPool

from stripeline.db.engine import make_engine, normalize_url
from stripeline.log import get_logger

__all__ = ["DjangoConnection", "bound_connection", "django_engine"]

log = get_logger("stripeline.django")

#: The attribute set on a Django connection while SQLAlchemy holds it.
_LENT = "_stripeline_lent"


def _as_text(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat(" ")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return value


def _row(row: Any) -> Any:
    if row is None:
        return None
    return tuple(_as_text(v) for v in row)


class _SqliteCursor:
    """A sqlite3 cursor of Django's connection, its rows as SQLAlchemy expects
    them (Django's ``detect_types`` turned dates into objects: undone)."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)

    def __iter__(self) -> Iterator[Any]:
        return (_row(r) for r in self._cursor)

    def execute(self, *args: Any) -> _SqliteCursor:
        self._cursor.execute(*args)
        return self

    def executemany(self, *args: Any) -> _SqliteCursor:
        self._cursor.executemany(*args)
        return self

    def fetchone(self) -> Any:
        return _row(self._cursor.fetchone())

    def fetchmany(self, *args: Any) -> list[Any]:
        return [_row(r) for r in self._cursor.fetchmany(*args)]

    def fetchall(self) -> list[Any]:
        return [_row(r) for r in self._cursor.fetchall()]


class DjangoConnection:
    """The DBAPI connection of a Django connection, lent to SQLAlchemy.

    Everything is the driver's own connection's, except ``cursor()`` (see the
    module's docstring) and ``close()``, which gives the connection back to
    Django instead of closing it.
    """

    _own = frozenset({"_wrapper", "_raw", "_lent", "_invalidated", "_vendor", "_notices"})

    def __init__(self, wrapper: BaseDatabaseWrapper, *, lent: bool) -> None:
        self._wrapper = wrapper
        self._raw = wrapper.connection
        self._lent = lent
        self._invalidated = False
        self._vendor = wrapper.vendor
        self._notices = False

    @property
    def django(self) -> BaseDatabaseWrapper:
        """The Django connection (``DatabaseWrapper``) this one belongs to."""
        return self._wrapper

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._own:
            object.__setattr__(self, name, value)
        else:  # isolation_level, autocommit …: the driver's connection's
            setattr(self._raw, name, value)

    def add_notice_handler(self, handler: Callable[..., Any]) -> None:
        # SQLAlchemy adds its handler at each checkout: once is enough.
        if not self._notices:
            self._notices = True
            self._raw.add_notice_handler(handler)

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        if self._vendor == "postgresql":
            import psycopg
            from psycopg.types.json import JsonbLoader, JsonLoader

            cursor: Any = (
                psycopg.ServerCursor(self._raw, args[0], **kwargs)
                if args
                else psycopg.Cursor(self._raw)
            )
            cursor.adapters.register_loader("jsonb", JsonbLoader)
            cursor.adapters.register_loader("json", JsonLoader)
            return cursor
        return _SqliteCursor(self._raw.cursor(*args, **kwargs))

    def close(self) -> None:
        wrapper = self._wrapper
        if self._invalidated:
            # Closed for real: a holder of the old Django connection fails.
            try:
                self._raw.close()
            finally:
                if self._lent and connections[wrapper.alias] is wrapper:
                    connections[wrapper.alias] = connections.create_connection(wrapper.alias)
            return
        if self._lent:
            setattr(wrapper, _LENT, False)
            if wrapper.run_on_commit:
                # transaction.on_commit() in a handler's atomic(): SQLAlchemy,
                # not Django, committed; Django never runs them. Said, dropped.
                log.warning(
                    "django_on_commit_dropped",
                    action="django_on_commit_dropped",
                    callbacks=len(wrapper.run_on_commit),
                    hint="transaction.on_commit() does not run in handlers: use event.once()",
                )
                wrapper.run_on_commit = []
            wrapper.set_autocommit(True)
        else:
            wrapper.close()


def _borrow(alias: str) -> DjangoConnection:
    """The calling thread's Django connection if it is free, else a new one
    (see the module's docstring)."""
    wrapper = connections[alias]
    if getattr(wrapper, _LENT, False) or wrapper.in_atomic_block or not wrapper.get_autocommit():
        own = connections.create_connection(alias)
        own.ensure_connection()
        own.set_autocommit(False)
        return DjangoConnection(own, lent=False)
    if wrapper.connection is not None and wrapper.errors_occurred and not wrapper.is_usable():
        wrapper.close()  # broken (not CONN_MAX_AGE: the worker would reconnect each time)
    wrapper.ensure_connection()
    wrapper.set_autocommit(False)
    setattr(wrapper, _LENT, True)
    return DjangoConnection(wrapper, lent=True)


def django_engine(url: str, alias: str) -> Engine:
    """An engine whose connections are borrowed from Django (``alias``).

    ``url`` (``conf.database_url``) names the dialect and, on PostgreSQL, the
    database the worker's ``LISTEN`` connection opens; no pool: Django's
    connection is the pool.
    """

    def creator() -> DjangoConnection:
        return _borrow(alias)

    if url.startswith("sqlite"):
        engine = make_engine(url, creator=creator, poolclass=NullPool)
    else:
        engine = create_engine(
            normalize_url(url), creator=creator, poolclass=NullPool, use_native_hstore=False
        )

    @event.listens_for(engine, "invalidate")
    def _on_invalidate(dbapi_connection: Any, _record: Any, _exc: Any) -> None:
        if isinstance(dbapi_connection, DjangoConnection):
            dbapi_connection._invalidated = True

    return engine


@contextmanager
def bound_connection(connection: Any, alias: str) -> Iterator[None]:
    """Make ``connection``'s Django connection (a ``DjangoConnection``'s, as
    lent to the worker) this thread's ``connections[alias]`` meanwhile: the
    ORM in a handler writes in the event's transaction."""
    if not isinstance(connection, DjangoConnection):
        yield
        return
    wrapper = connection.django
    previous = connections[alias]
    wrapper.inc_thread_sharing()
    connections[alias] = wrapper
    try:
        yield
    finally:
        connections[alias] = previous
        wrapper.dec_thread_sharing()
