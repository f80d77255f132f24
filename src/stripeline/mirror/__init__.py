"""The mirror: the latest known state of every Stripe object, in SQL.

``Mirror`` reads it as typed, immutable records (``Customer``,
``Subscription``, ``Invoice``, …; ``docs/mirror.md``) and keeps the links
between application users and Stripe customers. The write side — states from
events and from the API, ordered by ``stripeline.core.ordering`` (``_store``),
the re-fetch queue (``refetch``) and the mirror policy (``policy``) — is the
worker's and the sync's business and stays in its modules.
"""

from __future__ import annotations

from stripeline.mirror.links import CustomerLinkConflict
from stripeline.mirror.mapping import currency_exponent, to_major
from stripeline.mirror.reader import ACTIVE_STATUSES, Mirror
from stripeline.mirror.records import (
    Charge,
    CheckoutSession,
    Customer,
    CustomerLink,
    Dispute,
    Invoice,
    InvoiceLine,
    MirrorRecord,
    PaymentIntent,
    PaymentMethod,
    Price,
    Product,
    Refund,
    Subscription,
    SubscriptionItem,
)

__all__ = [
    "ACTIVE_STATUSES",
    "Charge",
    "CheckoutSession",
    "Customer",
    "CustomerLink",
    "CustomerLinkConflict",
    "Dispute",
    "Invoice",
    "InvoiceLine",
    "Mirror",
    "MirrorRecord",
    "PaymentIntent",
    "PaymentMethod",
    "Price",
    "Product",
    "Refund",
    "Subscription",
    "SubscriptionItem",
    "currency_exponent",
    "to_major",
]
