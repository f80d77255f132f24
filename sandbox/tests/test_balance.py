"""``GET /v1/balance``: the account's balance transactions summed by currency,
``available`` once the sandbox clock passed their ``available_on``."""

from __future__ import annotations

from typing import Any

import pytest
import stripe

from stripeline_sandbox import Sandbox
from stripeline_sandbox._balance_transactions import CHARGE_AVAILABLE_AFTER


def _amounts(balance: stripe.Balance) -> dict[str, dict[str, int]]:
    """{status: {currency: amount}}, checking each entry's ``source_types`` on the way."""
    found: dict[str, dict[str, int]] = {}
    for status in ("available", "pending"):
        entries: list[Any] = balance.to_dict()[status]
        for entry in entries:
            assert set(entry) == {"amount", "currency", "source_types"}
            assert entry["source_types"] == {"card": entry["amount"]}
        found[status] = {e["currency"]: e["amount"] for e in entries}
    return found


def _pay(client: stripe.StripeClient, amount: int, currency: str, card: str) -> stripe.Charge:
    intent = client.v1.payment_intents.create(
        {"amount": amount, "currency": currency, "payment_method": card, "confirm": True}
    )
    return client.v1.charges.retrieve(str(intent.latest_charge))


def test_a_new_account_has_a_zero_balance_in_its_default_currency(
    client: stripe.StripeClient,
) -> None:
    balance = client.v1.balance.retrieve()
    assert isinstance(balance, stripe.Balance)
    assert balance.to_dict() == {
        "object": "balance",
        "available": [{"amount": 0, "currency": "usd", "source_types": {"card": 0}}],
        "livemode": False,
        "pending": [{"amount": 0, "currency": "usd", "source_types": {"card": 0}}],
    }
    # Like every other path, another method is an unknown URL.
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.raw_request("post", "/v1/balance")
    assert caught.value.http_status == 404


def test_a_charge_is_pending_then_available_once_the_clock_passes_available_on(
    sandbox: Sandbox, client: stripe.StripeClient
) -> None:
    charge = _pay(client, 2000, "usd", "pm_card_visa")
    txn = client.v1.balance_transactions.retrieve(str(charge.balance_transaction))
    assert (txn.net, txn.status) == (1912, "pending")
    assert _amounts(client.v1.balance.retrieve()) == {
        "available": {"usd": 0},
        "pending": {"usd": 1912},
    }
    sandbox.advance_clock(CHARGE_AVAILABLE_AFTER - 60)  # not quite there
    assert _amounts(client.v1.balance.retrieve())["pending"] == {"usd": 1912}
    assert client.v1.balance_transactions.retrieve(txn.id).status == "pending"
    sandbox.advance_clock(60)
    # The transaction says what the balance counts, however it is read.
    expanded = client.v1.charges.retrieve(charge.id, {"expand": ["balance_transaction"]})
    assert isinstance(expanded.balance_transaction, stripe.BalanceTransaction)
    assert expanded.balance_transaction.status == "available"
    assert _amounts(client.v1.balance.retrieve()) == {
        "available": {"usd": 1912},
        "pending": {"usd": 0},
    }
    assert [t.status for t in client.v1.balance_transactions.list().data] == ["available"]


def test_bypass_pending_cards_are_available_at_once(client: stripe.StripeClient) -> None:
    charge = _pay(client, 2000, "usd", "pm_card_bypassPending")
    txn = client.v1.balance_transactions.retrieve(str(charge.balance_transaction))
    assert (txn.status, txn.available_on) == ("available", txn.created)
    international = _pay(client, 1000, "usd", "pm_card_bypassPendingInternational")
    assert international.payment_method_details is not None
    card = international.payment_method_details.card
    assert card is not None and card.country == "GB"
    plain = _pay(client, 1000, "usd", "pm_card_visa")
    assert _amounts(client.v1.balance.retrieve()) == {
        "available": {"usd": 1912 + 941},
        "pending": {"usd": 941},
    }
    assert client.v1.balance_transactions.retrieve(str(plain.balance_transaction)).status == (
        "pending"
    )


def test_refunds_and_disputes_reduce_the_available_balance(client: stripe.StripeClient) -> None:
    charge = _pay(client, 2000, "usd", "pm_card_bypassPending")
    assert _amounts(client.v1.balance.retrieve())["available"] == {"usd": 1912}
    client.v1.refunds.create({"charge": charge.id, "amount": 500})
    assert _amounts(client.v1.balance.retrieve())["available"] == {"usd": 1412}
    client.v1.refunds.create({"charge": charge.id})
    assert _amounts(client.v1.balance.retrieve())["available"] == {"usd": -88}
    # A dispute withdraws the amount and its 15.00 fee.
    _pay(client, 3000, "usd", "pm_card_createDispute")
    withdrawal = client.v1.disputes.list().data[0].balance_transactions[0]
    assert (withdrawal.amount, withdrawal.fee) == (-3000, 1500)
    assert _amounts(client.v1.balance.retrieve()) == {
        "available": {"usd": -88 - 4500},
        "pending": {"usd": 3000 - 117},
    }


def test_each_currency_is_listed_in_both_available_and_pending(
    sandbox: Sandbox, client: stripe.StripeClient
) -> None:
    _pay(client, 1000, "eur", "pm_card_visa")
    _pay(client, 2000, "gbp", "pm_card_bypassPending")
    _pay(client, 3000, "eur", "pm_card_bypassPending")
    balance = client.v1.balance.retrieve()
    # The default currency first, then the others; zero where nothing is there.
    assert [a.currency for a in balance.available] == ["usd", "eur", "gbp"]
    assert [p.currency for p in balance.pending] == ["usd", "eur", "gbp"]
    assert _amounts(balance) == {
        "available": {"usd": 0, "eur": 2883, "gbp": 1912},
        "pending": {"usd": 0, "eur": 941, "gbp": 0},
    }
    sandbox.advance_clock(CHARGE_AVAILABLE_AFTER)
    assert _amounts(client.v1.balance.retrieve()) == {
        "available": {"usd": 0, "eur": 2883 + 941, "gbp": 1912},
        "pending": {"usd": 0, "eur": 0, "gbp": 0},
    }


def test_a_connected_account_has_its_own_balance(
    sandbox: Sandbox, key: str, client: stripe.StripeClient
) -> None:
    account = client.v1.accounts.create({"type": "express", "country": "US"})
    connected = stripe.StripeClient(
        key, base_addresses={"api": sandbox.url}, stripe_account=account.id
    )
    _pay(client, 2000, "usd", "pm_card_bypassPending")
    _pay(connected, 5000, "eur", "pm_card_visa")
    assert _amounts(client.v1.balance.retrieve()) == {
        "available": {"usd": 1912},
        "pending": {"usd": 0},
    }
    assert _amounts(connected.v1.balance.retrieve()) == {
        "available": {"usd": 0, "eur": 0},
        "pending": {"usd": 0, "eur": 4825},
    }
    # The same through the per-request option.
    assert client.v1.balance.retrieve(options={"stripe_account": account.id}).pending[1].amount == (
        4825
    )
    # A transfer to the account leaves the platform's available balance.
    client.v1.transfers.create({"amount": 300, "currency": "usd", "destination": account.id})
    assert _amounts(client.v1.balance.retrieve())["available"] == {"usd": 1612}


def test_charges_due_at_different_times_are_released_each_at_its_own(
    sandbox: Sandbox, client: stripe.StripeClient
) -> None:
    """The expanded transaction is released before the request (the due
    ones only): a later charge stays pending until its own ``available_on``."""
    first = _pay(client, 2000, "usd", "pm_card_visa")
    sandbox.advance_clock(86_400)
    second = _pay(client, 1000, "usd", "pm_card_visa")

    def status(charge: stripe.Charge) -> str:
        expanded = client.v1.charges.retrieve(charge.id, {"expand": ["balance_transaction"]})
        assert isinstance(expanded.balance_transaction, stripe.BalanceTransaction)
        return str(expanded.balance_transaction.status)

    assert (status(first), status(second)) == ("pending", "pending")
    sandbox.advance_clock(CHARGE_AVAILABLE_AFTER - 86_400)
    assert (status(first), status(second)) == ("available", "pending")
    sandbox.advance_clock(86_400 - 60)
    assert status(second) == "pending"
    sandbox.advance_clock(60)
    assert status(second) == "available"
    assert _amounts(client.v1.balance.retrieve()) == {
        "available": {"usd": 1912 + 941},
        "pending": {"usd": 0},
    }
