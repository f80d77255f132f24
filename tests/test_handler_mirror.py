"""``event.mirror``: the mirror in the event's transaction, and the refusal of
a second write transaction from a handler on SQLite (one writer: the event's
own connection holds the lock, so a write elsewhere would wait for itself)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session

from stripeline import SecondWriteTransaction, StripelineError
from stripeline.app import ReceivedEvent, Stripeline
from stripeline.db.engine import connect, make_engine
from stripeline.db.models import Attempt, Event
from stripeline.db.models import CustomerLink as LinkRow
from stripeline.mirror import Mirror
from stripeline.settings import Settings
from stripeline.worker import Worker
from tests.factories import SECRET, event, store_events


@pytest.fixture
def app(database_url: str) -> Iterator[Stripeline]:
    settings = Settings(
        stripe_webhook_secret=SECRET,  # type: ignore[arg-type]  # pydantic validates it
        database_url=database_url,
        retry_schedule=(10, 60),
        max_attempts=3,
    )
    application = Stripeline(settings, engine=make_engine(database_url))
    yield application
    application.dispose()


def put(engine: Engine, *bodies: dict[str, Any]) -> None:
    store_events(engine, bodies)


def checkout_completed(user: str, customer: str) -> dict[str, Any]:
    return event(
        "checkout.session.completed",
        obj={
            "id": f"cs_{user}",
            "object": "checkout.session",
            "customer": customer,
            "client_reference_id": user,
            "status": "complete",
            "created": 1,
        },
    )


def event_row(app: Stripeline, event_id: str) -> Event:
    with Session(app.engine, expire_on_commit=False) as session:
        row = session.get(Event, event_id)
        assert row is not None
        return row


def attempts(app: Stripeline, event_id: str) -> list[Attempt]:
    with Session(app.engine, expire_on_commit=False) as session:
        return list(
            session.scalars(
                select(Attempt).where(Attempt.event_id == event_id).order_by(Attempt.number)
            )
        )


def links(app: Stripeline) -> list[tuple[str, str]]:
    with connect(app.engine, readonly=True) as conn:
        rows = conn.execute(select(LinkRow.app_user_id, LinkRow.customer_id)).all()
    return [(r.app_user_id, r.customer_id) for r in rows]


def test_event_mirror_links_commit_with_the_event(app: Stripeline) -> None:
    seen: dict[str, Any] = {}

    @app.on("checkout.session.completed")
    def link(event: ReceivedEvent) -> None:
        session = event.object
        link = event.mirror.link_customer(session["client_reference_id"], session["customer"])
        # Reads in the event's transaction see its writes: the link, and the
        # checkout session the event itself mirrored.
        seen["link"] = event.mirror.customer_link("user-1")
        seen["session"] = event.mirror.checkout_session(session["id"])
        seen["users"] = event.mirror.users_for_customer(session["customer"])
        assert link.customer_id == "cus_1"

    body = checkout_completed("user-1", "cus_1")
    put(app.engine, body)
    assert Worker(app, listen=False).drain() == 1
    assert event_row(app, body["id"]).status == "processed"
    assert links(app) == [("user-1", "cus_1")]
    assert seen["link"] is not None and seen["link"].customer_id == "cus_1"
    assert seen["session"] is not None and seen["session"].customer == "cus_1"
    assert seen["users"] == ["user-1"]
    assert Mirror(app.engine).customer_link("user-1") is not None


def test_event_mirror_link_rolls_back_when_the_handler_raises(app: Stripeline) -> None:
    @app.on("checkout.session.completed")
    def link_then_fail(event: ReceivedEvent) -> None:
        event.mirror.link_customer("user-2", "cus_2")
        raise RuntimeError("after the link")

    body = checkout_completed("user-2", "cus_2")
    put(app.engine, body)
    Worker(app, listen=False).drain()
    row = event_row(app, body["id"])
    assert row.status == "failed" and row.attempts == 1
    assert links(app) == []
    assert Mirror(app.engine).customer_link("user-2") is None


def test_async_handler_uses_event_mirror(app: Stripeline) -> None:
    @app.on("checkout.session.completed")
    async def link(event: ReceivedEvent) -> None:
        await event.mirror.link_customer_async("user-3", "cus_3")
        found = await event.mirror.customer_link_async("user-3")
        assert found is not None and found.customer_id == "cus_3"

    body = checkout_completed("user-3", "cus_3")
    put(app.engine, body)
    Worker(app, listen=False).drain()
    assert event_row(app, body["id"]).status == "processed"
    assert links(app) == [("user-3", "cus_3")]


def test_event_mirror_reads_the_events_account(app: Stripeline) -> None:
    accounts: list[str] = []

    @app.on("customer.updated")
    def read(event: ReceivedEvent) -> None:
        accounts.append(event.mirror.account)
        assert event.mirror.customer(event.object["id"]) is not None
        assert event.mirror.for_account(None).customer(event.object["id"]) is None

    body = event("customer.updated", account="acct_1")
    put(app.engine, body)
    Worker(app, listen=False).drain()
    assert event_row(app, body["id"]).status == "processed"
    assert accounts == ["acct_1"]


# -- a second write transaction from a handler ------------------------------------------


def _second_writers(app: Stripeline) -> dict[str, Any]:
    """Ways a handler opens a write transaction of its own on ``app.engine``."""

    def engine_begin() -> None:
        with app.engine.begin() as conn:
            conn.execute(insert(LinkRow).values(account="", app_user_id="u", customer_id="c"))

    def deferred_then_insert() -> None:
        # A read transaction (no lock at BEGIN) that then writes.
        with connect(app.engine, readonly=True) as conn:
            conn.execute(select(LinkRow.app_user_id)).all()
            conn.execute(insert(LinkRow).values(account="", app_user_id="u", customer_id="c"))

    return {
        "Mirror(app.engine).link_customer": lambda: Mirror(app.engine).link_customer("u", "c"),
        "app.engine.begin() + insert": engine_begin,
        "app.once()": lambda: app.once("key"),
        "a read transaction that writes": deferred_then_insert,
    }


@pytest.mark.parametrize(
    "way",
    [
        "Mirror(app.engine).link_customer",
        "app.engine.begin() + insert",
        "app.once()",
        "a read transaction that writes",
    ],
)
def test_second_write_transaction_fails_fast_on_sqlite(sqlite_url: str, way: str) -> None:
    settings = Settings(
        stripe_webhook_secret=SECRET,  # type: ignore[arg-type]
        database_url=sqlite_url,
        retry_schedule=(10, 60),
        max_attempts=3,
    )
    app = Stripeline(settings, engine=make_engine(sqlite_url))
    write = _second_writers(app)[way]
    timings: list[float] = []
    errors: list[BaseException] = []
    ingest_took: list[float] = []

    def ingest() -> None:
        # Another thread (a webhook's ingest): it waits for the event's lock,
        # which the refused handler gives up at once, not after 5 s.
        started = time.monotonic()
        put(app.engine, event("customer.updated"))
        ingest_took.append(time.monotonic() - started)

    ingester = threading.Thread(target=ingest)

    @app.on("checkout.session.completed")
    def handler(event: ReceivedEvent) -> None:
        # Reads through another connection are fine (WAL): no lock taken.
        assert Mirror(app.engine).customer_link("nobody") is None
        ingester.start()
        started = time.monotonic()
        try:
            write()
        except BaseException as exc:
            errors.append(exc)
            raise
        finally:
            timings.append(time.monotonic() - started)

    body = checkout_completed("user-4", "cus_4")
    put(app.engine, body)
    try:
        Worker(app, listen=False).run_once()
        ingester.join(10)
    finally:
        app.dispose()
    assert ingest_took and ingest_took[0] < 1.0, ingest_took
    assert len(errors) == 1
    assert isinstance(errors[0], SecondWriteTransaction)
    assert isinstance(errors[0], StripelineError)
    assert "event.mirror" in str(errors[0]) and "event.session" in str(errors[0])
    assert timings[0] < 0.1, f"refused after {timings[0]:.3f} s, not at once"
    app = Stripeline(settings, engine=make_engine(sqlite_url))
    try:
        row = event_row(app, body["id"])
        assert row.status == "failed" and row.attempts == 1  # retried later
        (attempt,) = attempts(app, body["id"])
        assert attempt.outcome != "processed"
        assert attempt.error is not None and "SecondWriteTransaction" in attempt.error
        assert "event.mirror" in attempt.error
        assert links(app) == []
    finally:
        app.dispose()


def test_second_write_from_an_async_handler_fails_fast_on_sqlite(sqlite_url: str) -> None:
    """Async handlers run in the handler thread's loop, the mirror's async
    twins in another thread: the refusal follows into both."""
    settings = Settings(
        stripe_webhook_secret=SECRET,  # type: ignore[arg-type]
        database_url=sqlite_url,
    )
    app = Stripeline(settings, engine=make_engine(sqlite_url))
    timings: list[float] = []

    @app.on("checkout.session.completed")
    async def handler(event: ReceivedEvent) -> None:
        started = time.monotonic()
        try:
            await Mirror(app.engine).link_customer_async("u", "c")
        finally:
            timings.append(time.monotonic() - started)

    body = checkout_completed("user-5", "cus_5")
    put(app.engine, body)
    try:
        Worker(app, listen=False).run_once()
        row = event_row(app, body["id"])
        (attempt,) = attempts(app, body["id"])
    finally:
        app.dispose()
    assert timings[0] < 0.1
    assert row.status == "failed"
    assert attempt.error is not None and attempt.error.startswith("SecondWriteTransaction")


def test_outside_handlers_the_engine_still_writes(sqlite_url: str) -> None:
    """The refusal is only while a handler runs: afterwards, and in other
    threads (the web app's ingest), writes go through as before."""
    settings = Settings(stripe_webhook_secret=SECRET, database_url=sqlite_url)  # type: ignore[arg-type]
    app = Stripeline(settings, engine=make_engine(sqlite_url))
    other_thread: list[bool] = []
    in_handler = threading.Event()
    release = threading.Event()

    @app.on("customer.updated")
    def handler(event: ReceivedEvent) -> None:
        in_handler.set()
        release.wait(5)

    put(app.engine, event("customer.updated"))
    worker_thread = threading.Thread(target=Worker(app, listen=False).run_once)
    worker_thread.start()
    try:
        assert in_handler.wait(5)

        def ingest() -> None:
            # Waits for the event's lock (another thread, not a handler): not refused.
            put(app.engine, event("customer.updated"))
            other_thread.append(True)

        ingester = threading.Thread(target=ingest)
        ingester.start()
        time.sleep(0.2)
        release.set()
        ingester.join(10)
        worker_thread.join(10)
        assert other_thread == [True]
        assert app.once("after") is True
        assert Mirror(app.engine).link_customer("u", "c").customer_id == "c"
    finally:
        release.set()
        app.dispose()


@pytest.mark.postgres
def test_postgres_allows_a_second_transaction(postgres_url: str) -> None:
    """PostgreSQL: a second transaction does not wait for the event's; it is
    allowed, and commits on its own (not with the event)."""
    settings = Settings(stripe_webhook_secret=SECRET, database_url=postgres_url)  # type: ignore[arg-type]
    app = Stripeline(settings, engine=make_engine(postgres_url))

    @app.on("checkout.session.completed")
    def handler(event: ReceivedEvent) -> None:
        Mirror(app.engine).link_customer("user-6", "cus_6")
        raise RuntimeError("the event fails; the separate link stays")

    body = checkout_completed("user-6", "cus_6")
    put(app.engine, body)
    try:
        Worker(app, listen=False).run_once()
        assert event_row(app, body["id"]).status == "failed"
        assert links(app) == [("user-6", "cus_6")]
    finally:
        app.dispose()
