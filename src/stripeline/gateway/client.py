"""The client: the only place stripeline builds the official ``stripe`` client,
and where it reads the SDK's errors.

``make_client(settings)`` returns a ``stripe.StripeClient`` configured the
stripeline way: network retries set explicitly (``StripeClient`` retries
nothing unless told), the API base pointed at the offline sandbox when
``STRIPELINE_STRIPE_API_BASE`` is set, and the SDK's own API version pin.
``open_client(key, api_base=…)`` builds one the same way for a key and an
address (tests, scripts) and closes its connections on leaving the block.

Every ``stripe.*`` error is turned into a ``StripeAPIError`` subclass by
``translate_error`` (or the ``stripe_errors()`` context manager) so that the
rest of stripeline, and the application, catch one tree with the same fields
(``request_id``, ``http_status``, ``code``, ``retryable``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import stripe
from stripe import StripeClient as StripeClient

from stripeline.errors import (
    ConfigError,
    StripeAPIError,
    StripeAuthenticationError,
    StripeCardError,
    StripeConnectionError,
    StripeIdempotencyError,
    StripeInvalidRequestError,
    StripePermissionError,
    StripeRateLimitError,
    StripeServerError,
)
from stripeline.settings import Settings

#: Retries the SDK makes on a network error, a 409, a 5xx or when Stripe says
#: ``Stripe-Should-Retry: true`` (it backs off 0.5 s → 5 s with jitter and keeps
#: the same idempotency key). Two is the SDK's documented default elsewhere.
DEFAULT_MAX_NETWORK_RETRIES = 2

#: The API version every request carries: the one the installed SDK pins.
API_VERSION: str = stripe.api_version
#: The installed SDK's version.
SDK_VERSION: str = stripe.VERSION

# Stripe already masks keys in its messages; this keeps any that slip through
# out of our errors and logs.
_KEY_IN_TEXT = re.compile(r"\b((?:sk|rk|pk)_(?:test|live)_)[A-Za-z0-9_*]+")
_WHSEC_IN_TEXT = re.compile(r"\bwhsec_[A-Za-z0-9+/=_*-]+")


def make_client(
    settings: Settings,
    *,
    api_key: str | None = None,
    api_base: str | None = None,
    max_network_retries: int = DEFAULT_MAX_NETWORK_RETRIES,
) -> StripeClient:
    """A ``StripeClient`` for ``settings`` (the sandbox when ``stripe_api_base`` is set).

    ``api_key`` and ``api_base`` override ``STRIPE_SECRET_KEY`` and
    ``STRIPELINE_STRIPE_API_BASE`` (``serve`` passes those of the sandbox it
    runs in-process).

    Raises:
        ConfigError: there is no API key to call Stripe with.
    """
    key = api_key
    if key is None and settings.stripe_secret_key is not None:
        key = settings.stripe_secret_key.get_secret_value()
    if not key:
        raise ConfigError(
            "calling the Stripe API needs STRIPE_SECRET_KEY (for the sandbox that "
            "`stripeline serve` runs when no key is set, export the lines it printed: "
            "STRIPE_SECRET_KEY and STRIPELINE_STRIPE_API_BASE)"
        )
    return _client(key, api_base or settings.stripe_api_base, max_network_retries)


def _client(
    key: str,
    api_base: str | None,
    max_network_retries: int,
    http_client: stripe.HTTPClient | None = None,
) -> StripeClient:
    if max_network_retries < 0:
        raise ValueError("max_network_retries must be >= 0")
    base = (api_base or "").rstrip("/") or None
    return StripeClient(
        key,
        stripe_version=API_VERSION,
        # The sandbox answers file uploads on the same address as the API.
        base_addresses={"api": base, "files": base} if base else None,
        max_network_retries=max_network_retries,
        http_client=http_client,
    )


@contextmanager
def open_client(
    api_key: str,
    *,
    api_base: str | None = None,
    max_network_retries: int = DEFAULT_MAX_NETWORK_RETRIES,
    timeout: float = 80,
) -> Iterator[StripeClient]:
    """A ``StripeClient`` for ``api_key`` (at ``api_base``: the sandbox's
    address, say) whose HTTP connections are closed on leaving the block."""
    http_client = stripe.RequestsClient(timeout=timeout)
    try:
        yield _client(api_key, api_base, max_network_retries, http_client)
    finally:
        http_client.close()  # type: ignore[no-untyped-call]


def redact(text: str) -> str:
    """``text`` with any API key or webhook secret reduced to its prefix."""
    text = _KEY_IN_TEXT.sub(lambda m: m.group(1) + "…", text)
    return _WHSEC_IN_TEXT.sub("whsec_…", text)


def _error_data(exc: stripe.StripeError) -> dict[str, Any]:
    body = exc.json_body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return dict(body["error"])
    return {}


def _header(exc: stripe.StripeError, name: str) -> str | None:
    for key, value in (exc.headers or {}).items():
        if key.lower() == name:
            return str(value)
    return None


def is_retryable(exc: stripe.StripeError) -> bool:
    """Whether the same request may succeed later, Stripe's rules in order.

    ``Stripe-Should-Retry`` wins when present; else network errors the SDK
    deems transient, 409 (a conflicting request in flight), 429 (rate limit
    or ``lock_timeout``: back off) and any 5xx are retryable. 400, 401, 402,
    403 and 404 are not: sending them again unchanged gives the same answer.
    """
    should = _header(exc, "stripe-should-retry")
    if should in ("true", "false"):
        return should == "true"
    if isinstance(exc, stripe.APIConnectionError):
        return bool(getattr(exc, "should_retry", True)) or exc.http_status is None
    status = exc.http_status
    if status is None:
        return False
    return status in (409, 429) or status >= 500


def translate_error(exc: stripe.StripeError) -> StripeAPIError:
    """The stripeline error for a ``stripe`` SDK error (same fields, secrets masked)."""
    data = _error_data(exc)
    message = redact(str(exc.user_message or data.get("message") or type(exc).__name__))
    fields: dict[str, Any] = {
        "request_id": exc.request_id,
        "http_status": exc.http_status,
        "code": exc.code or data.get("code"),
        "retryable": is_retryable(exc),
    }
    if isinstance(exc, stripe.CardError):
        return StripeCardError(message, decline_code=data.get("decline_code"), **fields)
    if isinstance(exc, stripe.IdempotencyError):
        return StripeIdempotencyError(message, **fields)
    if isinstance(exc, stripe.InvalidRequestError):
        return StripeInvalidRequestError(message, param=data.get("param"), **fields)
    if isinstance(exc, stripe.RateLimitError):
        return StripeRateLimitError(message, **fields)
    if isinstance(exc, stripe.AuthenticationError):
        return StripeAuthenticationError(message, **fields)
    if isinstance(exc, stripe.PermissionError):
        return StripePermissionError(message, **fields)
    if isinstance(exc, stripe.APIConnectionError):
        return StripeConnectionError(message, **fields)
    if exc.http_status is not None and 400 <= exc.http_status < 500:
        return StripeInvalidRequestError(message, param=data.get("param"), **fields)
    return StripeServerError(message, **fields)


@contextmanager
def stripe_errors() -> Iterator[None]:
    """Raise the stripeline error for any ``stripe`` error inside the block.

    Raises:
        StripeAPIError: the call failed (a subclass says how).
    """
    try:
        yield
    except stripe.StripeError as exc:
        raise translate_error(exc) from exc
