"""A database that stops taking writes.

When the transaction of a processed batch cannot commit (a full disk), the
handlers that ran are counted attempts all the same: the dead-letter limit
holds and ``once()``-guarded effects are not repeated without bound. And
``/readyz`` answers 503 while the database refuses writes.

The failing commit is the database's own doing: a trigger created by the test
on the attempt log refuses the batch's writes (SQLite) or its commit (a
deferred constraint trigger, PostgreSQL) while a switch is on, as a full disk
does; the claim and everything else are left alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from starlette.testclient import TestClient

from stripeline import inbox
from stripeline.app import ReceivedEvent, Stripeline
from stripeline.db.engine import connect, make_engine, normalize_url
from stripeline.settings import Settings
from stripeline.web import create_app
from stripeline.worker import Worker
from tests.factories import SECRET, event, store_events

MAX_ATTEMPTS = 3
EVENTS = 5

SQLITE_FAULT = [
    "CREATE TABLE fault (broken INTEGER NOT NULL)",
    "INSERT INTO fault VALUES (1)",
    """CREATE TRIGGER disk_full BEFORE INSERT ON stripeline_attempts
       WHEN (SELECT broken FROM fault) = 1
       BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END""",
]
POSTGRES_FAULT = [
    "CREATE TABLE fault (broken BOOLEAN NOT NULL)",
    "INSERT INTO fault VALUES (true)",
    """CREATE FUNCTION disk_full() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF (SELECT broken FROM fault) THEN
           RAISE EXCEPTION 'could not extend file: No space left on device'
             USING ERRCODE = '53100';
         END IF;
         RETURN NULL;
       END $$""",
    """CREATE CONSTRAINT TRIGGER disk_full AFTER INSERT ON stripeline_attempts
       DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION disk_full()""",
]


def store(engine: Engine, count: int) -> list[str]:
    bodies = [
        event("customer.updated", obj={"id": f"cus_{i:04d}", "object": "customer"})
        for i in range(count)
    ]
    store_events(engine, bodies, at=inbox.utcnow())
    return [str(body["id"]) for body in bodies]


@pytest.fixture
def faulty(database_url: str) -> Iterator[tuple[str, Engine]]:
    engine = make_engine(database_url)
    with connect(engine) as conn:
        for statement in SQLITE_FAULT if engine.dialect.name == "sqlite" else POSTGRES_FAULT:
            conn.execute(text(statement))
    yield database_url, engine
    engine.dispose()


def test_a_batch_that_cannot_commit_counts_its_attempts(faulty: tuple[str, Engine]) -> None:
    url, engine = faulty
    ids = store(engine, EVENTS)
    app = Stripeline(
        Settings(
            stripe_webhook_secret=SecretStr(SECRET),
            database_url=url,
            max_attempts=MAX_ATTEMPTS,
            retry_schedule=(0,),
        )
    )
    runs: dict[str, int] = {}
    sent: dict[str, int] = {}

    @app.on("customer.updated")
    def email(event: ReceivedEvent) -> None:
        runs[event.id] = runs.get(event.id, 0) + 1
        if event.once(f"email:{event.id}"):
            sent[event.id] = sent.get(event.id, 0) + 1

    worker = Worker(app, listen=False, max_transaction_seconds=60)
    failed_commits = 0
    try:
        for _ in range(6 * MAX_ATTEMPTS):  # what `run()` does, without its backoff
            try:
                worker.run_once()
            except DBAPIError:
                failed_commits += 1
    finally:
        worker.close()
    assert failed_commits >= 1
    # Each handler ran once per counted attempt, never more.
    assert runs == dict.fromkeys(ids, MAX_ATTEMPTS)
    assert max(sent.values()) <= MAX_ATTEMPTS
    events = inbox.events
    with connect(engine, readonly=True) as conn:
        rows = conn.execute(
            events.select().with_only_columns(
                events.c.id, events.c.status, events.c.attempts, events.c.last_error
            )
        ).all()
    assert {row.status for row in rows} == {"dead"}
    assert {row.attempts for row in rows} == {MAX_ATTEMPTS}
    assert all("could not commit" in row.last_error for row in rows)

    # The disk has room again: an operator's retry processes them.
    with connect(engine) as conn:
        conn.execute(text("UPDATE fault SET broken = :off"), {"off": False})
        assert inbox.retry(conn, dead=True) == EVENTS
    Worker(app, listen=False).drain(timeout=30)
    with connect(engine, readonly=True) as conn:
        assert inbox.queue_depth(conn)["processed"] == EVENTS
    app.dispose()


def _readonly_sqlite(url: str) -> str:
    path = Path(make_url(url).database or "")
    return f"sqlite:///file:{path}?mode=ro&uri=true"


@pytest.fixture
def readonly_url(database_url: str) -> Iterator[str]:
    """The test database, writes refused: opened read-only (SQLite), or with
    ``default_transaction_read_only`` set on it (PostgreSQL)."""
    if database_url.startswith("sqlite"):
        yield _readonly_sqlite(database_url)
        return
    name = make_url(normalize_url(database_url)).database
    engine = make_engine(database_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'))
    yield database_url
    with engine.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{name}" RESET default_transaction_read_only'))
    engine.dispose()


def test_readyz_is_503_while_the_database_refuses_writes(
    database_url: str, readonly_url: str
) -> None:
    writable = Stripeline(
        Settings(stripe_webhook_secret=SecretStr(SECRET), database_url=database_url)
    )
    readonly = Stripeline(
        Settings(stripe_webhook_secret=SecretStr(SECRET), database_url=readonly_url)
    )
    try:
        with TestClient(create_app(readonly)) as client:
            response = client.get("/readyz")
            assert response.status_code == 503, response.json()
            checks = response.json()["checks"]
            assert checks["database"] == "ok" and checks["migrations"] == "ok"
            assert checks["writes"].startswith("refused")
            assert "read" in checks["writes"].lower()
            assert client.get("/healthz").status_code == 200
        if readonly_url != database_url:  # SQLite: the same file, writable
            with TestClient(create_app(writable)) as client:
                assert client.get("/readyz").status_code == 200
    finally:
        readonly.dispose()
        writable.dispose()


#: No handler: also refuse to mark an event processed. SQLite: the batch
#: fails in bulk, then event by event, and its attempt log (written last,
#: outside any SAVEPOINT) is refused. PostgreSQL: at commit (deferred). Either
#: way the transaction that picked the batch and processed it cannot commit.
SQLITE_FINISH_FAULT = [
    """CREATE TRIGGER finish_refused BEFORE UPDATE ON stripeline_events
   WHEN NEW.status = 'processed' AND (SELECT broken FROM fault) = 1
   BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"""
]
POSTGRES_FINISH_FAULT = [
    """CREATE CONSTRAINT TRIGGER finish_refused AFTER UPDATE ON stripeline_events
       DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.status = 'processed')
       EXECUTE FUNCTION disk_full()""",
]


def test_a_batch_processed_without_a_lease_still_counts_its_attempts(
    faulty: tuple[str, Engine],
) -> None:
    """A batch no handler wants is picked and processed in one transaction,
    without a lease: when that cannot commit, the attempts are counted and
    the events marked failed in a transaction of their own, dead at the
    limit."""
    url, engine = faulty
    sqlite = engine.dialect.name == "sqlite"
    with connect(engine) as conn:
        for statement in SQLITE_FINISH_FAULT if sqlite else POSTGRES_FINISH_FAULT:
            conn.execute(text(statement))
    ids = store(engine, EVENTS)
    app = Stripeline(
        Settings(
            stripe_webhook_secret=SecretStr(SECRET),
            database_url=url,
            max_attempts=MAX_ATTEMPTS,
            retry_schedule=(0,),
        )
    )
    worker = Worker(app, listen=False)
    failed_commits = 0
    try:
        for _ in range(2 * MAX_ATTEMPTS):
            try:
                worker.run_once()
            except DBAPIError:
                failed_commits += 1
    finally:
        worker.close()
    assert failed_commits == MAX_ATTEMPTS  # then every event is dead
    events = inbox.events
    with connect(engine, readonly=True) as conn:
        rows = conn.execute(
            events.select().with_only_columns(
                events.c.id, events.c.status, events.c.attempts, events.c.last_error
            )
        ).all()
    assert sorted(row.id for row in rows) == sorted(ids)
    assert {row.status for row in rows} == {"dead"}
    assert {row.attempts for row in rows} == {MAX_ATTEMPTS}
    assert all("could not commit" in row.last_error for row in rows)

    with connect(engine) as conn:
        conn.execute(text("UPDATE fault SET broken = :off"), {"off": False})
        assert inbox.retry(conn, dead=True) == EVENTS
    assert Worker(app, listen=False).drain(timeout=30) == EVENTS
    app.dispose()
