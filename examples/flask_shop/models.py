"""The shop's own table: what was bought, written by the webhook handlers."""

from __future__ import annotations

from sqlalchemy import Engine, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class ShopBase(DeclarativeBase):
    """The shop's tables (stripeline's own are made by ``stripeline migrate``)."""


class Purchase(ShopBase):
    """One paid thing: a one-time payment or a paid invoice of the subscription."""

    __tablename__ = "shop_purchases"

    stripe_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # payment | invoice
    customer: Mapped[str | None] = mapped_column(String(255))
    user_id: Mapped[str | None] = mapped_column(String(255))
    amount: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    #: The event whose processing wrote this row (in the same transaction).
    event_id: Mapped[str] = mapped_column(String(255))


def init_db(engine: Engine) -> None:
    """Create the shop's tables if they are missing (``flask --app flask_shop init-db``)."""
    ShopBase.metadata.create_all(engine)
