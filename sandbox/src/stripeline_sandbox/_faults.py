"""Faults on demand and per-key rate limits, for reliability tests.

A ``Fault`` makes the next ``count`` matching requests of an account fail:

- ``api_error``: 500 ``api_error`` (``Stripe-Should-Retry`` as given);
- ``rate_limit``: 429 ``rate_limit`` with ``Stripe-Should-Retry``;
- ``lock_timeout``: 429 ``lock_timeout`` with ``Stripe-Should-Retry: true``
  (Stripe's answer when an object is busy; ``status=409`` makes it a conflict);
- ``timeout``: no answer for ``delay`` seconds, then the connection closes;
- ``disconnect``: the connection is dropped without an answer.

``after_commit`` runs the request first (its state change and events stay),
then fails: the case idempotency keys exist for. It defaults to true for
``timeout``/``disconnect`` and false for the others.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from stripeline_sandbox._errors import StripeError
from stripeline_sandbox._state import Account

KINDS = ("api_error", "rate_limit", "lock_timeout", "timeout", "disconnect")
DEFAULT_TIMEOUT_DELAY = 30.0


@dataclass
class Fault:
    kind: str
    count: int = 1
    path: str | None = None
    method: str | None = None
    after_commit: bool = False
    status: int | None = None
    should_retry: bool | None = None
    delay: float = DEFAULT_TIMEOUT_DELAY

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {KINDS}")
        if self.count < 1:
            raise ValueError("count must be at least 1")

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method:
            return False
        return self.path is None or re.search(self.path, path) is not None

    def error(self) -> StripeError:
        """The error answered for a status fault."""
        retry = (
            {}
            if self.should_retry is None
            else {"Stripe-Should-Retry": str(self.should_retry).lower()}
        )
        if self.kind == "api_error":
            return StripeError(
                self.status or 500,
                "An unknown error occurred (injected by the sandbox).",
                type="api_error",
                headers=retry,
            )
        if self.kind == "rate_limit":
            return StripeError(
                self.status or 429,
                "Request rate limit exceeded. Learn more about rate limits here: https://docs.stripe.com/rate-limits.",
                code="rate_limit",
                headers=retry or {"Stripe-Should-Retry": "true"},
            )
        return StripeError(
            self.status or 429,
            "This object cannot be accessed right now because another API request or Stripe process is currently accessing it. If you see this error intermittently, retry the request. If you see this error frequently and are making multiple concurrent requests to a single object, make your requests serially or at a lower rate.",
            code="lock_timeout",
            headers=retry or {"Stripe-Should-Retry": "true"},
        )


def take_fault(account: Account, method: str, path: str) -> Fault | None:
    """The first fault matching this request, with one use consumed."""
    with account.lock:
        for fault in account.faults:
            if fault.matches(method, path):
                fault.count -= 1
                if fault.count <= 0:
                    account.faults.remove(fault)
                return fault
    return None


def over_rate_limit(account: Account) -> bool:
    """Whether this request exceeds the account's requests-per-second limit."""
    if account.rate_limit <= 0:
        return False
    now = time.monotonic()
    with account.lock:
        window = account.recent_requests
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) >= account.rate_limit:
            account.rate_limited += 1
            return True
        window.append(now)
    return False


def rate_limited() -> StripeError:
    return StripeError(
        429,
        "Request rate limit exceeded. You can learn more about rate limits here https://docs.stripe.com/rate-limits.",
        code="rate_limit",
    )
