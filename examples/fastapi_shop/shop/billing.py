"""The shop's stripeline application, its handlers and its own table.

The handler writes the shop's row with ``event.session``: the row commits
together with the event's ``processed`` mark, or not at all, so a retried or
duplicated event never leaves half a write, and ``merge`` makes a second
delivery change nothing.
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
