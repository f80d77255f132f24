"""Payments end to end: SDK → sandbox → signed webhook → receiver."""

from __future__ import annotations

import pytest
import stripe

from stripeline_sandbox import Sandbox
from stripeline_sandbox._refunds import REFUND_PENDING_SECONDS

from .conftest import Receiver, control

DECLINES = [
    ("pm_card_chargeDeclined", "card_declined", "generic_decline"),
    ("pm_card_visa_chargeDeclinedInsufficientFunds", "card_declined", "insufficient_funds"),
    ("pm_card_chargeDeclinedLostCard", "card_declined", "lost_card"),
    ("pm_card_chargeDeclinedStolenCard", "card_declined", "stolen_card"),
    ("pm_card_chargeDeclinedExpiredCard", "expired_card", "expired_card"),
    ("pm_card_chargeDeclinedIncorrectCvc", "incorrect_cvc", "incorrect_cvc"),
    ("pm_card_chargeDeclinedProcessingError", "processing_error", "processing_error"),
    ("pm_card_chargeCustomerFail", "card_declined", "generic_decline"),
]


def test_successful_card_payment(client: stripe.StripeClient, receiver: Receiver) -> None:
    customer = client.v1.customers.create({"email": "a@example.com"})
    intent = client.v1.payment_intents.create(
        {
            "amount": 2000,
            "currency": "usd",
            "customer": customer.id,
            "payment_method": "pm_card_visa",
            "confirm": True,
        }
    )
    assert intent.status == "succeeded" and intent.amount_received == 2000
    charge = client.v1.charges.retrieve(str(intent.latest_charge))
    assert charge.paid and charge.captured and charge.payment_intent == intent.id
    events = receiver.wait_for(lambda es: len(es) == 4)
    assert [e["type"] for e in events] == [
        "customer.created", "payment_intent.created", "charge.succeeded", "payment_intent.succeeded",
    ]  # fmt: skip
    expanded = client.v1.payment_intents.retrieve(intent.id, {"expand": ["latest_charge"]})
    assert isinstance(expanded.latest_charge, stripe.Charge)


@pytest.mark.parametrize(("payment_method", "code", "decline_code"), DECLINES)
def test_declines(
    client: stripe.StripeClient, payment_method: str, code: str, decline_code: str
) -> None:
    with pytest.raises(stripe.CardError) as caught:
        client.v1.payment_intents.create(
            {"amount": 1000, "currency": "usd", "payment_method": payment_method, "confirm": True}
        )
    error = caught.value
    assert error.http_status == 402 and error.code == code
    assert error.error is not None and error.error.decline_code == decline_code
    assert error.error.payment_intent is not None
    intent = client.v1.payment_intents.retrieve(error.error.payment_intent.id)
    assert intent.status == "requires_payment_method"
    assert (
        intent.last_payment_error is not None
        and intent.last_payment_error.decline_code == decline_code
    )
    assert [e.type for e in client.v1.events.list().data][:2] == [
        "payment_intent.payment_failed",
        "charge.failed",
    ]


def test_declining_card_cannot_be_attached_but_0341_can(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create()
    with pytest.raises(stripe.CardError):
        client.v1.payment_methods.attach("pm_card_chargeDeclined", {"customer": customer.id})
    attached = client.v1.payment_methods.attach(
        "pm_card_chargeCustomerFail", {"customer": customer.id}
    )
    assert attached.customer == customer.id
    raw = client.v1.payment_methods.create(
        {
            "type": "card",
            "card": {"number": "4000000000009995", "exp_month": 12, "exp_year": 2034, "cvc": "123"},
        }
    )
    assert raw.card is not None and raw.card.last4 == "9995"
    listed = client.v1.customers.payment_methods.list(customer.id)
    assert [p.id for p in listed.data] == [attached.id]
    client.v1.customers.update(
        customer.id, {"invoice_settings": {"default_payment_method": attached.id}}
    )
    client.v1.payment_methods.detach(attached.id)
    settings = client.v1.customers.retrieve(customer.id).invoice_settings
    assert settings is not None and settings.default_payment_method is None


@pytest.mark.parametrize("outcome", ["succeeded", "failed"])
def test_three_d_secure(
    sandbox: Sandbox, key: str, client: stripe.StripeClient, outcome: str
) -> None:
    intent = client.v1.payment_intents.create(
        {
            "amount": 1500,
            "currency": "eur",
            "payment_method": "pm_card_authenticationRequired",
            "confirm": True,
        }
    )
    assert intent.status == "requires_action"
    assert intent.next_action is not None and intent.next_action.type == "use_stripe_sdk"
    control(
        sandbox, key, "POST", f"/_sandbox/payment_intents/{intent.id}/authenticate", outcome=outcome
    )
    intent = client.v1.payment_intents.retrieve(intent.id)
    if outcome == "succeeded":
        assert intent.status == "succeeded"
    else:
        assert intent.status == "requires_payment_method"
        assert intent.last_payment_error is not None
        assert intent.last_payment_error.code == "payment_intent_authentication_failure"


def test_off_session_payment_needing_authentication_fails(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.CardError) as caught:
        client.v1.payment_intents.create(
            {"amount": 1500, "currency": "usd", "payment_method": "pm_card_authenticationRequired",
             "confirm": True, "off_session": True}
        )  # fmt: skip
    assert caught.value.code == "authentication_required"


def test_manual_partial_capture_and_refunds(
    client: stripe.StripeClient, receiver: Receiver
) -> None:
    intent = client.v1.payment_intents.create(
        {
            "amount": 5000,
            "currency": "usd",
            "payment_method": "pm_card_visa",
            "capture_method": "manual",
            "confirm": True,
        }
    )
    assert intent.status == "requires_capture" and intent.amount_capturable == 5000
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.payment_intents.capture(intent.id, {"amount_to_capture": 6000})
    intent = client.v1.payment_intents.capture(intent.id, {"amount_to_capture": 3000})
    assert intent.status == "succeeded" and intent.amount_received == 3000
    charge = client.v1.charges.retrieve(str(intent.latest_charge))
    assert charge.amount_captured == 3000 and charge.amount_refunded == 2000
    refund = client.v1.refunds.create({"payment_intent": intent.id, "amount": 1000})
    assert refund.status == "succeeded" and refund.amount == 1000
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.refunds.create({"charge": charge.id, "amount": 2001})
    assert caught.value.code == "amount_too_large"
    rest = client.v1.refunds.create({"charge": charge.id})
    assert rest.amount == 2000
    assert client.v1.charges.retrieve(charge.id).refunded is True
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.refunds.create({"charge": charge.id})
    assert caught.value.code == "charge_already_refunded"
    receiver.wait_for_type("charge.refunded", 2)
    assert receiver.types().count("refund.created") == 2


def test_cancel_and_refund_fail(client: stripe.StripeClient) -> None:
    intent = client.v1.payment_intents.create({"amount": 700, "currency": "usd"})
    assert intent.status == "requires_payment_method"
    intent = client.v1.payment_intents.cancel(intent.id, {"cancellation_reason": "abandoned"})
    assert intent.status == "canceled" and intent.cancellation_reason == "abandoned"
    paid = client.v1.payment_intents.create(
        {"amount": 700, "currency": "usd", "payment_method": "pm_card_refundFail", "confirm": True}
    )
    refund = client.v1.refunds.create({"payment_intent": paid.id})
    assert refund.status == "failed"
    assert client.v1.charges.retrieve(str(paid.latest_charge)).amount_refunded == 0


def test_a_pending_refund_succeeds_later(
    sandbox: Sandbox, client: stripe.StripeClient, receiver: Receiver
) -> None:
    paid = client.v1.payment_intents.create(
        {"amount": 900, "currency": "usd", "payment_method": "pm_card_pendingRefund",
         "confirm": True}
    )  # fmt: skip
    refund = client.v1.refunds.create({"payment_intent": paid.id})
    assert refund.status == "pending"
    assert client.v1.charges.retrieve(str(paid.latest_charge)).amount_refunded == 900
    sandbox.advance_clock(REFUND_PENDING_SECONDS - 60)
    assert client.v1.refunds.retrieve(refund.id).status == "pending"
    sandbox.advance_clock(61)
    settled = client.v1.refunds.retrieve(refund.id)
    assert settled.status == "succeeded"
    assert settled.destination_details is not None and settled.destination_details.card
    assert settled.destination_details.card.reference_status == "available"
    (updated,) = receiver.wait_for_type("charge.refund.updated")
    assert updated["data"]["object"]["status"] == "succeeded"
    assert updated["data"]["previous_attributes"]["status"] == "pending"
    assert updated["request"] == {"id": None, "idempotency_key": None}


def test_setup_intent_then_off_session_payment(
    sandbox: Sandbox, key: str, client: stripe.StripeClient
) -> None:
    customer = client.v1.customers.create()
    setup = client.v1.setup_intents.create(
        {
            "customer": customer.id,
            "payment_method": "pm_card_authenticationRequiredOnSetup",
            "confirm": True,
        }
    )
    assert setup.status == "requires_action"
    control(sandbox, key, "POST", f"/_sandbox/setup_intents/{setup.id}/authenticate")
    setup = client.v1.setup_intents.retrieve(setup.id)
    assert setup.status == "succeeded"
    payment_method = str(setup.payment_method)
    assert client.v1.payment_methods.retrieve(payment_method).customer == customer.id
    intent = client.v1.payment_intents.create(
        {"amount": 900, "currency": "usd", "customer": customer.id, "payment_method": payment_method,
         "confirm": True, "off_session": True}
    )  # fmt: skip
    assert intent.status == "succeeded"


@pytest.mark.parametrize("outcome", ["won", "lost"])
def test_dispute_lifecycle(
    sandbox: Sandbox, key: str, client: stripe.StripeClient, receiver: Receiver, outcome: str
) -> None:
    intent = client.v1.payment_intents.create(
        {
            "amount": 3000,
            "currency": "usd",
            "payment_method": "pm_card_createDispute",
            "confirm": True,
        }
    )
    assert intent.status == "succeeded"
    dispute = client.v1.disputes.list({"payment_intent": intent.id}).data[0]
    assert dispute.status == "needs_response" and dispute.amount == 3000
    due_by = dispute.evidence_details.due_by
    assert due_by is not None and due_by > dispute.created
    dispute = client.v1.disputes.update(
        dispute.id,
        {"evidence": {"customer_name": "Ada", "uncategorized_text": "notes"}, "submit": False},
    )
    assert dispute.status == "needs_response" and dispute.evidence_details.has_evidence
    dispute = client.v1.disputes.update(dispute.id, {"submit": True})
    assert dispute.status == "under_review" and dispute.evidence_details.submission_count == 1
    control(sandbox, key, "POST", f"/_sandbox/disputes/{dispute.id}/close", outcome=outcome)
    assert client.v1.disputes.retrieve(dispute.id).status == outcome
    receiver.wait_for_type("charge.dispute.closed")
    types = receiver.types()
    assert "charge.dispute.created" in types and "charge.dispute.funds_withdrawn" in types
    assert ("charge.dispute.funds_reinstated" in types) == (outcome == "won")


def test_accepting_a_dispute_loses_it(client: stripe.StripeClient) -> None:
    intent = client.v1.payment_intents.create(
        {
            "amount": 3000,
            "currency": "usd",
            "payment_method": "pm_card_createDispute",
            "confirm": True,
        }
    )
    dispute = client.v1.disputes.list({"payment_intent": intent.id}).data[0]
    assert client.v1.disputes.close(dispute.id).status == "lost"
