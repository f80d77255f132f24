"""Balance transactions: the ``txn_…`` a captured charge, a refund, a dispute or
a transfer names; retrieved and listed here, and summed into the account's
balance (``GET /v1/balance``).

Fees follow Stripe's standard US pricing: a card charge pays 2.9 % + 30 (in
its currency's minor unit), an ACH debit 0.8 % capped at 500; refunds,
transfers and failures pay none (a dispute's fee is ``_disputes``'). A charge's
funds are ``pending`` until ``available_on`` (two days after the capture, as
Stripe's standard US payout schedule; at once for the ``bypassPending`` test
cards), then ``available``; the rest are available at once. ``current`` is the
one rule that turns a transaction ``available``: every request applies it to
the due ones first (``release_due``), so a transaction read, expanded or
counted in the balance agrees with the sandbox clock.
"""

from __future__ import annotations

from stripeline_sandbox._cards import TestCard
from stripeline_sandbox._ids import new_id
from stripeline_sandbox._lists import list_object
from stripeline_sandbox._routes import Call, Endpoint, Request
from stripeline_sandbox._state import Obj

NOUN = "balance_transaction"
#: Seconds from a charge's capture until its funds are available.
CHARGE_AVAILABLE_AFTER = 2 * 86_400
#: Every sandbox account's ``default_currency`` (``GET /v1/account``): the
#: balance always lists it, even before any money moved.
DEFAULT_CURRENCY = "usd"
#: Hidden state: the ``pending`` transactions, by id, with their ``available_on``.
_PENDING = "__pending_balance_transactions__"
#: Hidden state: ``{"at": …}``, the earliest ``available_on`` among them (or
#: earlier): a request before it has nothing to release and looks no further.
_NEXT = "__next_balance_release__"


def processing_fee(amount: int, payment_method_type: str) -> int:
    """Stripe's fee on a payment of ``amount`` (standard US pricing)."""
    if payment_method_type == "us_bank_account":
        return min(round(amount * 0.008), 500)
    return round(amount * 0.029) + 30


def record(
    call: Call,
    *,
    amount: int,
    currency: str,
    type: str,
    reporting_category: str,
    source: str,
    description: str | None = None,
    fee: int = 0,
    available_after: int = 0,
) -> str:
    """Store a balance transaction of ``amount`` (negative: money out) and return its id."""
    now = call.now()
    transaction: Obj = {
        "id": new_id("txn"),
        "object": NOUN,
        "amount": amount,
        "available_on": now + available_after,
        "balance_type": "payments",
        "created": now,
        "currency": currency,
        "description": description,
        "exchange_rate": None,
        "fee": fee,
        "fee_details": [
            {
                "amount": fee,
                "application": None,
                "currency": currency,
                "description": "Stripe processing fees",
                "type": "stripe_fee",
            }
        ]
        if fee
        else [],
        "net": amount - fee,
        "reporting_category": reporting_category,
        "source": source,
        "status": "pending",
        "type": type,
    }
    call.account.add(transaction)
    if current(call, transaction)["status"] == "pending":
        moment = int(transaction["available_on"])
        call.account.hidden(_PENDING)[transaction["id"]] = moment
        following = call.account.hidden(_NEXT)
        if following.get("at") is None or moment < int(following["at"]):
            following["at"] = moment
    return str(transaction["id"])


def for_charge(call: Call, charge: Obj, amount: int) -> str:
    """The balance transaction of ``amount`` captured on ``charge``."""
    method = str(charge["payment_method_details"].get("type") or "card")
    card = call.account.hidden(str(charge["id"])).get("card")
    bypass = isinstance(card, TestCard) and card.bypass_pending
    return record(
        call,
        amount=amount,
        currency=str(charge["currency"]),
        type="charge" if method == "card" else "payment",
        reporting_category="charge",
        source=str(charge["id"]),
        description=charge.get("description"),
        fee=processing_fee(amount, method),
        available_after=0 if bypass else CHARGE_AVAILABLE_AFTER,
    )


def current(call: Call, transaction: Obj) -> Obj:
    """``transaction``, ``available`` once the sandbox clock reached its
    ``available_on`` (the one rule: ``pending`` until then)."""
    if transaction["status"] == "pending" and call.now() >= int(transaction["available_on"]):
        transaction["status"] = "available"
        call.account.hidden(_PENDING).pop(transaction["id"], None)
    return transaction


def release_due(call: Call) -> None:
    """Make available every pending transaction of the account whose
    ``available_on`` has passed (before each request, and when the clock moves)."""
    due = call.account.hidden(_PENDING)
    if not due:
        return
    now = call.now()
    following = call.account.hidden(_NEXT)
    if following.get("at") is not None and int(following["at"]) > now:
        return  # none due yet: every request spared the scan
    for transaction_id, moment in list(due.items()):
        if int(moment) > now:
            continue
        transaction = call.account.find(NOUN, transaction_id)
        if transaction is None:
            due.pop(transaction_id, None)
        else:
            current(call, transaction)
    following["at"] = min((int(moment) for moment in due.values()), default=None)


def retrieve_balance_transaction(request: Request) -> Obj:
    transaction = request.get(NOUN, request.path_params["id"], "balance transaction")
    return current(request, transaction)


def list_balance_transactions(request: Request) -> Obj:
    params = request.params

    def keep(transaction: Obj) -> bool:
        return (
            params.get("type") in (None, transaction["type"])
            and params.get("source") in (None, transaction["source"])
            and params.get("currency") in (None, transaction["currency"])
        )

    transactions = [current(request, t) for t in request.account.all(NOUN)]
    return list_object(request, transactions, "/v1/balance_transactions", keep)


def balance(call: Call) -> Obj:
    """The account's balance: the ``net`` of its balance transactions by
    currency, ``available`` or ``pending`` as ``current`` says.

    Every currency the account has moved money in is listed in both, with
    ``amount: 0`` where it has none (the default currency even before any
    money moved). All of the sandbox's payment methods are cards or
    non-legacy bank debits, which Stripe counts under ``source_types.card``.
    """
    totals: dict[str, dict[str, int]] = {DEFAULT_CURRENCY: {"available": 0, "pending": 0}}
    for transaction in call.account.all(NOUN):
        if transaction.get("balance_type", "payments") != "payments":
            continue
        status = current(call, transaction)["status"]
        sums = totals.setdefault(str(transaction["currency"]), {"available": 0, "pending": 0})
        sums[status] += int(transaction["net"])
    currencies = sorted(totals, key=lambda c: (c != DEFAULT_CURRENCY, c))

    def amounts(status: str) -> list[Obj]:
        return [
            {
                "amount": totals[c][status],
                "currency": c,
                "source_types": {"card": totals[c][status]},
            }
            for c in currencies
        ]

    return {
        "object": "balance",
        "available": amounts("available"),
        "livemode": False,
        "pending": amounts("pending"),
    }


def retrieve_balance(request: Request) -> Obj:
    return balance(request)


#: This module's endpoints; ``_app.build_router`` puts every module's table together.
ROUTES: tuple[Endpoint, ...] = (
    Endpoint("GET", "/v1/balance_transactions/{id}", retrieve_balance_transaction),
    Endpoint("GET", "/v1/balance_transactions", list_balance_transactions),
    Endpoint("GET", "/v1/balance", retrieve_balance),
)
