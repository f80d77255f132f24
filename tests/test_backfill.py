"""Backfill (``stripeline sync objects``) against the sandbox, through the official SDK."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import stripe
from click.testing import CliRunner
from sqlalchemy import Engine, select

from stripeline.db import connect
from stripeline.gateway import Reader
from stripeline.gateway.reader import LISTERS, resolve_types
from stripeline.mirror._store import get_object
from stripeline.mirror.tables import table_for
from stripeline.sync import Progress, backfill
from stripeline.sync.backfill import FINISHED, cursor_name
from stripeline.sync.cursors import read_cursor
from stripeline_sandbox import Sandbox

FAST = 1000.0  # reads/s where the rate limit is not what a test is about


@pytest.fixture
def http_client() -> Iterator[stripe.RequestsClient]:
    client = stripe.RequestsClient(timeout=10)
    yield client
    client.close()  # type: ignore[no-untyped-call]


def make_reader(
    sandbox: Sandbox, key: str, http_client: stripe.HTTPClient, rate: float = FAST
) -> Reader:
    client = stripe.StripeClient(
        key, base_addresses={"api": sandbox.url}, http_client=http_client, max_network_retries=2
    )
    return Reader(client, reads_per_second=rate)


def populate(client: stripe.StripeClient) -> dict[str, Any]:
    """One or more objects of every listed type; an invoice with 25 lines;
    a canceled subscription; an archived product."""
    customer = client.v1.customers.create(
        {"email": "ada@example.com", "payment_method": "pm_card_visa"}
    )
    client.v1.customers.update(
        customer.id, {"invoice_settings": {"default_payment_method": customer_pm(client, customer)}}
    )
    product = client.v1.products.create({"name": "Pro"})
    price = client.v1.prices.create(
        {
            "product": product.id,
            "unit_amount": 1500,
            "currency": "usd",
            "recurring": {"interval": "month"},
        }
    )
    archived = client.v1.products.create({"name": "Old", "active": False})
    active = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": price.id}]}
    )
    canceled = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": price.id}]}
    )
    client.v1.subscriptions.cancel(canceled.id)
    invoice = client.v1.invoices.create({"customer": customer.id})
    for n in range(25):
        client.v1.invoice_items.create(
            {
                "customer": customer.id,
                "invoice": invoice.id,
                "amount": 100 + n,
                "currency": "usd",
                "description": f"line {n}",
            }
        )
    intent = client.v1.payment_intents.create(
        {"amount": 2000, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True}
    )
    refund = client.v1.refunds.create({"payment_intent": intent.id, "amount": 500})
    disputed = client.v1.payment_intents.create(
        {
            "amount": 3000,
            "currency": "usd",
            "payment_method": "pm_card_createDispute",
            "confirm": True,
        }
    )
    dispute = client.v1.disputes.list({"payment_intent": disputed.id}).data[0]
    session = client.v1.checkout.sessions.create(
        {
            "mode": "payment",
            "success_url": "https://example.com/s",
            "line_items": [
                {
                    "price_data": {
                        "currency": "usd",
                        "unit_amount": 700,
                        "product_data": {"name": "Book"},
                    },
                    "quantity": 1,
                }
            ],
        }
    )
    return {
        "customer": customer.id,
        "product": product.id,
        "archived": archived.id,
        "price": price.id,
        "active": active.id,
        "canceled": canceled.id,
        "invoice": invoice.id,
        "intent": intent.id,
        "refund": refund.id,
        "dispute": dispute.id,
        "session": session.id,
    }


def customer_pm(client: stripe.StripeClient, customer: Any) -> str:
    return str(client.v1.customers.payment_methods.list(customer.id).data[0].id)


def mirrored(engine: Engine, object_id: str) -> dict[str, Any] | None:
    with connect(engine, readonly=True) as conn:
        return get_object(conn, object_id)


def rows_of(engine: Engine, object_type: str) -> dict[str, Any]:
    """The mirror's rows of one type: id → (data, deleted)."""
    table = table_for(object_type).table
    with connect(engine, readonly=True) as conn:
        rows = conn.execute(select(table.c.id, table.c.data, table.c.deleted)).all()
    return {row.id: (row.data, row.deleted) for row in rows if row.data["object"] == object_type}


def snapshot(engine: Engine) -> dict[str, Any]:
    return {t: rows_of(engine, t) for t in LISTERS}


def test_resolve_types_accepts_singular_plural_and_dotted() -> None:
    assert resolve_types([]) == list(LISTERS)
    assert resolve_types(["customers", "checkout_sessions", "invoice", "customer"]) == [
        "customer",
        "checkout.session",
        "invoice",
    ]
    with pytest.raises(ValueError, match="unknown object type 'widgets'"):
        resolve_types(["widgets"])


def test_backfill_mirrors_every_type_and_a_rerun_changes_nothing(
    stripe_sandbox: Sandbox,
    stripe_key: str,
    stripe_client: stripe.StripeClient,
    http_client: stripe.HTTPClient,
    engine: Engine,
) -> None:
    ids = populate(stripe_client)
    reader = make_reader(stripe_sandbox, stripe_key, http_client)

    result = backfill(engine, reader)

    assert result.complete and not result.resumed
    assert {t.status for t in result.types.values()} == {"finished"}
    for name in ("customer", "product", "archived", "price", "active", "refund", "dispute"):
        assert mirrored(engine, ids[name]) is not None, name
    assert mirrored(engine, ids["intent"]) is not None
    assert mirrored(engine, ids["session"]) is not None
    canceled = mirrored(engine, ids["canceled"])
    assert canceled is not None and canceled["status"] == "canceled"
    invoice = mirrored(engine, ids["invoice"])
    assert invoice is not None
    assert len(invoice["lines"]["data"]) == 25 and invoice["lines"]["has_more"] is False
    assert sorted(line["amount"] for line in invoice["lines"]["data"]) == list(range(100, 125))
    assert result.types["payment_method"].objects == 1  # the one attached to the customer
    counts = stripe_sandbox.request_counts(stripe_key)
    assert counts["GET /v1/invoices/{id}/lines"] >= 1
    assert counts["GET /v1/subscriptions"] == 1  # status=all: one page for both
    before = snapshot(engine)

    again = backfill(engine, reader)

    assert again.complete and again.run > result.run and not again.resumed
    assert again.objects == result.objects
    assert snapshot(engine) == before


def test_interrupted_backfill_resumes_without_rereading_finished_types(
    stripe_sandbox: Sandbox,
    stripe_key: str,
    http_client: stripe.HTTPClient,
    sqlite_url: str,
) -> None:
    from stripeline.db import make_engine

    stripe_sandbox.bulk_create("customers", 250, key=stripe_key, email="c{i}@example.com")
    stripe_sandbox.bulk_create("products", 30, key=stripe_key, name="P{i}")
    engine = make_engine(sqlite_url)
    reader = make_reader(stripe_sandbox, stripe_key, http_client)
    stop = threading.Event()
    seen: list[Progress] = []

    def on_page(progress: Progress) -> None:
        seen.append(progress)
        if progress.object_type == "customer" and progress.pages == 1:
            stop.set()

    # products (one page) finish; customers stop after their first page.
    first = backfill(
        engine, reader, ["product", "customer"], concurrency=1, stop=stop, on_page=on_page
    )
    assert first.types["product"].status == "finished"
    assert first.types["customer"].status == "stopped"
    assert first.types["customer"].objects == 100 and not first.complete
    with connect(engine, readonly=True) as conn:
        saved = read_cursor(conn, cursor_name("customer"))
        done = read_cursor(conn, cursor_name("product"))
    assert saved is not None and saved.event_id.startswith("cus_") and saved.created == first.run
    assert done is not None and done.event_id == FINISHED
    before = stripe_sandbox.request_counts(stripe_key)

    second = backfill(engine, reader, ["product", "customer"])

    after = stripe_sandbox.request_counts(stripe_key)
    assert second.resumed and second.run == first.run and second.complete
    assert second.types["product"].status == "skipped"
    assert after.get("GET /v1/products", 0) == before.get("GET /v1/products", 0)
    assert second.types["customer"].resumed_after == saved.event_id
    assert second.types["customer"].objects == 150
    # Two more pages of customers (100 + 50), not three.
    assert after["GET /v1/customers"] - before["GET /v1/customers"] == 2
    assert len(rows_of(engine, "customer")) == 250
    engine.dispose()


def test_sync_objects_cli_json(
    stripe_sandbox: Sandbox,
    stripe_key: str,
    stripe_client: stripe.StripeClient,
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stripeline.cli import main

    stripe_client.v1.customers.create({"email": "b@example.com"})
    monkeypatch.setenv("STRIPE_SECRET_KEY", stripe_key)
    monkeypatch.setenv("STRIPELINE_STRIPE_API_BASE", stripe_sandbox.url)
    monkeypatch.setenv("STRIPELINE_DATABASE_URL", sqlite_url)

    out = CliRunner().invoke(main, ["sync", "objects", "customers", "products", "--json"])

    assert out.exit_code == 0, out.output
    body = json.loads(out.stdout)
    assert body["complete"] is True and body["objects"] == 1
    assert [t["object_type"] for t in body["types"]] == ["customer", "product"]

    text = CliRunner().invoke(main, ["sync", "objects", "customer"])
    assert text.exit_code == 0, text.output
    assert "customer" in text.stdout and "1 object" in text.stdout

    bad = CliRunner().invoke(main, ["sync", "objects", "widgets"])
    assert bad.exit_code == 2 and "unknown object type" in bad.output


@pytest.mark.slow
def test_backfill_of_10000_objects_never_gets_a_429(
    stripe_sandbox: Sandbox,
    stripe_key: str,
    http_client: stripe.HTTPClient,
    sqlite_url: str,
) -> None:
    """Stripe's test-mode limit is 25 requests/s; the default limit of reads
    in test mode (20/s, one bucket for every thread) stays under it."""
    from stripeline.db import make_engine
    from stripeline.settings import Settings

    stripe_sandbox.bulk_create("customers", 6000, key=stripe_key, email="c{i}@example.com")
    stripe_sandbox.bulk_create("products", 4000, key=stripe_key, name="P{i}")
    stripe_sandbox.set_rate_limit(25, key=stripe_key)
    rate = Settings(stripe_secret_key=stripe_key).reads_per_second  # type: ignore[arg-type]  # pydantic validates it
    assert rate == 20.0
    reader = make_reader(stripe_sandbox, stripe_key, http_client, rate=rate)
    engine = make_engine(sqlite_url)
    types = [t for t in LISTERS if t != "payment_method"]  # one read per customer: not here

    try:
        result = backfill(engine, reader, types, concurrency=4)
    finally:
        stripe_sandbox.set_rate_limit(0, key=stripe_key)

    assert result.complete and result.objects == 10_000
    assert stripe_sandbox.rate_limited_count(stripe_key) == 0
    assert result.rate_limited == 0
    assert len(rows_of(engine, "customer")) == 6000
    assert len(rows_of(engine, "product")) == 4000
    engine.dispose()
