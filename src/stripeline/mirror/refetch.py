"""The re-fetch queue: objects to read again from Stripe, coalesced.

An object is queued when its state cannot be ordered from what events carry
(a tie), or for every event under the ``refetch`` policy. Requests for one
object within the coalescing window share one row and so one API read; a
request that arrives while the read is under way makes the row due again, so
no change is missed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, Table, delete, func, select, update

from stripeline.db.engine import insert_for
from stripeline.db.models import Refetch

refetches = cast(Table, Refetch.__table__)

#: Default coalescing window: a burst of events inside it costs one read.
DEFAULT_WINDOW_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Wanted:
    """An object to read again."""

    account: str
    id: str
    object_type: str
    livemode: bool


@dataclass(frozen=True, slots=True)
class Claimed:
    account: str
    id: str
    object_type: str
    livemode: bool
    attempts: int
    last_requested_at: datetime


_REQUEST: dict[str, Any] = {}


def request(
    conn: Connection,
    wanted: Iterable[Wanted],
    *,
    now: datetime,
    window: float = DEFAULT_WINDOW_SECONDS,
) -> None:
    """Queue reads; an object already queued keeps its due time (coalescing)."""
    rows = [
        {
            "account": w.account,
            "id": w.id,
            "object_type": w.object_type,
            "livemode": w.livemode,
            "requests": 1,
            "first_requested_at": now,
            "last_requested_at": now,
            "due_at": now + timedelta(seconds=window),
            "attempts": 0,
        }
        for w in {(w.account, w.id): w for w in wanted}.values()
    ]
    if not rows:
        return
    stmt = _REQUEST.get(conn.dialect.name)
    if stmt is None:
        insert = insert_for(conn)
        base = insert(refetches)
        stmt = base.on_conflict_do_update(
            index_elements=[refetches.c.account, refetches.c.id],
            set_={
                "requests": refetches.c.requests + 1,
                "last_requested_at": base.excluded.last_requested_at,
            },
        )
        _REQUEST[conn.dialect.name] = stmt
    conn.execute(stmt, rows)


def claim(
    conn: Connection, *, worker: str, limit: int, lease_seconds: float, now: datetime
) -> list[Claimed]:
    """Lease up to ``limit`` due reads (SKIP LOCKED on PostgreSQL)."""
    due = (
        select(refetches.c.account, refetches.c.id)
        .where(refetches.c.due_at <= now)
        .order_by(refetches.c.due_at)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    keys = [tuple(row) for row in conn.execute(due)]
    claimed: list[Claimed] = []
    for account, object_id in keys:
        row = conn.execute(
            update(refetches)
            .where(refetches.c.account == account, refetches.c.id == object_id)
            .values(
                lease_owner=worker,
                due_at=now + timedelta(seconds=lease_seconds),
                attempts=refetches.c.attempts + 1,
            )
            .returning(
                refetches.c.object_type,
                refetches.c.livemode,
                refetches.c.attempts,
                refetches.c.last_requested_at,
            )
        ).one()
        claimed.append(Claimed(account, object_id, *row))
    return claimed


def complete(
    conn: Connection,
    item: Claimed,
    *,
    worker: str,
    started_at: datetime,
    now: datetime,
    window: float = DEFAULT_WINDOW_SECONDS,
) -> None:
    """The read that started at ``started_at`` is applied: drop the row, unless
    another request came in after the read started (then read again)."""
    gone = conn.execute(
        delete(refetches).where(
            refetches.c.account == item.account,
            refetches.c.id == item.id,
            refetches.c.lease_owner == worker,
            refetches.c.last_requested_at < started_at,
        )
    ).rowcount
    if gone == 0:
        conn.execute(
            update(refetches)
            .where(refetches.c.account == item.account, refetches.c.id == item.id)
            .values(lease_owner=None, attempts=0, due_at=now + timedelta(seconds=window))
        )


def fail(conn: Connection, item: Claimed, *, error: str, retry_in: float, now: datetime) -> None:
    """The read failed (Stripe unreachable, rate limited…): try again later."""
    conn.execute(
        update(refetches)
        .where(refetches.c.account == item.account, refetches.c.id == item.id)
        .values(lease_owner=None, last_error=error[:2000], due_at=now + timedelta(seconds=retry_in))
    )


def pending(conn: Connection) -> int:
    """How many objects wait to be read."""
    return int(conn.execute(select(func.count()).select_from(refetches)).scalar_one())


def next_due(conn: Connection) -> datetime | None:
    return conn.execute(select(func.min(refetches.c.due_at))).scalar_one_or_none()
