"""The mirror's records: typed, immutable answers of ``Mirror``.

Each typed table gives one frozen dataclass (``Customer``, ``Subscription``,
``Invoice``, …): the typed columns, aware UTC datetimes, and ``data``, the
object exactly as Stripe last described it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row


@dataclass(frozen=True, slots=True, kw_only=True)
class MirrorRecord:
    """What every mirrored object has: its id, account, mode and full JSON.

    ``data`` is the object exactly as Stripe last described it (this record's
    own copy); the typed fields of each subclass are computed from it.
    """

    id: str
    account: str
    livemode: bool
    deleted: bool
    #: When the mirror last wrote this row.
    updated_at: datetime
    data: dict[str, Any]

    @classmethod
    def from_row(cls, row: Row[Any]) -> Any:
        values = row._mapping
        return cls(**{field.name: values[field.name] for field in dataclasses.fields(cls)})


@dataclass(frozen=True, slots=True, kw_only=True)
class Customer(MirrorRecord):
    email: str | None
    name: str | None
    currency: str | None
    balance: int | None
    delinquent: bool | None
    default_payment_method: str | None
    created: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentMethod(MirrorRecord):
    customer: str | None
    type: str | None
    card_brand: str | None
    card_last4: str | None
    card_exp_month: int | None
    card_exp_year: int | None
    created: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentIntent(MirrorRecord):
    customer: str | None
    status: str | None
    amount: int | None
    amount_received: int | None
    amount_capturable: int | None
    currency: str | None
    capture_method: str | None
    payment_method: str | None
    latest_charge: str | None
    invoice: str | None
    cancellation_reason: str | None
    canceled_at: datetime | None
    created: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Charge(MirrorRecord):
    customer: str | None
    payment_intent: str | None
    payment_method: str | None
    invoice: str | None
    status: str | None
    amount: int | None
    amount_captured: int | None
    amount_refunded: int | None
    currency: str | None
    paid: bool | None
    captured: bool | None
    refunded: bool | None
    disputed: bool | None
    created: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Refund(MirrorRecord):
    charge: str | None
    payment_intent: str | None
    status: str | None
    reason: str | None
    amount: int | None
    currency: str | None
    created: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Product(MirrorRecord):
    name: str | None
    active: bool | None
    default_price: str | None
    created: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Price(MirrorRecord):
    product: str | None
    active: bool | None
    currency: str | None
    unit_amount: int | None
    type: str | None
    recurring_interval: str | None
    recurring_interval_count: int | None
    lookup_key: str | None
    created: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Subscription(MirrorRecord):
    customer: str | None
    status: str | None
    currency: str | None
    collection_method: str | None
    current_period_start: datetime | None
    current_period_end: datetime | None
    cancel_at_period_end: bool | None
    cancel_at: datetime | None
    canceled_at: datetime | None
    ended_at: datetime | None
    trial_start: datetime | None
    trial_end: datetime | None
    latest_invoice: str | None
    default_payment_method: str | None
    created: datetime | None

    @property
    def cancels(self) -> bool:
        """Whether the subscription is set to end (at period end or at a time)."""
        return bool(self.cancel_at_period_end) or self.cancel_at is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionItem(MirrorRecord):
    subscription: str | None
    price: str | None
    product: str | None
    quantity: int | None
    current_period_start: datetime | None
    current_period_end: datetime | None
    created: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Invoice(MirrorRecord):
    customer: str | None
    subscription: str | None
    status: str | None
    currency: str | None
    amount_due: int | None
    amount_paid: int | None
    amount_remaining: int | None
    subtotal: int | None
    total: int | None
    paid: bool | None
    number: str | None
    billing_reason: str | None
    collection_method: str | None
    payment_intent: str | None
    charge: str | None
    due_date: datetime | None
    period_start: datetime | None
    period_end: datetime | None
    lines_total_count: int | None
    lines_complete: bool | None
    created: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class InvoiceLine:
    """One line of a mirrored invoice (see ``docs/mirror.md``)."""

    id: str
    account: str
    invoice: str
    position: int
    livemode: bool
    amount: int | None
    currency: str | None
    description: str | None
    quantity: int | None
    price: str | None
    product: str | None
    subscription: str | None
    subscription_item: str | None
    invoice_item: str | None
    proration: bool | None
    period_start: datetime | None
    period_end: datetime | None
    updated_at: datetime
    data: dict[str, Any]

    @classmethod
    def from_row(cls, row: Row[Any]) -> InvoiceLine:
        values = row._mapping
        return cls(**{field.name: values[field.name] for field in dataclasses.fields(cls)})


@dataclass(frozen=True, slots=True, kw_only=True)
class Dispute(MirrorRecord):
    charge: str | None
    payment_intent: str | None
    status: str | None
    reason: str | None
    amount: int | None
    currency: str | None
    due_by: datetime | None
    has_evidence: bool | None
    past_due: bool | None
    is_charge_refundable: bool | None
    created: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckoutSession(MirrorRecord):
    customer: str | None
    customer_email: str | None
    client_reference_id: str | None
    status: str | None
    payment_status: str | None
    mode: str | None
    amount_total: int | None
    currency: str | None
    payment_intent: str | None
    subscription: str | None
    setup_intent: str | None
    invoice: str | None
    expires_at: datetime | None
    created: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class CustomerLink:
    """An application user and the Stripe customer that is theirs."""

    account: str
    app_user_id: str
    customer_id: str
    created_at: datetime


#: Stripe object type → the record class its typed table gives.
RECORDS: dict[str, type[MirrorRecord]] = {
    "customer": Customer,
    "payment_method": PaymentMethod,
    "payment_intent": PaymentIntent,
    "charge": Charge,
    "refund": Refund,
    "product": Product,
    "price": Price,
    "subscription": Subscription,
    "subscription_item": SubscriptionItem,
    "invoice": Invoice,
    "dispute": Dispute,
    "checkout.session": CheckoutSession,
}
