"""``stripeline.contrib.fastapi.payments_router``: the payment of an order over
HTTP, through FastAPI's TestClient, the official SDK and the sandbox, on SQLite
and PostgreSQL. The application's own dependency says who the user is, its
own ``owns`` which orders are theirs and its own ``price`` what they cost."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import pytest
import stripe
from fastapi import FastAPI, Header, HTTPException
from fastapi.testclient import TestClient

from stripeline.app import Stripeline
from stripeline.contrib.fastapi import Payer, Price, payments_router
from stripeline.declines import advise
from stripeline.flows.payments import Fulfilment
from stripeline.testing import StripelineEnv
from stripeline_sandbox import Sandbox
from tests.test_flows_payments import payment_intents, settings_for

#: The application's sessions: a bearer token → its user.
TOKENS = {"t-ada": "ada", "t-bob": "bob"}


class Shop:
    """The application's own orders table: order → (owner, amount, currency)."""

    def __init__(self) -> None:
        self.orders: dict[str, tuple[str, int, str]] = {
            "order_ada": ("ada", 2000, "usd"),
            "order_ada_2": ("ada", 1500, "eur"),
            "order_bob": ("bob", 4200, "usd"),
        }
        self.asked: list[tuple[str, str]] = []

    def price(self, order_id: str, user: str) -> Price | None:
        self.asked.append((order_id, user))
        found = self.orders.get(order_id)
        return Price(found[1], found[2]) if found else None

    async def owns(self, order_id: str, user: str) -> bool:
        found = self.orders.get(order_id)
        return found is not None and found[0] == user


def current_user(authorization: Annotated[str | None, Header()] = None) -> str:
    """The application's auth: no token, no user (its own 401)."""
    user = TOKENS.get((authorization or "").removeprefix("Bearer "))
    if user is None:
        raise HTTPException(401, "sign in first", {"WWW-Authenticate": "Bearer"})
    return user


def as_(user: str) -> dict[str, str]:
    token = next(t for t, u in TOKENS.items() if u == user)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def app(stripe_sandbox: Sandbox, stripe_key: str, database_url: str) -> Iterator[Stripeline]:
    app = Stripeline(settings_for(stripe_sandbox, stripe_key, database_url))
    yield app
    app.dispose()


@pytest.fixture
def shop() -> Shop:
    return Shop()


@pytest.fixture
def http(app: Stripeline, shop: Shop) -> Iterator[TestClient]:
    api = FastAPI()
    api.include_router(
        payments_router(
            app,
            user=current_user,
            price=shop.price,
            owns=shop.owns,
            customer_of=lambda user: Payer(user, email=f"{user}@example.com"),
            return_url="https://shop.example/paid",
        )
    )
    with TestClient(api) as client:
        yield client


def test_three_d_secure_answers_requires_action_with_the_client_secret(
    http: TestClient, app: Stripeline, stripe_client: stripe.StripeClient
) -> None:
    answer = http.post(
        "/payments/order_ada",
        json={"payment_method": "pm_card_authenticationRequired"},
        headers=as_("ada"),
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["kind"] == "requires_action"
    assert body["client_secret"].startswith(body["payment_intent_id"] + "_secret_")
    assert (body["order_id"], body["amount"], body["currency"]) == ("order_ada", 2000, "usd")
    # The amount is the server's, and the payment is the user's one customer's.
    (made,) = payment_intents(stripe_client)
    customer = app.mirror.customer_for_user("ada")
    assert customer is not None and customer.email == "ada@example.com"
    assert (made.id, made.amount, made.customer) == (body["payment_intent_id"], 2000, customer.id)
    # Read back (the page reloaded): the same outcome, from the mirror.
    status = http.get("/payments/order_ada", headers=as_("ada"))
    assert status.status_code == 200 and status.json() == body


def test_without_a_payment_method_the_browser_gets_a_secret_to_confirm_with(
    http: TestClient, stripe_client: stripe.StripeClient
) -> None:
    first = http.post("/payments/order_ada_2", headers=as_("ada"))
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["kind"] == "requires_payment_method" and body["client_secret"]
    assert (body["amount"], body["currency"]) == (1500, "eur")
    # Asked again (a double click, a reload): the same PaymentIntent.
    again = http.post("/payments/order_ada_2", json={}, headers=as_("ada"))
    assert again.json()["payment_intent_id"] == body["payment_intent_id"]
    assert len(payment_intents(stripe_client)) == 1


def test_a_decline_reads_safely_and_another_card_pays_the_same_intent(
    http: TestClient, stripe_client: stripe.StripeClient
) -> None:
    declined = http.post(
        "/payments/order_ada",
        json={"payment_method": "pm_card_chargeDeclinedStolenCard"},
        headers=as_("ada"),
    )
    assert declined.status_code == 200, declined.text
    body = declined.json()
    assert body["kind"] == "declined"
    assert body["user_message"] == advise("stolen_card", code="card_declined").message
    assert body["next_action"] == advise("stolen_card", code="card_declined").next_action
    assert "stolen" not in declined.text  # no decline code, no hint for a fraudster
    assert "decline_code" not in body
    paid = http.post(
        "/payments/order_ada", json={"payment_method": "pm_card_visa"}, headers=as_("ada")
    )
    assert paid.json()["kind"] == "succeeded"
    assert paid.json()["amount_received"] == 2000
    assert paid.json()["payment_intent_id"] == body["payment_intent_id"]
    assert len(payment_intents(stripe_client)) == 1


def test_an_amount_from_the_client_is_refused_never_used(
    http: TestClient, shop: Shop, stripe_client: stripe.StripeClient
) -> None:
    for forged in ({"amount": 1}, {"payment_method": "pm_card_visa", "currency": "jpy"}):
        answer = http.post("/payments/order_ada", json=forged, headers=as_("ada"))
        assert answer.status_code == 422, answer.text
    assert shop.asked == [] and payment_intents(stripe_client) == []


def test_another_users_order_is_refused_before_anything_is_made(
    http: TestClient, shop: Shop, stripe_client: stripe.StripeClient
) -> None:
    mine = http.post(
        "/payments/order_bob", json={"payment_method": "pm_card_visa"}, headers=as_("bob")
    )
    assert mine.json()["kind"] == "succeeded"
    shop.asked.clear()
    for method, path in (
        ("POST", "/payments/order_bob"),  # bob's order, asked by ada
        ("GET", "/payments/order_bob"),
        ("POST", "/payments/order_nobody"),  # no such order: the same answer
        ("GET", f"/payments/{mine.json()['payment_intent_id']}"),  # not an order id
    ):
        answer = http.request(method, path, json={}, headers=as_("ada"))
        assert (answer.status_code, answer.json()) == (404, {"detail": "No such order."}), path
    assert "client_secret" not in http.get("/payments/order_bob", headers=as_("ada")).text
    assert shop.asked == []  # never priced: ownership is asked first
    assert len(payment_intents(stripe_client)) == 1


def test_unauthenticated_requests_are_refused_by_the_apps_dependency(
    http: TestClient, shop: Shop, stripe_client: stripe.StripeClient
) -> None:
    for headers in ({}, {"Authorization": "Bearer forged"}):
        answer = http.post(
            "/payments/order_ada", json={"payment_method": "pm_card_visa"}, headers=headers
        )
        assert (answer.status_code, answer.json()) == (401, {"detail": "sign in first"})
        assert answer.headers["WWW-Authenticate"] == "Bearer"
        assert http.get("/payments/order_ada", headers=headers).status_code == 401
    assert shop.asked == [] and payment_intents(stripe_client) == []


def test_a_dependency_answering_none_is_refused(app: Stripeline, shop: Shop) -> None:
    api = FastAPI()
    api.include_router(
        payments_router(app, user=lambda: None, price=shop.price, owns=lambda o, u: True)
    )
    with TestClient(api) as client:
        assert client.post("/payments/order_ada").status_code == 401
    assert shop.asked == []


def test_an_order_whose_price_changed_after_its_payment_started_is_a_conflict(
    http: TestClient, shop: Shop, stripe_client: stripe.StripeClient
) -> None:
    assert http.post("/payments/order_ada", headers=as_("ada")).status_code == 200
    shop.orders["order_ada"] = ("ada", 2500, "usd")  # the cart changed
    answer = http.post(
        "/payments/order_ada", json={"payment_method": "pm_card_visa"}, headers=as_("ada")
    )
    assert answer.status_code == 409
    assert "new order id" in answer.json()["detail"]
    (made,) = payment_intents(stripe_client)
    assert (made.amount, made.status) == (2000, "requires_payment_method")  # nothing charged


def test_an_unknown_payment_is_404_and_a_bad_payment_method_400(http: TestClient) -> None:
    assert http.get("/payments/order_ada", headers=as_("ada")).status_code == 404
    answer = http.post(
        "/payments/order_ada", json={"payment_method": "pm_nonexistent"}, headers=as_("ada")
    )
    assert answer.status_code == 400, answer.text
    assert "pm_nonexistent" not in answer.text


def test_the_openapi_schema_lists_the_routes_and_the_outcomes(http: TestClient) -> None:
    schema = http.get("/openapi.json").json()
    route = schema["paths"]["/payments/{order_id}"]
    assert set(route) == {"get", "post"}
    models = schema["components"]["schemas"]
    kinds = {
        "PaymentSucceeded": "succeeded",
        "PaymentRequiresAction": "requires_action",
        "PaymentProcessing": "processing",
        "PaymentRequiresCapture": "requires_capture",
        "PaymentDeclined": "declined",
        "PaymentRequiresPaymentMethod": "requires_payment_method",
        "PaymentRequiresConfirmation": "requires_confirmation",
        "PaymentCanceled": "canceled",
    }
    for name, kind in kinds.items():
        assert models[name]["properties"]["kind"]["const"] == kind, name
    assert "client_secret" in models["PaymentRequiresAction"]["required"]
    assert "decline_code" not in models["PaymentDeclined"]["properties"]
    for method in ("get", "post"):
        answer: Any = route[method]["responses"]["200"]["content"]["application/json"]["schema"]
        assert answer["discriminator"]["propertyName"] == "kind"
        assert set(answer["discriminator"]["mapping"]) == set(kinds.values())
        assert {"401", "404", "409"} <= set(route[method]["responses"])
    # The request takes a payment method, never an amount.
    assert set(models["PaymentRequest"]["properties"]) == {"payment_method"}
    assert models["PaymentRequest"]["additionalProperties"] is False


def test_paid_through_the_router_is_fulfilled_once_from_the_webhook(
    stripe_sandbox: Sandbox,
    stripe_key: str,
    stripe_client: stripe.StripeClient,
    app: Stripeline,
    shop: Shop,
    http: TestClient,
) -> None:
    fulfilled: list[Fulfilment] = []
    app.payments.fulfil(fulfilled.append)
    env = StripelineEnv(stripe_sandbox, stripe_key, stripe_client, app)
    try:
        for _ in range(2):  # a double click
            paid = http.post(
                "/payments/order_bob", json={"payment_method": "pm_card_visa"}, headers=as_("bob")
            )
            assert paid.json()["kind"] == "succeeded"
        env.settle()
        env.deliver([e.data for e in env.events()], order="shuffled", copies=2)
        env.settle()
    finally:
        env.close()
    assert [(f.order_id, f.amount, f.currency) for f in fulfilled] == [("order_bob", 4200, "usd")]
