"""Thin events from Event Destinations, end to end through the sandbox: signed
deliveries on the webhook route, one inbox row per change, the object read
once per coalescing window, the mirror as a snapshot destination keeps it."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe
from pydantic import SecretStr
from sqlalchemy import func, select
from structlog.testing import capture_logs

from stripeline.app import ReceivedEvent, Stripeline
from stripeline.core.envelope import parse_envelope
from stripeline.db import connect
from stripeline.db.models import Attempt, Event
from stripeline.gateway import StripeFetcher
from stripeline.mirror import refetch
from stripeline.mirror._store import get_object
from stripeline.settings import Settings
from stripeline.testing.delivery import DEFAULT_WEBHOOK_PATH
from stripeline.testing.env import _ServedApp
from stripeline.web import create_app
from stripeline.worker import Worker
from stripeline_sandbox import Sandbox

WINDOW = 0.4


class Served:
    """A ``Stripeline`` app on ``database_url``, its webhook route served."""

    def __init__(
        self,
        sandbox: Sandbox,
        key: str,
        database_url: str,
        thin_secret: str,
        *,
        sdk_retries: int = 2,
        window: float = WINDOW,
    ) -> None:
        settings = Settings(
            stripe_secret_key=SecretStr(key),
            stripe_webhook_secret=SecretStr(sandbox.webhook_secret),
            stripe_thin_webhook_secret=SecretStr(thin_secret),
            stripe_api_base=sandbox.url,
            database_url=database_url,
            mirror_coalesce_seconds=window,
            retry_schedule=(0,),
            max_attempts=3,
        )
        # The app's reads through the SDK, with ``sdk_retries`` retries of its own.
        fetcher = StripeFetcher(
            stripe.StripeClient(
                key,
                base_addresses={"api": sandbox.url},
                max_network_retries=sdk_retries,
            ),
            reads_per_second=settings.reads_per_second,
        )
        self.app = Stripeline(settings, fetcher=fetcher)
        self.seen: list[tuple[str, str, str | None]] = []

        @self.app.on("v1.customer.updated")
        def thin_name(event: ReceivedEvent) -> None:
            self.seen.append(
                ("v1.customer.updated", event.id, event.data["data"]["object"].get("name"))
            )

        @self.app.on("customer.updated")
        def snapshot_name(event: ReceivedEvent) -> None:
            self.seen.append(
                ("customer.updated", event.id, event.data["data"]["object"].get("name"))
            )

        self._served = _ServedApp(create_app(self.app))
        self.url = self._served.url + DEFAULT_WEBHOOK_PATH

    def settle(self, expected: int, timeout: float = 10.0) -> None:
        """Wait for ``expected`` inbox rows, then process until all are processed."""
        deadline = time.monotonic() + timeout
        worker = Worker(self.app, listen=False)
        while time.monotonic() < deadline:
            worker.drain()
            with connect(self.app.engine, readonly=True) as conn:
                statuses = list(conn.scalars(select(Event.status)))
                reads_due = refetch.pending(conn)
            if (
                len(statuses) >= expected
                and all(s == "processed" for s in statuses)
                and reads_due == 0
            ):
                return
            time.sleep(0.05)
        raise AssertionError(f"not settled: {statuses}")

    def rows(self) -> list[Any]:
        with connect(self.app.engine, readonly=True) as conn:
            return list(conn.execute(select(Event.id, Event.type, Event.deliveries, Event.status)))

    def mirrored(self, object_id: str) -> dict[str, Any] | None:
        with connect(self.app.engine, readonly=True) as conn:
            return get_object(conn, object_id)

    def close(self) -> None:
        self._served.close()
        self.app.dispose()


@pytest.fixture
def served(stripe_sandbox: Sandbox, stripe_key: str) -> Iterator[list[Served]]:
    made: list[Served] = []
    yield made
    for item in made:
        item.close()


def _sqlite(template: Path, tmp_path: Path, name: str) -> str:
    """A second migrated SQLite database (a copy of the session's template)."""
    path = tmp_path / name
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"


def _gets(log: list[tuple[str, str, str | None]], since: int = 0) -> dict[str, int]:
    """The GETs of objects in the sandbox's request log (from position ``since``), per path."""
    counts: dict[str, int] = {}
    for method, path, _ in log[since:]:
        if method == "GET" and path.count("/") >= 3 and not path.startswith("/v2/core/events"):
            counts[path] = counts.get(path, 0) + 1
    return counts


def test_envelope_reads_a_thin_event_as_its_snapshot_change() -> None:
    body = {
        "id": "evt_test_thin1",
        "object": "v2.core.event",
        "type": "v1.customer.updated",
        "created": "2026-11-27T10:00:00.000Z",
        "livemode": False,
        "context": "acct_123",
        "related_object": {"id": "cus_1", "type": "customer", "url": "/v1/customers/cus_1"},
        "snapshot_event": "evt_1snap",
    }
    envelope, _ = parse_envelope(json.dumps(body).encode())
    assert envelope.thin and envelope.id == "evt_1snap" and envelope.type == "customer.updated"
    assert envelope.account == "acct_123" and envelope.object_id == "cus_1"
    assert envelope.created == 1795773600
    health = dict(body, type="v2.core.health.event_generation_failure.resolved")
    del health["snapshot_event"], health["related_object"]
    envelope, _ = parse_envelope(json.dumps(health).encode())
    assert envelope.id == "evt_test_thin1" and envelope.type == health["type"]
    assert envelope.object_id is None


def _scenario(client: stripe.StripeClient) -> list[str]:
    """Customers and a payment; returns the ids of the objects touched."""
    customer = client.v1.customers.create({"email": "thin@example.com"})
    client.v1.customers.update(customer.id, {"name": "One"})
    client.v1.customers.update(customer.id, {"name": "Two", "metadata": {"k": "v"}})
    other = client.v1.customers.create({"email": "other@example.com", "name": "Other"})
    intent = client.v1.payment_intents.create(
        {
            "amount": 1200,
            "currency": "usd",
            "customer": customer.id,
            "payment_method": "pm_card_visa",
            "confirm": True,
            "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
        }
    )
    # A subscription through a test clock: trial, then a paid renewal.
    start = 1_800_000_000
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": start})
    subscriber = client.v1.customers.create(
        {
            "email": "sub@example.com",
            "test_clock": clock.id,
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        }
    )
    price = client.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount": 900,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Thin plan"},
        }
    )
    subscription = client.v1.subscriptions.create(
        {"customer": subscriber.id, "items": [{"price": price.id}], "trial_period_days": 3}
    )
    client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": start + 4 * 86400})
    latest = client.v1.subscriptions.retrieve(subscription.id).latest_invoice
    return [customer.id, other.id, intent.id, subscriber.id, subscription.id, str(latest)]


def test_thin_destination_keeps_the_mirror_a_snapshot_destination_keeps(
    stripe_sandbox: Sandbox,
    stripe_key: str,
    stripe_client: stripe.StripeClient,
    database_url: str,
    sqlite_template: Path,
    tmp_path: Path,
    served: list[Served],
) -> None:
    snapshot = Served(
        stripe_sandbox,
        stripe_key,
        _sqlite(sqlite_template, tmp_path, "snapshot.db"),
        "whsec_unused00",
    )
    served.append(snapshot)
    thin_id, thin_secret = stripe_sandbox.add_event_destination(
        "http://127.0.0.1:9/none", ["*"], payload="thin", key=stripe_key
    )
    thin = Served(stripe_sandbox, stripe_key, database_url, thin_secret)
    served.append(thin)
    stripe_client.v2.core.event_destinations.update(
        thin_id, {"webhook_endpoint": {"url": thin.url}}
    )
    stripe_sandbox.listen(snapshot.url, key=stripe_key)

    ids = _scenario(stripe_client)
    events = stripe_sandbox.event_ids(key=stripe_key)
    assert stripe_sandbox.wait_for_deliveries(10)
    snapshot.settle(len(events))
    since = len(stripe_sandbox.request_log(stripe_key))  # the thin app reads from here on
    thin.settle(len(events))
    gets = _gets(stripe_sandbox.request_log(stripe_key), since)

    # One inbox row per change on both sides, under the same (snapshot) ids.
    assert (
        sorted(r.id for r in thin.rows()) == sorted(events) == sorted(r.id for r in snapshot.rows())
    )
    diffs = {}
    for object_id in ids:
        a, b = thin.mirrored(object_id) or {}, snapshot.mirrored(object_id) or {}
        diff = {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)}
        if diff:
            diffs[object_id] = diff
    # Stripe moves a customer's next_invoice_sequence without a customer event:
    # the snapshot mirror keeps the last event's value, the thin one read it
    # later (Stripe's current value). Nothing else differs.
    subscriber = ids[3]
    if subscriber in diffs:
        current = stripe_client.v1.customers.retrieve(subscriber).next_invoice_sequence
        assert diffs[subscriber].get("next_invoice_sequence", (None,))[0] == current
        del diffs[subscriber]["next_invoice_sequence"]
    assert not any(diffs.values()), diffs
    assert thin.mirrored(ids[0])["name"] == "Two"  # type: ignore[index]
    # The burst about each object cost one read (all arrived within the window):
    # the sandbox saw one GET of each object the thin events named, and no other.
    with connect(thin.app.engine, readonly=True) as conn:
        payloads = list(conn.scalars(select(Event.payload)))
    named = {json.loads(p)["related_object"]["url"] for p in payloads}
    assert {"/v1/customers/" + ids[0], "/v1/payment_intents/" + ids[2]} <= named
    assert gets == dict.fromkeys(named, 1), gets
    # Handlers under either name ran for each customer.updated, with the object read.
    updates = [s for s in thin.seen if s[0] == "customer.updated"]
    assert len(updates) == 2 and all(name == "Two" for _, _, name in updates)
    assert sorted(s[1] for s in thin.seen if s[0] == "v1.customer.updated") == sorted(
        s[1] for s in updates
    )


@pytest.mark.parametrize(
    ("shown", "order"),
    [("pushed", "together"), ("pulled", "together"), ("pulled", "thin_first")],
)
def test_both_destinations_at_once_apply_each_change_once(
    stripe_sandbox: Sandbox,
    stripe_key: str,
    stripe_client: stripe.StripeClient,
    database_url: str,
    served: list[Served],
    shown: str,
    order: str,
) -> None:
    """A snapshot endpoint and a thin destination for the same changes: one
    inbox row per change, two deliveries, handlers once. ``shown``: the thin
    events name their snapshot event when pushed, or only when read from
    ``/v2/core/events/{id}`` (the worker reads it, and stores the thin event
    under that id). ``order``: the two deliveries together, or every thin
    event processed before the snapshot events arrive."""
    stripe_sandbox.set_thin_events(snapshot_event=shown, key=stripe_key)
    thin_id, thin_secret = stripe_sandbox.add_event_destination(
        "http://127.0.0.1:9/none", ["v1.customer.created", "v1.customer.updated"], key=stripe_key
    )
    app = Served(stripe_sandbox, stripe_key, database_url, thin_secret)
    served.append(app)
    stripe_client.v2.core.event_destinations.update(thin_id, {"webhook_endpoint": {"url": app.url}})
    if order == "together":
        stripe_sandbox.listen(app.url, ["customer.created", "customer.updated"], key=stripe_key)
    since = len(stripe_sandbox.request_log(stripe_key))
    customer = stripe_client.v1.customers.create({"email": "both@example.com"})
    stripe_client.v1.customers.update(customer.id, {"name": "Both"})
    assert stripe_sandbox.wait_for_deliveries(10)
    snapshots = stripe_sandbox.event_ids(key=stripe_key)[-2:]
    app.settle(2)
    if order == "thin_first":
        # The snapshot deliveries arrive late, after the thin ones were applied.
        from stripeline_sandbox._signature import sign

        for event_id in snapshots:
            body = httpx.get(
                f"{stripe_sandbox.url}/v1/events/{event_id}",
                headers={"Authorization": f"Bearer {stripe_key}"},
            ).content
            signature = sign(body, stripe_sandbox.webhook_secret, int(time.time()))
            answer = httpx.post(app.url, content=body, headers={"Stripe-Signature": signature})
            assert answer.status_code == 200
        app.settle(2)
    rows = app.rows()
    assert sorted(r.id for r in rows) == sorted(snapshots)
    assert all(r.deliveries == 2 and r.status == "processed" for r in rows), rows
    # customer.updated's handlers ran once each, whichever delivery came first.
    assert sorted(s[0] for s in app.seen) == ["customer.updated", "v1.customer.updated"]
    assert len({s[1] for s in app.seen}) == 1
    assert app.mirrored(customer.id)["name"] == "Both"  # type: ignore[index]
    reads = [path for method, path, _ in stripe_sandbox.request_log(stripe_key)[since:]]
    # The full thin events were read only when they did not name their snapshot event.
    thin_reads = [p for p in reads if p.startswith("/v2/core/events/")]
    assert len(thin_reads) == (2 if shown == "pulled" else 0), reads
    with connect(app.app.engine, readonly=True) as conn:
        assert (
            conn.scalar(
                select(func.count()).select_from(Attempt).where(Attempt.event_id.not_in(snapshots))
            )
            == 0
        )


def test_a_thin_event_that_never_names_its_snapshot_event_is_applied_under_its_own_id(
    stripe_sandbox: Sandbox,
    stripe_key: str,
    stripe_client: stripe.StripeClient,
    database_url: str,
    served: list[Served],
) -> None:
    """Neither the notification nor the full event names the snapshot event:
    the thin event is one change of its own (logged), the mirror as right."""
    stripe_sandbox.set_thin_events(snapshot_event="none", key=stripe_key)
    thin_id, thin_secret = stripe_sandbox.add_event_destination(
        "http://127.0.0.1:9/none", ["v1.customer.created"], key=stripe_key
    )
    app = Served(stripe_sandbox, stripe_key, database_url, thin_secret)
    served.append(app)
    stripe_client.v2.core.event_destinations.update(thin_id, {"webhook_endpoint": {"url": app.url}})
    customer = stripe_client.v1.customers.create({"email": "unnamed@example.com"})
    assert stripe_sandbox.wait_for_deliveries(10)
    (thin_event,) = stripe_client.v2.core.events.list({"object_id": customer.id}).data
    # And one whose full event Stripe no longer has (404: kept 30 days).
    from stripeline_sandbox._signature import sign

    expired = json.dumps(
        {
            "id": "evt_test_expired1",
            "object": "v2.core.event",
            "type": "v1.customer.updated",
            "created": "2026-11-27T10:00:00.000Z",
            "livemode": False,
            "context": None,
            "related_object": {
                "id": customer.id,
                "type": "customer",
                "url": f"/v1/customers/{customer.id}",
            },
        }
    ).encode()
    signature = sign(expired, thin_secret, int(time.time()))
    assert httpx.post(app.url, content=expired, headers={"Stripe-Signature": signature}).is_success
    with capture_logs() as logs:
        app.settle(2)
    assert sorted((r.id, r.type, r.status) for r in app.rows()) == sorted(
        [
            ("evt_test_expired1", "customer.updated", "processed"),
            (thin_event.id, "customer.created", "processed"),
        ]
    )
    assert sorted(
        e["event_id"] for e in logs if e.get("action") == "thin_event_without_snapshot_event"
    ) == sorted([thin_event.id, "evt_test_expired1"])
    assert app.mirrored(customer.id)["email"] == "unnamed@example.com"  # type: ignore[index]


def test_a_fetch_failing_with_429_and_500_is_applied_after_retries(
    stripe_sandbox: Sandbox,
    stripe_key: str,
    stripe_client: stripe.StripeClient,
    database_url: str,
    served: list[Served],
) -> None:
    thin_id, thin_secret = stripe_sandbox.add_event_destination(
        "http://127.0.0.1:9/none", ["v1.customer.created"], key=stripe_key
    )
    # No SDK retry: each failed read reaches stripeline's own retries.
    app = Served(stripe_sandbox, stripe_key, database_url, thin_secret, sdk_retries=0)
    served.append(app)
    stripe_client.v2.core.event_destinations.update(thin_id, {"webhook_endpoint": {"url": app.url}})
    stripe_sandbox.inject_fault(
        "rate_limit", path="^/v1/customers/", method="GET", count=2, key=stripe_key
    )
    stripe_sandbox.inject_fault(
        "api_error", path="^/v1/customers/", method="GET", count=3, key=stripe_key
    )
    customer = stripe_client.v1.customers.create({"email": "retry@example.com"})
    assert stripe_sandbox.wait_for_deliveries(10)
    since = len(stripe_sandbox.request_log(stripe_key))
    app.settle(1)
    # Two 429s, three 500s, then the read that answered.
    assert _gets(stripe_sandbox.request_log(stripe_key), since) == {
        f"/v1/customers/{customer.id}": 6
    }
    assert app.mirrored(customer.id)["email"] == "retry@example.com"  # type: ignore[index]
    with connect(app.app.engine, readonly=True) as conn:
        outcomes = list(conn.scalars(select(Attempt.outcome).order_by(Attempt.id)))
    # More failed reads than max_attempts: retried, never dead-lettered.
    assert outcomes.count("fetch_failed") >= 3 and outcomes[-1] == "processed", outcomes


def test_a_gone_object_is_applied_as_deleted_and_recorded(
    stripe_sandbox: Sandbox,
    stripe_key: str,
    stripe_client: stripe.StripeClient,
    database_url: str,
    served: list[Served],
) -> None:
    thin_id, thin_secret = stripe_sandbox.add_event_destination(
        "http://127.0.0.1:9/none", ["v1.product.created"], key=stripe_key
    )
    app = Served(stripe_sandbox, stripe_key, database_url, thin_secret)
    served.append(app)
    stripe_client.v2.core.event_destinations.update(thin_id, {"webhook_endpoint": {"url": app.url}})
    product = stripe_client.v1.products.create({"name": "Brief"})
    stripe_client.v1.products.delete(product.id)
    assert stripe_sandbox.wait_for_deliveries(10)
    since = len(stripe_sandbox.request_log(stripe_key))
    app.settle(1)
    # One read, answered 404: not tried again.
    assert _gets(stripe_sandbox.request_log(stripe_key), since) == {f"/v1/products/{product.id}": 1}
    with connect(app.app.engine, readonly=True) as conn:
        outcomes = list(conn.scalars(select(Attempt.outcome).order_by(Attempt.id)))
    assert outcomes == ["object_gone", "processed"], outcomes
    assert app.mirrored(product.id) == {"id": product.id, "object": "product", "deleted": True}


def test_a_thin_event_with_a_wrong_signature_is_refused(
    stripe_sandbox: Sandbox, stripe_key: str, database_url: str, served: list[Served]
) -> None:
    from stripeline_sandbox._signature import sign

    app = Served(stripe_sandbox, stripe_key, database_url, "whsec_configured0")
    served.append(app)
    body = json.dumps(
        {
            "id": "evt_test_x",
            "object": "v2.core.event",
            "type": "v2.core.health.event_generation_failure.resolved",
            "created": "2026-11-27T10:00:00.000Z",
            "livemode": False,
        }
    ).encode()

    bad = httpx.post(
        app.url,
        content=body,
        headers={"Stripe-Signature": sign(body, "whsec_other", int(time.time()))},
    )
    good = httpx.post(
        app.url,
        content=body,
        headers={"Stripe-Signature": sign(body, "whsec_configured0", int(time.time()))},
    )
    assert bad.status_code == 400 and good.status_code == 200
    assert [r.id for r in app.rows()] == ["evt_test_x"]


def test_a_health_event_fires_the_alarm_once(
    stripe_sandbox: Sandbox,
    stripe_key: str,
    stripe_client: stripe.StripeClient,
    database_url: str,
    served: list[Served],
) -> None:
    from stripeline import inbox
    from stripeline.commands.doctor import check_delivery_health

    failing = "v2.core.health.event_generation_failure.firing"
    resolved = "v2.core.health.event_generation_failure.resolved"
    _, thin_secret = stripe_sandbox.add_event_destination(
        "http://127.0.0.1:9/none", [failing, resolved], key=stripe_key
    )
    app = Served(stripe_sandbox, stripe_key, database_url, thin_secret)
    served.append(app)
    stripe_client.v2.core.event_destinations.update(
        stripe_client.v2.core.event_destinations.list().data[0].id,
        {"webhook_endpoint": {"url": app.url}},
    )
    hooked: list[Any] = []
    app.app.on("v2.core.health.*")(lambda event: hooked.append(event.data))
    event_id = stripe_sandbox.emit_thin_event(
        failing, data={"impact": {"event_type": "customer.updated"}}, key=stripe_key
    )
    assert stripe_sandbox.wait_for_deliveries(10)
    with capture_logs() as logs:
        app.settle(1)
        assert check_delivery_health(app.app.engine).ok is False
        # Replayed: the handlers (the hook) run again, the alarm does not fire again.
        with connect(app.app.engine) as conn:
            assert inbox.replay(conn, event_id)
        app.settle(1)
    alarms = app.app.metrics.health_alarms.labels(failing)._value.get()
    assert alarms == 1
    fired = [e for e in logs if e.get("action") == "delivery_health_alarm"]
    assert len(fired) == 1 and fired[0]["log_level"] == "error"
    # The hook saw the full event, read from /v2/core/events/{id}.
    assert len(hooked) == 2 and hooked[0]["id"] == event_id
    assert hooked[0]["data"] == {"impact": {"event_type": "customer.updated"}}
    stripe_sandbox.emit_thin_event(resolved, key=stripe_key)
    assert stripe_sandbox.wait_for_deliveries(10)
    app.settle(2)
    assert check_delivery_health(app.app.engine).ok is True


def test_the_docs_handler_example_runs() -> None:
    """docs/thin-events.md's example of handlers under both names, as written."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "thin-events.md").read_text()
    blocks = text.split("```python\n")[1:]
    example = next(b.split("```", 1)[0] for b in blocks if "handlers_for" in b)
    exec(compile(example, "thin-events.md", "exec"), {})  # noqa: S102 - our own doc


def test_an_event_for_a_connected_account_is_read_with_its_stripe_account(
    stripe_sandbox: Sandbox,
    stripe_key: str,
    stripe_client: stripe.StripeClient,
    database_url: str,
    served: list[Served],
) -> None:
    """The platform's thin destination takes its connected accounts' events
    (``events_from: @accounts``): each carries ``context``, and the worker
    reads the object on behalf of that account, as the sandbox saw."""
    thin_id, thin_secret = stripe_sandbox.add_event_destination(
        "http://127.0.0.1:9/none",
        ["v1.customer.created", "v1.customer.updated"],
        events_from=["@accounts"],
        key=stripe_key,
    )
    app = Served(stripe_sandbox, stripe_key, database_url, thin_secret)
    served.append(app)
    stripe_client.v2.core.event_destinations.update(thin_id, {"webhook_endpoint": {"url": app.url}})
    # A connected account of the platform, and a customer of its own.
    connected = stripe_client.v1.accounts.create({"type": "express"}).id
    on_behalf: Any = {"stripe_account": connected}
    customer = stripe_client.v1.customers.create({"email": "connected@example.com"}, on_behalf)
    stripe_client.v1.customers.update(customer.id, {"name": "Connected"}, on_behalf)
    assert stripe_sandbox.wait_for_deliveries(10)
    since = len(stripe_sandbox.request_log(stripe_key))
    app.settle(2)
    made = [r for r in stripe_sandbox.request_log(stripe_key)[since:] if r[0] == "GET"]
    # Both changes (within the window) cost one read, made as the connected account.
    assert made == [("GET", f"/v1/customers/{customer.id}", connected)]
    snapshots = stripe_client.v1.events.list(
        {"type": "customer.*"}, on_behalf
    ).data  # the snapshot events of the two changes, under the connected account
    with connect(app.app.engine, readonly=True) as conn:
        rows = set(conn.execute(select(Event.id, Event.account)))
        held = get_object(conn, customer.id, account=connected)
    assert rows == {(e.id, connected) for e in snapshots}
    assert held is not None and held["name"] == "Connected"
    assert app.mirrored(customer.id) is None  # not the platform's own customer


def test_a_kept_read_serves_an_older_event_without_outranking_a_newer_state(
    stripe_sandbox: Sandbox,
    stripe_key: str,
    stripe_client: stripe.StripeClient,
    database_url: str,
    served: list[Served],
) -> None:
    """The worker keeps its newest read of an object for the thin events
    received before that read started. A kept read served to such an event
    after the mirror took a newer state (here a snapshot delivery of a later
    change) costs no API read and does not replace that state."""
    from datetime import timedelta

    from stripeline import inbox
    from stripeline_sandbox._signature import sign

    thin_id, thin_secret = stripe_sandbox.add_event_destination(
        "http://127.0.0.1:9/none", ["v1.customer.created", "v1.customer.updated"], key=stripe_key
    )
    app = Served(stripe_sandbox, stripe_key, database_url, thin_secret, window=60.0)
    served.append(app)
    stripe_client.v2.core.event_destinations.update(thin_id, {"webhook_endpoint": {"url": app.url}})
    # One event at a time, in the order they are due; the worker's clock is
    # ahead of the wall clock, past the coalescing window of both thin events.
    worker = Worker(
        app.app, listen=False, batch_size=1, now=lambda: inbox.utcnow() + timedelta(minutes=5)
    )
    customer = stripe_client.v1.customers.create({"email": "kept@example.com"})
    stripe_client.v1.customers.update(customer.id, {"name": "Older"})
    assert stripe_sandbox.wait_for_deliveries(10)
    created_id, older_id = stripe_sandbox.event_ids(key=stripe_key)[-2:]
    since = len(stripe_sandbox.request_log(stripe_key))
    assert worker.run_once() >= 1  # customer.created: the object read (name "Older")
    time.sleep(2.1)  # the next change is seconds younger than that read
    stripe_client.v2.core.event_destinations.disable(thin_id)
    stripe_client.v1.customers.update(customer.id, {"name": "Newer"})
    newer_id = stripe_sandbox.event_ids(key=stripe_key)[-1]
    body = httpx.get(
        f"{stripe_sandbox.url}/v1/events/{newer_id}",
        headers={"Authorization": f"Bearer {stripe_key}"},
    ).content
    signature = sign(body, stripe_sandbox.webhook_secret, int(time.time()))
    assert httpx.post(app.url, content=body, headers={"Stripe-Signature": signature}).is_success
    assert worker.run_once() >= 1  # the snapshot of the newer change: due before the older one
    assert app.mirrored(customer.id)["name"] == "Newer"  # type: ignore[index]
    assert worker.run_once() >= 1  # the older change: served the kept read
    with connect(app.app.engine, readonly=True) as conn:
        statuses = {row.id: row.status for row in conn.execute(select(Event.id, Event.status))}
    assert statuses == dict.fromkeys([created_id, older_id, newer_id], "processed")
    assert app.mirrored(customer.id)["name"] == "Newer"  # type: ignore[index]
    gets = _gets(stripe_sandbox.request_log(stripe_key), since)
    assert {p: n for p, n in gets.items() if p.startswith("/v1/customers/")} == {
        f"/v1/customers/{customer.id}": 1
    }
    # The older change's handlers saw the kept read.
    assert [s for s in app.seen if s[1] == older_id] == [
        ("customer.updated", older_id, "Older"),
        ("v1.customer.updated", older_id, "Older"),
    ]
