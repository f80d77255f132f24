"""Pure logic: no I/O, no environment, no Stripe SDK, no database.

The public part is Stripe's webhook signature scheme and the event envelope:
``sign`` a payload as Stripe does (tests, replays), ``verify`` a
``Stripe-Signature`` header against one or more secrets, and
``parse_envelope`` to read an event's id, type, mode and times. The ordering
rules, the token bucket and the backoff maths are internals of their modules.
"""

from __future__ import annotations

from stripeline.core.envelope import Envelope, parse_envelope
from stripeline.core.signature import sign, verify

__all__ = ["Envelope", "parse_envelope", "sign", "verify"]
