"""Stripe webhook signatures: ``sign`` and ``verify``, pure functions.

The scheme (STRIPE_FACTS §1): the header is ``t=<unix seconds>,v1=<hex>[,v1=…]``
and ``v1`` is the hex HMAC-SHA256 of ``f"{t}.".encode() + raw_body`` keyed with
the endpoint secret exactly as given (``whsec_…``, UTF-8, not decoded). Only
``v1`` counts; any other scheme (``v0`` test signatures) is ignored so that a
downgrade is impossible. The signature is checked on the raw bytes, before any
parsing, against every configured secret (rotation), in constant time; the
timestamp must be neither older nor newer than ``tolerance`` seconds.

``now`` is always passed in, which keeps these functions pure and testable.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from stripeline.errors import SignatureError

DEFAULT_TOLERANCE_SECONDS = 300
SCHEME = "v1"
#: Headers longer than this are refused before any work is done on them.
MAX_HEADER_LENGTH = 8192
#: ``t=`` with more digits is refused before it is converted: Unix seconds
#: have 10 today, 18 fit any BIGINT, and thousands would hit Python's
#: integer conversion limit.
MAX_TIMESTAMP_DIGITS = 18


def compute_signature(payload: bytes, secret: str, timestamp: int) -> str:
    """The hex ``v1`` signature of ``payload`` at ``timestamp`` under ``secret``."""
    signed = str(int(timestamp)).encode("ascii") + b"." + payload
    # hmac.digest: OpenSSL's one-shot HMAC, no HMAC object built per call.
    return hmac.digest(secret.encode("utf-8"), signed, "sha256").hex()


def sign(payload: bytes, secrets: str | Sequence[str], timestamp: int) -> str:
    """A ``Stripe-Signature`` header value for ``payload``, one ``v1`` per secret.

    With several secrets this is what Stripe sends while a secret is rolled.
    """
    if isinstance(secrets, str):
        secrets = [secrets]
    parts = [f"t={int(timestamp)}"]
    parts.extend(f"{SCHEME}={compute_signature(payload, s, timestamp)}" for s in secrets)
    return ",".join(parts)


def parse_header(header: str) -> tuple[int, list[str]]:
    """Split a ``Stripe-Signature`` header into its timestamp and ``v1`` signatures.

    Raises:
        SignatureError: ``malformed_header`` or ``no_v1_signature``.
    """
    if len(header) > MAX_HEADER_LENGTH:
        raise SignatureError("malformed_header", "Stripe-Signature header is too long")
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            raise SignatureError("malformed_header")
        if key == "t":
            if (
                timestamp is not None
                or not value.isascii()
                or not value.isdigit()
                or len(value) > MAX_TIMESTAMP_DIGITS
            ):
                raise SignatureError("malformed_header", "bad or repeated t= in Stripe-Signature")
            timestamp = int(value)
        elif key == SCHEME:
            signatures.append(value)
    if timestamp is None:
        raise SignatureError("malformed_header", "no t= in Stripe-Signature")
    if not signatures:
        raise SignatureError("no_v1_signature", "no v1 signature in Stripe-Signature")
    return timestamp, signatures


def verify(
    payload: bytes,
    header: str | None,
    secrets: Sequence[str],
    *,
    now: float,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
) -> int:
    """Check that ``header`` signs ``payload`` with one of ``secrets``; return its timestamp.

    Every ``v1`` signature is compared with every secret's expected signature
    using ``hmac.compare_digest``. The timestamp is checked after the signature,
    so only an authentic but replayed (or badly clocked) delivery is told
    ``timestamp_too_old`` / ``timestamp_in_future``.

    Raises:
        SignatureError: with ``reason`` saying why verification failed.
    """
    if not header:
        raise SignatureError("missing_header", "no Stripe-Signature header")
    if not secrets:
        raise SignatureError("no_matching_signature", "no webhook secret is configured")
    timestamp, signatures = parse_header(header)
    expected = [compute_signature(payload, secret, timestamp) for secret in secrets]
    matched = False
    for candidate in signatures:
        for good in expected:
            # Compare every pair: the time taken does not tell which one matched.
            matched |= hmac.compare_digest(candidate.encode("ascii", "replace"), good.encode())
    if not matched:
        raise SignatureError("no_matching_signature", "no signature matches a configured secret")
    if tolerance > 0:
        if timestamp < now - tolerance:
            raise SignatureError("timestamp_too_old", "timestamp is outside the tolerance")
        if timestamp > now + tolerance:
            raise SignatureError("timestamp_in_future", "timestamp is in the future")
    return timestamp


__all__ = [
    "DEFAULT_TOLERANCE_SECONDS",
    "compute_signature",
    "parse_header",
    "sign",
    "verify",
]
