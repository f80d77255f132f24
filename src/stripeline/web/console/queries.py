"""What the console reads and writes: a page of events (by cursor, from an
index at any inbox size), the dead events a bulk replay takes, and the audit
log. The queues keep their own lifecycle (``inbox.retry``/``inbox.replay``
make the changes); this module only selects and records."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, Table, func, select

from stripeline import inbox
from stripeline.db.models import ConsoleAudit
from stripeline.inbox import attempts, events, utcnow
from stripeline.mirror._store import mirror_id, summary_id
from stripeline.mirror.refetch import refetches
from stripeline.mirror.tables import all_tables, table_for
from stripeline.ops import _SUMMARY_COLUMNS, EventSummary, newest_events
from stripeline.sync.cursors import catch_up_gap, read_cursor

audit = cast(Table, ConsoleAudit.__table__)

#: Events shown per page.
PAGE_SIZE = 50
#: Most events one bulk replay takes (the confirmation says when more match).
BULK_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class EventFilter:
    """The event list's filters (all optional)."""

    type: str | None = None
    status: str | None = None
    object_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    #: Events touching this customer's objects (``customer_objects`` holds
    #: their ids, read from the mirror by ``with_customer_objects``).
    customer: str | None = None
    customer_objects: tuple[str, ...] = ()

    @property
    def by_type_or_object(self) -> bool:
        """Whether the filter names one type or objects: indexes that leave
        the pending events out serve it (``ops.newest_events``)."""
        return bool((self.type and not self.type.endswith("*")) or self.object_id or self.customer)

    def conditions(self) -> list[Any]:
        """The filter's conditions but the status (``ops.newest_events`` adds it)."""
        conds: list[Any] = []
        if self.type:
            conds.append(
                events.c.type.like(self.type[:-1].replace("%", "") + "%")
                if self.type.endswith("*")
                else events.c.type == self.type
            )
        if self.object_id:
            conds.append(events.c.object_id == self.object_id)
        if self.since is not None:
            conds.append(events.c.received_at >= self.since)
        if self.until is not None:
            conds.append(events.c.received_at < self.until)
        if self.customer:
            conds.append(events.c.object_id.in_(self.customer_objects or (self.customer,)))
        return conds

    def with_customer_objects(self, conn: Connection, *, account: str = "") -> EventFilter:
        """This filter with its customer's object ids read from the mirror."""
        if not self.customer:
            return self
        return replace(self, customer_objects=tuple(customer_objects(conn, self.customer, account)))

    def describe(self) -> str:
        """The filter in words, for the audit log and confirmations."""
        parts = [
            f"{name}={value.isoformat() if isinstance(value, datetime) else value}"
            for name, value in (
                ("type", self.type),
                ("status", self.status),
                ("object", self.object_id),
                ("since", self.since),
                ("until", self.until),
                ("customer", self.customer),
            )
            if value
        ]
        return " ".join(parts) or "all events"


def encode_cursor(summary: EventSummary) -> str:
    raw = json.dumps([summary.received_at.isoformat(), summary.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    """The position a cursor names, None when absent or unreadable."""
    if not cursor:
        return None
    try:
        at, event_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return datetime.fromisoformat(at), str(event_id)
    except (ValueError, TypeError):
        return None


@dataclass(frozen=True, slots=True)
class EventPage:
    events: list[EventSummary]
    #: The cursor of the next (older) page; None on the last page.
    next_cursor: str | None


def list_events(
    conn: Connection, where: EventFilter, *, cursor: str | None = None, limit: int = PAGE_SIZE
) -> EventPage:
    """Newest received first, ``limit`` per page, after ``cursor``."""
    found = newest_events(
        conn,
        _SUMMARY_COLUMNS,
        where.conditions(),
        status=where.status,
        by_type_or_object=where.by_type_or_object,
        after=decode_cursor(cursor),
        limit=limit + 1,
    )
    rows = [EventSummary(*tuple(row)) for row in found]
    more = len(rows) > limit
    rows = rows[:limit]
    return EventPage(rows, encode_cursor(rows[-1]) if more and rows else None)


def attempt_totals(conn: Connection, event_ids: Sequence[str]) -> dict[str, int]:
    """Attempts logged per event, over every round (a replay or retry starts
    the event's own counter again, not this one): one indexed count."""
    if not event_ids:
        return {}
    rows = conn.execute(
        select(attempts.c.event_id, func.count())
        .where(attempts.c.event_id.in_(list(event_ids)))
        .group_by(attempts.c.event_id)
    )
    return {str(event_id): int(count) for event_id, count in rows}


def dead_ids(conn: Connection, where: EventFilter, *, limit: int = BULK_LIMIT) -> list[str]:
    """The dead events matching ``where`` (the status filter is replaced by ``dead``)."""
    found = newest_events(
        conn,
        (events.c.id, events.c.received_at),
        where.conditions(),
        status="dead",
        by_type_or_object=where.by_type_or_object,
        limit=limit,
    )
    return [str(row.id) for row in found]


#: The statuses counted on every page: the ones a person may need to act on.
#: They are few in a healthy inbox, and each count is a range of the
#: (status, received_at, id) index; ``processed`` and ``ignored`` (nearly
#: every row) are never counted.
COUNTED = ("pending", "processing", "failed", "dead")


def count_by_status(conn: Connection) -> dict[str, int]:
    """How many events are pending, processing, failed and dead."""
    counts = dict.fromkeys(COUNTED, 0)
    for status, count in conn.execute(
        select(events.c.status, func.count())
        .where(events.c.status.in_(COUNTED))
        .group_by(events.c.status)
    ):
        counts[str(status)] = int(count)
    return counts


def record(
    conn: Connection,
    *,
    actor: str,
    role: str,
    action: str,
    target: str | None = None,
    count: int = 0,
    client: str | None = None,
    now: datetime | None = None,
) -> None:
    """Append one line to the audit log."""
    conn.execute(
        audit.insert().values(
            at=now or utcnow(),
            actor=actor,
            role=role,
            action=action,
            target=target[:2000] if target else None,
            count=count,
            client=client[:64] if client else None,
        )
    )


def recent_audit(conn: Connection, *, limit: int = 100) -> Sequence[Any]:
    """The audit log, newest first."""
    return list(
        conn.execute(
            select(audit).order_by(audit.c.at.desc(), audit.c.id.desc()).limit(limit)
        ).mappings()
    )


@dataclass(frozen=True, slots=True)
class Minute:
    """One minute of the overview's chart."""

    start: datetime
    received: int
    processed: int
    failed: int


def _minute_of(conn: Connection, column: Any) -> Any:
    if conn.dialect.name == "sqlite":
        return func.strftime("%Y-%m-%d %H:%M", column)
    return func.to_char(
        func.date_trunc("minute", func.timezone("UTC", column)), "YYYY-MM-DD HH24:MI"
    )


def per_minute(conn: Connection, *, now: datetime, minutes: int = 60) -> list[Minute]:
    """Events received, events processed and attempts failed, per minute over
    the last ``minutes`` (oldest first; each counted in SQL from an index).

    Processed events are counted by their ``processed_at`` (the worker writes
    no attempt row for the events it applies in bulk); failed attempts from
    the attempt log."""
    end = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    start = end - timedelta(minutes=minutes)
    received: dict[str, int] = {}
    bucket = _minute_of(conn, events.c.received_at)
    for key, count in conn.execute(
        select(bucket, func.count()).where(events.c.received_at >= start).group_by(bucket)
    ):
        received[str(key)] = int(count)
    processed: dict[str, int] = {}
    bucket = _minute_of(conn, events.c.processed_at)
    for key, count in conn.execute(
        select(bucket, func.count())
        # Both conditions: the partial index of processed rows is chosen.
        .where(events.c.processed_at.is_not(None), events.c.processed_at >= start)
        .group_by(bucket)
    ):
        processed[str(key)] = int(count)
    failed: dict[str, int] = {}
    bucket = _minute_of(conn, attempts.c.finished_at)
    for key, count in conn.execute(
        select(bucket, func.count())
        .where(attempts.c.finished_at >= start, attempts.c.outcome.in_(("failed", "dead")))
        .group_by(bucket)
    ):
        failed[str(key)] = int(count)
    result = []
    for i in range(minutes):
        moment = start + timedelta(minutes=i)
        key = moment.strftime("%Y-%m-%d %H:%M")
        result.append(
            Minute(moment, received.get(key, 0), processed.get(key, 0), failed.get(key, 0))
        )
    return result


@dataclass(frozen=True, slots=True)
class Overview:
    counts: dict[str, int]
    oldest_pending: datetime | None
    minutes: list[Minute]
    catch_up_at: datetime | None
    catch_up_gap: float | None
    refetch_queued: int
    refetch_gave_up: int


def overview(conn: Connection, *, now: datetime) -> Overview:
    """What the overview page shows but the disputes (read through ``app.disputes``)."""
    cursor = read_cursor(conn)
    queued, gave_up = conn.execute(
        select(
            func.count().filter(refetches.c.gave_up_at.is_(None)),
            func.count().filter(refetches.c.gave_up_at.is_not(None)),
        )
    ).one()
    return Overview(
        counts=count_by_status(conn),
        oldest_pending=inbox.oldest_pending(conn),
        minutes=per_minute(conn, now=now),
        catch_up_at=cursor.updated_at if cursor else None,
        catch_up_gap=catch_up_gap(conn, now),
        refetch_queued=int(queued or 0),
        refetch_gave_up=int(gave_up or 0),
    )


#: Per type, at most this many of a customer's objects are looked for in the
#: event list's customer filter (the newest ones).
CUSTOMER_OBJECTS_PER_TYPE = 200
#: The mirror's types that name their customer (each by an indexed column).
_CUSTOMER_TYPES = (
    "subscription",
    "invoice",
    "payment_intent",
    "charge",
    "payment_method",
    "checkout.session",
)


def customer_objects(conn: Connection, customer: str, account: str = "") -> list[str]:
    """The ids of a customer's objects in the mirror: the customer, its
    subscriptions, invoices, payment intents, charges, payment methods,
    checkout sessions, the refunds and disputes of its charges, its
    entitlement summary (each type's newest ``CUSTOMER_OBJECTS_PER_TYPE``)."""
    ids = [customer, summary_id(customer)]
    charges: list[str] = []
    for object_type in _CUSTOMER_TYPES:
        table = table_for(object_type).table
        found = [
            str(row[0])
            for row in conn.execute(
                select(table.c.id)
                .where(table.c.account == account, table.c.customer == customer)
                .order_by(table.c.marker.desc())
                .limit(CUSTOMER_OBJECTS_PER_TYPE)
            )
        ]
        ids.extend(found)
        if object_type == "charge":
            charges = found
    for object_type in ("refund", "dispute"):
        table = table_for(object_type).table
        for start in range(0, len(charges), 100):
            ids.extend(
                str(row[0])
                for row in conn.execute(
                    select(table.c.id).where(
                        table.c.account == account,
                        table.c.charge.in_(charges[start : start + 100]),
                    )
                )
            )
    return list(dict.fromkeys(ids))


@dataclass(frozen=True, slots=True)
class MirrorRow:
    """One object as the mirror holds it, with where its state came from."""

    id: str
    object_type: str
    data: dict[str, Any]
    marker: int
    #: The event whose state the row holds (None: a read from the API).
    event_id: str | None
    deleted: bool
    updated_at: datetime


def mirror_row(
    conn: Connection, object_id: str, *, account: str = "", object_type: str | None = None
) -> MirrorRow | None:
    """The mirror's row of ``object_id`` (any table; deleted ones included)."""
    tables = [table_for(object_type)] if object_type else all_tables()
    for mirror_table in tables:
        table = mirror_table.table
        row = conn.execute(
            select(
                table.c.data, table.c.marker, table.c.event_id, table.c.deleted, table.c.updated_at
            ).where(table.c.account == account, table.c.id == object_id)
        ).first()
        if row is not None:
            data = dict(row.data)
            return MirrorRow(
                object_id,
                str(data.get("object") or object_type or "object"),
                data,
                int(row.marker),
                row.event_id,
                bool(row.deleted),
                row.updated_at,
            )
    return None


@dataclass(frozen=True, slots=True)
class Touched:
    """A mirror object an event wrote (or meant to)."""

    id: str
    object_type: str
    #: this event | a later event | an API read | not mirrored
    holds: str
    #: The event whose state the mirror holds instead (``a later event``).
    other_event: str | None = None


def touched_by(conn: Connection, event_id: str, payload: Any, account: str | None) -> list[Touched]:
    """The mirror objects an event's object went to: its ``data.object`` (a
    thin event's ``related_object``, which the worker reads from the API)
    and, for a subscription, the items written with it."""

    def describe(object_id: str, object_type: str) -> Touched:
        row = mirror_row(conn, object_id, account=account or "", object_type=object_type)
        if row is None:
            return Touched(object_id, object_type, "not mirrored")
        if row.event_id == event_id:
            return Touched(object_id, object_type, "this event")
        if row.event_id is None:
            return Touched(object_id, object_type, "an API read")
        return Touched(object_id, object_type, "a later event", row.event_id)

    if not isinstance(payload, dict):
        return []
    data = payload.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    object_id = mirror_id(obj)
    if object_id is None or not isinstance(obj, dict):
        related = payload.get("related_object")
        if (
            isinstance(related, dict)
            and isinstance(related.get("id"), str)
            and isinstance(related.get("type"), str)
        ):
            return [describe(related["id"], related["type"])]
        return []
    found = [describe(object_id, str(obj["object"]))]
    if obj["object"] == "subscription":
        items = table_for("subscription_item").table
        for (item_id,) in conn.execute(
            select(items.c.id)
            .where(items.c.account == (account or ""), items.c.subscription == object_id)
            .order_by(items.c.id)
            .limit(50)
        ):
            found.append(describe(str(item_id), "subscription_item"))
    return found
