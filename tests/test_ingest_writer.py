"""The webhook route's group-commit writer at its edges: stopping, a stop queued
behind events, and a failed group that leaves the writer alive."""

from __future__ import annotations

import asyncio
import dataclasses
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
