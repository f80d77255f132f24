"""The sandbox put together: every resource module's route table, and who
hears of a PaymentIntent's outcome.

A new resource is a new module with a ``ROUTES`` table; add it here.
"""

from __future__ import annotations

from stripeline_sandbox import (
    _balance_transactions,
    _billing_portal,
    _billing_settings,
    _charges,
    _checkout_sessions,
    _connect,
    _controls,
    _coupons,
    _customers,
    _disputes,
    _entitlements,
    _event_destinations,
    _events,
    _files,
    _invoices,
    _invoicing,
    _legacy_charges,
    _meters,
    _payment_intents,
    _payment_methods,
    _plans,
    _previews,
    _prices,
    _products,
    _refunds,
    _setup_intents,
    _subscription_items,
    _subscriptions,
    _test_clocks,
    _versions,
    _webhook_endpoints,
)
from stripeline_sandbox._routes import Endpoint, Router
from stripeline_sandbox._state import PaymentOutcomeHandler

#: The route tables that make up the API, in matching order.
RESOURCES: tuple[tuple[Endpoint, ...], ...] = (
    _controls.ROUTES,
    _events.ROUTES,
    _event_destinations.ROUTES,
    _webhook_endpoints.ROUTES,
    _customers.ROUTES,
    _payment_methods.ROUTES,
    _setup_intents.ROUTES,
    _payment_intents.ROUTES,
    _charges.ROUTES,
    _legacy_charges.ROUTES,
    _refunds.ROUTES,
    _balance_transactions.ROUTES,
    _disputes.ROUTES,
    _files.ROUTES,
    _products.ROUTES,
    _prices.ROUTES,
    _coupons.ROUTES,
    _plans.ROUTES,
    _billing_settings.ROUTES,
    _subscriptions.ROUTES,
    _subscription_items.ROUTES,
    _previews.ROUTES,
    _invoices.ROUTES,
    _meters.ROUTES,
    _entitlements.ROUTES,
    _test_clocks.ROUTES,
    _checkout_sessions.ROUTES,
    _billing_portal.ROUTES,
    _connect.ROUTES,
    _versions.ROUTES,
)


def build_router() -> Router:
    """A router for every endpoint of the API and the sandbox controls."""
    return Router(endpoint for table in RESOURCES for endpoint in table)


#: What a PaymentIntent's success (or failed bank debit) updates, in order:
#: the invoice it pays, then the Checkout Session it completes.
PAYMENT_OUTCOME_HANDLERS: tuple[PaymentOutcomeHandler, ...] = (
    _invoicing.payment_outcome,
    _checkout_sessions.async_payment_outcome,
)
