"""The webhook route's group-commit writer at its edges: stopping, a stop queued
behind events, and a failed group that leaves the writer alive."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import psycopg
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.engine import make_url

from stripeline import inbox
from stripeline.core.envelope import parse_envelope
from stripeline.db import make_engine, migrate
from stripeline.db.engine import connect, normalize_url
from stripeline.db.models import Event
from stripeline.errors import DatabaseUnavailable
from stripeline.web import writer as writer_module
from stripeline.web.writer import IngestWriter
from tests.factories import encode, event
from tests.tcp_proxy import TCPProxy


def incoming() -> inbox.IncomingEvent:
    payload = encode(event())
    return inbox.IncomingEvent(
        envelope=parse_envelope(payload)[0],
        payload=payload,
        source="webhook",
        received_at=inbox.utcnow(),
    )


def stored(engine: Engine) -> int:
    with connect(engine, readonly=True) as conn:
        return int(conn.execute(select(func.count()).select_from(Event)).scalar_one())


async def submit(writer: IngestWriter, item: inbox.IncomingEvent) -> bool:
    # A writer whose thread died would never answer: fail instead of hanging.
    return await asyncio.wait_for(writer.submit(item), timeout=20)


def test_stop_before_start_does_nothing_and_the_writer_still_starts(engine: Engine) -> None:
    writer = IngestWriter(engine)
    writer.stop()
    writer.start()
    try:
        assert asyncio.run(submit(writer, incoming())) is True
    finally:
        writer.stop()
    assert stored(engine) == 1


def test_events_queued_ahead_of_a_stop_are_written_and_answered(engine: Engine) -> None:
    writer = IngestWriter(engine)

    async def main() -> list[bool]:
        waiting = [asyncio.ensure_future(writer.submit(incoming())) for _ in range(3)]
        await asyncio.sleep(0)  # all three are queued
        # The stop a shutdown queues, here ahead of the thread's first look.
        writer._queue.put(writer_module._STOP)
        writer.start()
        return list(await asyncio.wait_for(asyncio.gather(*waiting), timeout=20))

    try:
        assert asyncio.run(main()) == [True, True, True]
    finally:
        writer.stop()
    assert stored(engine) == 3


def test_a_database_without_the_inbox_fails_the_group_then_recovers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    engine = make_engine(url)
    writer = IngestWriter(engine)
    writer.start()
    try:
        with pytest.raises(DatabaseUnavailable):
            asyncio.run(submit(writer, incoming()))
        migrate(engine)
        assert asyncio.run(submit(writer, incoming())) is True
    finally:
        writer.stop()
    assert stored(engine) == 1
    engine.dispose()


def test_an_unexpected_error_fails_the_group_and_the_writer_lives_on(engine: Engine) -> None:
    broken = dataclasses.replace(incoming(), envelope=cast(Any, None))
    writer = IngestWriter(engine)
    writer.start()
    try:
        with pytest.raises(DatabaseUnavailable):
            asyncio.run(submit(writer, broken))
        assert asyncio.run(submit(writer, incoming())) is True
    finally:
        writer.stop()
    assert stored(engine) == 1


@pytest.fixture
def proxied(postgres_url: str) -> Iterator[tuple[str, TCPProxy]]:
    url = make_url(normalize_url(postgres_url))
    proxy = TCPProxy((url.host or "127.0.0.1", url.port or 5432)).start()
    yield url.set(port=proxy.port).render_as_string(hide_password=False), proxy
    proxy.cut()


@pytest.fixture
def listener(postgres_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A worker's LISTEN, straight to the database."""
    url = make_url(normalize_url(postgres_url)).set(drivername="postgresql")
    conn = psycopg.connect(url.render_as_string(hide_password=False), autocommit=True)
    conn.execute(f"LISTEN {inbox.NOTIFY_CHANNEL}")
    yield conn
    conn.close()


def notifications(
    conn: psycopg.Connection[Any], timeout: float, stop_after: int | None = None
) -> int:
    return sum(1 for _ in conn.notifies(timeout=timeout, stop_after=stop_after))


@pytest.mark.postgres
def test_a_notify_owed_when_the_database_went_away_is_sent_once_it_is_back(
    proxied: tuple[str, TCPProxy],
    listener: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The second group inside the NOTIFY interval owes one; the third fails
    (its connection gone). Once idle, the owed NOTIFY goes out on a new
    connection and the workers wake."""
    monkeypatch.setattr(writer_module, "NOTIFY_INTERVAL", 3.0)
    url, proxy = proxied
    engine = make_engine(url)
    writer = IngestWriter(engine)
    writer.start()
    try:
        assert asyncio.run(submit(writer, incoming())) is True  # NOTIFY
        assert asyncio.run(submit(writer, incoming())) is True  # inside the interval: owed
        proxy.cut()
        with pytest.raises(DatabaseUnavailable):
            asyncio.run(submit(writer, incoming()))
        proxy.start()
        assert notifications(listener, timeout=15.0, stop_after=2) == 2
    finally:
        writer.stop()
        engine.dispose()


@pytest.mark.postgres
def test_an_owed_notify_on_a_dead_connection_leaves_the_writer_working(
    proxied: tuple[str, TCPProxy],
    listener: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(writer_module, "NOTIFY_INTERVAL", 3.0)
    url, proxy = proxied
    engine = make_engine(url)
    writer = IngestWriter(engine)
    writer.start()
    try:
        assert asyncio.run(submit(writer, incoming())) is True  # NOTIFY
        assert asyncio.run(submit(writer, incoming())) is True  # inside the interval: owed
        proxy.cut()
        # Idle, the writer tries the owed NOTIFY on its kept connection, which is dead.
        assert notifications(listener, timeout=7.0) == 1  # only the first group's
        proxy.start()
        assert asyncio.run(submit(writer, incoming())) is True
    finally:
        writer.stop()
    assert stored(engine) == 3
    engine.dispose()


# -- duplicates: found only when the group's INSERT … DO NOTHING comes up short --


def incoming_as(payload: bytes) -> inbox.IncomingEvent:
    return inbox.IncomingEvent(
        envelope=parse_envelope(payload)[0],
        payload=payload,
        source="webhook",
        received_at=inbox.utcnow(),
        signed_at=1_760_000_000,
    )


async def one_group(writer: IngestWriter, items: list[inbox.IncomingEvent]) -> list[bool]:
    tasks = [asyncio.ensure_future(writer.submit(item)) for item in items]
    await asyncio.sleep(0.05)  # all queued before the writer looks: one group
    writer.start()
    return list(await asyncio.wait_for(asyncio.gather(*tasks), timeout=20))


def test_a_group_holding_duplicates_counts_each_delivery(engine: Engine) -> None:
    """One event already held, one new, one twice in the group: the group's
    row count comes up short, so it is stored again counting every delivery,
    and only the new ones are answered new."""
    held, new, twice = (encode(event()) for _ in range(3))
    with connect(engine) as conn:
        inbox.store(conn, [incoming_as(held)])
    writer = IngestWriter(engine)
    items = [incoming_as(p) for p in (held, new, twice, twice)]
    try:
        results = asyncio.run(one_group(writer, items))
    finally:
        writer.stop()
    assert results == [False, True, True, False]
    ids = [parse_envelope(p)[0].id for p in (held, new, twice)]
    with connect(engine, readonly=True) as conn:
        counted = {r[0]: r[1] for r in conn.execute(select(Event.id, Event.deliveries))}
        again = sorted(
            (r[0], r[1])
            for r in conn.execute(select(inbox.deliveries.c.event_id, inbox.deliveries.c.signed_at))
        )
        received = conn.execute(select(Event.received_at).where(Event.id == ids[1])).scalar_one()
    assert counted == {ids[0]: 2, ids[1]: 1, ids[2]: 2}
    assert again == sorted([(ids[0], 1_760_000_000), (ids[2], 1_760_000_000)])
    # The plain-DBAPI path stores times SQLAlchemy reads back as they were.
    assert received == items[1].received_at


def test_an_in_memory_database_is_written_without_the_file_lock() -> None:
    """``sqlite://`` (one connection, shared): no file, no process write lock
    to take; a group with a duplicate is stored and counted all the same."""
    engine = make_engine("sqlite://")
    migrate(engine)
    first, second = encode(event()), encode(event())
    writer = IngestWriter(engine)
    try:
        results = asyncio.run(one_group(writer, [incoming_as(p) for p in (first, second, first)]))
    finally:
        writer.stop()
    assert results == [True, True, False]
    with connect(engine, readonly=True) as conn:
        counted = dict(conn.execute(select(Event.id, Event.deliveries)).all())
    assert counted == {parse_envelope(first)[0].id: 2, parse_envelope(second)[0].id: 1}
    engine.dispose()


def test_a_group_of_new_events_is_stored_as_sqlalchemy_would(engine: Engine) -> None:
    """The fast path (every row new) stores each column as ``inbox.store`` does."""
    payloads = [encode(event()) for _ in range(5)]
    items = [incoming_as(p) for p in payloads]
    items[1] = dataclasses.replace(items[1], status="ignored")
    items[2] = dataclasses.replace(items[2], due_at=items[2].received_at.replace(year=2100))
    writer = IngestWriter(engine)
    try:
        assert asyncio.run(one_group(writer, items)) == [True] * 5
    finally:
        writer.stop()
    columns = (
        Event.id,
        Event.status,
        Event.next_attempt_at,
        Event.last_received_at,
        Event.deliveries,
        Event.attempts,
        Event.payload,
        Event.livemode,
        Event.signed_at,
    )
    with connect(engine, readonly=True) as conn:
        rows = {r[0]: r for r in conn.execute(select(*columns))}
        assert conn.execute(select(func.count()).select_from(inbox.deliveries)).scalar_one() == 0
    for i, item in enumerate(items):
        row = rows[item.envelope.id]
        due = None if i == 1 else (item.due_at or item.received_at)
        assert tuple(row[1:]) == (
            item.status,
            due,
            item.received_at,
            1,
            0,
            item.payload,
            False,
            1_760_000_000,
        )


def test_the_write_lock_is_handed_over_in_arrival_order(sqlite_url: str) -> None:
    """SQLite: the process's writers to one file queue for its write lock
    first come, first served, and one that waits past its timeout is not
    left holding it."""
    import threading

    from stripeline.db.engine import sqlite_write_lock

    lock = sqlite_write_lock(sqlite_url.removeprefix("sqlite:///"))
    assert lock.acquire(1.0)
    order: list[int] = []
    ready = threading.Barrier(2)

    def take(n: int) -> None:
        if n == 1:
            ready.wait()
        assert lock.acquire(5.0)
        order.append(n)
        lock.release()

    first = threading.Thread(target=take, args=(0,))
    first.start()
    while not lock._waiters:
        time.sleep(0.001)
    second = threading.Thread(target=take, args=(1,))
    second.start()
    ready.wait()
    while len(lock._waiters) < 2:
        time.sleep(0.001)
    assert lock.acquire(0.01) is False  # waited past its timeout: not queued any more
    assert len(lock._waiters) == 2
    lock.release()
    first.join(5)
    second.join(5)
    assert order == [0, 1]
    assert lock.acquire(0.01)  # free again
    lock.release()


def test_an_in_process_transaction_holds_the_writer_back_until_it_commits(
    sqlite_url: str,
) -> None:
    """The writer waits on the process lock (not SQLite's busy handler) while
    another connection of the process holds the write lock, then goes on at
    once when it commits."""
    engine = make_engine(sqlite_url)
    writer = IngestWriter(engine)
    writer.start()
    try:
        holder = engine.connect()
        holder.begin()  # BEGIN IMMEDIATE: takes the process lock first
        lock = holder.connection.dbapi_connection.write_lock  # type: ignore[union-attr]
        assert lock is not None and lock._held

        async def main() -> bool:
            task = asyncio.ensure_future(writer.submit(incoming()))
            while not lock._waiters:  # noqa: ASYNC110 (a thread, not a task, queues)
                await asyncio.sleep(0.001)
            assert not task.done()
            holder.commit()
            return await asyncio.wait_for(task, timeout=5)

        assert asyncio.run(main()) is True
        holder.close()
    finally:
        writer.stop()
    assert stored(engine) == 1
    engine.dispose()


def test_a_write_lock_held_by_another_process_is_waited_for_not_refused(
    sqlite_url: str,
) -> None:
    """A writer outside the process (here a plain sqlite3 connection, which
    shares no lock with us) holds the write lock for a while: the writer
    tries again until it is free and stores the event, well within the busy
    timeout, instead of answering 503."""
    import sqlite3
    import threading

    engine = make_engine(sqlite_url)
    writer = IngestWriter(engine)
    writer.start()
    other = sqlite3.connect(
        sqlite_url.removeprefix("sqlite:///"), isolation_level=None, check_same_thread=False
    )
    try:
        other.execute("BEGIN IMMEDIATE")
        released = threading.Event()

        def release_later() -> None:
            time.sleep(0.3)
            other.execute("COMMIT")
            released.set()

        threading.Thread(target=release_later).start()
        started = time.monotonic()
        assert asyncio.run(submit(writer, incoming())) is True
        assert released.is_set()  # stored only once the other writer let go
        assert time.monotonic() - started < 2.0
    finally:
        writer.stop()
        other.close()
    assert stored(engine) == 1
    engine.dispose()


def test_a_write_lock_whose_holder_is_gone_passes_on(sqlite_url: str) -> None:
    """A connection dropped while it held the process lock (never committed,
    rolled back nor closed) does not leave it held by nobody: the next writer
    gets it, and the writer stores events."""
    import gc
    import sqlite3

    from stripeline.db.engine import WriteLockedConnection, sqlite_write_lock

    path = sqlite_url.removeprefix("sqlite:///")
    lock = sqlite_write_lock(path)
    dropped = sqlite3.connect(path, factory=WriteLockedConnection)
    dropped.write_lock = lock
    dropped.take_write_lock()
    assert dropped.holds_write_lock and lock._held
    del dropped
    gc.collect()
    assert lock.acquire(30.0)  # without the check: False, after the whole wait
    lock.release()
    engine = make_engine(sqlite_url)
    writer = IngestWriter(engine)
    writer.start()
    try:
        assert asyncio.run(submit(writer, incoming())) is True
    finally:
        writer.stop()
    engine.dispose()


@pytest.mark.postgres
def test_groups_of_any_size_share_one_prepared_insert(postgres_url: str) -> None:
    """PostgreSQL: the group insert's text is the same whatever the group's
    size (one array per column), so psycopg parses it once and the server
    prepares it once. A multi-row ``VALUES`` had one text per size, split
    again for every group past 50 parameters and never prepared."""
    url = make_url(normalize_url(postgres_url))
    engine = make_engine(postgres_url)
    migrate(engine)
    engine.dispose()
    conn = psycopg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False))
    try:
        sizes = [1, 3, 8, 20, 40] * 2
        with conn.cursor() as cursor:
            for size in sizes:
                assert inbox.insert_new(cursor, [incoming() for _ in range(size)], postgres=True)
                conn.commit()
            prepared = cursor.execute(
                "SELECT count(*) FROM pg_prepared_statements "
                "WHERE statement LIKE 'INSERT INTO stripeline_events%%'"
            ).fetchone()
        assert prepared == (1,)
        assert conn.execute("SELECT count(*) FROM stripeline_events").fetchone() == (sum(sizes),)
    finally:
        conn.close()
