"""Reading the mirror: typed, immutable answers without asking Stripe.

::

    mirror = Mirror(engine)                      # or Mirror(engine, account="acct_…")
    customer = mirror.customer_for_user("user-42")
    if customer and mirror.active_subscriptions(customer.id):
        ...
    due = mirror.disputes(due_before=now + timedelta(days=3), status="needs_response")

Every method has an async twin named ``…_async``, made by one wrapper
(``_async_twin``). The twins run the same code in a worker thread
(``asyncio.to_thread``) rather than on an async engine: a lookup is one indexed query that takes well under a millisecond,
the mirror shares the application's one synchronous engine (SQLite or
psycopg) and its pool with the worker, and no second driver (aiosqlite,
asyncpg) is needed. Lists leave deleted objects out and are newest first;
lookups by id return deleted objects too (their ``deleted`` is True). Every
read goes through ``db.engine.read``: repeated once on a new connection when
the pooled one had died. ``Mirror(connection)`` (a handler's ``event.mirror``)
runs every call, twins included, on that connection, in its transaction. The
records are in ``records``, the links that write in ``links``.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

from sqlalchemy import ColumnElement, Connection, Engine, Table, select

from stripeline.db.engine import read
from stripeline.mirror import links as _links
from stripeline.mirror import mapping as _mapping  # noqa: F401 - registers the typed tables
from stripeline.mirror._lines import invoice_lines
from stripeline.mirror._store import get_object
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
from stripeline.mirror.tables import GENERIC, table_for

#: Subscription statuses that grant access (``active_subscriptions``).
ACTIVE_STATUSES = ("active", "trialing")
#: How many objects a list returns unless told otherwise.
DEFAULT_LIMIT = 100

R = TypeVar("R", bound=MirrorRecord)
S = TypeVar("S")
P = ParamSpec("P")
T = TypeVar("T")


def _statuses(status: str | Sequence[str] | None) -> list[str] | None:
    if status is None:
        return None
    return [status] if isinstance(status, str) else list(status)


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("naive datetime: pass an aware one (e.g. datetime.now(UTC))")
    return value.astimezone(UTC)


def _async_twin(
    method: Callable[Concatenate[S, P], T],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, T]]:
    """The ``x_async`` of method ``x``: the same call, run in a worker thread."""

    @functools.wraps(method)
    async def twin(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        if getattr(self, "connection", None) is not None:
            # Bound to an event's connection: one connection, one caller at a
            # time, so the call runs here (a query of well under a millisecond).
            return method(self, *args, **kwargs)
        return await asyncio.to_thread(method, self, *args, **kwargs)

    twin.__name__ = f"{method.__name__}_async"
    twin.__qualname__ = f"Mirror.{twin.__name__}"
    twin.__doc__ = f"Async twin of ``{method.__name__}``.\n\n{method.__doc__ or ''}".rstrip()
    return twin


class Mirror:
    """Typed reads of the mirror, and the app-user ↔ customer links.

    ``account`` is the connected account whose objects are read (None: the
    platform's own). Reads never call Stripe and never take the write lock.
    Built on an engine, every call is its own short transaction; built on a
    connection (``event.mirror`` in a handler), calls run in that
    connection's transaction: reads see its writes, links commit with it.
    """

    def __init__(self, engine: Engine | Connection, *, account: str | None = None) -> None:
        #: Where reads and links run: the engine (each call its own short
        #: transaction) or a connection (``event.mirror``: the event's own).
        self._bind = engine
        self.engine = engine.engine if isinstance(engine, Connection) else engine
        self.account = account or ""

    @property
    def connection(self) -> Connection | None:
        """The connection this mirror is bound to (``event.mirror``), else None."""
        return self._bind if isinstance(self._bind, Connection) else None

    def for_account(self, account: str | None) -> Mirror:
        """The same mirror (same engine or connection), reading ``account``'s objects."""
        return Mirror(self._bind, account=account)

    # -- generic ------------------------------------------------------------------

    def _one(self, object_type: str, record: type[R], object_id: str) -> R | None:
        table = table_for(object_type).table
        query = select(table).where(table.c.account == self.account, table.c.id == object_id)
        row = read(self._bind, lambda conn: conn.execute(query).first())
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
        rows = read(self._bind, lambda conn: conn.execute(query).all())
        return [cast(R, record.from_row(row)) for row in rows]

    def get(self, object_id: str, object_type: str | None = None) -> dict[str, Any] | None:
        """Any mirrored object as Stripe's JSON (typed table or not), or None."""
        return read(
            self._bind,
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
        rows = read(self._bind, lambda conn: conn.execute(query).all())
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
        rows = read(self._bind, lambda conn: conn.execute(query).all())
        return [InvoiceLine.from_row(row) for row in rows]

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
        rows = read(self._bind, lambda conn: conn.execute(query).all())
        return [cast(Dispute, Dispute.from_row(row)) for row in rows]

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
        return _links.link_customer(self._bind, self.account, app_user_id, customer_id)

    def customer_link(self, app_user_id: str) -> CustomerLink | None:
        return _links.customer_link(self._bind, self.account, app_user_id)

    def customer_for_user(self, app_user_id: str) -> Customer | None:
        """The mirrored customer linked to ``app_user_id`` (None when not linked
        or not mirrored yet: ``customer_link`` tells which)."""
        link = self.customer_link(app_user_id)
        return None if link is None else self.customer(link.customer_id)

    def users_for_customer(self, customer_id: str) -> list[str]:
        """The application users linked to ``customer_id``."""
        return _links.users_for_customer(self._bind, self.account, customer_id)

    def unlink_customer(self, app_user_id: str) -> bool:
        """Forget the user's link; True if there was one."""
        return _links.unlink_customer(self._bind, self.account, app_user_id)

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

    # -- async twins: the same methods in a worker thread ------------------------------

    get_async = _async_twin(get)
    objects_async = _async_twin(objects)
    customer_async = _async_twin(customer)
    customers_async = _async_twin(customers)
    payment_method_async = _async_twin(payment_method)
    payment_methods_async = _async_twin(payment_methods)
    payment_intent_async = _async_twin(payment_intent)
    payment_intents_async = _async_twin(payment_intents)
    charge_async = _async_twin(charge)
    charges_async = _async_twin(charges)
    refund_async = _async_twin(refund)
    refunds_async = _async_twin(refunds)
    product_async = _async_twin(product)
    products_async = _async_twin(products)
    price_async = _async_twin(price)
    prices_async = _async_twin(prices)
    subscription_async = _async_twin(subscription)
    subscriptions_async = _async_twin(subscriptions)
    active_subscriptions_async = _async_twin(active_subscriptions)
    subscription_items_async = _async_twin(subscription_items)
    invoice_async = _async_twin(invoice)
    invoices_async = _async_twin(invoices)
    invoice_lines_async = _async_twin(invoice_lines)
    dispute_async = _async_twin(dispute)
    disputes_async = _async_twin(disputes)
    checkout_session_async = _async_twin(checkout_session)
    checkout_sessions_async = _async_twin(checkout_sessions)
    link_customer_async = _async_twin(link_customer)
    customer_link_async = _async_twin(customer_link)
    customer_for_user_async = _async_twin(customer_for_user)
    users_for_customer_async = _async_twin(users_for_customer)
    unlink_customer_async = _async_twin(unlink_customer)
