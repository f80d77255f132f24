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
