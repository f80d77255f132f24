"""A worker whose database connection is cut mid-transaction waits the
outage out and goes on: the event it held is processed on a later attempt.

Found by the outage proof suite: PostgreSQL stopped under load raised, in the
worker, a SQLAlchemy error that is not a driver error (the transaction's
connection already invalidated), and the worker thread died. Here the
connection of the worker's own transaction is terminated by the server
(``pg_terminate_backend``) while a handler runs.
"""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import text
from structlog.testing import capture_logs

from stripeline.app import ReceivedEvent, Stripeline
from stripeline.db.engine import connect, make_engine
from stripeline.settings import Settings
from stripeline.worker import Worker
from tests.factories import SECRET
from tests.test_faults_hang import statuses, store

pytestmark = pytest.mark.postgres


def test_a_worker_survives_its_connection_killed_mid_transaction(postgres_url: str) -> None:
    settings = Settings(
        stripe_webhook_secret=SECRET,  # type: ignore[arg-type]  # pydantic validates it
        database_url=postgres_url,
        retry_schedule=(1,),
        # The claim is committed: the event is taken again once its lease ends.
        lease_seconds=3,
        handler_timeout=2.5,
    )
    app = Stripeline(settings, engine=make_engine(postgres_url))
    running = threading.Event()
    go_on = threading.Event()
    backends: list[int] = []

    @app.on("customer.updated")
    def handle(event: ReceivedEvent) -> None:
        if event.attempt == 1:
            backends.append(
                int(event.connection.execute(text("SELECT pg_backend_pid()")).scalar_one())
            )
            running.set()
            go_on.wait(2)
        event.once(f"done:{event.id}")

    (event_id,) = store(app.engine, 1)
    worker = Worker(app, listen=False)
    thread = threading.Thread(target=worker.run, daemon=True)
    try:
        with capture_logs() as logs:
            thread.start()
            assert running.wait(10), "the handler did not start"
            with connect(app.engine) as conn:
                conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backends[0]})
            go_on.set()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and statuses(app.engine)[event_id][0] != "processed":
                worker.wake()
                time.sleep(0.2)
            assert thread.is_alive(), "the worker thread died"
        status, attempts, _ = statuses(app.engine)[event_id]
        assert status == "processed" and attempts >= 2
        assert any(line.get("action") == "worker_database_error" for line in logs)
    finally:
        go_on.set()
        worker.stop()
        thread.join(10)
        app.dispose()
