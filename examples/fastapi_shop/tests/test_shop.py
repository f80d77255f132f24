"""The shop against the sandbox: pay, subscribe, and what the webhooks make of it."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session

import stripeline
from shop.billing import PaidOrder, create_tables
from stripeline.testing import StripelineEnv


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
