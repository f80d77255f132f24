"""stripeline-sandbox: a stateful, offline Stripe that the official SDK talks to.

It imports nothing of stripeline (nor the ``stripe`` SDK: it speaks the wire
protocol), so any Stripe SDK user can run it.

::

    with Sandbox(webhook_url="http://127.0.0.1:8000/webhooks/stripe") as sb:
        client = stripe.StripeClient(sb.secret_key, base_addresses={"api": sb.url})
        client.v1.customers.create({"email": "a@example.com"})

See ``docs/sandbox.md`` for what is emulated.
"""

from __future__ import annotations

from stripeline_sandbox._clock import SandboxClock
from stripeline_sandbox._delivery import Attempt, DeliveryMode
from stripeline_sandbox._faults import Fault
from stripeline_sandbox._persist import StateFileError
from stripeline_sandbox._sandbox import Sandbox
from stripeline_sandbox._state import API_VERSION

__all__ = [
    "API_VERSION",
    "Attempt",
    "DeliveryMode",
    "Fault",
    "Sandbox",
    "SandboxClock",
    "StateFileError",
]
