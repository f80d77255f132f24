"""The tables. Migrations under ``migrations/`` must match these exactly
(``alembic check`` runs in the test suite)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from stripeline.core import envelope as bounds

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


#: The condition of the indexes by type and by object (migration 0010): an
#: event enters them when the worker claims or finishes it, so the webhook's
#: insert of a pending event writes neither. A query reads them only when its
#: WHERE holds this very term, as written here (SQLite matches the text of a
#: partial index's condition; a bound parameter would not do on either
#: backend); the pending events are read apart, by ``(status, received_at,
#: id)``. ``stripeline.ops.newest_events`` does both.
NOT_PENDING = "status <> 'pending'"


class Event(Base):
    """The inbox: every verified event, whole, with its processing state."""

    __tablename__ = "stripeline_events"

    # The lengths are the envelope's bounds: an event that does not fit is
    # refused (400) when parsed, never half-way through a commit.
    id: Mapped[str] = mapped_column(String(bounds.ID_LENGTH), primary_key=True)
    type: Mapped[str] = mapped_column(String(bounds.TYPE_LENGTH))
    account: Mapped[str | None] = mapped_column(String(bounds.ACCOUNT_LENGTH))
    livemode: Mapped[bool] = mapped_column(Boolean)
    api_version: Mapped[str | None] = mapped_column(String(bounds.API_VERSION_LENGTH))
    created: Mapped[int] = mapped_column(BigInteger)
    object_id: Mapped[str | None] = mapped_column(String(bounds.OBJECT_ID_LENGTH))
    object_type: Mapped[str | None] = mapped_column(String(bounds.OBJECT_TYPE_LENGTH))
    #: The raw body exactly as received (or as fetched, for catch-up).
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    #: webhook | connect | catch-up | replay
    source: Mapped[str] = mapped_column(String(16))
    #: pending | processing | processed | failed | dead | ignored
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    deliveries: Mapped[int] = mapped_column(Integer, default=1)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: The t= of the first delivery's Stripe-Signature (None: not a webhook).
    signed_at: Mapped[int | None] = mapped_column(BigInteger)
    #: When the event is next due: for pending/failed rows the next attempt,
    #: for processing rows the end of the worker's lease (after which any
    #: worker may claim it again). None once processed, dead or ignored.
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_traceback: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        # The claim's and ``inbox.next_due``'s: only the events still to
        # process, in due order (0009; the (status, next_attempt_at) index it
        # replaced went in 0010).
        Index(
            "ix_stripeline_events_claim",
            "next_attempt_at",
            sqlite_where=text("status IN ('pending', 'failed', 'processing')"),
            postgresql_where=text("status IN ('pending', 'failed', 'processing')"),
        ),
        # By type: the console's (type, received_at, id) index below (0007);
        # ``type`` and ``created`` alone are not indexed since 0008.
        # By object, pending events left out (0010): see ``NOT_PENDING``.
        Index(
            "ix_stripeline_events_object",
            "object_id",
            sqlite_where=text(NOT_PENDING),
            postgresql_where=text(NOT_PENDING),
        ),
        # Processed events per minute (the console); only processed rows are
        # in it: storing an event does not write it (migration 0008).
        Index(
            "ix_stripeline_events_processed",
            "processed_at",
            sqlite_where=text("processed_at IS NOT NULL"),
            postgresql_where=text("processed_at IS NOT NULL"),
        ),
    )


class Delivery(Base):
    """One row per time an event reached us *again* (Stripe retries and
    resends, catch-up finding it, replays). The first arrival is the event
    row itself (``received_at``, ``source``, ``signed_at``): a row less to
    write on the webhook's path."""

    __tablename__ = "stripeline_deliveries"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(255), index=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(String(16))
    #: The t= of the Stripe-Signature header (None for catch-up and replay).
    signed_at: Mapped[int | None] = mapped_column(BigInteger)


class Attempt(Base):
    """One row per processing attempt, with its outcome and error."""

    __tablename__ = "stripeline_attempts"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(255), index=True)
    number: Mapped[int] = mapped_column(Integer)
    worker: Mapped[str] = mapped_column(String(255))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: processed | failed | dead
    outcome: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)


class MirrorColumns:
    """The columns every mirror table has (the generic one and the typed ones).

    Typed tables add the columns applications filter on; see
    ``stripeline.mirror.tables``.
    """

    #: "" for the platform account, else the connected account id.
    account: Mapped[str] = mapped_column(String(255), primary_key=True)
    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    livemode: Mapped[bool] = mapped_column(Boolean)
    #: The object exactly as Stripe last described it.
    data: Mapped[dict[str, Any]] = mapped_column(JSONType)
    #: Ordering marker: the second the state describes (``core.ordering``) …
    marker: Mapped[int] = mapped_column(BigInteger)
    #: … and its rank inside that second.
    marker_rank: Mapped[int] = mapped_column(Integer)
    #: The event the state came from; None when it was fetched from the API.
    event_id: Mapped[str | None] = mapped_column(String(255))
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class StripeObject(MirrorColumns, Base):
    """The mirror of every object type without a typed table of its own."""

    __tablename__ = "stripeline_objects"

    object: Mapped[str] = mapped_column(String(64), index=True)


class Cursor(Base):
    """Saved positions of the sync jobs (catch-up's last event, …)."""

    __tablename__ = "stripeline_cursors"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))
    #: When the position refers to a point in time (an event's created), that time.
    position_time: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class OnceKey(Base):
    """Keys taken by ``once(key)``: a side effect guarded by one is done once."""

    __tablename__ = "stripeline_once"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    event_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Refetch(Base):
    """Objects to read again from the API, coalesced: one row per object.

    A request that finds the row already there only counts itself and moves
    ``last_requested_at``: many events about one object within the window
    cost one API read.
    """

    __tablename__ = "stripeline_refetches"

    account: Mapped[str] = mapped_column(String(255), primary_key=True)
    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    object_type: Mapped[str] = mapped_column(String(64))
    livemode: Mapped[bool] = mapped_column(Boolean)
    requests: Mapped[int] = mapped_column(Integer, default=1)
    first_requested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_requested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: When the read is due (or, while ``lease_owner`` is set, when the lease ends).
    due_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    #: Set when the read can never succeed and was given up (never claimed
    #: again until a new request for the object comes in).
    gave_up_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


# -- typed mirror tables ---------------------------------------------------------
# One table per object type applications query. Each has the common
# ``MirrorColumns`` plus the columns they filter on, computed from the object
# by ``stripeline.mirror.mapping`` (amounts in the currency's smallest unit,
# Stripe's timestamps as aware UTC datetimes, ids of expandable fields).


class Customer(MirrorColumns, Base):
    __tablename__ = "stripeline_customers"

    email: Mapped[str | None] = mapped_column(String(512))
    name: Mapped[str | None] = mapped_column(String(512))
    currency: Mapped[str | None] = mapped_column(String(16))
    balance: Mapped[int | None] = mapped_column(BigInteger)
    delinquent: Mapped[bool | None] = mapped_column(Boolean)
    default_payment_method: Mapped[str | None] = mapped_column(String(255))
    created: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_stripeline_customers_email", "account", "email"),)


class PaymentMethod(MirrorColumns, Base):
    __tablename__ = "stripeline_payment_methods"

    customer: Mapped[str | None] = mapped_column(String(255))
    type: Mapped[str | None] = mapped_column(String(64))
    card_brand: Mapped[str | None] = mapped_column(String(32))
    card_last4: Mapped[str | None] = mapped_column(String(8))
    card_exp_month: Mapped[int | None] = mapped_column(Integer)
    card_exp_year: Mapped[int | None] = mapped_column(Integer)
    created: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_stripeline_payment_methods_customer", "account", "customer"),)


class PaymentIntent(MirrorColumns, Base):
    __tablename__ = "stripeline_payment_intents"

    customer: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str | None] = mapped_column(String(64))
    amount: Mapped[int | None] = mapped_column(BigInteger)
    amount_received: Mapped[int | None] = mapped_column(BigInteger)
    amount_capturable: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(16))
    capture_method: Mapped[str | None] = mapped_column(String(32))
    payment_method: Mapped[str | None] = mapped_column(String(255))
    latest_charge: Mapped[str | None] = mapped_column(String(255))
    #: Only in API versions before basil (2025-03-31); None since.
    invoice: Mapped[str | None] = mapped_column(String(255))
    cancellation_reason: Mapped[str | None] = mapped_column(String(64))
    canceled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_stripeline_payment_intents_customer", "account", "customer", "status"),
        Index("ix_stripeline_payment_intents_status", "account", "status"),
    )


class Charge(MirrorColumns, Base):
    __tablename__ = "stripeline_charges"

    customer: Mapped[str | None] = mapped_column(String(255))
    payment_intent: Mapped[str | None] = mapped_column(String(255))
    payment_method: Mapped[str | None] = mapped_column(String(255))
    #: Only in API versions before basil (2025-03-31); None since.
    invoice: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str | None] = mapped_column(String(64))
    amount: Mapped[int | None] = mapped_column(BigInteger)
    amount_captured: Mapped[int | None] = mapped_column(BigInteger)
    amount_refunded: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(16))
    paid: Mapped[bool | None] = mapped_column(Boolean)
    captured: Mapped[bool | None] = mapped_column(Boolean)
    refunded: Mapped[bool | None] = mapped_column(Boolean)
    disputed: Mapped[bool | None] = mapped_column(Boolean)
    created: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_stripeline_charges_customer", "account", "customer"),
        Index("ix_stripeline_charges_payment_intent", "account", "payment_intent"),
    )


class Refund(MirrorColumns, Base):
    __tablename__ = "stripeline_refunds"

    charge: Mapped[str | None] = mapped_column(String(255))
    payment_intent: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(String(64))
    amount: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(16))
    created: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_stripeline_refunds_charge", "account", "charge"),
        Index("ix_stripeline_refunds_payment_intent", "account", "payment_intent"),
    )


class Product(MirrorColumns, Base):
    __tablename__ = "stripeline_products"

    name: Mapped[str | None] = mapped_column(String(512))
    active: Mapped[bool | None] = mapped_column(Boolean)
    default_price: Mapped[str | None] = mapped_column(String(255))
    created: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Price(MirrorColumns, Base):
    __tablename__ = "stripeline_prices"

    product: Mapped[str | None] = mapped_column(String(255))
    active: Mapped[bool | None] = mapped_column(Boolean)
    currency: Mapped[str | None] = mapped_column(String(16))
    unit_amount: Mapped[int | None] = mapped_column(BigInteger)
    #: one_time | recurring
    type: Mapped[str | None] = mapped_column(String(32))
    recurring_interval: Mapped[str | None] = mapped_column(String(16))
    recurring_interval_count: Mapped[int | None] = mapped_column(Integer)
    lookup_key: Mapped[str | None] = mapped_column(String(255))
    created: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_stripeline_prices_product", "account", "product"),
        Index("ix_stripeline_prices_lookup_key", "account", "lookup_key"),
    )


class Subscription(MirrorColumns, Base):
    __tablename__ = "stripeline_subscriptions"

    customer: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str | None] = mapped_column(String(64))
    currency: Mapped[str | None] = mapped_column(String(16))
    collection_method: Mapped[str | None] = mapped_column(String(32))
    #: On the subscription before basil (2025-03-31), on its items since:
    #: then the earliest start and the latest end over the items.
    current_period_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    current_period_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancel_at_period_end: Mapped[bool | None] = mapped_column(Boolean)
    cancel_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    canceled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    trial_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    trial_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    latest_invoice: Mapped[str | None] = mapped_column(String(255))
    default_payment_method: Mapped[str | None] = mapped_column(String(255))
    created: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_stripeline_subscriptions_customer", "account", "customer", "status"),
        Index("ix_stripeline_subscriptions_period_end", "account", "status", "current_period_end"),
    )


class SubscriptionItem(MirrorColumns, Base):
    __tablename__ = "stripeline_subscription_items"

    subscription: Mapped[str | None] = mapped_column(String(255))
    price: Mapped[str | None] = mapped_column(String(255))
    product: Mapped[str | None] = mapped_column(String(255))
    quantity: Mapped[int | None] = mapped_column(BigInteger)
    current_period_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    current_period_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_stripeline_subscription_items_subscription", "account", "subscription"),
    )


class Invoice(MirrorColumns, Base):
    __tablename__ = "stripeline_invoices"

    customer: Mapped[str | None] = mapped_column(String(255))
    #: ``invoice.subscription`` before basil, ``parent.subscription_details`` since.
    subscription: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str | None] = mapped_column(String(64))
    currency: Mapped[str | None] = mapped_column(String(16))
    amount_due: Mapped[int | None] = mapped_column(BigInteger)
    amount_paid: Mapped[int | None] = mapped_column(BigInteger)
    amount_remaining: Mapped[int | None] = mapped_column(BigInteger)
    subtotal: Mapped[int | None] = mapped_column(BigInteger)
    total: Mapped[int | None] = mapped_column(BigInteger)
    #: ``invoice.paid`` before basil; since, whether the status is ``paid``.
    paid: Mapped[bool | None] = mapped_column(Boolean)
    number: Mapped[str | None] = mapped_column(String(255))
    billing_reason: Mapped[str | None] = mapped_column(String(64))
    collection_method: Mapped[str | None] = mapped_column(String(32))
    #: The old top-level fields before basil, ``payments`` since.
    payment_intent: Mapped[str | None] = mapped_column(String(255))
    charge: Mapped[str | None] = mapped_column(String(255))
    due_date: Mapped[datetime | None] = mapped_column(UTCDateTime)
    period_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    period_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: How many lines the invoice has (``lines.total_count`` when Stripe sent it).
    lines_total_count: Mapped[int | None] = mapped_column(Integer)
    #: False when the payload's ``lines`` list was cut short (``has_more``).
    lines_complete: Mapped[bool | None] = mapped_column(Boolean)
    created: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_stripeline_invoices_customer", "account", "customer", "status"),
        Index("ix_stripeline_invoices_subscription", "account", "subscription"),
        Index("ix_stripeline_invoices_due_date", "account", "status", "due_date"),
    )


class InvoiceLine(Base):
    """The lines of the mirrored invoices, copied from each invoice's ``lines``.

    Not a mirror table of its own: the rows of one invoice are replaced
    whenever a newer state of that invoice is written (see ``docs/mirror.md``).
    """

    __tablename__ = "stripeline_invoice_lines"

    account: Mapped[str] = mapped_column(String(255), primary_key=True)
    invoice: Mapped[str] = mapped_column(String(255), primary_key=True)
    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    #: The line's place in the invoice's list (0 first).
    position: Mapped[int] = mapped_column(Integer)
    livemode: Mapped[bool] = mapped_column(Boolean)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType)
    amount: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(16))
    description: Mapped[str | None] = mapped_column(Text)
    quantity: Mapped[int | None] = mapped_column(BigInteger)
    price: Mapped[str | None] = mapped_column(String(255))
    product: Mapped[str | None] = mapped_column(String(255))
    subscription: Mapped[str | None] = mapped_column(String(255))
    subscription_item: Mapped[str | None] = mapped_column(String(255))
    invoice_item: Mapped[str | None] = mapped_column(String(255))
    proration: Mapped[bool | None] = mapped_column(Boolean)
    period_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    period_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Dispute(MirrorColumns, Base):
    __tablename__ = "stripeline_disputes"

    charge: Mapped[str | None] = mapped_column(String(255))
    payment_intent: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(String(64))
    amount: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(16))
    #: ``evidence_details.due_by``; None when no response is allowed (Stripe's 0).
    due_by: Mapped[datetime | None] = mapped_column(UTCDateTime)
    has_evidence: Mapped[bool | None] = mapped_column(Boolean)
    past_due: Mapped[bool | None] = mapped_column(Boolean)
    is_charge_refundable: Mapped[bool | None] = mapped_column(Boolean)
    created: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_stripeline_disputes_due_by", "account", "due_by"),
        Index("ix_stripeline_disputes_status", "account", "status"),
        Index("ix_stripeline_disputes_charge", "account", "charge"),
    )


class CheckoutSession(MirrorColumns, Base):
    __tablename__ = "stripeline_checkout_sessions"

    customer: Mapped[str | None] = mapped_column(String(255))
    customer_email: Mapped[str | None] = mapped_column(String(512))
    client_reference_id: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str | None] = mapped_column(String(32))
    payment_status: Mapped[str | None] = mapped_column(String(32))
    mode: Mapped[str | None] = mapped_column(String(32))
    amount_total: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(16))
    payment_intent: Mapped[str | None] = mapped_column(String(255))
    subscription: Mapped[str | None] = mapped_column(String(255))
    setup_intent: Mapped[str | None] = mapped_column(String(255))
    invoice: Mapped[str | None] = mapped_column(String(255))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_stripeline_checkout_sessions_customer", "account", "customer"),
        Index("ix_stripeline_checkout_sessions_reference", "account", "client_reference_id"),
    )


class CustomerLink(Base):
    """Which Stripe customer an application's user is (one per user and account)."""

    __tablename__ = "stripeline_customer_links"

    account: Mapped[str] = mapped_column(String(255), primary_key=True)
    app_user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_stripeline_customer_links_customer", "account", "customer_id"),)


# -- the flows ---------------------------------------------------------------------


class Call(Base):
    """An outgoing write to Stripe, recorded *before* it is sent
    (``stripeline.flows.calls``): the business action and its reference
    (``payment_intent:create`` for ``order_42``), a hash of its parameters, the
    idempotency key Stripe is sent, and, once answered, the object it made.

    A retry after a crash finds the row and sends the same key (inside
    Stripe's 24-hour window), or past it looks the object up instead of making
    a second one. A different hash for the same key is refused."""

    __tablename__ = "stripeline_calls"

    #: "" for the platform account, else the connected account id.
    account: Mapped[str] = mapped_column(String(255), primary_key=True)
    #: ``<action>:<reference>``, e.g. ``customer:create:user_7``.
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    livemode: Mapped[bool] = mapped_column(Boolean)
    #: SHA-256 (hex) of the call's parameters in canonical JSON.
    params_hash: Mapped[str] = mapped_column(String(64))
    #: The ``Idempotency-Key`` header the call is sent with.
    idempotency_key: Mapped[str] = mapped_column(String(255))
    #: Bumped when a call older than Stripe's idempotency window is sent
    #: again (with a new key) after the object was looked for and not found.
    generation: Mapped[int] = mapped_column(Integer, default=1)
    #: ``pending`` (recorded, not known to be answered), ``done``, ``failed``
    #: (Stripe refused it for good; the same call is answered the same way).
    status: Mapped[str] = mapped_column(String(16))
    object_type: Mapped[str | None] = mapped_column(String(64))
    object_id: Mapped[str | None] = mapped_column(String(255))
    #: The object as Stripe returned it (``done``).
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    #: The error's type and code (``failed``, or the last retryable error).
    error_type: Mapped[str | None] = mapped_column(String(64))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: When this generation's key was first sent (Stripe's window starts there).
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_stripeline_calls_object", "account", "object_id"),)


class Erasure(Base):
    """That a person's data was erased (``customers.forget``): what was done
    at Stripe and how much was scrubbed here. Holds no personal data but the
    application's own user id and the Stripe customer id."""

    __tablename__ = "stripeline_erasures"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    account: Mapped[str] = mapped_column(String(255))
    app_user_id: Mapped[str | None] = mapped_column(String(255))
    customer_id: Mapped[str | None] = mapped_column(String(255))
    #: ``deleted`` | ``anonymised`` | ``not_found`` | ``not_called`` (no key);
    #: ``pending`` while the erasure runs (or after a crash: ``forget`` again).
    stripe_action: Mapped[str] = mapped_column(String(32))
    #: Why Stripe's customer was anonymised rather than deleted, if it was.
    reason: Mapped[str | None] = mapped_column(Text)
    mirror_rows: Mapped[int] = mapped_column(Integer, default=0)
    event_payloads: Mapped[int] = mapped_column(Integer, default=0)
    erased_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_stripeline_erasures_customer", "account", "customer_id"),)


class ConsoleAudit(Base):
    """Who did what in the operator console, and when (docs/console.md):
    sign-ins, retries, replays and bulk replays. Never a password or a
    payload: the actor's name, the action, its target and how many events."""

    __tablename__ = "stripeline_console_audit"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    #: sign_in | sign_out | retry | replay | bulk_replay
    action: Mapped[str] = mapped_column(String(32))
    #: An event id, or the filter a bulk action ran on.
    target: Mapped[str | None] = mapped_column(Text)
    #: Events the action changed.
    count: Mapped[int] = mapped_column(Integer, default=0)
    client: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (Index("ix_stripeline_console_audit_at", "at"),)


# The console's event list pages newest first by (received_at, id), alone or
# within one status or type: each of these serves one of its queries from
# the index alone, at any inbox size.
Index("ix_stripeline_events_received", Event.received_at, Event.id)
Index("ix_stripeline_events_status_received", Event.status, Event.received_at, Event.id)
Index(
    "ix_stripeline_events_type_received",
    Event.type,
    Event.received_at,
    Event.id,
    sqlite_where=text(NOT_PENDING),
    postgresql_where=text(NOT_PENDING),
)
# The console's overview counts attempts per minute over the last hour.
Index("ix_stripeline_attempts_finished", Attempt.finished_at)
