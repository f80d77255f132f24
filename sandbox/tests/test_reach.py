"""Requests integrations make against Stripe in every deployment (dj-stripe's,
among others): the key's own account in ``Stripe-Account``, fields Stripe only
includes when expanded, balance transactions."""

from __future__ import annotations

import pytest
import stripe

from stripeline_sandbox import Sandbox
from stripeline_sandbox._balance_transactions import CHARGE_AVAILABLE_AFTER


def _as(sandbox: Sandbox, key: str, account: str) -> stripe.StripeClient:
    return stripe.StripeClient(key, base_addresses={"api": sandbox.url}, stripe_account=account)


def test_own_account_in_stripe_account_is_the_account_itself(
    sandbox: Sandbox, key: str, client: stripe.StripeClient
) -> None:
    own = client.v1.accounts.retrieve_current().id
    as_own = _as(sandbox, key, own)
    assert as_own.v1.accounts.retrieve_current().id == own
    made = as_own.v1.customers.create({"email": "own@example.com"})
    # The same objects, with the header or without it.
    assert client.v1.customers.retrieve(made.id).email == "own@example.com"
    plain = client.v1.customers.create({"email": "plain@example.com"})
    assert as_own.v1.customers.retrieve(plain.id).id == plain.id
    assert {c.id for c in as_own.v1.customers.list().data} == {made.id, plain.id}
    assert sandbox.request_log(key=key)[-1] == ("GET", "/v1/customers", None)
    # Another account's id, never connected, is still refused as Stripe refuses it.
    other = stripe.StripeClient(sandbox.new_key(), base_addresses={"api": sandbox.url})
    foreign = other.v1.accounts.retrieve_current().id
    assert foreign != own
    with pytest.raises(stripe.PermissionError) as caught:
        _as(sandbox, key, foreign).v1.customers.list()
    assert caught.value.error is not None and caught.value.error.code == "account_invalid"


def test_expand_sources_subscriptions_tax_ids_on_a_customer(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create({"email": "src@example.com", "source": "tok_visa"})
    assert "sources" not in customer and "subscriptions" not in customer
    price = client.v1.prices.create(
        {"currency": "usd", "unit_amount": 900, "recurring": {"interval": "month"},
         "product_data": {"name": "Pro"}}
    )  # fmt: skip
    subscription = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": price.id}]}
    )
    ended = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": price.id}]}
    )
    client.v1.subscriptions.cancel(ended.id)
    expanded = client.v1.customers.retrieve(
        customer.id, {"expand": ["sources", "subscriptions", "tax_ids"]}
    )
    raw = expanded.to_dict()
    sources = raw["sources"]
    assert sources["object"] == "list" and sources["has_more"] is False
    assert sources["url"] == f"/v1/customers/{customer.id}/sources"
    assert [s["id"] for s in sources["data"]] == [customer.default_source]
    assert sources["data"][0]["object"] == "card" and sources["data"][0]["last4"] == "4242"
    subscriptions = raw["subscriptions"]
    assert [s["id"] for s in subscriptions["data"]] == [subscription.id]
    assert subscriptions["url"] == f"/v1/customers/{customer.id}/subscriptions"
    assert raw["tax_ids"] == {
        "object": "list",
        "data": [],
        "has_more": False,
        "url": f"/v1/customers/{customer.id}/tax_ids",
    }
    # A customer without sources: an empty list; in a list, along data.
    bare = client.v1.customers.create({"email": "bare@example.com"})
    listed = client.v1.customers.list({"expand": ["data.sources"]})
    by_id = {c.id: c.to_dict()["sources"] for c in listed.data}
    assert by_id[bare.id]["data"] == [] and len(by_id[customer.id]["data"]) == 1
    # Expanding further into the included list works as everywhere.
    deep = client.v1.customers.retrieve(customer.id, {"expand": ["subscriptions.data.customer"]})
    assert deep.to_dict()["subscriptions"]["data"][0]["customer"]["id"] == customer.id
    # A field the object does not have is still refused.
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.customers.retrieve(customer.id, {"expand": ["nonsense"]})
    assert caught.value.param == "expand"


def test_expand_line_items_on_a_checkout_session(client: stripe.StripeClient) -> None:
    price = client.v1.prices.create(
        {"currency": "usd", "unit_amount": 500, "product_data": {"name": "Book"}}
    )
    session = client.v1.checkout.sessions.create(
        {"mode": "payment", "line_items": [{"price": price.id, "quantity": 2}],
         "success_url": "https://example.com/ok"}
    )  # fmt: skip
    assert "line_items" not in session
    expanded = client.v1.checkout.sessions.retrieve(session.id, {"expand": ["line_items"]})
    items = expanded.to_dict()["line_items"]
    assert items["url"] == f"/v1/checkout/sessions/{session.id}/line_items"
    listed = client.v1.checkout.sessions.line_items.list(session.id)
    assert items["data"] == listed.to_dict()["data"] and items["data"][0]["quantity"] == 2


def test_a_captured_charge_has_a_balance_transaction(
    sandbox: Sandbox, client: stripe.StripeClient
) -> None:
    intent = client.v1.payment_intents.create(
        {"amount": 2000, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True}
    )
    charge = client.v1.charges.retrieve(str(intent.latest_charge))
    assert isinstance(charge.balance_transaction, str)
    assert charge.balance_transaction.startswith("txn_")
    txn = client.v1.balance_transactions.retrieve(charge.balance_transaction)
    assert txn.object == "balance_transaction"
    assert (txn.amount, txn.currency, txn.fee, txn.net) == (2000, "usd", 88, 1912)
    assert (txn.type, txn.reporting_category, txn.source) == ("charge", "charge", charge.id)
    assert txn.fee_details[0].type == "stripe_fee" and txn.fee_details[0].amount == 88
    assert txn.created == charge.created
    assert txn.available_on == txn.created + CHARGE_AVAILABLE_AFTER
    assert txn.status == "pending"
    expanded = client.v1.charges.retrieve(charge.id, {"expand": ["balance_transaction"]})
    assert isinstance(expanded.balance_transaction, stripe.BalanceTransaction)
    assert expanded.balance_transaction.id == txn.id
    refund = client.v1.refunds.create({"charge": charge.id, "amount": 500})
    assert isinstance(refund.balance_transaction, str)
    back = client.v1.balance_transactions.retrieve(refund.balance_transaction)
    assert (back.amount, back.fee, back.net, back.type, back.source) == (
        -500, 0, -500, "refund", refund.id,
    )  # fmt: skip
    assert [t.id for t in client.v1.balance_transactions.list().data] == [back.id, txn.id]
    only = client.v1.balance_transactions.list({"type": "charge"})
    assert [t.id for t in only.data] == [txn.id]
    by_source = client.v1.balance_transactions.list({"source": refund.id})
    assert [t.id for t in by_source.data] == [back.id]
    sandbox.advance_clock(CHARGE_AVAILABLE_AFTER)
    assert client.v1.balance_transactions.retrieve(txn.id).status == "available"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.balance_transactions.retrieve("txn_missing")
    assert caught.value.code == "resource_missing"


def test_a_charge_captured_later_names_its_balance_transaction_then(
    client: stripe.StripeClient,
) -> None:
    intent = client.v1.payment_intents.create(
        {"amount": 5000, "currency": "eur", "payment_method": "pm_card_visa",
         "capture_method": "manual", "confirm": True}
    )  # fmt: skip
    assert client.v1.charges.retrieve(str(intent.latest_charge)).balance_transaction is None
    assert client.v1.balance_transactions.list().data == []
    client.v1.payment_intents.capture(intent.id, {"amount_to_capture": 3000})
    charge = client.v1.charges.retrieve(str(intent.latest_charge))
    txn = client.v1.balance_transactions.retrieve(str(charge.balance_transaction))
    assert (txn.amount, txn.currency, txn.fee, txn.source) == (3000, "eur", 117, charge.id)
    legacy = client.v1.charges.create(
        {"amount": 1000, "currency": "usd", "source": "tok_visa", "capture": False}
    )
    assert legacy.balance_transaction is None
    legacy = client.v1.charges.capture(legacy.id)
    legacy_txn = client.v1.balance_transactions.retrieve(str(legacy.balance_transaction))
    assert (legacy_txn.amount, legacy_txn.net, legacy_txn.source) == (1000, 941, legacy.id)


def test_a_failed_refund_has_a_failure_balance_transaction(client: stripe.StripeClient) -> None:
    paid = client.v1.payment_intents.create(
        {"amount": 700, "currency": "usd", "payment_method": "pm_card_refundFail", "confirm": True}
    )
    refund = client.v1.refunds.create({"payment_intent": paid.id})
    assert refund.status == "failed"
    failure = client.v1.balance_transactions.retrieve(str(refund.failure_balance_transaction))
    assert (failure.amount, failure.type, failure.source) == (700, "refund_failure", refund.id)
