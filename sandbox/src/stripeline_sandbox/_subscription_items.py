"""Subscription items: ``/v1/subscription_items``.

Creating, changing or deleting an item is a subscription update with one
``items[]`` entry (same prorations, invoices and events).
"""

from __future__ import annotations

from typing import Any

from stripeline_sandbox._billing import settle
from stripeline_sandbox._lists import list_object
from stripeline_sandbox._routes import Endpoint, Request
from stripeline_sandbox._state import Obj
from stripeline_sandbox._subscriptions import NOUN, update_subscription_op


def list_subscription_items(request: Request) -> Obj:
    settle(request)
    subscription = request.get(NOUN, str(request.param("subscription")), param="subscription")
    return list_object(
        request,
        list(reversed(subscription["items"]["data"])),
        f"/v1/subscription_items?subscription={subscription['id']}",
    )


def retrieve_subscription_item(request: Request) -> Obj:
    settle(request)
    return request.get("subscription_item", request.path_params["id"])


def _item_change(request: Request, subscription_id: str, entry: dict[str, Any]) -> Obj:
    """Run an item change as a subscription update (same prorations and events)."""
    params: dict[str, Any] = {"items": [entry]}
    for name in ("proration_behavior", "proration_date"):
        if name in request.params:
            params[name] = request.params[name]
    return update_subscription_op(request, subscription_id, params)


def create_subscription_item(request: Request) -> Obj:
    subscription_id = str(request.param("subscription"))
    entry: dict[str, Any] = {
        k: request.params[k] for k in ("price", "quantity", "metadata") if k in request.params
    }
    subscription = _item_change(request, subscription_id, entry)
    return dict(subscription["items"]["data"][-1])


def update_subscription_item(request: Request) -> Obj:
    item = request.get("subscription_item", request.path_params["id"])
    entry: dict[str, Any] = {
        k: request.params[k] for k in ("price", "quantity", "metadata") if k in request.params
    }
    entry["id"] = item["id"]
    _item_change(request, item["subscription"], entry)
    return item


def delete_subscription_item(request: Request) -> Obj:
    item = request.get("subscription_item", request.path_params["id"])
    _item_change(request, item["subscription"], {"id": item["id"], "deleted": "true"})
    return {"id": item["id"], "object": "subscription_item", "deleted": True}


#: This module's endpoints; ``_app.build_router`` puts every module's table together.
ROUTES: tuple[Endpoint, ...] = (
    Endpoint("GET", "/v1/subscription_items", list_subscription_items),
    Endpoint("GET", "/v1/subscription_items/{id}", retrieve_subscription_item),
    Endpoint("POST", "/v1/subscription_items", create_subscription_item),
    Endpoint("POST", "/v1/subscription_items/{id}", update_subscription_item),
    Endpoint("DELETE", "/v1/subscription_items/{id}", delete_subscription_item),
)
