"""Sandbox helpers for big fixtures and request accounting: bulk creation,
429 and per-route counters, invoice lines as lists show them."""

from __future__ import annotations

import pytest
import stripe

from stripeline_sandbox import Sandbox

from .conftest import control


def test_bulk_create_in_python_and_over_http(
    sandbox: Sandbox, key: str, client: stripe.StripeClient
) -> None:
    ids = sandbox.bulk_create("customers", 120, key=key, email="c{i}@example.com")
    assert len(ids) == 120 and len(set(ids)) == 120
    first = client.v1.customers.list({"limit": 100})
    assert first.has_more and first.data[0].email == "c119@example.com"
    answer = control(
        sandbox, key, "POST", "/_sandbox/bulk", resource="products", count=3, name="P{i}"
    )
    assert answer["count"] == 3
    assert sorted(p.name for p in client.v1.products.list().data) == ["P0", "P1", "P2"]
    with pytest.raises(ValueError, match="bulk creation knows"):
        sandbox.bulk_create("charges", 1, key=key)


def test_request_and_rate_limit_counters(
    sandbox: Sandbox, key: str, client: stripe.StripeClient
) -> None:
    customer = client.v1.customers.create({})
    client.v1.customers.retrieve(customer.id)
    client.v1.customers.retrieve(customer.id)
    counts = sandbox.request_counts(key)
    assert counts["POST /v1/customers"] == 1
    assert counts["GET /v1/customers/{id}"] == 2
    assert sandbox.rate_limited_count(key) == 0
    sandbox.set_rate_limit(1, key=key)
    try:
        client.v1.customers.list()
        with pytest.raises(stripe.RateLimitError):
            client.v1.customers.list()
    finally:
        sandbox.set_rate_limit(0, key=key)
    assert sandbox.rate_limited_count(key) == 1


def test_invoice_lists_show_ten_lines_and_the_rest_is_paged(
    sandbox: Sandbox, key: str, client: stripe.StripeClient
) -> None:
    customer = client.v1.customers.create({})
    invoice = client.v1.invoices.create({"customer": customer.id})
    for n in range(12):
        client.v1.invoice_items.create(
            {"customer": customer.id, "invoice": invoice.id, "amount": 100 + n, "currency": "usd"}
        )
    listed = client.v1.invoices.list().data[0]
    assert len(listed.lines.data) == 10 and listed.lines.has_more
    assert listed.lines.url == f"/v1/invoices/{invoice.id}/lines"
    assert len(client.v1.invoices.retrieve(invoice.id).lines.data) == 12  # kept whole
    rest = client.v1.invoices.line_items.list(
        invoice.id, {"starting_after": listed.lines.data[-1].id}
    )
    assert len(rest.data) == 2 and not rest.has_more
