"""The modules whose routes make up the sandbox API.

A new resource is a new module that registers its routes with
``stripeline_sandbox._routes.route``; add it here.
"""

from __future__ import annotations

import importlib

RESOURCE_MODULES: tuple[str, ...] = (
    "stripeline_sandbox._controls",
    "stripeline_sandbox._events",
    "stripeline_sandbox._webhook_endpoints",
    "stripeline_sandbox._customers",
    "stripeline_sandbox._payment_methods",
    "stripeline_sandbox._setup_intents",
    "stripeline_sandbox._payment_intents",
    "stripeline_sandbox._charges",
    "stripeline_sandbox._refunds",
    "stripeline_sandbox._disputes",
    "stripeline_sandbox._products",
    "stripeline_sandbox._prices",
    "stripeline_sandbox._billing_settings",
    "stripeline_sandbox._subscriptions",
    "stripeline_sandbox._subscription_items",
    "stripeline_sandbox._invoices",
    "stripeline_sandbox._test_clocks",
    "stripeline_sandbox._checkout_sessions",
    "stripeline_sandbox._billing_portal",
)

_loaded = False


def load_routes() -> None:
    """Import every resource module once (each registers its routes)."""
    global _loaded
    if not _loaded:
        for name in RESOURCE_MODULES:
            importlib.import_module(name)
        _loaded = True
