"""Group commit for the webhook route.

Requests hand their verified event to a writer thread and wait. The writer
takes everything queued (up to ``max_batch``), writes it in one short
transaction, commits, and only then answers each request: every 2xx means the
event is on disk, and under load one commit (one fsync) serves many requests.
SQLite gets exactly one writer thread — its single write lock makes more
pointless; PostgreSQL may use a few.

A group the database refuses for any reason but being unavailable is written
again row by row, so that one event it cannot store (the envelope's checks
should have refused it already) fails alone, with a 400, and never takes the
events committed with it down.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
    StatementError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import PoolProxiedConnection

from stripeline import inbox
from stripeline.db.engine import WriteLockedConnection
from stripeline.errors import DatabaseUnavailable, EnvelopeError
from stripeline.log import get_logger

log = get_logger("stripeline.web")

_Item = tuple[inbox.IncomingEvent, asyncio.Future[bool], asyncio.AbstractEventLoop]
_STOP = None
_Raw = PoolProxiedConnection
_T = TypeVar("_T")
#: Shortest time between two NOTIFYs of one process. A NOTIFY makes
#: PostgreSQL serialise commits on a server-wide lock; under load one per
#: interval wakes the workers just as well, and one owed is sent when idle.
NOTIFY_INTERVAL = 0.05
#: SQLite: seconds between two tries for the write lock another process holds.
BUSY_POLL = 0.0005


class IngestWriter:
    """Writes incoming events to the inbox in small committed groups."""

    def __init__(
        self,
        engine: Engine,
        *,
        threads: int = 1,
        max_batch: int = 128,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._max_batch = max_batch
        self._on_commit = on_commit
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._run, name=f"stripeline-ingest-{i}", daemon=True)
            for i in range(threads)
        ]
        self._started = False
        self._notify_lock = threading.Lock()
        self._last_notify = 0.0
        self._notify_owed = False

    def start(self) -> None:
        if not self._started:
            self._started = True
            for thread in self._threads:
                thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        if not self._started:
            return
        for _ in self._threads:
            self._queue.put(_STOP)
        for thread in self._threads:
            thread.join(timeout)
        self._started = False

    async def submit(self, item: inbox.IncomingEvent) -> bool:
        """Store ``item``; True if new. Raises DatabaseUnavailable."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._queue.put((item, future, loop))
        return await future

    def _run(self) -> None:
        # Each writer keeps its connection: no pool checkout (and pre-ping
        # round trip) per group. A failed group drops it; the next one
        # connects afresh, which is how the writer recovers from an outage.
        conn: _Raw | None = None
        try:
            while True:
                try:
                    first = self._queue.get(timeout=NOTIFY_INTERVAL if self._notify_owed else None)
                except queue.Empty:
                    conn = self._send_owed_notify(conn)
                    continue
                if first is _STOP:
                    return
                batch, stop_after = self._gather(first)
                conn = self._write(conn, batch)
                if stop_after:
                    return
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()

    def _gather(self, first: _Item) -> tuple[list[_Item], bool]:
        """``first`` and whatever else is queued, up to ``max_batch``."""
        batch = [first]
        while len(batch) < self._max_batch:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is _STOP:
                return batch, True
            batch.append(nxt)
        return batch, False

    def _connect(self) -> _Raw:
        try:
            conn = self._engine.raw_connection()
            driver: Any = conn.dbapi_connection
            if isinstance(driver, WriteLockedConnection) and driver.write_lock is not None:
                # A SQLite file: this connection waits for the write lock its
                # own way (``_begin``), so it leaves the pool for good (its
                # busy timeout is 0 until it is closed).
                conn.detach()
                driver.execute("PRAGMA busy_timeout = 0")
            return conn
        except Exception as exc:
            self._raise(exc, None)

    def _begin(self, cursor: Any, driver: Any) -> None:
        """SQLite's ``BEGIN IMMEDIATE``, after the process's other writers to
        the file (``WriteLock``: in turn, no sleeping).

        A writer in another process (``stripeline worker``) may hold the
        lock: SQLite's busy handler would sleep 1, 2, 5 … up to 100 ms at a
        time between tries and wake long after it committed. The writer tries
        again every ``BUSY_POLL`` seconds instead, up to the busy timeout."""
        if not isinstance(driver, WriteLockedConnection) or driver.write_lock is None:
            cursor.execute("BEGIN IMMEDIATE")  # in memory: one connection, never busy
            return
        driver.take_write_lock()
        try:
            deadline = time.monotonic() + driver.lock_timeout
            while True:
                try:
                    cursor.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                        raise
                time.sleep(BUSY_POLL)
        except BaseException:
            driver.give_write_lock()
            raise

    def _store(self, conn: _Raw | None, batch: Sequence[_Item]) -> tuple[_Raw, list[bool]]:
        """Store the group on ``conn`` (or a new connection); a connection that
        fails is closed here, whatever the error."""
        items = [item for item, _, _ in batch]
        if conn is not None:
            try:
                return conn, self._commit(conn, items)
            except BaseException as exc:
                _discard(conn)
                # The kept connection had died (the database restarted since
                # the last group): nothing was written; try a new connection.
                if not (isinstance(exc, DBAPIError) and exc.connection_invalidated):
                    raise
        conn = self._connect()
        try:
            return conn, self._commit(conn, items)
        except BaseException:
            _discard(conn)
            raise

    def _raise(self, exc: Exception, conn: _Raw | None) -> NoReturn:
        wrapped = self._wrap(exc, conn)
        if wrapped is exc:
            raise exc
        raise wrapped from exc

    def _wrap(self, exc: Exception, conn: _Raw | None) -> Exception:
        """A driver's error as SQLAlchemy's (``OperationalError``, ``DataError``
        …, with ``connection_invalidated``), as if SQLAlchemy had run the
        statement; anything else (a value the driver cannot bind) as it is."""
        dialect = self._engine.dialect
        base = dialect.loaded_dbapi.Error
        if not isinstance(exc, base):
            return exc
        driver = conn.dbapi_connection if conn is not None else None
        return DBAPIError.instance(
            None,
            None,
            exc,
            base,
            hide_parameters=True,
            connection_invalidated=driver is not None and dialect.is_disconnect(exc, driver, None),
            dialect=dialect,
        )

    def _transaction(self, conn: _Raw, work: Callable[[Any], _T]) -> _T:
        """Run ``work(cursor)`` in one committed transaction on ``conn``
        (SQLite: ``BEGIN IMMEDIATE``, after this file's other writers in the
        process); rolled back if anything fails."""
        driver = conn.dbapi_connection
        try:
            cursor = conn.cursor()
            try:
                if not self._postgres:
                    self._begin(cursor, driver)
                try:
                    result = work(cursor)
                    conn.commit()
                except BaseException:
                    with contextlib.suppress(Exception):
                        conn.rollback()
                    raise
            finally:
                with contextlib.suppress(Exception):
                    cursor.close()
        except Exception as exc:
            self._raise(exc, conn)
        return result

    def _commit(self, conn: _Raw, items: list[inbox.IncomingEvent]) -> list[bool]:
        postgres = self._postgres
        notify = inbox.notify_sql(postgres)

        def fast(cursor: Any) -> bool:
            if not inbox.insert_new(cursor, items, postgres=postgres):
                raise _Short
            if notify is not None and any(item.status == "pending" for item in items):
                self._maybe_notify(cursor, notify)
            return True

        def counting(cursor: Any) -> list[bool]:
            results = inbox.store_counting(cursor, items, postgres=postgres)
            if notify is not None and inbox.wakes_workers(items, results):
                self._maybe_notify(cursor, notify)
            return results

        try:
            self._transaction(conn, fast)
        except _Short:
            # Some event was held already (a retry, a resend) or came twice:
            # nothing of the group was kept; count each delivery exactly.
            return self._transaction(conn, counting)
        return [True] * len(items)

    def _maybe_notify(self, cursor: Any, notify: str) -> None:
        if self._take_notify():
            cursor.execute(notify)
        else:
            self._notify_owed = True

    def _take_notify(self) -> bool:
        """True if this thread may NOTIFY now (see ``NOTIFY_INTERVAL``)."""
        with self._notify_lock:
            now = time.monotonic()
            if now - self._last_notify < NOTIFY_INTERVAL:
                return False
            self._last_notify = now
            self._notify_owed = False
            return True

    def _send_owed_notify(self, conn: _Raw | None) -> _Raw | None:
        """Idle with a NOTIFY owed: send it (workers also poll, so a failure
        here only delays them)."""
        if not self._take_notify():
            return conn
        notify = inbox.notify_sql(self._postgres)
        try:
            if conn is None:
                conn = self._connect()
            if notify is not None:
                self._transaction(conn, lambda cursor: cursor.execute(notify))
        except Exception:
            if conn is not None:
                _discard(conn)
            return None
        return conn

    def _write(self, conn: _Raw | None, batch: Sequence[_Item]) -> _Raw | None:
        try:
            conn, results = self._store(conn, batch)
        except Exception as exc:
            # Whatever went wrong, nothing was committed.
            _log_failure(exc, batch)
            if len(batch) > 1 and not _unavailable(exc):
                # Perhaps one row the database refuses: the others must not
                # fail with it.
                return self._write_one_by_one(batch)
            for _, future, loop in batch:
                _settle(loop, _fail, future, exc)
            return None
        _settle_all(batch, results)
        if self._on_commit is not None:
            self._on_commit()
        return conn

    def _write_one_by_one(self, batch: Sequence[_Item]) -> _Raw | None:
        """Each row in its own transaction: a refused one is answered 400,
        the others as usual; once the database is unavailable, the rest 503."""
        conn: _Raw | None = None
        committed = False
        for index, (item, future, loop) in enumerate(batch):
            try:
                conn, (new,) = self._store(conn, [(item, future, loop)])
            except Exception as exc:
                conn = None
                _log_failure(exc, [(item, future, loop)])
                if _unavailable(exc):
                    for _, waiting, its_loop in batch[index:]:
                        _settle(its_loop, _fail, waiting, exc)
                    break
                _settle(loop, _fail, future, exc)
                continue
            committed = True
            _settle(loop, _resolve, future, new)
        if committed and self._on_commit is not None:
            self._on_commit()
        return conn


def _unavailable(exc: BaseException) -> bool:
    """The database (or the way to it) failed, not the rows given to it."""
    return (isinstance(exc, DBAPIError) and exc.connection_invalidated) or isinstance(
        exc, OperationalError | InterfaceError | DisconnectionError | PoolTimeout
    )


def _refused(exc: BaseException) -> bool:
    """The database (or its driver) refused a value of the row itself: a
    data exception or a constraint (retrying it later would fail again)."""
    if isinstance(exc, DataError | IntegrityError):
        return True
    cause = exc.orig if isinstance(exc, StatementError) else exc
    return isinstance(cause, ValueError | OverflowError)


def _log_failure(exc: BaseException, batch: Sequence[_Item]) -> None:
    # getattr: a failure may come from an item that is not whole (a bug upstream).
    log_ingest_failure(exc, [getattr(item.envelope, "id", None) for item, _, _ in batch])


def log_ingest_failure(exc: BaseException, event_ids: Sequence[str | None]) -> None:
    """Log why a group of events (its ids) could not be stored."""
    if isinstance(exc, SQLAlchemyError) or _refused(exc):
        log.error(
            "ingest_database_error",
            action="ingest_database_error",
            events=len(event_ids),
            event_id=event_ids[0] if len(event_ids) == 1 else None,
            error=(str(getattr(exc, "orig", None) or exc) or type(exc).__name__).splitlines()[0][
                :300
            ],
        )
    else:
        log.exception("ingest_failed", action="ingest_failed", events=len(event_ids))


class _Short(Exception):
    """``insert_new`` stored fewer rows than the group holds."""


def _discard(conn: _Raw) -> None:
    with contextlib.suppress(Exception):
        conn.invalidate()
        conn.close()


def _settle(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: object) -> None:
    # A request whose event loop has gone (server shutting down) is past helping.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, *args)


def _settle_all(batch: Sequence[_Item], results: Sequence[bool]) -> None:
    """Answer a committed group: one wake-up of each event loop, not one per request."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[bool], bool]]] = {}
    for (_, future, loop), new in zip(batch, results, strict=True):
        by_loop.setdefault(loop, []).append((future, new))
    for loop, answers in by_loop.items():
        _settle(loop, _resolve_all, answers)


def _resolve_all(answers: list[tuple[asyncio.Future[bool], bool]]) -> None:
    for future, new in answers:
        _resolve(future, new)


def _resolve(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[bool], exc: BaseException) -> None:
    if not future.done():
        if _refused(exc):
            future.set_exception(
                EnvelopeError("not_an_event", "the database cannot store a field of this event")
            )
        else:
            future.set_exception(DatabaseUnavailable())
