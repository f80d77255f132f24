"""Billing Meters and meter events: the usage of metered prices.

A meter (``POST /v1/billing/meters``) names an ``event_name`` and how its
events add up (``default_aggregation[formula]``: ``sum``, ``count`` or
``last``). ``POST /v1/billing/meter_events`` records usage for a customer
(``payload[stripe_customer_id]``, ``payload[value]``) at ``timestamp``
(default: now on the customer's test clock, else the sandbox clock); an
``identifier`` is taken once. A recurring price with
``recurring[usage_type]=metered`` and ``recurring[meter]`` bills the usage of
the period that ended at each renewal (``_billing.cycle_invoice``).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from stripeline_sandbox._billing_settings import billing_now
from stripeline_sandbox._errors import invalid
from stripeline_sandbox._ids import new_id, random_part
from stripeline_sandbox._lists import list_object
from stripeline_sandbox._objects import copy
from stripeline_sandbox._routes import Call, Endpoint, Request, as_int, required
from stripeline_sandbox._state import Obj

NOUN = "billing.meter"
FORMULAS = ("sum", "count", "last")
#: Usage kept per account: (meter id, customer, timestamp, value, identifier).
_USAGE = "__meter_usage__"


def _usage(call: Call) -> list[tuple[str, str, int, Decimal, str]]:
    found: list[tuple[str, str, int, Decimal, str]] = call.account.hidden(_USAGE).setdefault(
        "events", []
    )
    return found


def create_meter(request: Request) -> Obj:
    params = request.params
    event_name = str(required(params, "event_name"))
    display_name = str(required(params, "display_name"))
    aggregation = params.get("default_aggregation")
    formula = str((aggregation or {}).get("formula") or "") if isinstance(aggregation, dict) else ""
    if formula not in FORMULAS:
        raise invalid(
            "default_aggregation[formula] must be one of " + ", ".join(FORMULAS),
            param="default_aggregation[formula]",
        )
    for other in request.account.all(NOUN):
        if other["event_name"] == event_name and other["status"] == "active":
            raise invalid(
                f"An active meter with event_name '{event_name}' already exists.",
                param="event_name",
            )
    given_mapping = params.get("customer_mapping")
    mapping: dict[str, Any] = given_mapping if isinstance(given_mapping, dict) else {}
    given_settings = params.get("value_settings")
    settings: dict[str, Any] = given_settings if isinstance(given_settings, dict) else {}
    now = request.now()
    meter: Obj = {
        "id": new_id("mtr"),
        "object": NOUN,
        "created": now,
        "customer_mapping": {
            "event_payload_key": str(mapping.get("event_payload_key") or "stripe_customer_id"),
            "type": "by_id",
        },
        "default_aggregation": {"formula": formula},
        "display_name": display_name,
        "event_name": event_name,
        "event_time_window": params.get("event_time_window"),
        "livemode": False,
        "status": "active",
        "status_transitions": {"deactivated_at": None},
        "updated": now,
        "value_settings": {"event_payload_key": str(settings.get("event_payload_key") or "value")},
    }
    request.account.add(meter)
    return meter


def retrieve_meter(request: Request) -> Obj:
    return request.get(NOUN, request.path_params["id"], noun="billing meter")


def list_meters(request: Request) -> Obj:
    status = request.params.get("status")

    def keep(meter: Obj) -> bool:
        return status in (None, "", meter["status"])

    return list_object(request, request.account.all(NOUN), "/v1/billing/meters", keep)


def _set_status(request: Request, status: str) -> Obj:
    meter = request.get(NOUN, request.path_params["id"], noun="billing meter")
    meter["status"] = status
    meter["updated"] = request.now()
    meter["status_transitions"]["deactivated_at"] = request.now() if status == "inactive" else None
    return meter


def deactivate_meter(request: Request) -> Obj:
    return _set_status(request, "inactive")


def reactivate_meter(request: Request) -> Obj:
    return _set_status(request, "active")


def create_meter_event(request: Request) -> Obj:
    params = request.params
    event_name = str(required(params, "event_name"))
    meter = next((m for m in request.account.all(NOUN) if m["event_name"] == event_name), None)
    if meter is None or meter["status"] != "active":
        raise invalid(f"No active meter for event_name '{event_name}'.", param="event_name")
    payload = params.get("payload")
    if not isinstance(payload, dict):
        raise invalid("Missing required param: payload.", param="payload")
    customer_key = meter["customer_mapping"]["event_payload_key"]
    value_key = meter["value_settings"]["event_payload_key"]
    customer = request.get(
        "customer", str(required(payload, customer_key)), param=f"payload[{customer_key}]"
    )
    raw = payload.get(
        value_key, "1" if meter["default_aggregation"]["formula"] == "count" else None
    )
    try:
        value = Decimal(str(raw))
    except (InvalidOperation, ValueError):
        raise invalid(
            f"payload[{value_key}] must be a number.", param=f"payload[{value_key}]"
        ) from None
    identifier = str(params.get("identifier") or random_part(20))
    usage = _usage(request)
    if any(entry[4] == identifier for entry in usage):
        raise invalid(f"An event already exists with identifier {identifier}.", param="identifier")
    now = billing_now(request, customer["test_clock"])
    timestamp = as_int(params["timestamp"], "timestamp") if params.get("timestamp") else now
    usage.append((meter["id"], customer["id"], timestamp, value, identifier))
    return {
        "object": "billing.meter_event",
        "created": now,
        "event_name": event_name,
        "identifier": identifier,
        "livemode": False,
        "payload": copy(payload),
        "timestamp": timestamp,
    }


def metered(price: Obj) -> bool:
    """A price billed in arrears from a meter's usage."""
    return bool((price.get("recurring") or {}).get("usage_type") == "metered")


def usage_of(call: Call, price: Obj, customer_id: str, start: int, end: int) -> int:
    """The meter usage of ``customer_id`` in ``[start, end)`` for a metered price."""
    meter_id = (price.get("recurring") or {}).get("meter")
    meter = call.account.find(NOUN, str(meter_id)) if meter_id else None
    if meter is None:
        return 0
    values = [
        value
        for mid, cid, moment, value, _ in _usage(call)
        if mid == meter["id"] and cid == customer_id and start <= moment < end
    ]
    formula = meter["default_aggregation"]["formula"]
    if formula == "count":
        total = Decimal(len(values))
    elif formula == "last":
        total = values[-1] if values else Decimal(0)
    else:
        total = sum(values, Decimal(0))
    return int(total)


def meter_for_price(call: Call, given: Any) -> str:
    """The meter a metered price names (``recurring[meter]``).

    Raises:
        StripeError: 400 when it is missing or unknown.
    """
    if not given:
        raise invalid(
            "Metered prices must be backed by a meter: set recurring[meter].",
            param="recurring[meter]",
        )
    return str(call.get(NOUN, str(given), noun="billing meter", param="recurring[meter]")["id"])


#: This module's endpoints; ``_app.build_router`` puts every module's table together.
ROUTES: tuple[Endpoint, ...] = (
    Endpoint("POST", "/v1/billing/meters", create_meter),
    Endpoint("GET", "/v1/billing/meters", list_meters),
    Endpoint("GET", "/v1/billing/meters/{id}", retrieve_meter),
    Endpoint("POST", "/v1/billing/meters/{id}/deactivate", deactivate_meter),
    Endpoint("POST", "/v1/billing/meters/{id}/reactivate", reactivate_meter),
    Endpoint("POST", "/v1/billing/meter_events", create_meter_event),
)
