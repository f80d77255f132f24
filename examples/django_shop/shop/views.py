from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from shop.models import Access
from stripeline.contrib.django.models import Subscription


def access(request: HttpRequest, customer: str) -> JsonResponse:
    """Whether ``customer`` has access: from the mirror (the subscription as
    Stripe last showed it) and from the shop's own row (the handler's)."""
    mirrored = (
        Subscription.objects.filter(customer=customer, deleted=False)
        .order_by("-created")
        .values("id", "status")
        .first()
    )
    row = Access.objects.filter(customer=customer).first()
    return JsonResponse(
        {
            "customer": customer,
            "subscription": mirrored,
            "access": bool(mirrored and mirrored["status"] in ("active", "trialing")),
            "recorded": None if row is None else {"status": row.status, "active": row.active},
        }
    )
