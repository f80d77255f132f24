"""A deadlock the worker cannot prevent (handlers writing the application's
own rows in opposite orders) still reruns its group: the handlers that ran
in the rolled-back group run again, and their ``once()`` keys went with the
rollback. That rerun is counted, never silent: an attempt logged with the
outcome ``deadlock``, ``event.attempt`` one more on the next run, and a
warning (PostgreSQL)."""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import timedelta

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, func, select, text
from structlog.testing import capture_logs

from stripeline import inbox
from stripeline.app import ReceivedEvent, Stripeline
from stripeline.db.engine import connect, make_engine
from stripeline.settings import Settings
from stripeline.worker import Worker
from tests.factories import SECRET, event, store_events

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(180)]

KEYS = 8


@pytest.fixture
def pg(postgres_url: str) -> Iterator[tuple[str, Engine]]:
    engine = make_engine(postgres_url)
    with connect(engine) as conn:
        conn.execute(text("CREATE TABLE app_rows (k INTEGER PRIMARY KEY, n INTEGER NOT NULL)"))
        conn.execute(
            text("INSERT INTO app_rows SELECT k, 0 FROM generate_series(0, :n) AS k"),
            {"n": KEYS - 1},
        )
    yield postgres_url, engine
    engine.dispose()


def test_a_deadlock_rerun_of_handlers_is_counted_as_an_attempt(pg: tuple[str, Engine]) -> None:
    url, engine = pg
    app = Stripeline(Settings(stripe_webhook_secret=SecretStr(SECRET), database_url=url))
    seen: defaultdict[str, list[int]] = defaultdict(list)
    effects: Counter[str] = Counter()
    lock = threading.Lock()

    @app.on("customer.updated")
    def bump(event: ReceivedEvent) -> None:
        with lock:
            seen[event.id].append(event.attempt)
        if event.once(f"effect:{event.id}"):
            with lock:
                effects[event.id] += 1
        # The application's own rows, in the order of the events: two
        # workers holding some and wanting the other's deadlock.
        event.connection.execute(
            text("UPDATE app_rows SET n = n + 1 WHERE k = :k"), {"k": event.object["k"]}
        )
        time.sleep(0.01)

    now = inbox.utcnow()
    sets = [
        [
            event(
                "customer.updated",
                id=f"evt_{second}_{position:03d}",
                # Objects of their own: the mirror does not serialise them.
                obj={"id": f"cus_{second}_{k:03d}", "object": "customer", "k": k},
                created=1_800_000_000 + second * 1000 + position,
            )
            for position, k in enumerate(order)
        ]
        for second, order in enumerate((range(KEYS), range(KEYS - 1, -1, -1)))
    ]
    ids = [str(body["id"]) for bodies in sets for body in bodies]
    with connect(engine) as conn:  # both sets in one transaction
        for second, bodies in enumerate(sets):
            store_events(conn, bodies, at=now + timedelta(milliseconds=second))
    workers = [
        Worker(app, worker_id=f"w{n}", batch_size=KEYS, max_transaction_seconds=60, listen=False)
        for n in range(2)
    ]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def work(worker: Worker) -> None:
        try:
            barrier.wait()
            worker.drain(timeout=120)
        except BaseException as exc:
            errors.append(exc)

    try:
        with capture_logs() as logs:
            threads = [threading.Thread(target=work, args=(w,)) for w in workers]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(150)
            # A handler waiting on a lock for a second released the rest of
            # its batch: whoever was done by then has stopped draining.
            Worker(app, worker_id="w2", listen=False).drain(timeout=60)
    finally:
        app.dispose()
    assert not errors, errors
    attempts = inbox.attempts
    with connect(engine, readonly=True) as conn:
        rows = conn.execute(
            select(attempts.c.event_id, attempts.c.number, attempts.c.outcome).order_by(
                attempts.c.event_id, attempts.c.number
            )
        ).all()
        counted = dict(conn.execute(select(inbox.events.c.id, inbox.events.c.attempts)).all())
        assert inbox.queue_depth(conn)["processed"] == len(ids)
        assert conn.execute(
            select(func.sum(text("n"))).select_from(text("app_rows"))
        ).scalar_one() == len(ids)
    deadlocked = [row for row in rows if row.outcome == "deadlock"]
    assert deadlocked, "the crossing handlers did not deadlock: the test proves nothing"
    reruns = [e for e in logs if e.get("event") == "handlers_rerun_after_deadlock"]
    assert reruns and all(e["log_level"] == "warning" for e in reruns)
    for event_id in ids:
        runs = len(seen[event_id])
        # Every run of the handlers is an attempt: numbered 1, 2, … as the
        # handler saw them, the rolled-back ones logged as deadlocks.
        assert seen[event_id] == list(range(1, runs + 1))
        mine = [(row.number, row.outcome) for row in rows if row.event_id == event_id]
        assert mine == [*((n, "deadlock") for n in range(1, runs)), (runs, "processed")]
        assert counted[event_id] == runs
        # The outside effect ran once per run at most, and each extra one
        # is one of those counted attempts.
        assert 1 <= effects[event_id] <= runs
