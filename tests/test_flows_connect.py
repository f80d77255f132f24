"""The customers flow on a connected account (Connect, ``account=``) against
the sandbox through the official SDK: the customer is made in the connected
account, linked and mirrored under it, apart from the platform's own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import stripe
from pydantic import SecretStr

from stripeline.app import Stripeline
from stripeline.errors import CustomerNotFound
from stripeline.flows.customers import USER_KEY
from stripeline.settings import Settings
from stripeline_sandbox import Sandbox


@pytest.fixture
def app(stripe_sandbox: Sandbox, stripe_key: str, database_url: str) -> Iterator[Stripeline]:
    app = Stripeline(
        Settings(
            stripe_secret_key=SecretStr(stripe_key),
            stripe_api_base=stripe_sandbox.url,
            database_url=database_url,
            max_network_retries=0,
        )
    )
    yield app
    app.dispose()


@pytest.fixture
def connected(
    stripe_sandbox: Sandbox, stripe_key: str, stripe_client: stripe.StripeClient
) -> tuple[str, stripe.StripeClient]:
    """A connected account of the platform, and a client acting as it."""
    account = stripe_client.v1.accounts.create({"type": "standard"})
    client = stripe.StripeClient(
        stripe_key, base_addresses={"api": stripe_sandbox.url}, stripe_account=account.id
    )
    return account.id, client


def ids(client: stripe.StripeClient) -> set[str]:
    return {c.id for c in client.v1.customers.list({"limit": 100}).auto_paging_iter()}


def test_a_users_customer_on_a_connected_account_is_theirs_and_apart_from_the_platforms(
    app: Stripeline,
    stripe_client: stripe.StripeClient,
    connected: tuple[str, stripe.StripeClient],
) -> None:
    account, as_connected = connected
    theirs = app.customers.ensure("u1", email="u1@example.com", account=account)
    # Made in the connected account, not the platform's.
    assert ids(as_connected) == {theirs.id}
    assert theirs.id not in ids(stripe_client)
    held = as_connected.v1.customers.retrieve(theirs.id)
    assert held.to_dict()["metadata"][USER_KEY] == "u1" and held.email == "u1@example.com"
    # Asked again: the same customer, nothing new at Stripe.
    assert app.customers.ensure("u1", account=account).id == theirs.id
    assert ids(as_connected) == {theirs.id}
    # The mirror holds it under the account; the platform's mirror does not.
    assert app.mirror.for_account(account).customer(theirs.id) is not None
    assert app.mirror.customer(theirs.id) is None
    # The same user on the platform is another customer, of the platform.
    own = app.customers.ensure("u1")
    assert own.id != theirs.id and own.id in ids(stripe_client)
    assert ids(as_connected) == {theirs.id}


def test_an_update_on_a_connected_account_reaches_that_accounts_customer(
    app: Stripeline, connected: tuple[str, stripe.StripeClient]
) -> None:
    account, as_connected = connected
    theirs = app.customers.ensure("u2", account=account)
    with pytest.raises(CustomerNotFound):
        app.customers.update("u2", name="Ada")  # no customer of u2 on the platform
    changed = app.customers.update("u2", name="Ada", account=account)
    assert changed.id == theirs.id and changed.name == "Ada"
    assert as_connected.v1.customers.retrieve(theirs.id).name == "Ada"
