"""The shop's FastAPI application, for any ``Stripeline`` app (``create_shop``).

``shop.main`` builds it for ``shop.billing.billing``; the tests build it for
the app the pytest plugin configures for the sandbox.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Header, HTTPException
from pydantic import BaseModel
from sqlalchemy.orm import Session

import stripeline
from shop.billing import CATALOG, Order, PaidOrder, Shipment, create_tables
from stripeline.contrib.fastapi import (
    Payer,
    Price,
    dependency,
    mirror_dependency,
    payments_router,
)
from stripeline.gateway import StripeClient, make_client


class Payment(BaseModel):
    amount: int
    currency: str = "usd"


class Signup(BaseModel):
    user: str
    email: str


class NewOrder(BaseModel):
    sku: str
    quantity: int = 1


def current_user(x_user: str | None = Header(default=None)) -> str:
    """The shop's stand-in for real authentication (a session, a JWT): the
    ``X-User`` header. stripeline never decides who the user is."""
    if not x_user:
        raise HTTPException(401, "sign in first")
    return x_user


def create_shop(billing: stripeline.Stripeline) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        create_tables(billing.engine)  # the shop's own startup…
        async with billing.lifespan(app):  # …and stripeline's writer and worker
            yield

    app = FastAPI(lifespan=lifespan)
    app.mount("/stripe", billing.asgi())  # Stripe posts to /stripe/webhooks/stripe

    # Dependencies: made once for this app, each request gets the same object.
    # (With ``billing`` at module level, ``Annotated[Mirror, Depends(...)]``
    # aliases work as well; inside a factory FastAPI cannot see local aliases.)
    mirror_dep = Depends(mirror_dependency(billing))
    stripe_dep = Depends(dependency(billing, make_stripe_client))
    plan_dep = Depends(dependency(billing, create_plan))

    @app.post("/pay")
    def pay(payment: Payment, stripe: StripeClient = stripe_dep) -> dict[str, Any]:
        intent = stripe.v1.payment_intents.create(
            {
                "amount": payment.amount,
                "currency": payment.currency,
                "payment_method": "pm_card_visa",
                "confirm": True,
            }
        )
        return {"payment_intent": intent.id, "status": intent.status}

    @app.get("/orders/{payment_intent}")
    def order(payment_intent: str) -> dict[str, Any]:
        with Session(billing.engine) as session:
            paid = session.get(PaidOrder, payment_intent)
        if paid is None:
            raise HTTPException(404, "not paid (yet)")
        return {"payment_intent": paid.payment_intent, "amount": paid.amount}

    @app.post("/subscribe")
    def subscribe(
        signup: Signup,
        stripe: StripeClient = stripe_dep,
        mirror: stripeline.Mirror = mirror_dep,
        plan: str = plan_dep,
    ) -> dict[str, Any]:
        customer = stripe.v1.customers.create(
            {"email": signup.email, "payment_method": "pm_card_visa"}
        )
        mirror.link_customer(signup.user, customer.id)
        subscription = stripe.v1.subscriptions.create(
            {
                "customer": customer.id,
                "items": [{"price": plan}],
                "default_payment_method": "pm_card_visa",
            }
        )
        return {"customer": customer.id, "subscription": subscription.id}

    # Payments through the flows: the amount comes from the shop's orders,
    # the user from its own dependency, ownership from its own check.
    def order_of(order_id: str) -> Order | None:
        with Session(billing.engine) as session:
            return session.get(Order, order_id)

    def price(order_id: str, user: str) -> Price | None:
        order = order_of(order_id)
        return Price(order.amount, order.currency) if order else None

    def owns(order_id: str, user: str) -> bool:
        order = order_of(order_id)
        return order is not None and order.user == user

    app.include_router(
        payments_router(
            billing,
            user=current_user,
            price=price,
            owns=owns,
            customer_of=lambda user: Payer(user, email=f"{user}@example.com"),
        )
    )

    @app.post("/orders")
    def place_order(new: NewOrder, user: str = Depends(current_user)) -> dict[str, Any]:
        if new.sku not in CATALOG or not 1 <= new.quantity <= 10:
            raise HTTPException(422, "unknown item or quantity")
        order = Order(
            id=f"order_{uuid.uuid4().hex[:12]}",
            user=user,
            sku=new.sku,
            quantity=new.quantity,
            amount=CATALOG[new.sku] * new.quantity,
            currency="usd",
        )
        with Session(billing.engine, expire_on_commit=False) as session, session.begin():
            session.add(order)
        return {"order": order.id, "amount": order.amount}

    @app.get("/shipments/{order_id}")
    def shipment(order_id: str, user: str = Depends(current_user)) -> dict[str, Any]:
        if not owns(order_id, user):
            raise HTTPException(404, "no such order")
        with Session(billing.engine) as session:
            shipped = session.get(Shipment, order_id)
        if shipped is None:
            raise HTTPException(404, "not shipped (yet)")
        return {"order": order_id, "amount": shipped.amount}

    @app.get("/access/{user}")
    def access(user: str, mirror: stripeline.Mirror = mirror_dep) -> dict[str, bool]:
        customer = mirror.customer_for_user(user)
        return {"access": bool(customer and mirror.active_subscriptions(customer.id))}

    return app


def make_stripe_client(billing: stripeline.Stripeline) -> StripeClient:
    """The official SDK's client for the app's key (and its API base: the sandbox's in tests)."""
    return make_client(billing.settings)


def create_plan(billing: stripeline.Stripeline) -> str:
    """The shop's one plan, a monthly price (made once per process here; a real
    shop creates it once, e.g. with ``stripe prices create``, and configures its id)."""
    stripe = make_stripe_client(billing)
    product = stripe.v1.products.create({"name": "Shop membership"})
    price = stripe.v1.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount": 900,
            "recurring": {"interval": "month"},
        }
    )
    return price.id
