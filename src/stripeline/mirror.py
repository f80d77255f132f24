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


_UPSERTS: dict[tuple[str, bool], Any] = {}


def _upsert(conn: Connection, *, returning: bool = True) -> Any:
    """The conditional upsert, built once per dialect (building it costs more
    than running it)."""
    stmt = _UPSERTS.get((conn.dialect.name, returning))
    if stmt is None:
        insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        base = insert(objects)
        ex = base.excluded
        newer = or_(
            ex.marker > objects.c.marker,
            and_(ex.marker == objects.c.marker, ex.marker_rank > objects.c.marker_rank),
            and_(
                ex.marker == objects.c.marker,
                ex.marker_rank == objects.c.marker_rank,
                ex.event_id > objects.c.event_id,
            ),
        )
        stmt = base.on_conflict_do_update(
            index_elements=[objects.c.account, objects.c.id],
            set_={
                name: getattr(ex, name)
                for name in (
                    "object",
                    "livemode",
                    "data",
                    "marker",
                    "marker_rank",
                    "event_id",
                    "deleted",
                    "updated_at",
                )
            },
            where=newer,
        )
        if returning:
            stmt = stmt.returning(objects.c.id)
        _UPSERTS[(conn.dialect.name, returning)] = stmt
    return stmt


def row_values(
    obj: dict[str, Any],
    *,
    account: str | None,
    livemode: bool,
    created: int,
    event_type: str,
    event_id: str,
    now: datetime,
) -> dict[str, Any]:
    """The mirror row an event's object maps to."""
    event_rank = rank(event_type)
    return {
        "account": account or "",
        "id": obj["id"],
        "object": obj["object"],
        "livemode": livemode,
        "data": obj,
        "marker": created,
        "marker_rank": event_rank,
        "event_id": event_id,
        "deleted": event_rank == 2 or obj.get("deleted") is True,
        "updated_at": now,
    }


def apply_object(conn: Connection, obj: dict[str, Any], **event: Any) -> bool:
    """Upsert ``obj`` unless the mirror already holds a newer state; True if written.

    ``event`` holds the keyword arguments of ``row_values``.
    """
    return conn.execute(_upsert(conn), row_values(obj, **event)).first() is not None


def _order(row: dict[str, Any]) -> tuple[int, int, str]:
    return (row["marker"], row["marker_rank"], row["event_id"])


def apply_rows(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Upsert many rows (from ``row_values``) in one round of statements.

    Within the batch only the newest state of each object is sent; the
    database keeps it only if newer than what it holds, as ``apply_object``.
    """
    newest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        key = (row["account"], row["id"])
        held = newest.get(key)
        if held is None or _order(row) > _order(held):
            newest[key] = row
    if newest:
        conn.execute(_upsert(conn, returning=False), list(newest.values()))


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
