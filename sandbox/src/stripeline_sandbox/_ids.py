"""Identifiers shaped like Stripe's: a prefix and 24 random characters."""

from __future__ import annotations

import hashlib
import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def random_part(length: int = 24) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def new_id(prefix: str) -> str:
    """A fresh id such as ``cus_Qx3…`` for ``prefix="cus"``."""
    return f"{prefix}_{random_part()}"


def new_secret_key() -> str:
    """A fresh test-mode secret key; each one is its own sandbox account."""
    return f"sk_test_{random_part(32)}"


def publishable_key_for(secret_key: str) -> str:
    """The ``pk_test_…`` key paired with ``secret_key`` (the same account): derived
    from it one way, so it is stable across restarts and reveals nothing of it."""
    digest = hashlib.sha256(f"publishable:{secret_key}".encode()).digest()
    return "pk_test_" + "".join(_ALPHABET[b % len(_ALPHABET)] for b in digest[:32])


def new_webhook_secret() -> str:
    return f"whsec_{random_part(32)}"


def new_request_id() -> str:
    return f"req_{random_part(14)}"
