"""A batch no handler wants is applied without a lease.

The worker picks such a batch, applies it to the mirror and marks it
processed in one transaction: each event's row goes from ``pending`` to
``processed`` in one write, never ``processing``. A batch with handlers is
still leased first. The transaction that picked the events holds them: a
worker killed inside it leaves every event due, none applied; two workers
never apply the same event.

The status writes are recorded by a trigger the test puts on the inbox.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, text

from stripeline import inbox
from stripeline.app import ReceivedEvent, Stripeline
from stripeline.db.engine import connect, make_engine
from stripeline.mirror._store import get_object
from stripeline.settings import Settings
from stripeline.worker import Worker
from tests.factories import SECRET, event, store_events

SQLITE_TRANSITIONS = [
    "CREATE TABLE transitions (n INTEGER PRIMARY KEY AUTOINCREMENT,"
    " event_id TEXT, old TEXT, new TEXT)",
    """CREATE TRIGGER status_written AFTER UPDATE OF status ON stripeline_events
       BEGIN INSERT INTO transitions (event_id, old, new)
             VALUES (NEW.id, OLD.status, NEW.status); END""",
]
POSTGRES_TRANSITIONS = [
    "CREATE TABLE transitions (n SERIAL PRIMARY KEY, event_id TEXT, old TEXT, new TEXT)",
    """CREATE FUNCTION status_written() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         INSERT INTO transitions (event_id, old, new) VALUES (NEW.id, OLD.status, NEW.status);
         RETURN NULL;
       END $$""",
    """CREATE TRIGGER status_written AFTER UPDATE OF status ON stripeline_events
       FOR EACH ROW EXECUTE FUNCTION status_written()""",
]


SQLITE_POISON = """CREATE TRIGGER poison BEFORE INSERT ON stripeline_customers
   WHEN NEW.id = 'cus_00003' BEGIN SELECT RAISE(ABORT, 'poison'); END"""
POSTGRES_POISON = [
    """CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF NEW.id = 'cus_00003' THEN RAISE EXCEPTION 'poison'; END IF;
         RETURN NEW;
       END $$""",
    """CREATE TRIGGER poison BEFORE INSERT ON stripeline_customers
       FOR EACH ROW EXECUTE FUNCTION poison()""",
]


def make_app(url: str) -> Stripeline:
    return Stripeline(
        Settings(
            stripe_webhook_secret=SECRET,  # type: ignore[arg-type]  # pydantic validates it
            database_url=url,
            max_attempts=3,
            retry_schedule=(0,),
        ),
        engine=make_engine(url),
    )


@pytest.fixture
def app(database_url: str) -> Iterator[Stripeline]:
    application = make_app(database_url)
    with connect(application.engine) as conn:
        sqlite = conn.dialect.name == "sqlite"
        for statement in SQLITE_TRANSITIONS if sqlite else POSTGRES_TRANSITIONS:
            conn.execute(text(statement))
    yield application
    application.dispose()


def put(engine: Engine, count: int, *, prefix: str = "cus", kind: str = "customer") -> list[str]:
    """``count`` events, each about an object of its own."""
    bodies = [
        event(f"{kind}.updated", obj={"id": f"{prefix}_{i:05d}", "object": kind}, created=1000)
        for i in range(count)
    ]
    store_events(engine, bodies, at=inbox.utcnow())
    return [str(body["id"]) for body in bodies]


def transitions(engine: Engine) -> dict[str, list[tuple[str, str]]]:
    found: dict[str, list[tuple[str, str]]] = {}
    with connect(engine, readonly=True) as conn:
        for event_id, old, new in conn.execute(
            text("SELECT event_id, old, new FROM transitions ORDER BY n")
        ):
            found.setdefault(event_id, []).append((old, new))
    return found


def rows(engine: Engine) -> dict[str, Any]:
    events = inbox.events
    with connect(engine, readonly=True) as conn:
        return {
            row.id: row
            for row in conn.execute(
                events.select().with_only_columns(
                    events.c.id, events.c.status, events.c.attempts, events.c.lease_owner
                )
            )
        }


def test_a_batch_no_handler_wants_is_written_once_per_event(app: Stripeline) -> None:
    ids = put(app.engine, 40)
    assert Worker(app, listen=False).drain(timeout=30) == 40
    assert transitions(app.engine) == {i: [("pending", "processed")] for i in ids}
    assert {(r.status, r.attempts, r.lease_owner) for r in rows(app.engine).values()} == {
        ("processed", 1, None)
    }
    with connect(app.engine, readonly=True) as conn:
        for i in range(40):
            assert get_object(conn, f"cus_{i:05d}") is not None
        # A first attempt that succeeds writes no attempt row.
        assert conn.execute(text("SELECT count(*) FROM stripeline_attempts")).scalar_one() == 0


def test_a_batch_with_handlers_is_still_leased_first(app: Stripeline) -> None:
    handled: list[str] = []

    @app.on("invoice.updated")
    def on_invoice(event: ReceivedEvent) -> None:
        handled.append(event.id)

    plain = put(app.engine, 5)
    with_handler = put(app.engine, 2, prefix="in", kind="invoice")
    assert Worker(app, listen=False).drain(timeout=30) == 7
    assert sorted(handled) == sorted(with_handler)
    found = transitions(app.engine)
    # One batch: it holds an event a handler wants, so every event is leased.
    for event_id in plain + with_handler:
        assert found[event_id] == [("pending", "processing"), ("processing", "processed")]
    assert {r.status for r in rows(app.engine).values()} == {"processed"}


def test_a_poison_event_in_a_picked_batch_fails_alone(app: Stripeline) -> None:
    """The bulk run fails: its events are leased in the same transaction and
    processed one by one; the bad one is marked failed, the others processed."""
    ids = put(app.engine, 6)
    bad = ids[3]
    # The mirror refuses the bad event's object (cus_00003): its upsert fails.
    with connect(app.engine) as conn:
        if conn.dialect.name == "sqlite":
            conn.execute(text(SQLITE_POISON))
        else:
            for statement in POSTGRES_POISON:
                conn.execute(text(statement))
    worker = Worker(app, listen=False)
    assert worker.run_once() == 6
    found = rows(app.engine)
    assert found[bad].status == "failed" and found[bad].attempts == 1
    assert all(found[i].status == "processed" and found[i].attempts == 1 for i in ids if i != bad)
    with connect(app.engine, readonly=True) as conn:
        assert get_object(conn, "cus_00002") is not None
        assert get_object(conn, "cus_00003") is None
    worker.drain(timeout=30)  # due again at once (retry_schedule 0): dead at the third
    found = rows(app.engine)
    assert found[bad].status == "dead" and found[bad].attempts == 3
    assert transitions(app.engine)[bad][0] == ("pending", "processing")


def _kill_mid_transaction(url: str, ready: Any) -> None:  # pragma: no cover - child process
    app = make_app(url)
    ready.set()
    Worker(app, listen=False).run_once()


@pytest.mark.postgres
def test_a_worker_killed_mid_batch_leaves_every_event_due(postgres_url: str) -> None:
    """PostgreSQL: the worker's transaction waits on a mirror row another
    session holds; the worker is killed there. Nothing of the batch was
    written: every event is pending and due now (no lease to wait out), the
    mirror holds none of them, and a worker then applies each once."""
    app = make_app(postgres_url)
    try:
        ids = put(app.engine, 30)
        blocker = app.engine.connect()
        blocker.begin()
        # The row of the batch's object cus_00010, inserted and not committed:
        # the worker's upsert of it waits for this transaction.
        blocker.execute(
            text(
                "INSERT INTO stripeline_customers (account, id, livemode, data, marker,"
                " marker_rank, event_id, deleted, updated_at)"
                " VALUES ('', 'cus_00010', false, '{}', 1, 0, 'evt_x', false, now())"
            )
        )
        context = multiprocessing.get_context("spawn")
        ready = context.Event()
        child = context.Process(target=_kill_mid_transaction, args=(postgres_url, ready))
        child.start()
        try:
            assert ready.wait(60)
            deadline = time.monotonic() + 60
            with connect(app.engine, readonly=True) as conn:
                while time.monotonic() < deadline:
                    waiting = conn.execute(
                        text(
                            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                            " AND datname = current_database()"
                        )
                    ).scalar_one()
                    if waiting:
                        break
                    time.sleep(0.05)
                assert waiting, "the worker never reached the held row"
            os.kill(child.pid or 0, signal.SIGKILL)
            child.join(30)
        finally:
            if child.is_alive():  # pragma: no cover
                child.kill()
            blocker.rollback()
            blocker.close()
        # The killed worker's session ends once the lock is free (its client is gone).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with connect(app.engine, readonly=True) as conn:
                others = conn.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND pid <> pg_backend_pid() AND state <> 'idle'"
                    )
                ).scalar_one()
            if not others:
                break
            time.sleep(0.05)
        found = rows(app.engine)
        assert {(r.status, r.attempts, r.lease_owner) for r in found.values()} == {
            ("pending", 0, None)
        }
        with connect(app.engine, readonly=True) as conn:
            due = inbox.next_due(conn)
            assert due is not None and due <= inbox.utcnow()
            assert get_object(conn, "cus_00000") is None
            assert get_object(conn, "cus_00010") is None
        assert Worker(app, listen=False).drain(timeout=30) == len(ids)
        assert {(r.status, r.attempts) for r in rows(app.engine).values()} == {("processed", 1)}
    finally:
        app.dispose()


@pytest.mark.postgres
def test_two_workers_never_apply_the_same_event(postgres_url: str) -> None:
    """PostgreSQL: two workers drain one inbox at once, in small batches about
    shared objects; each event is applied by one of them, once."""
    app = make_app(postgres_url)
    try:
        with connect(app.engine) as conn:
            for statement in POSTGRES_TRANSITIONS:
                conn.execute(text(statement))
        bodies = [
            event(
                "customer.updated",
                obj={"id": f"cus_{n % 37:03d}", "object": "customer", "n": n},
                created=1000 + n,
            )
            for n in range(400)
        ]
        store_events(app.engine, bodies, at=inbox.utcnow())
        workers = [Worker(app, listen=False, batch_size=25) for _ in range(2)]
        done = [0, 0]
        errors: list[BaseException] = []

        def drain(k: int) -> None:
            try:
                done[k] = workers[k].drain(timeout=60)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=drain, args=(k,)) for k in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
        assert not errors
        assert sum(done) == 400 and all(done)
        found = transitions(app.engine)
        assert len(found) == 400
        # Each event marked processed once, by one worker: picked and
        # processed at once, or leased first (its objects were locked by the
        # other worker's transaction) and processed then.
        assert all(
            writes
            in (
                [("pending", "processed")],
                [("pending", "processing"), ("processing", "processed")],
            )
            for writes in found.values()
        )
        assert sum(writes == [("pending", "processed")] for writes in found.values()) >= 200
        assert {(r.status, r.attempts) for r in rows(app.engine).values()} == {("processed", 1)}
        with connect(app.engine, readonly=True) as conn:
            for k in range(37):
                obj = get_object(conn, f"cus_{k:03d}")
                assert obj is not None
                # The newest event about each object won, whoever applied it.
                assert obj["n"] == max(n for n in range(400) if n % 37 == k)
    finally:
        app.dispose()
