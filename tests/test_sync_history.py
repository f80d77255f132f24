"""What the sync jobs leave for people to read (``sync.history``): catch-up
runs in a bounded ring (a failed run with its error), backfill progress per
type across a resumed run, verify reports in the audit log."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import stripe
from sqlalchemy import Engine, func, select

from stripeline.db import connect
from stripeline.db.models import ConsoleAudit, Cursor
from stripeline.errors import StripeAPIError
from stripeline.gateway import Reader
from stripeline.sync import backfill, catch_up, check_drift, history
from stripeline_sandbox import Sandbox


@pytest.fixture
def http_client() -> Iterator[stripe.RequestsClient]:
    client = stripe.RequestsClient(timeout=10)
    yield client
    client.close()  # type: ignore[no-untyped-call]


def reader_for(sandbox: Sandbox, key: str, http_client: stripe.HTTPClient) -> Reader:
    client = stripe.StripeClient(
        key, base_addresses={"api": sandbox.url}, http_client=http_client, max_network_retries=0
    )
    return Reader(client, reads_per_second=1000)


def test_the_catch_up_history_keeps_the_newest_runs_only(engine: Engine) -> None:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    with connect(engine) as conn:
        for n in range(history.HISTORY_SIZE + 5):
            moment = start + timedelta(minutes=n)
            history.record_catch_up(
                conn, started_at=moment, now=moment + timedelta(seconds=2), seen=n, inserted=n
            )
    with connect(engine, readonly=True) as conn:
        runs = history.catch_up_history(conn)
        rows = conn.execute(select(func.count()).select_from(Cursor.__table__)).scalar_one()
    assert len(runs) == history.HISTORY_SIZE
    assert [r.seen for r in runs] == list(range(history.HISTORY_SIZE + 4, 4, -1))  # newest first
    assert rows == history.HISTORY_SIZE + 1  # the ring and its counter


def test_a_failed_catch_up_is_recorded_with_its_error_and_progress(engine: Engine) -> None:
    with Sandbox() as sandbox:
        client = stripe.StripeClient(
            sandbox.secret_key, base_addresses={"api": sandbox.url}, max_network_retries=0
        )
        reader = Reader(client, reads_per_second=1000, max_attempts=1)
        client.v1.customers.create({"email": "first@example.com"})
        catch_up(engine, reader, mode="test", page_size=2)
        for n in range(6):
            client.v1.customers.create({"email": f"h{n}@example.com"})
        sandbox.set_rate_limit(2)  # two reads pass, the third is refused
        with pytest.raises(StripeAPIError):
            catch_up(engine, reader, mode="test", page_size=2)
    with connect(engine, readonly=True) as conn:
        failed, complete = history.catch_up_history(conn)
    assert complete.error is None and complete.inserted == 1
    assert failed.error is not None and failed.error.startswith("StripeRateLimitError")
    assert failed.seen == failed.inserted == 4  # the two pages stored before it failed


def test_a_complete_catch_up_is_recorded(
    engine: Engine, stripe_sandbox: Sandbox, stripe_key: str, http_client: stripe.HTTPClient
) -> None:
    reader = reader_for(stripe_sandbox, stripe_key, http_client)
    reader.client.v1.customers.create({"email": "history@example.com"})
    result = catch_up(engine, reader, mode="test")
    with connect(engine, readonly=True) as conn:
        (run,) = history.catch_up_history(conn)
    assert run.error is None and run.seen == result.seen >= 1
    assert run.inserted == result.inserted and run.pages == result.pages


def test_backfill_progress_adds_up_over_a_resumed_run(
    engine: Engine, stripe_sandbox: Sandbox, stripe_key: str, http_client: stripe.HTTPClient
) -> None:
    reader = reader_for(stripe_sandbox, stripe_key, http_client)
    for n in range(5):
        reader.client.v1.customers.create({"email": f"b{n}@example.com"})
    stopped_after: list[int] = []

    def stop_after_two_pages(progress: object) -> None:
        stopped_after.append(1)
        if len(stopped_after) == 2:
            stop.set()

    stop = threading.Event()
    first = backfill(
        engine, reader, ["customer"], page_size=2, on_page=stop_after_two_pages, stop=stop
    )
    assert not first.complete
    with connect(engine, readonly=True) as conn:
        midway = history.backfill_progress(conn)
    assert midway is not None
    (customer,) = midway.types
    assert customer.state == "in progress" and customer.objects == 4 and customer.pages == 2
    assert backfill(engine, reader, ["customer"], page_size=2).complete
    with connect(engine, readonly=True) as conn:
        done = history.backfill_progress(conn)
    assert done is not None and done.run == midway.run
    (customer,) = done.types
    assert customer.state == "finished" and customer.objects >= 5 and done.finished == 1


def test_each_verify_report_is_kept_in_the_audit_log(
    engine: Engine, stripe_sandbox: Sandbox, stripe_key: str, http_client: stripe.HTTPClient
) -> None:
    reader = reader_for(stripe_sandbox, stripe_key, http_client)
    with connect(engine, readonly=True) as conn:
        assert history.last_verify_report(conn) is None
    customer = reader.client.v1.customers.create({"email": "drift@example.com"}).id
    report = check_drift(engine, reader, ["customer"], actor="nightly")
    with connect(engine, readonly=True) as conn:
        kept = history.last_verify_report(conn)
        count = conn.execute(select(func.count()).select_from(ConsoleAudit.__table__)).scalar()
    assert kept is not None and kept.actor == "nightly" and count == 1
    assert kept.report["drift"] == len(report.drift) >= 1
    assert {"type": "customer", "id": customer, "kind": "missing"}.items() <= next(
        d for d in kept.drift if d["id"] == customer
    ).items()
    limit = history.REPORT_DRIFT_LIMIT
    assert [d["id"] for d in kept.unrepaired] == [d.id for d in report.drift][:limit]
