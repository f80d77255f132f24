"""Inbox retention (``stripeline.retention``, ``stripeline events prune``) on
real SQLite and PostgreSQL inboxes filled through the inbox's own functions:
only processed (and ignored) events past the cut go, with their deliveries
and attempts; pending, failed and dead ones stay; under 7 days is refused."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, func, select

from stripeline import inbox, retention
from stripeline.cli import main
from stripeline.db import connect, make_engine, migrate, models
from stripeline.errors import ConfigError, RetentionTooShort
from stripeline.settings import Settings, load_settings
from tests.factories import store_events

ROOT = Path(__file__).resolve().parent.parent
NOW = inbox.utcnow()
OLD = NOW - timedelta(days=30)
RECENT = NOW - timedelta(days=2)


@pytest.fixture
def engine(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    monkeypatch.setenv("STRIPELINE_DATABASE_URL", database_url)
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def store(engine: Engine, event_id: str, received: datetime, *, status: str = "pending") -> None:
    body = {
        "id": event_id,
        "object": "event",
        "type": "customer.updated",
        "created": int(received.timestamp()) - 1,
        "livemode": False,
        "api_version": "2026-10-28.endive",
        "data": {"object": {"id": "cus_" + event_id[-6:], "object": "customer"}},
    }
    store_events(
        engine,
        [json.dumps(body).encode()],
        at=received,
        signed_at=int(received.timestamp()),
        status=status,
    )


def attempt(engine: Engine, event_id: str, when: datetime, outcome: str) -> None:
    with connect(engine) as conn:
        inbox.record_attempt(
            conn,
            [
                {
                    "event_id": event_id,
                    "number": 1,
                    "worker": "w1",
                    "started_at": when,
                    "finished_at": when,
                    "outcome": outcome,
                    "error": None if outcome == "processed" else "ValueError: boom",
                    "traceback": None,
                }
            ],
        )


def process(engine: Engine, event_id: str, when: datetime) -> None:
    with connect(engine) as conn:
        claimed = inbox.claim(conn, worker="w1", limit=1, lease_seconds=60, now=when)
        assert [c.id for c in claimed] == [event_id]
        assert inbox.finish(conn, event_id, worker="w1", now=when)
    attempt(engine, event_id, when, "processed")


def fail(engine: Engine, event_id: str, when: datetime, *, max_attempts: int) -> None:
    with connect(engine) as conn:
        claimed = inbox.claim(conn, worker="w1", limit=1, lease_seconds=60, now=when)
        assert [c.id for c in claimed] == [event_id]
        outcome = inbox.mark_failed(
            conn,
            event_id,
            attempt=1,
            error="ValueError: boom",
            traceback=None,
            max_attempts=max_attempts,
            schedule=(3600 * 24 * 365,),
            now=when,
        )
    attempt(engine, event_id, when, outcome)


def fill(engine: Engine) -> None:
    """Old: processed (delivered twice), ignored, pending, failed, dead; recent: processed."""
    store(engine, "evt_old_processed", OLD)
    store(engine, "evt_old_processed", OLD + timedelta(hours=1))  # Stripe delivered it again
    process(engine, "evt_old_processed", OLD + timedelta(hours=2))
    store(engine, "evt_old_ignored", OLD, status="ignored")
    store(engine, "evt_old_failed", OLD)
    fail(engine, "evt_old_failed", OLD, max_attempts=5)
    store(engine, "evt_old_dead", OLD)
    fail(engine, "evt_old_dead", OLD, max_attempts=1)
    store(engine, "evt_recent_processed", RECENT)
    process(engine, "evt_recent_processed", RECENT)
    # Pending last: every claim above took the one event it was for.
    store(engine, "evt_old_pending", OLD)


def state(engine: Engine) -> dict[str, str]:
    with connect(engine, readonly=True) as conn:
        return {row.id: row.status for row in conn.execute(select(models.Event))}


def count(
    engine: Engine, model: type[models.Delivery] | type[models.Attempt], event_id: str
) -> int:
    with connect(engine, readonly=True) as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(model).where(model.event_id == event_id)
            ).scalar_one()
        )


KEPT = {
    "evt_old_pending": "pending",
    "evt_old_failed": "failed",
    "evt_old_dead": "dead",
    "evt_recent_processed": "processed",
}


def test_prune_removes_only_processed_and_ignored_events_past_the_cut(engine: Engine) -> None:
    fill(engine)
    assert count(engine, models.Delivery, "evt_old_processed") == 1
    assert count(engine, models.Attempt, "evt_old_processed") == 1

    dry = run("events", "prune", "--older-than", "10d", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "would remove 2 events" in dry.stdout and "(1 deliveries, 1 attempts)" in dry.stdout
    assert len(state(engine)) == 6  # nothing removed

    done = run("events", "prune", "--older-than", "10d")
    assert done.exit_code == 0, done.output
    assert "removed 2 events" in done.stdout
    assert state(engine) == KEPT
    assert count(engine, models.Delivery, "evt_old_processed") == 0
    assert count(engine, models.Attempt, "evt_old_processed") == 0
    # The failed and dead events keep their history.
    assert count(engine, models.Attempt, "evt_old_failed") == 1
    assert count(engine, models.Attempt, "evt_old_dead") == 1

    again = retention.prune(engine, timedelta(days=10))
    assert (again.events, again.deliveries, again.attempts) == (0, 0, 0)
    # A later cut reaches the recent one too, never the others.
    assert retention.prune(engine, timedelta(days=7), now=NOW + timedelta(days=6)).events == 1
    assert state(engine) == {k: v for k, v in KEPT.items() if k != "evt_recent_processed"}


def test_under_seven_days_is_refused_with_the_reason(engine: Engine) -> None:
    fill(engine)
    for age in ("3d", "144h", "6"):
        result = run("events", "prune", "--older-than", age)
        assert result.exit_code == 2, result.output
        assert "at least 7 days" in result.stderr and "redelivers" in result.stderr
    assert len(state(engine)) == 6
    with pytest.raises(RetentionTooShort):
        retention.prune(engine, timedelta(days=6, hours=23))
    assert run("events", "prune", "--older-than", "ninety").exit_code == 2
    assert run("events", "prune", "--older-than", "1w", "--dry-run").exit_code == 0
    assert run("events", "prune", "--older-than", "2w", "--dry-run").exit_code == 0


def test_the_setting_is_the_default_and_is_checked(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(engine)
    missing = run("events", "prune")
    assert missing.exit_code == 2 and "STRIPELINE_INBOX_RETENTION_DAYS" in missing.output
    monkeypatch.setenv("STRIPELINE_INBOX_RETENTION_DAYS", "10")
    assert load_settings().inbox_retention_days == 10
    result = run("events", "prune")
    assert result.exit_code == 0, result.output
    assert "removed 2 events" in result.stdout
    monkeypatch.setenv("STRIPELINE_INBOX_RETENTION_DAYS", "3")
    with pytest.raises(ConfigError, match="INBOX_RETENTION_DAYS"):
        load_settings()


def test_serve_prunes_in_the_background_when_the_setting_is_set(
    engine: Engine, database_url: str
) -> None:
    fill(engine)
    stop = threading.Event()
    off = Settings(database_url=database_url)
    assert retention.start_pruning(engine, off, stop) is None
    on = Settings(database_url=database_url, inbox_retention_days=10)
    thread = retention.start_pruning(engine, on, stop, interval=0.05)
    assert thread is not None
    try:
        deadline = time.monotonic() + 5
        while state(engine) != KEPT:
            assert time.monotonic() < deadline, state(engine)
            time.sleep(0.02)
        # It keeps running: an event processed long ago that shows up later goes too.
        store(engine, "evt_late_processed", OLD, status="ignored")
        while "evt_late_processed" in state(engine):
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()


def test_parse_age() -> None:
    assert retention.parse_age("90d") == timedelta(days=90)
    assert retention.parse_age("2W") == timedelta(weeks=2)
    assert retention.parse_age("240h") == timedelta(hours=240)
    assert retention.parse_age("30") == timedelta(days=30)
    with pytest.raises(ValueError, match="not an age"):
        retention.parse_age("1y")


@pytest.mark.slow
def test_stripeline_serve_prunes_with_the_setting(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'stripeline.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "STRIPELINE_"))}
    env.update(
        PYTHONPATH=str(ROOT / "src"),
        STRIPELINE_DATABASE_URL=database,
        STRIPELINE_INBOX_RETENTION_DAYS="10",
        STRIPELINE_CATCH_UP_INTERVAL="0",
    )
    engine = make_engine(database)
    try:
        migrate(engine)
        store(engine, "evt_old_processed", OLD)
        process(engine, "evt_old_processed", OLD)
        store(engine, "evt_old_dead", OLD)
        fail(engine, "evt_old_dead", OLD, max_attempts=1)
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stripeline",
                "serve",
                "--port",
                str(free_port()),
                "--sandbox-port",
                str(free_port()),
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert server.stdout is not None
            banner = ""
            deadline = time.monotonic() + 30
            while "inbox:" not in banner and time.monotonic() < deadline:
                banner += server.stdout.readline()
            assert "processed events kept 10 days" in banner
            while "evt_old_processed" in state(engine):
                assert time.monotonic() < deadline, "serve did not prune"
                time.sleep(0.05)
            assert state(engine) == {"evt_old_dead": "dead"}
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(20)
            assert server.stdout is not None
            server.stdout.close()
    finally:
        engine.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
