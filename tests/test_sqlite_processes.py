"""SQLite shared by processes (``serve --no-worker`` beside ``stripeline worker``):
a write waiting for another process's lock wakes soon after it is free, the
worker lets another process's waiting writer go first, and the worker's
transactions stay short whatever its batch size.

The other process is a real one (a ``python`` child on the same file): the
locks met here are SQLite's and ``flock``'s, shared by nothing in this process.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy.exc import OperationalError

from stripeline.app import Stripeline
from stripeline.db.engine import YIELD_SECONDS, connect, make_engine, sqlite_write_lock
from stripeline.settings import Settings
from stripeline.worker import Worker
from tests.factories import SECRET, event
from tests.test_worker import put

#: A child process that takes SQLite's write lock (``hold``), or announces
#: itself as a stripeline writer waiting for it (``announce``), and lets go on
#: a line from stdin; it prints ``ready``, then the monotonic time it let go.
_CHILD = textwrap.dedent(
    """
    import sqlite3, sys, time
    from stripeline.db.engine import WriteLockedConnection, sqlite_write_lock
    path, mode = sys.argv[1], sys.argv[2]
    conn = sqlite3.connect(path, isolation_level=None, factory=WriteLockedConnection)
    if mode == "hold":
        conn.execute("BEGIN IMMEDIATE")
    else:
        conn.write_lock = sqlite_write_lock(path)
        conn.take_write_lock()
    print("ready", flush=True)
    sys.stdin.readline()
    if mode == "hold":
        conn.execute("COMMIT")
    else:
        conn.give_write_lock()
    print(time.monotonic(), flush=True)
    sys.stdin.readline()
    """
)


class Child:
    def __init__(self, path: str, mode: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, path, mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdin is not None
        assert self.proc.stdout.readline().strip() == "ready"

    def let_go(self) -> float:
        """Tell the child to let go; the monotonic time it did (system-wide on Linux)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def path(sqlite_url: str) -> str:
    return sqlite_url.removeprefix("sqlite:///")


def test_a_write_wakes_soon_after_another_process_commits(sqlite_url: str, path: str) -> None:
    """Another process holds the write lock for 235 ms. SQLite's busy handler
    would have slept 1, 2, 5 … 50, 100 ms between tries: asleep from 228 to
    328 ms, it would begin some 90 ms after the lock was free. The write
    polls instead and begins within a few (50 ms allows for a loaded machine)."""
    engine = make_engine(sqlite_url)
    child = Child(path, "hold")
    began: list[float] = []
    try:

        def write() -> None:
            with connect(engine) as conn:
                began.append(time.monotonic())
                conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS t_wake (n INTEGER)")

        thread = threading.Thread(target=write)
        start = time.monotonic()
        thread.start()
        time.sleep(max(0.0, start + 0.235 - time.monotonic()))
        assert not began  # still waiting
        released = child.let_go()
        thread.join(10)
        assert began, "the write never began"
        assert began[0] - released < 0.05, f"began {1000 * (began[0] - released):.0f} ms late"
    finally:
        child.close()
        engine.dispose()


def test_a_write_still_gives_up_after_the_busy_timeout(sqlite_url: str, path: str) -> None:
    """Polling changes when the write wakes, not how long it waits: past the
    busy timeout it fails as before ("database is locked"), and the
    connection's busy timeout (for its reads) is what it was."""
    engine = make_engine(sqlite_url, sqlite_busy_timeout_ms=200)
    child = Child(path, "hold")
    try:
        start = time.monotonic()
        with pytest.raises(OperationalError, match="database is locked"), connect(engine):
            pass
        assert time.monotonic() - start >= 0.2
        with connect(engine, readonly=True) as conn:  # the same pooled connection
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 200
    finally:
        child.close()
        engine.dispose()


def test_the_worker_lets_another_process_writer_go_first(sqlite_url: str, path: str) -> None:
    """A writer of another process announces that it waits for the write
    lock: a background transaction (the worker's) begins only once it let
    go, or after ``YIELD_SECONDS`` at most; a foreground one does not wait.
    This process's own writers are not "others" (they queue first come,
    first served in ``WriteLock``)."""
    engine = make_engine(sqlite_url)
    lock = sqlite_write_lock(path)
    child = Child(path, "announce")
    try:
        assert lock.others_waiting()
        with connect(engine) as conn:  # foreground: no waiting
            conn.exec_driver_sql("CREATE TABLE t_first (n INTEGER)")

        # Background: waits for the announcement to go, as long as it lasts.
        began: list[float] = []

        def background() -> None:
            with connect(engine, background=True) as conn:
                began.append(time.monotonic())
                conn.exec_driver_sql("INSERT INTO t_first VALUES (1)")

        thread = threading.Thread(target=background)
        thread.start()
        time.sleep(YIELD_SECONDS / 5)
        assert not began
        released = child.let_go()
        thread.join(10)
        assert began and began[0] >= released
        assert not lock.others_waiting()

        # Announced for good: the background transaction waits YIELD_SECONDS, no more.
        child.close()
        child = Child(path, "announce")
        start = time.monotonic()
        with connect(engine, background=True) as conn:
            waited = time.monotonic() - start
            conn.exec_driver_sql("INSERT INTO t_first VALUES (2)")
        assert YIELD_SECONDS * 0.9 <= waited < 5.0

        # A writer of this process that announces itself is no other's.
        child.close()
        mine: Any = engine.raw_connection().dbapi_connection
        mine.take_write_lock()
        assert mine.announced
        assert not lock.others_waiting()
        mine.give_write_lock()
        mine.close()
    finally:
        child.close()
        engine.dispose()


@pytest.fixture
def app(sqlite_url: str) -> Iterator[Stripeline]:
    settings = Settings(stripe_webhook_secret=SECRET, database_url=sqlite_url)  # type: ignore[arg-type]
    application = Stripeline(settings, engine=make_engine(sqlite_url))
    yield application
    application.dispose()


class _Writer:
    """Stands for a writer of this process that waits for the write lock."""


def _tally(app: Stripeline) -> tuple[list[tuple[int, int]], list[int]]:
    """(events claimed, events processed) by each committed transaction."""
    per_transaction: list[tuple[int, int]] = []
    seen = [0, 0]

    @sa_event.listens_for(app.engine, "commit")
    def tally(conn: Any) -> None:
        # In the committing transaction: its own writes included.
        claimed, processed = conn.connection.dbapi_connection.execute(
            "SELECT count(*) FILTER (WHERE status != 'pending'),"
            " count(*) FILTER (WHERE status = 'processed') FROM stripeline_events"
        ).fetchone()
        per_transaction.append((claimed - seen[0], processed - seen[1]))
        seen[:] = [claimed, processed]

    return per_transaction, seen


def test_the_worker_transactions_are_bounded_by_time_while_a_writer_waits(
    app: Stripeline, path: str
) -> None:
    """600 events no handler wants and a batch size of 500, while a writer
    waits for the lock: the claim and its events' processing used to share
    one transaction of 500 events, holding SQLite's write lock for as long as
    they took (70 ms and more), while the webhook writer (in another process
    too) waited. Now each transaction takes as many events as fit in
    ``max_transaction_seconds`` at the pace measured (here 2 ms: far fewer
    than 250 on any machine), and every event is processed once."""
    count = 600
    put(app, *(event(created=1_700_000_000 + i) for i in range(count)))
    per_transaction, seen = _tally(app)
    lock = sqlite_write_lock(path)
    waiting = _Writer()
    lock.announce(waiting)
    worker = Worker(app, listen=False, batch_size=500, max_transaction_seconds=0.002)
    try:
        assert worker.drain(timeout=60) == count
    finally:
        worker.close()
        lock.withdraw(waiting)
    assert seen == [count, count]
    assert max(claimed for claimed, _ in per_transaction) <= 250, per_transaction
    assert max(processed for _, processed in per_transaction) <= 250, per_transaction
    assert sum(1 for _, processed in per_transaction if processed) >= 3


def test_with_no_writer_waiting_the_worker_claims_whole_batches(app: Stripeline) -> None:
    """Nobody waits for the write lock (a backlog drained with no webhook
    arriving): the worker claims its whole batch and applies it in one bulk
    run, fewer commits for the same events."""
    count = 600
    put(app, *(event(created=1_700_000_000 + i) for i in range(count)))
    per_transaction, seen = _tally(app)
    worker = Worker(app, listen=False, batch_size=500, max_transaction_seconds=0.002)
    try:
        assert worker.drain(timeout=60) == count
    finally:
        worker.close()
    assert seen == [count, count]
    assert max(claimed for claimed, _ in per_transaction) == 500, per_transaction


def test_the_worker_checkpoints_the_log_not_the_webhook_writer(sqlite_url: str, path: str) -> None:
    """SQLite copies the write-ahead log into the database in whichever
    commit takes it past ``wal_autocheckpoint`` pages, and that commit's
    caller waits for the copy. 6 MB written by a foreground writer (the
    webhook writer's kind) stay in the log; the next background (worker)
    commit copies them into the database file."""
    import os
    import sqlite3

    engine = make_engine(sqlite_url)
    try:
        with connect(engine) as conn:
            conn.exec_driver_sql("CREATE TABLE t_blobs (b BLOB)")
        plain = sqlite3.connect(path, isolation_level=None)
        plain.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        plain.close()
        size = os.path.getsize(path)
        with connect(engine) as conn:
            for _ in range(6):
                conn.exec_driver_sql("INSERT INTO t_blobs VALUES (zeroblob(1000000))")
        assert os.path.getsize(path) < size + 1_000_000  # still in the log
        with connect(engine, background=True) as conn:
            conn.exec_driver_sql("INSERT INTO t_blobs VALUES (x'00')")
        assert os.path.getsize(path) > size + 6_000_000  # copied by the worker's commit
    finally:
        engine.dispose()


def test_the_worker_commits_early_when_another_process_writer_waits(
    app: Stripeline, path: str
) -> None:
    """With no other writer, a group of handled events runs until
    ``max_transaction_seconds`` (here a minute: all 8 in one transaction).
    With a writer of another process waiting, the worker commits after each
    event, so that the writer waits for one event at most, not the group."""
    ran: list[str] = []

    @app.on("customer.updated")
    def handle(e: Any) -> None:
        ran.append(e.id)

    per_transaction: list[int] = []
    seen = [0]

    @sa_event.listens_for(app.engine, "commit")
    def tally(conn: Any) -> None:
        (processed,) = conn.connection.dbapi_connection.execute(
            "SELECT count(*) FROM stripeline_events WHERE status = 'processed'"
        ).fetchone()
        per_transaction.append(processed - seen[0])
        seen[0] = processed

    def drain() -> list[int]:
        per_transaction.clear()
        worker = Worker(app, listen=False, max_transaction_seconds=60)
        try:
            worker.drain(timeout=60)
        finally:
            worker.close()
        return [n for n in per_transaction if n]

    put(app, *(event(type="customer.updated", created=1_700_000_000 + i) for i in range(8)))
    assert drain() == [8]

    put(app, *(event(type="customer.updated", created=1_700_000_100 + i) for i in range(8)))
    child = Child(path, "announce")
    try:
        assert drain() == [1] * 8
    finally:
        child.close()
    assert len(ran) == 16
