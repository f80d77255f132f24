"""Prometheus metrics, one registry per application (tests build many)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from stripeline import inbox
from stripeline.db.engine import connect
from stripeline.db.models import Dispute
from stripeline.sync.cursors import catch_up_gap

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

#: Outcomes of a webhook request, the label of ``stripeline_webhooks_total``.
OUTCOMES = (
    "stored",
    "duplicate",
    "ignored",
    "bad_signature",
    "bad_payload",
    "too_large",
    "too_slow",
    "disconnected",
    "unavailable",
)

#: Dispute statuses that still take evidence, and the windows of
#: ``stripeline_disputes_due`` (label ``within``: hours).
_OPEN_DISPUTES = ("needs_response", "warning_needs_response")
_DUE_WINDOWS = {"24h": 24 * 3600, "72h": 72 * 3600}

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _QueueCollector(Collector):
    """Queue depth by status and the oldest pending age, read at scrape time."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "stripeline_queue_depth", "Events in the inbox by status.", labels=["status"]
        )
        oldest = GaugeMetricFamily(
            "stripeline_oldest_pending_age_seconds",
            "Age of the longest-waiting unprocessed event (0 when none).",
        )
        up = GaugeMetricFamily("stripeline_database_up", "1 when the inbox could be read.")
        gap_gauge = GaugeMetricFamily(
            "stripeline_catch_up_gap_seconds",
            "Seconds since the moment up to which catch-up has seen every event "
            "(alarm near Stripe's 30-day event retention).",
        )
        due_gauge = GaugeMetricFamily(
            "stripeline_disputes_due",
            "Open disputes whose evidence is due within the window (label within: 24h, 72h).",
            labels=["within"],
        )
        try:
            with connect(self._engine, readonly=True) as conn:
                counts = inbox.queue_depth(conn)
                first = inbox.oldest_pending(conn)
                now = datetime.now(UTC)
                gap = catch_up_gap(conn, now)
                due = {
                    name: _disputes_due(conn, now, seconds)
                    for name, seconds in _DUE_WINDOWS.items()
                }
        except Exception:
            up.add_metric([], 0)
            yield up
            return
        for status, count in counts.items():
            depth.add_metric([status], count)
        oldest.add_metric([], max(0.0, time.time() - first.timestamp()) if first else 0.0)
        up.add_metric([], 1)
        yield depth
        yield oldest
        yield up
        for name, count in due.items():
            due_gauge.add_metric([name], count)
        yield due_gauge
        if gap is not None:
            gap_gauge.add_metric([], gap)
            yield gap_gauge


def _disputes_due(conn: Connection, now: datetime, seconds: int) -> int:
    """Open disputes (every account) due after ``now`` and within ``seconds``."""
    table = Dispute.__table__
    query = (
        select(func.count())
        .select_from(table)
        .where(
            table.c.deleted.is_(False),
            table.c.status.in_(_OPEN_DISPUTES),
            table.c.due_by > now,
            table.c.due_by <= now + timedelta(seconds=seconds),
        )
    )
    return int(conn.execute(query).scalar_one())


class Metrics:
    """The instruments the web app and the worker update."""

    def __init__(self, engine: Engine | None = None) -> None:
        self.registry = CollectorRegistry()
        self.webhooks = Counter(
            "stripeline_webhooks",
            "Webhook requests by endpoint and outcome.",
            ["endpoint", "outcome"],
            registry=self.registry,
        )
        self.ingest_seconds = Histogram(
            "stripeline_webhook_ingest_seconds",
            "Time from request to stored event (2xx answered).",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.processing_seconds = Histogram(
            "stripeline_event_processing_seconds",
            "Time to apply one event to the mirror and run its handlers.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.processed = Counter(
            "stripeline_events_processed",
            "Events processed, by event type.",
            ["type"],
            registry=self.registry,
        )
        self.failures = Counter(
            "stripeline_event_failures",
            "Failed processing attempts, by event type.",
            ["type"],
            registry=self.registry,
        )
        self.stripe_calls = Counter(
            "stripeline_stripe_calls",
            "Writes to the Stripe API by the flows, by action and outcome "
            "(done, refused, retryable, key_refused).",
            ["action", "outcome"],
            registry=self.registry,
        )
        self.stripe_call_seconds = Histogram(
            "stripeline_stripe_call_seconds",
            "Time of each write to the Stripe API (the SDK's retries included).",
            ["action"],
            registry=self.registry,
        )
        self.health_alarms = Counter(
            "stripeline_delivery_health_alarms",
            "Stripe's v2.core.health.* events received (event delivery failing or "
            "resolved), by event type; each counted once.",
            ["type"],
            registry=self.registry,
        )
        if engine is not None:
            self.registry.register(_QueueCollector(engine))
