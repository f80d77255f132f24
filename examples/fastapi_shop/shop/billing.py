"""The shop's stripeline application, its handlers and its own tables.

The handler writes the shop's row with ``event.session``: the row commits
together with the event's ``processed`` mark, or not at all, so a retried or
duplicated event never leaves half a write, and ``merge`` makes a second
delivery change nothing.

Orders paid through ``app.payments`` (the ``/payments`` routes) are shipped by
the ``@billing.fulfil`` hook: once per order, in the event's transaction. It
*adds* the shipment row (no merge): a second run would break the primary key,
so the tests would see it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import DateTime, Engine, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import stripeline

#: Reads STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET and STRIPELINE_* on first use.
billing = stripeline.Stripeline()


class Base(DeclarativeBase):
    pass


class PaidOrder(Base):
    """One row per payment the shop was paid: written by the handler below."""

    __tablename__ = "shop_paid_orders"

    payment_intent: Mapped[str] = mapped_column(String(255), primary_key=True)
    amount: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    paid_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


#: What the shop sells: the price is the server's, never the browser's.
CATALOG = {"book": 1500, "mug": 900}


class Order(Base):
    """An order placed by a user (``POST /orders``), paid through ``/payments/{id}``."""

    __tablename__ = "shop_orders"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user: Mapped[str] = mapped_column(String(100))
    sku: Mapped[str] = mapped_column(String(50))
    quantity: Mapped[int] = mapped_column(Integer)
    amount: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))


class Shipment(Base):
    """One row per order shipped: written by the fulfil hook, once."""

    __tablename__ = "shop_shipments"

    order_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    payment_intent: Mapped[str | None] = mapped_column(String(255))
    amount: Mapped[int] = mapped_column(Integer)


def create_tables(engine: Engine) -> None:
    """The shop's own tables (stripeline's come from ``stripeline migrate``)."""
    Base.metadata.create_all(engine)


@billing.on("payment_intent.succeeded")
def record_paid_order(event: stripeline.ReceivedEvent) -> None:
    intent = event.object
    event.session.merge(
        PaidOrder(
            payment_intent=intent["id"],
            amount=intent["amount_received"],
            currency=intent["currency"],
            paid_at=datetime.fromtimestamp(event.created, UTC),
        )
    )


@billing.fulfil
def ship(order: stripeline.Fulfilment) -> None:
    # Once per order, whatever the duplicates; commits with the event.
    order.event.session.add(
        Shipment(
            order_id=order.order_id, payment_intent=order.payment_intent_id, amount=order.amount
        )
    )
