"""The inbox: store verified events, claim them for work, retry, replay.

Every function takes a SQLAlchemy ``Connection`` inside a transaction that
the caller owns, so that callers decide what commits together. Statuses::

    pending ──claim──▶ processing ──▶ processed
       ▲                   │ error
       │                   ▼
       └──(backoff)──── failed ──(max attempts)──▶ dead
    ignored: verified but of the other mode (test vs live); never processed.

An event no handler wants skips ``processing``: the worker picks it
(``pick``), applies it and marks it ``processed`` (``finish_picked``) in one
transaction, which holds it meanwhile. A ``processing`` row's
``next_attempt_at`` is the end of its lease: when a worker dies, the row is
simply due again and any worker claims it. What the operator reads about
events (lists, one event's story) is in ``ops``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, Table, and_, func, select, text, update

from stripeline.core.backoff import scheduled
from stripeline.core.envelope import Envelope
from stripeline.db import raw
from stripeline.db.engine import insert_for
from stripeline.db.models import Attempt, Delivery, Event

STATUSES = ("pending", "processing", "processed", "failed", "dead", "ignored")
#: Statuses a worker may claim (when due).
CLAIMABLE = ("pending", "failed", "processing")
SOURCES = ("webhook", "connect", "catch-up", "replay", "eventbridge", "eventgrid")
#: PostgreSQL channel notified when new events are due (workers LISTEN on it).
NOTIFY_CHANNEL = "stripeline_events"

events = cast(Table, Event.__table__)
deliveries = cast(Table, Delivery.__table__)
attempts = cast(Table, Attempt.__table__)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class IncomingEvent:
    """A verified event on its way into the inbox."""

    envelope: Envelope
    payload: bytes
    source: str
    received_at: datetime
    #: ``ignored`` for events of the other mode, else ``pending``.
    status: str = "pending"
    #: The ``t=`` of the signature header, for webhook deliveries.
    signed_at: int | None = None
    #: When a worker may first take it (None: at once). Thin events wait out
    #: the coalescing window, so that a burst about one object is one read.
    due_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ClaimedEvent:
    """An event a worker holds the lease on."""

    id: str
    type: str
    payload: bytes
    attempts: int
    created: int
    account: str | None


_STORE_STATEMENTS: dict[str, Any] = {}


def _store_statement(conn: Connection) -> Any:
    """The upsert of ``store``, built once per dialect: building it per event
    (its ``excluded`` alias above all) cost more than executing it."""
    stmt = _STORE_STATEMENTS.get(conn.dialect.name)
    if stmt is None:
        base = insert_for(conn)(events)
        stmt = base.on_conflict_do_update(
            index_elements=[events.c.id],
            set_={
                "deliveries": events.c.deliveries + 1,
                "last_received_at": base.excluded.last_received_at,
            },
        ).returning(events.c.id, events.c.deliveries)
        _STORE_STATEMENTS[conn.dialect.name] = stmt
    return stmt


def store(conn: Connection, items: Sequence[IncomingEvent], *, notify: bool = True) -> list[bool]:
    """Insert events, or count one more delivery of those already held.

    Returns, per item, True when the event is new to the inbox. On
    PostgreSQL, new pending events also ``NOTIFY`` the workers, unless
    ``notify=False`` (the caller then owes them one: see ``notify_workers``).
    """
    if not items:
        return []
    stmt = _store_statement(conn)
    rows: list[dict[str, Any]] = []
    for item in items:
        env = item.envelope
        rows.append(
            {
                "id": env.id,
                "type": env.type,
                "account": env.account,
                "livemode": env.livemode,
                "api_version": env.api_version,
                "created": env.created,
                "object_id": env.object_id,
                "object_type": env.object_type,
                "payload": item.payload,
                "source": item.source,
                "status": item.status,
                "attempts": 0,
                "deliveries": 1,
                "received_at": item.received_at,
                "last_received_at": item.received_at,
                "signed_at": item.signed_at,
                "next_attempt_at": (item.due_at or item.received_at)
                if item.status == "pending"
                else None,
            }
        )
    # One statement for the whole group (a round trip per event was most of
    # the ingest time on PostgreSQL). An id twice in one group is upserted
    # again afterwards, one by one, so that every delivery is counted.
    first: dict[str, int] = {}
    again: list[int] = []
    for i, item in enumerate(items):
        if item.envelope.id in first:
            again.append(i)
        else:
            first[item.envelope.id] = i
    # Rows in primary-key order: two writers storing the same events take
    # their row locks in one order and cannot deadlock (PostgreSQL).
    fresh = [rows[i] for _, i in sorted(first.items())]
    held = {row[0]: row[1] for row in conn.execute(stmt, fresh)}
    results = [False] * len(items)
    for event_id, i in first.items():
        results[i] = held[event_id] == 1
    for i in again:
        conn.execute(stmt, rows[i])
    if notify and wakes_workers(items, results):
        notify_workers(conn)
    again_rows = [
        {
            "event_id": item.envelope.id,
            "received_at": item.received_at,
            "source": item.source,
            "signed_at": item.signed_at,
        }
        for item, new in zip(items, results, strict=True)
        if not new
    ]
    if again_rows:  # first arrivals are recorded on the event row itself
        conn.execute(deliveries.insert(), again_rows)
    return results


# -- the webhook writer's path: plain DBAPI ------------------------------------
#
# The group-commit writer (``web.writer``) stores on a DBAPI connection of its
# own, with these statements built once: an ``INSERT … ON CONFLICT DO
# NOTHING`` for the whole group, whose row count says whether every event was
# new (nearly always). Only when it comes up short does the writer roll the
# group back and store it again with ``store_counting``, which finds the
# duplicates and counts their deliveries exactly as ``store`` does.

_COLUMNS = (
    "id, type, account, livemode, api_version, created, object_id, object_type, payload, "
    "source, status, attempts, deliveries, received_at, last_received_at, signed_at, "
    "next_attempt_at"
)
_PG_ROW = "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 0, 1, %s, %s, %s, %s)"
_SQLITE_ROW = _PG_ROW.replace("%s", "?")
_INSERTS: dict[int, str] = {}
_UPSERT_TAIL = (
    " ON CONFLICT (id) DO UPDATE SET deliveries = stripeline_events.deliveries + 1, "
    "last_received_at = excluded.last_received_at RETURNING deliveries"
)
_PG_UPSERT = f"INSERT INTO stripeline_events ({_COLUMNS}) VALUES {_PG_ROW}" + _UPSERT_TAIL  # noqa: S608
_SQLITE_UPSERT = _PG_UPSERT.replace("%s", "?")
_SQLITE_DELIVERY = (
    "INSERT INTO stripeline_deliveries (event_id, received_at, source, signed_at) "
    "VALUES (?, ?, ?, ?)"
)
_PG_DELIVERY = _SQLITE_DELIVERY.replace("?", "%s")


def _insert(count: int) -> str:
    """SQLite's multi-row ``INSERT … DO NOTHING`` of ``count`` events: one
    statement, so the writer lets go of the GIL once, not once per row, and
    never waits to get it back from the event loop more than once."""
    sql = _INSERTS.get(count)
    if sql is None:
        sql = (
            f"INSERT INTO stripeline_events ({_COLUMNS}) VALUES "  # noqa: S608 (constant)
            + ", ".join([_SQLITE_ROW] * count)
            + " ON CONFLICT (id) DO NOTHING"
        )
        _INSERTS[count] = sql
    return sql


#: PostgreSQL's ``INSERT … DO NOTHING`` of a group: one array per column
#: (binary parameters), the rows zipped by ``unnest``. One statement text
#: whatever the group's size: psycopg parses it once and the server prepares
#: it once, where a multi-row ``VALUES`` of more than 50 parameters was split
#: by psycopg for every group (its query cache stops at 50). The arrays are in
#: event-id order (``_by_id``), as the rows were.
_PG_INSERT = (
    f"INSERT INTO stripeline_events ({_COLUMNS}) "  # noqa: S608 (constant)
    "SELECT id, type, account, livemode, api_version, created, object_id, object_type, "
    "payload, source, status, 0, 1, received_at, received_at, signed_at, next_attempt_at "
    "FROM unnest(%b::text[], %b::text[], %b::text[], %b::bool[], %b::text[], %b::int8[], "
    "%b::text[], %b::text[], %b::bytea[], %b::text[], %b::text[], %b::timestamptz[], "
    "%b::int8[], %b::timestamptz[]) AS r(id, type, account, livemode, api_version, created, "
    "object_id, object_type, payload, source, status, received_at, signed_at, next_attempt_at) "
    "ON CONFLICT (id) DO NOTHING"
)


def sqlite_time(value: datetime) -> str:
    """``value`` as the text SQLAlchemy stores in a SQLite ``UTCDateTime`` column."""
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    if value.utcoffset():
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


def _row(item: IncomingEvent, postgres: bool) -> tuple[Any, ...]:
    env = item.envelope
    received: Any = item.received_at if postgres else sqlite_time(item.received_at)
    due: Any = None
    if item.status == "pending":
        due = received if item.due_at is None else item.due_at
        if not postgres and item.due_at is not None:
            due = sqlite_time(item.due_at)
    return (
        env.id,
        env.type,
        env.account,
        env.livemode,
        env.api_version,
        env.created,
        env.object_id,
        env.object_type,
        item.payload,
        item.source,
        item.status,
        received,
        received,
        item.signed_at,
        due,
    )


def _by_id(items: Sequence[IncomingEvent]) -> list[int]:
    """Positions of ``items`` in event-id order (stable): two writers storing
    the same events take their row locks in one order and cannot deadlock
    (PostgreSQL)."""
    return sorted(range(len(items)), key=lambda i: items[i].envelope.id)


def insert_new(cursor: Any, items: Sequence[IncomingEvent], *, postgres: bool) -> bool:
    """Insert every event of ``items`` not already held, on a DBAPI ``cursor``
    inside the caller's transaction; True if all of them were new.

    False means some event was held already (or came twice): the caller rolls
    back and stores the group with ``store_counting`` instead."""
    if not items:
        return True
    order = _by_id(items)
    if postgres:
        rows = [_row(items[i], True) for i in order]
        columns = [list(column) for column in zip(*rows, strict=True)]
        del columns[12]  # last_received_at: received_at's array serves both
        cursor.execute(_PG_INSERT, columns)
    else:
        cursor.execute(_insert(len(items)), [v for i in order for v in _row(items[i], False)])
    return bool(cursor.rowcount == len(items))


def store_counting(cursor: Any, items: Sequence[IncomingEvent], *, postgres: bool) -> list[bool]:
    """``store`` on a DBAPI ``cursor``: per item, True when new to the inbox;
    a delivery of an event already held is counted on it and recorded.
    Row by row, in event-id order: the writer's path once a group holds a
    duplicate (``insert_new`` came up short)."""
    upsert, delivery = (
        (_PG_UPSERT, _PG_DELIVERY) if postgres else (_SQLITE_UPSERT, _SQLITE_DELIVERY)
    )
    results = [False] * len(items)
    for i in _by_id(items):
        cursor.execute(upsert, _row(items[i], postgres))
        (deliveries,) = cursor.fetchone()
        results[i] = deliveries == 1
    again = [
        (
            item.envelope.id,
            item.received_at if postgres else sqlite_time(item.received_at),
            item.source,
            item.signed_at,
        )
        for item, new in zip(items, results, strict=True)
        if not new
    ]
    if again:  # first arrivals are recorded on the event row itself
        cursor.executemany(delivery, again)
    return results


def notify_sql(postgres: bool) -> str | None:
    """The statement that wakes the workers (``notify_workers``), None on SQLite."""
    return f"NOTIFY {NOTIFY_CHANNEL}" if postgres else None


def wakes_workers(items: Sequence[IncomingEvent], results: Sequence[bool]) -> bool:
    """Whether storing ``items`` gave the workers something new to do."""
    return any(new and item.status == "pending" for new, item in zip(results, items, strict=True))


def notify_workers(conn: Connection) -> None:
    """Wake the workers on every host (PostgreSQL; sent when ``conn`` commits).

    A NOTIFY serialises committing transactions on a server-wide lock, so
    busy writers send it at most every so often (``web.writer``).
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"NOTIFY {NOTIFY_CHANNEL}")


def known_ids(conn: Connection, ids: Sequence[str]) -> set[str]:
    """Which of ``ids`` the inbox already holds."""
    if not ids:
        return set()
    return set(conn.execute(select(events.c.id).where(events.c.id.in_(ids))).scalars())


#: The status guards of the statements that address a batch of events by id
#: (``lease``, the finishes, ``renew``, ``release``), written on ``status ||
#: ''`` so that no index on the status can be planned from them. Written
#: plainly, ``status IN ('pending', …)`` (or ``status = 'processing'``) both
#: states the claim index's condition and leads the (status, received_at, id)
#: index: when the statistics said few events were due (a new inbox nobody
#: analysed, a backlog that came after the last ANALYZE), SQLite and
#: PostgreSQL planned each batch's update as a scan of every due event (and,
#: on PostgreSQL, of every entry a finished event leaves in the claim index
#: until VACUUM), filtered by id, instead of the primary key's look-ups:
#: draining a backlog cost per batch what the whole backlog does.
_DUE_BY_ID = "status || '' IN ('pending', 'failed', 'processing')"
_LEASED_BY_ID = "status || '' = 'processing'"


#: ``claim``'s statement per backend (run on the driver: ``db.raw``). SQLite
#: names the claim's partial index (``INDEXED BY``): without statistics its
#: planner took the (status, received_at, id) index for ``status IN (…)`` and
#: sorted every due event for each batch.
_CLAIM = {
    "sqlite": (
        "UPDATE stripeline_events SET status = 'processing', lease_owner = ?,"
        " next_attempt_at = ?, attempts = attempts + 1"
        " WHERE id IN (SELECT id FROM stripeline_events INDEXED BY ix_stripeline_events_claim"
        " WHERE status IN ('pending', 'failed', 'processing') AND next_attempt_at <= ?"
        " ORDER BY next_attempt_at LIMIT ?)"
        " RETURNING id, type, payload, attempts, created, account"
    ),
    "postgresql": (
        "UPDATE stripeline_events SET status = 'processing', lease_owner = %s,"
        " next_attempt_at = %s, attempts = attempts + 1"
        " WHERE id IN (SELECT id FROM stripeline_events"
        " WHERE status IN ('pending', 'failed', 'processing') AND next_attempt_at <= %s"
        " ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED)"
        " RETURNING id, type, payload, attempts, created, account"
    ),
}


def claim(
    conn: Connection, *, worker: str, limit: int, lease_seconds: int, now: datetime | None = None
) -> list[ClaimedEvent]:
    """Take the lease on up to ``limit`` due events and count an attempt on each.

    PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so any number of workers share the
    queue without waiting on each other. SQLite: the caller's ``BEGIN
    IMMEDIATE`` makes this the one writer.
    """
    now = now or utcnow()
    rows = conn.exec_driver_sql(
        _CLAIM[conn.dialect.name],
        (
            worker,
            raw.stamp(conn, now + timedelta(seconds=lease_seconds)),
            raw.stamp(conn, now),
            limit,
        ),
    ).all()
    claimed = [ClaimedEvent(row[0], row[1], bytes(row[2]), row[3], row[4], row[5]) for row in rows]
    claimed.sort(key=lambda e: e.created)
    return claimed


#: ``pick``'s statement per backend: ``claim``'s choice of rows (through the
#: same index), read without writing them. PostgreSQL locks them (``FOR NO KEY UPDATE``: the
#: deliveries and attempts that reference an event can still be inserted)
#: and skips those another transaction holds.
_PICK = {
    "sqlite": (
        "SELECT id, type, payload, attempts + 1, created, account FROM stripeline_events"
        " INDEXED BY ix_stripeline_events_claim"
        " WHERE status IN ('pending', 'failed', 'processing') AND next_attempt_at <= ?"
        " ORDER BY next_attempt_at LIMIT ?"
    ),
    "postgresql": (
        "SELECT id, type, payload, attempts + 1, created, account FROM stripeline_events"
        " WHERE status IN ('pending', 'failed', 'processing') AND next_attempt_at <= %s"
        " ORDER BY next_attempt_at LIMIT %s FOR NO KEY UPDATE SKIP LOCKED"
    ),
}


def pick(conn: Connection, *, limit: int, now: datetime) -> list[ClaimedEvent]:
    """The events ``claim`` would take, read but not leased: held only by the
    caller's transaction (SQLite: its write lock, from ``BEGIN IMMEDIATE``;
    PostgreSQL: the rows' locks, others skipped), until it ends. Each event's
    ``attempts`` is the one this run would be (one more than counted so far).

    The caller either processes them in this very transaction and marks them
    with ``finish_picked`` (nothing written before: a rollback leaves them due,
    as they were), or leases them with ``lease``."""
    rows = conn.exec_driver_sql(_PICK[conn.dialect.name], (raw.stamp(conn, now), limit)).all()
    picked = [ClaimedEvent(row[0], row[1], bytes(row[2]), row[3], row[4], row[5]) for row in rows]
    picked.sort(key=lambda e: e.created)
    return picked


def lease(
    conn: Connection,
    picked: Sequence[ClaimedEvent],
    *,
    worker: str,
    lease_seconds: int,
    now: datetime,
) -> list[ClaimedEvent]:
    """``claim`` for events ``pick`` returned in this transaction: take the
    lease on each and count its attempt. Returns those leased (all of them:
    the transaction holds them), in ``picked``'s order."""
    if not picked:
        return []
    ids = [e.id for e in picked]
    mark = "?" if conn.dialect.name == "sqlite" else "%s"
    sql = (
        "UPDATE stripeline_events SET status = 'processing',"  # noqa: S608 (marks only)
        f" lease_owner = {mark}, next_attempt_at = {mark}, attempts = attempts + 1"
        f" WHERE {_DUE_BY_ID} AND {raw.in_list(conn, 'id', len(ids))} RETURNING id"
    )
    params = [
        worker,
        raw.stamp(conn, now + timedelta(seconds=lease_seconds)),
        *raw.in_params(conn, ids),
    ]
    leased = {row[0] for row in conn.exec_driver_sql(sql, tuple(params))}
    return [e for e in picked if e.id in leased]


def finish_picked(conn: Connection, event_ids: Sequence[str], *, now: datetime) -> set[str]:
    """``finish_many`` for events ``pick`` returned in this transaction, not
    leased: mark them processed and count their attempt (the one a claim
    would have counted). Returns the ids marked."""
    return _mark_processed(
        conn,
        event_ids,
        now=now,
        also=", attempts = attempts + 1",
        held=_DUE_BY_ID,
    )


def _held_by(worker: str, event_ids: Sequence[str]) -> Any:
    """The events among ``event_ids`` whose lease ``worker`` still holds."""
    return and_(
        events.c.id.in_(event_ids),
        events.c.lease_owner == worker,
        text(_LEASED_BY_ID),
    )


def renew(
    conn: Connection,
    event_ids: Sequence[str],
    *,
    worker: str,
    lease_seconds: int,
    now: datetime | None = None,
) -> int:
    """Extend ``worker``'s lease on events it still holds; return how many."""
    _lock_in_order(conn, event_ids)
    stmt = (
        update(events)
        .where(_held_by(worker, event_ids))
        .values(next_attempt_at=(now or utcnow()) + timedelta(seconds=lease_seconds))
    )
    return int(conn.execute(stmt).rowcount)


def _lock_in_order(conn: Connection, event_ids: Sequence[str]) -> None:
    """PostgreSQL: lock the rows of ``event_ids`` in id order first, as the
    ingest writer takes them (an UPDATE of many rows takes its locks in
    whatever order its plan reads them: crossing the writer's duplicate
    deliveries, that order could deadlock)."""
    if conn.dialect.name == "postgresql" and len(event_ids) > 1:
        conn.exec_driver_sql(
            "SELECT id FROM stripeline_events WHERE id = ANY(%s) ORDER BY id FOR NO KEY UPDATE",
            (sorted(event_ids),),
        )


def finish(conn: Connection, event_id: str, *, worker: str, now: datetime) -> bool:
    """Mark the event processed if ``worker`` still holds its lease.

    Run first in the event's transaction: on PostgreSQL it also locks the row,
    so no other worker can take the event over until this one commits or rolls
    back; a worker whose lease ran out (and was taken over) gets False and
    must not run the event.
    """
    return event_id in finish_many(conn, [event_id], worker=worker, now=now)


def finish_many(
    conn: Connection, event_ids: Sequence[str], *, worker: str, now: datetime
) -> set[str]:
    """``finish`` for many events at once; returns the ids this worker still owned."""
    mark = "?" if conn.dialect.name == "sqlite" else "%s"
    return _mark_processed(
        conn,
        event_ids,
        now=now,
        held=f"lease_owner = {mark} AND {_LEASED_BY_ID}",
        held_params=(worker,),
    )


def _mark_processed(
    conn: Connection,
    event_ids: Sequence[str],
    *,
    now: datetime,
    held: str,
    held_params: Sequence[Any] = (),
    also: str = "",
) -> set[str]:
    """Mark ``event_ids`` processed where ``held`` (SQL on the event row,
    ``held_params`` its values) still holds; ``also``: more of the ``SET``.
    Returns the ids marked (``finish_many``, ``finish_picked``)."""
    if not event_ids:
        return set()
    ids = list(event_ids)
    mark = "?" if conn.dialect.name == "sqlite" else "%s"
    sql = (
        "UPDATE stripeline_events SET status = 'processed',"  # noqa: S608 (our SQL only)
        f" processed_at = {mark}, next_attempt_at = NULL, lease_owner = NULL,"
        f" last_error = NULL, last_traceback = NULL{also}"
        f" WHERE {held} AND {raw.in_list(conn, 'id', len(ids))} RETURNING id"
    )
    params = [raw.stamp(conn, now), *held_params, *raw.in_params(conn, ids)]
    return {row[0] for row in conn.exec_driver_sql(sql, tuple(params))}


def release(conn: Connection, event_ids: Sequence[str], *, worker: str, now: datetime) -> int:
    """Give back events ``worker`` holds but will not process now: ``pending``,
    due at ``now``, their claim's attempt not counted. Returns how many."""
    if not event_ids:
        return 0
    _lock_in_order(conn, event_ids)
    stmt = (
        update(events)
        .where(_held_by(worker, sorted(event_ids)))
        .values(
            status="pending",
            next_attempt_at=now,
            lease_owner=None,
            attempts=func.greatest(events.c.attempts - 1, 0)
            if conn.dialect.name == "postgresql"
            else func.max(events.c.attempts - 1, 0),
        )
    )
    return int(conn.execute(stmt).rowcount)


def mark_failed(
    conn: Connection,
    event_id: str,
    *,
    attempt: int,
    error: str,
    traceback: str | None,
    max_attempts: int,
    schedule: Sequence[int],
    now: datetime,
) -> str:
    """Record a failed attempt: ``failed`` with a next attempt, or ``dead``."""
    status = "dead" if attempt >= max_attempts else "failed"
    next_at = None if status == "dead" else now + timedelta(seconds=scheduled(attempt, schedule))
    conn.execute(
        update(events)
        .where(events.c.id == event_id)
        .values(
            status=status,
            next_attempt_at=next_at,
            lease_owner=None,
            last_error=error[:4000],
            last_traceback=traceback[-20000:] if traceback else None,
        )
    )
    return status


def abandon(
    conn: Connection,
    held: Sequence[tuple[str, int]],
    *,
    worker: str,
    error: str,
    max_attempts: int,
    schedule: Sequence[int],
    now: datetime,
) -> int:
    """Events ``(id, attempt)`` whose processing transaction could not commit:
    ``failed`` with a next attempt, or ``dead`` at ``max_attempts``, for those
    ``worker`` still holds. Returns how many were marked."""
    marked = 0
    for event_id, attempt in held:
        status = "dead" if attempt >= max_attempts else "failed"
        next_at = (
            None if status == "dead" else now + timedelta(seconds=scheduled(attempt, schedule))
        )
        marked += int(
            conn.execute(
                update(events)
                .where(_held_by(worker, [event_id]))
                .values(
                    status=status,
                    next_attempt_at=next_at,
                    lease_owner=None,
                    last_error=error[:4000],
                    last_traceback=None,
                )
            ).rowcount
        )
    return marked


_ATTEMPT_COLUMNS = (
    "event_id",
    "number",
    "worker",
    "started_at",
    "finished_at",
    "outcome",
    "error",
    "traceback",
)


def abandon_claim(
    conn: Connection,
    claimed: Sequence[tuple[str, int]],
    *,
    error: str,
    max_attempts: int,
    schedule: Sequence[int],
    now: datetime,
) -> int:
    """Events ``(id, attempt)`` whose claim was rolled back with the group
    processed in its transaction: count that attempt and mark them ``failed``
    with a next attempt, or ``dead`` at ``max_attempts``, as ``abandon`` marks
    a batch claimed apart. Only events still as the claim found them
    (``attempt - 1`` attempts, claimable): one another worker claimed since
    is left alone. Returns how many were marked."""
    marked = 0
    for event_id, attempt in claimed:
        status = "dead" if attempt >= max_attempts else "failed"
        next_at = (
            None if status == "dead" else now + timedelta(seconds=scheduled(attempt, schedule))
        )
        marked += int(
            conn.execute(
                update(events)
                .where(
                    events.c.id == event_id,
                    events.c.attempts == attempt - 1,
                    events.c.status.in_(CLAIMABLE),
                )
                .values(
                    status=status,
                    attempts=attempt,
                    next_attempt_at=next_at,
                    lease_owner=None,
                    last_error=error[:4000],
                    last_traceback=None,
                )
            ).rowcount
        )
    return marked


def record_attempt(
    conn: Connection,
    rows: Sequence[dict[str, Any]],
) -> None:
    """Append rows to the attempt log (event_id, number, worker, started_at,
    finished_at, outcome, error, traceback)."""
    if not rows:
        return
    sql = (
        f"INSERT INTO stripeline_attempts ({', '.join(_ATTEMPT_COLUMNS)})"  # noqa: S608
        f" VALUES ({raw.marks(conn, len(_ATTEMPT_COLUMNS))})"
    )
    conn.exec_driver_sql(
        sql,
        [
            (
                row["event_id"],
                row["number"],
                row["worker"],
                raw.stamp(conn, row["started_at"]),
                raw.stamp(conn, row["finished_at"]),
                row["outcome"],
                row.get("error"),
                row.get("traceback"),
            )
            for row in rows
        ],
    )


def retry(
    conn: Connection,
    *,
    event_id: str | None = None,
    dead: bool = False,
    now: datetime | None = None,
) -> int:
    """Make failed or dead events due now, with a fresh attempt budget.

    With ``event_id``, that event (if failed or dead); with ``dead=True``,
    every dead event. Returns how many were scheduled.
    """
    now = now or utcnow()
    cond = events.c.id == event_id if event_id is not None else events.c.status == "dead"
    if event_id is None and not dead:
        return 0
    stmt = (
        update(events)
        .where(cond, events.c.status.in_(("failed", "dead")))
        .values(status="pending", attempts=0, next_attempt_at=now, lease_owner=None)
    )
    return int(conn.execute(stmt).rowcount)


def replay(conn: Connection, event_id: str, *, now: datetime | None = None) -> bool:
    """Process an event again, whatever its status but ``processing``.

    The mirror ignores a state it already holds; the application's handlers
    run again (the at-least-once contract). An ``ignored`` event (other mode)
    is processed as any other when replayed by hand. Returns False when the
    event is unknown or a worker holds it right now.
    """
    now = now or utcnow()
    stmt = (
        update(events)
        .where(events.c.id == event_id, events.c.status != "processing")
        .values(status="pending", attempts=0, next_attempt_at=now, lease_owner=None)
    )
    if conn.execute(stmt).rowcount != 1:
        return False
    conn.execute(
        deliveries.insert().values(
            event_id=event_id, received_at=now, source="replay", signed_at=None
        )
    )
    return True


def probe_write(conn: Connection) -> None:
    """A write that changes nothing (an UPDATE of no row), for readiness: it
    fails where every write would, in a read-only transaction (PostgreSQL
    ``default_transaction_read_only``, a standby) or on a read-only SQLite
    database. The caller rolls its transaction back.

    Raises:
        sqlalchemy.exc.DBAPIError: the database refuses writes.
    """
    conn.execute(update(events).where(events.c.id == "").values(status=events.c.status))


def queue_depth(conn: Connection) -> dict[str, int]:
    """Number of events per status (every status present, zero included)."""
    counts = dict.fromkeys(STATUSES, 0)
    for status, count in conn.execute(
        select(events.c.status, func.count()).group_by(events.c.status)
    ):
        counts[status] = int(count)
    return counts


def oldest_pending(conn: Connection) -> datetime | None:
    """When the longest-waiting unprocessed event was received.

    One ``min`` per status, each the first entry of the (status,
    received_at) index: a single ``min … WHERE status IN (…)`` may be planned
    (PostgreSQL, prepared) as a walk of the whole received_at index looking
    for a waiting row, which takes as long as the inbox is big when none is.
    """
    firsts = conn.execute(
        select(
            *(
                select(func.min(events.c.received_at))
                .where(events.c.status == status)
                .scalar_subquery()
                for status in CLAIMABLE
            )
        )
    ).one()
    found = [first for first in firsts if first is not None]
    return min(found) if found else None


#: The condition of ``ix_stripeline_events_claim`` (migration 0009) as written
#: in it: SQLite reads a partial index only for a query holding its very
#: terms (``status IN (?, ?, ?)`` with bound values does not match it).
_CLAIMABLE_AS_INDEXED = text("status IN ('pending', 'failed', 'processing')")


def next_due(conn: Connection) -> datetime | None:
    """When the next claimable event falls due (None: nothing to do): the
    first entry of the claim's partial index."""
    return conn.execute(
        select(func.min(events.c.next_attempt_at)).where(_CLAIMABLE_AS_INDEXED)
    ).scalar_one_or_none()
