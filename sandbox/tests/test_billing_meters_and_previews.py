"""Billing Meters, metered prices billed at renewal, and the invoice preview
with proration lines, through the official SDK."""

from __future__ import annotations

from typing import Any

import pytest
import stripe

from .test_billing_subscriptions import DAY, START, _advance, _setup


def _lines(invoice: Any) -> list[tuple[int, bool]]:
    found = []
    for line in invoice.lines.data:
        parent = line.parent
        details = parent.subscription_item_details or parent.invoice_item_details
        found.append((line.amount, bool(details.proration)))
    return found


def test_a_metered_price_bills_the_periods_usage_at_renewal(client: stripe.StripeClient) -> None:
    clock, customer, _ = _setup(client)
    meter = client.v1.billing.meters.create(
        {
            "display_name": "API calls",
            "event_name": "api_calls",
            "default_aggregation": {"formula": "sum"},
        }
    )
    assert meter.status == "active" and meter.event_name == "api_calls"
    price = client.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount": 3,
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
            "product_data": {"name": "Calls"},
        }
    )
    assert price.recurring is not None and price.recurring.meter == meter.id
    subscription = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": price.id}]}
    )
    first = client.v1.invoices.retrieve(str(subscription.latest_invoice))
    assert first.amount_due == 0  # usage is billed in arrears
    for n, value in enumerate((100, 250)):
        event = client.v1.billing.meter_events.create(
            {
                "event_name": "api_calls",
                "identifier": f"use_{n}",
                "payload": {"stripe_customer_id": customer.id, "value": str(value)},
            }
        )
        assert event.identifier == f"use_{n}" and event.timestamp == START
    with pytest.raises(stripe.InvalidRequestError):  # one identifier, counted once
        client.v1.billing.meter_events.create(
            {
                "event_name": "api_calls",
                "identifier": "use_0",
                "payload": {"stripe_customer_id": customer.id, "value": "100"},
            }
        )
    _advance(client, clock.id, START + 31 * DAY + 2 * 3600)
    renewed = client.v1.subscriptions.retrieve(subscription.id)
    invoice = client.v1.invoices.retrieve(str(renewed.latest_invoice))
    assert invoice.billing_reason == "subscription_cycle"
    assert invoice.status == "paid" and invoice.amount_paid == 350 * 3
    assert [line.quantity for line in invoice.lines.data] == [350]


def test_a_metered_price_needs_a_meter(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.prices.create(
            {
                "currency": "usd",
                "unit_amount": 3,
                "recurring": {"interval": "month", "usage_type": "metered"},
                "product_data": {"name": "Calls"},
            }
        )
    assert caught.value.param == "recurring[meter]"


@pytest.mark.parametrize("behavior", ["create_prorations", "always_invoice"])
def test_the_preview_prorates_as_the_update_then_bills(
    client: stripe.StripeClient, behavior: str
) -> None:
    clock, customer, price = _setup(client, amount=2000)
    bigger = client.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount": 5000,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Team"},
        }
    )
    subscription = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": price.id}]}
    )
    _advance(client, clock.id, START + 10 * DAY + 7)
    item = subscription["items"].data[0].id
    invoices_before = len(client.v1.invoices.list({"customer": customer.id}).data)
    preview = client.v1.invoices.create_preview(
        {
            "customer": customer.id,
            "subscription": subscription.id,
            "subscription_details": {
                "items": [{"id": item, "price": bigger.id}],
                "proration_behavior": behavior,  # type: ignore[typeddict-item]
            },
        }
    )
    assert preview.id is not None and preview.id.startswith("upcoming_in_")
    moment = preview.parent.subscription_details.subscription_proration_date  # type: ignore[union-attr]
    prorations = [amount for amount, proration in _lines(preview) if proration]
    assert len(prorations) == 2 and prorations[0] < 0 < prorations[1]
    # Nothing changed: same price, no new invoice or invoice item.
    assert client.v1.subscriptions.retrieve(subscription.id)["items"].data[0].price.id == price.id
    assert len(client.v1.invoices.list({"customer": customer.id}).data) == invoices_before
    assert client.v1.invoice_items.list({"customer": customer.id}).data == []
    updated = client.v1.subscriptions.update(
        subscription.id,
        {
            "items": [{"id": item, "price": bigger.id}],
            "proration_behavior": behavior,  # type: ignore[typeddict-item]
            "proration_date": moment,
        },
    )
    if behavior == "always_invoice":
        billed = client.v1.invoices.retrieve(str(updated.latest_invoice))
        assert sorted(a for a, p in _lines(billed) if p) == sorted(prorations)
        assert billed.amount_due == preview.amount_due == sum(prorations)
    else:
        pending = client.v1.invoice_items.list({"customer": customer.id}).data
        assert sorted(i.amount for i in pending) == sorted(prorations)
        # The preview's total: the prorations and the next month at the new price.
        assert preview.amount_due == sum(prorations) + 5000


def test_coupons_and_promotion_codes_discount_a_subscriptions_invoices(
    client: stripe.StripeClient,
) -> None:
    clock, customer, price = _setup(client, amount=2000)
    coupon = client.v1.coupons.create(
        {"percent_off": 25, "duration": "repeating", "duration_in_months": 1}
    )
    code = client.v1.promotion_codes.create(
        {
            "promotion": {"type": "coupon", "coupon": coupon.id},
            "code": "SPRING",
            "max_redemptions": 1,
        }
    )
    assert code.code == "SPRING" and code.active
    subscription = client.v1.subscriptions.create(
        {
            "customer": customer.id,
            "items": [{"price": price.id}],
            "discounts": [{"promotion_code": code.id}],
        }
    )
    first = client.v1.invoices.retrieve(str(subscription.latest_invoice))
    assert (first.subtotal, first.total, first.amount_paid) == (2000, 1500, 1500)
    assert first.total_discount_amounts is not None
    assert first.total_discount_amounts[0].amount == 500
    assert client.v1.promotion_codes.retrieve(code.id).times_redeemed == 1
    assert client.v1.coupons.retrieve(coupon.id).times_redeemed == 1
    with pytest.raises(stripe.InvalidRequestError):  # used up
        client.v1.subscriptions.create(
            {
                "customer": customer.id,
                "items": [{"price": price.id}],
                "discounts": [{"promotion_code": code.id}],
            }
        )
    # The preview shows the next invoice discounted while the discount lasts: not here.
    _advance(client, clock.id, START + 31 * DAY + 2 * 3600)
    renewal = client.v1.invoices.retrieve(
        str(client.v1.subscriptions.retrieve(subscription.id).latest_invoice)
    )
    assert (renewal.total, renewal.amount_paid) == (2000, 2000)  # one month only
    fixed = client.v1.coupons.create({"amount_off": 300, "currency": "usd", "duration": "forever"})
    second = client.v1.subscriptions.create(
        {
            "customer": customer.id,
            "items": [{"price": price.id}],
            "discounts": [{"coupon": fixed.id}],
        }
    )
    assert client.v1.invoices.retrieve(str(second.latest_invoice)).amount_paid == 1700
    preview = client.v1.invoices.create_preview(
        {"customer": customer.id, "subscription": second.id}
    )
    assert preview.total == 1700


def test_a_sent_invoice_past_its_due_date_is_overdue_once(
    client: stripe.StripeClient, receiver: Any
) -> None:
    clock, customer, price = _setup(client, card=None)
    subscription = client.v1.subscriptions.create(
        {
            "customer": customer.id,
            "items": [{"price": price.id}],
            "collection_method": "send_invoice",
            "days_until_due": 10,
        }
    )
    invoice = client.v1.invoices.retrieve(str(subscription.latest_invoice))
    assert invoice.status == "open" and invoice.due_date == START + 10 * DAY

    def ready(count: int) -> list[dict[str, Any]]:
        return receiver.wait_for(
            lambda es: sum(e["type"] == "test_helpers.test_clock.ready" for e in es) >= count
        )

    _advance(client, clock.id, START + 9 * DAY)
    assert "invoice.overdue" not in [e["type"] for e in ready(1)]
    _advance(client, clock.id, START + 12 * DAY)
    _advance(client, clock.id, START + 14 * DAY)
    overdue = [e for e in ready(3) if e["type"] == "invoice.overdue"]
    assert [e["data"]["object"]["id"] for e in overdue] == [invoice.id]
