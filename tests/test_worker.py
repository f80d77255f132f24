"""The worker: handlers, atomicity, retries, dead letters, once(), leases."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import structlog
from pydantic import SecretStr
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select, update
from sqlalchemy.orm import Session

from stripeline import inbox, ops
from stripeline.app import ReceivedEvent, Stripeline
from stripeline.db.engine import connect, make_engine
from stripeline.db.models import Attempt, Event
from stripeline.mirror import refetch
from stripeline.mirror._store import get_object
from stripeline.mirror.tables import table_for
from stripeline.settings import Settings
from stripeline.worker import Worker
from stripeline_sandbox import Sandbox
from tests.factories import SECRET, event, store_events

notes_md = MetaData()
notes = Table(
    "test_notes",
    notes_md,
    Column("n", Integer, primary_key=True, autoincrement=True),
    Column("text", String(200)),
)


@pytest.fixture
def app(database_url: str) -> Iterator[Stripeline]:
    settings = Settings(
        stripe_webhook_secret=SECRET,  # type: ignore[arg-type]  # pydantic validates it
        database_url=database_url,
        retry_schedule=(10, 60),
        max_attempts=3,
    )
    application = Stripeline(settings, engine=make_engine(database_url))
    notes_md.create_all(application.engine)
    yield application
    application.dispose()


def put(app: Stripeline, *bodies: dict[str, Any]) -> None:
    store_events(app.engine, bodies)


def event_row(app: Stripeline, event_id: str) -> Event:
    with Session(app.engine, expire_on_commit=False) as session:
        row = session.get(Event, event_id)
        assert row is not None
        return row


def count_notes(app: Stripeline) -> int:
    with connect(app.engine, readonly=True) as conn:
        return int(conn.execute(select(func.count()).select_from(notes)).scalar_one())


def make_due(app: Stripeline) -> None:
    """Jump past every backoff: make all failed events due now."""
    with connect(app.engine) as conn:
        conn.execute(
            update(Event)
            .where(Event.status == "failed")
            .values(next_attempt_at=inbox.utcnow() - timedelta(seconds=1))
        )


def test_sync_and_async_handlers_run_in_order(app: Stripeline) -> None:
    calls: list[str] = []

    @app.on("invoice.paid")
    def exact(e: ReceivedEvent) -> None:
        calls.append(f"exact:{e.type}:{e.object['id']}")

    @app.on("invoice.*")
    async def prefix(e: ReceivedEvent) -> None:
        await asyncio.sleep(0)
        calls.append("prefix")

    @app.on("*")
    def every(e: ReceivedEvent) -> None:
        calls.append(f"every:{e.attempt}")

    put(app, event("invoice.paid", obj={"id": "in_1", "object": "invoice"}, created=1_700_000_000))
    put(app, event("customer.created", created=1_700_000_001))
    assert Worker(app, listen=False).drain() == 2
    assert calls[:3] == ["exact:invoice.paid:in_1", "prefix", "every:1"]
    assert calls[3:] == ["every:1"]


def test_handler_writes_commit_with_the_processed_mark(app: Stripeline) -> None:
    @app.on("customer.created")
    def write(e: ReceivedEvent) -> None:
        e.session.execute(insert(notes).values(text=e.id))

    body = event("customer.created")
    put(app, body)
    Worker(app, listen=False).drain()
    assert event_row(app, body["id"]).status == "processed"
    assert count_notes(app) == 1


def test_failing_handler_rolls_back_its_writes_and_retries_with_backoff(app: Stripeline) -> None:
    state = {"fail": True}

    @app.on("customer.updated")
    def flaky(e: ReceivedEvent) -> None:
        e.session.execute(insert(notes).values(text="written before the failure"))
        if state["fail"]:
            raise RuntimeError("the email service is down")

    body = event("customer.updated")
    put(app, body)
    worker = Worker(app, listen=False)
    worker.drain()
    row = event_row(app, body["id"])
    assert row.status == "failed"
    assert row.attempts == 1
    assert row.last_error == "RuntimeError: the email service is down"
    assert row.last_traceback and "flaky" in row.last_traceback
    assert row.next_attempt_at is not None
    wait = (row.next_attempt_at - inbox.utcnow()).total_seconds()
    assert 7 < wait <= 12  # 10 s ± 20% jitter
    assert count_notes(app) == 0
    # Not yet due: nothing happens.
    assert worker.drain() == 0
    # The mirror write was rolled back with it.
    with connect(app.engine, readonly=True) as conn:
        assert get_object(conn, body["data"]["object"]["id"]) is None
    state["fail"] = False
    make_due(app)
    assert worker.drain() == 1
    row = event_row(app, body["id"])
    assert (row.status, row.attempts, row.last_error) == ("processed", 2, None)
    assert count_notes(app) == 1
    with Session(app.engine) as session:
        outcomes = session.scalars(
            select(Attempt.outcome).where(Attempt.event_id == body["id"]).order_by(Attempt.id)
        ).all()
    assert outcomes == ["failed", "processed"]


def test_dead_after_max_attempts_then_retry_by_hand(app: Stripeline) -> None:
    @app.on("*")
    def broken(e: ReceivedEvent) -> None:
        raise ValueError("bug")

    body = event()
    put(app, body)
    worker = Worker(app, listen=False)
    for _ in range(3):
        make_due(app)
        worker.drain()
    row = event_row(app, body["id"])
    assert (row.status, row.attempts, row.next_attempt_at) == ("dead", 3, None)
    make_due(app)
    assert worker.drain() == 0
    with connect(app.engine) as conn:
        assert inbox.retry(conn, dead=True) == 1
    app._handlers.clear()
    assert worker.drain() == 1
    assert event_row(app, body["id"]).status == "processed"


def test_one_failure_does_not_roll_back_the_rest_of_the_batch(app: Stripeline) -> None:
    @app.on("*")
    def some_fail(e: ReceivedEvent) -> None:
        e.session.execute(insert(notes).values(text=e.id))
        if e.object.get("fail"):
            raise RuntimeError("no")

    bodies = [event(obj={"id": f"cus_{i}", "object": "customer", "fail": i == 2}) for i in range(5)]
    put(app, *bodies)
    Worker(app, listen=False).drain()
    statuses = [event_row(app, b["id"]).status for b in bodies]
    assert statuses == ["processed", "processed", "failed", "processed", "processed"]
    assert count_notes(app) == 4


def test_once_guards_a_side_effect_across_events_and_replays(app: Stripeline) -> None:
    sent: list[str] = []

    @app.on("customer.created", "customer.updated")
    def welcome(e: ReceivedEvent) -> None:
        if e.once(f"welcome:{e.object['id']}"):
            sent.append(e.id)

    obj = {"id": "cus_once", "object": "customer"}
    first = event("customer.created", obj=obj, created=1_700_000_000)
    second = event("customer.updated", obj=obj, created=1_700_000_001)
    put(app, first, second)
    worker = Worker(app, listen=False)
    worker.drain()
    with connect(app.engine) as conn:
        assert inbox.replay(conn, first["id"])
    worker.drain()
    assert sent == [first["id"]]
    assert app.once("outside:1") is True
    assert app.once("outside:1") is False


def test_once_key_is_released_when_the_handler_fails(app: Stripeline) -> None:
    attempts: list[int] = []

    @app.on("*")
    def effect_then_fail(e: ReceivedEvent) -> None:
        if e.once("the-key"):
            attempts.append(e.attempt)
            if e.attempt == 1:
                raise RuntimeError("failed after the effect")

    put(app, event())
    worker = Worker(app, listen=False)
    worker.drain()
    make_due(app)
    worker.drain()
    assert attempts == [1, 2]  # at least once: the effect is tried again


def test_expired_lease_makes_the_event_claimable_again(app: Stripeline) -> None:
    body = event()
    put(app, body)
    with connect(app.engine) as conn:
        (claimed,) = inbox.claim(conn, worker="dead-worker", limit=10, lease_seconds=60)
    assert claimed.id == body["id"]
    other = Worker(app, listen=False)
    assert other.drain() == 0  # leased: not claimable
    with connect(app.engine) as conn:
        again = inbox.claim(
            conn,
            worker="w2",
            limit=10,
            lease_seconds=60,
            now=inbox.utcnow() + timedelta(seconds=61),
        )
    assert [e.id for e in again] == [body["id"]]
    assert again[0].attempts == 2


def test_worker_that_lost_its_lease_does_not_finish(app: Stripeline) -> None:
    seen: list[str] = []
    app.on("*")(lambda e: seen.append(e.id))
    body = event()
    put(app, body)
    with connect(app.engine) as conn:
        (claimed,) = inbox.claim(conn, worker="slow", limit=1, lease_seconds=60)
        # Another worker took it over after the lease ran out.
        conn.execute(update(Event).values(lease_owner="fast"))
    slow = Worker(app, worker_id="slow", listen=False)
    with connect(app.engine) as conn:
        assert slow._process(conn, claimed) is None
    assert seen == []
    assert event_row(app, body["id"]).status == "processing"


def test_mirror_keeps_the_newest_state_whatever_the_order(app: Stripeline) -> None:
    obj_id = "cus_order"
    older = event("customer.updated", obj={"id": obj_id, "object": "customer", "v": 1}, created=100)
    newer = event("customer.updated", obj={"id": obj_id, "object": "customer", "v": 2}, created=200)
    put(app, newer)
    Worker(app, listen=False).drain()
    put(app, older)
    Worker(app, listen=False).drain()
    with connect(app.engine, readonly=True) as conn:
        data = get_object(conn, obj_id)
    assert data is not None and data["v"] == 2
    deleted = event("customer.deleted", obj={"id": obj_id, "object": "customer"}, created=200)
    put(app, deleted)
    Worker(app, listen=False).drain()
    with connect(app.engine, readonly=True) as conn:
        row = conn.execute(select(Event.status).where(Event.id == deleted["id"])).scalar_one()
        assert row == "processed"
        objects = table_for("customer").table
        assert conn.execute(select(objects.c.deleted).where(objects.c.id == obj_id)).scalar_one()


def test_replay_runs_handlers_again(app: Stripeline) -> None:
    seen: list[int] = []
    app.on("*")(lambda e: seen.append(e.attempt))
    body = event()
    put(app, body)
    worker = Worker(app, listen=False)
    worker.drain()
    with connect(app.engine) as conn:
        assert inbox.replay(conn, body["id"])
        assert not inbox.replay(conn, "evt_unknown")
    worker.drain()
    assert seen == [1, 1]
    detail = None
    with connect(app.engine, readonly=True) as conn:
        detail = ops.get_event(conn, body["id"])
    assert detail is not None
    assert [d["source"] for d in detail.deliveries] == ["webhook", "replay"]
    assert json.loads(detail.payload)["id"] == body["id"]


def test_handler_registration_needs_a_type() -> None:
    with pytest.raises(ValueError):
        Stripeline().on()


def test_handlers_for_matches_exact_prefix_and_star() -> None:
    app = Stripeline()
    marks: list[Callable[[ReceivedEvent], None]] = [lambda e: None for _ in range(4)]
    app.on("customer.subscription.updated")(marks[0])
    app.on("customer.subscription.*")(marks[1])
    app.on("customer.*")(marks[2])
    app.on("*")(marks[3])
    assert app.handlers_for("customer.subscription.updated") == marks
    assert app.handlers_for("customer.created") == [marks[2], marks[3]]
    assert app.handlers_for("invoice.paid") == [marks[3]]


def test_handler_logs_carry_the_event(app: Stripeline) -> None:
    from structlog.testing import capture_logs

    from stripeline.log import get_logger

    logger = get_logger("app")

    @app.on("*")
    def log_something(e: ReceivedEvent) -> None:
        logger.info("granted", action="grant_access")

    body = event("invoice.paid", obj={"id": "in_log", "object": "invoice"})
    put(app, body)
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        Worker(app, listen=False).drain()
    (entry,) = [e for e in logs if e.get("action") == "grant_access"]
    assert entry["event_id"] == body["id"]
    assert entry["event_type"] == "invoice.paid"


def test_include_gathers_handlers_from_other_apps() -> None:
    billing, emails, served = Stripeline(), Stripeline(), Stripeline()
    billing.on("invoice.paid")(lambda e: None)
    emails.on("invoice.*")(lambda e: None)
    served.include(billing)
    served.include(emails)
    assert served.handlers_for("invoice.paid") == (
        billing.handlers_for("invoice.paid") + emails.handlers_for("invoice.paid")
    )
    assert served.handlers_for("customer.created") == []


class FakeClock:
    """The worker's two clocks (seconds and the wall clock), moved by hand."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.start = inbox.utcnow()

    def monotonic(self) -> float:
        return self.seconds

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.seconds)


def test_a_slow_batch_keeps_its_lease(app: Stripeline) -> None:
    bodies = [event(created=1_700_000_000 + i) for i in range(6)]
    put(app, *bodies)
    expiries: list[Any] = []
    clock = FakeClock()

    @app.on("*")
    def slow(e: ReceivedEvent) -> None:
        clock.seconds += 0.35  # a slow handler, without the wait
        if e.id != bodies[-1]["id"]:  # the lease on the last, still waiting
            row = e.connection.execute(
                select(Event.next_attempt_at).where(Event.id == bodies[-1]["id"])
            ).scalar_one()
            expiries.append(row)

    worker = Worker(
        app,
        listen=False,
        lease_seconds=3,
        max_transaction_seconds=0.01,
        clock=clock.monotonic,
        now=clock.now,
    )
    assert worker.run_once() == 6
    # 6 x 0.35 s > 3 s / 3: the lease of what was left was pushed back.
    assert expiries[-1] > expiries[0]
    assert [event_row(app, b["id"]).status for b in bodies] == ["processed"] * 6


def test_renew_only_extends_the_holders_lease(app: Stripeline) -> None:
    body = event()
    put(app, body)
    now = inbox.utcnow()
    with connect(app.engine) as conn:
        inbox.claim(conn, worker="a", limit=1, lease_seconds=5, now=now)
    before = event_row(app, body["id"]).next_attempt_at
    with connect(app.engine) as conn:
        assert inbox.renew(conn, [body["id"]], worker="b", lease_seconds=60, now=now) == 0
        assert inbox.renew(conn, [body["id"]], worker="a", lease_seconds=60, now=now) == 1
    after = event_row(app, body["id"]).next_attempt_at
    assert before is not None and after is not None and after > before
    assert after == now + timedelta(seconds=60)


def test_a_read_stripe_refuses_for_good_is_given_up(
    stripe_sandbox: Sandbox, database_url: str
) -> None:
    """A key Stripe refuses (the sandbox takes no restricted keys): every
    re-fetch is refused (401, not retryable); after ``max_attempts`` the read is given up, not retried
    forever, until a new request for the object comes in."""
    settings = Settings(
        stripe_webhook_secret=SecretStr(SECRET),
        stripe_secret_key=SecretStr("rk_test_a_restricted_key_the_sandbox_refuses"),
        stripe_api_base=stripe_sandbox.url,
        database_url=database_url,
        mirror_policy="refetch",
        mirror_coalesce_seconds=0,
        retry_schedule=(0,),
        max_attempts=2,
    )
    app = Stripeline(settings, engine=make_engine(database_url))
    try:
        put(app, event(obj={"id": "cus_refused", "object": "customer"}))
        worker = Worker(app, listen=False)
        assert worker.run_once() == 2  # the event, and the first read (refused)
        assert worker.refetch_once() == 1  # again after its (zero) backoff: refused
        assert worker.refetch_once() == 0  # given up: never claimed again
        with connect(app.engine, readonly=True) as conn:
            assert refetch.pending(conn) == 0
            assert refetch.given_up(conn) == 1
            assert refetch.next_due(conn) is None
            (row,) = ops.list_refetches(conn)
        assert row.id == "cus_refused" and row.attempts == 2
        assert row.gave_up_at is not None and "Invalid API Key" in (row.last_error or "")
        assert get_object_or_none(app, "cus_refused") is None
        # A new event for the object revives the read.
        put(app, event(obj={"id": "cus_refused", "object": "customer"}))
        worker.run_once()
        with connect(app.engine, readonly=True) as conn:
            assert refetch.given_up(conn) == 0
            (row,) = ops.list_refetches(conn)
        assert row.gave_up_at is None and row.attempts == 1
    finally:
        app.dispose()


def get_object_or_none(app: Stripeline, object_id: str) -> dict[str, Any] | None:
    with connect(app.engine, readonly=True) as conn:
        return get_object(conn, object_id)
