"""The Entitlements API: features, product features, active entitlements and
the ``entitlements.active_entitlement_summary.updated`` event.

A feature (``POST /v1/entitlements/features``) has a ``lookup_key`` unique in
the account; it is attached to a product (``POST /v1/products/{id}/features``)
as a ``product_feature``. A customer holds an active entitlement to each
feature of the products of its live subscriptions (``trialing``, ``active``
or ``past_due``, see ``GRANTING``). Whenever that set changes (a
subscription created, updated, canceled or ended, a feature attached to or
detached from one of its products) the sandbox emits
``entitlements.active_entitlement_summary.updated`` with the customer's
whole summary, after the event that changed it. An active entitlement keeps
its id while the customer keeps the feature.
"""

from __future__ import annotations

from typing import Any

from stripeline_sandbox._errors import invalid, no_such
from stripeline_sandbox._ids import new_id
from stripeline_sandbox._lists import list_object
from stripeline_sandbox._objects import apply_metadata, copy
from stripeline_sandbox._routes import Call, Endpoint, Request, as_bool, required
from stripeline_sandbox._state import Obj

FEATURE = "entitlements.feature"
PRODUCT_FEATURE = "product_feature"
ACTIVE = "entitlements.active_entitlement"
SUMMARY = "entitlements.active_entitlement_summary"
SUMMARY_EVENT = "entitlements.active_entitlement_summary.updated"
#: The subscription statuses whose products' features a customer is entitled to.
GRANTING = ("trialing", "active", "past_due")
#: Subscription events after which a customer's entitlements are computed again.
_SUBSCRIPTION_EVENTS = frozenset(
    {
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "customer.subscription.paused",
        "customer.subscription.resumed",
    }
)
#: Hidden state: customer id -> {feature id: active entitlement id}.
_HELD = "__active_entitlements__"
MAX_LOOKUP_KEY = 80
MAX_NAME = 80


# -- features ---------------------------------------------------------------------


def _feature_name(value: Any) -> str:
    name = str(value)
    if len(name) > MAX_NAME:
        raise invalid(f"name must be at most {MAX_NAME} characters.", param="name")
    return name


def create_feature(request: Request) -> Obj:
    params = request.params
    name = _feature_name(required(params, "name"))
    lookup_key = str(required(params, "lookup_key"))
    if len(lookup_key) > MAX_LOOKUP_KEY:
        raise invalid(
            f"lookup_key must be at most {MAX_LOOKUP_KEY} characters.", param="lookup_key"
        )
    for other in request.account.all(FEATURE):
        if other["lookup_key"] == lookup_key:
            raise invalid(
                f"A feature with the lookup key '{lookup_key}' already exists.",
                param="lookup_key",
            )
    feature: Obj = {
        "id": new_id("feat"),
        "object": FEATURE,
        "active": True,
        "livemode": False,
        "lookup_key": lookup_key,
        "metadata": apply_metadata({}, params.get("metadata")),
        "name": name,
    }
    request.account.add(feature)
    return feature


def retrieve_feature(request: Request) -> Obj:
    return request.get(FEATURE, request.path_params["id"], noun="feature")


def update_feature(request: Request) -> Obj:
    feature = request.get(FEATURE, request.path_params["id"], noun="feature")
    params = request.params
    if "name" in params:
        if not params["name"]:
            raise invalid("The feature name cannot be empty.", param="name")
        feature["name"] = _feature_name(params["name"])
    if "active" in params:
        feature["active"] = as_bool(params["active"], "active")
    feature["metadata"] = apply_metadata(feature["metadata"], params.get("metadata"))
    return feature


def list_features(request: Request) -> Obj:
    params = request.params
    archived = params.get("archived")
    lookup_key = params.get("lookup_key")

    def keep(feature: Obj) -> bool:
        if archived is not None and feature["active"] == as_bool(archived, "archived"):
            return False
        return lookup_key in (None, "", feature["lookup_key"])

    return list_object(request, request.account.all(FEATURE), "/v1/entitlements/features", keep)


# -- product features ---------------------------------------------------------------


def _product(request: Request) -> Obj:
    return request.get("product", request.path_params["product"], param="product")


def attach_feature(request: Request) -> Obj:
    product = _product(request)
    feature_id = str(required(request.params, "entitlement_feature"))
    feature = request.get(FEATURE, feature_id, noun="feature", param="entitlement_feature")
    if not feature["active"]:
        raise invalid(
            "An archived feature cannot be attached to a product.", param="entitlement_feature"
        )
    for attached in _attached(request, product["id"]):
        if attached["entitlement_feature"]["id"] == feature["id"]:
            raise invalid(
                f"The feature {feature['id']} is already attached to this product.",
                param="entitlement_feature",
            )
    product_feature: Obj = {
        "id": new_id("prodft"),
        "object": PRODUCT_FEATURE,
        "entitlement_feature": copy(feature),
        "livemode": False,
    }
    request.account.add(product_feature)
    request.account.hidden(product_feature["id"])["product"] = product["id"]
    refresh_product(request, product["id"])
    return product_feature


def _attached(call: Call, product_id: str) -> list[Obj]:
    return [
        found
        for found in call.account.all(PRODUCT_FEATURE)
        if not found.get("deleted")
        and call.account.hidden(found["id"]).get("product") == product_id
    ]


def _render(call: Call, product_feature: Obj) -> Obj:
    """A product feature with its feature as it is now (name, lookup key, active)."""
    shown: Obj = copy(product_feature)
    feature = call.account.find(FEATURE, product_feature["entitlement_feature"]["id"])
    if feature is not None:
        shown["entitlement_feature"] = copy(feature)
    return shown


def _one_attached(request: Request) -> Obj:
    product = _product(request)
    object_id = request.path_params["id"]
    for attached in _attached(request, product["id"]):
        if attached["id"] == object_id:
            return attached
    raise no_such("product feature", object_id)


def retrieve_product_feature(request: Request) -> Obj:
    return _render(request, _one_attached(request))


def list_product_features(request: Request) -> Obj:
    product = _product(request)
    shown = [_render(request, attached) for attached in _attached(request, product["id"])]
    return list_object(request, shown, f"/v1/products/{product['id']}/features")


def detach_feature(request: Request) -> Obj:
    attached = _one_attached(request)
    attached["deleted"] = True
    refresh_product(request, str(request.account.hidden(attached["id"])["product"]))
    return {"id": attached["id"], "object": PRODUCT_FEATURE, "deleted": True}


# -- active entitlements --------------------------------------------------------------


def list_active(request: Request) -> Obj:
    customer = request.get("customer", str(required(request.params, "customer")), param="customer")
    held = _held(request, customer["id"])
    active = [
        request.account.objects[entitlement_id]
        for entitlement_id in held.values()
        if entitlement_id in request.account.objects
    ]
    active.sort(key=lambda entitlement: str(entitlement["lookup_key"]))
    return list_object(request, active, "/v1/entitlements/active_entitlements")


def retrieve_active(request: Request) -> Obj:
    return request.get(ACTIVE, request.path_params["id"], noun="active entitlement")


def _held(call: Call, customer_id: str) -> dict[str, str]:
    found: dict[str, str] = call.account.hidden(_HELD).setdefault(customer_id, {})
    return found


def _granted(call: Call, customer_id: str) -> dict[str, Obj]:
    """The features (by id) the live subscriptions of ``customer_id`` entitle it to."""
    products: set[str] = set()
    for subscription in call.account.all("subscription"):
        if subscription["customer"] != customer_id or subscription["status"] not in GRANTING:
            continue
        for item in subscription["items"]["data"]:
            product = item["price"].get("product")
            products.add(product if isinstance(product, str) else str(product["id"]))
    granted: dict[str, Obj] = {}
    for product_id in products:
        for attached in _attached(call, product_id):
            feature = call.account.find(FEATURE, attached["entitlement_feature"]["id"])
            if feature is not None:
                granted[feature["id"]] = feature
    return granted


def refresh(call: Call, customer_id: str) -> None:
    """Recompute the active entitlements of ``customer_id``; when they changed,
    emit the summary event (after the events already emitted in ``call``)."""
    held = _held(call, customer_id)
    granted = _granted(call, customer_id)
    if set(granted) == set(held):
        return
    for feature_id in set(held) - set(granted):
        call.account.remove(held.pop(feature_id))
    for feature_id, feature in granted.items():
        if feature_id not in held:
            entitlement: Obj = {
                "id": new_id("ent"),
                "object": ACTIVE,
                "feature": feature_id,
                "livemode": False,
                "lookup_key": feature["lookup_key"],
            }
            call.account.add(entitlement)
            held[feature_id] = entitlement["id"]
    call.emit(SUMMARY_EVENT, summary(call, customer_id))


def summary(call: Call, customer_id: str) -> Obj:
    """The ``entitlements.active_entitlement_summary`` of ``customer_id`` (no id of its own)."""
    held = _held(call, customer_id)
    data = sorted(
        (copy(call.account.objects[i]) for i in held.values() if i in call.account.objects),
        key=lambda entitlement: str(entitlement["lookup_key"]),
    )
    return {
        "object": SUMMARY,
        "customer": customer_id,
        "entitlements": {
            "object": "list",
            "data": data,
            "has_more": False,
            "url": "/v1/entitlements/active_entitlements",
        },
        "livemode": False,
    }


def refresh_product(call: Call, product_id: str) -> None:
    """Recompute the entitlements of every customer subscribed to ``product_id``
    (or holding an entitlement from it)."""
    customers: set[str] = set()
    for subscription in call.account.all("subscription"):
        for item in subscription["items"]["data"]:
            product = item["price"].get("product")
            found = product if isinstance(product, str) else str((product or {}).get("id"))
            if found == product_id:
                customers.add(str(subscription["customer"]))
    for customer_id in sorted(customers):
        refresh(call, customer_id)


def after_event(call: Call, event_type: str, obj: Obj) -> None:
    """``Call.emit``'s hook: a subscription event may change its customer's
    entitlements. Nothing is computed while no feature was ever attached."""
    if event_type not in _SUBSCRIPTION_EVENTS or not call.account.kinds.get(PRODUCT_FEATURE):
        return
    customer = obj.get("customer")
    if isinstance(customer, str) and customer and customer not in call.quiet_entitlements:
        refresh(call, customer)


#: This module's endpoints; ``_app.build_router`` puts every module's table together.
ROUTES: tuple[Endpoint, ...] = (
    Endpoint("POST", "/v1/entitlements/features", create_feature),
    Endpoint("GET", "/v1/entitlements/features", list_features),
    Endpoint("GET", "/v1/entitlements/features/{id}", retrieve_feature),
    Endpoint("POST", "/v1/entitlements/features/{id}", update_feature),
    Endpoint("GET", "/v1/entitlements/active_entitlements", list_active),
    Endpoint("GET", "/v1/entitlements/active_entitlements/{id}", retrieve_active),
    Endpoint("POST", "/v1/products/{product}/features", attach_feature),
    Endpoint("GET", "/v1/products/{product}/features", list_product_features),
    Endpoint("GET", "/v1/products/{product}/features/{id}", retrieve_product_feature),
    Endpoint("DELETE", "/v1/products/{product}/features/{id}", detach_feature),
)
