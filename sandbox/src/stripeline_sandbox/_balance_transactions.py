"""Balance transactions: the ``txn_…`` a captured charge, a refund, a dispute or
a transfer names; retrieved and listed here.

Fees follow Stripe's standard US pricing: a card charge pays 2.9 % + 30 (in
its currency's minor unit), an ACH debit 0.8 % capped at 500; refunds,
transfers and failures pay none (a dispute's fee is ``_disputes``'). A charge's
funds are ``pending`` until ``available_on`` (two days after the capture, as
Stripe's standard US payout schedule), then ``available``; the rest are
available at once.
"""

from __future__ import annotations

from stripeline_sandbox._ids import new_id
from stripeline_sandbox._lists import list_object
from stripeline_sandbox._routes import Call, Endpoint, Request
from stripeline_sandbox._state import Obj

NOUN = "balance_transaction"
#: Seconds from a charge's capture until its funds are available.
CHARGE_AVAILABLE_AFTER = 2 * 86_400


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
        "status": "pending" if available_after else "available",
        "type": type,
    }
    call.account.add(transaction)
    return str(transaction["id"])


def for_charge(call: Call, charge: Obj, amount: int) -> str:
    """The balance transaction of ``amount`` captured on ``charge``."""
    method = str(charge["payment_method_details"].get("type") or "card")
    return record(
        call,
        amount=amount,
        currency=str(charge["currency"]),
        type="charge" if method == "card" else "payment",
        reporting_category="charge",
        source=str(charge["id"]),
        description=charge.get("description"),
        fee=processing_fee(amount, method),
        available_after=CHARGE_AVAILABLE_AFTER,
    )


def _current(call: Call, transaction: Obj) -> Obj:
    """``transaction`` with its funds available once ``available_on`` has passed."""
    if transaction["status"] == "pending" and call.now() >= int(transaction["available_on"]):
        transaction["status"] = "available"
    return transaction


def retrieve_balance_transaction(request: Request) -> Obj:
    transaction = request.get(NOUN, request.path_params["id"], "balance transaction")
    return _current(request, transaction)


def list_balance_transactions(request: Request) -> Obj:
    params = request.params

    def keep(transaction: Obj) -> bool:
        return (
            params.get("type") in (None, transaction["type"])
            and params.get("source") in (None, transaction["source"])
            and params.get("currency") in (None, transaction["currency"])
        )

    transactions = [_current(request, t) for t in request.account.all(NOUN)]
    return list_object(request, transactions, "/v1/balance_transactions", keep)


#: This module's endpoints; ``_app.build_router`` puts every module's table together.
ROUTES: tuple[Endpoint, ...] = (
    Endpoint("GET", "/v1/balance_transactions/{id}", retrieve_balance_transaction),
    Endpoint("GET", "/v1/balance_transactions", list_balance_transactions),
)
