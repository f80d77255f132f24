"""The gateway: the one place where stripeline uses the official ``stripe`` SDK.

* ``client``: ``make_client(settings)`` builds the ``StripeClient``
  (``open_client`` one for a key and an address, closed after);
  ``stripe_errors()`` turns every ``stripe.*`` error into a
  ``StripeAPIError`` subclass.
* ``reader``: the rate-limited ``Reader`` every API read goes through, and
  ``pages`` to list whole object types with it.
* ``fetcher``: ``StripeFetcher``, the mirror's ``Fetcher`` port read through
  a ``Reader``.

Names load on first use, so that importing the reader (the sync jobs do)
does not load the SDK before a read is made.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stripeline.gateway.client import (
        API_VERSION,
        DEFAULT_MAX_NETWORK_RETRIES,
        SDK_VERSION,
        StripeClient,
        is_retryable,
        make_client,
        open_client,
        redact,
        stripe_errors,
        translate_error,
    )
    from stripeline.gateway.fetcher import StripeFetcher
    from stripeline.gateway.reader import (
        LISTERS,
        PAGE_SIZE,
        SERVICES,
        Lister,
        Page,
        Reader,
        pages,
        resolve_types,
    )

_LAZY = {
    "API_VERSION": "stripeline.gateway.client",
    "DEFAULT_MAX_NETWORK_RETRIES": "stripeline.gateway.client",
    "SDK_VERSION": "stripeline.gateway.client",
    "StripeClient": "stripeline.gateway.client",
    "open_client": "stripeline.gateway.client",
    "is_retryable": "stripeline.gateway.client",
    "make_client": "stripeline.gateway.client",
    "redact": "stripeline.gateway.client",
    "stripe_errors": "stripeline.gateway.client",
    "translate_error": "stripeline.gateway.client",
    "StripeFetcher": "stripeline.gateway.fetcher",
    "LISTERS": "stripeline.gateway.reader",
    "PAGE_SIZE": "stripeline.gateway.reader",
    "SERVICES": "stripeline.gateway.reader",
    "Lister": "stripeline.gateway.reader",
    "Page": "stripeline.gateway.reader",
    "Reader": "stripeline.gateway.reader",
    "pages": "stripeline.gateway.reader",
    "resolve_types": "stripeline.gateway.reader",
}

__all__ = [
    "API_VERSION",
    "DEFAULT_MAX_NETWORK_RETRIES",
    "LISTERS",
    "PAGE_SIZE",
    "SDK_VERSION",
    "SERVICES",
    "Lister",
    "Page",
    "Reader",
    "StripeClient",
    "StripeFetcher",
    "is_retryable",
    "make_client",
    "open_client",
    "pages",
    "redact",
    "resolve_types",
    "stripe_errors",
    "translate_error",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'stripeline.gateway' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
