"""The ASGI application: webhook routes, health, readiness and metrics."""

from __future__ import annotations

from stripeline.web.asgi import create_app

__all__ = ["create_app"]
