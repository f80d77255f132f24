"""The gateway: the one place where stripeline uses the official ``stripe`` SDK.

* ``client``: ``make_client(settings)`` builds the ``StripeClient``
  (``open_client`` one for a key and an address, closed after);
  ``stripe_errors()`` turns every ``stripe.*`` error into a
  ``StripeAPIError`` subclass.
* ``reader``: the rate-limited ``Reader`` every API read goes through, and
  ``pages`` to list whole object types with it.
* ``fetcher``: ``StripeFetcher``, the mirror's ``Fetcher`` port read through
  a ``Reader``.

Lists, limits and error-translation helpers the sync jobs share
(``LISTERS``, ``resolve_types``, ``translate_error`` …) are internals of
``stripeline.gateway.reader`` and ``.client``, not part of this API.

Names load on first use, so that importing the reader (the sync jobs do)
does not load the SDK before a read is made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stripeline._lazy import lazy_names as _lazy_names

if TYPE_CHECKING:
    from stripeline.gateway.client import (
        API_VERSION,
        SDK_VERSION,
        StripeClient,
        make_client,
        open_client,
        stripe_errors,
    )
    from stripeline.gateway.fetcher import StripeFetcher
    from stripeline.gateway.reader import (
        Page,
        Reader,
        pages,
    )

_LAZY = {
    "API_VERSION": "stripeline.gateway.client",
    "SDK_VERSION": "stripeline.gateway.client",
    "StripeClient": "stripeline.gateway.client",
    "open_client": "stripeline.gateway.client",
    "make_client": "stripeline.gateway.client",
    "stripe_errors": "stripeline.gateway.client",
    "StripeFetcher": "stripeline.gateway.fetcher",
    "Page": "stripeline.gateway.reader",
    "Reader": "stripeline.gateway.reader",
    "pages": "stripeline.gateway.reader",
}

__all__ = [
    "API_VERSION",
    "SDK_VERSION",
    "Page",
    "Reader",
    "StripeClient",
    "StripeFetcher",
    "make_client",
    "open_client",
    "pages",
    "stripe_errors",
]


__getattr__, __dir__ = _lazy_names(__name__, _LAZY, __all__)
