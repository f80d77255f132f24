"""Prices: one-time and recurring (licensed, or metered from a Billing Meter),
``lookup_key``, archive with ``active=false``."""

from __future__ import annotations

from typing import Any

from stripeline_sandbox._errors import invalid
from stripeline_sandbox._ids import new_id
from stripeline_sandbox._lists import list_object
from stripeline_sandbox._meters import meter_for_price
from stripeline_sandbox._objects import apply_metadata, copy, previous_attributes
from stripeline_sandbox._products import create_product_op
from stripeline_sandbox._routes import Call, Endpoint, Request, as_bool, as_int, optional_str
from stripeline_sandbox._state import Obj

NOUN = "price"
INTERVALS = ("day", "week", "month", "year")
#: Stripe's limit: a recurring interval spans at most three years.
MAX_INTERVAL_DAYS = 3 * 365


def _recurring(call: Call, given: Any) -> Obj:
    if not isinstance(given, dict):
        raise invalid("Invalid hash", param="recurring")
    interval = str(given.get("interval") or "")
    if interval not in INTERVALS:
        raise invalid(
            f"Invalid recurring[interval]: must be one of {', '.join(INTERVALS)}",
            param="recurring[interval]",
        )
    count = as_int(given.get("interval_count", 1), "recurring[interval_count]", minimum=1)
    days = {"day": 1, "week": 7, "month": 31, "year": 366}[interval] * count
    if days > MAX_INTERVAL_DAYS + 3:
        raise invalid(
            "The maximum billing interval is three years.", param="recurring[interval_count]"
        )
    usage_type = str(given.get("usage_type") or "licensed")
    if usage_type not in ("licensed", "metered"):
        raise invalid(
            "recurring[usage_type] must be licensed or metered.", param="recurring[usage_type]"
        )
    meter = meter_for_price(call, given.get("meter")) if usage_type == "metered" else None
    trial = given.get("trial_period_days")
    return {
        "interval": interval,
        "interval_count": count,
        "meter": meter,
        "usage_type": usage_type,
        "trial_period_days": (
            None if trial in (None, "") else as_int(trial, "recurring[trial_period_days]")
        ),
    }


def _take_lookup_key(call: Call, price: Obj, lookup_key: str | None, transfer: bool) -> None:
    """Give ``price`` ``lookup_key``; another price holding it loses it if ``transfer``."""
    if lookup_key is not None:
        for other in call.account.all(NOUN):
            if other["lookup_key"] == lookup_key and other["id"] != price["id"]:
                if not transfer:
                    raise invalid(
                        f"A price (`{other['id']}`) already uses that lookup key.",
                        param="lookup_key",
                    )
                before = copy(other)
                other["lookup_key"] = None
                call.emit("price.updated", other, previous_attributes(before, other))
    price["lookup_key"] = lookup_key


def create_price(request: Request) -> Obj:
    params = request.params
    currency = str(request.param("currency")).lower()
    if params.get("product_data"):
        product = create_product_op(request, params["product_data"])
    else:
        product = request.get("product", str(request.param("product")), param="product")
    if "unit_amount" in params:
        unit_amount = as_int(params["unit_amount"], "unit_amount", minimum=0)
    elif params.get("unit_amount_decimal"):
        unit_amount = round(float(params["unit_amount_decimal"]))
    else:
        raise invalid("Missing required param: unit_amount.", param="unit_amount")
    recurring = _recurring(request, params["recurring"]) if params.get("recurring") else None
    price: Obj = {
        "id": new_id("price"),
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
        "tax_behavior": str(params.get("tax_behavior") or "unspecified"),
        "tiers_mode": None,
        "transform_quantity": None,
        "type": "recurring" if recurring else "one_time",
        "unit_amount": unit_amount,
        "unit_amount_decimal": str(unit_amount),
    }
    transfer = as_bool(params.get("transfer_lookup_key", False), "transfer_lookup_key")
    _take_lookup_key(request, price, optional_str(params.get("lookup_key")), transfer)
    request.account.add(price)
    request.emit("price.created", price)
    return price


def retrieve_price(request: Request) -> Obj:
    return request.get(NOUN, request.path_params["id"])


def update_price(request: Request) -> Obj:
    price = request.get(NOUN, request.path_params["id"])
    params = request.params
    before = copy(price)
    if "active" in params:
        price["active"] = as_bool(params["active"], "active")
    if "nickname" in params:
        price["nickname"] = optional_str(params["nickname"])
    if "tax_behavior" in params:
        price["tax_behavior"] = str(params["tax_behavior"])
    if "lookup_key" in params:
        transfer = as_bool(params.get("transfer_lookup_key", False), "transfer_lookup_key")
        _take_lookup_key(request, price, optional_str(params["lookup_key"]), transfer)
    price["metadata"] = apply_metadata(price["metadata"], params.get("metadata"))
    changed = previous_attributes(before, price)
    if changed:
        request.emit("price.updated", price, changed)
    return price


def list_prices(request: Request) -> Obj:
    params = request.params
    active = params.get("active")
    lookup_keys = params.get("lookup_keys")
    keys = set(lookup_keys if isinstance(lookup_keys, list) else [lookup_keys])
    given = params.get("recurring")
    recurring: dict[str, Any] = given if isinstance(given, dict) else {}

    def keep(price: Obj) -> bool:
        checks = [
            active is None or price["active"] == as_bool(active, "active"),
            not lookup_keys or price["lookup_key"] in keys,
            params.get("product") in (None, price["product"]),
            params.get("type") in (None, price["type"]),
            params.get("currency") in (None, price["currency"]),
            recurring.get("interval") in (None, (price["recurring"] or {}).get("interval")),
        ]
        return all(checks)

    return list_object(request, request.account.all(NOUN), "/v1/prices", keep)


def plan_of(price: Obj) -> Obj:
    """The legacy ``plan`` view of a recurring price (subscription items carry both)."""
    recurring = price["recurring"] or {}
    return {
        "id": price["id"],
        "object": "plan",
        "active": price["active"],
        "amount": price["unit_amount"],
        "amount_decimal": price["unit_amount_decimal"],
        "billing_scheme": price["billing_scheme"],
        "created": price["created"],
        "currency": price["currency"],
        "interval": recurring.get("interval"),
        "interval_count": recurring.get("interval_count"),
        "livemode": False,
        "metadata": copy(price["metadata"]),
        "meter": recurring.get("meter"),
        "nickname": price["nickname"],
        "product": price["product"],
        "tiers_mode": None,
        "transform_usage": None,
        "trial_period_days": recurring.get("trial_period_days"),
        "usage_type": recurring.get("usage_type", "licensed"),
    }


#: This module's endpoints; ``_app.build_router`` puts every module's table together.
ROUTES: tuple[Endpoint, ...] = (
    Endpoint("POST", "/v1/prices", create_price),
    Endpoint("GET", "/v1/prices/{id}", retrieve_price),
    Endpoint("POST", "/v1/prices/{id}", update_price),
    Endpoint("GET", "/v1/prices", list_prices),
)
