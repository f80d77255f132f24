"""``/v1/plans``: the legacy Plans API, served over recurring prices.

A plan is a recurring price seen through ``_prices.plan_of``: creating a plan
creates the price (with the plan's own ``id`` when one is given, as older
integrations do: ``gold-monthly``), and every recurring price is listed as a
plan. Events: ``plan.created/updated/deleted`` alongside ``price.*``.
Subscriptions take ``plan`` where they take ``price`` (``legacy_params``).
"""

from __future__ import annotations

from typing import Any

from stripeline_sandbox._errors import StripeError, invalid, no_such
from stripeline_sandbox._ids import new_id
from stripeline_sandbox._lists import list_object
from stripeline_sandbox._objects import apply_metadata, copy, previous_attributes
from stripeline_sandbox._prices import _recurring, plan_of
from stripeline_sandbox._products import create_product_op
from stripeline_sandbox._routes import Endpoint, Request, as_bool, as_int, optional_str, required
from stripeline_sandbox._state import Obj


def _recurring_price(request: Request, plan_id: str) -> Obj:
    price = request.account.find("price", plan_id)
    if price is None or price.get("deleted") or not price.get("recurring"):
        raise no_such("plan", plan_id)
    return price


def create_plan(request: Request) -> Obj:
    params = request.params
    currency = str(required(params, "currency")).lower()
    recurring_given: dict[str, Any] = {"interval": required(params, "interval")}
    for name in ("interval_count", "usage_type", "trial_period_days"):
        if params.get(name) not in (None, ""):
            recurring_given[name] = params[name]
    recurring = _recurring(request, recurring_given)
    amount = params.get("amount", params.get("amount_decimal"))
    if amount in (None, ""):
        raise invalid("Missing required param: amount.", param="amount", code="parameter_missing")
    unit_amount = as_int(amount, "amount", minimum=0)
    given = required(params, "product")
    if isinstance(given, dict):
        product = create_product_op(request, given)
    else:
        product = request.get("product", str(given), param="product")
    plan_id = optional_str(params.get("id")) or new_id("plan")
    if plan_id in request.account.objects:
        raise StripeError(400, "Plan already exists.", param="id", code="resource_already_exists")
    price: Obj = {
        "id": plan_id,
        "object": "price",
        "active": as_bool(params.get("active", True), "active"),
        "billing_scheme": "per_unit",
        "created": request.now(),
        "currency": currency,
        "custom_unit_amount": None,
        "livemode": False,
        "lookup_key": None,
        "metadata": apply_metadata({}, params.get("metadata")),
        "nickname": optional_str(params.get("nickname")),
        "product": product["id"],
        "recurring": recurring,
        "tax_behavior": "unspecified",
        "tiers_mode": None,
        "transform_quantity": None,
        "type": "recurring",
        "unit_amount": unit_amount,
        "unit_amount_decimal": str(unit_amount),
    }
    request.account.add(price)
    request.emit("price.created", price)
    plan = plan_of(price)
    request.emit("plan.created", plan)
    return plan


def retrieve_plan(request: Request) -> Obj:
    return plan_of(_recurring_price(request, request.path_params["id"]))


def update_plan(request: Request) -> Obj:
    price = _recurring_price(request, request.path_params["id"])
    params = request.params
    before = plan_of(price)
    if "active" in params:
        price["active"] = as_bool(params["active"], "active")
    if "nickname" in params:
        price["nickname"] = optional_str(params["nickname"])
    if "metadata" in params:
        price["metadata"] = apply_metadata(price["metadata"], params["metadata"])
    plan = plan_of(price)
    changed = previous_attributes(before, plan)
    if changed:
        request.emit("plan.updated", plan, changed)
        request.emit("price.updated", price, changed)
    return plan


def delete_plan(request: Request) -> Obj:
    price = _recurring_price(request, request.path_params["id"])
    plan = plan_of(price)
    price["active"] = False
    price["deleted"] = True
    request.emit("plan.deleted", plan)
    return {"id": plan["id"], "object": "plan", "deleted": True}


def list_plans(request: Request) -> Obj:
    params = request.params
    active = params.get("active")
    product = params.get("product")
    wanted = None if active in (None, "") else as_bool(active, "active")
    plans = [
        plan_of(price)
        for price in request.account.all("price")
        if price.get("recurring") and not price.get("deleted")
    ]
    return list_object(
        request,
        plans,
        "/v1/plans",
        lambda p: wanted in (None, p["active"]) and product in (None, p["product"]),
    )


def legacy_params(method: str, path: str, params: dict[str, Any]) -> dict[str, Any]:
    """Subscription parameters naming ``plan`` (the legacy spelling) as ``price``:
    ``items[n][plan]``, a top-level ``plan`` (with ``quantity``), ``plan`` on
    ``/v1/subscription_items``."""
    if method != "POST" or not (
        path.startswith("/v1/subscriptions") or path.startswith("/v1/subscription_items")
    ):
        return params
    params = copy(params)
    items = params.get("items")
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict) and "plan" in item and "price" not in item:
                item["price"] = item.pop("plan")
    if "plan" in params and "price" not in params:
        plan = params.pop("plan")
        if path.startswith("/v1/subscription_items"):
            params["price"] = plan
        elif "items" not in params:
            entry: dict[str, Any] = {"price": plan}
            if "quantity" in params:
                entry["quantity"] = params.pop("quantity")
            params["items"] = [entry]
    return params


#: This module's endpoints; ``_app.build_router`` puts every module's table together.
ROUTES: tuple[Endpoint, ...] = (
    Endpoint("POST", "/v1/plans", create_plan),
    Endpoint("GET", "/v1/plans", list_plans),
    Endpoint("GET", "/v1/plans/{id}", retrieve_plan),
    Endpoint("POST", "/v1/plans/{id}", update_plan),
    Endpoint("DELETE", "/v1/plans/{id}", delete_plan),
)
