"""The modules whose routes make up the sandbox API.

A new resource is a new module that registers its routes with
``stripeline.sandbox._routes.route``; add it here.
"""

from __future__ import annotations

import importlib

RESOURCE_MODULES: tuple[str, ...] = (
    "stripeline.sandbox._controls",
    "stripeline.sandbox._events",
    "stripeline.sandbox._webhook_endpoints",
    "stripeline.sandbox._customers",
    "stripeline.sandbox._payment_methods",
    "stripeline.sandbox._setup_intents",
    "stripeline.sandbox._payment_intents",
    "stripeline.sandbox._charges",
    "stripeline.sandbox._refunds",
    "stripeline.sandbox._disputes",
    "stripeline.sandbox._products",
    "stripeline.sandbox._prices",
    "stripeline.sandbox._billing_settings",
    "stripeline.sandbox._subscriptions",
    "stripeline.sandbox._subscription_items",
    "stripeline.sandbox._invoices",
    "stripeline.sandbox._test_clocks",
    "stripeline.sandbox._checkout_sessions",
    "stripeline.sandbox._billing_portal",
)

_loaded = False


def load_routes() -> None:
    """Import every resource module once (each registers its routes)."""
    global _loaded
    if not _loaded:
        for name in RESOURCE_MODULES:
            importlib.import_module(name)
        _loaded = True
