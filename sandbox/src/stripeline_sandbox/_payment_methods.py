"""PaymentMethods: test ids (``pm_card_visa``…), raw test cards, attach and detach.

Cards, and US bank accounts (``us_bank_account``, an asynchronous payment
method: see ``_bank_accounts``).
"""

from __future__ import annotations

import hashlib
from typing import Any

from stripeline_sandbox._bank_accounts import (
    BANK_NAME,
    TestBankAccount,
    bank_account_for_number,
    test_bank_account_for,
)
from stripeline_sandbox._cards import (
    DECLINE_MESSAGES,
    TestCard,
    card_for_number,
    luhn_ok,
    test_card_for,
)
from stripeline_sandbox._errors import StripeError, invalid, no_such
from stripeline_sandbox._ids import new_id
from stripeline_sandbox._lists import list_object
from stripeline_sandbox._objects import apply_metadata, copy, previous_attributes
from stripeline_sandbox._routes import Call, Endpoint, Request, as_int, optional_str
from stripeline_sandbox._state import Obj

NOUN = "PaymentMethod"
_ADDRESS_FIELDS = ("city", "country", "line1", "line2", "postal_code", "state")


def card_of(call: Call, payment_method: Obj) -> TestCard:
    card = call.account.hidden(payment_method["id"]).get("card")
    if not isinstance(card, TestCard):  # every card PaymentMethod is made with one
        if payment_method["type"] != "card":
            raise invalid(
                f"The sandbox only emulates card PaymentMethods here, not {payment_method['type']}.",
                param="payment_method",
            )
        raise TypeError(f"{payment_method['id']} has no test card")
    return card


def bank_account_of(call: Call, payment_method: Obj) -> TestBankAccount | None:
    """The test bank account of a ``us_bank_account`` PaymentMethod (None for cards)."""
    found = call.account.hidden(payment_method["id"]).get("bank_account")
    return found if isinstance(found, TestBankAccount) else None


def card_error(
    card: TestCard, *, decline: tuple[str, str] | None = None, **extra: Any
) -> StripeError:
    """Stripe's 402 ``card_error`` for a declined card (saved for idempotency)."""
    code, decline_code = decline or card.decline or ("card_declined", "generic_decline")
    return StripeError(
        402,
        DECLINE_MESSAGES.get(decline_code, "Your card was declined."),
        type="card_error",
        code=code,
        decline_code=decline_code,
        save_idempotent=True,
        **extra,
    )


def _address(given: Any) -> Obj:
    given = given if isinstance(given, dict) else {}
    return {name: optional_str(given.get(name)) for name in _ADDRESS_FIELDS}


def _billing_details(given: Any, current: Obj | None = None) -> Obj:
    details = current or {
        "address": _address(None),
        "email": None,
        "name": None,
        "phone": None,
        "tax_id": None,
    }
    if isinstance(given, dict):
        for name in ("email", "name", "phone"):
            if name in given:
                details[name] = optional_str(given[name])
        if "address" in given:
            details["address"] = _address(given["address"])
    return details


def new_card_payment_method(
    call: Call,
    card: TestCard,
    *,
    exp_month: int = 12,
    exp_year: int | None = None,
    fingerprint_of: str = "",
    billing_details: Any = None,
    metadata: Any = None,
) -> Obj:
    """Store a new card PaymentMethod that behaves as ``card``."""
    year = exp_year or 2034
    fingerprint = hashlib.sha256((fingerprint_of or card.last4 + card.brand).encode()).hexdigest()
    payment_method: Obj = {
        "id": new_id("pm"),
        "object": "payment_method",
        "allow_redisplay": "unspecified",
        "billing_details": _billing_details(billing_details),
        "card": {
            "brand": card.brand,
            "checks": {
                "address_line1_check": card.checks[0],
                "address_postal_code_check": card.checks[1],
                "cvc_check": card.checks[2],
            },
            "country": card.country,
            "display_brand": card.brand,
            "exp_month": exp_month,
            "exp_year": year,
            "fingerprint": fingerprint[:16],
            "funding": card.funding,
            "generated_from": None,
            "last4": card.last4,
            "networks": {"available": [card.brand], "preferred": None},
            "regulated_status": "unregulated",
            "three_d_secure_usage": {"supported": True},
            "wallet": None,
        },
        "created": call.now(),
        "customer": None,
        "customer_account": None,
        "livemode": False,
        "metadata": apply_metadata({}, metadata),
        "type": "card",
    }
    call.account.add(payment_method)
    call.account.hidden(payment_method["id"])["card"] = card
    return payment_method


def new_bank_payment_method(
    call: Call,
    bank_account: TestBankAccount,
    *,
    routing_number: str = "110000000",
    account_holder_type: str | None = "individual",
    account_type: str | None = "checking",
    billing_details: Any = None,
    metadata: Any = None,
) -> Obj:
    """Store a new ``us_bank_account`` PaymentMethod that behaves as ``bank_account``."""
    fingerprint = hashlib.sha256(
        (routing_number + bank_account.account_number).encode()
    ).hexdigest()
    payment_method: Obj = {
        "id": new_id("pm"),
        "object": "payment_method",
        "allow_redisplay": "unspecified",
        "billing_details": _billing_details(billing_details),
        "created": call.now(),
        "customer": None,
        "customer_account": None,
        "livemode": False,
        "metadata": apply_metadata({}, metadata),
        "type": "us_bank_account",
        "us_bank_account": {
            "account_holder_type": account_holder_type,
            "account_type": account_type,
            "bank_name": BANK_NAME,
            "financial_connections_account": None,
            "fingerprint": fingerprint[:16],
            "last4": bank_account.last4,
            "networks": {"preferred": "ach", "supported": ["ach"]},
            "routing_number": routing_number,
            "status_details": {},
        },
    }
    call.account.add(payment_method)
    call.account.hidden(payment_method["id"])["bank_account"] = bank_account
    return payment_method


def _create_bank_payment_method(request: Call, params: dict[str, Any]) -> Obj:
    given = params.get("us_bank_account")
    if not isinstance(given, dict):
        raise invalid("Missing required param: us_bank_account.", param="us_bank_account")
    routing = str(given.get("routing_number") or "")
    number = str(given.get("account_number") or "")
    if len(routing) != 9 or not routing.isdigit():
        raise invalid("Routing number must have 9 digits.", param="us_bank_account[routing_number]")
    if not 4 <= len(number) <= 17 or not number.isdigit():
        raise invalid(
            "Account number must have between 4 and 17 digits.",
            param="us_bank_account[account_number]",
        )
    holder = optional_str(given.get("account_holder_type")) or "individual"
    if holder not in ("individual", "company"):
        raise invalid(
            f"Invalid account_holder_type: {holder}",
            param="us_bank_account[account_holder_type]",
        )
    kind = optional_str(given.get("account_type")) or "checking"
    if kind not in ("checking", "savings"):
        raise invalid(f"Invalid account_type: {kind}", param="us_bank_account[account_type]")
    billing = params.get("billing_details")
    if not (isinstance(billing, dict) and billing.get("name")):
        raise invalid(
            "Missing required param: billing_details[name].", param="billing_details[name]"
        )
    return new_bank_payment_method(
        request,
        bank_account_for_number(number),
        routing_number=routing,
        account_holder_type=holder,
        account_type=kind,
        billing_details=billing,
        metadata=params.get("metadata"),
    )


def resolve(call: Call, reference: str, param: str = "payment_method") -> Obj:
    """An existing PaymentMethod, or a new one for a test id such as ``pm_card_visa``.

    Raises:
        StripeError: 404 for an unknown id.
    """
    existing = call.account.find("payment_method", reference)
    if existing is not None:
        return existing
    card = test_card_for(reference)
    if card is None:
        bank_account = test_bank_account_for(reference)
        if bank_account is None:
            raise no_such(NOUN, reference, param)
        return new_bank_payment_method(call, bank_account, billing_details={"name": "Jenny Rosen"})
    return new_card_payment_method(call, card, fingerprint_of=reference)


def attach(call: Call, payment_method: Obj, customer: Obj) -> None:
    """Attach to ``customer``; Stripe checks the card, so declining cards fail here.

    Raises:
        StripeError: 400 if attached to another customer, 402 for a declining card.
    """
    if payment_method["customer"] == customer["id"]:
        return
    if payment_method["customer"] is not None:
        raise invalid(
            "The payment method you provided has already been attached to a customer.",
            param="payment_method",
        )
    if payment_method["type"] == "card":
        card = card_of(call, payment_method)
        if card.declines_on_attach:
            raise card_error(card, param="")
    payment_method["customer"] = customer["id"]
    call.emit("payment_method.attached", payment_method)


def create_payment_method(request: Request) -> Obj:
    return create_payment_method_op(request, request.params)


def payment_method_from(call: Call, params: dict[str, Any]) -> Obj | None:
    """The PaymentMethod a confirm names: ``payment_method`` (an id or test id), or
    a new one made from ``payment_method_data`` (as Stripe.js confirms); None if neither.

    Raises:
        StripeError: 404 for an unknown id, 400/402 for refused ``payment_method_data``.
    """
    reference = params.get("payment_method")
    if reference:
        return resolve(call, str(reference))
    data = params.get("payment_method_data")
    if isinstance(data, dict):
        try:
            return create_payment_method_op(call, data)
        except StripeError as error:
            if error.param:
                head, bracket, rest = error.param.partition("[")
                error.param = f"payment_method_data[{head}]{bracket}{rest}"
            raise
    return None


def create_payment_method_op(request: Call, params: dict[str, Any]) -> Obj:
    """Create a PaymentMethod from ``POST /v1/payment_methods`` parameters."""
    if params.get("type", "card") == "us_bank_account":
        return _create_bank_payment_method(request, params)
    if params.get("type", "card") != "card":
        raise invalid(
            "The sandbox only emulates card and us_bank_account PaymentMethods.", param="type"
        )
    card_params = params.get("card")
    if not isinstance(card_params, dict):
        raise invalid("Missing required param: card.", param="card")
    if "token" in card_params:
        card = test_card_for(str(card_params["token"]))
        if card is None:
            raise no_such("token", str(card_params["token"]), "card[token]")
        return new_card_payment_method(
            request,
            card,
            fingerprint_of=str(card_params["token"]),
            billing_details=params.get("billing_details"),
            metadata=params.get("metadata"),
        )
    number = str(card_params.get("number", "")).replace(" ", "")
    if not luhn_ok(number):
        raise StripeError(
            402, "Your card number is incorrect.", type="card_error", code="incorrect_number",
            param="card[number]",
        )  # fmt: skip
    exp_month = as_int(card_params.get("exp_month"), "card[exp_month]")
    exp_year = as_int(card_params.get("exp_year"), "card[exp_year]")
    if not 1 <= exp_month <= 12:
        raise StripeError(
            402, "Your card's expiration month is invalid.", type="card_error",
            code="invalid_expiry_month", param="card[exp_month]",
        )  # fmt: skip
    if exp_year < 100:
        exp_year += 2000
    if exp_year < 2000 or exp_year > 2100:
        raise StripeError(
            402, "Your card's expiration year is invalid.", type="card_error",
            code="invalid_expiry_year", param="card[exp_year]",
        )  # fmt: skip
    return new_card_payment_method(
        request,
        card_for_number(number),
        exp_month=exp_month,
        exp_year=exp_year,
        fingerprint_of=number,
        billing_details=params.get("billing_details"),
        metadata=params.get("metadata"),
    )


def retrieve_payment_method(request: Request) -> Obj:
    return resolve(request, request.path_params["id"], "id")


def update_payment_method(request: Request) -> Obj:
    payment_method = request.get("payment_method", request.path_params["id"], NOUN)
    before = copy(payment_method)
    params = request.params
    payment_method["metadata"] = apply_metadata(payment_method["metadata"], params.get("metadata"))
    if "billing_details" in params:
        payment_method["billing_details"] = _billing_details(
            params["billing_details"], payment_method["billing_details"]
        )
    card_params = params.get("card")
    if isinstance(card_params, dict):
        for name in ("exp_month", "exp_year"):
            if name in card_params:
                payment_method["card"][name] = as_int(card_params[name], f"card[{name}]")
    changed = previous_attributes(before, payment_method)
    if changed:
        request.emit("payment_method.updated", payment_method, changed)
    return payment_method


def attach_payment_method(request: Request) -> Obj:
    payment_method = resolve(request, request.path_params["id"], "id")
    customer = request.get("customer", str(request.param("customer")), param="customer")
    attach(request, payment_method, customer)
    return payment_method


def detach_payment_method(request: Request) -> Obj:
    payment_method = request.get("payment_method", request.path_params["id"], NOUN)
    customer_id = payment_method["customer"]
    if customer_id is None:
        raise invalid(
            "The payment method you provided is not attached to a customer so detachment is impossible."
        )
    payment_method["customer"] = None
    previous = {"customer": customer_id}
    request.emit("payment_method.detached", payment_method, previous)
    customer = request.account.find("customer", customer_id)
    if customer is not None:
        settings = customer["invoice_settings"]
        if settings.get("default_payment_method") == payment_method["id"]:
            settings["default_payment_method"] = None
            request.emit(
                "customer.updated",
                customer,
                {"invoice_settings": {"default_payment_method": payment_method["id"]}},
            )
    return payment_method


def _type_filter(request: Request) -> Any:
    wanted = request.params.get("type")
    return lambda pm: wanted in (None, "", pm["type"])


def list_payment_methods(request: Request) -> Obj:
    customer = request.params.get("customer")
    if customer:
        request.get("customer", str(customer), param="customer")
    match = _type_filter(request)
    return list_object(
        request,
        request.account.all("payment_method"),
        "/v1/payment_methods",
        lambda pm: bool(customer) and pm["customer"] == customer and match(pm),
    )


def list_customer_payment_methods(request: Request) -> Obj:
    customer = request.get("customer", request.path_params["customer"])
    match = _type_filter(request)
    return list_object(
        request,
        request.account.all("payment_method"),
        f"/v1/customers/{customer['id']}/payment_methods",
        lambda pm: pm["customer"] == customer["id"] and match(pm),
    )


def retrieve_customer_payment_method(request: Request) -> Obj:
    customer = request.get("customer", request.path_params["customer"])
    payment_method = request.get("payment_method", request.path_params["id"], NOUN)
    if payment_method["customer"] != customer["id"]:
        raise no_such(NOUN, payment_method["id"])
    return payment_method


#: This module's endpoints; ``_app.build_router`` puts every module's table together.
ROUTES: tuple[Endpoint, ...] = (
    Endpoint("POST", "/v1/payment_methods", create_payment_method, publishable=True),
    Endpoint("GET", "/v1/payment_methods/{id}", retrieve_payment_method),
    Endpoint("POST", "/v1/payment_methods/{id}", update_payment_method),
    Endpoint("POST", "/v1/payment_methods/{id}/attach", attach_payment_method),
    Endpoint("POST", "/v1/payment_methods/{id}/detach", detach_payment_method),
    Endpoint("GET", "/v1/payment_methods", list_payment_methods),
    Endpoint("GET", "/v1/customers/{customer}/payment_methods", list_customer_payment_methods),
    Endpoint(
        "GET", "/v1/customers/{customer}/payment_methods/{id}", retrieve_customer_payment_method
    ),
)
