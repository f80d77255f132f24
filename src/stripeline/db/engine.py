"""Engines for SQLite (WAL, one writer) and PostgreSQL (psycopg 3), and migrations."""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    Column,
    Connection,
    Engine,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    create_engine,
    event,
    func,
    inspect,
    select,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.pool import NullPool

from stripeline.errors import SecondWriteTransaction

#: How long SQLite waits for the write lock before giving up (and we answer 503).
SQLITE_BUSY_TIMEOUT_MS = 5_000
#: SQLite: seconds between two tries of ``BEGIN IMMEDIATE`` while another
#: process holds the write lock (SQLite's busy handler sleeps 1, 2, 5 … 100 ms).
BUSY_POLL_SECONDS = 0.0005
#: SQLite: longest a background writer (the worker) lets writers of other
#: processes that wait for the write lock go first, before it queues as they do.
YIELD_SECONDS = 0.05
#: Beside the database file: where writers of any process say they wait (``WriteLock``).
WRITERS_FILE_SUFFIX = "-stripeline-writers"
#: SQLite checkpoints the write-ahead log into the database (a copy and an
#: fsync, tens of milliseconds) in the thread whose commit takes the log past
#: ``wal_autocheckpoint`` pages. Background transactions (the worker's) do it
#: at SQLite's usual 1,000 pages (4 MB); other writers, the webhook writer
#: among them (whose requests would wait for it), only past 10,000 (40 MB),
#: should no worker commit meanwhile.
BACKGROUND_AUTOCHECKPOINT_PAGES = 1_000
FOREGROUND_AUTOCHECKPOINT_PAGES = 10_000
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
    restarted server is reconnected to without a restart of ours, and a
    statement sent with the ``CUSTOM_PLAN`` execution option is planned for
    its own values every time (``_custom_plans``).
    """
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={
                "check_same_thread": False,
                "timeout": sqlite_busy_timeout_ms / 1000,
                "factory": WriteLockedConnection,
                **kwargs.pop("connect_args", {}),
            },
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
    _custom_plans(engine)
    return engine


#: An execution option: on PostgreSQL, plan this statement for its values on
#: every execution, never from a prepared statement's generic plan.
CUSTOM_PLAN = "stripeline_custom_plan"


def _custom_plans(engine: Engine) -> None:
    """Statements sent with ``CUSTOM_PLAN`` are not prepared by psycopg.

    psycopg prepares a statement on the server after its fifth execution, and
    PostgreSQL may then keep one generic plan for it for the connection's
    life. A plan made while a table was small (a new database: a sequential
    scan is cheapest) stays until the table's next ANALYZE, however large the
    table has grown meanwhile: a lookup of 100 ids among 20,000 rows took
    34 ms that way, instead of 0.5 ms. Planning each time costs ~0.1 ms."""

    @event.listens_for(engine, "do_execute")
    def _execute(cursor: Any, statement: str, parameters: Any, context: Any) -> bool | None:
        if context.execution_options.get(CUSTOM_PLAN):
            cursor.execute(statement, parameters, prepare=False)
            return True
        return None


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


#: While handlers run: the SQLite file and the DBAPI connection of their event.
_handler_event: ContextVar[tuple[str, Any] | None] = ContextVar(
    "stripeline_handler_event", default=None
)
#: Statements that take SQLite's write lock (``BEGIN IMMEDIATE`` included).
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER")


def sqlite_file(engine: Engine) -> str | None:
    """The SQLite database file of ``engine`` (None: in memory, one connection)."""
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return os.path.realpath(database)


def _takes_write_lock(statement: str) -> bool:
    words = statement.lstrip().upper().split(None, 2)
    if not words:
        return False
    if words[0] == "BEGIN":
        return len(words) > 1 and words[1] in ("IMMEDIATE", "EXCLUSIVE")
    return words[0] in _WRITES


@contextmanager
def handler_transaction(conn: Connection) -> Iterator[None]:
    """Mark the code inside, and what runs in a context copied inside (the
    worker's handler thread takes one per event), as handlers of the event
    processed on ``conn``.

    On SQLite, one connection writes at a time and ``conn`` holds the lock
    until the event commits: a write begun meanwhile on another connection to
    the same file (``Mirror(app.engine).link_customer``, ``app.once``,
    ``app.engine.begin()``) would wait for its own event, out of the busy
    timeout, and fail. Inside this block it fails at once instead, with
    ``SecondWriteTransaction``; reads on other connections go on (WAL).
    The mark is a context variable: it follows into the handler's async tasks
    and ``asyncio.to_thread``. PostgreSQL: nothing to refuse (a second
    transaction does not wait for the event's, unless it touches its rows).
    """
    database = sqlite_file(conn.engine) if conn.dialect.name == "sqlite" else None
    if database is None:
        yield
        return
    token = _handler_event.set((database, conn.connection.dbapi_connection))
    try:
        yield
    finally:
        _handler_event.reset(token)


class WriteLock:
    """A first-come, first-served lock: the threads of one process that write
    to one SQLite file take it before ``BEGIN IMMEDIATE`` and give it back
    once they commit or roll back.

    SQLite's own lock has no queue: a writer that finds it taken sleeps in
    the busy handler (1, 2, 5, 10 … 100 ms at a time) and may wake long after
    the holder finished, or lose the race again. Inside a process this lock
    hands the write lock over in order instead: the webhook writer waits for
    at most the transaction in progress (the worker's are short).

    Across processes, writers try ``BEGIN IMMEDIATE`` every
    ``BUSY_POLL_SECONDS`` instead of sleeping in the busy handler, and those
    that want the lock say so (``announce``) with a shared ``flock`` on a file
    beside the database (``WRITERS_FILE_SUFFIX``): a background writer (the
    worker, ``connect(background=True)``) sees them (``others_waiting``) and
    lets them go first, for at most ``YIELD_SECONDS``, before each of its
    transactions. Without the file (a read-only directory) the writers only
    poll.
    """

    def __init__(self, path: str | None = None) -> None:
        self._mutex = threading.Lock()
        self._held = False
        self._waiters: deque[threading.Lock] = deque()
        #: The connection holding the lock, when known (None: unknown, or
        #: being handed over).
        self._owner: weakref.ref[Any] | None = None
        #: The writers file (None: in memory, or no file to lock), and the
        #: process's two descriptors of it: one announces, one probes.
        self._path = None if path is None else path + WRITERS_FILE_SUFFIX
        self._files: tuple[int, int] | None = None
        self._files_pid = 0
        #: This process's writers that announced themselves; whether its
        #: shared ``flock`` is taken.
        self._announcers: weakref.WeakSet[Any] = weakref.WeakSet()
        self._announced = False

    def acquire(self, timeout: float, owner: Any = None) -> bool:
        """Take the lock for ``owner`` (a connection), waiting at most
        ``timeout`` seconds; False: not taken.

        A holder that is garbage-collected without letting go (a connection
        dropped without commit, rollback or close) is found while waiting,
        and the lock passes on: it never stays held by nobody."""
        deadline = time.monotonic() + timeout
        with self._mutex:
            if not self._held:
                self._held = True
                self._owner = None if owner is None else weakref.ref(owner)
                return True
            waiter = threading.Lock()
            waiter.acquire()
            self._waiters.append(waiter)
        while True:
            remaining = deadline - time.monotonic()
            if waiter.acquire(timeout=max(0.0, min(remaining, ORPHAN_CHECK_SECONDS))):
                break  # handed over by ``release``
            with self._mutex:
                if waiter not in self._waiters:
                    break  # handed over just as the wait ran out
                if self._owner is not None and self._owner() is None:
                    self._hand_over()  # to the first waiter, perhaps this one
                    continue
                if remaining <= 0:
                    self._waiters.remove(waiter)
                    return False
        self._owner = None if owner is None else weakref.ref(owner)
        return True

    def release(self) -> None:
        """Give the lock to the longest waiting thread, or free it."""
        with self._mutex:
            self._hand_over()

    def _hand_over(self) -> None:
        self._owner = None
        if self._waiters:
            self._waiters.popleft().release()  # still held: now by that thread
        else:
            self._held = False

    # -- across processes --------------------------------------------------

    def announce(self, writer: Any) -> None:
        """``writer`` (a connection) wants the write lock, or holds it, until
        ``withdraw``: background writers of other processes let it go first."""
        with self._mutex:
            self._announcers.add(writer)
            self._sync_announced()

    def withdraw(self, writer: Any) -> None:
        with self._mutex:
            self._announcers.discard(writer)
            self._sync_announced()

    def others_waiting(self) -> bool:
        """Whether a writer of another process announced itself. False while
        one of this process does (it is queued here, first come, first served;
        the file cannot tell the two apart then), or without the file."""
        with self._mutex:
            self._sync_announced()  # an announcer garbage-collected meanwhile
            if self._announced:
                return False
            files = self._open()
            if files is None:
                return False
            try:
                fcntl.flock(files[1], fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    return True
                return False
            fcntl.flock(files[1], fcntl.LOCK_UN)
            return False

    def anyone_waiting(self, holder: Any = None) -> bool:
        """Whether a writer other than ``holder``, of this process or of
        another, announced that it wants the lock."""
        with self._mutex:
            if any(writer is not holder for writer in self._announcers):
                return True
        return self.others_waiting()

    def yield_to_others(self, timeout: float = YIELD_SECONDS) -> None:
        """Wait while writers of other processes announced (at most ``timeout``)."""
        deadline = time.monotonic() + timeout
        while self.others_waiting() and time.monotonic() < deadline:
            time.sleep(BUSY_POLL_SECONDS)

    def _sync_announced(self) -> None:
        """Hold the shared ``flock`` while any announcer of this process lives."""
        want = len(self._announcers) > 0
        if want == self._announced:
            return
        files = self._open()
        if files is None:
            return
        try:
            fcntl.flock(files[0], fcntl.LOCK_SH if want else fcntl.LOCK_UN)
        except OSError:
            return
        self._announced = want

    def _open(self) -> tuple[int, int] | None:
        """The writers file, opened once per process (a forked child opens
        its own: ``flock`` locks belong to the open file, shared across fork)."""
        if self._path is None:
            return None
        pid = os.getpid()
        if self._files is not None and self._files_pid == pid:
            return self._files
        self._files, self._files_pid, self._announced = None, pid, False
        descriptors: list[int] = []
        try:
            for _ in range(2):
                descriptors.append(_open_writers_file(self._path))
        except OSError:
            for fd in descriptors:
                os.close(fd)
            self._path = None  # no file: writers only poll
            return None
        self._files = (descriptors[0], descriptors[1])
        return self._files


def _open_writers_file(path: str) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except PermissionError:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)  # flock needs no write access


#: How often a thread waiting for a ``WriteLock`` checks that its holder still exists.
ORPHAN_CHECK_SECONDS = 0.05
_write_locks: dict[str, WriteLock] = {}
_write_locks_mutex = threading.Lock()


def sqlite_write_lock(path: str) -> WriteLock:
    """The process's ``WriteLock`` for the SQLite file at ``path``."""
    path = os.path.realpath(path)
    with _write_locks_mutex:
        lock = _write_locks.get(path)
        if lock is None:
            lock = _write_locks[path] = WriteLock(path)
        return lock


class WriteLockedConnection(sqlite3.Connection):
    """A SQLite connection that gives the process's ``WriteLock`` back when
    its write transaction ends (commit, rollback or close), whatever ended it."""

    write_lock: WriteLock | None = None
    holds_write_lock = False
    #: Whether this connection announced itself to other processes' writers.
    announced = False
    #: How long to wait for the lock: the connection's busy timeout.
    lock_timeout = SQLITE_BUSY_TIMEOUT_MS / 1000
    #: The connection's ``wal_autocheckpoint`` (``checkpoint_at``).
    autocheckpoint = FOREGROUND_AUTOCHECKPOINT_PAGES

    def checkpoint_at(self, pages: int) -> None:
        """Checkpoint after the commits that take the log past ``pages``."""
        if pages != self.autocheckpoint:
            self.execute(f"PRAGMA wal_autocheckpoint = {int(pages)}")
            self.autocheckpoint = pages

    def take_write_lock(self, *, announce: bool = True) -> None:
        """Wait (at most the busy timeout) for this file's other writers in
        the process, before ``BEGIN IMMEDIATE``. When the wait runs out,
        SQLite decides, as without the lock. With ``announce``, background
        writers of other processes let this one go first until it gives the
        lock back (``WriteLock.announce``)."""
        if self.write_lock is None or self.holds_write_lock:
            return
        if announce and not self.announced:
            self.write_lock.announce(self)
            self.announced = True
        self.holds_write_lock = self.write_lock.acquire(self.lock_timeout, self)

    def give_write_lock(self) -> None:
        if self.announced:
            self.announced = False
            if self.write_lock is not None:
                self.write_lock.withdraw(self)
        if self.holds_write_lock:
            self.holds_write_lock = False
            if self.write_lock is not None:
                self.write_lock.release()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.give_write_lock()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.give_write_lock()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.give_write_lock()


def _configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    database = sqlite_file(engine)
    lock = sqlite_write_lock(database) if database is not None else None

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        if database is not None:
            cursor.execute(f"PRAGMA wal_autocheckpoint={FOREGROUND_AUTOCHECKPOINT_PAGES}")
        cursor.close()
        if isinstance(dbapi_connection, WriteLockedConnection):
            dbapi_connection.write_lock = lock
            dbapi_connection.lock_timeout = busy_timeout_ms / 1000

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        if options.get("sqlite_begin", "IMMEDIATE") != "IMMEDIATE":
            conn.exec_driver_sql("BEGIN")
            return
        dbapi_connection: Any = conn.connection.dbapi_connection
        if not isinstance(dbapi_connection, WriteLockedConnection) or lock is None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # in memory: one connection
            return
        held = _handler_event.get()
        if held is None or held[0] != database or held[1] is dbapi_connection:
            # (A handler's second writer is refused below, at once: it must
            # not wait for the lock its own event holds.)
            background = bool(options.get("sqlite_background"))
            if background:
                lock.yield_to_others()
            dbapi_connection.checkpoint_at(
                BACKGROUND_AUTOCHECKPOINT_PAGES if background else FOREGROUND_AUTOCHECKPOINT_PAGES
            )
            dbapi_connection.take_write_lock(announce=not background)
        try:
            _begin_immediate(conn, dbapi_connection, busy_timeout_ms)
        except BaseException:
            dbapi_connection.give_write_lock()
            raise

    if database is None:
        return

    @event.listens_for(engine, "before_cursor_execute")
    def _refuse_second_writer(conn: Connection, cursor: Any, statement: str, *_args: Any) -> None:
        held = _handler_event.get()
        if held is None or held[0] != database or cursor.connection is held[1]:
            return
        if _takes_write_lock(statement):
            raise SecondWriteTransaction(
                "a handler began a write on another connection to the SQLite database its "
                "event holds the write lock of: it would wait for its own event and fail. "
                "Write through the event's transaction: event.mirror, event.session, "
                "event.connection, event.once() (see docs/handlers.md)"
            )


def writers_waiting(conn: Connection) -> bool:
    """SQLite: whether a writer, of this process or another, announced that it
    waits for the write lock ``conn``'s transaction holds (the worker then
    commits early, and lets it go first). False on PostgreSQL and in memory."""
    if conn.dialect.name != "sqlite":
        return False
    dbapi_connection = conn.connection.dbapi_connection
    lock = getattr(dbapi_connection, "write_lock", None)
    return lock is not None and lock.anyone_waiting(dbapi_connection)


def _is_busy(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", exc)
    code = getattr(orig, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_BUSY


def _begin_immediate(conn: Connection, dbapi_connection: Any, busy_timeout_ms: int) -> None:
    """``BEGIN IMMEDIATE``, tried again every ``BUSY_POLL_SECONDS`` while
    another process holds the write lock, for at most the busy timeout (then
    SQLite's "database is locked", as before). Polling, not SQLite's busy
    handler, which sleeps 1, 2, 5 … up to 100 ms between tries: it would wake
    tens of milliseconds after the lock was free. The busy timeout is off for
    this statement only (reads keep theirs)."""
    dbapi_connection.execute("PRAGMA busy_timeout = 0")
    restore = f"PRAGMA busy_timeout = {int(busy_timeout_ms)}"
    deadline = time.monotonic() + busy_timeout_ms / 1000
    try:
        while True:
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                break
            except DBAPIError as exc:
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(BUSY_POLL_SECONDS)
    except BaseException:
        with suppress(Exception):  # the error that matters is the one raised
            dbapi_connection.execute(restore)
        raise
    dbapi_connection.execute(restore)


@contextmanager
def connect(
    engine: Engine, *, readonly: bool = False, background: bool = False
) -> Iterator[Connection]:
    """A connection in a transaction, committed on success.

    ``readonly=True`` starts a deferred SQLite transaction that never takes the
    write lock (reads in WAL mode never wait for the writer); on PostgreSQL it
    runs in autocommit, each statement its own snapshot.

    ``background=True`` (the worker's transactions), SQLite: before it takes
    the write lock, the transaction lets writers of other processes that wait
    for it go first (``WriteLock.yield_to_others``): the webhook writer of a
    ``serve --no-worker`` waits for at most the worker's transaction in
    progress, not for the next ones too.
    """
    conn = engine.connect()
    if background and not readonly and engine.dialect.name == "sqlite":
        conn = conn.execution_options(sqlite_background=True)
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


def read(engine: Engine | Connection, fn: Callable[[Connection], T]) -> T:
    """Run the read-only ``fn`` on a connection; once more on a new one if the
    pooled connection had died (the server restarted since it was last used:
    see ``_ping_idle_connections``). Reads are safe to repeat. Given a
    connection (an event's), ``fn`` runs on it, in its transaction."""
    if isinstance(engine, Connection):
        return fn(engine)
    try:
        with connect(engine, readonly=True) as conn:
            return fn(conn)
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
    with connect(engine, readonly=True) as conn:
        return fn(conn)


#: stripeline's Alembic version table. Its own, not Alembic's default
#: ``alembic_version``: a database shared with an application that uses
#: Alembic too keeps the two histories apart.
VERSION_TABLE = "stripeline_alembic_version"
#: Where stripeline kept its revision before: Alembic's default table.
LEGACY_VERSION_TABLE = "alembic_version"
#: A table every stripeline schema has (the legacy table is ours only with it).
_INBOX_TABLE = "stripeline_events"


def alembic_config(engine: Engine | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", "stripeline.db:migrations")
    if engine is not None:
        cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to ``revision`` (Alembic ``upgrade``), first moving
    stripeline's revision out of ``alembic_version`` (``move_version_table``)."""
    move_version_table(engine)
    command.upgrade(alembic_config(engine), revision)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _own_revisions() -> set[str]:
    return {
        script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()
    }


def current_revision(engine: Engine) -> str | None:
    """stripeline's revision (in ``VERSION_TABLE``), None before any migration."""
    with engine.connect() as conn:
        return MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE}
        ).get_current_revision()


def _version_table(name: str) -> Table:
    """An Alembic version table, as Alembic creates it."""
    return Table(
        name,
        MetaData(),
        Column("version_num", String(32), nullable=False),
        PrimaryKeyConstraint("version_num", name=f"{name}_pkc"),
    )


def _legacy_revisions(conn: Connection) -> list[str]:
    tables = inspect(conn)
    if not tables.has_table(LEGACY_VERSION_TABLE) or not tables.has_table(_INBOX_TABLE):
        return []
    legacy = _version_table(LEGACY_VERSION_TABLE)
    rows = conn.execute(select(legacy.c.version_num)).scalars()
    ours = _own_revisions()
    return [row for row in rows if row in ours]


def legacy_revision(engine: Engine) -> str | None:
    """stripeline's revision still in ``alembic_version`` (the layout before
    ``VERSION_TABLE``), which ``stripeline migrate`` moves; else None."""
    with engine.connect() as conn:
        found = _legacy_revisions(conn)
    return found[0] if found else None


def move_version_table(engine: Engine) -> bool:
    """Move stripeline's revision from ``alembic_version`` to ``VERSION_TABLE``
    (one transaction): copied when ``VERSION_TABLE`` does not exist yet, then
    removed from ``alembic_version``, which is dropped if left empty (an
    application's own rows stay). True if anything moved."""
    with engine.begin() as conn:
        found = _legacy_revisions(conn)
        if not found:
            return False
        if not inspect(conn).has_table(VERSION_TABLE):
            version = _version_table(VERSION_TABLE)
            version.create(conn)
            conn.execute(version.insert(), [{"version_num": row} for row in found])
        legacy = _version_table(LEGACY_VERSION_TABLE)
        conn.execute(legacy.delete().where(legacy.c.version_num.in_(found)))
        if conn.execute(select(func.count()).select_from(legacy)).scalar_one() == 0:
            legacy.drop(conn)
    return True


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
