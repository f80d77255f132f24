"""Catch-up from ``/v1/events`` against the offline sandbox, through the SDK,
on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import stripe
import structlog
from click.testing import CliRunner, Result
from sqlalchemy import Engine, select, text
from stripe._http_client import HTTPClient
from structlog.testing import capture_logs

from stripeline import inbox
from stripeline.cli import main
from stripeline.db import connect
from stripeline.errors import StripeRateLimitError
from stripeline.gateway import Reader, make_client
from stripeline.settings import load_settings
from stripeline.sync import catch_up, run_catch_up_forever, run_catch_up_forever_async
from stripeline.sync.cursors import CURSOR_NAME, read_cursor, save_cursor
from stripeline_sandbox import Sandbox
from tests.factories import store_events


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox() as sb:
        yield sb


@pytest.fixture
def client(sandbox: Sandbox) -> stripe.StripeClient:
    settings = load_settings(stripe_secret_key=sandbox.secret_key, stripe_api_base=sandbox.url)
    return make_client(settings, max_network_retries=0)


def _reader(client: stripe.StripeClient) -> Reader:
    """Catch-up's reads: no rate limit to speak of, one try per read."""
    return Reader(client, reads_per_second=1000, max_attempts=1)


def _make_events(client: stripe.StripeClient, n: int) -> None:
    for i in range(n):
        client.v1.customers.create({"email": f"c{i}-{time.monotonic_ns()}@example.com"})


def _stripe_events(client: stripe.StripeClient) -> list[str]:
    """Every event id the sandbox holds, oldest first."""
    ids = [event.id for event in client.v1.events.list({"limit": 100}).auto_paging_iter()]
    return list(reversed(ids))


def _delivery_order(engine: Engine) -> list[str]:
    """The inbox's events in the order they were received."""
    with connect(engine, readonly=True) as conn:
        return list(
            conn.execute(select(inbox.events.c.id).order_by(inbox.events.c.received_at)).scalars()
        )


def _rows(engine: Engine) -> dict[str, dict[str, object]]:
    with connect(engine, readonly=True) as conn:
        rows = conn.execute(
            select(
                inbox.events.c.id,
                inbox.events.c.source,
                inbox.events.c.status,
                inbox.events.c.deliveries,
                inbox.events.c.payload,
            )
        ).mappings()
        return {row["id"]: dict(row) for row in rows}


def test_first_run_stores_every_event_oldest_first(
    engine: Engine, client: stripe.StripeClient
) -> None:
    _make_events(client, 5)
    expected = _stripe_events(client)
    assert len(expected) >= 5

    result = catch_up(engine, _reader(client), mode="test", page_size=2)

    assert result.inserted == len(expected) == result.seen
    assert result.ignored == 0
    assert _delivery_order(engine) == expected  # oldest first, across pages
    rows = _rows(engine)
    assert set(rows) == set(expected)
    for row in rows.values():
        assert (row["source"], row["status"], row["deliveries"]) == ("catch-up", "pending", 1)
    # The payload is the event as Stripe listed it, whole.
    first = json.loads(rows[expected[0]]["payload"])  # type: ignore[arg-type]
    assert first["id"] == expected[0] and first["object"] == "event"
    assert first["data"]["object"]["object"] == "customer"
    with connect(engine, readonly=True) as conn:
        cursor = read_cursor(conn)
    assert cursor is not None and cursor.event_id == expected[-1] == result.cursor


def test_next_run_takes_only_what_is_new(engine: Engine, client: stripe.StripeClient) -> None:
    _make_events(client, 3)
    catch_up(engine, _reader(client), mode="test", page_size=2)
    again = catch_up(engine, _reader(client), mode="test", page_size=2)
    assert (again.inserted, again.seen, again.pages) == (0, 0, 1)

    before = set(_stripe_events(client))
    _make_events(client, 3)
    new = [e for e in _stripe_events(client) if e not in before]
    result = catch_up(engine, _reader(client), mode="test", page_size=2)
    assert result.inserted == len(new) == 3
    assert _delivery_order(engine)[-3:] == new
    assert all(row["deliveries"] == 1 for row in _rows(engine).values())


def test_events_already_delivered_by_webhook_are_not_stored_again(
    engine: Engine, client: stripe.StripeClient
) -> None:
    _make_events(client, 3)
    ids = _stripe_events(client)
    webhook_event = client.v1.events.retrieve(ids[1])
    payload = json.dumps(webhook_event.to_dict(for_json=True)).encode()
    store_events(engine, [payload], signed_at=1)

    result = catch_up(engine, _reader(client), mode="test")

    assert result.inserted == len(ids) - 1
    rows = _rows(engine)
    assert rows[ids[1]]["source"] == "webhook"
    assert rows[ids[1]]["deliveries"] == 1
    assert len(rows) == len(ids)


def test_an_interrupted_run_loses_nothing_and_repeats_nothing(
    engine: Engine, sandbox: Sandbox, client: stripe.StripeClient
) -> None:
    _make_events(client, 1)
    catch_up(engine, _reader(client), mode="test", page_size=2)
    _make_events(client, 6)
    everything = _stripe_events(client)

    # Two requests pass, the third is refused: two pages are stored.
    sandbox.set_rate_limit(2)
    with pytest.raises(StripeRateLimitError):
        catch_up(engine, _reader(client), mode="test", page_size=2)
    stored = _delivery_order(engine)
    assert stored == everything[: len(stored)]
    assert len(stored) == 5
    with connect(engine, readonly=True) as conn:
        cursor = read_cursor(conn)
    assert cursor is not None and cursor.event_id == stored[-1]

    sandbox.set_rate_limit(0)
    result = catch_up(engine, _reader(client), mode="test", page_size=2)
    assert result.inserted == len(everything) - 5
    assert _delivery_order(engine) == everything
    assert all(row["deliveries"] == 1 for row in _rows(engine).values())


def test_first_run_since_skips_older_events(
    engine: Engine, sandbox: Sandbox, client: stripe.StripeClient
) -> None:
    _make_events(client, 2)
    old = set(_stripe_events(client))
    since = sandbox.advance_clock(3600)
    _make_events(client, 2)
    recent = [e for e in _stripe_events(client) if e not in old]

    result = catch_up(engine, _reader(client), mode="test", since=since, page_size=1)

    assert result.inserted == len(recent) == 2
    assert _delivery_order(engine) == recent
    # An aware datetime works as well as a Unix time (no cursor: a first run).
    with connect(engine) as conn:
        conn.execute(inbox.deliveries.delete())
        conn.execute(inbox.events.delete())
        conn.execute(text("DELETE FROM stripeline_cursors"))
    again = catch_up(engine, _reader(client), mode="test", since=datetime.fromtimestamp(since, UTC))
    assert again.inserted == 2


def test_events_of_the_other_mode_are_stored_ignored(
    engine: Engine, client: stripe.StripeClient
) -> None:
    _make_events(client, 2)
    with capture_logs() as logs:
        result = catch_up(engine, _reader(client), mode="live")
    assert result.inserted == result.ignored == len(_stripe_events(client))
    assert {row["status"] for row in _rows(engine).values()} == {"ignored"}
    assert any(log["action"] == "catch_up_event_ignored" for log in logs)


def test_an_old_cursor_is_warned_about(engine: Engine, client: stripe.StripeClient) -> None:
    _make_events(client, 1)
    catch_up(engine, _reader(client), mode="test")
    with capture_logs() as logs:
        fresh = catch_up(engine, _reader(client), mode="test")
    assert not fresh.cursor_was_old
    assert not [log for log in logs if log["action"] == "catch_up_cursor_old"]

    with capture_logs() as logs:
        late = catch_up(
            engine, _reader(client), mode="test", now=datetime.now(UTC) + timedelta(days=26)
        )
    assert late.cursor_was_old
    (warning,) = [log for log in logs if log["action"] == "catch_up_cursor_old"]
    assert warning["log_level"] == "warning"
    assert warning["age_days"] >= 25


def test_a_cursor_stripe_no_longer_knows_restarts_from_its_time(
    engine: Engine, sandbox: Sandbox, client: stripe.StripeClient
) -> None:
    _make_events(client, 3)
    ids = _stripe_events(client)
    first = client.v1.events.retrieve(ids[0])
    with connect(engine) as conn:
        save_cursor(conn, "evt_gone", first.created, now=datetime.now(UTC))
    with capture_logs() as logs:
        result = catch_up(engine, _reader(client), mode="test", page_size=2)
    assert any(log["action"] == "catch_up_cursor_lost" for log in logs)
    assert result.inserted == len(ids)
    assert _delivery_order(engine) == ids


def test_no_events_at_all(engine: Engine, client: stripe.StripeClient) -> None:
    result = catch_up(engine, _reader(client), mode="test")
    assert (result.inserted, result.cursor) == (0, None)
    with connect(engine, readonly=True) as conn:
        assert read_cursor(conn, CURSOR_NAME) is None


@pytest.mark.postgres
def test_one_catch_up_at_a_time_on_postgres(postgres_url: str, client: stripe.StripeClient) -> None:
    from stripeline.db import make_engine

    engine = make_engine(postgres_url)
    _make_events(client, 1)
    try:
        with engine.connect() as holder:
            holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": 0x5354_4C43})
            assert catch_up(engine, _reader(client), mode="test").skipped
            holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": 0x5354_4C43})
        assert catch_up(engine, _reader(client), mode="test").inserted >= 1
    finally:
        engine.dispose()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_loop_survives_unreachable_stripe_and_stops(engine: Engine) -> None:
    settings = load_settings(
        stripe_secret_key="sk_test_unreachable1",
        stripe_api_base=f"http://127.0.0.1:{_closed_port()}",
    )
    client = make_client(settings, max_network_retries=0)
    stop = threading.Event()
    with capture_logs() as logs:
        thread = threading.Thread(
            target=run_catch_up_forever,
            args=(engine, _reader(client)),
            kwargs={"mode": "test", "stop": stop, "backoff_initial": 0.01, "backoff_max": 0.02},
        )
        thread.start()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if sum(1 for log in logs if log.get("action") == "catch_up_failed") >= 3:
                break
            time.sleep(0.01)
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()
    failures = [log for log in logs if log.get("action") == "catch_up_failed"]
    assert len(failures) >= 3
    assert "StripeConnectionError" in failures[0]["error"]
    assert "sk_test_unreachable1" not in repr(logs)
    assert logs[-1]["action"] == "catch_up_loop_stopped"


def test_loop_catches_up_then_waits(engine: Engine, client: stripe.StripeClient) -> None:
    _make_events(client, 2)
    stop = threading.Event()
    thread = threading.Thread(
        target=run_catch_up_forever,
        args=(engine, _reader(client)),
        kwargs={"mode": "test", "stop": stop, "interval": 0.01},
    )
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while len(_rows(engine)) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        _make_events(client, 1)
        while len(_rows(engine)) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join(timeout=5)
    assert set(_rows(engine)) == set(_stripe_events(client))


def test_async_loop_runs_until_cancelled(engine: Engine, client: stripe.StripeClient) -> None:
    _make_events(client, 2)

    async def scenario() -> None:
        task = asyncio.create_task(
            run_catch_up_forever_async(engine, _reader(client), mode="test", interval=0.01)
        )
        for _ in range(500):
            if len(_rows(engine)) >= 2:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert len(_rows(engine)) == len(_stripe_events(client))


# -- stripeline sync events ---------------------------------------------------


@pytest.fixture
def sync_cli(
    database_url: str, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Engine]:
    from stripeline.db import make_engine

    monkeypatch.setenv("STRIPELINE_DATABASE_URL", database_url)
    monkeypatch.setenv("STRIPE_SECRET_KEY", sandbox.secret_key)
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", sandbox.webhook_secret)
    monkeypatch.setenv("STRIPELINE_STRIPE_API_BASE", sandbox.url)
    engine = make_engine(database_url)
    yield engine
    engine.dispose()
    # The command configured logging to the runner's (now closed) stderr.
    structlog.reset_defaults()


def _sync(*args: str) -> Result:
    return CliRunner().invoke(main, ["sync", "events", *args])


def test_sync_events_command(sync_cli: Engine, client: stripe.StripeClient) -> None:
    _make_events(client, 3)
    expected = _stripe_events(client)

    result = _sync()
    assert result.exit_code == 0, result.output
    assert f"caught up: {len(expected)} new events stored" in result.stdout
    assert f"cursor: {expected[-1]}" in result.stdout
    assert _delivery_order(sync_cli) == expected

    again = _sync("--json", "--since", "2026-01-01T00:00:00Z")
    assert again.exit_code == 0, again.output
    doc = json.loads(again.stdout)
    assert (doc["inserted"], doc["cursor"]) == (0, expected[-1])


def test_sync_events_since_on_a_first_run(
    sync_cli: Engine, sandbox: Sandbox, client: stripe.StripeClient
) -> None:
    _make_events(client, 2)
    old = set(_stripe_events(client))
    since = sandbox.advance_clock(7200) - 10
    _make_events(client, 1)
    recent = [e for e in _stripe_events(client) if e not in old]
    iso_since = datetime.fromtimestamp(since, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    result = _sync("--since", iso_since)
    assert result.exit_code == 0, result.output
    assert _delivery_order(sync_cli) == recent


def test_sync_events_rejects_a_bad_since(sync_cli: Engine) -> None:
    result = _sync("--since", "last tuesday")
    assert result.exit_code == 2
    assert "neither Unix seconds nor an ISO date" in result.output


def test_sync_events_when_stripe_is_down(sync_cli: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(HTTPClient, "INITIAL_DELAY", 0.001)
    monkeypatch.setenv("STRIPELINE_STRIPE_API_BASE", f"http://127.0.0.1:{_closed_port()}")
    result = _sync()
    assert result.exit_code == 1
    assert "Stripe:" in result.stderr and "StripeConnectionError" in result.stderr
    assert os.environ["STRIPE_SECRET_KEY"] not in result.output


def test_sync_events_needs_a_key(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPELINE_DATABASE_URL", sqlite_url)
    result = _sync()
    assert result.exit_code == 2
    assert "STRIPE_SECRET_KEY" in result.stderr
