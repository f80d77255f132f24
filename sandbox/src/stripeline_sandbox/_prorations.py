"""Prorations: credit the unused time of the old price, charge the remaining
time of the new one, by the exact seconds left in the current period.

Each side is its own pending invoice item (``proration: true``) rounded half
up to the cent, so an upgrade from A to B over a fraction f of the period
costs ``round(B × f) − round(A × f)``, as on Stripe's invoices. The items wait
for the next invoice of the subscription (``create_prorations``) or go on an
invoice made at once (``always_invoice``).
"""

from __future__ import annotations

from datetime import UTC, datetime

from stripeline_sandbox._billing import period_of, product_name
from stripeline_sandbox._ids import new_id
from stripeline_sandbox._meters import metered
from stripeline_sandbox._routes import Call
from stripeline_sandbox._state import Obj

#: (item, old price, old quantity, new price, new quantity) of one item change.
Change = tuple[Obj, Obj | None, int, Obj | None, int]


def prorate(amount: int, remaining: int, total: int) -> int:
    """``amount × remaining / total`` rounded half up (away from zero), in cents."""
    if total <= 0:
        return 0
    sign = -1 if amount < 0 else 1
    return sign * ((2 * abs(amount) * remaining + total) // (2 * total))


#: One proration: (item, price, quantity, signed amount, description, period).
Proration = tuple[Obj, Obj, int, int, str, tuple[int, int]]


def prorations(
    call: Call, subscription: Obj, changes: list[Change], moment: int
) -> list[Proration]:
    """What ``changes`` at ``moment`` credit and charge, nothing stored (the
    invoice preview shows these; ``proration_items`` stores them)."""
    start, end = period_of(subscription)
    remaining, total = end - moment, end - start
    found: list[Proration] = []
    for item, old_price, old_quantity, new_price, new_quantity in changes:
        for price, quantity, sign, words in (
            (old_price, old_quantity, -1, "Unused time on"),
            (new_price, new_quantity, 1, "Remaining time on"),
        ):
            if price is None or quantity == 0 or metered(price):
                continue  # usage is billed in arrears, never prorated
            amount = sign * prorate(int(price["unit_amount"]) * quantity, remaining, total)
            when = _date(moment)
            description = f"{words} {quantity} × {product_name(call, price)} after {when}"
            found.append((item, price, quantity, amount, description, (moment, end)))
    return found


def proration_items(
    call: Call,
    subscription: Obj,
    changes: list[Change],
    moment: int,
) -> list[Obj]:
    """Invoice items crediting unused time and charging remaining time of each change.

    ``changes`` holds (item, old price, old quantity, new price, new quantity).
    """
    return [
        _proration_item(call, subscription, item, price, quantity, amount, description, period)
        for item, price, quantity, amount, description, period in prorations(
            call, subscription, changes, moment
        )
    ]


def _date(moment: int) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%d %b %Y").lstrip("0")


def _proration_item(
    call: Call,
    subscription: Obj,
    item: Obj,
    price: Obj,
    quantity: int,
    amount: int,
    description: str,
    period: tuple[int, int],
) -> Obj:
    invoice_item: Obj = {
        "id": new_id("ii"),
        "object": "invoiceitem",
        "amount": amount,
        "currency": subscription["currency"],
        "customer": subscription["customer"],
        "customer_account": None,
        "date": period[0],
        "description": description,
        "discountable": False,
        "discounts": [],
        "invoice": None,
        "livemode": False,
        "metadata": {},
        "net_amount": amount,
        "parent": {
            "subscription_details": {
                "subscription": subscription["id"],
                "subscription_item": item["id"],
            },
            "type": "subscription_details",
        },
        "period": {"start": period[0], "end": period[1]},
        "pricing": {
            "price_details": {"price": price["id"], "product": price["product"]},
            "type": "price_details",
            "unit_amount_decimal": price["unit_amount_decimal"],
        },
        "proration": True,
        "proration_details": {"discount_amounts": []},
        "quantity": quantity,
        "quantity_decimal": str(quantity),
        "tax_rates": [],
        "test_clock": subscription["test_clock"],
    }
    call.account.add(invoice_item)
    call.account.hidden(invoice_item["id"])["subscription_item"] = item["id"]
    call.emit("invoiceitem.created", invoice_item)
    return invoice_item
