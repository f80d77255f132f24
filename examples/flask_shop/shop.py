"""The shop's web side: a Flask app that takes payments and subscriptions.

- ``POST /pay`` ``{"user_id", "amount"}``: a one-time card payment;
- ``POST /subscribe`` ``{"user_id", "email"}``: a monthly subscription to the
  plan (``SHOP_PLAN_PRICE``, a price id);
- ``GET /access/<user_id>``: whether the user has an active subscription, read
  from the mirror (no call to Stripe);
- ``GET /purchases/<user_id>``: the rows the webhook handlers wrote.

Stripe's webhooks arrive at ``POST /stripe/webhooks/stripe`` (the extension's
blueprint) and are processed by the worker thread it starts in each serving
process (``SHOP_RUN_WORKER=0`` to leave that to ``stripeline worker``).
"""

from __future__ import annotations

import os
from typing import Any

import click
from flask import Flask, abort, current_app, request
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

import stripeline
from flask_shop.billing import billing
from flask_shop.models import Purchase, init_db
from stripeline.contrib.flask import StripelineFlask, get_mirror, get_stripeline
from stripeline.gateway import StripeClient, make_client


def stripe() -> StripeClient:
    """The official SDK's client with the app's settings: one per process, made
    on first use (after gunicorn forks: a connection is never shared)."""
    clients: dict[int, StripeClient] = current_app.extensions.setdefault("shop_stripe", {})
    pid = os.getpid()
    if pid not in clients:
        clients[pid] = make_client(get_stripeline().settings)
    return clients[pid]


def _json() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("user_id"), str):
        abort(400, "a JSON object with user_id")
    return body


def create_app(
    app: stripeline.Stripeline | None = None,
    *,
    plan_price: str | None = None,
    run_worker: bool | None = None,
) -> Flask:
    """The shop for ``app`` (default: ``flask_shop.billing.billing``)."""
    flask_app = Flask(__name__)
    flask_app.config["SHOP_PLAN_PRICE"] = plan_price or os.environ.get("SHOP_PLAN_PRICE")
    if run_worker is None:
        run_worker = os.environ.get("SHOP_RUN_WORKER", "1") != "0"
    StripelineFlask(flask_app, app or billing, url_prefix="/stripe", run_worker=run_worker)

    @flask_app.post("/pay")
    def pay() -> dict[str, Any]:
        body = _json()
        intent = stripe().v1.payment_intents.create(
            {
                "amount": int(body.get("amount", 2000)),
                "currency": "usd",
                "payment_method": "pm_card_visa",
                "confirm": True,
                "metadata": {"shop": "order", "user_id": body["user_id"]},
            }
        )
        return {"payment_intent": intent.id, "status": intent.status}

    @flask_app.post("/subscribe")
    def subscribe() -> dict[str, Any]:
        body = _json()
        price = flask_app.config["SHOP_PLAN_PRICE"]
        if not price:
            abort(503, "SHOP_PLAN_PRICE is not set")
        mirror = get_mirror()
        link = mirror.customer_link(body["user_id"])
        if link is not None:
            customer_id = link.customer_id
        else:
            customer = stripe().v1.customers.create(
                {"email": str(body.get("email") or ""), "payment_method": "pm_card_visa"}
            )
            mirror.link_customer(body["user_id"], customer.id)
            customer_id = customer.id
        subscription = stripe().v1.subscriptions.create(
            {
                "customer": customer_id,
                "items": [{"price": price}],
                "default_payment_method": "pm_card_visa",
                "metadata": {"user_id": body["user_id"]},
            }
        )
        return {"subscription": subscription.id, "status": subscription.status}

    @flask_app.get("/access/<user_id>")
    def access(user_id: str) -> dict[str, Any]:
        mirror = get_mirror()
        link = mirror.customer_link(user_id)
        active = [] if link is None else mirror.active_subscriptions(link.customer_id)
        return {
            "user_id": user_id,
            "access": bool(active),
            "subscriptions": [{"id": s.id, "status": s.status} for s in active],
        }

    @flask_app.get("/purchases/<user_id>")
    def purchases(user_id: str) -> dict[str, Any]:
        link = get_mirror().customer_link(user_id)
        owner = Purchase.user_id == user_id
        if link is not None:
            owner = or_(owner, Purchase.customer == link.customer_id)
        with Session(get_stripeline().engine) as session:
            rows = session.scalars(select(Purchase).where(owner).order_by(Purchase.stripe_id))
            return {
                "purchases": [
                    {
                        "id": row.stripe_id,
                        "kind": row.kind,
                        "amount": row.amount,
                        "event_id": row.event_id,
                    }
                    for row in rows
                ]
            }

    @flask_app.cli.command("init-db")
    def init_db_command() -> None:
        """Create the shop's tables (run ``stripeline migrate`` for stripeline's)."""
        init_db(get_stripeline().engine)
        click.echo("the shop's tables are ready")

    return flask_app
