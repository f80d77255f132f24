"""Workers writing the same objects in opposite orders do not deadlock each
other's events into failures (PostgreSQL).

Every multi-row write of the mirror and the inbox takes its row locks in one
global order, and events processed one by one (each in its own SAVEPOINT, in
opposite orders) take their objects' advisory locks without ever waiting out
of order (``Worker._process_group``): every event is processed exactly once,
on its first attempt, and no error is logged. Across tables, and against the
ingest writer: ``test_faults_deadlock_crossing.py``; a deadlock the worker
cannot prevent: ``test_faults_deadlock_rerun.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, func, select
from structlog.testing import capture_logs

from stripeline import inbox
from stripeline.app import ReceivedEvent, Stripeline
from stripeline.db.engine import connect, make_engine
from stripeline.db.models import OnceKey
from stripeline.mirror.tables import table_for
from stripeline.settings import Settings
from stripeline.worker import Worker
from tests.factories import SECRET, event, store_events

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

WORKERS = 3


@pytest.fixture
def pg(postgres_url: str) -> Iterator[tuple[str, Engine]]:
    engine = make_engine(postgres_url)
    yield postgres_url, engine
    engine.dispose()


def store_crossing(engine: Engine, round_: int, objects: int, kind: str) -> None:
    """Two sets of events on the same objects: the first writes them in one
    order, the second (claimed next, by another worker) in the opposite one."""
    now = inbox.utcnow()
    base = 1_800_000_000 + round_ * 10 * objects
    sets = [
        [
            event(
                kind,
                id=f"evt_r{round_}_{second}_{i:05d}",
                obj={"id": f"cus_r{round_}_{i:05d}", "object": "customer", "n": second},
                created=base + second * objects * 2 + position,
            )
            for position, i in enumerate(order)
        ]
        for second, order in enumerate((range(objects), range(objects - 1, -1, -1)))
    ]
    with connect(engine) as conn:  # both sets in one transaction
        for second, bodies in enumerate(sets):
            store_events(conn, bodies, at=now + timedelta(milliseconds=second))


def drain_together(app: Stripeline, batch: int) -> None:
    workers = [
        Worker(
            app,
            worker_id=f"w{k}",
            batch_size=batch,
            max_transaction_seconds=60,
            listen=False,
        )
        for k in range(WORKERS)
    ]
    barrier = threading.Barrier(WORKERS)
    errors: list[BaseException] = []

    def work(worker: Worker) -> None:
        try:
            barrier.wait()
            worker.drain(timeout=60)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert not errors, errors


def assert_exactly_once(
    engine: Engine, total: int, logs: Sequence[Mapping[str, Any]], *, handled: bool
) -> None:
    events = inbox.events
    attempts = inbox.attempts
    with connect(engine, readonly=True) as conn:
        assert inbox.queue_depth(conn)["processed"] == total
        assert conn.execute(select(func.max(events.c.attempts))).scalar_one() == 1
        outcomes = {
            outcome: count
            for outcome, count in conn.execute(
                select(attempts.c.outcome, func.count()).group_by(attempts.c.outcome)
            )
        }
        # Events with handlers log each attempt; a first attempt applied in
        # bulk (no handler) is on the event row only.
        assert outcomes == ({"processed": total} if handled else {})
        processed_at = select(func.count()).where(events.c.processed_at.is_not(None))
        assert conn.execute(processed_at).scalar_one() == total
        customers = table_for("customer").table
        # Each object ends in the newer set's state.
        held = conn.execute(select(customers.c.data)).scalars().all()
        assert held and all(data["n"] == 1 for data in held)
    failures = [
        entry
        for entry in logs
        if entry.get("log_level") in ("warning", "error")
        or "deadlock" in str(entry.get("error", "")).lower()
    ]
    assert failures == []
    # Not even a deadlock retried: none happens.
    assert [e for e in logs if e.get("event") == "deadlock_retried"] == []


@pytest.mark.parametrize(
    ("kind", "rounds", "objects"),
    [
        # No handler: each worker applies its batch with one multi-row upsert.
        ("customer.created", 6, 300),
        # A handler: events one by one, each in its own SAVEPOINT.
        ("customer.updated", 2, 25),
    ],
)
def test_crossing_workers_process_every_event_once(
    pg: tuple[str, Engine], kind: str, rounds: int, objects: int
) -> None:
    url, engine = pg
    app = Stripeline(Settings(stripe_webhook_secret=SecretStr(SECRET), database_url=url))
    ran: dict[str, int] = {}
    lock = threading.Lock()

    @app.on("customer.updated")
    def count(event: ReceivedEvent) -> None:
        with lock:
            ran[event.id] = ran.get(event.id, 0) + 1
        assert event.once(f"seen:{event.id}")

    try:
        with capture_logs() as logs:
            for round_ in range(rounds):
                store_crossing(engine, round_, objects, kind)
                drain_together(app, batch=objects)
    finally:
        app.dispose()
    total = rounds * objects * 2
    assert_exactly_once(engine, total, logs, handled=kind == "customer.updated")
    if kind == "customer.updated":
        with connect(engine, readonly=True) as conn:
            keys = conn.execute(select(func.count()).select_from(OnceKey)).scalar_one()
        assert keys == total and set(ran) == {
            f"evt_r{r}_{s}_{i:05d}" for r in range(rounds) for s in (0, 1) for i in range(objects)
        }
