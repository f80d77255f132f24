"""Payments on a connected account (Connect direct charges, ``account=``)
against the sandbox through the official SDK: the PaymentIntent is made in
the connected account, recorded and mirrored under it, kept apart from the
platform's payment of the same order, and fulfilled from the Connect
endpoint with the account named."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import stripe
from pydantic import SecretStr

from stripeline.app import Stripeline
from stripeline.errors import CallConflict, NotRefundable, PaymentNotFound
from stripeline.flows.payments import (
    ORDER_KEY,
    Canceled,
    Fulfilment,
    Refunded,
    RequiresCapture,
    RequiresPaymentMethod,
    Succeeded,
)
from stripeline.settings import Settings
from stripeline.testing import StripelineEnv
from stripeline.testing.delivery import deliver
from stripeline_sandbox import Sandbox


def settings_for(
    sandbox: Sandbox, key: str, database_url: str, connect_secret: str | None = None
) -> Settings:
    return Settings(
        stripe_secret_key=SecretStr(key),
        stripe_webhook_secret=SecretStr(sandbox.webhook_secret),
        stripe_connect_webhook_secret=SecretStr(connect_secret) if connect_secret else None,
        stripe_api_base=sandbox.url,
        database_url=database_url,
        max_network_retries=0,
        mirror_coalesce_seconds=0,
    )


@pytest.fixture
def app(stripe_sandbox: Sandbox, stripe_key: str, database_url: str) -> Iterator[Stripeline]:
    app = Stripeline(settings_for(stripe_sandbox, stripe_key, database_url))
    yield app
    app.dispose()


def connect_account(
    sandbox: Sandbox, key: str, client: stripe.StripeClient
) -> tuple[str, stripe.StripeClient]:
    """A connected account of the platform, and a client acting as it."""
    account = client.v1.accounts.create({"type": "standard"})
    acting = stripe.StripeClient(
        key, base_addresses={"api": sandbox.url}, stripe_account=account.id
    )
    return account.id, acting


@pytest.fixture
def connected(
    stripe_sandbox: Sandbox, stripe_key: str, stripe_client: stripe.StripeClient
) -> tuple[str, stripe.StripeClient]:
    return connect_account(stripe_sandbox, stripe_key, stripe_client)


def payment_intents(client: stripe.StripeClient) -> list[stripe.PaymentIntent]:
    return list(client.v1.payment_intents.list({"limit": 100}).auto_paging_iter())


def refunds(client: stripe.StripeClient) -> list[stripe.Refund]:
    return list(client.v1.refunds.list({"limit": 100}).auto_paging_iter())


def test_a_payment_on_a_connected_account_is_made_there_once_and_mirrored_under_it(
    app: Stripeline,
    stripe_client: stripe.StripeClient,
    connected: tuple[str, stripe.StripeClient],
) -> None:
    account, as_connected = connected
    paid = app.payments.start(
        "order_1", 2000, "usd", payment_method="pm_card_visa", account=account
    )
    assert isinstance(paid, Succeeded)
    assert (paid.order_id, paid.amount_received) == ("order_1", 2000)
    # Made in the connected account (a direct charge), not the platform's.
    (made,) = payment_intents(as_connected)
    assert made.id == paid.payment_intent_id and made.status == "succeeded"
    assert made.metadata[ORDER_KEY] == "order_1"
    assert payment_intents(stripe_client) == []
    # Started again (a retry, another card): the same payment, nothing new.
    again = app.payments.start(
        "order_1", 2000, "usd", payment_method="pm_card_mastercard", account=account
    )
    assert again == paid
    assert [p.id for p in payment_intents(as_connected)] == [made.id]
    assert len(list(as_connected.v1.charges.list({"limit": 100}).auto_paging_iter())) == 1
    # The ledger and the mirror hold it under the account; the platform's do not.
    record = app.calls.record("payment_intent:create", "order_1", account=account)
    assert record is not None and record.object_id == made.id
    assert app.calls.record("payment_intent:create", "order_1") is None
    held = app.mirror.for_account(account).get(made.id, "payment_intent")
    assert held is not None and held["status"] == "succeeded"
    assert app.mirror.get(made.id) is None
    # Read back by order or by id, on the account.
    assert app.payments.status("order_1", account=account) == paid
    assert app.payments.status(made.id, account=account) == paid


def test_a_payment_started_then_confirmed_on_a_connected_account(
    app: Stripeline, connected: tuple[str, stripe.StripeClient]
) -> None:
    account, as_connected = connected
    started = app.payments.start("order_2", 1500, "eur", account=account)
    assert isinstance(started, RequiresPaymentMethod) and started.client_secret
    confirmed = app.payments.confirm("order_2", payment_method="pm_card_visa", account=account)
    assert isinstance(confirmed, Succeeded)
    assert confirmed.payment_intent_id == started.payment_intent_id
    assert as_connected.v1.payment_intents.retrieve(started.payment_intent_id).status == (
        "succeeded"
    )
    with pytest.raises(CallConflict, match="payment_intent:create:order_2"):
        app.payments.start("order_2", 1600, "eur", account=account)


def test_the_same_order_on_the_platform_and_on_two_accounts_is_three_payments(
    app: Stripeline,
    stripe_sandbox: Sandbox,
    stripe_key: str,
    stripe_client: stripe.StripeClient,
    connected: tuple[str, stripe.StripeClient],
) -> None:
    account, as_connected = connected
    other, as_other = connect_account(stripe_sandbox, stripe_key, stripe_client)
    # Other amounts for the same order id: no CallConflict between accounts.
    own = app.payments.start("order_3", 1000, "usd", payment_method="pm_card_visa")
    theirs = app.payments.start(
        "order_3", 2500, "usd", payment_method="pm_card_visa", account=account
    )
    others = app.payments.start("order_3", 4000, "usd", account=other)
    ids = {own.payment_intent_id, theirs.payment_intent_id, others.payment_intent_id}
    assert len(ids) == 3
    assert [p.id for p in payment_intents(stripe_client)] == [own.payment_intent_id]
    assert [p.id for p in payment_intents(as_connected)] == [theirs.payment_intent_id]
    assert [p.id for p in payment_intents(as_other)] == [others.payment_intent_id]
    # Each order id is looked up in its own account only.
    assert app.payments.status("order_3").amount == 1000
    assert app.payments.status("order_3", account=account).amount == 2500
    assert isinstance(app.payments.status("order_3", account=other), RequiresPaymentMethod)
    # Confirming the other account's order confirms that one, nothing else.
    paid = app.payments.confirm("order_3", payment_method="pm_card_visa", account=other)
    assert isinstance(paid, Succeeded) and paid.payment_intent_id == others.payment_intent_id
    assert [c.amount for c in as_connected.v1.charges.list({"limit": 100})] == [2500]


def test_refunds_on_a_connected_account_are_made_there_and_counted_per_account(
    app: Stripeline,
    stripe_client: stripe.StripeClient,
    connected: tuple[str, stripe.StripeClient],
) -> None:
    account, as_connected = connected
    own = app.payments.start("order_r", 1000, "usd", payment_method="pm_card_visa")
    theirs = app.payments.start(
        "order_r", 1000, "usd", payment_method="pm_card_visa", account=account
    )
    first = app.payments.refund("order_r", 400, reference="return-1", account=account)
    assert first.payment_intent_id == theirs.payment_intent_id and first.amount == 400
    assert [r.id for r in refunds(as_connected)] == [first.refund_id]
    assert refunds(stripe_client) == []
    # The same reference again is the same refund, by order or by id.
    again = app.payments.refund(
        theirs.payment_intent_id, 400, reference="return-1", account=account
    )
    assert again == first

    # Ten concurrent refunds of 100 against the 600 left: six are made.
    def refund(_: int) -> int:
        try:
            return app.payments.refund("order_r", 100, account=account).amount
        except NotRefundable:
            return 0

    with ThreadPoolExecutor(max_workers=10) as pool:
        made = list(pool.map(refund, range(10)))
    assert sorted(made) == [0] * 4 + [100] * 6
    with pytest.raises(NotRefundable, match="refunded in full already"):
        app.payments.refund("order_r", account=account)
    assert sum(r.amount for r in refunds(as_connected)) == 1000
    # The platform's order of the same id is untouched: all of it is refundable.
    whole = app.payments.refund("order_r")
    assert (whole.payment_intent_id, whole.amount) == (own.payment_intent_id, 1000)
    assert [r.amount for r in refunds(stripe_client)] == [1000]
    assert app.payments.refund("order_r") == whole  # the full refund, not a second one


def test_capture_cancel_and_status_on_a_connected_account(
    app: Stripeline,
    stripe_client: stripe.StripeClient,
    connected: tuple[str, stripe.StripeClient],
) -> None:
    account, as_connected = connected
    held = app.payments.start(
        "order_m", 5000, "usd", capture="manual", payment_method="pm_card_visa", account=account
    )
    assert isinstance(held, RequiresCapture) and held.amount_capturable == 5000
    captured = app.payments.capture("order_m", 3000, account=account)
    assert isinstance(captured, Succeeded) and captured.amount_received == 3000
    assert app.payments.capture("order_m", 3000, account=account) == captured
    assert as_connected.v1.payment_intents.retrieve(held.payment_intent_id).amount_received == (
        3000
    )
    assert isinstance(app.payments.status("order_m", account=account), Succeeded)

    app.payments.start(
        "order_c", 2000, "usd", capture="manual", payment_method="pm_card_visa", account=account
    )
    canceled = app.payments.cancel("order_c", reason="abandoned", account=account)
    assert isinstance(canceled, Canceled) and canceled.cancellation_reason == "abandoned"
    assert isinstance(app.payments.status("order_c", account=account), Canceled)
    with pytest.raises(NotRefundable, match="has not been paid"):
        app.payments.refund("order_c", account=account)
    assert payment_intents(stripe_client) == []


def test_a_payment_of_another_account_is_not_found_and_nothing_is_done_to_it(
    app: Stripeline,
    stripe_sandbox: Sandbox,
    stripe_key: str,
    stripe_client: stripe.StripeClient,
    connected: tuple[str, stripe.StripeClient],
) -> None:
    account, as_connected = connected
    other, _ = connect_account(stripe_sandbox, stripe_key, stripe_client)
    held = app.payments.start(
        "order_w", 3000, "usd", capture="manual", payment_method="pm_card_visa", account=account
    )
    paid = app.payments.start(
        "order_p", 1000, "usd", payment_method="pm_card_visa", account=account
    )
    pi_id = held.payment_intent_id
    for wrong in (None, other):
        # By order id: the order is not known in the wrong account.
        with pytest.raises(PaymentNotFound, match="order_w"):
            app.payments.capture("order_w", account=wrong)
        with pytest.raises(PaymentNotFound):
            app.payments.status("order_w", account=wrong)
        # By PaymentIntent id: Stripe answers 404 in the wrong account.
        with pytest.raises(PaymentNotFound, match=pi_id):
            app.payments.capture(pi_id, account=wrong)
        with pytest.raises(PaymentNotFound, match=pi_id):
            app.payments.cancel(pi_id, account=wrong)
        with pytest.raises(PaymentNotFound, match=pi_id):
            app.payments.confirm(pi_id, payment_method="pm_card_visa", account=wrong)
        with pytest.raises(PaymentNotFound):
            app.payments.status(pi_id, account=wrong)
        with pytest.raises(PaymentNotFound, match=paid.payment_intent_id):
            app.payments.refund(paid.payment_intent_id, account=wrong)
    # Untouched: still authorised, not refunded; no call recorded elsewhere.
    assert as_connected.v1.payment_intents.retrieve(pi_id).status == "requires_capture"
    assert refunds(as_connected) == []
    assert app.calls.record("payment_intent:capture", "order_w") is None
    assert app.calls.record("payment_intent:capture", "order_w", account=other) is None


@pytest.mark.parametrize("account", ["cus_123", "acct", "  acct_1"])
def test_an_account_that_is_not_an_account_id_is_a_value_error(
    app: Stripeline, stripe_client: stripe.StripeClient, account: str
) -> None:
    with pytest.raises(ValueError, match="acct_"):
        app.payments.start("order_v", 1000, "usd", account=account)
    with pytest.raises(ValueError, match="acct_"):
        app.payments.status("order_v", account=account)
    with pytest.raises(ValueError, match="acct_"):
        app.payments.refund("order_v", account=account)
    assert payment_intents(stripe_client) == []


def test_the_async_twins_take_the_account(
    app: Stripeline, connected: tuple[str, stripe.StripeClient]
) -> None:
    import asyncio

    account, as_connected = connected

    async def flow() -> tuple[object, ...]:
        held = await app.payments.start_async(
            "order_a", 2500, "usd", capture="manual", payment_method="pm_card_visa", account=account
        )
        captured = await app.payments.capture_async("order_a", account=account)
        refunded = await app.payments.refund_async("order_a", 500, account=account)
        status = await app.payments.status_async("order_a", account=account)
        return held, captured, refunded, status

    held, captured, refunded, status = asyncio.run(flow())
    assert isinstance(held, RequiresCapture) and isinstance(captured, Succeeded)
    assert isinstance(status, Succeeded)
    assert isinstance(refunded, Refunded) and refunded.amount == 500
    assert [r.id for r in refunds(as_connected)] == [refunded.refund_id]


# -- fulfilment through the Connect endpoint ---------------------------------------


@pytest.fixture
def connect_env(
    stripe_sandbox: Sandbox,
    stripe_key: str,
    stripe_client: stripe.StripeClient,
    database_url: str,
) -> Iterator[StripelineEnv]:
    """An app served with both endpoints: the platform's, and a Connect
    endpoint of the platform receiving its connected accounts' events."""
    endpoint = stripe_client.v1.webhook_endpoints.create(
        {"url": "https://example.invalid/connect", "enabled_events": ["*"], "connect": True}
    )
    assert endpoint.secret
    app = Stripeline(settings_for(stripe_sandbox, stripe_key, database_url, endpoint.secret))
    env = StripelineEnv(stripe_sandbox, stripe_key, stripe_client, app)
    stripe_client.v1.webhook_endpoints.update(endpoint.id, {"url": env.webhook_url + "/connect"})
    try:
        yield env
    finally:
        env.close()
        app.dispose()


def wait_for_events(env: StripelineEnv, client: stripe.StripeClient) -> None:
    """Wait until every event of the account ``client`` acts as is in the inbox."""
    wanted = {e.id for e in client.v1.events.list({"limit": 100}).auto_paging_iter()}
    deadline = time.monotonic() + 30
    while not wanted <= {e.id for e in env.events()}:
        assert time.monotonic() < deadline, "the connected account's events did not arrive"
        time.sleep(0.01)


def test_a_connected_accounts_payment_is_fulfilled_once_with_its_account(
    connect_env: StripelineEnv,
    stripe_sandbox: Sandbox,
    stripe_key: str,
) -> None:
    env = connect_env
    account, as_connected = connect_account(stripe_sandbox, stripe_key, env.client)
    seen: list[Fulfilment] = []

    @env.app.payments.fulfil
    def record(fulfilment: Fulfilment) -> None:
        seen.append(fulfilment)

    # The same order id paid on the platform and on the connected account.
    own = env.app.payments.start("order_f", 1000, "usd", payment_method="pm_card_visa")
    theirs = env.app.payments.start(
        "order_f", 2500, "usd", payment_method="pm_card_visa", account=account
    )
    wait_for_events(env, as_connected)
    env.settle()
    got = sorted(
        ((f.account, f.order_id, f.payment_intent_id, f.amount) for f in seen),
        key=lambda t: t[0] or "",
    )
    assert got == [
        (None, "order_f", own.payment_intent_id, 1000),
        (account, "order_f", theirs.payment_intent_id, 2500),
    ]
    theirs_event = next(f.event for f in seen if f.account)
    assert theirs_event.account == account
    # The connected account's PaymentIntent is mirrored under it from the webhooks too.
    held = env.app.mirror.for_account(account).get(theirs.payment_intent_id, "payment_intent")
    assert held is not None and held["status"] == "succeeded"
    # Redelivered to both endpoints, in any order: nothing fulfilled again.
    stored = [e.data for e in env.events()]
    theirs_events = [e for e in stored if e.get("account") == account]
    assert any(e["type"] == "payment_intent.succeeded" for e in theirs_events)
    own_answers = env.deliver([e for e in stored if not e.get("account")], order="shuffled")
    secret = env.app.settings.stripe_connect_webhook_secret
    assert secret is not None
    theirs_answers = deliver(
        env.webhook_url + "/connect",
        theirs_events,
        order="shuffled",
        seed=7,
        secret=secret.get_secret_value(),
    )
    assert {d.status for d in own_answers + theirs_answers} == {200}
    env.settle()
    assert len(seen) == 2
