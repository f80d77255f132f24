"""The ``refetch`` policy against the sandbox: a burst of updates to one
object costs a handful of API reads, and the mirror ends on Stripe's state."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import stripe
from pydantic import SecretStr
from sqlalchemy import Engine

from stripeline.app import Stripeline
from stripeline.db import connect
from stripeline.gateway import Reader, StripeFetcher
from stripeline.mirror._store import get_object
from stripeline.settings import Settings
from stripeline.sync import catch_up
from stripeline.worker import Worker
from stripeline_sandbox import Sandbox

WINDOW = 0.3


@pytest.fixture
def http_client() -> Iterator[stripe.RequestsClient]:
    client = stripe.RequestsClient(timeout=10)
    yield client
    client.close()  # type: ignore[no-untyped-call]


def test_200_updates_to_one_subscription_cost_a_handful_of_reads(
    stripe_sandbox: Sandbox,
    stripe_key: str,
    stripe_client: stripe.StripeClient,
    http_client: stripe.HTTPClient,
    database_url: str,
    engine: Engine,
) -> None:
    customer = stripe_client.v1.customers.create({"email": "burst@example.com"})
    product = stripe_client.v1.products.create({"name": "Seat"})
    price = stripe_client.v1.prices.create(
        {
            "product": product.id,
            "unit_amount": 500,
            "currency": "usd",
            "recurring": {"interval": "month"},
        }
    )
    subscription = stripe_client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": price.id}], "trial_period_days": 30}
    )
    for n in range(200):
        stripe_client.v1.subscriptions.update(subscription.id, {"metadata": {"n": str(n)}})
    settings = Settings(
        stripe_secret_key=SecretStr(stripe_key),
        stripe_api_base=stripe_sandbox.url,
        database_url=database_url,
        mirror_policy="refetch",
        mirror_coalesce_seconds=WINDOW,
    )
    fetcher = StripeFetcher(
        stripe.StripeClient(
            stripe_key, base_addresses={"api": stripe_sandbox.url}, http_client=http_client
        ),
        reads_per_second=settings.reads_per_second,
    )
    app = Stripeline(settings, engine=engine, fetcher=fetcher)
    caught = catch_up(engine, Reader(stripe_client, reads_per_second=1000), mode="test")
    updates = [
        e
        for e in stripe_client.v1.events.list({"limit": 100}).auto_paging_iter()
        if e.type == "customer.subscription.updated"
    ]
    assert len(updates) == 200 and caught.inserted >= 200

    route = "GET /v1/subscriptions/{id}"
    before = stripe_sandbox.request_counts(stripe_key).get(route, 0)
    worker = Worker(app, listen=False)
    worker.drain()
    time.sleep(WINDOW + 0.1)  # the coalescing window ends: the one read is due
    worker.drain()

    subscription_reads = stripe_sandbox.request_counts(stripe_key).get(route, 0) - before
    # One read per window; a loaded machine may stretch the burst over two.
    assert 1 <= subscription_reads <= 2, subscription_reads
    # Every other object (customer, product, price, invoice…) is read about once.
    assert fetcher.reads <= 8, fetcher.reads
    with connect(engine, readonly=True) as conn:
        mirrored = get_object(conn, subscription.id)
    assert mirrored is not None and mirrored["metadata"] == {"n": "199"}
