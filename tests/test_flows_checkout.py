"""Checkout (``app.checkout``) end to end: Checkout Sessions and the billing
portal through the official SDK against the sandbox, the hosted page
completed with the sandbox's control, webhooks into a served app, on SQLite
and PostgreSQL."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import stripe

from stripeline.app import Stripeline
from stripeline.errors import CallConflict
from stripeline.flows.checkout import CHECKOUT_KEY, StartedCheckout
from stripeline.flows.payments import Fulfilment
from stripeline.testing import StripelineEnv
from stripeline_sandbox import Sandbox
from tests.test_flows_payments import payment_intents, settings_for

pytest_plugins = ["pytester"]

OK = "https://shop.example/thanks"
BACK = "https://shop.example/cart"


@pytest.fixture
def app(stripe_sandbox: Sandbox, stripe_key: str, database_url: str) -> Iterator[Stripeline]:
    app = Stripeline(settings_for(stripe_sandbox, stripe_key, database_url))
    yield app
    app.dispose()


@pytest.fixture
def env(
    stripe_sandbox: Sandbox, stripe_key: str, stripe_client: stripe.StripeClient, app: Stripeline
) -> Iterator[StripelineEnv]:
    env = StripelineEnv(stripe_sandbox, stripe_key, stripe_client, app)
    yield env
    env.close()


def fulfilled_by(app: Stripeline) -> list[Fulfilment]:
    seen: list[Fulfilment] = []
    app.fulfil(seen.append)
    return seen


def sessions(client: stripe.StripeClient) -> list[stripe.checkout.Session]:
    return list(client.v1.checkout.sessions.list({"limit": 100}).auto_paging_iter())


def pay(
    env: StripelineEnv, started: StartedCheckout, payment_method: str = "pm_card_visa"
) -> dict[str, Any]:
    """The customer pays on the hosted page."""
    done: dict[str, Any] = env.control(
        "POST",
        f"/_sandbox/checkout/sessions/{started.session_id}/complete",
        payment_method=payment_method,
    )
    return done


def redeliver(env: StripelineEnv) -> None:
    # Duplicated and shuffled ("shuffled" alone sends each event once).
    env.deliver([e.data for e in env.events()] * 2, order="shuffled", seed=3)
    env.settle()


def test_a_paid_session_fulfils_its_order_once(
    env: StripelineEnv, stripe_sandbox: Sandbox, app: Stripeline
) -> None:
    fulfilments = fulfilled_by(app)
    started = app.checkout.start_payment(
        "order_42", 2000, "usd", user_id="ada", success_url=OK, cancel_url=BACK
    )
    assert started.url and started.url.startswith(stripe_sandbox.url + "/_sandbox/checkout/")
    assert (started.status, started.mode, started.order_id) == ("open", "payment", "order_42")
    customer = app.mirror.customer_for_user("ada")
    assert customer is not None and started.customer == customer.id
    # A double click, a retry: the same session.
    again = app.checkout.start_payment(
        "order_42", 2000, "usd", user_id="ada", success_url=OK, cancel_url=BACK
    )
    assert again.session_id == started.session_id
    with pytest.raises(CallConflict):
        app.checkout.start_payment(
            "order_42", 2500, "usd", user_id="ada", success_url=OK, cancel_url=BACK
        )
    (session,) = sessions(env.client)
    assert session.client_reference_id == "order_42"
    assert session.metadata is not None
    assert session.metadata["stripeline_order_id"] == "order_42"
    assert session.amount_total == 2000
    env.settle()
    assert fulfilments == []  # open: nothing paid
    pay(env, started)
    env.settle()
    (intent,) = payment_intents(env.client)
    assert intent.metadata["stripeline_order_id"] == "order_42"
    assert [(f.order_id, f.amount, f.currency) for f in fulfilments] == [("order_42", 2000, "usd")]
    # payment_intent.succeeded and checkout.session.completed, duplicated and shuffled: once.
    redeliver(env)
    assert len(fulfilments) == 1
    # Started again after it was paid: the complete session, nothing new to pay.
    done = app.checkout.start_payment(
        "order_42", 2000, "usd", user_id="ada", success_url=OK, cancel_url=BACK
    )
    assert done.session_id == started.session_id and done.complete and done.url is None
    assert len(sessions(env.client)) == 1


def test_a_bank_debit_fulfils_once_when_it_settles(env: StripelineEnv, app: Stripeline) -> None:
    fulfilments = fulfilled_by(app)
    started = app.checkout.start_payment(
        "order_ach",
        line_items=[
            {
                "price_data": {
                    "currency": "usd",
                    "unit_amount": 700,
                    "product_data": {"name": "Book"},
                },
                "quantity": 3,
            }
        ],
        success_url=OK,
        payment_method_types=["card", "us_bank_account"],
    )
    done = pay(env, started, "pm_usBankAccount_success")
    assert (done["status"], done["payment_status"]) == ("complete", "unpaid")
    env.settle()
    assert fulfilments == []  # completed unpaid: not yet
    env.control("POST", f"/_sandbox/payment_intents/{done['payment_intent']}/settle")
    env.settle()
    redeliver(env)
    assert [(f.order_id, f.amount) for f in fulfilments] == [("order_ach", 2100)]
    assert {e.type for e in env.events()} >= {
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
        "payment_intent.succeeded",
    }


def test_an_expired_session_is_replaced_once(
    app: Stripeline, stripe_client: stripe.StripeClient
) -> None:
    first = app.checkout.start_payment("order_x", 900, "eur", success_url=OK)
    stripe_client.v1.checkout.sessions.expire(first.session_id)
    second = app.checkout.start_payment("order_x", 900, "eur", success_url=OK)
    assert second.session_id != first.session_id and second.status == "open"
    assert second.order_id == "order_x"
    third = app.checkout.start_payment("order_x", 900, "eur", success_url=OK)
    assert third.session_id == second.session_id
    made = {s.id: s for s in sessions(stripe_client)}
    assert set(made) == {first.session_id, second.session_id}
    metadata = made[second.session_id].metadata
    assert metadata is not None
    assert metadata["stripeline_order_id"] == "order_x"
    assert metadata[CHECKOUT_KEY] == f"order_x:after:{first.session_id}"


def test_a_lost_answer_is_one_session(
    app: Stripeline, stripe_sandbox: Sandbox, stripe_key: str, stripe_client: stripe.StripeClient
) -> None:
    from stripeline.errors import StripeConnectionError

    stripe_sandbox.inject_fault(
        "disconnect", path="/v1/checkout/sessions$", method="POST", key=stripe_key
    )
    with pytest.raises(StripeConnectionError):
        app.checkout.start_payment("order_lost", 1200, "usd", success_url=OK)
    restarted = Stripeline(app.settings)
    try:
        started = restarted.checkout.start_payment("order_lost", 1200, "usd", success_url=OK)
    finally:
        restarted.dispose()
    assert [s.id for s in sessions(stripe_client)] == [started.session_id]


def test_a_subscription_checkout_for_a_user(env: StripelineEnv, app: Stripeline) -> None:
    price = env.client.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount": 900,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Membership"},
        }
    )
    started = app.checkout.start_subscription(
        "grace", [price.id], trial_days=14, email="grace@example.com", success_url=OK
    )
    assert started.mode == "subscription" and started.url
    assert started.order_id.startswith("subscription:grace:")
    assert (
        app.checkout.start_subscription(
            "grace", {price.id: 1}, trial_days=14, success_url=OK
        ).session_id
        == started.session_id
    )
    (session,) = sessions(env.client)
    assert session.client_reference_id == "grace"
    customer = app.mirror.customer_for_user("grace")
    assert customer is not None and session.customer == customer.id
    assert customer.email == "grace@example.com"
    done = pay(env, started)
    env.settle()
    subscription = app.mirror.subscription(done["subscription"])
    assert subscription is not None
    assert (subscription.status, subscription.customer) == ("trialing", customer.id)
    # Subscribed: asking again makes a new session (a later subscription).
    later = app.checkout.start_subscription("grace", [price.id], trial_days=14, success_url=OK)
    assert later.session_id != started.session_id
    assert later.order_id == f"{started.order_id}:after:{started.session_id}"


def test_a_paid_subscription_checkout_is_not_an_order_and_access_follows_it(
    env: StripelineEnv, app: Stripeline
) -> None:
    """Only ``payment`` sessions reach ``@app.fulfil``: a paid subscription
    checkout (no trial: its first invoice is charged) does not, and access is
    read from the subscription (``app.entitlements``)."""
    fulfilments = fulfilled_by(app)
    price = env.client.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount": 1200,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Plus"},
        }
    )
    app.entitlements.register(price.id, "plus")
    started = app.checkout.start_subscription("lin", [price.id], success_url=OK)
    assert not app.entitlements.has_access("lin", "plus")
    done = pay(env, started)
    env.settle()
    assert (done["mode"], done["payment_status"], done["status"]) == (
        "subscription",
        "paid",
        "complete",
    )
    assert env.events("checkout.session.completed")  # it was received and processed
    assert fulfilments == []
    assert app.entitlements.has_access("lin", "plus")
    # A payment session of the same app still fulfils its order.
    order = app.checkout.start_payment("order_plus", 700, "usd", user_id="lin", success_url=OK)
    pay(env, order)
    env.settle()
    redeliver(env)
    assert [(f.order_id, f.amount) for f in fulfilments] == [("order_plus", 700)]


def test_the_portal_link_is_the_users_customers(
    app: Stripeline, stripe_sandbox: Sandbox, stripe_client: stripe.StripeClient
) -> None:
    url = app.checkout.portal("ada", return_url="https://shop.example/account")
    assert url.startswith(stripe_sandbox.url + "/_sandbox/billing_portal/")
    customer = app.mirror.customer_for_user("ada")
    assert customer is not None
    page = stripe_client.raw_request("get", url.removeprefix(stripe_sandbox.url))
    shown = stripe_client.deserialize(page, api_mode="V1")
    assert shown["customer"]["id"] == customer.id
    assert shown["session"]["return_url"] == "https://shop.example/account"
    # A new link each time (they are short-lived); still one customer.
    assert app.checkout.portal("ada", return_url="https://shop.example/account") != url
    assert len(list(stripe_client.v1.customers.list().auto_paging_iter())) == 1


def test_async_twins(app: Stripeline, stripe_client: stripe.StripeClient) -> None:
    async def main() -> tuple[StartedCheckout, StartedCheckout, str]:
        return await asyncio.gather(
            app.checkout.start_payment_async("order_a", 500, "usd", success_url=OK),
            app.checkout.start_payment_async("order_a", 500, "usd", success_url=OK),
            app.checkout.portal_async("bob", "https://shop.example/account"),
        )

    one, two, url = asyncio.run(main())
    assert one.session_id == two.session_id and url.startswith("http")
    assert len(sessions(stripe_client)) == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"amount": 100},  # no currency
        {"amount": 0, "currency": "usd"},
        {"amount": 100, "currency": "usd", "line_items": [{"price": "price_1"}]},
        {},
        {"amount": 100, "currency": "usd", "success_url": "/thanks"},
    ],
)
def test_bad_arguments_send_nothing(
    app: Stripeline, stripe_client: stripe.StripeClient, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(ValueError):
        app.checkout.start_payment("order_b", **{"success_url": OK, **kwargs})
    assert sessions(stripe_client) == []


DOC = Path(__file__).resolve().parent.parent / "docs" / "checkout.md"


def doc_block(name: str) -> str:
    """The python block of docs/checkout.md whose first line is ``# <name>``."""
    match = re.search(rf"```python\n(# {re.escape(name)}\n.*?)```", DOC.read_text(), re.DOTALL)
    assert match, f"docs/checkout.md has no block {name}"
    return match.group(1)


@pytest.mark.slow
def test_the_documented_shop_runs(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(shop=doc_block("shop.py"), test_shop=doc_block("test_shop.py"))
    pytester.makeini(
        """
        [pytest]
        stripeline_app = shop:app
        filterwarnings = error
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", timeout=240)
    result.assert_outcomes(passed=2)
