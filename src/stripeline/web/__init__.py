"""The web side: the ASGI app (webhook routes, health, readiness, metrics) and
the webhook route's decisions for synchronous servers (WSGI, Flask, Django)."""

from __future__ import annotations

from stripeline.web.asgi import create_app
from stripeline.web.intake import WebhookAnswer, WebhookIntake, readiness

__all__ = ["WebhookAnswer", "WebhookIntake", "create_app", "readiness"]
