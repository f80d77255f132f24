"""``Stripe-Signature`` header values, as Stripe signs its webhooks.

The header is ``t=<unix seconds>,v1=<hex>``; ``v1`` is the hex HMAC-SHA256 of
``f"{t}.".encode() + payload`` keyed with the endpoint secret as given
(``whsec_…``, UTF-8). A copy of the signing half of stripeline's
``core.signature``, so that the sandbox depends on nothing of stripeline.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

SCHEME = "v1"


def compute_signature(payload: bytes, secret: str, timestamp: int) -> str:
    """The hex ``v1`` signature of ``payload`` at ``timestamp`` under ``secret``."""
    signed = str(int(timestamp)).encode("ascii") + b"." + payload
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def sign(payload: bytes, secrets: str | Sequence[str], timestamp: int) -> str:
    """A ``Stripe-Signature`` header value for ``payload``, one ``v1`` per secret."""
    if isinstance(secrets, str):
        secrets = [secrets]
    parts = [f"t={int(timestamp)}"]
    parts.extend(f"{SCHEME}={compute_signature(payload, s, timestamp)}" for s in secrets)
    return ",".join(parts)
