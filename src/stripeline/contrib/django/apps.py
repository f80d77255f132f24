"""The Django app: ``INSTALLED_APPS += ["stripeline.contrib.django"]``."""

from __future__ import annotations

from django.apps import AppConfig


class StripelineConfig(AppConfig):
    name = "stripeline.contrib.django"
    label = "stripeline"
    verbose_name = "Stripe (stripeline)"
    default_auto_field = "django.db.models.BigAutoField"
