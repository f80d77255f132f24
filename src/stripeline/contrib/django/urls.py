"""``path("stripe/", include("stripeline.contrib.django.urls"))``."""

from __future__ import annotations

from django.urls import path

from stripeline.contrib.django import views

__all__ = ["app_name", "urlpatterns"]

app_name = "stripeline"

urlpatterns = [
    path("webhooks/stripe", views.webhook, {"endpoint": "account"}, name="webhook"),
    path("webhooks/stripe/connect", views.webhook, {"endpoint": "connect"}, name="webhook-connect"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
]
