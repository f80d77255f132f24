"""Client code written for real Stripe: Stripe.js-style calls with the publishable
key, older API versions, legacy and Connect APIs, every documented test card."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, cast

import pytest
import stripe

from stripeline_sandbox import Sandbox

from .conftest import Receiver, control


def raw(
    sandbox: Sandbox,
    method: str,
    path: str,
    key: str | None = None,
    **params: str,
) -> tuple[int, Any]:
    """Call the sandbox over plain HTTP as Stripe.js does (form body, ``key`` param
    when no Authorization header); return (status, JSON body)."""
    query = urllib.parse.urlencode(params)
    data = query.encode() if method == "POST" else None
    url = sandbox.url + path + ("" if method == "POST" or not query else "?" + query)
    all_headers = {}
    if key is not None:
        all_headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url, data=data, method=method, headers=all_headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - local
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


# -- 1. Stripe.js-style calls ----------------------------------------------------


def test_each_account_has_a_publishable_key_paired_with_its_secret_key(
    sandbox: Sandbox, key: str
) -> None:
    publishable = sandbox.publishable_key_for(key)
    assert publishable.startswith("pk_test_") and len(publishable) > 20
    assert publishable == sandbox.publishable_key_for(key)
    assert publishable != sandbox.publishable_key_for(sandbox.new_key())
    assert sandbox.publishable_key == sandbox.publishable_key_for(sandbox.secret_key)
    assert key[8:] not in publishable


def test_publishable_key_confirms_with_the_client_secret_and_is_refused_elsewhere(
    sandbox: Sandbox, key: str, client: stripe.StripeClient
) -> None:
    intent = client.v1.payment_intents.create({"amount": 1500, "currency": "usd"})
    publishable = sandbox.publishable_key_for(key)
    # Stripe.js: the key as a form parameter, the client secret, payment_method_data.
    status, body = raw(
        sandbox,
        "POST",
        f"/v1/payment_intents/{intent.id}/confirm",
        **{
            "key": publishable,
            "client_secret": str(intent.client_secret),
            "payment_method_data[type]": "card",
            "payment_method_data[card][token]": "tok_visa",
        },
    )
    assert status == 200, body
    assert body["status"] == "succeeded" and body["payment_method"].startswith("pm_")
    assert client.v1.payment_intents.retrieve(intent.id).status == "succeeded"
    method = client.v1.payment_methods.retrieve(body["payment_method"])
    assert method.card is not None and method.card.last4 == "4242"
    # Retrieving by client secret, with the key as a bearer token this time.
    status, body = raw(
        sandbox,
        "GET",
        f"/v1/payment_intents/{intent.id}",
        key=publishable,
        client_secret=str(intent.client_secret),
    )
    assert status == 200 and body["id"] == intent.id
    # The same key on a secret-key endpoint: Stripe's 401.
    status, body = raw(sandbox, "GET", "/v1/customers", key=publishable)
    assert status == 401
    assert "cannot be made with a publishable API key" in body["error"]["message"]
    publishable_client = stripe.StripeClient(publishable, base_addresses={"api": sandbox.url})
    with pytest.raises(stripe.AuthenticationError):
        publishable_client.v1.customers.list()


def test_publishable_key_needs_the_matching_client_secret(
    sandbox: Sandbox, key: str, client: stripe.StripeClient
) -> None:
    intent = client.v1.payment_intents.create({"amount": 1500, "currency": "usd"})
    publishable = sandbox.publishable_key_for(key)
    path = f"/v1/payment_intents/{intent.id}/confirm"
    status, body = raw(sandbox, "POST", path, key=publishable, payment_method="pm_card_visa")
    assert status == 400 and body["error"]["param"] == "client_secret"
    status, body = raw(
        sandbox,
        "POST",
        path,
        key=publishable,
        payment_method="pm_card_visa",
        client_secret=f"{intent.id}_secret_wrong",
    )
    assert status == 400 and body["error"]["param"] == "client_secret"
    assert "does not match" in body["error"]["message"]
    assert client.v1.payment_intents.retrieve(intent.id).status == "requires_payment_method"
    # Another account's publishable key does not see the intent; an unknown key is refused.
    other = sandbox.publishable_key_for(sandbox.new_key())
    status, body = raw(sandbox, "POST", path, key=other, client_secret=str(intent.client_secret))
    assert status == 404
    status, body = raw(sandbox, "GET", "/v1/payment_intents", key="pk_test_" + "x" * 30)
    assert status == 401 and "Invalid API Key" in body["error"]["message"]


def test_setup_intent_confirmed_with_the_publishable_key(
    sandbox: Sandbox, key: str, client: stripe.StripeClient
) -> None:
    customer = client.v1.customers.create({"email": "s@example.com"})
    setup = client.v1.setup_intents.create({"customer": customer.id})
    publishable = sandbox.publishable_key_for(key)
    status, body = raw(
        sandbox,
        "POST",
        f"/v1/setup_intents/{setup.id}/confirm",
        key=publishable,
        client_secret="seti_wrong_secret_x",
        payment_method="pm_card_visa",
    )
    assert status == 400 and body["error"]["param"] == "client_secret"
    status, body = raw(
        sandbox,
        "POST",
        f"/v1/setup_intents/{setup.id}/confirm",
        key=publishable,
        **{
            "client_secret": str(setup.client_secret),
            "payment_method_data[type]": "card",
            "payment_method_data[card][token]": "tok_mastercard",
        },
    )
    assert status == 200 and body["status"] == "succeeded", body
    methods = client.v1.customers.payment_methods.list(customer.id)
    assert [m.card.last4 for m in methods.data if m.card] == ["4444"]
    # A PaymentMethod created with the publishable key, as Stripe.js's createPaymentMethod.
    status, body = raw(
        sandbox, "POST", "/v1/payment_methods", key=publishable, type="card",
        **{"card[token]": "tok_amex"},
    )  # fmt: skip
    assert status == 200 and body["card"]["brand"] == "amex"


def test_payment_method_data_on_a_secret_key_confirm(client: stripe.StripeClient) -> None:
    intent = client.v1.payment_intents.create(
        {
            "amount": 2500,
            "currency": "usd",
            "confirm": True,
            "payment_method_data": {"type": "card", "card": {"token": "tok_visa"}},  # type: ignore[typeddict-unknown-key]
        }
    )
    assert intent.status == "succeeded"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.payment_intents.create(
            {
                "amount": 2500,
                "currency": "usd",
                "confirm": True,
                "payment_method_data": {"type": "card", "card": {"token": "tok_nope"}},  # type: ignore[typeddict-unknown-key]
            }
        )
    assert caught.value.param == "payment_method_data[card][token]"


@pytest.mark.parametrize("ui_mode", ["embedded", "elements"])
def test_checkout_session_in_embedded_modes_keeps_return_url(
    client: stripe.StripeClient, ui_mode: str
) -> None:
    session = client.v1.checkout.sessions.create(
        {
            "mode": "payment",
            "ui_mode": ui_mode,
            "return_url": "https://shop.example/return?session_id={CHECKOUT_SESSION_ID}",
            "adaptive_pricing": {"enabled": True},
            "line_items": [
                {
                    "price_data": {
                        "currency": "usd",
                        "unit_amount": 1200,
                        "product_data": {"name": "Tee"},
                    },
                    "quantity": 1,
                }
            ],
        }
    )
    assert session.ui_mode == ui_mode
    assert session.client_secret and session.client_secret.startswith(session.id)
    assert session.url is None
    again = client.v1.checkout.sessions.retrieve(session.id)
    assert again.return_url == "https://shop.example/return?session_id={CHECKOUT_SESSION_ID}"
    assert again.adaptive_pricing is not None and again.adaptive_pricing.enabled is True
    assert again.redirect_on_completion == "always"


def test_checkout_session_return_url_rules(client: stripe.StripeClient) -> None:
    items = [
        {
            "price_data": {"currency": "usd", "unit_amount": 900, "product_data": {"name": "x"}},
            "quantity": 1,
        }
    ]
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.checkout.sessions.create(
            cast(Any, {"mode": "payment", "ui_mode": "embedded", "line_items": items})
        )
    assert caught.value.param == "return_url"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.checkout.sessions.create(
            cast(Any, {"mode": "payment", "return_url": "https://x.example", "line_items": items})
        )
    assert caught.value.param == "return_url"
    hosted = client.v1.checkout.sessions.create(
        cast(Any, {"mode": "payment", "success_url": "https://x.example/ok", "line_items": items})
    )
    assert hosted.client_secret is None and hosted.adaptive_pricing is not None
    assert hosted.adaptive_pricing.enabled is False


# -- 2. Older API versions -----------------------------------------------------

OLD = "2022-08-01"


@pytest.fixture
def old_client(
    sandbox: Sandbox, key: str, http_client: stripe.RequestsClient
) -> stripe.StripeClient:
    """An application pinned to an older API version (``stripe.api_version = ...``)."""
    return stripe.StripeClient(
        key, base_addresses={"api": sandbox.url}, http_client=http_client, stripe_version=OLD
    )


def _monthly_price(client: stripe.StripeClient, amount: int = 1000) -> stripe.Price:
    return client.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount": amount,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Plan"},
        }
    )


def test_app_pinned_to_2022_08_01_reads_latest_invoice_payment_intent(
    sandbox: Sandbox, key: str, old_client: stripe.StripeClient, client: stripe.StripeClient
) -> None:
    customer = old_client.v1.customers.create({"email": "old@example.com"})
    price = _monthly_price(old_client)
    subscription = old_client.v1.subscriptions.create(
        {
            "customer": customer.id,
            "items": [{"price": price.id}],
            "payment_behavior": "default_incomplete",
            "expand": ["latest_invoice.payment_intent"],
        }
    )
    assert subscription.status == "incomplete"
    assert subscription["current_period_end"] > subscription["current_period_start"]
    invoice = subscription.latest_invoice
    assert isinstance(invoice, stripe.Invoice)
    assert invoice["subscription"] == subscription.id and invoice["paid"] is False
    intent = invoice["payment_intent"]
    assert isinstance(intent, stripe.PaymentIntent) and intent.amount == 1000
    assert intent["invoice"] == invoice.id
    assert intent["charges"]["total_count"] == 0
    # The browser confirms with the publishable key and that client secret.
    status, body = raw(
        sandbox,
        "POST",
        f"/v1/payment_intents/{intent.id}/confirm",
        key=sandbox.publishable_key_for(key),
        client_secret=str(intent.client_secret),
        payment_method="pm_card_visa",
    )
    assert status == 200 and body["status"] == "succeeded", body
    assert old_client.v1.subscriptions.retrieve(subscription.id).status == "active"
    paid = old_client.v1.invoices.retrieve(invoice.id, {"expand": ["charge"]})
    assert paid["paid"] is True and paid["payment_intent"] == intent.id
    assert isinstance(paid["charge"], stripe.Charge) and paid["charge"]["invoice"] == invoice.id
    line = paid.lines.data[0]
    assert line["price"]["id"] == price.id and line["plan"]["interval"] == "month"
    assert line["type"] == "subscription" and line["subscription_item"]
    charged = old_client.v1.payment_intents.retrieve(intent.id)
    assert [c["id"] for c in charged["charges"]["data"]] == [charged.latest_charge]
    # The same objects in the current version: the old fields are not there, and
    # expanding an old path is refused as on Stripe.
    current = client.v1.invoices.retrieve(invoice.id)
    assert "payment_intent" not in current and "subscription" not in current
    assert "current_period_end" not in client.v1.subscriptions.retrieve(subscription.id)
    assert "charges" not in client.v1.payment_intents.retrieve(intent.id)
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.subscriptions.retrieve(
            subscription.id, {"expand": ["latest_invoice.payment_intent"]}
        )
    assert "cannot be expanded" in str(caught.value.user_message)


def test_version_header_on_raw_requests_and_the_answer(sandbox: Sandbox, key: str) -> None:
    intent = stripe.StripeClient(key, base_addresses={"api": sandbox.url}).v1.payment_intents
    created = intent.create({"amount": 900, "currency": "usd", "confirm": True,
                             "payment_method": "pm_card_visa"})  # fmt: skip
    request = urllib.request.Request(  # noqa: S310 - the local sandbox
        f"{sandbox.url}/v1/payment_intents/{created.id}",
        headers={"Authorization": f"Bearer {key}", "Stripe-Version": "2020-08-27"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
        assert response.headers["Stripe-Version"] == "2020-08-27"
        body = json.loads(response.read())
    assert body["charges"]["data"][0]["paid"] is True
    # Without the header: the current shapes.
    status, body = raw(sandbox, "GET", f"/v1/payment_intents/{created.id}", key=key)
    assert status == 200 and "charges" not in body


def test_webhook_endpoint_with_an_older_api_version_gets_older_event_shapes(
    client: stripe.StripeClient,
) -> None:
    old = Receiver("unset")
    try:
        endpoint = client.v1.webhook_endpoints.create(
            {"url": old.url, "enabled_events": ["invoice.paid"], "api_version": OLD}  # type: ignore[typeddict-item]
        )
        old.secret = str(endpoint.secret)
        customer = client.v1.customers.create({"email": "hook@example.com"})
        client.v1.payment_methods.attach("pm_card_visa", {"customer": customer.id})
        methods = client.v1.customers.payment_methods.list(customer.id)
        client.v1.customers.update(
            customer.id, {"invoice_settings": {"default_payment_method": methods.data[0].id}}
        )
        subscription = client.v1.subscriptions.create(
            {"customer": customer.id, "items": [{"price": _monthly_price(client).id}]}
        )
        (event,) = old.wait_for_type("invoice.paid")
        assert event["api_version"] == OLD
        invoice = event["data"]["object"]
        assert invoice["subscription"] == subscription.id and invoice["paid"] is True
        assert str(invoice["payment_intent"]).startswith("pi_")
    finally:
        old.close()


# -- 3. APIs still in use --------------------------------------------------------


def test_legacy_charge_with_a_source_token_and_its_events(
    sandbox: Sandbox, key: str, client: stripe.StripeClient, receiver: Receiver
) -> None:
    charge = client.v1.charges.create(
        {"amount": 2000, "currency": "usd", "source": "tok_visa", "description": "Legacy"}
    )
    assert charge.status == "succeeded" and charge.paid and charge.captured
    assert charge.payment_intent is None
    assert charge["source"]["object"] == "card" and charge["source"]["brand"] == "Visa"
    assert charge.payment_method == charge["source"]["id"]
    refund = client.v1.refunds.create({"charge": charge.id, "amount": 500})
    assert refund.status == "succeeded"
    assert client.v1.charges.retrieve(charge.id).amount_refunded == 500
    # Authorise, then capture part of it.
    held = client.v1.charges.create(
        {"amount": 3000, "currency": "usd", "source": "tok_mastercard", "capture": False}
    )
    assert held.captured is False and held.status == "succeeded"
    captured = client.v1.charges.capture(held.id, {"amount": 2500})
    assert captured.captured and captured.amount_captured == 2500
    # A decline token: a failed charge and Stripe's card error.
    with pytest.raises(stripe.CardError) as caught:
        client.v1.charges.create(
            {"amount": 2000, "currency": "usd", "source": "tok_chargeDeclined"}
        )
    assert caught.value.code == "card_declined"
    failed_id = caught.value.error.charge if caught.value.error else None
    assert failed_id and client.v1.charges.retrieve(failed_id).status == "failed"
    # A token made from a card number (Stripe.js with the publishable key), used once.
    status, token = raw(
        sandbox, "POST", "/v1/tokens", key=sandbox.publishable_key_for(key),
        **{"card[number]": "4000000000009995", "card[exp_month]": "12", "card[exp_year]": "2031",
           "card[cvc]": "123"},
    )  # fmt: skip
    assert status == 200 and token["card"]["last4"] == "9995"
    with pytest.raises(stripe.CardError) as caught:
        client.v1.charges.create({"amount": 2000, "currency": "usd", "source": token["id"]})
    assert (
        caught.value.error is not None and caught.value.error.decline_code == "insufficient_funds"
    )
    with pytest.raises(stripe.InvalidRequestError, match="more than once"):
        client.v1.charges.create({"amount": 2000, "currency": "usd", "source": token["id"]})
    events = receiver.wait_for(lambda es: len(es) >= 7)
    assert [e["type"] for e in events] == [
        "charge.succeeded",
        "refund.created",
        "charge.refunded",
        "charge.succeeded",
        "charge.captured",
        "charge.failed",
        "charge.failed",
    ]


def test_plans_are_recurring_prices(client: stripe.StripeClient, receiver: Receiver) -> None:
    plan = client.v1.plans.create(
        {
            "id": "gold-monthly",
            "amount": 1500,
            "currency": "usd",
            "interval": "month",
            "product": {"name": "Gold"},
            "nickname": "Gold",
        }
    )
    assert plan.id == "gold-monthly" and plan.amount == 1500 and plan.interval == "month"
    assert client.v1.prices.retrieve("gold-monthly").unit_amount == 1500
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.plans.create(
            {"id": "gold-monthly", "amount": 1, "currency": "usd", "interval": "month",
             "product": plan.product if isinstance(plan.product, str) else ""}
        )  # fmt: skip
    assert caught.value.code == "resource_already_exists"
    updated = client.v1.plans.update("gold-monthly", {"nickname": "Gold plan"})
    assert updated.nickname == "Gold plan"
    assert [p.id for p in client.v1.plans.list().data] == ["gold-monthly"]
    # Legacy subscription parameters naming the plan.
    customer = client.v1.customers.create(
        {"email": "p@example.com", "payment_method": "pm_card_visa",
         "invoice_settings": {"default_payment_method": "pm_card_visa"}}
    )  # fmt: skip
    subscription = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"plan": "gold-monthly"}]}
    )
    assert subscription.status == "active"
    assert subscription["items"].data[0].plan.id == "gold-monthly"
    deleted = client.v1.plans.delete("gold-monthly")
    assert deleted.deleted is True
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.plans.retrieve("gold-monthly")
    receiver.wait_for_type("plan.deleted")
    types = receiver.types()
    assert "plan.created" in types and "plan.updated" in types and "plan.deleted" in types


def test_connected_accounts_events_reach_the_platforms_connect_endpoint(
    sandbox: Sandbox, key: str, client: stripe.StripeClient
) -> None:
    platform_hook = Receiver("unset")
    try:
        endpoint = client.v1.webhook_endpoints.create(
            {"url": platform_hook.url, "enabled_events": ["customer.created"], "connect": True}
        )
        platform_hook.secret = str(endpoint.secret)
        account = client.v1.accounts.create({"type": "standard"})
        connected = stripe.StripeClient(
            key, base_addresses={"api": sandbox.url}, stripe_account=account.id
        )
        theirs = connected.v1.customers.create({"email": "c@example.com"})
        client.v1.customers.create({"email": "platform-own@example.com"})
        (event,) = platform_hook.wait_for_type("customer.created")
        assert event["account"] == account.id and event["data"]["object"]["id"] == theirs.id
        assert sandbox.wait_for_deliveries()
        assert connected.v1.events.retrieve(event["id"]).pending_webhooks == 0
    finally:
        platform_hook.close()


def test_connect_accounts_links_header_and_destination_charges(
    sandbox: Sandbox, key: str, client: stripe.StripeClient, receiver: Receiver
) -> None:
    account = client.v1.accounts.create(
        {"type": "express", "country": "US", "email": "seller@example.com",
         "capabilities": {"card_payments": {"requested": True}, "transfers": {"requested": True}}}
    )  # fmt: skip
    assert account.id.startswith("acct_") and account.type == "express"
    assert account.charges_enabled is False and account.details_submitted is False
    assert [a.id for a in client.v1.accounts.list().data] == [account.id]
    link = client.v1.account_links.create(
        {"account": account.id, "type": "account_onboarding",
         "refresh_url": "https://shop.example/reauth", "return_url": "https://shop.example/done"}
    )  # fmt: skip
    assert link.url.startswith(sandbox.url) and link.expires_at > link.created
    page = json.loads(
        urllib.request.urlopen(  # noqa: S310 - the local sandbox
            urllib.request.Request(link.url, headers={"Authorization": f"Bearer {key}"}),  # noqa: S310
            timeout=5,
        ).read()
    )
    assert page["return_url"] == "https://shop.example/done"
    status, onboarded = raw(sandbox, "POST", page["onboard"], key=key)
    assert status == 200 and onboarded["charges_enabled"] is True
    login = client.v1.accounts.login_links.create(account.id)
    assert login.url.startswith(sandbox.url)
    client.v1.accounts.update(account.id, {"metadata": {"seller": "42"}})
    # The Stripe-Account header: the connected account's own objects.
    connected = stripe.StripeClient(
        key, base_addresses={"api": sandbox.url}, stripe_account=account.id
    )
    their_customer = connected.v1.customers.create({"email": "buyer@example.com"})
    assert [c.id for c in connected.v1.customers.list().data] == [their_customer.id]
    assert client.v1.customers.list().data == []
    with pytest.raises(stripe.PermissionError):
        stripe.StripeClient(
            key, base_addresses={"api": sandbox.url}, stripe_account="acct_nope"
        ).v1.customers.list()
    # Destination charges: a PaymentIntent and a legacy charge.
    intent = client.v1.payment_intents.create(
        {"amount": 10000, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True,
         "application_fee_amount": 1000, "transfer_data": {"destination": account.id}}
    )  # fmt: skip
    assert intent.status == "succeeded" and intent.application_fee_amount == 1000
    charge = client.v1.charges.retrieve(str(intent.latest_charge))
    assert charge.transfer_data is not None and charge.transfer_data.destination == account.id
    transfer = client.v1.transfers.retrieve(str(charge.transfer))
    assert transfer.amount == 9000 and transfer.destination == account.id
    legacy = client.v1.charges.create(
        {"amount": 5000, "currency": "usd", "source": "tok_visa",
         "transfer_data": {"destination": account.id}}
    )  # fmt: skip
    assert client.v1.transfers.retrieve(str(legacy.transfer)).amount == 5000
    direct = client.v1.transfers.create(
        {"amount": 700, "currency": "usd", "destination": account.id}
    )
    listed = client.v1.transfers.list({"destination": account.id})
    assert listed.data[0].id == direct.id and len(listed.data) == 3
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.payment_intents.create(
            {"amount": 1000, "currency": "usd", "transfer_data": {"destination": "acct_nope"}}
        )
    updates = receiver.wait_for(lambda es: sum(e["type"] == "account.updated" for e in es) == 2)
    assert all(e["account"] == account.id for e in updates if e["type"] == "account.updated")
    assert sum(e["type"] == "transfer.created" for e in receiver.wait_for(
        lambda es: sum(e["type"] == "transfer.created" for e in es) == 3)) == 3  # fmt: skip
    events = sandbox.event_types(sandbox.event_ids(key=account.id), key=account.id)
    assert events == ["customer.created"]
    (created,) = [
        e for e in sandbox.account(account.id).all("event") if e["type"] == "customer.created"
    ]
    assert created["account"] == account.id


# -- 4. Every documented test card ---------------------------------------------

OK = ("succeeded",)
#: Stripe's testing docs: (test PaymentMethod, card number, what a payment does).
TEST_CARDS: list[tuple[str, str, tuple[str, ...]]] = [
    ("pm_card_visa", "4242424242424242", OK),
    ("pm_card_visa_debit", "4000056655665556", OK),
    ("pm_card_mastercard", "5555555555554444", OK),
    ("pm_card_mastercard_debit", "5200828282828210", OK),
    ("pm_card_mastercard_prepaid", "5105105105105100", OK),
    ("pm_card_amex", "378282246310005", OK),
    ("pm_card_discover", "6011111111111117", OK),
    ("pm_card_diners", "3056930009020004", OK),
    ("pm_card_jcb", "3566002020360505", OK),
    ("pm_card_unionpay", "6200000000000005", OK),
    ("pm_card_us", "4242424242424242", OK),
    ("pm_card_br", "4000000760000002", OK),
    ("pm_card_ca", "4000001240000000", OK),
    ("pm_card_mx", "4000004840008001", OK),
    ("pm_card_gb", "4000008260000000", OK),
    ("pm_card_de", "4000002760000016", OK),
    ("pm_card_fr", "4000002500000003", OK),
    ("pm_card_jp", "4000003920000003", OK),
    ("pm_card_au", "4000000360000006", OK),
    ("pm_card_in", "4000003560000008", OK),
    ("pm_card_visa_chargeDeclined", "4000000000000002", ("declined", "card_declined", "generic_decline")),
    ("pm_card_visa_chargeDeclinedInsufficientFunds", "4000000000009995", ("declined", "card_declined", "insufficient_funds")),
    ("pm_card_visa_chargeDeclinedLostCard", "4000000000009987", ("declined", "card_declined", "lost_card")),
    ("pm_card_visa_chargeDeclinedStolenCard", "4000000000009979", ("declined", "card_declined", "stolen_card")),
    ("pm_card_chargeDeclinedExpiredCard", "4000000000000069", ("declined", "expired_card", "expired_card")),
    ("pm_card_chargeDeclinedIncorrectCvc", "4000000000000127", ("declined", "incorrect_cvc", "incorrect_cvc")),
    ("pm_card_chargeDeclinedProcessingError", "4000000000000119", ("declined", "processing_error", "processing_error")),
    ("pm_card_visa_chargeDeclinedVelocityLimitExceeded", "4000000000006975", ("declined", "card_declined", "card_velocity_exceeded")),
    ("pm_card_chargeCustomerFail", "4000000000000341", ("declined", "card_declined", "generic_decline")),
    ("pm_card_radarBlock", "4100000000000019", ("blocked",)),
    ("pm_card_riskLevelHighest", "4000000000004954", ("blocked",)),
    ("pm_card_riskLevelElevated", "4000000000009235", ("risk", "elevated")),
    ("pm_card_cvcCheckFail", "4000000000000101", ("checks", "cvc_check", "fail")),
    ("pm_card_avsZipFail", "4000000000000036", ("checks", "address_postal_code_check", "fail")),
    ("pm_card_avsLine1Fail", "4000000000000028", ("checks", "address_line1_check", "fail")),
    ("pm_card_avsFail", "4000000000000010", ("checks", "address_postal_code_check", "fail")),
    ("pm_card_avsUnchecked", "4000000000000044", ("checks", "address_line1_check", "unavailable")),
    ("pm_card_createDispute", "4000000000000259", ("dispute", "fraudulent")),
    ("pm_card_createDisputeProductNotReceived", "4000000000002685", ("dispute", "product_not_received")),
    ("pm_card_createDisputeInquiry", "4000000000001976", ("dispute", "general")),
    ("pm_card_createIssuerFraudRecord", "4000000000005423", ("early_fraud_warning",)),
    ("pm_card_refundFail", "4000000000005126", ("refund", "failed")),
    ("pm_card_pendingRefund", "4000000000007726", OK),
    ("pm_card_bypassPending", "4000000000000077", OK),
    ("pm_card_bypassPendingInternational", "4000003720000278", OK),
    ("pm_card_authenticationRequiredOnSetup", "4000002500003155", ("3ds",)),
    ("pm_card_authenticationRequired", "4000002760003184", ("3ds",)),
    ("pm_card_authenticationRequiredSetupForOffSession", "4000003800000446", ("3ds", "off_session_ok")),
    ("pm_card_authenticationRequiredChargeDeclinedInsufficientFunds", "4000008260003178", ("3ds", "insufficient_funds")),
    ("pm_card_threeDSecure2Required", "4000000000003220", ("3ds",)),
    ("pm_card_threeDSecureRequired", "4000000000003063", ("3ds",)),
    ("pm_card_threeDSecureRequiredChargeDeclined", "4000008400001629", ("3ds", "generic_decline")),
    ("pm_card_threeDSecureRequiredProcessingError", "4000008400001280", ("3ds", "processing_error")),
    ("pm_card_threeDSecureOptional", "4000000000003055", OK),
    ("pm_card_threeDSecureOptionalProcessingError", "4000000000003097", ("declined", "processing_error", "processing_error")),
    ("pm_card_amex_threeDSecureNotSupported", "378282246310005", OK),
]  # fmt: skip


def _pay(client: stripe.StripeClient, payment_method: str, **extra: Any) -> stripe.PaymentIntent:
    params: Any = {"amount": 2000, "currency": "usd", "payment_method": payment_method,
                   "confirm": True, **extra}  # fmt: skip
    return client.v1.payment_intents.create(params)


@pytest.mark.parametrize("spelling", ["id", "number"])
@pytest.mark.parametrize(
    ("test_id", "number", "expected"), TEST_CARDS, ids=[c[0] for c in TEST_CARDS]
)
def test_documented_test_card(
    sandbox: Sandbox,
    key: str,
    client: stripe.StripeClient,
    spelling: str,
    test_id: str,
    number: str,
    expected: tuple[str, ...],
) -> None:
    if spelling == "id":
        method_id = test_id
        method = client.v1.payment_methods.retrieve(test_id)
    else:
        method = client.v1.payment_methods.create(
            {"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2034, "cvc": "123"}}
        )  # fmt: skip
        method_id = method.id
    assert method.card is not None and method.card.last4 == number[-4:]
    kind = expected[0]
    if kind in ("declined", "blocked"):
        with pytest.raises(stripe.CardError) as caught:
            _pay(client, method_id)
        error = caught.value.error
        assert error is not None
        wanted = ("card_declined", "fraudulent") if kind == "blocked" else expected[1:]
        assert (error.code, error.decline_code) == wanted
        charge = client.v1.charges.retrieve(str(error.charge))
        assert charge.status == "failed"
        if kind == "blocked":
            assert charge.outcome is not None and charge.outcome.type == "blocked"
            assert charge.outcome.risk_level == "highest"
        return
    if kind == "3ds":
        intent = _pay(client, method_id)
        assert intent.status == "requires_action"
        authenticated = control(
            sandbox, key, "POST", f"/_sandbox/payment_intents/{intent.id}/authenticate"
        )
        if len(expected) > 1 and expected[1] != "off_session_ok":
            assert authenticated["status"] == "requires_payment_method"
            assert authenticated["last_payment_error"]["decline_code"] == expected[1]
        else:
            assert authenticated["status"] == "succeeded"
        if expected[1:] == ("off_session_ok",):
            # Set up for off-session already: a merchant-initiated payment goes through.
            customer = client.v1.customers.create({"email": "off@example.com"})
            fresh = client.v1.payment_methods.create(
                {"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2034}}
            )
            client.v1.payment_methods.attach(fresh.id, {"customer": customer.id})
            off = _pay(client, fresh.id, customer=customer.id, off_session=True)
            assert off.status == "succeeded"
        return
    intent = _pay(client, method_id)
    assert intent.status == "succeeded"
    charge = client.v1.charges.retrieve(str(intent.latest_charge))
    if kind == "risk":
        assert charge.outcome is not None and charge.outcome.risk_level == expected[1]
    elif kind == "checks":
        checks = client.v1.payment_methods.retrieve(str(intent.payment_method)).card
        assert checks is not None and getattr(checks.checks, expected[1]) == expected[2]
    elif kind == "dispute":
        disputes = client.v1.disputes.list({"charge": charge.id}).data
        assert [d.reason for d in disputes] == [expected[1]]
    elif kind == "early_fraud_warning":
        warnings = client.v1.radar.early_fraud_warnings.list({"charge": charge.id}).data
        assert len(warnings) == 1 and warnings[0].fraud_type == "unauthorized_use_of_card"
    elif kind == "refund":
        refund = client.v1.refunds.create({"charge": charge.id})
        assert client.v1.refunds.retrieve(refund.id).status == expected[1]
    else:
        assert charge.paid and charge.payment_method_details is not None


def test_setup_intents_ask_for_3ds_only_on_cards_that_need_it_on_setup(
    client: stripe.StripeClient,
) -> None:
    customer = client.v1.customers.create({"email": "setup@example.com"})
    outcomes = {}
    for method in (
        "pm_card_authenticationRequiredSetupForOffSession",
        "pm_card_threeDSecureOptional",
        "pm_card_authenticationRequiredOnSetup",
        "pm_card_authenticationRequired",
    ):
        setup = client.v1.setup_intents.create(
            {"customer": customer.id, "payment_method": method, "confirm": True}
        )
        outcomes[method] = setup.status
    assert outcomes == {
        "pm_card_authenticationRequiredSetupForOffSession": "succeeded",
        "pm_card_threeDSecureOptional": "succeeded",
        "pm_card_authenticationRequiredOnSetup": "requires_action",
        "pm_card_authenticationRequired": "requires_action",
    }


def test_the_documented_publishable_key_example_runs() -> None:
    """docs/sandbox.md's Stripe.js example, run as written (when the docs are there)."""
    import pathlib
    import re

    docs = pathlib.Path(__file__).resolve().parents[2] / "docs" / "sandbox.md"
    if not docs.exists():
        pytest.skip("the repository's docs are not next to this sandbox")
    section = docs.read_text().split("## Publishable keys", 1)[1].split("\n## ", 1)[0]
    (example,) = re.findall(r"```python\n(.*?)```", section, re.S)
    exec(compile(example, str(docs), "exec"), {})  # noqa: S102 - our own documentation


# -- 5. Completion helpers -------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def test_checkout_completion_answers_with_the_success_url_redirect(
    sandbox: Sandbox, key: str, client: stripe.StripeClient
) -> None:
    session = client.v1.checkout.sessions.create(
        {
            "mode": "payment",
            "success_url": "https://shop.example/ok?session_id={CHECKOUT_SESSION_ID}",
            "line_items": [
                {
                    "price_data": {
                        "currency": "usd",
                        "unit_amount": 1500,
                        "product_data": {"name": "Mug"},
                    },
                    "quantity": 1,
                }
            ],
        }
    )
    opener = urllib.request.build_opener(_NoRedirect)
    request = urllib.request.Request(  # noqa: S310 - the local sandbox
        f"{sandbox.url}/_sandbox/checkout/sessions/{session.id}/complete",
        data=b"redirect=true",
        headers={"Authorization": f"Bearer {key}"},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        opener.open(request, timeout=5)
    assert caught.value.code == 302
    assert caught.value.headers["Location"] == f"https://shop.example/ok?session_id={session.id}"
    assert json.loads(caught.value.read())["status"] == "complete"
    assert client.v1.checkout.sessions.retrieve(session.id).payment_status == "paid"


def test_billing_portal_page_links_back_to_return_url(
    sandbox: Sandbox, key: str, client: stripe.StripeClient
) -> None:
    customer = client.v1.customers.create({"email": "portal@example.com"})
    portal = client.v1.billing_portal.sessions.create(
        {"customer": customer.id, "return_url": "https://shop.example/account"}
    )
    page = control(sandbox, key, "GET", portal.url.removeprefix(sandbox.url))
    assert page["return_url"] == "https://shop.example/account"


def test_keys_and_connected_accounts_survive_a_restart(tmp_path: Any) -> None:
    state = tmp_path / "sandbox.json"
    with Sandbox(state_file=state) as first:
        publishable = first.publishable_key
        client = stripe.StripeClient(first.secret_key, base_addresses={"api": first.url})
        account = client.v1.accounts.create({"type": "custom"})
    with Sandbox(state_file=state) as second:
        assert second.publishable_key == publishable
        assert second.account(account.id).platform is second.account()
        connected = stripe.StripeClient(
            second.secret_key, base_addresses={"api": second.url}, stripe_account=account.id
        )
        assert connected.v1.customers.create({"email": "r@example.com"}).id.startswith("cus_")


def test_a_sample_app_using_the_global_sdk_configuration_pinned_to_2022_08_01(
    sandbox: Sandbox, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shape of Stripe's own samples: module-level key, base and version."""
    monkeypatch.setattr(stripe, "api_key", key)
    monkeypatch.setattr(stripe, "api_base", sandbox.url)
    monkeypatch.setattr(stripe, "api_version", OLD)
    customer = stripe.Customer.create(email="sample@example.com")
    price = stripe.Price.create(
        currency="usd", unit_amount=700, recurring={"interval": "month"},
        product_data={"name": "Sample"},
    )  # fmt: skip
    subscription: Any = stripe.Subscription.create(
        customer=customer.id,
        items=[{"price": price.id}],
        payment_behavior="default_incomplete",
        expand=["latest_invoice.payment_intent"],
    )
    client_secret = subscription.latest_invoice.payment_intent.client_secret
    assert client_secret.startswith(subscription.latest_invoice.payment_intent.id)
    assert subscription.current_period_end > subscription.current_period_start


def test_customer_sources_and_charging_the_default_source(
    sandbox: Sandbox, key: str, client: stripe.StripeClient, receiver: Receiver
) -> None:
    customer = client.v1.customers.create({"email": "src@example.com", "source": "tok_visa"})
    assert str(customer.default_source).startswith("card_")
    charge = client.v1.charges.create({"amount": 1200, "currency": "usd", "customer": customer.id})
    assert charge.status == "succeeded" and charge.payment_method == customer.default_source
    assert charge.customer == customer.id
    status, added = raw(
        sandbox, "POST", f"/v1/customers/{customer.id}/sources", key=key, source="tok_mastercard"
    )
    assert status == 200 and added["brand"] == "MasterCard"
    status, listed = raw(sandbox, "GET", f"/v1/customers/{customer.id}/sources", key=key)
    assert [c["brand"] for c in listed["data"]] == ["MasterCard", "Visa"]
    assert client.v1.customers.retrieve(customer.id).default_source == customer.default_source
    with pytest.raises(stripe.CardError):
        client.v1.customers.create({"email": "no@example.com", "source": "tok_chargeDeclined"})
    assert [c.email for c in client.v1.customers.list().data] == ["src@example.com"]
    receiver.wait_for_type("customer.source.created", count=2)


def test_account_default_api_version(sandbox: Sandbox, key: str) -> None:
    sandbox.set_api_version(OLD, key=key)
    try:
        client = stripe.StripeClient(key, base_addresses={"api": sandbox.url})
        intent = client.v1.payment_intents.create(
            {"amount": 800, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True}
        )
        # The SDK sends its own version: the current shapes.
        assert "charges" not in intent
        # A raw request without Stripe-Version gets the account's default.
        status, body = raw(sandbox, "GET", f"/v1/payment_intents/{intent.id}", key=key)
        assert status == 200 and body["charges"]["total_count"] == 1
        assert control(sandbox, key, "GET", "/_sandbox/api_version")["default"] == OLD
        with pytest.raises(ValueError, match="Invalid API version"):
            sandbox.set_api_version("2099-01-01", key=key)
        # Events keep the shapes of their creation when listed in any version.
        status, events = raw(sandbox, "GET", "/v1/events", key=key, type="payment_intent.succeeded")
        assert "charges" not in events["data"][0]["data"]["object"]
    finally:
        sandbox.set_api_version(None, key=key)
    status, body = raw(sandbox, "GET", f"/v1/payment_intents/{intent.id}", key=key)
    assert "charges" not in body
