"""The typed mirror against the sandbox: objects made through the official
SDK, delivered as signed webhooks, applied by the worker, read back typed."""

from __future__ import annotations

from datetime import UTC, datetime

from stripeline.mirror import Mirror
from stripeline.testing import StripelineEnv


def test_a_subscription_flow_is_mirrored_typed(stripeline_env: StripelineEnv) -> None:
    client = stripeline_env.client
    customer = client.v1.customers.create(
        {"email": "flow@example.com", "payment_method": "pm_card_visa"}
    )
    product = client.v1.products.create({"name": "Gold"})
    price = client.v1.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount": 1500,
            "recurring": {"interval": "month"},
        }
    )
    subscription = client.v1.subscriptions.create(
        {
            "customer": customer.id,
            "items": [{"price": price.id}],
            "default_payment_method": "pm_card_visa",
        }
    )
    stripeline_env.settle()
    mirror = Mirror(stripeline_env.app.engine)

    found = mirror.customer(customer.id)
    assert found is not None and found.email == "flow@example.com"
    mirrored_price = mirror.price(price.id)
    assert mirrored_price is not None and mirrored_price.unit_amount == 1500

    sub = mirror.subscription(subscription.id)
    assert sub is not None
    assert sub.customer == customer.id
    assert sub.status == subscription.status
    item = subscription["items"]["data"][0]
    assert sub.current_period_end == datetime.fromtimestamp(item["current_period_end"], UTC)
    if subscription.status in ("active", "trialing"):
        assert [s.id for s in mirror.active_subscriptions(customer.id)] == [subscription.id]
    (mirrored_item,) = mirror.subscription_items(subscription.id)
    assert (mirrored_item.price, mirrored_item.product) == (price.id, product.id)

    invoices = mirror.invoices(customer.id)
    assert invoices, "the first invoice is mirrored"
    invoice = invoices[0]
    assert invoice.subscription == subscription.id
    lines = mirror.invoice_lines(invoice.id)
    assert [line.amount for line in lines] == [1500]
    assert lines[0].price == price.id
    if invoice.status == "paid":
        assert invoice.paid is True
