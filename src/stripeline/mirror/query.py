"""Reading the mirror: typed, immutable answers without asking Stripe.

::

    mirror = Mirror(engine)                      # or Mirror(engine, account="acct_…")
    customer = mirror.customer_for_user("user-42")
    if customer and mirror.active_subscriptions(customer.id):
        ...
    due = mirror.disputes(due_before=now + timedelta(days=3), status="needs_response")

Every method has an async twin named ``…_async``. The twins run the same
code in a worker thread (``asyncio.to_thread``) rather than on an async
engine: a lookup is one indexed query that takes well under a millisecond,
the mirror shares the application's one synchronous engine (SQLite or
psycopg) and its pool with the worker, and no second driver (aiosqlite,
asyncpg) is needed. Lists leave deleted objects out and are newest first;
lookups by id return deleted objects too (their ``deleted`` is True).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar, cast

from sqlalchemy import ColumnElement, Engine, Row, Table, select
from sqlalchemy.exc import IntegrityError

from stripeline.db import models
from stripeline.db.engine import connect, insert_for, read
from stripeline.errors import StripelineError
from stripeline.mirror import mapping as _mapping  # noqa: F401 - registers the typed tables
from stripeline.mirror._lines import invoice_lines
from stripeline.mirror._store import get_object
from stripeline.mirror.tables import GENERIC, table_for

#: Subscription statuses that grant access (``active_subscriptions``).
ACTIVE_STATUSES = ("active", "trialing")
#: How many objects a list returns unless told otherwise.
DEFAULT_LIMIT = 100


class CustomerLinkConflict(StripelineError):
    """This application user is already linked to another Stripe customer."""


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

R = TypeVar("R", bound=MirrorRecord)
P = ParamSpec("P")
T = TypeVar("T")
_links = cast(Table, models.CustomerLink.__table__)


def _statuses(status: str | Sequence[str] | None) -> list[str] | None:
    if status is None:
        return None
    return [status] if isinstance(status, str) else list(status)


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("naive datetime: pass an aware one (e.g. datetime.now(UTC))")
    return value.astimezone(UTC)


async def _in_thread(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    return await asyncio.to_thread(fn, *args, **kwargs)


class Mirror:
    """Typed reads of the mirror, and the app-user ↔ customer links.

    ``account`` is the connected account whose objects are read (None: the
    platform's own). Reads never call Stripe and never take the write lock.
    """

    def __init__(self, engine: Engine, *, account: str | None = None) -> None:
        self.engine = engine
        self.account = account or ""

    def for_account(self, account: str | None) -> Mirror:
        """The same mirror, reading ``account``'s objects."""
        return Mirror(self.engine, account=account)

    # -- generic ------------------------------------------------------------------

    def _one(self, object_type: str, record: type[R], object_id: str) -> R | None:
        table = table_for(object_type).table
        query = select(table).where(table.c.account == self.account, table.c.id == object_id)
        row = read(self.engine, lambda conn: conn.execute(query).first())
        return None if row is None else cast(R, record.from_row(row))

    def _many(
        self,
        object_type: str,
        record: type[R],
        *where: ColumnElement[bool],
        limit: int = DEFAULT_LIMIT,
        include_deleted: bool = False,
        order: str = "created",
    ) -> list[R]:
        table = table_for(object_type).table
        query = select(table).where(table.c.account == self.account, *where)
        if not include_deleted:
            query = query.where(table.c.deleted.is_(False))
        query = query.order_by(table.c[order].desc(), table.c.id.desc()).limit(limit)
        rows = read(self.engine, lambda conn: conn.execute(query).all())
        return [cast(R, record.from_row(row)) for row in rows]

    def get(self, object_id: str, object_type: str | None = None) -> dict[str, Any] | None:
        """Any mirrored object as Stripe's JSON (typed table or not), or None."""
        return read(
            self.engine,
            lambda conn: get_object(conn, object_id, account=self.account, object_type=object_type),
        )

    def objects(
        self, object_type: str, *, limit: int = DEFAULT_LIMIT, include_deleted: bool = False
    ) -> list[dict[str, Any]]:
        """Mirrored objects of a type without a typed table (coupons, …), as JSON."""
        table = GENERIC.table
        query = select(table.c.data).where(
            table.c.account == self.account, table.c.object == object_type
        )
        if not include_deleted:
            query = query.where(table.c.deleted.is_(False))
        query = query.order_by(table.c.marker.desc(), table.c.id.desc()).limit(limit)
        rows = read(self.engine, lambda conn: conn.execute(query).all())
        return [dict(row.data) for row in rows]

    # -- customers ------------------------------------------------------------------

    def customer(self, customer_id: str) -> Customer | None:
        return self._one("customer", Customer, customer_id)

    def customers(self, *, email: str | None = None, limit: int = DEFAULT_LIMIT) -> list[Customer]:
        """Customers, newest first; ``email`` matches exactly."""
        table = table_for("customer").table
        where = [] if email is None else [table.c.email == email]
        return self._many("customer", Customer, *where, limit=limit)

    def payment_method(self, payment_method_id: str) -> PaymentMethod | None:
        return self._one("payment_method", PaymentMethod, payment_method_id)

    def payment_methods(
        self, customer: str, *, type: str | None = None, limit: int = DEFAULT_LIMIT
    ) -> list[PaymentMethod]:
        table = table_for("payment_method").table
        where = [table.c.customer == customer]
        if type is not None:
            where.append(table.c.type == type)
        return self._many("payment_method", PaymentMethod, *where, limit=limit)

    # -- payments -------------------------------------------------------------------

    def payment_intent(self, payment_intent_id: str) -> PaymentIntent | None:
        return self._one("payment_intent", PaymentIntent, payment_intent_id)

    def payment_intents(
        self,
        customer: str | None = None,
        *,
        status: str | Sequence[str] | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> list[PaymentIntent]:
        table = table_for("payment_intent").table
        return self._many(
            "payment_intent",
            PaymentIntent,
            *self._filters(table, customer=customer, status=status),
            limit=limit,
        )

    def charge(self, charge_id: str) -> Charge | None:
        return self._one("charge", Charge, charge_id)

    def charges(
        self,
        customer: str | None = None,
        *,
        payment_intent: str | None = None,
        status: str | Sequence[str] | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> list[Charge]:
        table = table_for("charge").table
        where = self._filters(table, customer=customer, status=status)
        if payment_intent is not None:
            where.append(table.c.payment_intent == payment_intent)
        return self._many("charge", Charge, *where, limit=limit)

    def refund(self, refund_id: str) -> Refund | None:
        return self._one("refund", Refund, refund_id)

    def refunds(
        self,
        *,
        charge: str | None = None,
        payment_intent: str | None = None,
        status: str | Sequence[str] | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> list[Refund]:
        table = table_for("refund").table
        where = self._filters(table, status=status)
        if charge is not None:
            where.append(table.c.charge == charge)
        if payment_intent is not None:
            where.append(table.c.payment_intent == payment_intent)
        return self._many("refund", Refund, *where, limit=limit)

    # -- catalog --------------------------------------------------------------------

    def product(self, product_id: str) -> Product | None:
        return self._one("product", Product, product_id)

    def products(self, *, active: bool | None = None, limit: int = DEFAULT_LIMIT) -> list[Product]:
        table = table_for("product").table
        where = [] if active is None else [table.c.active.is_(active)]
        return self._many("product", Product, *where, limit=limit)

    def price(self, price_id: str) -> Price | None:
        return self._one("price", Price, price_id)

    def prices(
        self,
        *,
        product: str | None = None,
        active: bool | None = None,
        lookup_key: str | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> list[Price]:
        table = table_for("price").table
        where: list[ColumnElement[bool]] = []
        if product is not None:
            where.append(table.c.product == product)
        if active is not None:
            where.append(table.c.active.is_(active))
        if lookup_key is not None:
            where.append(table.c.lookup_key == lookup_key)
        return self._many("price", Price, *where, limit=limit)

    # -- billing --------------------------------------------------------------------

    def subscription(self, subscription_id: str) -> Subscription | None:
        return self._one("subscription", Subscription, subscription_id)

    def subscriptions(
        self,
        customer: str | None = None,
        *,
        status: str | Sequence[str] | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> list[Subscription]:
        """Subscriptions (of ``customer``), newest first; ``status`` one or several."""
        table = table_for("subscription").table
        return self._many(
            "subscription",
            Subscription,
            *self._filters(table, customer=customer, status=status),
            limit=limit,
        )

    def active_subscriptions(self, customer: str) -> list[Subscription]:
        """The customer's subscriptions that grant access: ``ACTIVE_STATUSES``.

        ``past_due`` is left out: whether a late payment still grants access
        is the application's call (``subscriptions(customer, status=[…])``).
        """
        return self.subscriptions(customer, status=ACTIVE_STATUSES)

    def subscription_items(self, subscription: str) -> list[SubscriptionItem]:
        table = table_for("subscription_item").table
        return self._many(
            "subscription_item", SubscriptionItem, table.c.subscription == subscription
        )

    def invoice(self, invoice_id: str) -> Invoice | None:
        return self._one("invoice", Invoice, invoice_id)

    def invoices(
        self,
        customer: str | None = None,
        *,
        status: str | Sequence[str] | None = None,
        subscription: str | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> list[Invoice]:
        table = table_for("invoice").table
        where = self._filters(table, customer=customer, status=status)
        if subscription is not None:
            where.append(table.c.subscription == subscription)
        return self._many("invoice", Invoice, *where, limit=limit)

    def invoice_lines(self, invoice_id: str) -> list[InvoiceLine]:
        """The invoice's lines in its order (``Invoice.lines_complete`` says if
        the list Stripe sent was whole)."""
        query = (
            select(invoice_lines)
            .where(invoice_lines.c.account == self.account, invoice_lines.c.invoice == invoice_id)
            .order_by(invoice_lines.c.position, invoice_lines.c.id)
        )
        with connect(self.engine, readonly=True) as conn:
            return [InvoiceLine.from_row(row) for row in conn.execute(query)]

    # -- disputes and checkout --------------------------------------------------------

    def dispute(self, dispute_id: str) -> Dispute | None:
        return self._one("dispute", Dispute, dispute_id)

    def disputes(
        self,
        *,
        due_before: datetime | None = None,
        status: str | Sequence[str] | None = None,
        charge: str | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> list[Dispute]:
        """Disputes; with ``due_before``, those whose evidence is due before
        then, soonest first (disputes without a deadline are left out)."""
        table = table_for("dispute").table
        where = self._filters(table, status=status)
        if charge is not None:
            where.append(table.c.charge == charge)
        if due_before is None:
            return self._many("dispute", Dispute, *where, limit=limit)
        query = (
            select(table)
            .where(
                table.c.account == self.account,
                table.c.deleted.is_(False),
                table.c.due_by.is_not(None),
                table.c.due_by < _aware(due_before),
                *where,
            )
            .order_by(table.c.due_by, table.c.id)
            .limit(limit)
        )
        with connect(self.engine, readonly=True) as conn:
            return [cast(Dispute, Dispute.from_row(row)) for row in conn.execute(query)]

    def checkout_session(self, session_id: str) -> CheckoutSession | None:
        return self._one("checkout.session", CheckoutSession, session_id)

    def checkout_sessions(
        self,
        customer: str | None = None,
        *,
        client_reference_id: str | None = None,
        status: str | Sequence[str] | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> list[CheckoutSession]:
        table = table_for("checkout.session").table
        where = self._filters(table, customer=customer, status=status)
        if client_reference_id is not None:
            where.append(table.c.client_reference_id == client_reference_id)
        return self._many("checkout.session", CheckoutSession, *where, limit=limit)

    # -- app users ↔ customers ----------------------------------------------------------

    def link_customer(self, app_user_id: str, customer_id: str) -> CustomerLink:
        """Record that ``app_user_id`` is Stripe's ``customer_id`` (idempotent).

        Raises:
            CustomerLinkConflict: the user is already linked to another customer.
        """
        now = datetime.now(UTC)
        insert = insert_for(self.engine)
        statement = (
            insert(_links)
            .values(
                account=self.account,
                app_user_id=app_user_id,
                customer_id=customer_id,
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=[_links.c.account, _links.c.app_user_id])
        )
        try:
            with connect(self.engine) as conn:
                conn.execute(statement)
                row = conn.execute(
                    select(_links).where(
                        _links.c.account == self.account, _links.c.app_user_id == app_user_id
                    )
                ).one()
        except IntegrityError as exc:  # pragma: no cover - the ON CONFLICT covers it
            raise CustomerLinkConflict() from exc
        link = CustomerLink(**row._mapping)
        if link.customer_id != customer_id:
            raise CustomerLinkConflict(
                f"app user {app_user_id!r} is already linked to {link.customer_id}"
            )
        return link

    def customer_link(self, app_user_id: str) -> CustomerLink | None:
        with connect(self.engine, readonly=True) as conn:
            row = conn.execute(
                select(_links).where(
                    _links.c.account == self.account, _links.c.app_user_id == app_user_id
                )
            ).first()
        return None if row is None else CustomerLink(**row._mapping)

    def customer_for_user(self, app_user_id: str) -> Customer | None:
        """The mirrored customer linked to ``app_user_id`` (None when not linked
        or not mirrored yet: ``customer_link`` tells which)."""
        link = self.customer_link(app_user_id)
        return None if link is None else self.customer(link.customer_id)

    def users_for_customer(self, customer_id: str) -> list[str]:
        """The application users linked to ``customer_id``."""
        with connect(self.engine, readonly=True) as conn:
            rows = conn.execute(
                select(_links.c.app_user_id)
                .where(_links.c.account == self.account, _links.c.customer_id == customer_id)
                .order_by(_links.c.app_user_id)
            )
            return [row.app_user_id for row in rows]

    def unlink_customer(self, app_user_id: str) -> bool:
        """Forget the user's link; True if there was one."""
        with connect(self.engine) as conn:
            result = conn.execute(
                _links.delete().where(
                    _links.c.account == self.account, _links.c.app_user_id == app_user_id
                )
            )
        return bool(result.rowcount)

    # -- helpers ----------------------------------------------------------------------

    @staticmethod
    def _filters(
        table: Table,
        *,
        customer: str | None = None,
        status: str | Sequence[str] | None = None,
    ) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = []
        if customer is not None:
            where.append(table.c.customer == customer)
        statuses = _statuses(status)
        if statuses is not None:
            where.append(table.c.status.in_(statuses))
        return where

    # -- async twins --------------------------------------------------------------------

    async def get_async(
        self, object_id: str, object_type: str | None = None
    ) -> dict[str, Any] | None:
        return await _in_thread(self.get, object_id, object_type)

    async def objects_async(
        self, object_type: str, *, limit: int = DEFAULT_LIMIT, include_deleted: bool = False
    ) -> list[dict[str, Any]]:
        return await _in_thread(
            self.objects, object_type, limit=limit, include_deleted=include_deleted
        )

    async def customer_async(self, customer_id: str) -> Customer | None:
        return await _in_thread(self.customer, customer_id)

    async def customers_async(
        self, *, email: str | None = None, limit: int = DEFAULT_LIMIT
    ) -> list[Customer]:
        return await _in_thread(self.customers, email=email, limit=limit)

    async def payment_method_async(self, payment_method_id: str) -> PaymentMethod | None:
        return await _in_thread(self.payment_method, payment_method_id)

    async def payment_methods_async(
        self, customer: str, *, type: str | None = None, limit: int = DEFAULT_LIMIT
    ) -> list[PaymentMethod]:
        return await _in_thread(self.payment_methods, customer, type=type, limit=limit)

    async def payment_intent_async(self, payment_intent_id: str) -> PaymentIntent | None:
        return await _in_thread(self.payment_intent, payment_intent_id)

    async def payment_intents_async(
        self,
        customer: str | None = None,
        *,
        status: str | Sequence[str] | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> list[PaymentIntent]:
        return await _in_thread(self.payment_intents, customer, status=status, limit=limit)

    async def charge_async(self, charge_id: str) -> Charge | None:
        return await _in_thread(self.charge, charge_id)

    async def charges_async(
        self,
        customer: str | None = None,
        *,
        payment_intent: str | None = None,
        status: str | Sequence[str] | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> list[Charge]:
        return await _in_thread(
            self.charges, customer, payment_intent=payment_intent, status=status, limit=limit
        )

    async def refund_async(self, refund_id: str) -> Refund | None:
        return await _in_thread(self.refund, refund_id)

    async def refunds_async(
        self,
        *,
        charge: str | None = None,
        payment_intent: str | None = None,
        status: str | Sequence[str] | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> list[Refund]:
        return await _in_thread(
            self.refunds, charge=charge, payment_intent=payment_intent, status=status, limit=limit
        )

    async def product_async(self, product_id: str) -> Product | None:
        return await _in_thread(self.product, product_id)

    async def products_async(
        self, *, active: bool | None = None, limit: int = DEFAULT_LIMIT
    ) -> list[Product]:
        return await _in_thread(self.products, active=active, limit=limit)

    async def price_async(self, price_id: str) -> Price | None:
        return await _in_thread(self.price, price_id)

    async def prices_async(
        self,
        *,
        product: str | None = None,
        active: bool | None = None,
        lookup_key: str | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> list[Price]:
        return await _in_thread(
            self.prices, product=product, active=active, lookup_key=lookup_key, limit=limit
        )

    async def subscription_async(self, subscription_id: str) -> Subscription | None:
        return await _in_thread(self.subscription, subscription_id)

    async def subscriptions_async(
        self,
        customer: str | None = None,
        *,
        status: str | Sequence[str] | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> list[Subscription]:
        return await _in_thread(self.subscriptions, customer, status=status, limit=limit)

    async def active_subscriptions_async(self, customer: str) -> list[Subscription]:
        return await _in_thread(self.active_subscriptions, customer)

    async def subscription_items_async(self, subscription: str) -> list[SubscriptionItem]:
        return await _in_thread(self.subscription_items, subscription)

    async def invoice_async(self, invoice_id: str) -> Invoice | None:
        return await _in_thread(self.invoice, invoice_id)

    async def invoices_async(
        self,
        customer: str | None = None,
        *,
        status: str | Sequence[str] | None = None,
        subscription: str | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> list[Invoice]:
        return await _in_thread(
            self.invoices, customer, status=status, subscription=subscription, limit=limit
        )

    async def invoice_lines_async(self, invoice_id: str) -> list[InvoiceLine]:
        return await _in_thread(self.invoice_lines, invoice_id)

    async def dispute_async(self, dispute_id: str) -> Dispute | None:
        return await _in_thread(self.dispute, dispute_id)

    async def disputes_async(
        self,
        *,
        due_before: datetime | None = None,
        status: str | Sequence[str] | None = None,
        charge: str | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> list[Dispute]:
        return await _in_thread(
            self.disputes, due_before=due_before, status=status, charge=charge, limit=limit
        )

    async def checkout_session_async(self, session_id: str) -> CheckoutSession | None:
        return await _in_thread(self.checkout_session, session_id)

    async def checkout_sessions_async(
        self,
        customer: str | None = None,
        *,
        client_reference_id: str | None = None,
        status: str | Sequence[str] | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> list[CheckoutSession]:
        return await _in_thread(
            self.checkout_sessions,
            customer,
            client_reference_id=client_reference_id,
            status=status,
            limit=limit,
        )

    async def link_customer_async(self, app_user_id: str, customer_id: str) -> CustomerLink:
        return await _in_thread(self.link_customer, app_user_id, customer_id)

    async def customer_link_async(self, app_user_id: str) -> CustomerLink | None:
        return await _in_thread(self.customer_link, app_user_id)

    async def customer_for_user_async(self, app_user_id: str) -> Customer | None:
        return await _in_thread(self.customer_for_user, app_user_id)

    async def users_for_customer_async(self, customer_id: str) -> list[str]:
        return await _in_thread(self.users_for_customer, customer_id)

    async def unlink_customer_async(self, app_user_id: str) -> bool:
        return await _in_thread(self.unlink_customer, app_user_id)
