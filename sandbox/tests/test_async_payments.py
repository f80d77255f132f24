"""Asynchronous payment methods (ACH Direct Debit): ``processing``, then settled.

Through the official SDK and the sandbox's HTTP test endpoints only. Tests that
move the sandbox clock start a sandbox of their own (the session's is shared).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import stripe
from stripe.params import PaymentMethodCreateParamsUsBankAccount

from stripeline_sandbox import Sandbox
from stripeline_sandbox._payment_intents import SETTLEMENT_DELAY

from .conftest import RETRY_DELAYS, Receiver, control

ASYNC_TYPES = (
    "payment_intent.created",
    "charge.pending",
    "payment_intent.processing",
)


@pytest.fixture
def own_sandbox() -> Iterator[Sandbox]:
    with Sandbox(webhook_retry_delays=RETRY_DELAYS, webhook_timeout=2.0) as sb:
        yield sb


def _client(sb: Sandbox, key: str | None = None) -> stripe.StripeClient:
    return stripe.StripeClient(key or sb.secret_key, base_addresses={"api": sb.url})


def _processing(client: stripe.StripeClient, payment_method: str) -> stripe.PaymentIntent:
    intent = client.v1.payment_intents.create(
        {
            "amount": 1500,
            "currency": "usd",
            # The sandbox speaks this parameter; the SDK's types name a newer one.
            "payment_method_types": ["us_bank_account"],  # type: ignore[typeddict-unknown-key]
            "payment_method": payment_method,
            "confirm": True,
        }
    )
    assert intent.status == "processing"
    assert intent.amount_received == 0
    charge = client.v1.charges.retrieve(str(intent.latest_charge))
    assert charge.status == "pending" and charge.paid is False
    assert charge.payment_method_details is not None
    assert charge.payment_method_details.type == "us_bank_account"
    return intent


def _payment_types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events if e["type"].startswith(("payment_intent.", "charge."))]


def test_processing_then_succeeded(
    sandbox: Sandbox, key: str, client: stripe.StripeClient, receiver: Receiver
) -> None:
    intent = _processing(client, "pm_usBankAccount_success")
    settled = control(sandbox, key, "POST", f"/_sandbox/payment_intents/{intent.id}/settle")
    assert settled["status"] == "succeeded"
    intent = client.v1.payment_intents.retrieve(intent.id)
    assert intent.status == "succeeded" and intent.amount_received == 1500
    charge = client.v1.charges.retrieve(str(intent.latest_charge))
    assert charge.status == "succeeded" and charge.paid is True
    events = receiver.wait_for_type("payment_intent.succeeded")
    events = receiver.wait_for(lambda es: len(_payment_types(es)) >= 5)
    assert _payment_types(events) == [*ASYNC_TYPES, "charge.succeeded", "payment_intent.succeeded"]
    by_type = {e["type"]: e for e in events}
    # The outcome is Stripe's doing, not a request's.
    assert by_type["payment_intent.succeeded"]["request"] == {"id": None, "idempotency_key": None}
    assert by_type["payment_intent.processing"]["request"]["id"] is not None
    assert by_type["charge.succeeded"]["data"]["previous_attributes"]["status"] == "pending"


@pytest.mark.parametrize(
    ("payment_method", "code"),
    [
        ("pm_usBankAccount_accountClosed", "account_closed"),
        ("pm_usBankAccount_noAccount", "no_account"),
        ("pm_usBankAccount_insufficientFunds", "insufficient_funds"),
        ("pm_usBankAccount_debitNotAuthorized", "debit_not_authorized"),
    ],
)
def test_processing_then_failed(
    sandbox: Sandbox,
    key: str,
    client: stripe.StripeClient,
    receiver: Receiver,
    payment_method: str,
    code: str,
) -> None:
    intent = _processing(client, payment_method)
    control(sandbox, key, "POST", f"/_sandbox/payment_intents/{intent.id}/settle")
    intent = client.v1.payment_intents.retrieve(intent.id)
    assert intent.status == "requires_payment_method"
    assert intent.payment_method is None
    error = intent.last_payment_error
    assert error is not None and error.code == code
    assert error.charge == intent.latest_charge
    charge = client.v1.charges.retrieve(str(intent.latest_charge))
    assert charge.status == "failed" and charge.failure_code == code and not charge.paid
    events = receiver.wait_for(lambda es: len(_payment_types(es)) >= 5)
    assert _payment_types(events) == [
        *ASYNC_TYPES,
        "charge.failed",
        "payment_intent.payment_failed",
    ]


def test_settle_outcome_can_be_forced(
    sandbox: Sandbox, key: str, client: stripe.StripeClient
) -> None:
    intent = _processing(client, "pm_usBankAccount_success")
    path = f"/_sandbox/payment_intents/{intent.id}/settle"
    assert control(sandbox, key, "POST", path, outcome="failed")["status"] == (
        "requires_payment_method"
    )
    # Only a processing PaymentIntent settles.
    with pytest.raises(Exception, match="400"):
        control(sandbox, key, "POST", path)


def test_raw_account_numbers_settle_when_the_clock_passes_the_delay(
    own_sandbox: Sandbox,
) -> None:
    sb = own_sandbox
    client = _client(sb)
    receiver = Receiver(sb.webhook_secret)
    sb.listen(receiver.url)
    try:
        details: PaymentMethodCreateParamsUsBankAccount = {
            "routing_number": "110000000",
            "account_type": "checking",
        }
        ok = client.v1.payment_methods.create(
            {
                "type": "us_bank_account",
                "us_bank_account": {**details, "account_number": "000123456789"},
                "billing_details": {"name": "Jenny Rosen"},
            }
        )
        assert ok.type == "us_bank_account" and ok.us_bank_account is not None
        assert ok.us_bank_account.last4 == "6789"
        bad = client.v1.payment_methods.create(
            {
                "type": "us_bank_account",
                "us_bank_account": {**details, "account_number": "000222222227"},
                "billing_details": {"name": "Jenny Rosen"},
            }
        )
        good_intent = _processing(client, ok.id)
        bad_intent = _processing(client, bad.id)
        # Not yet: a minute before the settlement delay ends.
        control(sb, sb.secret_key, "POST", "/_sandbox/clock/advance", seconds=SETTLEMENT_DELAY - 60)
        assert client.v1.payment_intents.retrieve(good_intent.id).status == "processing"
        # Sandbox.advance_clock settles what is due and sends the webhooks itself.
        sb.advance_clock(60)
        events = receiver.wait_for(
            lambda es: sum(e["type"].startswith("payment_intent.") for e in es) >= 6
        )
        types = [e["type"] for e in events]
        assert types.index("payment_intent.succeeded") > types.index("charge.succeeded")
        assert "payment_intent.payment_failed" in types
        assert client.v1.payment_intents.retrieve(good_intent.id).status == "succeeded"
        failed = client.v1.payment_intents.retrieve(bad_intent.id)
        assert failed.status == "requires_payment_method"
        assert failed.last_payment_error is not None
        assert failed.last_payment_error.code == "insufficient_funds"
    finally:
        receiver.close()


def test_http_clock_advance_settles(own_sandbox: Sandbox) -> None:
    sb = own_sandbox
    client = _client(sb)
    intent = _processing(client, "pm_usBankAccount_success")
    control(sb, sb.secret_key, "POST", "/_sandbox/clock/advance", seconds=SETTLEMENT_DELAY)
    events = client.v1.events.list({"type": "payment_intent.succeeded"})
    assert [e.data.object["id"] for e in events.data] == [intent.id]


def test_bank_account_validation_and_manual_capture(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.payment_methods.create(
            {
                "type": "us_bank_account",
                "us_bank_account": {"routing_number": "1100", "account_number": "000123456789"},
                "billing_details": {"name": "Jenny Rosen"},
            }
        )
    assert caught.value.param == "us_bank_account[routing_number]"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.payment_intents.create(
            {
                "amount": 1500,
                "currency": "usd",
                "capture_method": "manual",
                "payment_method": "pm_usBankAccount_success",
                "confirm": True,
            }
        )


def test_bank_account_saved_for_later_once_settled(
    sandbox: Sandbox, key: str, client: stripe.StripeClient
) -> None:
    customer = client.v1.customers.create({"email": "ach@example.com"})
    intent = client.v1.payment_intents.create(
        {
            "amount": 1500,
            "currency": "usd",
            "customer": customer.id,
            "setup_future_usage": "off_session",
            "payment_method": "pm_usBankAccount_success",
            "confirm": True,
        }
    )
    assert intent.status == "processing"
    assert "us_bank_account" in intent.payment_method_types
    control(sandbox, key, "POST", f"/_sandbox/payment_intents/{intent.id}/settle")
    saved = client.v1.payment_methods.list({"customer": customer.id, "type": "us_bank_account"})
    assert [pm.id for pm in saved.data] == [intent.payment_method]


def _subscription_setup(client: stripe.StripeClient) -> tuple[stripe.Customer, stripe.Price]:
    customer = client.v1.customers.create({"email": "sub@example.com"})
    price = client.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount": 2000,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Pro"},
        }
    )
    return customer, price


def _incomplete(client: stripe.StripeClient) -> tuple[stripe.Subscription, str, str]:
    customer, price = _subscription_setup(client)
    subscription = client.v1.subscriptions.create(
        {
            "customer": customer.id,
            "items": [{"price": price.id}],
            "payment_behavior": "default_incomplete",
            "expand": ["latest_invoice.payments"],
        }
    )
    invoice = subscription.latest_invoice
    assert isinstance(invoice, stripe.Invoice) and invoice.payments is not None
    intent_id = str(invoice.payments.data[0].payment.payment_intent)
    return subscription, str(invoice.id), intent_id


def test_invoice_paid_as_soon_as_its_payment_intent_is_confirmed(
    client: stripe.StripeClient, receiver: Receiver
) -> None:
    subscription, invoice_id, intent_id = _incomplete(client)
    client.v1.payment_intents.confirm(intent_id, {"payment_method": "pm_card_visa"})
    # No billing call in between: the confirmation itself paid the invoice.
    paid = receiver.wait_for_type("invoice.paid")
    assert paid[0]["data"]["object"]["id"] == invoice_id
    assert paid[0]["data"]["object"]["status"] == "paid"
    updated = receiver.wait_for_type("customer.subscription.updated")
    assert updated[-1]["data"]["object"]["status"] == "active"
    types = receiver.types()
    assert types.index("payment_intent.succeeded") < types.index("invoice.paid")
    assert client.v1.subscriptions.retrieve(subscription.id).status == "active"
    assert len(receiver.wait_for_type("invoice.paid")) == 1


def test_invoice_paid_by_bank_debit_when_it_settles(
    sandbox: Sandbox, key: str, client: stripe.StripeClient, receiver: Receiver
) -> None:
    subscription, invoice_id, intent_id = _incomplete(client)
    intent = client.v1.payment_intents.confirm(
        intent_id, {"payment_method": "pm_usBankAccount_success"}
    )
    assert intent.status == "processing"
    assert client.v1.invoices.retrieve(invoice_id).status == "open"
    assert client.v1.subscriptions.retrieve(subscription.id).status == "incomplete"
    control(sandbox, key, "POST", f"/_sandbox/payment_intents/{intent_id}/settle")
    assert client.v1.invoices.retrieve(invoice_id).status == "paid"
    assert client.v1.subscriptions.retrieve(subscription.id).status == "active"
    receiver.wait_for_type("invoice.paid")


def test_invoice_payment_failed_when_a_bank_debit_fails(
    sandbox: Sandbox, key: str, client: stripe.StripeClient, receiver: Receiver
) -> None:
    subscription, invoice_id, intent_id = _incomplete(client)
    client.v1.payment_intents.confirm(
        intent_id, {"payment_method": "pm_usBankAccount_insufficientFunds"}
    )
    control(sandbox, key, "POST", f"/_sandbox/payment_intents/{intent_id}/settle")
    assert client.v1.invoices.retrieve(invoice_id).status == "open"
    assert client.v1.subscriptions.retrieve(subscription.id).status == "incomplete"
    failed = receiver.wait_for_type("invoice.payment_failed")
    assert failed[0]["data"]["object"]["id"] == invoice_id


def test_set_billing(sandbox: Sandbox, key: str) -> None:
    shown = sandbox.set_billing(retry_days=[1, 2], after_retries="unpaid", key=key)
    assert shown["retry_days"] == [1, 2] and shown["after_retries"] == "unpaid"
    sandbox.set_billing(upcoming_days=0, finalize_delay=0, key=key)
    current = control(sandbox, key, "GET", "/_sandbox/billing")
    assert current == {
        "object": "billing_settings",
        "retry_days": [1, 2],
        "after_retries": "unpaid",
        "upcoming_days": 0,
        "finalize_delay": 0,
    }
    sandbox.set_billing(retry_days=[], key=key)
    assert control(sandbox, key, "GET", "/_sandbox/billing")["retry_days"] == []
    with pytest.raises(ValueError, match="after_retries"):
        sandbox.set_billing(after_retries="forever", key=key)


def test_customer_with_unknown_test_clock(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.customers.create({"test_clock": "clock_missing"})
    assert caught.value.param == "test_clock"
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": 1_700_000_000})
    customer = client.v1.customers.create({"test_clock": clock.id})
    assert customer.test_clock == clock.id and customer.created == 1_700_000_000


def test_checkout_url_points_at_the_sandbox(sandbox: Sandbox, client: stripe.StripeClient) -> None:
    price = client.v1.prices.create(
        {"currency": "usd", "unit_amount": 500, "product_data": {"name": "Book"}}
    )
    session = client.v1.checkout.sessions.create(
        {
            "mode": "payment",
            "line_items": [{"price": price.id, "quantity": 1}],
            "success_url": "https://example.com/ok",
        }
    )
    assert str(session.url).startswith(sandbox.url + "/_sandbox/checkout/")


@pytest.mark.parametrize(
    ("payment_method", "event_type", "payment_status"),
    [
        ("pm_usBankAccount_success", "checkout.session.async_payment_succeeded", "paid"),
        ("pm_usBankAccount_noAccount", "checkout.session.async_payment_failed", "unpaid"),
    ],
)
def test_checkout_with_a_bank_account_completes_unpaid(
    sandbox: Sandbox,
    key: str,
    client: stripe.StripeClient,
    receiver: Receiver,
    payment_method: str,
    event_type: str,
    payment_status: str,
) -> None:
    price = client.v1.prices.create(
        {"currency": "usd", "unit_amount": 500, "product_data": {"name": "Book"}}
    )
    session = client.v1.checkout.sessions.create(
        {
            "mode": "payment",
            "line_items": [{"price": price.id, "quantity": 1}],
            "success_url": "https://example.com/ok",
        }
    )
    done = control(
        sandbox,
        key,
        "POST",
        f"/_sandbox/checkout/sessions/{session.id}/complete",
        payment_method=payment_method,
    )
    assert done["status"] == "complete" and done["payment_status"] == "unpaid"
    intent_id = done["payment_intent"]
    assert client.v1.payment_intents.retrieve(intent_id).status == "processing"
    control(sandbox, key, "POST", f"/_sandbox/payment_intents/{intent_id}/settle")
    assert client.v1.checkout.sessions.retrieve(session.id).payment_status == payment_status
    settled = receiver.wait_for_type(event_type)
    assert settled[0]["data"]["object"]["id"] == session.id
    types = receiver.types()
    assert types.index("checkout.session.completed") < types.index(event_type)
