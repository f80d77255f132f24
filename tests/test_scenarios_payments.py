"""Payment scenarios end to end: SDK → sandbox → signed webhook → a real
``Stripeline`` app (``create_app`` under uvicorn on 127.0.0.1, verifying every
signature) → worker → inbox and mirror.

Between two changes to one object the sandbox clock moves a second
(``advance_clock``): the mirror orders states by their event's ``created``
second, so each step is a new second, as it is with a real customer.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import stripe

from stripeline.testing import SandboxControlError, StripelineEnv

DECLINES = [
    ("pm_card_chargeDeclined", "card_declined", "generic_decline"),
    ("pm_card_visa_chargeDeclined", "card_declined", "generic_decline"),
    ("pm_card_chargeDeclinedInsufficientFunds", "card_declined", "insufficient_funds"),
    ("pm_card_visa_chargeDeclinedLostCard", "card_declined", "lost_card"),
    ("pm_card_chargeDeclinedStolenCard", "card_declined", "stolen_card"),
    ("pm_card_chargeDeclinedExpiredCard", "expired_card", "expired_card"),
    ("pm_card_chargeDeclinedIncorrectCvc", "incorrect_cvc", "incorrect_cvc"),
    ("pm_card_chargeDeclinedProcessingError", "processing_error", "processing_error"),
    ("pm_card_chargeDeclinedVelocityLimitExceeded", "card_declined", "card_velocity_exceeded"),
    ("pm_card_chargeCustomerFail", "card_declined", "generic_decline"),
]


def types(env: StripelineEnv) -> Counter[str]:
    return Counter(e.type for e in env.events())


def assert_all_processed(env: StripelineEnv) -> None:
    stored = env.events()
    assert stored, "no event reached the app"
    assert {e.status for e in stored} == {"processed"}, [(e.type, e.status) for e in stored]


def test_successful_card_payment(stripeline_env: StripelineEnv) -> None:
    client = stripeline_env.client
    customer = client.v1.customers.create({"email": "ada@example.com"})
    intent = client.v1.payment_intents.create(
        {
            "amount": 2000,
            "currency": "usd",
            "customer": customer.id,
            "payment_method": "pm_card_visa",
            "confirm": True,
        }
    )
    assert intent.status == "succeeded"
    stripeline_env.settle()
    assert types(stripeline_env) == {
        "customer.created": 1,
        "payment_intent.created": 1,
        "charge.succeeded": 1,
        "payment_intent.succeeded": 1,
    }
    assert_all_processed(stripeline_env)
    mirrored = stripeline_env.mirror(intent.id)
    assert mirrored is not None
    assert mirrored["status"] == "succeeded" and mirrored["amount_received"] == 2000
    charge = stripeline_env.mirror(str(intent.latest_charge))
    assert charge is not None and charge["paid"] and charge["captured"]
    assert charge["payment_intent"] == intent.id
    assert stripeline_env.mirror(customer.id) == customer.to_dict()


@pytest.mark.parametrize(("payment_method", "code", "decline_code"), DECLINES)
def test_decline(
    stripeline_env: StripelineEnv, payment_method: str, code: str, decline_code: str
) -> None:
    with pytest.raises(stripe.CardError) as caught:
        stripeline_env.client.v1.payment_intents.create(
            {"amount": 1500, "currency": "usd", "payment_method": payment_method, "confirm": True}
        )
    error = caught.value.error
    assert caught.value.http_status == 402 and caught.value.code == code
    assert error is not None and error.decline_code == decline_code
    assert error.payment_intent is not None
    stripeline_env.settle()
    assert types(stripeline_env) == {
        "payment_intent.created": 1,
        "charge.failed": 1,
        "payment_intent.payment_failed": 1,
    }
    assert_all_processed(stripeline_env)
    (failed,) = stripeline_env.events("payment_intent.payment_failed")
    assert failed.data["data"]["object"]["last_payment_error"]["decline_code"] == decline_code
    mirrored = stripeline_env.mirror(error.payment_intent.id)
    assert mirrored is not None and mirrored["status"] == "requires_payment_method"
    assert mirrored["last_payment_error"]["code"] == code
    charge = stripeline_env.mirror(mirrored["latest_charge"])
    assert charge is not None and charge["status"] == "failed"
    assert charge["outcome"]["reason"] == decline_code or charge["failure_code"] == code


@pytest.mark.parametrize("outcome", ["succeeded", "failed"])
def test_three_d_secure(stripeline_env: StripelineEnv, outcome: str) -> None:
    client = stripeline_env.client
    intent = client.v1.payment_intents.create(
        {
            "amount": 4200,
            "currency": "eur",
            "payment_method": "pm_card_authenticationRequired",
            "confirm": True,
        }
    )
    assert intent.status == "requires_action" and intent.next_action is not None
    stripeline_env.advance_clock(1)
    mirrored = stripeline_env.mirror(intent.id)
    assert mirrored is not None and mirrored["status"] == "requires_action"

    stripeline_env.control(
        "POST", f"/_sandbox/payment_intents/{intent.id}/authenticate", outcome=outcome
    )
    stripeline_env.settle()
    mirrored = stripeline_env.mirror(intent.id)
    assert mirrored is not None
    if outcome == "succeeded":
        assert mirrored["status"] == "succeeded" and mirrored["amount_received"] == 4200
        assert types(stripeline_env)["charge.succeeded"] == 1
    else:
        assert mirrored["status"] == "requires_payment_method"
        assert mirrored["last_payment_error"]["code"] == "payment_intent_authentication_failure"
        assert "charge.succeeded" not in types(stripeline_env)
    assert types(stripeline_env)["payment_intent.requires_action"] == 1
    assert_all_processed(stripeline_env)
    assert client.v1.payment_intents.retrieve(intent.id).status == mirrored["status"]


def test_manual_partial_capture(stripeline_env: StripelineEnv) -> None:
    client = stripeline_env.client
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
    stripeline_env.advance_clock(1)
    mirrored = stripeline_env.mirror(intent.id)
    assert mirrored is not None and mirrored["status"] == "requires_capture"

    with pytest.raises(stripe.InvalidRequestError):
        client.v1.payment_intents.capture(intent.id, {"amount_to_capture": 6000})
    captured = client.v1.payment_intents.capture(intent.id, {"amount_to_capture": 3000})
    assert captured.status == "succeeded" and captured.amount_received == 3000
    stripeline_env.settle()
    mirrored = stripeline_env.mirror(intent.id)
    assert mirrored is not None
    assert mirrored["status"] == "succeeded" and mirrored["amount_received"] == 3000
    charge = stripeline_env.mirror(str(intent.latest_charge))
    assert charge is not None and charge["captured"]
    assert charge["amount_captured"] == 3000 and charge["amount_refunded"] == 2000
    (event,) = stripeline_env.events("charge.captured")
    assert event.data["data"]["previous_attributes"]["captured"] is False
    assert_all_processed(stripeline_env)


def test_refunds_partial_then_full_and_over_refund_refused(
    stripeline_env: StripelineEnv,
) -> None:
    client = stripeline_env.client
    intent = client.v1.payment_intents.create(
        {"amount": 3000, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True}
    )
    stripeline_env.advance_clock(1)
    first = client.v1.refunds.create({"payment_intent": intent.id, "amount": 1000})
    assert first.status == "succeeded"
    stripeline_env.advance_clock(1)
    charge = stripeline_env.mirror(str(intent.latest_charge))
    assert charge is not None and charge["amount_refunded"] == 1000 and not charge["refunded"]

    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.refunds.create({"payment_intent": intent.id, "amount": 2500})
    assert caught.value.code == "charge_already_refunded" or caught.value.http_status == 400
    rest = client.v1.refunds.create({"payment_intent": intent.id})
    assert rest.amount == 2000
    stripeline_env.settle()
    charge = stripeline_env.mirror(str(intent.latest_charge))
    assert charge is not None and charge["amount_refunded"] == 3000 and charge["refunded"]
    assert types(stripeline_env)["charge.refunded"] == 2
    assert types(stripeline_env)["refund.created"] == 2
    for refund_id, amount in ((first.id, 1000), (rest.id, 2000)):
        mirrored = stripeline_env.mirror(refund_id)
        assert mirrored is not None and mirrored["amount"] == amount
    assert_all_processed(stripeline_env)


@pytest.mark.parametrize("outcome", ["lost", "won"])
def test_dispute_evidence_then_closed(stripeline_env: StripelineEnv, outcome: str) -> None:
    client = stripeline_env.client
    intent = client.v1.payment_intents.create(
        {
            "amount": 8000,
            "currency": "usd",
            "payment_method": "pm_card_createDispute",
            "confirm": True,
        }
    )
    stripeline_env.advance_clock(1)
    (dispute_id,) = [
        e.data["data"]["object"]["id"] for e in stripeline_env.events("charge.dispute.created")
    ]
    dispute = stripeline_env.mirror(dispute_id)
    assert dispute is not None and dispute["status"] == "needs_response"
    assert dispute["evidence_details"]["due_by"] > 0
    assert dispute["charge"] == intent.latest_charge
    assert types(stripeline_env)["charge.dispute.funds_withdrawn"] == 1

    staged = client.v1.disputes.update(
        dispute_id, {"evidence": {"customer_name": "Ada"}, "submit": False}
    )
    assert staged.status == "needs_response" and staged.evidence_details.has_evidence
    stripeline_env.advance_clock(1)
    submitted = client.v1.disputes.update(
        dispute_id, {"evidence": {"product_description": "A book"}, "submit": True}
    )
    assert submitted.status == "under_review"
    stripeline_env.advance_clock(1)
    dispute = stripeline_env.mirror(dispute_id)
    assert dispute is not None and dispute["status"] == "under_review"
    assert dispute["evidence"]["customer_name"] == "Ada"

    stripeline_env.control("POST", f"/_sandbox/disputes/{dispute_id}/close", outcome=outcome)
    stripeline_env.settle()
    dispute = stripeline_env.mirror(dispute_id)
    assert dispute is not None and dispute["status"] == outcome
    seen = types(stripeline_env)
    assert seen["charge.dispute.closed"] == 1
    assert seen["charge.dispute.updated"] == 2
    assert seen["charge.dispute.funds_reinstated"] == (1 if outcome == "won" else 0)
    assert_all_processed(stripeline_env)


def test_idempotent_replay_and_mismatch(stripeline_env: StripelineEnv) -> None:
    client = stripeline_env.client
    params = {"amount": 1200, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True}
    options: stripe.RequestOptions = {"idempotency_key": "order:42:pay"}
    first = client.v1.payment_intents.create(params, options)  # type: ignore[arg-type]
    again = client.v1.payment_intents.create(params, options)  # type: ignore[arg-type]
    assert again.id == first.id
    assert again.last_response is not None
    assert again.last_response.headers.get("Idempotent-Replayed") == "true"
    with pytest.raises(stripe.IdempotencyError):
        client.v1.payment_intents.create({**params, "amount": 1300}, options)  # type: ignore[typeddict-item]
    stripeline_env.settle()
    assert types(stripeline_env) == {
        "payment_intent.created": 1,
        "charge.succeeded": 1,
        "payment_intent.succeeded": 1,
    }
    (event,) = stripeline_env.events("payment_intent.succeeded")
    assert event.data["request"]["idempotency_key"] == "order:42:pay"
    assert len(client.v1.payment_intents.list().data) == 1
    assert_all_processed(stripeline_env)


FAULTS = [
    pytest.param("api_error", {}, id="500"),
    pytest.param("rate_limit", {"should_retry": True}, id="429-should-retry"),
    pytest.param("lock_timeout", {}, id="lock_timeout"),
    pytest.param("lock_timeout", {"status": 409}, id="lock_timeout-409"),
    pytest.param("timeout", {"delay": 1.0}, id="timeout-after-commit"),
    pytest.param("disconnect", {}, id="dropped-after-commit"),
]


@pytest.mark.parametrize(("kind", "options"), FAULTS)
def test_fault_is_retried_and_applied_once(
    stripeline_env: StripelineEnv, kind: str, options: dict[str, object]
) -> None:
    sandbox, key = stripeline_env.sandbox, stripeline_env.key
    http_client = stripe.RequestsClient(timeout=0.3)
    client = stripe.StripeClient(
        key, base_addresses={"api": sandbox.url}, http_client=http_client, max_network_retries=2
    )
    try:
        sandbox.inject_fault(kind, path="^/v1/payment_intents$", key=key, **options)  # type: ignore[arg-type]
        intent = client.v1.payment_intents.create(
            {"amount": 2500, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True}
        )
    finally:
        http_client.close()  # type: ignore[no-untyped-call]
    assert intent.status == "succeeded"
    assert intent.last_response is not None
    committed_first = kind in ("timeout", "disconnect")
    # After a commit the retry (same SDK idempotency key) gets the saved answer.
    replayed = intent.last_response.headers.get("Idempotent-Replayed") == "true"
    assert replayed is committed_first
    assert [p.id for p in stripeline_env.client.v1.payment_intents.list().data] == [intent.id]
    stripeline_env.settle()
    assert types(stripeline_env) == {
        "payment_intent.created": 1,
        "charge.succeeded": 1,
        "payment_intent.succeeded": 1,
    }
    assert_all_processed(stripeline_env)


def test_rate_limit_without_should_retry_is_not_retried(stripeline_env: StripelineEnv) -> None:
    sandbox, key = stripeline_env.sandbox, stripeline_env.key
    sandbox.inject_fault("rate_limit", should_retry=False, key=key)
    with pytest.raises(stripe.RateLimitError):
        stripeline_env.client.v1.customers.create({"email": "b@example.com"})
    # The SDK gave up at once: nothing was created, and the fault is used up.
    assert stripeline_env.client.v1.customers.list().data == []
    stripeline_env.settle()
    assert stripeline_env.events() == []


def test_checkout_session_paid(stripeline_env: StripelineEnv) -> None:
    client = stripeline_env.client
    session = client.v1.checkout.sessions.create(
        {
            "mode": "payment",
            "success_url": "https://example.com/thanks",
            "client_reference_id": "order-7",
            "line_items": [
                {
                    "price_data": {
                        "currency": "usd",
                        "unit_amount": 1250,
                        "product_data": {"name": "Book"},
                    },
                    "quantity": 2,
                }
            ],
        }
    )
    assert session.status == "open" and session.amount_total == 2500
    assert session.url is not None and session.url.startswith(stripeline_env.sandbox.url)
    page = stripeline_env.control("GET", session.url.removeprefix(stripeline_env.sandbox.url))
    assert page["session"]["id"] == session.id
    stripeline_env.control(
        "POST", f"/_sandbox/checkout/sessions/{session.id}/complete", email="ada@example.com"
    )
    stripeline_env.settle()
    (completed,) = stripeline_env.events("checkout.session.completed")
    paid = completed.data["data"]["object"]
    assert paid["payment_status"] == "paid" and paid["client_reference_id"] == "order-7"
    intent = stripeline_env.mirror(paid["payment_intent"])
    assert intent is not None and intent["status"] == "succeeded" and intent["amount"] == 2500
    assert_all_processed(stripeline_env)


def _monthly_price(client: stripe.StripeClient, amount: int) -> str:
    product = client.v1.products.create({"name": "Pro"})
    price = client.v1.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount": amount,
            "recurring": {"interval": "month"},
        }
    )
    return price.id


def test_checkout_session_subscription(stripeline_env: StripelineEnv) -> None:
    client = stripeline_env.client
    price = _monthly_price(client, 900)
    session = client.v1.checkout.sessions.create(
        {
            "mode": "subscription",
            "success_url": "https://example.com/thanks",
            "customer_email": "sub@example.com",
            "line_items": [{"price": price, "quantity": 2}],
        }
    )
    assert session.status == "open" and session.amount_total == 1800
    with pytest.raises(SandboxControlError) as declined:
        stripeline_env.control(
            "POST",
            f"/_sandbox/checkout/sessions/{session.id}/complete",
            payment_method="pm_card_chargeDeclined",
        )
    assert declined.value.status == 402 and declined.value.error["code"] == "card_declined"
    assert client.v1.checkout.sessions.retrieve(session.id).status == "open"
    assert client.v1.subscriptions.list().data == []
    stripeline_env.advance_clock(1)
    stripeline_env.control("POST", f"/_sandbox/checkout/sessions/{session.id}/complete")
    stripeline_env.settle()
    (completed,) = stripeline_env.events("checkout.session.completed")
    done = completed.data["data"]["object"]
    assert done["payment_status"] == "paid" and done["subscription"] is not None
    assert done["customer_details"]["email"] == "sub@example.com"
    subscription = stripeline_env.mirror(done["subscription"])
    assert subscription is not None and subscription["status"] == "active"
    assert subscription["customer"] == done["customer"]
    assert subscription["items"]["data"][0]["quantity"] == 2
    invoice = stripeline_env.mirror(done["invoice"])
    assert invoice is not None and invoice["status"] == "paid" and invoice["amount_paid"] == 1800
    # One customer for the two attempts.
    assert len(client.v1.customers.list().data) == 1
    assert_all_processed(stripeline_env)


def test_checkout_session_expires(stripeline_env: StripelineEnv) -> None:
    client = stripeline_env.client
    line_items: list[Any] = [
        {"price_data": {"currency": "usd", "unit_amount": 700, "product_data": {"name": "A"}}}
    ]
    first = client.v1.checkout.sessions.create({"mode": "payment", "line_items": line_items})
    second = client.v1.checkout.sessions.create({"mode": "payment", "line_items": line_items})
    assert client.v1.checkout.sessions.expire(first.id).status == "expired"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.checkout.sessions.expire(first.id)
    stripeline_env.advance_clock(24 * 3600)
    assert client.v1.checkout.sessions.retrieve(second.id).status == "expired"
    with pytest.raises(SandboxControlError, match="expired"):
        stripeline_env.control("POST", f"/_sandbox/checkout/sessions/{second.id}/complete")
    stripeline_env.settle()
    assert types(stripeline_env) == {"checkout.session.expired": 2}
    assert_all_processed(stripeline_env)


def test_billing_portal_session(stripeline_env: StripelineEnv) -> None:
    client = stripeline_env.client
    customer = client.v1.customers.create({"email": "portal@example.com"})
    portal = client.v1.billing_portal.sessions.create(
        {"customer": customer.id, "return_url": "https://example.com/account"}
    )
    assert portal.url.startswith(stripeline_env.sandbox.url)
    assert isinstance(portal.configuration, str)
    assert portal.configuration.startswith("bpc_") and portal.customer == customer.id
    page = stripeline_env.control("GET", portal.url.removeprefix(stripeline_env.sandbox.url))
    assert page["customer"]["email"] == "portal@example.com"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.billing_portal.sessions.create({"customer": "cus_missing"})
    stripeline_env.settle()
    assert types(stripeline_env)["billing_portal.session.created"] == 1
