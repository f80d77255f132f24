"""The mirror: the latest known state of every Stripe object, in SQL.

States come from events (``state_from_event``) and from the API
(``state_from_fetch``); ``apply_states`` keeps, for each object, the newest
one by the rules of ``stripeline.core.ordering``, and reports the states it
cannot order so that they are settled by asking Stripe.

Object types with a typed table (customers, subscriptions, invoices, …; see
``mapping``) get the columns applications filter on; ``Mirror`` reads them
as typed, immutable records (``docs/mirror.md``).
"""

from __future__ import annotations

# Registers the typed tables: whoever imports the mirror writes and reads them.
from stripeline.mirror import mapping
from stripeline.mirror._store import (
    ApplyResult,
    State,
    apply_states,
    get_object,
    mirrorable,
    state_from_event,
    state_from_fetch,
)
from stripeline.mirror.mapping import currency_exponent, to_major
from stripeline.mirror.query import (
    ACTIVE_STATUSES,
    Charge,
    CheckoutSession,
    Customer,
    CustomerLink,
    CustomerLinkConflict,
    Dispute,
    Invoice,
    InvoiceLine,
    Mirror,
    MirrorRecord,
    PaymentIntent,
    PaymentMethod,
    Price,
    Product,
    Refund,
    Subscription,
    SubscriptionItem,
)
from stripeline.mirror.tables import GENERIC, MirrorTable, register, table_for

__all__ = [
    "ACTIVE_STATUSES",
    "GENERIC",
    "ApplyResult",
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
    "MirrorTable",
    "PaymentIntent",
    "PaymentMethod",
    "Price",
    "Product",
    "Refund",
    "State",
    "Subscription",
    "SubscriptionItem",
    "apply_states",
    "currency_exponent",
    "get_object",
    "mapping",
    "mirrorable",
    "register",
    "state_from_event",
    "state_from_fetch",
    "table_for",
    "to_major",
]
