"""Read-only Django models over stripeline's tables (``managed = False``).

For the admin and for your own queries (``Subscription.objects.filter(customer=…,
status="active")``). stripeline writes these tables, never Django: the models
are unmanaged (no Django migration creates or alters them; stripeline's own
migrations do, see ``migrations/0001_stripeline_schema.py``) and only the
columns worth reading are declared.

The mirror tables' primary key is ``(account, id)``; the models declare ``id``
alone as the key, which is what Django needs to show a row. A Stripe id is
unique within its account; with Connect, an object id seen under two
accounts would show as one row here (query with ``account=`` to tell them
apart).
"""

from __future__ import annotations

from typing import Any

from django.db import NotSupportedError, models

__all__ = ["Customer", "Dispute", "Event", "Invoice", "PaymentIntent", "Subscription"]


class _ReadOnly(models.Model):
    """A row of stripeline's: Django reads it, never writes it (a stale
    ``save()`` would overwrite what the worker wrote)."""

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        raise NotSupportedError(f"{type(self).__name__} rows are written by stripeline only")

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        raise NotSupportedError(f"{type(self).__name__} rows are written by stripeline only")


class Event(_ReadOnly):
    """The inbox: every verified event, whole, with its processing state."""

    id = models.CharField(primary_key=True, max_length=255)
    type = models.CharField(max_length=255)
    account = models.CharField(max_length=255, null=True)
    livemode = models.BooleanField()
    object_id = models.CharField(max_length=255, null=True)
    created = models.BigIntegerField(help_text="Stripe's created (Unix time)")
    source = models.CharField(max_length=16)
    status = models.CharField(max_length=16)
    attempts = models.IntegerField()
    deliveries = models.IntegerField()
    received_at = models.DateTimeField()
    next_attempt_at = models.DateTimeField(null=True)
    processed_at = models.DateTimeField(null=True)
    last_error = models.TextField(null=True)
    payload = models.BinaryField()

    class Meta:
        managed = False
        db_table = "stripeline_events"
        ordering = ("-received_at",)

    def __str__(self) -> str:
        return f"{self.id} {self.type}"


class _Mirrored(_ReadOnly):
    """The columns every mirror table has."""

    id = models.CharField(primary_key=True, max_length=255)
    account = models.CharField(max_length=255)
    livemode = models.BooleanField()
    deleted = models.BooleanField()
    data = models.JSONField(help_text="The object as Stripe last showed it")
    event_id = models.CharField(max_length=255, null=True)
    updated_at = models.DateTimeField()

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return str(self.id)


class Customer(_Mirrored):
    email = models.CharField(max_length=512, null=True)
    name = models.CharField(max_length=512, null=True)
    currency = models.CharField(max_length=16, null=True)
    delinquent = models.BooleanField(null=True)
    created = models.DateTimeField(null=True)

    class Meta:
        managed = False
        db_table = "stripeline_customers"
        ordering = ("-created",)


class Subscription(_Mirrored):
    customer = models.CharField(max_length=255, null=True)
    status = models.CharField(max_length=64, null=True)
    currency = models.CharField(max_length=16, null=True)
    current_period_end = models.DateTimeField(null=True)
    cancel_at_period_end = models.BooleanField(null=True)
    canceled_at = models.DateTimeField(null=True)
    latest_invoice = models.CharField(max_length=255, null=True)
    created = models.DateTimeField(null=True)

    class Meta:
        managed = False
        db_table = "stripeline_subscriptions"
        ordering = ("-created",)


class Invoice(_Mirrored):
    customer = models.CharField(max_length=255, null=True)
    subscription = models.CharField(max_length=255, null=True)
    status = models.CharField(max_length=64, null=True)
    number = models.CharField(max_length=255, null=True)
    currency = models.CharField(max_length=16, null=True)
    amount_due = models.BigIntegerField(null=True)
    amount_paid = models.BigIntegerField(null=True)
    billing_reason = models.CharField(max_length=64, null=True)
    created = models.DateTimeField(null=True)

    class Meta:
        managed = False
        db_table = "stripeline_invoices"
        ordering = ("-created",)


class PaymentIntent(_Mirrored):
    customer = models.CharField(max_length=255, null=True)
    status = models.CharField(max_length=64, null=True)
    amount = models.BigIntegerField(null=True)
    amount_received = models.BigIntegerField(null=True)
    currency = models.CharField(max_length=16, null=True)
    invoice = models.CharField(max_length=255, null=True)
    created = models.DateTimeField(null=True)

    class Meta:
        managed = False
        db_table = "stripeline_payment_intents"
        ordering = ("-created",)


class Dispute(_Mirrored):
    charge = models.CharField(max_length=255, null=True)
    payment_intent = models.CharField(max_length=255, null=True)
    status = models.CharField(max_length=64, null=True)
    reason = models.CharField(max_length=64, null=True)
    amount = models.BigIntegerField(null=True)
    currency = models.CharField(max_length=16, null=True)
    due_by = models.DateTimeField(null=True)
    created = models.DateTimeField(null=True)

    class Meta:
        managed = False
        db_table = "stripeline_disputes"
        ordering = ("-created",)
