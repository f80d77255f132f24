"""Customers: create, retrieve, update, delete, list, search."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from typing import Any

from stripeline_sandbox._errors import StripeError, invalid
from stripeline_sandbox._ids import new_id
from stripeline_sandbox._lists import list_object
from stripeline_sandbox._objects import apply_metadata, copy, includable, previous_attributes
from stripeline_sandbox._payment_methods import attach, resolve
from stripeline_sandbox._routes import Call, Endpoint, Request, as_int, optional_str
from stripeline_sandbox._state import Account, Obj

_TEXT_FIELDS = ("description", "email", "name", "phone")
_ADDRESS_FIELDS = ("city", "country", "line1", "line2", "postal_code", "state")


def _address(given: Any) -> Obj | None:
    if not isinstance(given, dict):
        return None
    return {name: optional_str(given.get(name)) for name in _ADDRESS_FIELDS}


def _apply(call: Call, customer: Obj, params: dict[str, Any]) -> None:
    """Apply create/update parameters shared by both calls."""
    for name in _TEXT_FIELDS:
        if name in params:
            customer[name] = optional_str(params[name])
    if "address" in params:
        customer["address"] = _address(params["address"])
    if "shipping" in params:
        shipping = params["shipping"]
        customer["shipping"] = (
            {
                "address": _address(shipping.get("address")) or _address({}),
                "name": optional_str(shipping.get("name")),
                "phone": optional_str(shipping.get("phone")),
            }
            if isinstance(shipping, dict)
            else None
        )
    if "preferred_locales" in params:
        locales = params["preferred_locales"]
        customer["preferred_locales"] = list(locales) if isinstance(locales, list) else []
    if "balance" in params:
        customer["balance"] = as_int(params["balance"], "balance")
    if "tax_exempt" in params:
        customer["tax_exempt"] = str(params["tax_exempt"] or "none")
    customer["metadata"] = apply_metadata(customer["metadata"], params.get("metadata"))
    settings = params.get("invoice_settings")
    if isinstance(settings, dict) and "default_payment_method" in settings:
        default = optional_str(settings["default_payment_method"])
        if default is not None:
            payment_method = call.account.find("payment_method", default)
            if payment_method is None or payment_method["customer"] != customer["id"]:
                raise invalid(
                    f"The customer does not have a payment method with the ID {default}. "
                    "The payment method must be attached to the customer.",
                    param="invoice_settings[default_payment_method]",
                )
        customer["invoice_settings"]["default_payment_method"] = default
    if optional_str(params.get("source")) is not None:
        from stripeline_sandbox._legacy_charges import add_source

        # The legacy card source: attached, and the customer's default_source.
        add_source(call, customer, str(params["source"]), make_default=True)


def create_customer(request: Request) -> Obj:
    return create_customer_op(request, request.params)


def create_customer_op(call: Call, params: dict[str, Any]) -> Obj:
    """A customer from ``POST /v1/customers`` parameters; with ``test_clock`` it
    lives at that test clock's time."""
    clock_id = optional_str(params.get("test_clock"))
    clock = (
        call.get("test_helpers.test_clock", clock_id, "test_clock", param="test_clock")
        if clock_id
        else None
    )
    customer: Obj = {
        "id": new_id("cus"),
        "object": "customer",
        "address": None,
        "balance": 0,
        "created": int(clock["frozen_time"]) if clock else call.now(),
        "currency": None,
        "customer_account": None,
        "default_source": None,
        "delinquent": False,
        "description": None,
        "discount": None,
        "email": None,
        "invoice_prefix": secrets.token_hex(4).upper(),
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": None,
            "footer": None,
            "rendering_options": None,
        },
        "livemode": False,
        "metadata": {},
        "name": None,
        "next_invoice_sequence": 1,
        "phone": None,
        "preferred_locales": [],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": clock["id"] if clock else None,
    }
    reference = optional_str(params.get("payment_method"))
    payment_method = resolve(call, reference) if reference else None
    settings = params.get("invoice_settings")
    if payment_method is not None and isinstance(settings, dict):
        if settings.get("default_payment_method") == reference:
            # A test id made the default in the same call means the new PaymentMethod.
            settings["default_payment_method"] = payment_method["id"]
    call.account.add(customer)
    try:
        if payment_method is not None:
            attach(call, payment_method, customer)
        _apply(call, customer, params)
    except StripeError:
        # Nothing of a refused create remains.
        call.account.remove(customer["id"])
        if payment_method is not None:
            payment_method["customer"] = None
        call.events.clear()
        raise
    call.events.insert(0, call.emit("customer.created", customer))
    call.events.pop()
    return customer


@includable("customer", "tax_ids")
def _included_tax_ids(account: Account, customer: Obj) -> tuple[list[Obj], str]:
    """``expand[]=tax_ids`` on a customer: empty (the sandbox keeps no tax ids)."""
    return [], f"/v1/customers/{customer['id']}/tax_ids"


def retrieve_customer(request: Request) -> Obj:
    object_id = request.path_params["id"]
    customer = request.account.find("customer", object_id)
    if customer is not None and customer.get("deleted"):
        return {"id": object_id, "object": "customer", "deleted": True}
    return request.get("customer", object_id)


def update_customer(request: Request) -> Obj:
    customer = request.get("customer", request.path_params["id"])
    before = copy(customer)
    _apply(request, customer, request.params)
    changed = previous_attributes(before, customer)
    if changed:
        request.emit("customer.updated", customer, changed)
    return customer


def delete_customer(request: Request) -> Obj:
    customer = request.get("customer", request.path_params["id"])
    request.emit("customer.deleted", customer)
    customer["deleted"] = True
    return {"id": customer["id"], "object": "customer", "deleted": True}


def _live_customers(call: Call) -> list[Obj]:
    return [c for c in call.account.all("customer") if not c.get("deleted")]


def list_customers(request: Request) -> Obj:
    email = request.params.get("email")
    return list_object(
        request,
        _live_customers(request),
        "/v1/customers",
        lambda c: email is None or c["email"] == email,
    )


# -- search: Stripe's query language, the parts customers use -------------------

_CLAUSE = re.compile(
    r"""^(?P<negate>-)?(?P<field>metadata\[['"](?P<key>[^'"]+)['"]\]|\w+)\s*(?P<op>:|~|>=|<=|>|<)\s*(?P<value>'[^']*'|"[^"]*"|\S+)$"""
)
_SEARCHABLE = {"email", "name", "phone", "created", "metadata"}


def _clause(text: str) -> Callable[[Obj], bool]:
    m = _CLAUSE.match(text.strip())
    if not m:
        raise invalid(f"Invalid search query: {text!r}.", param="query")
    field, op, raw = m.group("field"), m.group("op"), m.group("value")
    value = raw[1:-1] if raw[:1] in "'\"" else raw
    name = "metadata" if m.group("key") else field
    if name not in _SEARCHABLE:
        raise invalid(f"Field '{field}' is not supported for search on customers.", param="query")

    def actual(customer: Obj) -> Any:
        if m.group("key"):
            return customer["metadata"].get(m.group("key"))
        return customer.get(name)

    def check(customer: Obj) -> bool:
        current = actual(customer)
        if op == ":":
            result = current is not None and str(current).lower() == value.lower()
        elif op == "~":
            result = current is not None and value.lower() in str(current).lower()
        else:
            number = int(value)
            result = (
                current is not None
                and {
                    ">": current > number,
                    "<": current < number,
                    ">=": current >= number,
                    "<=": current <= number,
                }[op]
            )
        return result != bool(m.group("negate"))

    return check


def _query(text: str) -> Callable[[Obj], bool]:
    if " AND " in text and " OR " in text:
        raise invalid("You cannot combine AND and OR in one search query.", param="query")
    joiner = " OR " if " OR " in text else " AND "
    clauses = [_clause(part) for part in text.split(joiner)]
    if joiner == " OR ":
        return lambda c: any(clause(c) for clause in clauses)
    return lambda c: all(clause(c) for clause in clauses)


def search_customers(request: Request) -> Obj:
    match = _query(str(request.param("query")))
    limit = as_int(request.params.get("limit", 10), "limit", minimum=1)
    found = [c for c in _live_customers(request) if match(c)]
    return {
        "object": "search_result",
        "data": found[:limit],
        "has_more": len(found) > limit,
        "next_page": None,
        "url": "/v1/customers/search",
    }


#: This module's endpoints; ``_app.build_router`` puts every module's table together.
ROUTES: tuple[Endpoint, ...] = (
    Endpoint("POST", "/v1/customers", create_customer),
    Endpoint("GET", "/v1/customers/{id}", retrieve_customer),
    Endpoint("POST", "/v1/customers/{id}", update_customer),
    Endpoint("DELETE", "/v1/customers/{id}", delete_customer),
    Endpoint("GET", "/v1/customers", list_customers),
    Endpoint("GET", "/v1/customers/search", search_customers),
)
