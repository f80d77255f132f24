"""The shop's Stripe handlers (``STRIPELINE["app"] = "shop.billing:app"``)."""

from __future__ import annotations

from django.db import transaction

import stripeline
from shop.models import Access

app = stripeline.Stripeline()

#: Subscription statuses that give access.
ACTIVE = {"active", "trialing"}


@app.on(
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
)
def record_access(event: stripeline.ReceivedEvent) -> None:
    """Keep the shop's Access row in step with the subscription.

    The ORM write commits together with the event's processed mark: if this
    handler (or one after it) raises, the row is not written and the event is
    retried.
    """
    subscription = event.object
    status = "canceled" if event.type.endswith(".deleted") else subscription["status"]
    with transaction.atomic():  # a SAVEPOINT inside the event's transaction
        Access.objects.update_or_create(
            customer=subscription["customer"],
            defaults={
                "subscription": subscription["id"],
                "status": status,
                "active": status in ACTIVE,
                "event_id": event.id,
            },
        )
    if (subscription.get("metadata") or {}).get("fail_after_write") == "yes":
        raise RuntimeError("the handler failed after its write (the example's test asks it to)")
