"""Checkout on a connected account (Connect direct charges, ``account=``)
against the sandbox through the official SDK: the session is made in the
connected account for that account's customer, recorded and mirrored under
it, kept apart from the platform's session of the same order, and its
payment fulfilled from the Connect endpoint with the account named."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import stripe

from stripeline.app import Stripeline
from stripeline.errors import CallConflict
from stripeline.flows.checkout import CHECKOUT_KEY, StartedCheckout
from stripeline.flows.payments import ORDER_KEY, Fulfilment
from stripeline.testing import StripelineEnv
from stripeline.testing.delivery import deliver
from stripeline_sandbox import Sandbox

# Fixtures (``app``, ``connected``, ``connect_env``: both endpoints served) and helpers.
from tests.test_flows_payments_connect import app as app
from tests.test_flows_payments_connect import connect_account, payment_intents, wait_for_events
from tests.test_flows_payments_connect import connect_env as connect_env
from tests.test_flows_payments_connect import connected as connected

OK = "https://shop.example/thanks"
BACK = "https://shop.example/cart"
ACCOUNT_PAGE = "https://shop.example/account"


def sessions(client: stripe.StripeClient) -> list[stripe.checkout.Session]:
    return list(client.v1.checkout.sessions.list({"limit": 100}).auto_paging_iter())


def customers(client: stripe.StripeClient) -> list[stripe.Customer]:
    return list(client.v1.customers.list({"limit": 100}).auto_paging_iter())


def pay(client: stripe.StripeClient, started: StartedCheckout) -> dict[str, Any]:
    """The customer pays on the hosted page of ``client``'s account (a client
    acting as a connected account completes that account's session)."""
    answer = client.raw_request(
        "post",
        f"/_sandbox/checkout/sessions/{started.session_id}/complete",
        payment_method="pm_card_visa",
    )
    done: dict[str, Any] = client.deserialize(answer, api_mode="V1").to_dict()
    return done


def test_a_session_on_a_connected_account_is_made_there_once_for_its_customer(
    app: Stripeline,
    stripe_client: stripe.StripeClient,
    connected: tuple[str, stripe.StripeClient],
) -> None:
    account, as_connected = connected
    started = app.checkout.start_payment(
        "order_1", 2000, "usd", user_id="ada", success_url=OK, cancel_url=BACK, account=account
    )
    assert (started.status, started.order_id) == ("open", "order_1")
    # Made in the connected account, not the platform's.
    (session,) = sessions(as_connected)
    assert session.id == started.session_id and session.amount_total == 2000
    assert session.metadata is not None and session.metadata[ORDER_KEY] == "order_1"
    assert sessions(stripe_client) == []
    # For the connected account's customer of the user: none on the platform.
    customer = app.mirror.for_account(account).customer_for_user("ada")
    assert customer is not None and started.customer == customer.id == session.customer
    assert [c.id for c in customers(as_connected)] == [customer.id]
    assert customers(stripe_client) == [] and app.mirror.customer_link("ada") is None
    # A double click, a retry: the same session, nothing new.
    again = app.checkout.start_payment(
        "order_1", 2000, "usd", user_id="ada", success_url=OK, cancel_url=BACK, account=account
    )
    assert again.session_id == started.session_id
    assert [s.id for s in sessions(as_connected)] == [started.session_id]
    with pytest.raises(CallConflict, match="checkout_session:create:order_1"):
        app.checkout.start_payment(
            "order_1", 2500, "usd", user_id="ada", success_url=OK, account=account
        )
    # The ledger and the mirror hold it under the account; the platform's do not.
    record = app.calls.record("checkout_session:create", "order_1", account=account)
    assert record is not None and record.object_id == started.session_id
    assert app.calls.record("checkout_session:create", "order_1") is None
    held = app.mirror.for_account(account).get(started.session_id, "checkout.session")
    assert held is not None and held["status"] == "open"
    assert app.mirror.get(started.session_id) is None
    # Paid in the account: started again, the complete session, nothing new.
    pay(as_connected, started)
    done = app.checkout.start_payment(
        "order_1", 2000, "usd", user_id="ada", success_url=OK, cancel_url=BACK, account=account
    )
    assert done.session_id == started.session_id and done.complete
    assert len(sessions(as_connected)) == 1
    assert len(payment_intents(as_connected)) == 1 and payment_intents(stripe_client) == []


def test_an_expired_session_on_a_connected_account_is_replaced_there(
    app: Stripeline,
    stripe_client: stripe.StripeClient,
    connected: tuple[str, stripe.StripeClient],
) -> None:
    account, as_connected = connected
    first = app.checkout.start_payment("order_x", 900, "eur", success_url=OK, account=account)
    as_connected.v1.checkout.sessions.expire(first.session_id)
    second = app.checkout.start_payment("order_x", 900, "eur", success_url=OK, account=account)
    assert second.session_id != first.session_id and second.status == "open"
    assert app.checkout.start_payment("order_x", 900, "eur", success_url=OK, account=account) == (
        second
    )
    made = {s.id: s for s in sessions(as_connected)}
    assert set(made) == {first.session_id, second.session_id}
    metadata = made[second.session_id].metadata
    assert metadata is not None
    assert metadata[CHECKOUT_KEY] == f"order_x:after:{first.session_id}"
    assert sessions(stripe_client) == []


def test_the_same_order_on_the_platform_and_on_two_accounts_is_three_sessions(
    app: Stripeline,
    stripe_sandbox: Sandbox,
    stripe_key: str,
    stripe_client: stripe.StripeClient,
    connected: tuple[str, stripe.StripeClient],
) -> None:
    account, as_connected = connected
    other, as_other = connect_account(stripe_sandbox, stripe_key, stripe_client)
    # Other amounts for the same order id: no CallConflict between accounts.
    own = app.checkout.start_payment("order_3", 1000, "usd", user_id="ada", success_url=OK)
    theirs = app.checkout.start_payment(
        "order_3", 2500, "usd", user_id="ada", success_url=OK, account=account
    )
    others = app.checkout.start_payment(
        "order_3", 4000, "usd", user_id="ada", success_url=OK, account=other
    )
    assert len({own.session_id, theirs.session_id, others.session_id}) == 3
    assert [s.amount_total for s in sessions(stripe_client)] == [1000]
    assert [s.amount_total for s in sessions(as_connected)] == [2500]
    assert [s.amount_total for s in sessions(as_other)] == [4000]
    # Each account's own customer of the user.
    assert len({own.customer, theirs.customer, others.customer}) == 3
    for client, started in ((stripe_client, own), (as_connected, theirs), (as_other, others)):
        assert [c.id for c in customers(client)] == [started.customer]
    # Each started again answers its own session.
    assert app.checkout.start_payment(
        "order_3", 2500, "usd", user_id="ada", success_url=OK, account=account
    ) == (theirs)
    assert app.checkout.start_payment("order_3", 1000, "usd", user_id="ada", success_url=OK) == own
    assert len(sessions(as_connected)) == len(sessions(stripe_client)) == 1


def test_a_subscription_checkout_on_a_connected_account(
    app: Stripeline,
    stripe_client: stripe.StripeClient,
    connected: tuple[str, stripe.StripeClient],
) -> None:
    account, as_connected = connected
    # Direct charges: the price lives in the connected account.
    price = as_connected.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount": 900,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Membership"},
        }
    )
    started = app.checkout.start_subscription(
        "grace",
        [price.id],
        trial_days=14,
        email="grace@example.com",
        success_url=OK,
        account=account,
    )
    assert started.mode == "subscription" and started.order_id.startswith("subscription:grace:")
    again = app.checkout.start_subscription(
        "grace", {price.id: 1}, trial_days=14, success_url=OK, account=account
    )
    assert again.session_id == started.session_id
    (session,) = sessions(as_connected)
    assert session.id == started.session_id and session.client_reference_id == "grace"
    customer = app.mirror.for_account(account).customer_for_user("grace")
    assert customer is not None and session.customer == customer.id
    assert customer.email == "grace@example.com"
    assert sessions(stripe_client) == [] and customers(stripe_client) == []
    assert app.calls.record("checkout_session:create", started.order_id, account=account)
    assert app.calls.record("checkout_session:create", started.order_id) is None
    # Paid in the account: the subscription is the account's.
    done = pay(as_connected, started)
    subscription = as_connected.v1.subscriptions.retrieve(done["subscription"])
    assert (subscription.status, subscription.customer) == ("trialing", customer.id)
    later = app.checkout.start_subscription(
        "grace", [price.id], trial_days=14, success_url=OK, account=account
    )
    assert later.order_id == f"{started.order_id}:after:{started.session_id}"
    assert len(sessions(as_connected)) == 2


def test_the_portal_on_a_connected_account_is_that_accounts_customers(
    app: Stripeline,
    stripe_sandbox: Sandbox,
    stripe_client: stripe.StripeClient,
    connected: tuple[str, stripe.StripeClient],
) -> None:
    account, as_connected = connected
    url = app.checkout.portal("ada", return_url=ACCOUNT_PAGE, account=account)
    assert url.startswith(stripe_sandbox.url + "/_sandbox/billing_portal/")
    customer = app.mirror.for_account(account).customer_for_user("ada")
    assert customer is not None
    page = as_connected.raw_request("get", url.removeprefix(stripe_sandbox.url))
    shown = as_connected.deserialize(page, api_mode="V1")
    assert shown["customer"]["id"] == customer.id
    assert shown["session"]["return_url"] == ACCOUNT_PAGE
    # Not a session of the platform's, which has no customer of the user.
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.raw_request("get", url.removeprefix(stripe_sandbox.url))
    assert customers(stripe_client) == []
    assert app.checkout.portal("ada", return_url=ACCOUNT_PAGE, account=account) != url
    assert [c.id for c in customers(as_connected)] == [customer.id]


def test_the_async_twins_take_the_account(
    app: Stripeline,
    stripe_client: stripe.StripeClient,
    connected: tuple[str, stripe.StripeClient],
) -> None:
    account, as_connected = connected

    async def main() -> tuple[StartedCheckout, StartedCheckout, str]:
        return await asyncio.gather(
            app.checkout.start_payment_async(
                "order_a", 500, "usd", success_url=OK, account=account
            ),
            app.checkout.start_payment_async(
                "order_a", 500, "usd", success_url=OK, account=account
            ),
            app.checkout.portal_async("bob", ACCOUNT_PAGE, account=account),
        )

    one, two, url = asyncio.run(main())
    assert one.session_id == two.session_id and url.startswith("http")
    assert [s.id for s in sessions(as_connected)] == [one.session_id]
    assert sessions(stripe_client) == [] and customers(stripe_client) == []


@pytest.mark.parametrize("account", ["cus_123", "acct", "  acct_1"])
def test_an_account_that_is_not_an_account_id_is_a_value_error(
    app: Stripeline, stripe_client: stripe.StripeClient, account: str
) -> None:
    with pytest.raises(ValueError, match="acct_"):
        app.checkout.start_payment("order_v", 1000, "usd", success_url=OK, account=account)
    with pytest.raises(ValueError, match="acct_"):
        app.checkout.start_payment(
            "order_v", 1000, "usd", user_id="ada", success_url=OK, account=account
        )
    with pytest.raises(ValueError, match="acct_"):
        app.checkout.start_subscription("ada", ["price_1"], success_url=OK, account=account)
    with pytest.raises(ValueError, match="acct_"):
        app.checkout.portal("ada", ACCOUNT_PAGE, account=account)
    assert sessions(stripe_client) == [] and customers(stripe_client) == []


# -- fulfilment through the Connect endpoint ---------------------------------------


def test_a_connected_accounts_paid_session_is_fulfilled_once_with_its_account(
    connect_env: StripelineEnv,
    stripe_sandbox: Sandbox,
    stripe_key: str,
) -> None:
    env = connect_env
    account, as_connected = connect_account(stripe_sandbox, stripe_key, env.client)
    seen: list[Fulfilment] = []
    env.app.fulfil(seen.append)

    # The same order id paid through Checkout on the platform and on the account.
    own = env.app.checkout.start_payment("order_f", 1000, "usd", user_id="ada", success_url=OK)
    theirs = env.app.checkout.start_payment(
        "order_f", 2500, "usd", user_id="ada", success_url=OK, account=account
    )
    # And an order paid on the account only: no platform order's mark to hide behind.
    only = env.app.checkout.start_payment(
        "order_g", 700, "usd", user_id="ada", success_url=OK, account=account
    )
    pay(env.client, own)
    done = pay(as_connected, theirs)
    pay(as_connected, only)
    wait_for_events(env, as_connected)
    env.settle()
    got = sorted((f.account or "", f.order_id, f.amount) for f in seen)
    assert got == [("", "order_f", 1000), (account, "order_f", 2500), (account, "order_g", 700)]
    fulfilled = next(f for f in seen if f.account and f.order_id == "order_f")
    assert fulfilled.payment_intent_id == done["payment_intent"]
    assert fulfilled.customer == theirs.customer and fulfilled.event.account == account
    # Both of the account's fulfilling events arrived through the Connect endpoint.
    stored = [e.data for e in env.events()]
    theirs_events = [e for e in stored if e.get("account") == account]
    assert {e["type"] for e in theirs_events} >= {
        "checkout.session.completed",
        "payment_intent.succeeded",
    }
    # The session is mirrored under the account, complete, from the webhooks too.
    held = env.app.mirror.for_account(account).get(theirs.session_id, "checkout.session")
    assert held is not None and held["status"] == "complete"
    # Redelivered, duplicated and shuffled, to both endpoints: nothing fulfilled again.
    secret = env.app.settings.stripe_connect_webhook_secret
    assert secret is not None
    answers = env.deliver([e for e in stored if not e.get("account")] * 2, order="shuffled")
    answers += deliver(
        env.webhook_url + "/connect",
        theirs_events * 2,
        order="shuffled",
        seed=5,
        secret=secret.get_secret_value(),
    )
    assert {a.status for a in answers} == {200}
    env.settle()
    assert len(seen) == 3


def test_a_subscription_bought_on_a_connected_account_grants_access_in_that_account(
    connect_env: StripelineEnv,
    stripe_sandbox: Sandbox,
    stripe_key: str,
) -> None:
    """Checkout on the account, its events through the Connect endpoint, the
    mirror under the account: ``app.entitlements`` answers for the user in
    that account (the price registered is the account's own), not on the
    platform, where the user has no subscription."""
    env = connect_env
    account, as_connected = connect_account(stripe_sandbox, stripe_key, env.client)
    price = as_connected.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount": 1500,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Studio"},
        }
    )
    env.app.entitlements.register(price.id, "studio")
    started = env.app.checkout.start_subscription(
        "lin", [price.id], email="lin@example.com", success_url=OK, account=account
    )
    assert not env.app.entitlements.has_access("lin", "studio", account=account)
    pay(as_connected, started)
    wait_for_events(env, as_connected)
    env.settle()
    assert env.app.entitlements.has_access("lin", "studio", account=account)
    assert not env.app.entitlements.has_access("lin", "studio")
    customer = env.app.mirror.for_account(account).customer_for_user("lin")
    assert customer is not None
    assert env.app.entitlements.has_access(customer.id, "studio", account=account)
