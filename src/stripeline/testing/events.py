"""Stripe events for tests: current-API object shapes, ``make_event``, ``sign_event``.

Imports nothing beyond the standard library until a function needs it.
"""

from __future__ import annotations

import copy as _copy
import itertools
import json
import secrets
import time
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from typing import Any, cast

__all__ = ["entitlement_summary", "make_event", "object_shape", "resource_for", "sign_event"]

#: Event type prefixes whose object is not the prefix itself.
_EVENT_RESOURCES = {
    "charge.dispute": "dispute",
    "charge.refund": "refund",
    "customer.subscription": "subscription",
    "customer.discount": "discount",
    "customer.tax_id": "tax_id",
    "customer_cash_balance_transaction": "customer_cash_balance_transaction",
    "invoice_payment": "invoice_payment",
}

_serial = itertools.count(1)


@lru_cache(maxsize=1)
def _shapes() -> dict[str, dict[str, Any]]:
    text = resources.files("stripeline").joinpath("testing_data/objects.json").read_text("utf-8")
    return cast(dict[str, dict[str, Any]], json.loads(text)["resources"])


def object_shape(resource: str) -> dict[str, Any]:
    """A copy of the current-API example object of ``resource`` (``"invoice"``,
    ``"checkout.session"``…), as shipped in ``stripeline/testing_data``.

    Raises:
        KeyError: no example object of that name ships with stripeline.
    """
    shapes = _shapes()
    if resource not in shapes:
        raise KeyError(f"no example object {resource!r}; known: {', '.join(sorted(shapes))}")
    return _copy.deepcopy(shapes[resource])


def resource_for(event_type: str) -> str | None:
    """The object type an event type is about (``charge.dispute.closed`` → ``dispute``)."""
    prefix = event_type.rsplit(".", 1)[0] if "." in event_type else event_type
    while True:
        if prefix in _EVENT_RESOURCES:
            return _EVENT_RESOURCES[prefix]
        if prefix in _shapes():
            return prefix
        if "." not in prefix:
            return None
        prefix = prefix.rsplit(".", 1)[0]


def _fresh_id(example_id: str) -> str:
    head, sep, _ = example_id.rpartition("_")
    prefix = head if sep else "obj"
    return f"{prefix}_test{next(_serial):06d}{secrets.token_hex(6)}"


def make_event(
    type: str,
    object: Mapping[str, Any] | None = None,
    *,
    previous_attributes: Mapping[str, Any] | None = None,
    id: str | None = None,
    created: int | None = None,
    livemode: bool = False,
    account: str | None = None,
    api_version: str | None = None,
) -> dict[str, Any]:
    """An Event of ``type`` as Stripe sends it, around a current-API object.

    The object starts from the example of the event's resource (a fresh id,
    ``livemode`` and ``created`` set) and ``object``'s keys replace its
    top-level fields; an unknown resource gets just ``id`` and ``object``.
    ``previous_attributes`` goes to ``data.previous_attributes``.
    """
    from stripeline.gateway import API_VERSION

    now = int(time.time()) if created is None else created
    resource = resource_for(type)
    try:
        body = object_shape(resource) if resource else {}
    except KeyError:
        body = {}
    if body:
        if "id" in body:  # an entitlement summary has no id of its own
            body["id"] = _fresh_id(str(body.get("id") or "obj"))
        if "livemode" in body:
            body["livemode"] = livemode
        if "created" in body:
            body["created"] = now
    else:
        body = {"id": _fresh_id("obj"), "object": resource or type.rsplit(".", 1)[0]}
    body.update(_copy.deepcopy(dict(object or {})))
    data: dict[str, Any] = {"object": body}
    if previous_attributes is not None:
        data["previous_attributes"] = _copy.deepcopy(dict(previous_attributes))
    event: dict[str, Any] = {
        "id": id or f"evt_test{next(_serial):06d}{secrets.token_hex(8)}",
        "object": "event",
        "api_version": api_version or API_VERSION,
        "created": now,
        "data": data,
        "livemode": livemode,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": type,
    }
    if account is not None:
        event["account"] = account
    return event


def entitlement_summary(customer: str, *lookup_keys: str, livemode: bool = False) -> dict[str, Any]:
    """Stripe's ``entitlements.active_entitlement_summary`` of ``customer``:
    one active entitlement per feature ``lookup_key`` (its feature id
    ``feat_test_<key>`` and entitlement id ``ent_test_<key>``, the same for a
    key every time). The object of ``entitlements.active_entitlement_summary.updated``::

        make_event("entitlements.active_entitlement_summary.updated",
                   entitlement_summary("cus_123", "pro", "api"))
    """
    return {
        "object": "entitlements.active_entitlement_summary",
        "customer": customer,
        "entitlements": {
            "object": "list",
            "data": [
                {
                    "id": f"ent_test_{key}",
                    "object": "entitlements.active_entitlement",
                    "feature": f"feat_test_{key}",
                    "livemode": livemode,
                    "lookup_key": key,
                }
                for key in lookup_keys
            ],
            "has_more": False,
            "url": "/v1/entitlements/active_entitlements",
        },
        "livemode": livemode,
    }


def _payload(event: Mapping[str, Any] | bytes) -> bytes:
    if isinstance(event, bytes):
        return event
    return json.dumps(event, indent=2).encode()


def sign_event(
    event: Mapping[str, Any] | bytes, secret: str, *, timestamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a webhook POST of ``event``, signed as Stripe signs."""
    from stripeline.core.signature import sign

    payload = _payload(event)
    signed_at = int(time.time()) if timestamp is None else timestamp
    return payload, {
        "Content-Type": "application/json; charset=utf-8",
        "Stripe-Signature": sign(payload, secret, signed_at),
    }
