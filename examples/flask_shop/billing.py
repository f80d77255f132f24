"""The shop's Stripe side: the stripeline app and its handlers.

Each handler writes through ``event.session``: its row commits together with
the event's ``processed`` mark, or not at all (a failing handler is retried,
and a retried or duplicated event writes the same row again: ``merge``).
"""

from __future__ import annotations

import stripeline
from flask_shop.models import Purchase

billing = stripeline.Stripeline()  # settings from the environment, read on first use


@billing.on("payment_intent.succeeded")
def record_payment(event: stripeline.ReceivedEvent) -> None:
    intent = event.object
    metadata = intent.get("metadata") or {}
    if metadata.get("shop") != "order":
        return  # an invoice's payment: recorded by record_invoice
    event.session.merge(
        Purchase(
            stripe_id=intent["id"],
            kind="payment",
            customer=intent.get("customer"),
            user_id=metadata.get("user_id"),
            amount=intent["amount_received"],
            currency=intent["currency"],
            event_id=event.id,
        )
    )


@billing.on("invoice.paid")
def record_invoice(event: stripeline.ReceivedEvent) -> None:
    invoice = event.object
    event.session.merge(
        Purchase(
            stripe_id=invoice["id"],
            kind="invoice",
            customer=invoice.get("customer"),
            user_id=None,
            amount=invoice["amount_paid"],
            currency=invoice["currency"],
            event_id=event.id,
        )
    )
