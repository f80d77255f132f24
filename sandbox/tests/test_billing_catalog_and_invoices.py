"""Products, prices and one-off invoices through the SDK, with their events."""

from __future__ import annotations

import pytest
import stripe

from .conftest import Receiver


def test_products_and_prices(client: stripe.StripeClient, receiver: Receiver) -> None:
    product = client.v1.products.create({"name": "Pro", "metadata": {"tier": "2"}})
    assert product.active and product.id.startswith("prod_")
    monthly = client.v1.prices.create(
        {
            "product": product.id,
            "currency": "EUR",
            "unit_amount": 1200,
            "recurring": {"interval": "month", "interval_count": 3},
            "lookup_key": "pro_quarterly",
        }
    )
    assert monthly.type == "recurring" and monthly.currency == "eur"
    assert monthly.recurring is not None and monthly.recurring.interval_count == 3
    assert monthly.recurring.usage_type == "licensed" and str(monthly.unit_amount_decimal) == "1200"
    once = client.v1.prices.create({"product": product.id, "currency": "usd", "unit_amount": 500})
    assert once.type == "one_time" and once.recurring is None
    found = client.v1.prices.list({"lookup_keys": ["pro_quarterly"]})
    assert [p.id for p in found.data] == [monthly.id]
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.prices.create(
            {
                "product": product.id,
                "currency": "usd",
                "unit_amount": 1,
                "lookup_key": "pro_quarterly",
            }
        )
    moved = client.v1.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount": 1300,
            "recurring": {"interval": "month"},
            "lookup_key": "pro_quarterly",
            "transfer_lookup_key": True,
        }
    )
    assert client.v1.prices.retrieve(monthly.id).lookup_key is None
    assert moved.lookup_key == "pro_quarterly"

    archived = client.v1.prices.update(once.id, {"active": False})
    assert archived.active is False
    assert once.id not in [p.id for p in client.v1.prices.list({"active": True}).data]
    updated = client.v1.products.update(product.id, {"default_price": moved.id, "active": False})
    assert updated.default_price == moved.id and updated.active is False
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.products.delete(product.id)
    bare = client.v1.products.create({"name": "Bare"})
    assert client.v1.products.delete(bare.id).deleted is True
    assert [p.id for p in client.v1.products.list({"active": False}).data] == [product.id]
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.products.create({})  # type: ignore[typeddict-item]

    events = receiver.wait_for(lambda es: len(es) >= 9)
    types = [e["type"] for e in events]
    assert types.count("product.created") == 2 and types.count("price.created") == 3
    assert "product.deleted" in types
    archive = next(
        e for e in events if e["type"] == "price.updated" and e["data"]["object"]["id"] == once.id
    )
    assert archive["data"]["previous_attributes"] == {"active": True}


def test_manual_invoice_draft_open_paid_void_uncollectible(
    client: stripe.StripeClient, receiver: Receiver
) -> None:
    customer = client.v1.customers.create(
        {
            "email": "inv@example.com",
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        }
    )
    price = client.v1.prices.create(
        {"currency": "usd", "unit_amount": 750, "product_data": {"name": "Setup"}}
    )
    invoice = client.v1.invoices.create({"customer": customer.id})
    assert invoice.status == "draft" and invoice.auto_advance is False
    client.v1.invoice_items.create(
        {
            "customer": customer.id,
            "pricing": {"price": price.id},
            "quantity": 2,
            "invoice": invoice.id,
        }
    )
    client.v1.invoice_items.create(
        {"customer": customer.id, "amount": 125, "currency": "usd", "invoice": invoice.id}
    )
    invoice = client.v1.invoices.retrieve(invoice.id)
    assert invoice.total == 1625 and len(invoice.lines.data) == 2
    assert len(client.v1.invoices.line_items.list(invoice.id).data) == 2
    finalized = client.v1.invoices.finalize_invoice(invoice.id)
    assert finalized.status == "open" and finalized.number is not None
    assert finalized.number.endswith("-0001") and finalized.amount_due == 1625
    paid = client.v1.invoices.pay(invoice.id)
    assert paid.status == "paid" and paid.amount_paid == 1625 and paid.amount_remaining == 0

    second = client.v1.invoices.create({"customer": customer.id})
    client.v1.invoice_items.create(
        {"customer": customer.id, "amount": 900, "currency": "usd", "invoice": second.id}
    )
    client.v1.invoices.finalize_invoice(second.id)
    assert client.v1.invoices.void_invoice(second.id).status == "void"
    third = client.v1.invoices.create({"customer": customer.id})
    client.v1.invoice_items.create(
        {"customer": customer.id, "amount": 900, "currency": "usd", "invoice": third.id}
    )
    client.v1.invoices.finalize_invoice(third.id)
    assert client.v1.invoices.mark_uncollectible(third.id).status == "uncollectible"
    assert client.v1.invoices.pay(third.id, {"paid_out_of_band": True}).status == "paid"
    draft = client.v1.invoices.create({"customer": customer.id})
    assert client.v1.invoices.delete(draft.id).deleted is True
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoices.delete(invoice.id)

    events = receiver.wait_for(
        lambda es: (
            any(e["type"] == "invoice.deleted" for e in es)
            and sum(e["type"] == "invoice.paid" for e in es) == 2
        )
    )
    types = [e["type"] for e in events]
    for expected in (
        "invoice.created",
        "invoice.finalized",
        "invoice.voided",
        "invoice.marked_uncollectible",
    ):
        assert expected in types


def test_failed_invoice_payment_answers_402(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create(
        {
            "payment_method": "pm_card_chargeCustomerFail",
            "invoice_settings": {"default_payment_method": "pm_card_chargeCustomerFail"},
        }
    )
    invoice = client.v1.invoices.create({"customer": customer.id})
    client.v1.invoice_items.create(
        {"customer": customer.id, "amount": 900, "currency": "usd", "invoice": invoice.id}
    )
    client.v1.invoices.finalize_invoice(invoice.id)
    with pytest.raises(stripe.CardError) as caught:
        client.v1.invoices.pay(invoice.id)
    assert caught.value.code == "card_declined"
    failed = client.v1.invoices.retrieve(invoice.id)
    assert failed.status == "open" and failed.attempt_count == 1 and failed.attempted
    paid = client.v1.invoices.pay(invoice.id, {"payment_method": "pm_card_visa"})
    assert paid.status == "paid"
