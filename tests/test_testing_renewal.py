"""A failed renewal on an advanced clock, read from the mirror right after
``settle()``: the mirror is current (ties read at once, a read stamped on the
events' clock), every time."""

from __future__ import annotations

import os
import time

import pytest

from stripeline.testing import StripelineEnv

DAY = 86400
#: ``STRIPELINE_TEST_RENEWAL_RUNS=100`` runs the slow loop; 100 by default.
RUNS = int(os.environ.get("STRIPELINE_TEST_RENEWAL_RUNS", "100"))


def failed_renewal(env: StripelineEnv) -> None:
    """A monthly subscription paid by card, then a card that fails: the
    renewal a month later leaves it ``past_due``, in Stripe and in the mirror."""
    client = env.client
    customer = client.v1.customers.create(
        {
            "email": "renewal@example.com",
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        }
    )
    product = client.v1.products.create({"name": "Monthly"})
    price = client.v1.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount": 1200,
            "recurring": {"interval": "month"},
        }
    )
    subscription = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": price.id}]}
    )
    assert subscription.status == "active"
    env.settle()
    mirrored = env.mirror(subscription.id)
    assert mirrored is not None and mirrored["status"] == "active"

    failing = client.v1.payment_methods.attach(
        "pm_card_chargeCustomerFail", {"customer": customer.id}
    )
    client.v1.customers.update(
        customer.id, {"invoice_settings": {"default_payment_method": failing.id}}
    )
    env.advance_clock(32 * DAY)
    # The sandbox runs an account's due billing work on its next billing call.
    assert client.v1.subscriptions.retrieve(subscription.id).status == "past_due"
    env.settle()
    mirrored = env.mirror(subscription.id)
    assert mirrored is not None and mirrored["status"] == "past_due"
    invoice = env.mirror(str(mirrored["latest_invoice"]))
    assert invoice is not None and invoice["status"] == "open"


def test_a_failed_renewal_is_past_due_in_the_mirror(stripeline_env: StripelineEnv) -> None:
    failed_renewal(stripeline_env)


@pytest.mark.slow
@pytest.mark.parametrize("run", range(RUNS))
def test_a_failed_renewal_is_past_due_in_the_mirror_every_time(
    stripeline_env: StripelineEnv, run: int
) -> None:
    started = time.monotonic()
    failed_renewal(stripeline_env)
    assert time.monotonic() - started < 30
