"""Reading the inbox by type or by object, pending events included.

Since migration 0010 the indexes by type and by object leave the pending
events out (the webhook's insert writes neither). Every reader that filters
by type or object reads the other events through them (its query holds their
condition as written, or neither planner uses them) and the pending events
through ``(status, received_at, id)``: these tests check both halves are
read, merged in received order, and that each half is planned on its index
on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text, update

from stripeline import inbox, ops
from stripeline.db import connect
from stripeline.flows import privacy
from stripeline.web.console.queries import EventFilter, dead_ids, list_events
from tests.factories import event as make_event
from tests.factories import store_events
from tests.plans import explained, sent

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def _set_status(engine: Engine, ids: list[str], status: str) -> None:
    with connect(engine) as conn:
        conn.execute(
            update(inbox.events)
            .where(inbox.events.c.id.in_(ids))
            .values(status=status, next_attempt_at=None)
        )


def _mixed_inbox(engine: Engine) -> tuple[list[str], list[str]]:
    """Twelve ``invoice.paid`` events about ``in_mixed`` received a second
    apart (two at each second), every third one left pending, the others
    processed, failed or dead; and other events around them. Returns the
    ids of the twelve, newest first, and of the pending ones."""
    ours: list[tuple[datetime, str]] = []
    pending: list[str] = []
    for i in range(12):
        at = T0 + timedelta(seconds=i // 2)
        body = make_event("invoice.paid", obj={"id": "in_mixed", "object": "invoice"})
        other = make_event("invoice.created", obj={"id": f"in_other{i}", "object": "invoice"})
        store_events(engine, [body, other], at=at)
        ours.append((at, str(body["id"])))
        if i % 3 == 0:
            pending.append(str(body["id"]))
        else:
            _set_status(engine, [str(body["id"]), str(other["id"])], "processed")
            if i % 3 == 1 and i > 6:
                _set_status(engine, [str(body["id"])], "dead" if i % 2 else "failed")
    newest_first = [event_id for _, event_id in sorted(ours, reverse=True)]
    return newest_first, pending


def _all_pages(engine: Engine, where: EventFilter, limit: int) -> list[str]:
    seen: list[str] = []
    cursor: str | None = None
    with connect(engine, readonly=True) as conn:
        while True:
            page = list_events(conn, where, cursor=cursor, limit=limit)
            seen += [summary.id for summary in page.events]
            if page.next_cursor is None:
                return seen
            cursor = page.next_cursor


@pytest.mark.parametrize(
    "where",
    [
        EventFilter(type="invoice.paid"),
        EventFilter(object_id="in_mixed"),
        EventFilter(customer="cus_nobody", customer_objects=("in_mixed", "in_absent")),
    ],
    ids=["type", "object", "customer"],
)
def test_the_console_list_by_type_or_object_shows_the_pending_events_in_received_order(
    engine: Engine, where: EventFilter
) -> None:
    expected, pending = _mixed_inbox(engine)
    for limit in (1, 2, 5, 50):
        assert _all_pages(engine, where, limit) == expected, limit
    assert set(pending) <= set(expected) and len(pending) == 4
    # With a status, one half only.
    assert _all_pages(engine, EventFilter(type="invoice.paid", status="pending"), 3) == [
        event_id for event_id in expected if event_id in pending
    ]
    not_pending = [event_id for event_id in expected if event_id not in pending]
    with connect(engine, readonly=True) as conn:
        processed = list_events(conn, EventFilter(object_id="in_mixed", status="processed"))
        dead = dead_ids(conn, EventFilter(type="invoice.paid"))
        statuses = {s.id: s.status for s in list_events(conn, EventFilter()).events}
    assert [s.id for s in processed.events] == [
        event_id for event_id in not_pending if statuses[event_id] == "processed"
    ]
    assert dead == [event_id for event_id in expected if statuses[event_id] == "dead"] != []


def test_the_cli_list_by_type_shows_the_pending_events(engine: Engine) -> None:
    expected, pending = _mixed_inbox(engine)
    with connect(engine, readonly=True) as conn:
        assert [s.id for s in ops.list_events(conn, type="invoice.paid", limit=50)] == expected
        assert [s.id for s in ops.list_events(conn, type="invoice.paid", limit=3)] == expected[:3]
        waiting = ops.list_events(conn, type="invoice.paid", status="pending")
    assert [s.id for s in waiting] == [event_id for event_id in expected if event_id in pending]


def test_newest_events_refuses_columns_without_received_at_at_once(engine: Engine) -> None:
    """The halves are merged on received_at and id: a select lacking one is
    refused before any read, not with a KeyError once both halves hold rows."""
    store_events(engine, [make_event("invoice.paid")], at=T0)
    columns = (inbox.events.c.id, inbox.events.c.type)
    with connect(engine, readonly=True) as conn:
        for by_type_or_object in (False, True):
            with pytest.raises(ValueError, match=r"missing: received_at$"):
                ops.newest_events(conn, columns, by_type_or_object=by_type_or_object)


def test_the_erasure_reads_the_pending_events_about_the_customers_objects(
    engine: Engine,
) -> None:
    """A pending event about one of the customer's objects whose payload does
    not name the customer is found only through the object's pending half."""
    charge = {"id": "ch_pending1", "object": "charge", "amount": 100}
    waiting = make_event("charge.updated", obj=charge)
    done = make_event("charge.succeeded", obj=charge)
    store_events(engine, [waiting, done], at=T0)
    _set_status(engine, [str(done["id"])], "processed")
    with connect(engine, readonly=True) as conn:
        rows = privacy._event_rows(conn, "", "cus_owner", ["ch_pending1"])
    assert sorted(row.id for row in rows) == sorted([str(waiting["id"]), str(done["id"])])


# -- plans -------------------------------------------------------------------


def _fill(engine: Engine, *, settled: int = 30000, analyze: bool = True) -> None:
    """``settled`` processed events (30,000) of 50 types about 3,000 objects,
    and 1,000 pending ones, then statistics (unless not ``analyze``)."""
    last = settled + 1000
    if engine.dialect.name == "postgresql":
        rows = f"generate_series(1, {last}) g"
        at = "now() - interval '1 second' * (40000 - g)"
        payload, livemode = "convert_to('{}', 'UTF8')", "false"
    else:
        rows = "(WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s"
        rows += f" WHERE g < {last})"
        rows += " SELECT g FROM s)"
        at = "datetime('now', '-' || (40000 - g) || ' seconds')"
        payload, livemode = "x'7b7d'", "0"
    with connect(engine) as conn:
        conn.execute(
            text(
                "INSERT INTO stripeline_events (id, type, api_version, livemode, created,"  # noqa: S608
                " received_at, last_received_at, source, status, attempts, deliveries, payload,"
                " next_attempt_at, account, object_id, object_type)"
                f" SELECT 'evt_p' || g, 'type.' || (g % 50), 'v', {livemode}, g, {at}, {at},"
                f" 'webhook', CASE WHEN g <= {settled} THEN 'processed' ELSE 'pending' END, 0, 1,"
                f" {payload}, CASE WHEN g <= {settled} THEN NULL ELSE {at} END, '',"
                f" 'cus_' || (g % 3000), 'customer' FROM {rows}"
            )
        )
        if analyze:
            conn.execute(
                text("ANALYZE" if engine.dialect.name == "sqlite" else "ANALYZE stripeline_events")
            )


def _plans(engine: Engine, read: Callable[[Any], object]) -> list[str]:
    """The plan of each SELECT ``read`` runs."""
    with sent(engine, "SELECT") as ran, connect(engine, readonly=True) as conn:
        read(conn)
    plans = explained(engine, ran)
    assert plans, "nothing was read"
    return plans


SETTLED_BY_TYPE = "ix_stripeline_events_type_received"
SETTLED_BY_OBJECT = "ix_stripeline_events_object"
PENDING = "ix_stripeline_events_status_received"


@pytest.mark.parametrize(
    ("read", "indexes"),
    [
        (lambda c: list_events(c, EventFilter(type="type.7")), [SETTLED_BY_TYPE, PENDING]),
        (lambda c: list_events(c, EventFilter(object_id="cus_7")), [SETTLED_BY_OBJECT, PENDING]),
        (
            lambda c: list_events(
                c, EventFilter(customer="cus_7", customer_objects=("cus_7", "cus_8"))
            ),
            [SETTLED_BY_OBJECT, PENDING],
        ),
        (
            lambda c: list_events(c, EventFilter(type="type.7", status="processed")),
            [SETTLED_BY_TYPE],
        ),
        # No dead event: PostgreSQL rightly starts from the status.
        (
            lambda c: dead_ids(c, EventFilter(object_id="cus_7")),
            [f"{SETTLED_BY_OBJECT}|{PENDING}"],
        ),
        (lambda c: ops.list_events(c, type="type.7"), [SETTLED_BY_TYPE, PENDING]),
        # The erasure's third read (every event not processed, their payloads
        # looked at) is a scan by design: not checked here.
        (
            lambda c: privacy._event_rows(c, "", "cus_7", ["cus_7"]),
            [SETTLED_BY_OBJECT, PENDING, None],
        ),
    ],
    ids=["type", "object", "customer", "type-status", "dead-object", "cli-type", "erasure"],
)
def test_each_half_is_read_from_its_index(
    engine: Engine, read: Callable[[Any], object], indexes: list[str | None]
) -> None:
    _fill(engine)
    plans = _plans(engine, read)
    assert len(plans) == len(indexes), plans
    for plan, index in zip(plans, indexes, strict=True):
        if index is None:
            continue
        accepted = index.split("|")
        if engine.dialect.name == "sqlite":
            assert any(
                f"USING INDEX {name} " in plan or f"USING COVERING INDEX {name} " in plan
                for name in accepted
            ), plan
            assert "SCAN stripeline_events" not in plan, plan
        else:
            assert "Seq Scan" not in plan and "Index" in plan, plan
            if index != PENDING:
                # PostgreSQL may read the few pending events through the
                # claim index (they are in it too) rather than this one.
                assert any(name in plan for name in accepted), plan


def test_the_next_due_event_is_the_first_entry_of_the_claim_index(engine: Engine) -> None:
    """``inbox.next_due`` since 0010 dropped the (status, next_attempt_at) index."""
    _fill(engine)
    with connect(engine, readonly=True) as conn:
        first = conn.execute(
            text("SELECT min(next_attempt_at) FROM stripeline_events WHERE status = 'pending'")
        ).scalar_one()
    (plan,) = _plans(engine, inbox.next_due)
    assert "ix_stripeline_events_claim" in plan, plan
    assert "SCAN stripeline_events" not in plan and "Seq Scan" not in plan, plan
    with connect(engine, readonly=True) as conn:
        due = inbox.next_due(conn)
    assert due is not None and first is not None
    if isinstance(first, str):  # SQLite: the text the fill wrote
        first = datetime.fromisoformat(first).replace(tzinfo=UTC)
    assert due == first


@pytest.mark.parametrize("statement", ["pick", "claim"])
def test_the_worker_takes_due_events_from_the_claim_index_without_sorting(
    engine: Engine, statement: str
) -> None:
    """The worker's pick and claim read the first due events from the partial
    claim index, in its order. SQLite, with no statistics (a database nobody
    ran ANALYZE on) and every event pending, chose the (status, received_at, id) index for the
    ``status IN (…)`` and sorted every due event for each batch (32 µs per
    event with 20,000 waiting) since 0010 dropped the (status, next_attempt_at)
    index; it is now named (``INDEXED BY``)."""
    sqlite = engine.dialect.name == "sqlite"
    # A new inbox, every event waiting; PostgreSQL's autovacuum analyses it.
    _fill(engine, settled=0, analyze=not sqlite)
    now = inbox.utcnow()
    at = inbox.sqlite_time(now) if sqlite else now
    sql = (inbox._PICK if statement == "pick" else inbox._CLAIM)[engine.dialect.name]
    params = (at, 500) if statement == "pick" else ("w", at, at, 500)
    (plan,) = explained(engine, [(sql, params)])
    assert "ix_stripeline_events_claim" in plan, plan
    assert "TEMP B-TREE" not in plan and "Sort" not in plan, plan


def _updates(engine: Engine, run: Callable[[Any, list[str]], object]) -> list[tuple[str, Any]]:
    """The UPDATEs ``run(conn, ids)`` sends for the 500 first due events (in
    a transaction rolled back), with their values."""
    with connect(engine) as conn:
        ids = [e.id for e in inbox.pick(conn, limit=500, now=inbox.utcnow())]
        with sent(engine, "UPDATE") as ran:
            run(conn, ids)
        conn.rollback()
    assert ran, "nothing was updated"
    return ran


BY_ID: dict[str, Callable[[Any, list[str]], object]] = {
    "lease": lambda c, ids: inbox.lease(
        c,
        inbox.pick(c, limit=500, now=inbox.utcnow()),  # the same rows: ours since the first pick
        worker="w",
        lease_seconds=60,
        now=inbox.utcnow(),
    ),
    "finish_picked": lambda c, ids: inbox.finish_picked(c, ids, now=inbox.utcnow()),
    "finish_many": lambda c, ids: inbox.finish_many(c, ids, worker="w", now=inbox.utcnow()),
    "renew": lambda c, ids: inbox.renew(c, ids, worker="w", lease_seconds=60),
    "release": lambda c, ids: inbox.release(c, ids, worker="w", now=inbox.utcnow()),
}


@pytest.mark.parametrize("statistics", ["none", "stale"])
@pytest.mark.parametrize("statement", sorted(BY_ID))
def test_events_addressed_by_id_are_found_by_id_whatever_the_statistics_say(
    engine: Engine, statement: str, statistics: str
) -> None:
    """The statements that update a batch of events by id (lease, finish,
    renew, release) guard on the status, and their guard must not lead an
    index on it: when the statistics said few events were due (a new inbox
    nobody analysed; a backlog that came after the last ANALYZE), SQLite
    planned them through the (status, received_at, id) index and PostgreSQL
    through that one or the claim index (every due event, and every entry a
    finished event leaves in it until VACUUM), filtered by id, for each
    batch: draining a backlog cost per batch what the whole backlog does (the
    processing bench's finish on PostgreSQL: 74 µs per event, 37 by primary
    key)."""
    sqlite = engine.dialect.name == "sqlite"
    if statistics == "stale":
        # Statistics of a settled inbox, then a backlog of 21,000 due events.
        _fill(engine, settled=30000, analyze=True)
        with connect(engine) as conn:
            conn.execute(
                update(inbox.events)
                .where(inbox.events.c.status == "processed")
                .where(inbox.events.c.created > 10000)
                .values(status="pending", next_attempt_at=inbox.events.c.received_at)
            )
    else:
        _fill(engine, settled=0, analyze=False)
    for plan in explained(engine, _updates(engine, BY_ID[statement])):
        assert "ix_stripeline_events_claim" not in plan, plan
        assert "status_received" not in plan, plan
        if sqlite:
            assert "USING INDEX sqlite_autoindex_stripeline_events_1 (id=?)" in plan, plan
        elif statistics == "stale":
            assert "Index Scan on pk_stripeline_events" in plan, plan
        # PostgreSQL with no statistics at all (a table autovacuum has not
        # analysed yet) may scan the table's pages: it takes it for small.
