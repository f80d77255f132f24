"""A user application for the multi-process tests: each handler run leaves a row."""

from __future__ import annotations

import os
import time

from sqlalchemy import Column, Integer, MetaData, String, Table, insert

import stripeline

metadata = MetaData()
effects = Table(
    "test_effects",
    metadata,
    Column("n", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
)

app = stripeline.Stripeline()


@app.on("*")
def record(event: stripeline.ReceivedEvent) -> None:
    event.connection.execute(insert(effects).values(event_id=event.id, pid=os.getpid()))
    delay = float(os.environ.get("TEST_HANDLER_DELAY", "0"))
    if delay:
        time.sleep(delay)
