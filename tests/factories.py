"""Test data: Stripe-shaped events and signed webhook requests."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

from stripeline.core.signature import sign

SECRET = "whsec_test_webhook_secret_0001"
_ids = itertools.count(1)


def event(
    type: str = "customer.updated",
    *,
    id: str | None = None,
    obj: dict[str, Any] | None = None,
    created: int | None = None,
    livemode: bool = False,
    account: str | None = None,
    previous_attributes: dict[str, Any] | None = None,
    padding: int = 0,
) -> dict[str, Any]:
    """A current-API-shaped event envelope around ``obj``."""
    n = next(_ids)
    obj = obj or {"id": f"cus_{n:08d}", "object": "customer", "email": f"u{n}@example.com"}
    if padding:
        obj = {**obj, "metadata": {"padding": "x" * padding}}
    data: dict[str, Any] = {"object": obj}
    if previous_attributes is not None:
        data["previous_attributes"] = previous_attributes
    body: dict[str, Any] = {
        "id": id or f"evt_test_{n:010d}",
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": created if created is not None else int(time.time()),
        "data": data,
        "livemode": livemode,
        "pending_webhooks": 1,
        "request": {"id": f"req_{n}", "idempotency_key": None},
        "type": type,
    }
    if account:
        body["account"] = account
    return body


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def signed(payload: bytes, secret: str = SECRET, *, timestamp: int | None = None) -> dict[str, str]:
    """Headers for a webhook POST of ``payload``."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {"Stripe-Signature": sign(payload, secret, ts), "Content-Type": "application/json"}
