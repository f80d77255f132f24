"""Operator read models: what ``stripeline events`` shows.

The queues (``inbox``, ``mirror.refetch``) own their lifecycle; this module
only reads them for people and scripts: lists of events, one event's whole
story (deliveries, attempts), the re-fetch queue. ``as_json`` turns any of
these records into JSON-ready values (``dataclasses.asdict`` plus one
conversion of datetimes and bytes).
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, and_, or_, select, text

from stripeline.db.models import NOT_PENDING
from stripeline.inbox import attempts, deliveries, events
from stripeline.mirror.refetch import refetches


def jsonable(value: Any) -> Any:
    """``value`` with datetimes as ISO 8601 and bytes as text, recursively."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    return value


def as_json(record: Any) -> dict[str, Any]:
    """A dataclass record as a JSON-ready dict."""
    return dict(jsonable(dataclasses.asdict(record)))


@dataclass(frozen=True, slots=True)
class EventSummary:
    """One event as ``stripeline events list`` shows it."""

    id: str
    type: str
    status: str
    attempts: int
    deliveries: int
    created: int
    received_at: datetime
    account: str | None
    livemode: bool
    source: str
    next_attempt_at: datetime | None
    last_error: str | None


def _summary(values: tuple[Any, ...]) -> EventSummary:
    return EventSummary(*values)


_SUMMARY_COLUMNS = (
    events.c.id,
    events.c.type,
    events.c.status,
    events.c.attempts,
    events.c.deliveries,
    events.c.created,
    events.c.received_at,
    events.c.account,
    events.c.livemode,
    events.c.source,
    events.c.next_attempt_at,
    events.c.last_error,
)


def newest_events(
    conn: Connection,
    columns: Sequence[Any],
    where: Sequence[Any] = (),
    *,
    status: str | None = None,
    by_type_or_object: bool = False,
    after: tuple[datetime, str] | None = None,
    limit: int = 50,
) -> list[Row[Any]]:
    """``columns`` of the events matching ``where`` (and ``status``), newest
    received first (``received_at, id`` descending), at most ``limit``, those
    after the position ``after`` (keyset pagination).

    ``by_type_or_object``: ``where`` names one type (``type = …``) or objects
    (``object_id = …``/``IN …``), whose indexes leave the pending events out
    (``NOT_PENDING``, migration 0010). The events are then read in two
    halves, each newest first from an index: the others by the partial index
    (the query holds its condition as written), the pending ones by
    ``(status, received_at, id)``, merged here. With many events pending, the
    second half reads the pending events until it has ``limit`` of them (all
    of them when few match): the price of a webhook insert that writes
    neither index.

    ``columns`` must hold ``received_at`` and ``id`` (the halves are merged on
    them): ValueError names those it lacks, whatever the call would read.
    """
    query = select(*columns)
    missing = [name for name in ("received_at", "id") if name not in query.selected_columns]
    if missing:
        raise ValueError(
            "newest_events merges on received_at and id, so its columns must "
            f"include them; missing: {', '.join(missing)}"
        )
    conds = list(where)
    if status:
        conds.append(events.c.status == status)
    if after is not None:
        at, event_id = after
        conds.append(
            or_(
                events.c.received_at < at,
                and_(events.c.received_at == at, events.c.id < event_id),
            )
        )
    if not by_type_or_object or status == "pending":
        halves: list[list[Any]] = [[]]
    elif status:
        halves = [[text(NOT_PENDING)]]
    else:
        halves = [[text(NOT_PENDING)], [events.c.status == "pending"]]
    received, by_id = events.c.received_at, events.c.id
    found = [
        list(
            conn.execute(
                query.where(*conds, *half).order_by(received.desc(), by_id.desc()).limit(limit)
            )
        )
        for half in halves
    ]
    if len(found) == 1:
        return found[0]
    merged = heapq.merge(
        *found,
        key=lambda row: (row._mapping[received], row._mapping[by_id]),
        reverse=True,
    )
    return [row for _, row in zip(range(limit), merged, strict=False)]


def list_events(
    conn: Connection,
    *,
    status: str | None = None,
    type: str | None = None,
    limit: int = 50,
) -> list[EventSummary]:
    """Newest received first. ``type`` may end with ``*`` (``invoice.*``)."""
    where = []
    if type:
        where.append(
            events.c.type.like(type[:-1] + "%") if type.endswith("*") else events.c.type == type
        )
    rows = newest_events(
        conn,
        _SUMMARY_COLUMNS,
        where,
        status=status,
        by_type_or_object=type is not None and not type.endswith("*"),
        limit=limit,
    )
    return [_summary(tuple(row)) for row in rows]


@dataclass(frozen=True, slots=True)
class EventDetail:
    """One event's whole story (``stripeline events show``)."""

    summary: EventSummary
    payload: bytes
    last_traceback: str | None
    processed_at: datetime | None
    deliveries: list[dict[str, Any]]
    attempts: list[dict[str, Any]]


def get_event(conn: Connection, event_id: str) -> EventDetail | None:
    row = conn.execute(
        select(
            *_SUMMARY_COLUMNS,
            events.c.payload,
            events.c.last_traceback,
            events.c.processed_at,
            events.c.signed_at,
        ).where(events.c.id == event_id)
    ).first()
    if row is None:
        return None
    summary = _summary(tuple(row)[: len(_SUMMARY_COLUMNS)])
    first = {
        "received_at": summary.received_at,
        "source": summary.source,
        "signed_at": row.signed_at,
    }
    delivery_rows = conn.execute(
        select(deliveries.c.received_at, deliveries.c.source, deliveries.c.signed_at)
        .where(deliveries.c.event_id == event_id)
        .order_by(deliveries.c.id)
    ).mappings()
    attempt_rows = conn.execute(
        select(
            attempts.c.number,
            attempts.c.worker,
            attempts.c.started_at,
            attempts.c.finished_at,
            attempts.c.outcome,
            attempts.c.error,
            attempts.c.traceback,
        )
        .where(attempts.c.event_id == event_id)
        .order_by(attempts.c.id)
    ).mappings()
    return EventDetail(
        summary=summary,
        payload=row.payload,
        last_traceback=row.last_traceback,
        processed_at=row.processed_at,
        deliveries=[first, *(dict(r) for r in delivery_rows)],
        attempts=[dict(r) for r in attempt_rows],
    )


@dataclass(frozen=True, slots=True)
class QueuedRead:
    """A row of the re-fetch queue."""

    account: str
    id: str
    object_type: str
    requests: int
    attempts: int
    due_at: datetime
    last_error: str | None
    #: When the read was given up (Stripe refused it for good); None: still queued.
    gave_up_at: datetime | None


def list_refetches(
    conn: Connection, *, gave_up: bool | None = None, limit: int = 50
) -> list[QueuedRead]:
    """The re-fetch queue, soonest due first; ``gave_up`` True/False filters."""
    stmt = select(
        refetches.c.account,
        refetches.c.id,
        refetches.c.object_type,
        refetches.c.requests,
        refetches.c.attempts,
        refetches.c.due_at,
        refetches.c.last_error,
        refetches.c.gave_up_at,
    )
    if gave_up is not None:
        column = refetches.c.gave_up_at
        stmt = stmt.where(column.is_not(None) if gave_up else column.is_(None))
    stmt = stmt.order_by(refetches.c.due_at, refetches.c.id).limit(limit)
    return [QueuedRead(*row) for row in conn.execute(stmt)]
