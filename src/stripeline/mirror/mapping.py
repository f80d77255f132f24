"""Stripe objects → the typed columns of their mirror tables: pure functions.

Each ``*_columns(obj)`` returns every typed column of its table for one
object as Stripe sent it, whatever the API version: it reads the current
shapes and the older ones (see the notes on each), takes an expandable field
either as an id or as the expanded object, and never raises: a missing,
unknown or oddly typed field gives None. Amounts stay integers in the
currency's smallest unit (``to_major`` converts them for display); Stripe's
Unix timestamps become aware UTC datetimes.

Importing this module registers the typed tables (``stripeline.mirror``
imports it, so every mirror user has them).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Table

from stripeline.db import models
from stripeline.mirror import tables

ColumnsFn = Callable[[dict[str, Any]], dict[str, Any]]

# -- money ----------------------------------------------------------------------

#: Currencies whose API amounts are whole units (Stripe's list): 500 JPY is 500.
ZERO_DECIMAL_CURRENCIES = frozenset(
    {
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "ugx",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    }
)
#: Currencies whose API amounts are thousandths: 5.120 KWD is 5120.
THREE_DECIMAL_CURRENCIES = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})


def currency_exponent(currency: str) -> int:
    """How many decimals the API's integer amounts have in ``currency``.

    0 for zero-decimal currencies, 3 for three-decimal ones, else 2 (ISK,
    HUF and TWD too: Stripe's API keeps two decimals for them).
    """
    code = currency.lower()
    if code in ZERO_DECIMAL_CURRENCIES:
        return 0
    if code in THREE_DECIMAL_CURRENCIES:
        return 3
    return 2


def to_major(amount: int, currency: str) -> Decimal:
    """An API amount (smallest unit) as an exact ``Decimal`` in major units.

    ``to_major(1099, "usd") == Decimal("10.99")``, ``to_major(500, "jpy") ==
    Decimal("500")``, ``to_major(5120, "kwd") == Decimal("5.120")``.
    """
    return Decimal(amount).scaleb(-currency_exponent(currency))


# -- total readers ----------------------------------------------------------------

_INT64 = 2**63 - 1
_INT32 = 2**31 - 1
_ID_LENGTH = 255


def _get(obj: Any, *path: str) -> Any:
    """``obj[path[0]][path[1]]…``, or None as soon as a step is not there."""
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _text(value: Any, limit: int = _ID_LENGTH) -> str | None:
    if not isinstance(value, str):
        return None
    # PostgreSQL text cannot hold NUL; columns have a length.
    return value.replace("\x00", "")[:limit]


def _id(value: Any) -> str | None:
    """An expandable field: the id string, or the expanded object's id."""
    if isinstance(value, dict):
        value = value.get("id")
    return _text(value)


def _int(value: Any, bound: int = _INT64) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if -bound - 1 <= value <= bound else None


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _time(value: Any) -> datetime | None:
    """A Unix timestamp as an aware UTC datetime (None when not a usable one)."""
    seconds = _int(value)
    if seconds is None:
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _currency(value: Any) -> str | None:
    text = _text(value, 16)
    return None if text is None else text.lower()


def _items(value: Any) -> list[dict[str, Any]]:
    """The objects of a list field: a Stripe list (``{"data": […]}``) or a bare list."""
    if isinstance(value, dict):
        value = value.get("data")
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, dict)]


def _first(*values: Any) -> Any:
    for value in values:
        if value is not None:
            return value
    return None


# -- one function per typed table -------------------------------------------------


def customer_columns(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "email": _text(obj.get("email"), 512),
        "name": _text(obj.get("name"), 512),
        "currency": _currency(obj.get("currency")),
        "balance": _int(obj.get("balance")),
        "delinquent": _bool(obj.get("delinquent")),
        # Older integrations pay with a source (card_…) rather than a PaymentMethod.
        "default_payment_method": _first(
            _id(_get(obj, "invoice_settings", "default_payment_method")),
            _id(obj.get("default_source")),
        ),
        "created": _time(obj.get("created")),
    }


def payment_method_columns(obj: dict[str, Any]) -> dict[str, Any]:
    card = obj.get("card")
    return {
        "customer": _id(obj.get("customer")),
        "type": _text(obj.get("type"), 64),
        "card_brand": _text(_get(card, "brand"), 32),
        "card_last4": _text(_get(card, "last4"), 8),
        "card_exp_month": _int(_get(card, "exp_month"), _INT32),
        "card_exp_year": _int(_get(card, "exp_year"), _INT32),
        "created": _time(obj.get("created")),
    }


def payment_intent_columns(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "customer": _id(obj.get("customer")),
        "status": _text(obj.get("status"), 64),
        "amount": _int(obj.get("amount")),
        "amount_received": _int(obj.get("amount_received")),
        "amount_capturable": _int(obj.get("amount_capturable")),
        "currency": _currency(obj.get("currency")),
        "capture_method": _text(obj.get("capture_method"), 32),
        "payment_method": _id(obj.get("payment_method")),
        # Before 2022-11-15 the charges came as a list and there was no latest_charge.
        "latest_charge": _first(
            _id(obj.get("latest_charge")), _id(next(iter(_items(obj.get("charges"))), None))
        ),
        "invoice": _id(obj.get("invoice")),  # dropped in basil
        "cancellation_reason": _text(obj.get("cancellation_reason"), 64),
        "canceled_at": _time(obj.get("canceled_at")),
        "created": _time(obj.get("created")),
    }


def charge_columns(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "customer": _id(obj.get("customer")),
        "payment_intent": _id(obj.get("payment_intent")),
        "payment_method": _id(obj.get("payment_method")),
        "invoice": _id(obj.get("invoice")),  # dropped in basil
        "status": _text(obj.get("status"), 64),
        "amount": _int(obj.get("amount")),
        "amount_captured": _int(obj.get("amount_captured")),
        "amount_refunded": _int(obj.get("amount_refunded")),
        "currency": _currency(obj.get("currency")),
        "paid": _bool(obj.get("paid")),
        "captured": _bool(obj.get("captured")),
        "refunded": _bool(obj.get("refunded")),
        "disputed": _bool(obj.get("disputed")),
        "created": _time(obj.get("created")),
    }


def refund_columns(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "charge": _id(obj.get("charge")),
        "payment_intent": _id(obj.get("payment_intent")),
        "status": _text(obj.get("status"), 64),
        "reason": _text(obj.get("reason"), 64),
        "amount": _int(obj.get("amount")),
        "currency": _currency(obj.get("currency")),
        "created": _time(obj.get("created")),
    }


def product_columns(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": _text(obj.get("name"), 512),
        "active": _bool(obj.get("active")),
        "default_price": _id(obj.get("default_price")),
        "created": _time(obj.get("created")),
    }


def price_columns(obj: dict[str, Any]) -> dict[str, Any]:
    recurring = obj.get("recurring")
    return {
        "product": _id(obj.get("product")),
        "active": _bool(obj.get("active")),
        "currency": _currency(obj.get("currency")),
        "unit_amount": _int(obj.get("unit_amount")),
        "type": _text(obj.get("type"), 32),
        "recurring_interval": _text(_get(recurring, "interval"), 16),
        "recurring_interval_count": _int(_get(recurring, "interval_count"), _INT32),
        "lookup_key": _text(obj.get("lookup_key")),
        "created": _time(obj.get("created")),
    }


def _item_price_and_product(item: dict[str, Any]) -> tuple[str | None, str | None]:
    """A subscription item's price and product; very old items only have a ``plan``."""
    price = _first(item.get("price"), item.get("plan"))
    return _id(price), _id(_get(price, "product"))


def subscription_columns(obj: dict[str, Any]) -> dict[str, Any]:
    # Before basil (2025-03-31) the current period is on the subscription;
    # since, on each item. Items can then have different periods (flexible
    # billing): the subscription's period runs from the earliest item start to
    # the latest item end, so that "paid through" is never cut short.
    start = _time(obj.get("current_period_start"))
    end = _time(obj.get("current_period_end"))
    items = _items(obj.get("items"))
    if start is None:
        starts = [t for t in (_time(i.get("current_period_start")) for i in items) if t]
        start = min(starts) if starts else None
    if end is None:
        ends = [t for t in (_time(i.get("current_period_end")) for i in items) if t]
        end = max(ends) if ends else None
    return {
        "customer": _id(obj.get("customer")),
        "status": _text(obj.get("status"), 64),
        "currency": _currency(obj.get("currency")),
        "collection_method": _text(obj.get("collection_method"), 32),
        "current_period_start": start,
        "current_period_end": end,
        "cancel_at_period_end": _bool(obj.get("cancel_at_period_end")),
        "cancel_at": _time(obj.get("cancel_at")),
        "canceled_at": _time(obj.get("canceled_at")),
        "ended_at": _time(obj.get("ended_at")),
        "trial_start": _time(obj.get("trial_start")),
        "trial_end": _time(obj.get("trial_end")),
        "latest_invoice": _id(obj.get("latest_invoice")),
        "default_payment_method": _first(
            _id(obj.get("default_payment_method")), _id(obj.get("default_source"))
        ),
        "created": _time(obj.get("created")),
    }


def subscription_item_columns(obj: dict[str, Any]) -> dict[str, Any]:
    price, product = _item_price_and_product(obj)
    return {
        "subscription": _id(obj.get("subscription")),
        "price": price,
        "product": product,
        "quantity": _int(obj.get("quantity")),
        # Only since basil; older items share their subscription's period.
        "current_period_start": _time(obj.get("current_period_start")),
        "current_period_end": _time(obj.get("current_period_end")),
        "created": _time(obj.get("created")),
    }


def _invoice_payment(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The payment that settles an invoice (basil+ ``payments``): the default
    one, else a paid one, else the first."""
    payments = _items(obj.get("payments"))
    for wanted in (
        lambda p: p.get("is_default") is True,
        lambda p: p.get("status") == "paid",
        lambda p: True,
    ):
        for payment in payments:
            if wanted(payment):
                inner = payment.get("payment")
                return inner if isinstance(inner, dict) else None
    return None


def invoice_columns(obj: dict[str, Any]) -> dict[str, Any]:
    status = _text(obj.get("status"), 64)
    payment = _invoice_payment(obj)
    lines = obj.get("lines")
    line_items = _items(lines)
    has_more = _get(lines, "has_more")
    complete = None if not isinstance(lines, dict) else has_more is not True
    total_count = _int(_get(lines, "total_count"), _INT32)
    if total_count is None and complete:
        total_count = len(line_items)
    paid = _bool(obj.get("paid"))  # dropped in basil: then the status says it
    if paid is None and status is not None:
        paid = status == "paid"
    return {
        "customer": _id(obj.get("customer")),
        "subscription": _first(
            _id(obj.get("subscription")),
            _id(_get(obj, "parent", "subscription_details", "subscription")),
        ),
        "status": status,
        "currency": _currency(obj.get("currency")),
        "amount_due": _int(obj.get("amount_due")),
        "amount_paid": _int(obj.get("amount_paid")),
        "amount_remaining": _int(obj.get("amount_remaining")),
        "subtotal": _int(obj.get("subtotal")),
        "total": _int(obj.get("total")),
        "paid": paid,
        "number": _text(obj.get("number")),
        "billing_reason": _text(obj.get("billing_reason"), 64),
        "collection_method": _text(obj.get("collection_method"), 32),
        "payment_intent": _first(
            _id(obj.get("payment_intent")), _id(_get(payment, "payment_intent"))
        ),
        "charge": _first(_id(obj.get("charge")), _id(_get(payment, "charge"))),
        "due_date": _time(obj.get("due_date")),
        "period_start": _time(obj.get("period_start")),
        "period_end": _time(obj.get("period_end")),
        "lines_total_count": total_count,
        "lines_complete": complete,
        "created": _time(obj.get("created")),
    }


def invoice_line_columns(line: dict[str, Any]) -> dict[str, Any]:
    """The typed columns of one invoice line (``line_item``), any API version.

    Before basil a line names its ``price`` (or older, ``plan``),
    ``subscription``, ``subscription_item``, ``invoice_item`` and ``proration``
    directly; since, under ``pricing.price_details`` and ``parent.*_details``.
    """
    parent = line.get("parent")
    details = _first(
        _get(parent, "subscription_item_details"), _get(parent, "invoice_item_details")
    )
    price = _first(line.get("price"), line.get("plan"))
    price_details = _get(line, "pricing", "price_details")
    return {
        "amount": _int(line.get("amount")),
        "currency": _currency(line.get("currency")),
        "description": _text(line.get("description"), 10_000),
        "quantity": _int(line.get("quantity")),
        "price": _first(_id(price), _id(_get(price_details, "price"))),
        "product": _first(
            _id(_get(price, "product")),
            _id(_get(price_details, "product")),
            _id(_get(price_details, "price", "product")),
        ),
        "subscription": _first(_id(line.get("subscription")), _id(_get(details, "subscription"))),
        "subscription_item": _first(
            _id(line.get("subscription_item")), _id(_get(details, "subscription_item"))
        ),
        "invoice_item": _first(_id(line.get("invoice_item")), _id(_get(details, "invoice_item"))),
        "proration": _first(_bool(line.get("proration")), _bool(_get(details, "proration"))),
        "period_start": _time(_get(line, "period", "start")),
        "period_end": _time(_get(line, "period", "end")),
    }


def dispute_columns(obj: dict[str, Any]) -> dict[str, Any]:
    due_by = _get(obj, "evidence_details", "due_by")
    return {
        "charge": _id(obj.get("charge")),
        "payment_intent": _id(obj.get("payment_intent")),
        "status": _text(obj.get("status"), 64),
        "reason": _text(obj.get("reason"), 64),
        "amount": _int(obj.get("amount")),
        "currency": _currency(obj.get("currency")),
        # 0 means no response is allowed: there is no deadline to meet.
        "due_by": None if due_by == 0 else _time(due_by),
        "has_evidence": _bool(_get(obj, "evidence_details", "has_evidence")),
        "past_due": _bool(_get(obj, "evidence_details", "past_due")),
        "is_charge_refundable": _bool(obj.get("is_charge_refundable")),
        "created": _time(obj.get("created")),
    }


def checkout_session_columns(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "customer": _id(obj.get("customer")),
        "customer_email": _first(
            _text(obj.get("customer_email"), 512),
            _text(_get(obj, "customer_details", "email"), 512),
        ),
        "client_reference_id": _text(obj.get("client_reference_id")),
        "status": _text(obj.get("status"), 32),
        "payment_status": _text(obj.get("payment_status"), 32),
        "mode": _text(obj.get("mode"), 32),
        "amount_total": _int(obj.get("amount_total")),
        "currency": _currency(obj.get("currency")),
        "payment_intent": _id(obj.get("payment_intent")),
        "subscription": _id(obj.get("subscription")),
        "setup_intent": _id(obj.get("setup_intent")),
        "invoice": _id(obj.get("invoice")),
        "expires_at": _time(obj.get("expires_at")),
        "created": _time(obj.get("created")),
    }


def _table(model: type[models.Base]) -> Table:
    return cast(Table, model.__table__)


#: Stripe object type → (model, columns function). The order is the order of
#: ``all_tables()`` after the generic table.
TYPED_TABLES: dict[str, tuple[type[models.Base], ColumnsFn]] = {
    "customer": (models.Customer, customer_columns),
    "payment_method": (models.PaymentMethod, payment_method_columns),
    "payment_intent": (models.PaymentIntent, payment_intent_columns),
    "charge": (models.Charge, charge_columns),
    "refund": (models.Refund, refund_columns),
    "product": (models.Product, product_columns),
    "price": (models.Price, price_columns),
    "subscription": (models.Subscription, subscription_columns),
    "subscription_item": (models.SubscriptionItem, subscription_item_columns),
    "invoice": (models.Invoice, invoice_columns),
    "dispute": (models.Dispute, dispute_columns),
    "checkout.session": (models.CheckoutSession, checkout_session_columns),
}


def register_all() -> None:
    """Register every typed table (idempotent)."""
    from stripeline.mirror._lines import write_invoice_lines, write_subscription_items

    hooks = {"invoice": write_invoice_lines, "subscription": write_subscription_items}
    for object_type, (model, columns) in TYPED_TABLES.items():
        tables.register(object_type, _table(model), columns, after_write=hooks.get(object_type))


register_all()
