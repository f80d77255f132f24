"""Subscriptions end to end: SDK → sandbox (test clocks) → signed webhook → receiver."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest
import stripe

from stripeline_sandbox import Sandbox

from .conftest import Receiver, control

DAY = 86400
#: 2026-01-01 00:00:00 UTC: January has 31 days, February 28.
START = 1_767_225_600


def _round_half_up(value: Fraction) -> int:
    return int(value + Fraction(1, 2)) if value >= 0 else -int(-value + Fraction(1, 2))


def _setup(
    client: stripe.StripeClient, *, amount: int = 2000, card: str | None = "pm_card_visa"
) -> tuple[stripe.test_helpers.TestClock, stripe.Customer, stripe.Price]:
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": START, "name": "billing"})
    params: dict[str, Any] = {"email": "sub@example.com", "test_clock": clock.id}
    if card:
        params["payment_method"] = card
        params["invoice_settings"] = {"default_payment_method": card}
    customer = client.v1.customers.create(params)  # type: ignore[arg-type]
    price = client.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount": amount,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Pro"},
            "lookup_key": f"pro_{amount}",
        }
    )
    return clock, customer, price


def _advance(client: stripe.StripeClient, clock_id: str, to: int) -> None:
    clock = client.v1.test_helpers.test_clocks.advance(clock_id, {"frozen_time": to})
    assert clock.status == "ready" and clock.frozen_time == to


def _use_card(client: stripe.StripeClient, customer_id: str, card: str) -> str:
    payment_method = client.v1.payment_methods.attach(card, {"customer": customer_id})
    client.v1.customers.update(
        customer_id, {"invoice_settings": {"default_payment_method": payment_method.id}}
    )
    return payment_method.id


def test_trial_renewals_failed_renewal_and_recovery(
    client: stripe.StripeClient, receiver: Receiver
) -> None:
    clock, customer, price = _setup(client)
    assert customer.test_clock == clock.id
    subscription = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": price.id}], "trial_period_days": 7}
    )
    trial_end = START + 7 * DAY
    assert subscription.status == "trialing" and subscription.trial_end == trial_end
    item = subscription["items"].data[0]
    assert (item.current_period_start, item.current_period_end) == (START, trial_end)
    first = client.v1.invoices.retrieve(str(subscription.latest_invoice))
    assert first.status == "paid" and first.amount_due == 0
    assert first.billing_reason == "subscription_create"
    assert first.parent is not None and first.parent.subscription_details is not None
    assert first.parent.subscription_details.subscription == subscription.id

    _advance(client, clock.id, START + 5 * DAY)
    receiver.wait_for_type("customer.subscription.trial_will_end")
    _advance(client, clock.id, trial_end + 2 * 3600)
    subscription = client.v1.subscriptions.retrieve(subscription.id)
    assert subscription.status == "active"
    converted = client.v1.invoices.retrieve(str(subscription.latest_invoice))
    assert converted.status == "paid" and converted.amount_paid == 2000
    assert converted.status_transitions.paid_at == trial_end + 3600

    # Three renewals, each at its period end (monthly from the 8th).
    renewals = [1_770_508_800, 1_772_928_000, 1_775_606_400]  # Feb 8, Mar 8, Apr 8
    for moment in renewals:
        _advance(client, clock.id, moment + 2 * 3600)
        subscription = client.v1.subscriptions.retrieve(subscription.id)
        invoice = client.v1.invoices.retrieve(str(subscription.latest_invoice))
        assert invoice.status == "paid" and invoice.billing_reason == "subscription_cycle"
        assert invoice.lines.data[0].period.start == moment
        assert subscription["items"].data[0].current_period_start == moment
    paid = client.v1.invoices.list({"subscription": subscription.id, "status": "paid"})
    assert len(paid.data) == 5

    # The card now fails: the next renewal goes past_due.
    _use_card(client, customer.id, "pm_card_chargeCustomerFail")
    may_8 = 1_778_198_400
    _advance(client, clock.id, may_8 + 2 * 3600)
    subscription = client.v1.subscriptions.retrieve(subscription.id)
    assert subscription.status == "past_due"
    failed = client.v1.invoices.retrieve(str(subscription.latest_invoice))
    assert failed.status == "open" and failed.attempt_count == 1
    assert failed.next_payment_attempt == may_8 + 3600 + DAY
    _advance(client, clock.id, may_8 + 2 * DAY)
    assert client.v1.invoices.retrieve(failed.id).attempt_count == 2

    # The customer updates the card; paying the invoice recovers the subscription.
    visa = _use_card(client, customer.id, "pm_card_mastercard")
    recovered = client.v1.invoices.pay(failed.id)
    assert recovered.status == "paid" and recovered.amount_paid == 2000
    assert recovered.next_payment_attempt is None
    payment = recovered.payments.data[0] if recovered.payments else None
    assert payment is not None and payment.status == "paid"
    intent = client.v1.payment_intents.retrieve(str(payment.payment.payment_intent))
    assert intent.status == "succeeded" and intent.payment_method == visa
    assert client.v1.subscriptions.retrieve(subscription.id).status == "active"

    events = receiver.wait_for(
        lambda es: (
            sum(e["type"] == "invoice.paid" for e in es) >= 6
            and any(
                e["type"] == "customer.subscription.updated"
                and e["data"]["object"]["status"] == "active"
                and e["data"].get("previous_attributes", {}).get("status") == "past_due"
                for e in es
            )
        )
    )
    types = [e["type"] for e in events]
    assert receiver.rejected == 0
    for expected in (
        "test_helpers.test_clock.created",
        "test_helpers.test_clock.advancing",
        "test_helpers.test_clock.ready",
        "customer.subscription.created",
        "customer.subscription.trial_will_end",
        "invoice.created",
        "invoice.finalized",
        "invoice.upcoming",
        "invoice.payment_succeeded",
        "invoice.payment_failed",
        "charge.failed",
    ):
        assert expected in types, expected
    assert types.index("customer.subscription.trial_will_end") < types.index(
        "invoice.payment_failed"
    )
    past_due = next(
        e
        for e in events
        if e["type"] == "customer.subscription.updated"
        and e["data"]["object"]["status"] == "past_due"
    )
    assert past_due["data"]["previous_attributes"]["status"] == "active"


def test_upgrade_mid_period_prorated_to_the_cent(
    client: stripe.StripeClient, receiver: Receiver
) -> None:
    clock, customer, basic = _setup(client, amount=1000)
    premium = client.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount": 3000,
            "recurring": {"interval": "month"},
            "product": str(basic.product),
        }
    )
    subscription = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": basic.id}]}
    )
    assert subscription.status == "active"
    item = subscription["items"].data[0]
    period_start, period_end = item.current_period_start, item.current_period_end
    assert (period_start, period_end) == (START, START + 31 * DAY)

    change = START + 10 * DAY + 3 * 3600 + 17 * 60 + 41
    _advance(client, clock.id, change)
    updated = client.v1.subscriptions.update(
        subscription.id,
        {
            "items": [{"id": item.id, "price": premium.id}],
            "proration_behavior": "always_invoice",
        },
    )
    assert updated["items"].data[0].price.id == premium.id
    invoice = client.v1.invoices.retrieve(str(updated.latest_invoice))

    # From first principles: each side prorated by the exact seconds left.
    left = Fraction(period_end - change, period_end - period_start)
    credit = -_round_half_up(1000 * left)
    charge = _round_half_up(3000 * left)
    assert sorted(line.amount for line in invoice.lines.data) == sorted([credit, charge])
    assert invoice.amount_due == credit + charge == 1346
    assert invoice.billing_reason == "subscription_update" and invoice.status == "paid"
    for line in invoice.lines.data:
        assert line.parent is not None and line.parent.subscription_item_details is not None
        assert line.parent.subscription_item_details.proration is True
        assert (line.period.start, line.period.end) == (change, period_end)
    receiver.wait_for_type("invoice.paid", 2)


def test_quantity_change_prorations_land_on_the_next_renewal(client: stripe.StripeClient) -> None:
    clock, customer, price = _setup(client, amount=1500)
    subscription = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": price.id, "quantity": 1}]}
    )
    item = subscription["items"].data[0]
    change = START + 20 * DAY
    _advance(client, clock.id, change)
    client.v1.subscriptions.update(subscription.id, {"items": [{"id": item.id, "quantity": 3}]})
    pending = client.v1.invoice_items.list({"customer": customer.id, "pending": True})
    assert len(pending.data) == 2 and all(i.proration for i in pending.data)
    _advance(client, clock.id, START + 31 * DAY + 2 * 3600)
    renewal = client.v1.invoices.retrieve(
        str(client.v1.subscriptions.retrieve(subscription.id).latest_invoice)
    )
    left = Fraction(11 * DAY, 31 * DAY)
    expected = 3 * 1500 + _round_half_up(4500 * left) - _round_half_up(1500 * left)
    assert renewal.amount_paid == expected and len(renewal.lines.data) == 3


def test_cancel_at_period_end(client: stripe.StripeClient, receiver: Receiver) -> None:
    clock, customer, price = _setup(client)
    subscription = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": price.id}]}
    )
    end = subscription["items"].data[0].current_period_end
    updated = client.v1.subscriptions.update(subscription.id, {"cancel_at_period_end": True})
    assert updated.cancel_at_period_end is True and updated.cancel_at == end
    assert updated.status == "active"
    _advance(client, clock.id, end - DAY)
    assert client.v1.subscriptions.retrieve(subscription.id).status == "active"
    _advance(client, clock.id, end + DAY)
    ended = client.v1.subscriptions.retrieve(subscription.id)
    assert ended.status == "canceled" and ended.ended_at == end
    assert ended.cancellation_details is not None
    assert ended.cancellation_details.reason == "cancellation_requested"
    assert len(client.v1.invoices.list({"subscription": subscription.id}).data) == 1
    deleted = receiver.wait_for_type("customer.subscription.deleted")
    assert deleted[0]["data"]["object"]["status"] == "canceled"
    update = receiver.wait_for_type("customer.subscription.updated")[0]
    assert update["data"]["previous_attributes"]["cancel_at_period_end"] is False


def test_cancel_now(client: stripe.StripeClient) -> None:
    _, customer, price = _setup(client)
    subscription = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": price.id}]}
    )
    canceled = client.v1.subscriptions.cancel(subscription.id)
    assert canceled.status == "canceled" and canceled.ended_at == START
    assert client.v1.subscriptions.list({"customer": customer.id}).data == []
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscriptions.update(subscription.id, {"items": [{"price": price.id}]})


def test_pause_at_trial_end_then_resume(client: stripe.StripeClient, receiver: Receiver) -> None:
    clock, customer, price = _setup(client, card=None)
    subscription = client.v1.subscriptions.create(
        {
            "customer": customer.id,
            "items": [{"price": price.id}],
            "trial_period_days": 2,
            "trial_settings": {"end_behavior": {"missing_payment_method": "pause"}},
        }
    )
    # Less than three days of trial: trial_will_end comes at once.
    receiver.wait_for_type("customer.subscription.trial_will_end")
    _advance(client, clock.id, START + 3 * DAY)
    paused = client.v1.subscriptions.retrieve(subscription.id)
    assert paused.status == "paused"
    receiver.wait_for_type("customer.subscription.paused")

    _use_card(client, customer.id, "pm_card_visa")
    # The sandbox speaks the form where the anchor is a plain string; the SDK's
    # types describe a newer one (an object with a `type`).
    resumed = client.v1.subscriptions.resume(
        subscription.id,
        {"billing_cycle_anchor": "now"},  # type: ignore[arg-type]
    )
    assert resumed.status == "active"
    item = resumed["items"].data[0]
    assert item.current_period_start == START + 3 * DAY
    invoice = client.v1.invoices.retrieve(str(resumed.latest_invoice))
    assert invoice.status == "paid" and invoice.amount_paid == 2000
    receiver.wait_for_type("customer.subscription.resumed")
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscriptions.resume(subscription.id)


def test_pause_collection_voids_renewals_until_unpaused(client: stripe.StripeClient) -> None:
    clock, customer, price = _setup(client)
    subscription = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": price.id}]}
    )
    client.v1.subscriptions.update(subscription.id, {"pause_collection": {"behavior": "void"}})
    _advance(client, clock.id, START + 32 * DAY)
    current = client.v1.subscriptions.retrieve(subscription.id)
    assert current.status == "active" and current.pause_collection is not None
    assert client.v1.invoices.retrieve(str(current.latest_invoice)).status == "void"
    client.v1.subscriptions.update(subscription.id, {"pause_collection": ""})
    _advance(client, clock.id, START + 60 * DAY)
    current = client.v1.subscriptions.retrieve(subscription.id)
    assert current.pause_collection is None
    assert client.v1.invoices.retrieve(str(current.latest_invoice)).status == "paid"


def test_default_incomplete_confirmed_by_the_client(
    client: stripe.StripeClient, receiver: Receiver
) -> None:
    _, customer, price = _setup(client, card=None)
    subscription = client.v1.subscriptions.create(
        {
            "customer": customer.id,
            "items": [{"price": price.id}],
            "payment_behavior": "default_incomplete",
            "expand": ["latest_invoice.payments"],
        }
    )
    assert subscription.status == "incomplete"
    invoice = subscription.latest_invoice
    assert isinstance(invoice, stripe.Invoice) and invoice.status == "open"
    assert invoice.confirmation_secret is not None
    assert invoice.payments is not None
    intent_id = str(invoice.payments.data[0].payment.payment_intent)
    assert invoice.confirmation_secret.client_secret.startswith(intent_id)
    client.v1.payment_intents.confirm(intent_id, {"payment_method": "pm_card_visa"})
    assert client.v1.subscriptions.retrieve(subscription.id).status == "active"
    assert client.v1.invoices.retrieve(invoice.id).status == "paid"
    receiver.wait_for_type("invoice.paid")


def test_default_incomplete_never_charges_the_default_card(client: stripe.StripeClient) -> None:
    """Stripe waits for the customer's confirmation: no attempt, no charge,
    even with a default payment method that would succeed."""
    clock, customer, price = _setup(client, card="pm_card_visa")
    subscription = client.v1.subscriptions.create(
        {
            "customer": customer.id,
            "items": [{"price": price.id}],
            "payment_behavior": "default_incomplete",
            "expand": ["latest_invoice.payments"],
        }
    )
    assert subscription.status == "incomplete"
    invoice = subscription.latest_invoice
    assert isinstance(invoice, stripe.Invoice) and invoice.payments is not None
    assert (invoice.status, invoice.attempted, invoice.attempt_count) == ("open", False, 0)
    assert invoice.next_payment_attempt is None
    intent_id = str(invoice.payments.data[0].payment.payment_intent)
    intent = client.v1.payment_intents.retrieve(intent_id)
    assert intent.status == "requires_payment_method" and intent.latest_charge is None
    assert client.v1.charges.list({"customer": customer.id}).data == []
    # Nothing is tried while the clock moves on: it expires unpaid.
    _advance(client, clock.id, START + 24 * 3600)
    assert client.v1.subscriptions.retrieve(subscription.id).status == "incomplete_expired"
    assert client.v1.charges.list({"customer": customer.id}).data == []


def test_incomplete_expires_after_23_hours(client: stripe.StripeClient) -> None:
    clock, customer, price = _setup(client, card="pm_card_chargeCustomerFail")
    subscription = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": price.id}]}
    )
    assert subscription.status == "incomplete"
    _advance(client, clock.id, START + 24 * 3600)
    expired = client.v1.subscriptions.retrieve(subscription.id)
    assert expired.status == "incomplete_expired"
    assert client.v1.invoices.retrieve(str(expired.latest_invoice)).status == "void"


@pytest.mark.parametrize(("after", "status"), [("cancel", "canceled"), ("unpaid", "unpaid")])
def test_retries_exhausted(
    sandbox: Sandbox, key: str, client: stripe.StripeClient, after: str, status: str
) -> None:
    settings = control(
        sandbox, key, "POST", "/_sandbox/billing", retry_days="1,2", after_retries=after
    )
    assert settings["retry_days"] == [1, 2]
    clock, customer, price = _setup(client)
    subscription = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": price.id}]}
    )
    _use_card(client, customer.id, "pm_card_chargeCustomerFail")
    renewal = START + 31 * DAY + 3600
    _advance(client, clock.id, renewal + 3600)
    assert client.v1.subscriptions.retrieve(subscription.id).status == "past_due"
    _advance(client, clock.id, renewal + 3 * DAY + 60)
    current = client.v1.subscriptions.retrieve(subscription.id)
    assert current.status == status
    invoice = client.v1.invoices.retrieve(str(current.latest_invoice))
    assert invoice.attempt_count == 3 and invoice.next_payment_attempt is None


def test_test_clock_limits_and_listing(client: stripe.StripeClient) -> None:
    clock, customer, price = _setup(client)
    client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}]})
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": START + 100 * DAY})
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": START - 1})
    assert [c.id for c in client.v1.test_helpers.test_clocks.list().data] == [clock.id]
    assert client.v1.test_helpers.test_clocks.retrieve(clock.id).frozen_time == START
    deleted = client.v1.test_helpers.test_clocks.delete(clock.id)
    assert deleted.deleted is True
    assert client.v1.customers.retrieve(customer.id).to_dict().get("deleted") is True


def test_sandbox_clock_drives_subscriptions_without_a_test_clock() -> None:
    with Sandbox() as sb:
        http = stripe.RequestsClient(timeout=5)
        try:
            client = stripe.StripeClient(
                sb.secret_key, base_addresses={"api": sb.url}, http_client=http
            )
            customer = client.v1.customers.create(
                {
                    "payment_method": "pm_card_visa",
                    "invoice_settings": {"default_payment_method": "pm_card_visa"},
                }
            )
            price = client.v1.prices.create(
                {
                    "currency": "usd",
                    "unit_amount": 900,
                    "recurring": {"interval": "week"},
                    "product_data": {"name": "Weekly"},
                }
            )
            subscription = client.v1.subscriptions.create(
                {"customer": customer.id, "items": [{"price": price.id}]}
            )
            sb.advance_clock(7 * DAY + 2 * 3600)
            invoices = client.v1.invoices.list({"subscription": subscription.id})
            assert [i.status for i in invoices.data] == ["paid", "paid"]
            assert invoices.data[0].billing_reason == "subscription_cycle"
        finally:
            http.close()  # type: ignore[no-untyped-call]


def test_first_payment_needing_3d_secure(
    sandbox: Sandbox, key: str, client: stripe.StripeClient, receiver: Receiver
) -> None:
    _, customer, price = _setup(client, card="pm_card_authenticationRequired")
    subscription = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": price.id}]}
    )
    assert subscription.status == "incomplete"
    invoice = client.v1.invoices.retrieve(str(subscription.latest_invoice))
    assert invoice.status == "open" and invoice.payments is not None
    intent_id = str(invoice.payments.data[0].payment.payment_intent)
    assert client.v1.payment_intents.retrieve(intent_id).status == "requires_action"
    receiver.wait_for_type("invoice.payment_action_required")
    control(sandbox, key, "POST", f"/_sandbox/payment_intents/{intent_id}/authenticate")
    assert client.v1.subscriptions.retrieve(subscription.id).status == "active"
    receiver.wait_for_type("invoice.paid")


def test_renewal_events_carry_no_request(client: stripe.StripeClient, receiver: Receiver) -> None:
    clock, customer, price = _setup(client)
    client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}]})
    _advance(client, clock.id, START + 31 * DAY + 2 * 3600)
    renewal = receiver.wait_for_type("invoice.paid", 2)[1]
    assert renewal["request"] == {"id": None, "idempotency_key": None}
    assert renewal["data"]["object"]["billing_reason"] == "subscription_cycle"


def test_error_if_incomplete_makes_no_subscription(client: stripe.StripeClient) -> None:
    _, customer, price = _setup(client, card="pm_card_chargeCustomerFail")
    with pytest.raises(stripe.CardError):
        client.v1.subscriptions.create(
            {
                "customer": customer.id,
                "items": [{"price": price.id}],
                "payment_behavior": "error_if_incomplete",
            }
        )
    assert client.v1.subscriptions.list({"customer": customer.id, "status": "all"}).data == []


def test_subscription_items_endpoints(client: stripe.StripeClient, receiver: Receiver) -> None:
    _, customer, price = _setup(client)
    extra = client.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount": 500,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Seats"},
        }
    )
    subscription = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": price.id}]}
    )
    added = client.v1.subscription_items.create(
        {"subscription": subscription.id, "price": extra.id, "quantity": 2,
         "proration_behavior": "none"}
    )  # fmt: skip
    assert added.quantity == 2 and added.current_period_end == START + 31 * DAY
    listed = client.v1.subscription_items.list({"subscription": subscription.id})
    assert {i.id for i in listed.data} == {added.id, subscription["items"].data[0].id}
    changed = client.v1.subscription_items.update(added.id, {"quantity": 5})
    assert changed.quantity == 5
    assert client.v1.subscription_items.retrieve(added.id).quantity == 5
    assert client.v1.subscription_items.delete(added.id).deleted is True
    assert len(client.v1.subscriptions.retrieve(subscription.id)["items"].data) == 1
    updates = receiver.wait_for_type("customer.subscription.updated", 3)
    assert len(updates[1]["data"]["previous_attributes"]["items"]["data"]) == 2
