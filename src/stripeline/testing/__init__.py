"""Testing a Stripe integration with stripeline: signed events, delivery, the sandbox env.

* ``stripeline.testing.events``: ``make_event``, ``entitlement_summary``,
  ``object_shape``, ``resource_for``, ``sign_event`` (the standard library only).
* ``stripeline.testing.delivery``: ``deliver`` signed events to a webhook route.
* ``stripeline.testing.env``: ``StripelineEnv`` (a sandbox account, an SDK
  client and a served app), ``advance_clock`` and ``EventFailed`` (what
  ``settle()`` raises when a handler failed), ``drain`` and ``failures``
  (processing in this thread, without the sandbox); needs the sandbox
  (``pip install 'stripeline[sandbox]'``) only when one is made.
* ``stripeline.testing.plugin``: the pytest plugin (entry point ``pytest11``),
  the only module here that imports pytest.

See ``docs/testing.md``.
"""

from __future__ import annotations

from stripeline.testing.delivery import DEFAULT_WEBHOOK_PATH, Delivery, Order, deliver
from stripeline.testing.env import (
    EventFailed,
    FailedEvent,
    SandboxControlError,
    StoredEvent,
    StripelineEnv,
    advance_clock,
    drain,
    failures,
)
from stripeline.testing.events import (
    entitlement_summary,
    make_event,
    object_shape,
    resource_for,
    sign_event,
)

__all__ = [
    "DEFAULT_WEBHOOK_PATH",
    "Delivery",
    "EventFailed",
    "FailedEvent",
    "Order",
    "SandboxControlError",
    "StoredEvent",
    "StripelineEnv",
    "advance_clock",
    "deliver",
    "drain",
    "entitlement_summary",
    "failures",
    "make_event",
    "object_shape",
    "resource_for",
    "sign_event",
]
