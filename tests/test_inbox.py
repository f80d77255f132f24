"""inbox.store: one statement per group, every delivery counted."""

from __future__ import annotations

from sqlalchemy import Engine, func, select

from stripeline import inbox, ops
from stripeline.core.envelope import parse_envelope
from stripeline.db.engine import connect
from stripeline.db.models import Delivery, Event
from tests.factories import encode, event


def incoming(payload: bytes) -> inbox.IncomingEvent:
    return inbox.IncomingEvent(
        envelope=parse_envelope(payload)[0],
        payload=payload,
        source="webhook",
        received_at=inbox.utcnow(),
    )


def test_the_same_event_twice_in_one_group_is_one_row_two_deliveries(engine: Engine) -> None:
    a, b = encode(event()), encode(event())
    with connect(engine) as conn:
        assert inbox.store(conn, [incoming(a), incoming(b), incoming(a)]) == [True, True, False]
    with connect(engine) as conn:
        assert inbox.store(conn, [incoming(b)]) == [False]
        assert inbox.store(conn, []) == []
    with connect(engine, readonly=True) as conn:
        counts = dict(conn.execute(select(Event.id, Event.deliveries)).all())
        assert sorted(counts.values()) == [2, 2]
        # First arrivals live on the event row; the table keeps the later ones.
        assert conn.execute(select(func.count()).select_from(Delivery)).scalar_one() == 2
        for event_id in counts:
            detail = ops.get_event(conn, event_id)
            assert detail is not None and len(detail.deliveries) == 2
