"""Writing states into the mirror: decide with ``core.ordering``, then upsert.

States for many objects are applied with a few statements: one read of the
held markers per table, one upsert of the winners per table. The upsert is
guarded (``WHERE incoming (marker, rank) > held``) so that two workers racing
on one object on PostgreSQL cannot regress it either. Tables are written in
the order of their names and rows in the order of their (account, id): every
transaction takes its row locks in one global order, so two workers writing
the same objects cannot deadlock on them. States that cannot be
ordered (same marker and rank, different data) are returned as ties for the
caller to settle by re-fetching.

Row order alone is not enough when one transaction writes objects in several
calls (the worker applies events one by one, each in its own SAVEPOINT): on
PostgreSQL every writer of the mirror first takes a transaction-scoped
advisory lock per object it will touch (``lock_objects``), in ascending key
order, and touches only objects it holds the lock of. ``apply_states`` takes
those its states need, unless the transaction holds them already (the worker
takes its events' ones before it applies them). SQLite has one writer: no lock.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Engine, Table, select, text
from sqlalchemy.exc import OperationalError

from stripeline.core.ordering import (
    Decision,
    Seen,
    clock_read_marker,
    decide,
    fetch_marker,
    needs_data,
    rank,
)
from stripeline.db import raw
from stripeline.db.engine import CUSTOM_PLAN
from stripeline.db.raw import RowWriter
from stripeline.mirror.erasure import guard_states
from stripeline.mirror.tables import MirrorTable, all_tables, table_for


@dataclass(frozen=True, slots=True)
class State:
    """One state of one Stripe object, on its way into the mirror."""

    account: str
    id: str
    object_type: str
    livemode: bool
    data: dict[str, Any]
    marker: int
    rank: int
    event_id: str | None
    deleted: bool
    #: A read's (marker, rank) of the state held when it started (``Seen.over``).
    over: tuple[int, int] | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.account, self.id)


#: Stripe's per-customer summary of active entitlements has no id of its own
#: (``entitlements.active_entitlement_summary.updated``): the mirror
#: keeps the newest one per customer in the generic table under
#: ``summary_id(customer)``.
ENTITLEMENT_SUMMARY = "entitlements.active_entitlement_summary"
_SUMMARY_PREFIX = "entitlements_summary:"


def summary_id(customer: str) -> str:
    """The mirror id of a customer's active-entitlement summary."""
    return _SUMMARY_PREFIX + customer


def mirror_id(obj: object) -> str | None:
    """The id the mirror keeps ``obj`` under (None: the mirror does not keep it):
    its ``id``, or for an entitlement summary ``summary_id(customer)``."""
    if not isinstance(obj, dict) or not isinstance(obj.get("object"), str):
        return None
    if isinstance(obj.get("id"), str):
        return str(obj["id"])
    customer = obj.get("customer")
    if obj["object"] == ENTITLEMENT_SUMMARY and isinstance(customer, str) and customer:
        found = summary_id(customer)
        return found if len(found) <= 255 else None
    return None


def mirrorable(obj: object) -> bool:
    """An event object the mirror keeps: a dict with string ``object`` and
    ``id`` (or a customer's entitlement summary, see ``mirror_id``)."""
    return mirror_id(obj) is not None


def state_from_event(
    obj: dict[str, Any],
    *,
    account: str | None,
    livemode: bool,
    created: int,
    event_type: str,
    event_id: str,
) -> State:
    state_rank = rank(event_type, obj)
    return State(
        account=account or "",
        id=mirror_id(obj) or obj["id"],
        object_type=obj["object"],
        livemode=livemode,
        data=obj,
        marker=created,
        rank=state_rank,
        event_id=event_id,
        deleted=state_rank >= 20,
    )


def state_from_fetch(
    obj: dict[str, Any] | None,
    *,
    object_type: str,
    object_id: str,
    account: str | None,
    livemode: bool,
    fetched_at: int,
    over: tuple[int, int] | None = None,
) -> State:
    """A state read from the API at ``fetched_at``; ``obj=None`` means gone (404).

    ``over``: the (marker, rank) held for the object when the read started
    (``held_marker``); the read wins over it and is stamped past it.
    """
    data = obj if obj is not None else {"id": object_id, "object": object_type, "deleted": True}
    state_rank = rank(None, data)
    return State(
        account=account or "",
        id=object_id,
        object_type=object_type,
        livemode=livemode,
        data=data,
        marker=fetch_marker(fetched_at, over),
        rank=state_rank,
        event_id=None,
        deleted=state_rank >= 20,
        over=over,
    )


@dataclass
class ApplyResult:
    applied: int = 0
    kept: int = 0
    same: int = 0
    ties: list[State] = field(default_factory=list)


#: The first key of the advisory locks on mirror objects (PostgreSQL's
#: two-integer key space, apart from the one-bigint space the catch-up lock
#: uses); the second key is ``object_key``.
LOCK_NAMESPACE = 0x53544C4D
_HELD = "stripeline_mirror_locks"
# unnest yields the keys in the array's order: the locks are taken in it.
_LOCK = text(
    "SELECT count(pg_advisory_xact_lock(CAST(:ns AS integer), k))"
    " FROM unnest(CAST(:keys AS integer[])) AS k"
)
_TRY_LOCK = text(
    "SELECT k FROM unnest(CAST(:keys AS integer[])) AS k"
    " WHERE NOT pg_try_advisory_xact_lock(CAST(:ns AS integer), k)"
)


def object_key(account: str | None, object_id: str) -> int:
    """The advisory lock key of one mirror object (a 32-bit hash of its
    account and id: the primary key of its mirror row and re-fetch row).
    Two objects sharing a key are merely serialised."""
    return _object_key(account or "", object_id)


@lru_cache(maxsize=16_384)
def _object_key(account: str, object_id: str) -> int:
    # Cached: a worker's batch asks for each object's key two or three
    # times (its locks are taken before the mirror is written).
    digest = hashlib.blake2b(
        f"{account}\x00{object_id}".encode(), digest_size=4, person=b"stripeline"
    ).digest()
    return int.from_bytes(digest, "big", signed=True)


def object_keys(account: str | None, obj: object) -> set[int]:
    """The keys of what writing ``obj`` touches: the object itself and, for a
    subscription, the items it lists (their rows are written with it; an
    invoice's lines are keyed by the invoice, under its lock)."""
    if not mirrorable(obj) or not isinstance(obj, dict):
        return set()
    keys = {object_key(account, str(mirror_id(obj)))}
    if obj["object"] == "subscription":
        items = obj.get("items")
        listed = items.get("data") if isinstance(items, dict) else None
        if isinstance(listed, list):
            keys.update(
                object_key(account, item["id"])
                for item in listed
                if isinstance(item, dict) and isinstance(item.get("id"), str)
            )
    return keys


def try_lock_objects(conn: Connection, keys: Iterable[int]) -> set[int]:
    """PostgreSQL: ``lock_objects(keys, wait=False)``, returning the keys
    held by another transaction (the others are taken). SQLite: none."""
    if conn.dialect.name != "postgresql":
        return set()
    held = _held_keys(conn)
    wanted = sorted(set(keys) - held)
    if not wanted:
        return set()
    refused = set(conn.execute(_TRY_LOCK, {"ns": LOCK_NAMESPACE, "keys": wanted}).scalars())
    held.update(k for k in wanted if k not in refused)
    return refused


def _held_keys(conn: Connection) -> set[int]:
    """The advisory locks this connection's transaction holds (``lock_objects``)."""
    transaction = conn.get_transaction()
    mark = conn.info.get(_HELD)
    if mark is None or mark[0] is not transaction:
        mark = conn.info[_HELD] = (transaction, set())
    held: set[int] = mark[1]
    return held


def lock_objects(conn: Connection, keys: Iterable[int], *, wait: bool = True) -> bool:
    """PostgreSQL: take this transaction's advisory lock on each of ``keys``
    it does not hold yet, in ascending order, waiting for them (``wait``), or
    only those free at once (``wait=False``, which never waits: False when one
    is held by another transaction). A transaction that waits must hold no
    other lock that a holder of these could be waiting for: take them first.
    The locks last until the transaction ends. SQLite: nothing, True."""
    if conn.dialect.name != "postgresql":
        return True
    held = _held_keys(conn)
    wanted = sorted(set(keys) - held)
    if not wanted:
        return True
    if wait:
        conn.execute(_LOCK, {"ns": LOCK_NAMESPACE, "keys": wanted})
        held.update(wanted)
        return True
    refused = set(conn.execute(_TRY_LOCK, {"ns": LOCK_NAMESPACE, "keys": wanted}).scalars())
    held.update(k for k in wanted if k not in refused)
    return not refused


#: Per (backend, table): the columns and how their values are passed.
_WRITERS: dict[tuple[str, str], RowWriter] = {}


def _writer(conn: Connection, table: Table) -> RowWriter:
    cache_key = (conn.dialect.name, table.name)
    writer = _WRITERS.get(cache_key)
    if writer is None:
        writer = _WRITERS[cache_key] = RowWriter(conn.dialect.name, table)
    return writer


def _upsert(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """The guarded upsert of ``rows`` into ``table`` (multi-row ``VALUES``,
    on the driver); returns the (account, id) of the rows written."""
    writer = _writer(conn, table)
    keys = {"account", "id"}
    updates = ", ".join(f"{name} = excluded.{name}" for name in writer.columns if name not in keys)
    name = table.name
    written: set[tuple[str, str]] = set()
    for start in range(0, len(rows), writer.chunk):
        chunk = rows[start : start + writer.chunk]
        sql = (
            f"INSERT INTO {name} ({', '.join(writer.columns)}) {writer.source(len(chunk))}"
            f" ON CONFLICT (account, id) DO UPDATE SET {updates}"
            f" WHERE excluded.marker > {name}.marker OR (excluded.marker = {name}.marker"
            f" AND excluded.marker_rank > {name}.marker_rank)"
            " RETURNING account, id"
        )
        written.update(
            (row[0], row[1]) for row in conn.exec_driver_sql(sql, tuple(writer.params(chunk)))
        )
    return written


def _held(
    conn: Connection, table: Table, keys: list[tuple[str, str]]
) -> dict[tuple[str, str], Seen]:
    by_account: dict[str, list[str]] = {}
    for account, object_id in keys:
        by_account.setdefault(account, []).append(object_id)
    held: dict[tuple[str, str], Seen] = {}
    mark = "?" if conn.dialect.name == "sqlite" else "%s"
    for account, ids in by_account.items():
        # account = ? AND id IN (…): a primary-key lookup on every backend
        # (a row-value IN is not always one).
        for start in range(0, len(ids), 500):
            some = ids[start : start + 500]
            rows = conn.exec_driver_sql(
                f"SELECT id, marker, marker_rank, event_id IS NULL FROM {table.name}"  # noqa: S608
                f" WHERE account = {mark} AND {raw.in_list(conn, 'id', len(some))}",
                (account, *raw.in_params(conn, some)),
                # A table grows under a long-lived worker: a generic plan made
                # while it was small would read all of it (db.engine._custom_plans).
                execution_options={CUSTOM_PLAN: True},
            )
            for object_id, marker, marker_rank, fetched in rows:
                held[(account, object_id)] = Seen(marker, marker_rank, bool(fetched))
    return held


def _held_data(conn: Connection, table: Table, key: tuple[str, str]) -> dict[str, Any] | None:
    row = conn.execute(
        select(table.c.data).where(table.c.account == key[0], table.c.id == key[1])
    ).first()
    return None if row is None else dict(row.data)


def _customer_of(data: dict[str, Any]) -> str | None:
    customer = data.get("customer")
    if isinstance(customer, dict):
        customer = customer.get("id")
    return customer if isinstance(customer, str) and customer else None


def _stamp_clock_reads(conn: Connection, states: Sequence[State]) -> Sequence[State]:
    """Reads of test-mode objects on a Stripe test clock, stamped with the
    clock's time rather than ours (``ordering.clock_read_marker``).

    An object is on a clock when it says so (``test_clock``: customers,
    subscriptions, invoices, schedules) or when its ``customer`` is, as the
    mirror holds it (payment intents, charges, payment methods of a clocked
    customer). Live objects are never on a clock: nothing is read for them."""
    reads = [s for s in states if s.event_id is None and not s.livemode and not s.deleted]
    if not reads:
        return states
    clocked = {s.key for s in reads if s.data.get("test_clock")}
    wanted = {
        (s.account, customer)
        for s in reads
        if s.key not in clocked and (customer := _customer_of(s.data)) is not None
    }
    clocked_customers: set[tuple[str, str]] = set()
    if wanted:
        table = table_for("customer").table
        by_account: dict[str, list[str]] = {}
        for account, customer in sorted(wanted):
            by_account.setdefault(account, []).append(customer)
        for account, ids in by_account.items():
            for start in range(0, len(ids), 500):
                rows = conn.execute(
                    select(table.c.id, table.c.data).where(
                        table.c.account == account, table.c.id.in_(ids[start : start + 500])
                    )
                )
                clocked_customers |= {
                    (account, object_id)
                    for object_id, data in rows
                    if isinstance(data, dict) and data.get("test_clock")
                }
    if not clocked and not clocked_customers:
        return states
    read_ids = {id(s) for s in reads}
    stamped = []
    for state in states:
        customer = _customer_of(state.data)
        if id(state) in read_ids and (
            state.key in clocked
            or (customer is not None and (state.account, customer) in clocked_customers)
        ):
            marker = clock_read_marker(state.over, state.data.get("created"))
            state = replace(state, marker=marker)
        stamped.append(state)
    return stamped


def _seen(state: State) -> Seen:
    return Seen(state.marker, state.rank, state.event_id is None, state.data, state.over)


def _newest(states: Sequence[State], result: ApplyResult) -> dict[tuple[str, str], State]:
    """One state per object: the newest of those given, ties reported."""
    newest: dict[tuple[str, str], State] = {}
    for state in states:
        held = newest.get(state.key)
        if held is None:  # the object's first state here (``decide``: APPLY)
            newest[state.key] = state
            continue
        decision = decide(_seen(held), _seen(state))
        if decision is Decision.APPLY:
            newest[state.key] = state
        elif decision is Decision.TIE:
            result.ties.append(state)
    return newest


def apply_states(conn: Connection, states: Sequence[State], *, now: datetime) -> ApplyResult:
    """Write each state unless the mirror holds a newer one; report ties.

    On PostgreSQL the objects' advisory locks are taken first (``lock_objects``),
    unless the transaction holds them already. States of an erased customer's
    objects are scrubbed of personal data (``erasure.guard_states``)."""
    if conn.dialect.name == "postgresql":
        keys: set[int] = set()
        for state in states:
            keys |= object_keys(state.account, state.data) | {object_key(state.account, state.id)}
        lock_objects(conn, keys)
    states = guard_states(conn, states)
    states = _stamp_clock_reads(conn, states)
    result = ApplyResult()
    by_table: dict[str, tuple[MirrorTable, list[State]]] = {}
    for state in _newest(states, result).values():
        mirror_table = table_for(state.object_type)
        by_table.setdefault(mirror_table.table.name, (mirror_table, []))[1].append(state)
    for name in sorted(by_table):
        mirror_table, group = by_table[name]
        group.sort(key=lambda state: state.key)
        table = mirror_table.table
        held = _held(conn, table, [s.key for s in group])
        rows = []
        applying: dict[tuple[str, str], State] = {}
        swapped: list[dict[str, Any]] = []
        for state in group:
            seen = held.get(state.key)
            decision = _decide(conn, table, state, seen)
            if decision is not Decision.APPLY:
                _count(result, decision, state)
                continue
            row = {
                "account": state.account,
                "id": state.id,
                "livemode": state.livemode,
                "data": state.data,
                "marker": state.marker,
                "marker_rank": state.rank,
                "event_id": state.event_id,
                "deleted": state.deleted,
                "updated_at": now,
                **mirror_table.columns(state.data),
            }
            if (
                seen is not None
                and state.over is not None
                and ((state.marker, state.rank) <= (seen.marker, seen.rank))
            ):
                # A read that wins over the state it started after without a
                # later marker (an object on a test clock): the guarded upsert
                # would refuse it, so it replaces that very state or nothing.
                if _swap(conn, table, row, state.over):
                    swapped.append(row)
                else:
                    now_held = _held(conn, table, [state.key]).get(state.key)
                    _count(result, _decide(conn, table, state, now_held), state)
                continue
            applying[state.key] = state
            rows.append(row)
        if rows:
            written = _upsert(conn, table, rows)
            if len(written) < len(rows):
                # Another transaction wrote some of these objects between our
                # read and our write (PostgreSQL, several workers): the guard
                # kept its state. Decide again against what it committed, so
                # that an equal marker is a tie to re-fetch, never a silent loss.
                lost = [key for key in applying if key not in written]
                again = _held(conn, table, lost)
                for key in lost:
                    _count(
                        result, _decide(conn, table, applying[key], again.get(key)), applying[key]
                    )
                rows = [row for row in rows if (row["account"], row["id"]) in written]
        rows += swapped
        result.applied += len(rows)
        if rows and conn.dialect.name == "postgresql":
            _analyse_once(conn, table.name)
        if rows and mirror_table.after_write is not None:
            mirror_table.after_write(conn, rows)
    return result


#: The mirror tables whose statistics this process has seen to, per engine
#: (a test process's engines come and go: their entries with them).
_ANALYSED: weakref.WeakKeyDictionary[Engine, set[str]] = weakref.WeakKeyDictionary()
_NEVER_ANALYSED = text(
    "SELECT reltuples <= 0 FROM pg_class WHERE oid = CAST(CAST(:name AS text) AS regclass)"
)


def _analyse_once(conn: Connection, name: str) -> None:
    """ANALYZE a PostgreSQL mirror table that has never been analysed, once
    per engine (an app has one), in the transaction that has just written
    rows to it.

    Until a table's first ANALYZE (autovacuum's comes within about a minute
    of its first rows, later on a busy server) the planner takes
    ``account = ''`` to be rare, and plans the held-marker read of a batch
    through whichever index leads with ``account``: every row of the account,
    for each batch (1-3 ms instead of 0.4 ms for 125 ids among 5,000-20,000
    rows). A new database's first backfill pays it on every table. Statistics
    drawn from the first rows already say ``account = ''`` is the whole table,
    which keeps every later lookup on the primary key until autovacuum takes
    over.

    ANALYZE takes the table's SHARE UPDATE EXCLUSIVE lock until this
    transaction ends; with another worker or autovacuum analysing it, this
    one waits at most 50 ms, then leaves it to them. Without the right to
    analyse the table (not its owner), PostgreSQL skips it with a warning."""
    seen = _ANALYSED.get(conn.engine)
    if seen is None:
        seen = _ANALYSED.setdefault(conn.engine, set())
    if name in seen:
        return
    seen.add(name)
    if not conn.execute(_NEVER_ANALYSED, {"name": name}).scalar():
        return
    waited = conn.execute(text("SELECT current_setting('lock_timeout')")).scalar_one()
    try:
        with conn.begin_nested():
            conn.execute(text("SELECT set_config('lock_timeout', '50ms', true)"))
            conn.exec_driver_sql(f"ANALYZE {name}")
    except OperationalError:
        return  # being analysed elsewhere; the savepoint's setting is undone
    conn.execute(text("SELECT set_config('lock_timeout', :value, true)"), {"value": waited})


def _swap(conn: Connection, table: Table, row: dict[str, Any], over: tuple[int, int]) -> bool:
    """Write ``row`` over the state held only if it is still ``over`` (a
    compare-and-set: another writer's state in between is never overwritten)."""
    keys = {"account", "id"}
    done = conn.execute(
        table.update()
        .where(
            table.c.account == row["account"],
            table.c.id == row["id"],
            table.c.marker == over[0],
            table.c.marker_rank == over[1],
        )
        .values({name: value for name, value in row.items() if name not in keys})
    )
    return done.rowcount == 1


def _decide(conn: Connection, table: Table, state: State, seen: Seen | None) -> Decision:
    """``decide`` for ``state`` against the held ``seen``, reading the held data
    when the rules need it."""
    if seen is None:  # nothing held (``decide``: APPLY)
        return Decision.APPLY
    incoming = _seen(state)
    if needs_data(seen, incoming):
        seen = Seen(seen.marker, seen.rank, seen.fetched, _held_data(conn, table, state.key))
    return decide(seen, incoming)


def _count(result: ApplyResult, decision: Decision, state: State) -> None:
    """Count a state not written: kept, the same, or a tie to settle."""
    if decision is Decision.KEEP:
        result.kept += 1
    elif decision is Decision.SAME:
        result.same += 1
    elif decision is Decision.TIE:
        result.ties.append(state)
    else:  # APPLY again: the guard refused a state the rules call newer
        result.ties.append(state)


def held_marker(
    conn: Connection, object_type: str, account: str | None, object_id: str
) -> tuple[int, int] | None:
    """The (marker, rank) the mirror holds for one object, or None."""
    table = table_for(object_type).table
    row = conn.execute(
        select(table.c.marker, table.c.marker_rank).where(
            table.c.account == (account or ""), table.c.id == object_id
        )
    ).first()
    return None if row is None else (int(row[0]), int(row[1]))


def get_object(
    conn: Connection, object_id: str, *, account: str | None = None, object_type: str | None = None
) -> dict[str, Any] | None:
    """The mirrored state of one object (deleted ones included), or None."""
    tables = [table_for(object_type)] if object_type else all_tables()
    for mirror_table in tables:
        table = mirror_table.table
        row = conn.execute(
            select(table.c.data).where(table.c.account == (account or ""), table.c.id == object_id)
        ).first()
        if row is not None:
            return dict(row.data)
    return None
