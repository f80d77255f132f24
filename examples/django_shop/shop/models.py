from __future__ import annotations

from django.db import models


class Access(models.Model):
    """Who may use the shop's service: written by the billing handler, in the
    event's transaction (it commits with the event's processed mark)."""

    customer = models.CharField(max_length=255, unique=True)
    subscription = models.CharField(max_length=255)
    status = models.CharField(max_length=64)
    active = models.BooleanField(default=False)
    event_id = models.CharField(max_length=255)

    def __str__(self) -> str:
        return f"{self.customer}: {'active' if self.active else 'inactive'}"
