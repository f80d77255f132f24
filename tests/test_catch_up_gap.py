"""The catch-up gap: recorded by each complete catch-up, exposed as
``stripeline_catch_up_gap_seconds``, and an alarm near Stripe's 30-day retention."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import stripe
from prometheus_client import generate_latest
from sqlalchemy import Engine
from structlog.testing import capture_logs

from stripeline.db import connect
from stripeline.gateway import Reader
from stripeline.metrics import Metrics
from stripeline.sync import catch_up, catch_up_gap, run_catch_up_forever
from stripeline.sync.catch_up import check_gap
from stripeline.sync.cursors import COVERED_CURSOR, read_cursor


def test_catch_up_records_coverage_and_the_gap_alarm_fires_near_retention(
    stripe_client: stripe.StripeClient, engine: Engine
) -> None:
    with capture_logs() as logs:
        assert check_gap(engine) is None  # never ran: no gap known, no alarm
    assert not [log for log in logs if log.get("action") == "catch_up_gap_alarm"]
    started = datetime.now(UTC)

    catch_up(engine, Reader(stripe_client, reads_per_second=1000), mode="test")

    with connect(engine, readonly=True) as conn:
        covered = read_cursor(conn, COVERED_CURSOR)
        gap = catch_up_gap(conn, datetime.now(UTC))
    assert covered is not None and covered.created is not None
    assert abs(covered.created - started.timestamp()) <= 2
    assert gap is not None and gap < 5
    scraped = generate_latest(Metrics(engine).registry).decode()
    assert "stripeline_catch_up_gap_seconds" in scraped

    with capture_logs() as logs:
        check_gap(engine, now=started + timedelta(days=20))
        late = check_gap(engine, now=started + timedelta(days=26))
    alarms = [log for log in logs if log.get("action") == "catch_up_gap_alarm"]
    assert len(alarms) == 1 and alarms[0]["log_level"] == "error"
    assert alarms[0]["gap_days"] >= 26 and late is not None and late >= 26 * 86400


def test_the_serve_loop_checks_the_gap_after_each_catch_up(
    stripe_client: stripe.StripeClient, engine: Engine
) -> None:
    stop = threading.Event()
    with capture_logs() as logs:
        thread = threading.Thread(
            target=run_catch_up_forever,
            args=(engine, Reader(stripe_client, reads_per_second=1000)),
            kwargs={"mode": "test", "stop": stop, "interval": 0.05},
        )
        thread.start()
        try:
            deadline = datetime.now(UTC) + timedelta(seconds=5)
            while datetime.now(UTC) < deadline:
                with connect(engine, readonly=True) as conn:
                    if read_cursor(conn, COVERED_CURSOR) is not None:
                        break
        finally:
            stop.set()
            thread.join(5)
    assert not thread.is_alive()
    assert not [log for log in logs if log.get("action") == "catch_up_gap_alarm"]
    with connect(engine, readonly=True) as conn:
        assert read_cursor(conn, COVERED_CURSOR) is not None
