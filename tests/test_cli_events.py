"""``stripeline events …`` against real SQLite and PostgreSQL inboxes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine

from stripeline import inbox, ops
from stripeline.cli import main
from stripeline.db import connect, make_engine
from stripeline.mirror import refetch
from tests.factories import store_events

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def cli(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    monkeypatch.setenv("STRIPELINE_DATABASE_URL", database_url)
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def _store(
    engine: Engine,
    event_id: str,
    event_type: str = "customer.created",
    *,
    received: datetime = T0,
    livemode: bool = False,
) -> None:
    body = {
        "id": event_id,
        "object": "event",
        "type": event_type,
        "created": int(received.timestamp()) - 1,
        "livemode": livemode,
        "api_version": "2026-10-28.endive",
        "data": {"object": {"id": "cus_" + event_id[-6:], "object": "customer", "email": "x@y.z"}},
    }
    store_events(
        engine, [json.dumps(body).encode()], at=received, signed_at=int(received.timestamp())
    )


def _fail(engine: Engine, event_id: str, *, attempts: int, max_attempts: int = 3) -> None:
    """Claim and fail ``event_id`` ``attempts`` times through the inbox's own functions."""
    now = T0
    for number in range(1, attempts + 1):
        now += timedelta(hours=1)
        with connect(engine) as conn:
            claimed = inbox.claim(conn, worker="w1", limit=10, lease_seconds=60, now=now)
            assert [c.id for c in claimed] == [event_id]
            status = inbox.mark_failed(
                conn,
                event_id,
                attempt=number,
                error=f"ValueError: boom {number}",
                traceback=f"Traceback (most recent call last):\n  handler line {number}\n",
                max_attempts=max_attempts,
                schedule=(0,),
                now=now,
            )
            inbox.record_attempt(
                conn,
                [
                    {
                        "event_id": event_id,
                        "number": number,
                        "worker": "w1",
                        "started_at": now,
                        "finished_at": now,
                        "outcome": status,
                        "error": f"ValueError: boom {number}",
                        "traceback": None,
                    }
                ],
            )


def _process(engine: Engine, event_id: str) -> None:
    with connect(engine) as conn:
        claimed = inbox.claim(conn, worker="w1", limit=10, lease_seconds=60, now=T0 + timedelta(1))
        assert event_id in [c.id for c in claimed]
        assert inbox.finish(conn, event_id, worker="w1", now=T0 + timedelta(1))


def _status(engine: Engine, event_id: str) -> ops.EventSummary:
    with connect(engine, readonly=True) as conn:
        detail = ops.get_event(conn, event_id)
    assert detail is not None
    return detail.summary


def test_list_on_an_empty_inbox(cli: Engine) -> None:
    result = run("events", "list")
    assert result.exit_code == 0, result.output
    assert "no events match" in result.stdout
    as_json = run("events", "list", "--json")
    assert json.loads(as_json.stdout) == []


def test_list_table_and_json(cli: Engine) -> None:
    _store(cli, "evt_000000000001", "invoice.paid", received=T0)
    _store(cli, "evt_000000000002", "customer.created", received=T0 + timedelta(minutes=1))
    _store(cli, "evt_000000000003", "invoice.created", received=T0 + timedelta(minutes=2))

    table = run("events", "list")
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["id", "type", "status"]
    # Newest received first, one line per event, whole ids and types.
    assert [line.split()[0] for line in lines[1:4]] == [
        "evt_000000000003",
        "evt_000000000002",
        "evt_000000000001",
    ]
    assert "invoice.created" in lines[1] and "pending" in lines[1]

    result = run("events", "list", "--json")
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert [row["id"] for row in rows] == [
        "evt_000000000003",
        "evt_000000000002",
        "evt_000000000001",
    ]
    for row in rows:
        assert {"id", "type", "status", "attempts", "deliveries", "created", "received_at"} <= set(
            row
        )
        assert row["status"] == "pending" and row["attempts"] == 0 and row["deliveries"] == 1
    assert rows[2]["received_at"] == T0.isoformat()
    assert rows[2]["created"] == int(T0.timestamp()) - 1


def test_list_filters_by_type_status_and_limit(cli: Engine) -> None:
    _store(cli, "evt_000000000001", "invoice.paid")
    _fail(cli, "evt_000000000001", attempts=3)
    _store(cli, "evt_000000000002", "customer.created", received=T0 + timedelta(seconds=1))
    _store(cli, "evt_000000000003", "invoice.created", received=T0 + timedelta(seconds=2))
    by_type = json.loads(run("events", "list", "--type", "invoice.*", "--json").stdout)
    assert {row["id"] for row in by_type} == {"evt_000000000001", "evt_000000000003"}
    exact = json.loads(run("events", "list", "--type", "invoice.paid", "--json").stdout)
    assert [row["id"] for row in exact] == ["evt_000000000001"]
    limited = json.loads(run("events", "list", "--limit", "1", "--json").stdout)
    assert [row["id"] for row in limited] == ["evt_000000000003"]
    assert run("events", "list", "--status", "nope").exit_code == 2
    dead = json.loads(run("events", "list", "--status", "dead", "--json").stdout)
    assert [(row["id"], row["attempts"]) for row in dead] == [("evt_000000000001", 3)]
    pending = json.loads(run("events", "list", "--status", "pending", "--json").stdout)
    assert {row["id"] for row in pending} == {"evt_000000000002", "evt_000000000003"}


def test_show_an_event_processed_in_bulk(cli: Engine, database_url: str) -> None:
    """No handler wants it: the worker applies it in bulk and logs no attempt
    row; the event row holds its one attempt, and `show` says so."""
    from pydantic import SecretStr

    from stripeline.app import Stripeline
    from stripeline.settings import Settings
    from stripeline.worker import Worker
    from tests.factories import SECRET

    _store(cli, "evt_000000000009", "customer.created", received=inbox.utcnow())
    app = Stripeline(
        Settings(stripe_webhook_secret=SecretStr(SECRET), database_url=database_url),
        engine=cli,
    )
    assert Worker(app, listen=False).drain(timeout=30) == 1

    result = run("events", "show", "evt_000000000009")
    assert result.exit_code == 0, result.output
    assert "processed on its first attempt, in bulk" in result.stdout
    doc = json.loads(run("events", "show", "evt_000000000009", "--json").stdout)
    assert doc["status"] == "processed" and doc["attempts"] == 1
    assert doc["processed_at"] is not None and doc["attempt_log"] == []


def test_show_an_event_with_its_history(cli: Engine) -> None:
    _store(cli, "evt_000000000001", "invoice.paid")
    _store(cli, "evt_000000000001", "invoice.paid", received=T0 + timedelta(seconds=5))
    _fail(cli, "evt_000000000001", attempts=2)

    result = run("events", "show", "evt_000000000001")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "evt_000000000001" in out and "invoice.paid" in out and "failed" in out
    assert "ValueError: boom 2" in out  # the last error
    assert "handler line 2" in out  # the last traceback
    assert "ValueError: boom 1" in out  # the attempt log
    assert out.count("webhook") >= 3  # source + two deliveries
    assert '"email": "x@y.z"' in out  # the payload

    doc = json.loads(run("events", "show", "evt_000000000001", "--json").stdout)
    assert doc["id"] == "evt_000000000001"
    assert doc["status"] == "failed"
    assert doc["attempts"] == 2 and doc["deliveries"] == 2
    assert doc["payload"]["data"]["object"]["email"] == "x@y.z"
    assert [d["source"] for d in doc["delivery_log"]] == ["webhook", "webhook"]
    assert [a["number"] for a in doc["attempt_log"]] == [1, 2]
    assert doc["last_error"] == "ValueError: boom 2"
    assert "handler line 2" in doc["last_traceback"]


@pytest.mark.parametrize("command", ["show", "retry", "replay"])
def test_unknown_event_is_exit_1(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.setenv("STRIPELINE_DATABASE_URL", sqlite_url)
    result = run("events", command, "evt_missing")
    assert result.exit_code == 1
    assert "no event evt_missing in the inbox" in result.stderr
    assert result.stdout == ""


def test_retry_one_failed_or_dead_event(cli: Engine) -> None:
    _store(cli, "evt_000000000001")
    _fail(cli, "evt_000000000001", attempts=3)
    assert _status(cli, "evt_000000000001").status == "dead"

    result = run("events", "retry", "evt_000000000001")
    assert result.exit_code == 0, result.output
    assert "was dead" in result.stdout
    summary = _status(cli, "evt_000000000001")
    assert (summary.status, summary.attempts) == ("pending", 0)


def test_retry_refuses_other_statuses_and_unknown_ids(cli: Engine) -> None:
    _store(cli, "evt_000000000001")
    _process(cli, "evt_000000000001")
    result = run("events", "retry", "evt_000000000001")
    assert result.exit_code == 1
    assert "is processed" in result.stderr and "events replay" in result.stderr
    assert _status(cli, "evt_000000000001").status == "processed"


def test_retry_every_dead_event(cli: Engine) -> None:
    for n in (1, 2):
        _store(cli, f"evt_00000000000{n}")
    # Fail both to death, together, through the inbox.
    now = T0
    for number in (1, 2, 3):
        now += timedelta(hours=1)
        with connect(cli) as conn:
            for claimed in inbox.claim(conn, worker="w", limit=10, lease_seconds=60, now=now):
                inbox.mark_failed(
                    conn,
                    claimed.id,
                    attempt=number,
                    error="boom",
                    traceback=None,
                    max_attempts=3,
                    schedule=(0,),
                    now=now,
                )
    _store(cli, "evt_000000000003")
    result = run("events", "retry", "--dead")
    assert result.exit_code == 0, result.output
    assert "2 dead events scheduled" in result.stdout
    assert {_status(cli, f"evt_00000000000{n}").status for n in (1, 2, 3)} == {"pending"}
    assert "0 dead events" in run("events", "retry", "--dead").stdout


@pytest.mark.parametrize("args", [[], ["evt_000000000001", "--dead"]])
def test_retry_needs_exactly_one_target(args: list[str]) -> None:
    result = run("events", "retry", *args)
    assert result.exit_code == 2
    assert "give one EVENT_ID or --dead" in result.output


def test_replay_a_processed_event(cli: Engine) -> None:
    _store(cli, "evt_000000000001")
    _process(cli, "evt_000000000001")
    result = run("events", "replay", "evt_000000000001")
    assert result.exit_code == 0, result.output
    assert "was processed" in result.stdout
    assert _status(cli, "evt_000000000001").status == "pending"
    doc = json.loads(run("events", "show", "evt_000000000001", "--json").stdout)
    assert [d["source"] for d in doc["delivery_log"]] == ["webhook", "replay"]


def test_replay_refuses_unknown_and_in_flight_events(cli: Engine) -> None:
    _store(cli, "evt_000000000001")
    with connect(cli) as conn:
        inbox.claim(conn, worker="w1", limit=1, lease_seconds=60, now=T0 + timedelta(1))
    busy = run("events", "replay", "evt_000000000001")
    assert busy.exit_code == 1 and "being processed" in busy.stderr
    assert _status(cli, "evt_000000000001").status == "processing"


def test_refetches_waiting_and_given_up(cli: Engine) -> None:
    empty = run("events", "refetches")
    assert empty.exit_code == 0, empty.output
    assert "0 waiting, 0 given up" in empty.stdout
    with connect(cli) as conn:
        refetch.request(
            conn,
            [
                refetch.Wanted("", "sub_waits", "subscription", False),
                refetch.Wanted("acct_1", "cus_refused", "customer", False),
            ],
            now=T0,
            window=0,
        )
        claimed = refetch.claim(conn, worker="w1", limit=10, lease_seconds=60, now=T0)
        (item,) = [c for c in claimed if c.id == "cus_refused"]
        refetch.give_up(conn, item, error="Invalid API Key provided: rk_test_…", now=T0)
        (other,) = [c for c in claimed if c.id == "sub_waits"]
        refetch.fail(conn, other, error="Stripe could not be reached", retry_in=60, now=T0)

    table = run("events", "refetches")
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0] == "1 waiting, 1 given up"
    assert lines[1].split()[:2] == ["id", "type"]
    (refused,) = [line for line in lines if line.startswith("cus_refused")]
    assert "given up" in refused and "Invalid API Key" in refused
    (waits,) = [line for line in lines if line.startswith("sub_waits")]
    assert "waiting" in waits and "could not be reached" in waits

    result = run("events", "refetches", "--gave-up", "--json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["id"] == "cus_refused" and row["account"] == "acct_1"
    assert row["attempts"] == 1 and row["gave_up_at"] == T0.isoformat()


def test_unmigrated_database_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRIPELINE_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    result = run("events", "list")
    assert result.exit_code == 1
    assert "stripeline migrate" in result.stderr


def test_unreachable_database_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "STRIPELINE_DATABASE_URL", "postgresql://stripeline:hunter2@127.0.0.1:1/nowhere"
    )
    result = run("events", "list")
    assert result.exit_code == 1
    assert "database unreachable" in result.stderr
    assert "hunter2" not in result.output


def test_configuration_errors_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_SECRET_KEY", "not-a-key")
    result = run("events", "list")
    assert result.exit_code == 2
    assert "configuration error" in result.stderr and "not-a-key" not in result.output
