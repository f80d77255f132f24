"""The cursor table, ``stripeline_cursors``: where each sync job stands.

A cursor is a name (``events`` for catch-up, ``backfill:customer``… for
backfill), a value (an id) and a time (Unix seconds). Each job saves its
cursor in the transaction of the page it follows, so an interruption loses
nothing and repeats nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Connection, Table, select

from stripeline.db.engine import insert_for
from stripeline.db.models import Cursor

#: The name of catch-up's row: the newest event it listed.
CURSOR_NAME = "events"
#: The row that records when the last complete catch-up began: every event
#: Stripe created before then is in the inbox.
COVERED_CURSOR = "events:covered"

_cursors = cast(Table, Cursor.__table__)


@dataclass(frozen=True, slots=True)
class SavedCursor:
    event_id: str
    created: int | None
    updated_at: datetime


def read_cursor(conn: Connection, name: str = CURSOR_NAME) -> SavedCursor | None:
    """The saved position of a job (catch-up's by default), if any."""
    row = conn.execute(
        select(_cursors.c.value, _cursors.c.position_time, _cursors.c.updated_at).where(
            _cursors.c.name == name
        )
    ).first()
    return None if row is None else SavedCursor(row.value, row.position_time, row.updated_at)


def save_cursor(
    conn: Connection, event_id: str, created: int, *, now: datetime, name: str = CURSOR_NAME
) -> None:
    """Set the cursor (in the caller's transaction, with the page it follows)."""
    insert = insert_for(conn)
    stmt = insert(_cursors).values(name=name, value=event_id, position_time=created, updated_at=now)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[_cursors.c.name],
            set_={"value": event_id, "position_time": created, "updated_at": now},
        )
    )


def catch_up_gap(conn: Connection, now: datetime) -> float | None:
    """Seconds since the moment up to which catch-up has seen every event:
    the start of the last complete catch-up, else the newest event it stored
    (None: catch-up never ran). Near 30 days, events start to be lost."""
    covered = read_cursor(conn, COVERED_CURSOR) or read_cursor(conn)
    if covered is None or covered.created is None:
        return None
    return max(0.0, now.timestamp() - covered.created)
