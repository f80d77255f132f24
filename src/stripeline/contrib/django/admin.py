"""Read-only admin pages for the inbox and the mirror.

Nothing is added, changed or deleted from the admin: stripeline writes these
tables. The events page has two actions, the CLI's ``events retry`` and
``events replay``: they schedule the selected events for the worker.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from stripeline import inbox
from stripeline.contrib.django.conf import get_app
from stripeline.contrib.django.models import (
    Customer,
    Dispute,
    Event,
    Invoice,
    PaymentIntent,
    Subscription,
)
from stripeline.db.engine import connect


class ReadOnlyAdmin(admin.ModelAdmin):
    """Shows rows; never adds, changes or deletes one."""

    list_per_page = 50

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ("id", "type", "status", "attempts", "received_at", "processed_at")
    list_filter = ("status", "source", "livemode")
    search_fields = ("=id", "type", "=object_id")
    exclude = ("payload",)
    actions = ("retry", "replay")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # The list page offers its actions to those who may change events;
        # an event's own page is read-only for everyone.
        return obj is None and bool(request.user.has_perm("stripeline.change_event"))

    @admin.action(description="Retry the selected failed or dead events", permissions=["change"])
    def retry(self, request: HttpRequest, queryset: QuerySet[Event]) -> None:
        ids = list(queryset.values_list("id", flat=True))
        with connect(get_app().engine) as conn:
            done = sum(inbox.retry(conn, event_id=event_id) for event_id in ids)
        self.message_user(
            request, f"{done} of {len(ids)} events scheduled again (only failed or dead ones are)"
        )

    @admin.action(
        description="Replay the selected events (handlers run again)", permissions=["change"]
    )
    def replay(self, request: HttpRequest, queryset: QuerySet[Event]) -> None:
        ids = list(queryset.values_list("id", flat=True))
        with connect(get_app().engine) as conn:
            done = sum(1 for event_id in ids if inbox.replay(conn, event_id))
        level = messages.SUCCESS if done == len(ids) else messages.WARNING
        self.message_user(
            request,
            f"{done} of {len(ids)} events scheduled for replay (not those a worker holds now)",
            level,
        )


@admin.register(Customer)
class CustomerAdmin(ReadOnlyAdmin):
    list_display = ("id", "email", "name", "currency", "delinquent", "deleted", "created")
    list_filter = ("livemode", "deleted", "delinquent")
    search_fields = ("=id", "email", "name")


@admin.register(Subscription)
class SubscriptionAdmin(ReadOnlyAdmin):
    list_display = ("id", "customer", "status", "current_period_end", "cancel_at_period_end")
    list_filter = ("status", "livemode", "cancel_at_period_end")
    search_fields = ("=id", "=customer")


@admin.register(Invoice)
class InvoiceAdmin(ReadOnlyAdmin):
    list_display = ("id", "number", "customer", "status", "amount_due", "amount_paid", "currency")
    list_filter = ("status", "livemode", "billing_reason")
    search_fields = ("=id", "=customer", "=subscription", "number")


@admin.register(PaymentIntent)
class PaymentIntentAdmin(ReadOnlyAdmin):
    list_display = ("id", "customer", "status", "amount", "currency", "created")
    list_filter = ("status", "livemode")
    search_fields = ("=id", "=customer", "=invoice")


@admin.register(Dispute)
class DisputeAdmin(ReadOnlyAdmin):
    list_display = ("id", "charge", "status", "reason", "amount", "currency", "due_by")
    list_filter = ("status", "reason", "livemode")
    search_fields = ("=id", "=charge", "=payment_intent")
