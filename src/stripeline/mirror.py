"""The mirror, first cut: the latest known state of every Stripe object.

Each event whose ``data.object`` has an ``object`` and an ``id`` upserts that
object, keyed by (account, id). A row holds the ordering marker of the state
it holds — the event's ``created`` second and a rank inside that second — and
a state with a lower marker never overwrites a higher one, so events applied
in any order leave the same row:

* rank 0: ``*.created`` (an object's first state comes before its updates);
* rank 1: every other event;
* rank 2: ``*.deleted`` (nothing follows a deletion).

Two different updates to one object inside the same second are broken by
event id, which is deterministic but arbitrary: the convergence work (typed
tables, re-fetch on ties) replaces this rule.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, and_, or_, select
from sqlalchemy.dialects import postgresql, sqlite

from stripeline.db.models import StripeObject

objects = cast(Table, StripeObject.__table__)


def rank(event_type: str) -> int:
    """The precedence of an event's state inside one second (see module doc)."""
    if event_type.endswith(".deleted"):
        return 2
    if event_type.endswith(".created"):
        return 0
    return 1


def mirrorable(obj: object) -> bool:
    """An event object the mirror keeps: a dict with string ``object`` and ``id``."""
    return (
        isinstance(obj, dict)
        and isinstance(obj.get("object"), str)
        and isinstance(obj.get("id"), str)
    )


def apply_object(
    conn: Connection,
    obj: dict[str, Any],
    *,
    account: str | None,
    livemode: bool,
    created: int,
    event_type: str,
    event_id: str,
    now: datetime,
) -> bool:
    """Upsert ``obj`` unless the mirror already holds a newer state; True if written."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    event_rank = rank(event_type)
    deleted = event_rank == 2 or obj.get("deleted") is True
    stmt = insert(objects).values(
        account=account or "",
        id=obj["id"],
        object=obj["object"],
        livemode=livemode,
        data=obj,
        marker=created,
        marker_rank=event_rank,
        event_id=event_id,
        deleted=deleted,
        updated_at=now,
    )
    ex = stmt.excluded
    newer = or_(
        ex.marker > objects.c.marker,
        and_(ex.marker == objects.c.marker, ex.marker_rank > objects.c.marker_rank),
        and_(
            ex.marker == objects.c.marker,
            ex.marker_rank == objects.c.marker_rank,
            ex.event_id > objects.c.event_id,
        ),
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[objects.c.account, objects.c.id],
        set_={
            "object": ex.object,
            "livemode": ex.livemode,
            "data": ex.data,
            "marker": ex.marker,
            "marker_rank": ex.marker_rank,
            "event_id": ex.event_id,
            "deleted": ex.deleted,
            "updated_at": ex.updated_at,
        },
        where=newer,
    ).returning(objects.c.id)
    return conn.execute(stmt).first() is not None


def get_object(
    conn: Connection, object_id: str, *, account: str | None = None
) -> dict[str, Any] | None:
    """The mirrored state of one object, or None; deleted objects included."""
    row = conn.execute(
        select(objects.c.data).where(
            objects.c.account == (account or ""), objects.c.id == object_id
        )
    ).first()
    return None if row is None else cast(dict[str, Any], row.data)
