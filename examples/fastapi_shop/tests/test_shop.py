"""The shop against the sandbox: pay (bare SDK, and through the flows' routes),
subscribe, and what the webhooks make of it."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session

import stripeline
from shop.billing import PaidOrder, Shipment, create_tables
from stripeline.testing import StripelineEnv, failures


def eventually(check: Callable[[], object], timeout: float = 10.0) -> None:
    """Wait until ``check()`` is true: the webhooks arrive, and the shop's own
    worker processes them, a little after the API call returns."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.02)


def test_a_payment_is_recorded_by_the_handler(shop: httpx.Client) -> None:
    paid = shop.post("/pay", json={"amount": 2500}).json()
    assert paid["status"] == "succeeded"
    order = f"/orders/{paid['payment_intent']}"
    eventually(lambda: shop.get(order).is_success)  # the handler's row, committed
    assert shop.get(order).json() == {"payment_intent": paid["payment_intent"], "amount": 2500}


def test_a_subscription_grants_access_from_the_mirror(
    shop: httpx.Client, stripeline_app: stripeline.Stripeline
) -> None:
    assert shop.get("/access/ada").json() == {"access": False}
    signup = shop.post("/subscribe", json={"user": "ada", "email": "ada@example.com"}).json()
    eventually(lambda: shop.get("/access/ada").json()["access"])
    subscription = stripeline.Mirror(stripeline_app.engine).subscription(signup["subscription"])
    assert subscription is not None and subscription.status == "active"
    assert shop.get("/access/grace").json() == {"access": False}


def test_the_handlers_under_the_plugins_env(stripeline_env: StripelineEnv) -> None:
    """Without the shop served: the plugin's own env runs the same handlers."""
    create_tables(stripeline_env.app.engine)
    intent = stripeline_env.client.v1.payment_intents.create(
        {"amount": 700, "currency": "eur", "payment_method": "pm_card_visa", "confirm": True}
    )
    stripeline_env.settle()
    with Session(stripeline_env.app.engine) as session:
        paid = session.get(PaidOrder, intent.id)
        assert paid is not None and (paid.amount, paid.currency) == (700, "eur")
    # Stripe delivers at least once: the same events again change nothing.
    stripeline_env.deliver([e.data for e in stripeline_env.events()], order="shuffled")
    stripeline_env.settle()
    with Session(stripeline_env.app.engine) as session:
        assert session.scalar(select(func.count()).select_from(PaidOrder)) == 1


def test_an_order_paid_through_the_flows_ships_once(
    shop: httpx.Client, stripeline_app: stripeline.Stripeline
) -> None:
    ada, bob = {"X-User": "ada"}, {"X-User": "bob"}
    placed = shop.post("/orders", json={"sku": "book", "quantity": 2}, headers=ada).json()
    order, path = placed["order"], f"/payments/{placed['order']}"
    assert placed["amount"] == 3000  # the catalog's price, not the browser's
    # The shop's own auth and ownership, before anything reaches Stripe.
    assert shop.post(path, json={"payment_method": "pm_card_visa"}).status_code == 401
    assert shop.post(path, json={"payment_method": "pm_card_visa"}, headers=bob).status_code == 404
    assert shop.post(path, json={"amount": 1}, headers=ada).status_code == 422
    # A stolen card reads as a plain decline; another card pays the same order.
    declined = shop.post(
        path, json={"payment_method": "pm_card_chargeDeclinedStolenCard"}, headers=ada
    ).json()
    assert declined["kind"] == "declined" and "stolen" not in declined["user_message"]
    paid = shop.post(path, json={"payment_method": "pm_card_visa"}, headers=ada).json()
    assert (paid["kind"], paid["amount_received"]) == ("succeeded", 3000)
    assert paid["payment_intent_id"] == declined["payment_intent_id"]
    shipment = f"/shipments/{order}"
    eventually(lambda: shop.get(shipment, headers=ada).is_success)  # from the webhook
    assert shop.get(shipment, headers=ada).json() == {"order": order, "amount": 3000}
    # Paying again (a double click) charges nothing and ships nothing more.
    again = shop.post(path, json={"payment_method": "pm_card_visa"}, headers=ada).json()
    assert again["kind"] == "succeeded"
    assert shop.get(path, headers=ada).json()["kind"] == "succeeded"
    time.sleep(0.5)
    with Session(stripeline_app.engine) as session:
        assert session.scalar(select(func.count()).select_from(Shipment)) == 1
    assert failures(stripeline_app) == []  # a second shipment would have failed its event
