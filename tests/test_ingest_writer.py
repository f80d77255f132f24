"""The webhook route's group-commit writer at its edges: stopping, a stop queued
behind events, and a failed group that leaves the writer alive."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import Engine, func, select

from stripeline import inbox
from stripeline.core.envelope import parse_envelope
from stripeline.db import make_engine, migrate
from stripeline.db.engine import connect
from stripeline.db.models import Event
from stripeline.errors import DatabaseUnavailable
from stripeline.web import writer as writer_module
from stripeline.web.writer import IngestWriter
from tests.factories import encode, event


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
