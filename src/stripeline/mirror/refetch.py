"""The re-fetch queue: objects to read again from Stripe, coalesced.

An object is queued when its state cannot be ordered from what events carry
(a tie), or for every event under the ``refetch`` policy. Requests for one
object within the coalescing window share one row and so one API read; a
request that arrives while the read is under way makes the row due again, so
no change is missed.

A read that fails is tried again with the inbox's backoff. A read Stripe
refuses for good (``StripeAPIError.retryable`` False: permission,
authentication, an invalid request, a type with no API read) is given up
after ``max_attempts`` tries: the row stays, with ``gave_up_at`` and the last
error, for the operator (``stripeline events refetches``, ``ops.list_refetches``), and is not claimed
again until a new request for the object comes in.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, Engine, Table, case, delete, func, select, update

from stripeline.core.backoff import scheduled
from stripeline.db.engine import connect, insert_for
from stripeline.db.models import Refetch
from stripeline.errors import StripeAPIError
from stripeline.log import get_logger
from stripeline.mirror._store import apply_states, held_marker, state_from_fetch

if TYPE_CHECKING:
    from stripeline.mirror.fetch import Fetcher

log = get_logger("stripeline.mirror.refetch")

refetches = cast(Table, Refetch.__table__)

#: Default coalescing window: a burst of events inside it costs one read.
DEFAULT_WINDOW_SECONDS = 2.0
#: Seconds a round of reads may take before no more start (``process_due``):
#: the worker goes back to the inbox's events in between.
ROUND_BUDGET_SECONDS = 2.0


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
        # Sorted by the primary key: one lock order for every transaction.
        for _, w in sorted({(w.account, w.id): w for w in wanted}.items())
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
                # A new request revives a read that was given up.
                "attempts": case((refetches.c.gave_up_at.is_(None), refetches.c.attempts), else_=0),
                "due_at": case(
                    (refetches.c.gave_up_at.is_(None), refetches.c.due_at),
                    else_=base.excluded.due_at,
                ),
                "gave_up_at": None,
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
        .where(refetches.c.due_at <= now, refetches.c.gave_up_at.is_(None))
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


def _put_back(engine: Engine, items: Sequence[Claimed], *, worker: str, due_at: datetime) -> None:
    """Reads claimed but not made this round: back in the queue, due at
    ``due_at``, the attempt the claim counted taken back."""
    with connect(engine) as conn:
        for item in items:
            conn.execute(
                update(refetches)
                .where(
                    refetches.c.account == item.account,
                    refetches.c.id == item.id,
                    refetches.c.lease_owner == worker,
                )
                .values(lease_owner=None, attempts=refetches.c.attempts - 1, due_at=due_at)
            )


def give_up(conn: Connection, item: Claimed, *, error: str, now: datetime) -> None:
    """The read can never succeed: stop trying (until a new request comes in)."""
    conn.execute(
        update(refetches)
        .where(refetches.c.account == item.account, refetches.c.id == item.id)
        .values(lease_owner=None, last_error=error[:2000], gave_up_at=now)
    )


def pending(conn: Connection) -> int:
    """How many objects wait to be read (those given up left out)."""
    return int(
        conn.execute(
            select(func.count()).select_from(refetches).where(refetches.c.gave_up_at.is_(None))
        ).scalar_one()
    )


def given_up(conn: Connection) -> int:
    """How many reads were given up (Stripe refused them for good)."""
    return int(
        conn.execute(
            select(func.count()).select_from(refetches).where(refetches.c.gave_up_at.is_not(None))
        ).scalar_one()
    )


def next_due(conn: Connection) -> datetime | None:
    return conn.execute(
        select(func.min(refetches.c.due_at)).where(refetches.c.gave_up_at.is_(None))
    ).scalar_one_or_none()


def _utcnow() -> datetime:
    return datetime.now(UTC)


def process_due(
    engine: Engine,
    fetcher: Fetcher,
    *,
    worker: str,
    lease_seconds: float,
    schedule: Sequence[int],
    max_attempts: int,
    window: float = DEFAULT_WINDOW_SECONDS,
    limit: int = 20,
    now: Callable[[], datetime] = _utcnow,
    budget: float = ROUND_BUDGET_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Read due objects through ``fetcher`` and apply them; return how many
    reads were made. Each read runs outside any transaction (no network call
    inside a DB write); its result is applied in a short one.

    Reads never hold the inbox back for long (the worker processes events
    between two rounds): no read starts once the round has taken ``budget``
    seconds, and a read that fails for a reason that may pass (Stripe
    unreachable, 429, 5xx, a timeout) ends the round, since the next ones
    would most likely fail the same way, each after its own timeout and
    retries. The reads not made are put back, their attempt not counted:
    due at once after the budget, or when the failed read is retried."""
    with connect(engine) as conn:
        claimed = claim(conn, worker=worker, limit=limit, lease_seconds=lease_seconds, now=now())
    started_round = clock()
    for index, item in enumerate(claimed):
        if index and clock() - started_round >= budget:
            _put_back(engine, claimed[index:], worker=worker, due_at=now())
            log.info("refetch_round_cut", action="refetch_round_cut", put_back=len(claimed) - index)
            return index
        # What the mirror holds before the read starts: the read shows that
        # state or a newer one, and its marker is set past it (see
        # core.ordering), on the clock the object's events come from.
        with connect(engine, readonly=True) as conn:
            over = held_marker(conn, item.object_type, item.account, item.id)
        started = now()
        try:
            if not fetcher.can_fetch(item.object_type):
                raise StripeAPIError(f"no API read known for {item.object_type} objects")
            fetched = fetcher.fetch(item.object_type, item.id, item.account or None)
        except StripeAPIError as exc:
            with connect(engine) as conn:
                if not exc.retryable and item.attempts >= max_attempts:
                    log.warning(
                        "refetch_gave_up",
                        action="refetch_gave_up",
                        object_id=item.id,
                        attempts=item.attempts,
                        error=exc.message[:300],
                    )
                    give_up(conn, item, error=exc.message, now=now())
                    continue
                delay = scheduled(item.attempts, schedule)
                log.warning(
                    "refetch_failed",
                    action="refetch_failed",
                    object_id=item.id,
                    error=exc.message[:300],
                    retry_in=delay,
                )
                failed_at = now()
                fail(conn, item, error=exc.message, retry_in=delay, now=failed_at)
            if exc.retryable and index + 1 < len(claimed):
                left = claimed[index + 1 :]
                retry_at = failed_at + timedelta(seconds=delay)
                _put_back(engine, left, worker=worker, due_at=retry_at)
                log.warning(
                    "refetch_round_stopped",
                    action="refetch_round_stopped",
                    put_back=len(left),
                    retry_in=delay,
                )
                return index + 1
            continue
        state = state_from_fetch(
            fetched.data,
            object_type=item.object_type,
            object_id=item.id,
            account=item.account,
            livemode=item.livemode,
            fetched_at=fetched.fetched_at,
            over=over,
        )
        with connect(engine) as conn:
            applied_at = now()
            result = apply_states(conn, [state], now=applied_at)
            complete(conn, item, worker=worker, started_at=started, now=applied_at, window=window)
            if result.ties:
                request(
                    conn,
                    [Wanted(item.account, item.id, item.object_type, item.livemode)],
                    now=applied_at,
                    window=window,
                )
    return len(claimed)
