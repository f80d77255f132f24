"""Durability under failure: killed workers, many workers, a database that goes away."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from starlette.testclient import TestClient

from stripeline import inbox
from stripeline.app import Stripeline
from stripeline.db.engine import connect, make_engine, normalize_url
from stripeline.db.models import Event
from stripeline.settings import Settings
from stripeline.web import create_app
from tests.apps.effects import effects, metadata
from tests.factories import SECRET, encode, event, other_backends, signed, store_events
from tests.tcp_proxy import TCPProxy

ROOT = Path(__file__).resolve().parent.parent


def fill(url: str, count: int) -> list[str]:
    engine = make_engine(url)
    metadata.create_all(engine)
    ids: list[str] = []
    now = inbox.utcnow()
    for start in range(0, count, 1000):
        bodies = [
            event(obj={"id": f"cus_{i:06d}", "object": "customer"})
            for i in range(start, min(count, start + 1000))
        ]
        store_events(engine, bodies, at=now)
        ids += [body["id"] for body in bodies]
    engine.dispose()
    return ids


def spawn_worker(url: str, **env: str) -> subprocess.Popen[bytes]:
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "STRIPELINE_"))},
        "STRIPELINE_DATABASE_URL": url,
        "STRIPELINE_LOG_LEVEL": "warning",
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "stripeline", "worker", "--app", "tests.apps.effects:app"],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def counts(url: str) -> dict[str, Any]:
    engine = make_engine(url)
    try:
        with connect(engine, readonly=True) as conn:
            depth = inbox.queue_depth(conn)
            rows = conn.execute(select(func.count()).select_from(effects)).scalar_one()
            distinct = conn.execute(select(func.count(effects.c.event_id.distinct()))).scalar_one()
            pids = conn.execute(select(func.count(effects.c.pid.distinct()))).scalar_one()
        return {"depth": depth, "effects": rows, "distinct": distinct, "pids": pids}
    finally:
        engine.dispose()


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_worker_killed_mid_batch_loses_nothing(database_url: str) -> None:
    ids = fill(database_url, 300)
    worker = spawn_worker(
        database_url,
        TEST_HANDLER_DELAY="0.005",
        STRIPELINE_LEASE_SECONDS="2",
        STRIPELINE_WORKER_BATCH_SIZE="100",
    )
    try:
        wait_for(lambda: counts(database_url)["depth"]["processed"] >= 20, 30, "some progress")
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        assert worker.stderr is not None
        worker.stderr.close()
    before = counts(database_url)
    assert before["depth"]["processed"] < len(ids), "the kill came too late to test anything"
    assert before["depth"]["processing"] > 0, "no batch was in flight"
    # Effects are exactly those of processed events: the killed batch rolled back.
    assert before["effects"] == before["depth"]["processed"]
    survivor = spawn_worker(database_url, STRIPELINE_LEASE_SECONDS="2")
    try:
        wait_for(
            lambda: counts(database_url)["depth"]["processed"] == len(ids), 60, "all processed"
        )
    finally:
        survivor.send_signal(signal.SIGTERM)
        assert survivor.wait(15) == 0
        assert survivor.stderr is not None
        survivor.stderr.close()
    after = counts(database_url)
    assert after["effects"] == after["distinct"] == len(ids)


@pytest.mark.flaky(reruns=2)  # times whole processes: a shared machine can starve one run
@pytest.mark.slow
@pytest.mark.postgres
def test_four_workers_drain_20000_events_exactly_once(postgres_url: str) -> None:
    total = 20_000
    fill(postgres_url, total)
    workers = [spawn_worker(postgres_url, STRIPELINE_WORKER_BATCH_SIZE="200") for _ in range(4)]
    try:
        wait_for(
            lambda: counts(postgres_url)["depth"]["processed"] == total, 240, "20,000 processed"
        )
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        codes = [w.wait(30) for w in workers]
        for w in workers:
            assert w.stderr is not None
            w.stderr.close()
    assert codes == [0, 0, 0, 0]
    result = counts(postgres_url)
    assert result["effects"] == result["distinct"] == total
    assert result["pids"] >= 2, "the work was not shared"


@pytest.fixture
def proxied_postgres(postgres_url: str) -> Iterator[tuple[str, TCPProxy]]:
    url = make_url(normalize_url(postgres_url))
    proxy = TCPProxy((url.host or "127.0.0.1", url.port or 5432)).start()
    yield url.set(port=proxy.port).render_as_string(hide_password=False), proxy
    proxy.cut()


def _post(client: TestClient) -> int:
    payload = encode(event())
    return client.post("/webhooks/stripe", content=payload, headers=signed(payload)).status_code


@pytest.mark.postgres
def test_postgres_going_away_gives_503_then_recovers(
    proxied_postgres: tuple[str, TCPProxy],
) -> None:
    url, proxy = proxied_postgres
    app = Stripeline(Settings(stripe_webhook_secret=SECRET, database_url=url))  # type: ignore[arg-type]  # pydantic validates it
    with TestClient(create_app(app)) as client:
        assert _post(client) == 200
        proxy.cut()
        assert _post(client) == 503
        assert client.get("/readyz").status_code == 503
        assert client.get("/healthz").status_code == 200
        proxy.start()
        assert _post(client) == 200
        assert client.get("/readyz").status_code == 200
    with connect(app.engine, readonly=True) as conn:
        assert conn.execute(select(func.count()).select_from(Event)).scalar_one() == 2
    app.dispose()


def test_sqlite_locked_gives_503_then_recovers(sqlite_url: str) -> None:
    app = Stripeline(
        Settings(stripe_webhook_secret=SECRET, database_url=sqlite_url),  # type: ignore[arg-type]  # pydantic validates it
        engine=make_engine(sqlite_url, sqlite_busy_timeout_ms=200),
    )
    path = make_url(sqlite_url).database
    assert path
    with TestClient(create_app(app)) as client:
        assert _post(client) == 200
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            assert _post(client) == 503
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert _post(client) == 200
    with connect(app.engine, readonly=True) as conn:
        assert conn.execute(select(func.count()).select_from(Event)).scalar_one() == 2
    app.dispose()


@pytest.mark.postgres
def test_a_worker_elsewhere_is_woken_by_notify(postgres_url: str) -> None:
    """A separate worker that polls only every 30 s processes a burst at once:
    the web app's NOTIFYs (throttled, the last one owed and sent when idle)
    wake it through LISTEN."""
    import threading

    from stripeline.worker import Worker

    web = Stripeline(Settings(stripe_webhook_secret=SECRET, database_url=postgres_url))  # type: ignore[arg-type]  # pydantic validates it
    worker_app = Stripeline(Settings(stripe_webhook_secret=SECRET, database_url=postgres_url))  # type: ignore[arg-type]  # pydantic validates it
    seen: list[str] = []
    worker_app.on("*")(lambda e: seen.append(e.id))
    worker = Worker(worker_app, poll_seconds=30)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        time.sleep(0.5)  # LISTEN is in place
        with TestClient(create_app(web)) as client:
            for burst in range(1, 4):  # three bursts, each after an idle moment
                for _ in range(10):
                    assert _post(client) == 200
                wait_for(lambda n=burst: len(seen) == 10 * n, 5, f"burst {burst} processed")
                time.sleep(0.2)
    finally:
        worker.stop()
        thread.join(10)
        web.dispose()
        worker_app.dispose()


@pytest.mark.postgres
def test_a_stopped_worker_leaves_no_listen_connection_behind(postgres_url: str) -> None:
    """``run`` returns once its LISTEN thread has ended: no thread left, and
    no connection to the database (the pooled ones disposed with the app)."""
    import threading

    from stripeline.worker import Worker

    app = Stripeline(Settings(stripe_webhook_secret=SECRET, database_url=postgres_url))  # type: ignore[arg-type]  # pydantic validates it
    worker = Worker(app, poll_seconds=30)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_for(
            lambda: any(t.name == "stripeline-listen" for t in threading.enumerate()),
            5,
            "LISTEN thread started",
        )
        time.sleep(0.3)  # connected and listening
    finally:
        worker.stop()
        thread.join(10)
        app.dispose()
    assert not thread.is_alive()
    assert [t for t in threading.enumerate() if t.name == "stripeline-listen"] == []
    assert other_backends(postgres_url, within=0.0) == 0


@pytest.mark.postgres
def test_a_mirror_read_survives_a_restart_inside_the_ping_window(
    proxied_postgres: tuple[str, TCPProxy], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pooled connections used recently are not pinged: a read on one that
    died is repeated once on a new connection."""
    from stripeline.db import engine as db_engine
    from stripeline.mirror import Mirror

    # However long cutting the proxy takes, the connection counts as recent.
    monkeypatch.setattr(db_engine, "PING_AFTER_IDLE_SECONDS", 3600.0)

    url, proxy = proxied_postgres
    engine = make_engine(url)
    mirror = Mirror(engine)
    try:
        assert mirror.customer("cus_nobody") is None  # a pooled connection now exists
        proxy.cut()
        proxy.start()
        assert mirror.customer("cus_nobody") is None  # no ping: one retry
        assert mirror.subscriptions("cus_nobody") == []
    finally:
        engine.dispose()
