"""The legacy Charges API and card tokens, as older integrations still use them.

``POST /v1/charges`` with ``source`` (a test token such as ``tok_visa`` or
``tok_chargeDeclined``, or a ``tok_…`` made by ``POST /v1/tokens``) charges
the card directly, without a PaymentIntent: ``charge.succeeded`` (or a 402
card error with ``charge.failed``), ``capture=false`` to authorise only, then
``POST /v1/charges/{id}/capture`` (``charge.captured``); refunds go through
``POST /v1/refunds`` with ``charge``. The card is kept as a PaymentMethod with
a ``card_…`` id, shown as the charge's ``source`` (the legacy card object).
``transfer_data[destination]`` and ``application_fee_amount`` make it a
destination charge (``_connect``).
"""

from __future__ import annotations

from typing import Any

from stripeline_sandbox._balance_transactions import for_charge
from stripeline_sandbox._cards import TestCard, card_for_number, luhn_ok, test_card_for
from stripeline_sandbox._charges import new_charge
from stripeline_sandbox._disputes import after_card_charge
from stripeline_sandbox._errors import StripeError, invalid, no_such
from stripeline_sandbox._ids import new_id
from stripeline_sandbox._lists import list_object
from stripeline_sandbox._objects import apply_metadata, copy, includable, previous_attributes
from stripeline_sandbox._payment_methods import attach, card_error, new_card_payment_method
from stripeline_sandbox._routes import (
    Call,
    Endpoint,
    Request,
    as_bool,
    as_int,
    optional_str,
    required,
)
from stripeline_sandbox._state import Account, Obj

MINIMUM_AMOUNT = 50
#: The legacy card object's brand names.
BRANDS = {
    "visa": "Visa",
    "mastercard": "MasterCard",
    "amex": "American Express",
    "discover": "Discover",
}


def card_object(payment_method: Obj, card_id: str, customer: str | None = None) -> Obj:
    """The legacy ``card`` object (a charge's ``source``, a token's ``card``)."""
    card = payment_method["card"]
    address = payment_method["billing_details"]["address"]
    return {
        "id": card_id,
        "object": "card",
        "address_city": address["city"],
        "address_country": address["country"],
        "address_line1": address["line1"],
        "address_line1_check": None,
        "address_line2": address["line2"],
        "address_state": address["state"],
        "address_zip": address["postal_code"],
        "address_zip_check": None,
        "brand": BRANDS.get(card["brand"], "Unknown"),
        "country": card["country"],
        "customer": customer,
        "cvc_check": "pass",
        "dynamic_last4": None,
        "exp_month": card["exp_month"],
        "exp_year": card["exp_year"],
        "fingerprint": card["fingerprint"],
        "funding": card["funding"],
        "last4": card["last4"],
        "metadata": {},
        "name": payment_method["billing_details"]["name"],
        "networks": {"preferred": None},
        "regulated_status": None,
        "tokenization_method": None,
        "wallet": None,
    }


def _card_payment_method(call: Call, card: TestCard, fingerprint_of: str, **given: Any) -> Obj:
    """A card PaymentMethod with a ``card_…`` id (what a token's card becomes)."""
    payment_method = new_card_payment_method(call, card, fingerprint_of=fingerprint_of, **given)
    call.account.remove(payment_method["id"])
    hidden = call.account.internal.pop(payment_method["id"], {})
    payment_method["id"] = new_id("card")
    call.account.add(payment_method)
    call.account.internal[payment_method["id"]] = hidden
    return payment_method


# -- tokens -------------------------------------------------------------------


def create_token(request: Request) -> Obj:
    """``POST /v1/tokens`` with ``card[number|exp_month|exp_year|cvc]`` (Stripe.js,
    the publishable key) or ``card`` = a test token's name."""
    params = request.params
    given = params.get("card")
    if not isinstance(given, dict):
        raise invalid("Missing required param: card.", param="card", code="parameter_missing")
    number = str(given.get("number", "")).replace(" ", "")
    if not luhn_ok(number):
        raise StripeError(
            402, "Your card number is incorrect.", type="card_error", code="incorrect_number",
            param="card[number]",
        )  # fmt: skip
    exp_month = as_int(given.get("exp_month"), "card[exp_month]")
    exp_year = as_int(given.get("exp_year"), "card[exp_year]")
    exp_year = exp_year + 2000 if exp_year < 100 else exp_year
    billing = {"name": given.get("name")} if given.get("name") else None
    payment_method = _card_payment_method(
        request, card_for_number(number), number,
        exp_month=exp_month, exp_year=exp_year, billing_details=billing,
    )  # fmt: skip
    token: Obj = {
        "id": new_id("tok"),
        "object": "token",
        "card": card_object(payment_method, payment_method["id"]),
        "client_ip": None,
        "created": request.now(),
        "livemode": False,
        "type": "card",
        "used": False,
    }
    request.account.add(token)
    request.account.hidden(token["id"])["payment_method"] = payment_method["id"]
    return token


def retrieve_token(request: Request) -> Obj:
    return request.get("token", request.path_params["id"])


def source_payment_method(call: Call, source: str, param: str = "source") -> Obj:
    """The card a ``source`` names: a token (used once; test tokens any number of
    times), a ``card_…`` or a test ``pm_card_…``/``tok_…`` name.

    Raises:
        StripeError: 404 for an unknown source, 400 for a token used twice.
    """
    token = call.account.find("token", source)
    if token is not None:
        if token["used"]:
            raise invalid(f"You cannot use a Stripe token more than once: {source}.", param=param)
        token["used"] = True
        return call.get("payment_method", call.account.hidden(source)["payment_method"])
    existing = call.account.find("payment_method", source)
    if existing is not None and existing["type"] == "card":
        return existing
    card = test_card_for(source)
    if card is None:
        raise no_such("source", source, param)
    return _card_payment_method(call, card, source)


# -- customer sources -----------------------------------------------------------


def add_source(call: Call, customer: Obj, source: str, *, make_default: bool) -> Obj:
    """Attach the card of ``source`` to ``customer`` (``customer.source.created``);
    it becomes ``default_source`` when asked or when there is none.

    Raises:
        StripeError: 404 for an unknown source, 402 for a card that declines on attach.
    """
    payment_method = source_payment_method(call, source)
    attach(call, payment_method, customer)
    card = card_object(payment_method, payment_method["id"], customer["id"])
    call.emit("customer.source.created", card)
    if make_default or not customer["default_source"]:
        customer["default_source"] = payment_method["id"]
    return card


def _sources(account: Account, customer: Obj) -> list[Obj]:
    return [
        card_object(pm, pm["id"], customer["id"])
        for pm in account.all("payment_method")
        if pm["customer"] == customer["id"] and str(pm["id"]).startswith("card_")
    ]


@includable("customer", "sources")
def _included_sources(account: Account, customer: Obj) -> tuple[list[Obj], str]:
    """``expand[]=sources`` on a customer: its card sources."""
    return _sources(account, customer), f"/v1/customers/{customer['id']}/sources"


def create_customer_source(request: Request) -> Obj:
    """``POST /v1/customers/{customer}/sources`` with ``source`` (a token)."""
    customer = request.get("customer", request.path_params["customer"])
    before = copy(customer)
    card = add_source(request, customer, str(request.param("source")), make_default=False)
    changed = previous_attributes(before, customer)
    if changed:
        request.emit("customer.updated", customer, changed)
    return card


def list_customer_sources(request: Request) -> Obj:
    customer = request.get("customer", request.path_params["customer"])
    return list_object(
        request, _sources(request.account, customer), f"/v1/customers/{customer['id']}/sources"
    )


# -- charges ------------------------------------------------------------------


def create_charge(request: Request) -> Obj:
    """``POST /v1/charges``: charge a card ``source`` directly (no PaymentIntent)."""
    from stripeline_sandbox._connect import destination_of, pay_destination

    params = request.params
    amount = as_int(required(params, "amount"), "amount", minimum=1)
    if amount < MINIMUM_AMOUNT:
        raise invalid("Amount must be at least $0.50 usd", param="amount", code="amount_too_small")
    currency = str(required(params, "currency")).lower()
    customer = optional_str(params.get("customer"))
    if customer is not None:
        request.get("customer", customer, param="customer")
    source = optional_str(params.get("source"))
    if source is None and customer is not None:
        # A customer is charged through its default source.
        source = request.get("customer", customer)["default_source"]
    if source is None:
        if customer is not None:
            raise invalid(
                "Cannot charge a customer that has no active card.",
                param="card",
                code="missing",
            )
        raise invalid("Must provide source or customer.", code="parameter_missing")
    destination = destination_of(request, params)
    capture = as_bool(params.get("capture", "true"), "capture")
    payment_method = source_payment_method(request, source)
    card = request.account.hidden(payment_method["id"])["card"]
    holder: Obj = {
        "id": None,
        "amount": amount,
        "currency": currency,
        "customer": customer,
        "description": optional_str(params.get("description")),
        "receipt_email": optional_str(params.get("receipt_email")),
    }
    decline = card.decline
    if decline is None and card.three_d_secure == "always":
        decline = ("card_declined", "authentication_required")
    charge = new_charge(request, holder, payment_method, card, captured=capture, decline=decline)
    charge["payment_intent"] = None
    charge["metadata"] = apply_metadata({}, params.get("metadata"))
    charge["source"] = card_object(payment_method, payment_method["id"], customer)
    charge["statement_descriptor"] = optional_str(params.get("statement_descriptor"))
    charge["transfer_group"] = optional_str(params.get("transfer_group"))
    if decline is not None:
        request.emit("charge.failed", charge)
        raise card_error(card, decline=decline, charge=charge["id"])
    if destination is not None:
        pay_destination(request, charge, destination)
    request.emit("charge.succeeded", charge)
    if capture:
        after_card_charge(request, charge, card)
    return charge


def capture_charge(request: Request) -> Obj:
    """``POST /v1/charges/{id}/capture`` of an uncaptured legacy charge (the rest is
    released, as Stripe refunds the uncaptured remainder)."""
    charge = request.get("charge", request.path_params["id"])
    if charge["payment_intent"] is not None:
        raise invalid(
            "This charge belongs to a PaymentIntent: capture the PaymentIntent instead.",
            code="charge_not_capturable",
        )
    if charge["captured"] or charge["status"] != "succeeded":
        raise invalid(
            f"Charge {charge['id']} has already been captured.", code="charge_already_captured"
        )
    amount = as_int(request.params.get("amount", charge["amount"]), "amount", minimum=1)
    if amount > int(charge["amount"]):
        raise invalid(
            "The amount to capture must be less than or equal to the amount authorized.",
            param="amount",
            code="amount_too_large",
        )
    before = copy(charge)
    charge["captured"] = True
    charge["amount_captured"] = amount
    charge["amount_refunded"] = int(charge["amount"]) - amount
    charge["refunded"] = False
    charge["balance_transaction"] = for_charge(request, charge, amount)
    request.emit("charge.captured", charge, previous_attributes(before, charge))
    card = request.account.hidden(charge["id"]).get("card")
    if isinstance(card, TestCard):
        after_card_charge(request, charge, card)
    return charge


#: This module's endpoints; ``_app.build_router`` puts every module's table together.
ROUTES: tuple[Endpoint, ...] = (
    Endpoint("POST", "/v1/tokens", create_token, publishable=True),
    Endpoint("GET", "/v1/tokens/{id}", retrieve_token),
    Endpoint("POST", "/v1/charges", create_charge),
    Endpoint("POST", "/v1/charges/{id}/capture", capture_charge),
    Endpoint("POST", "/v1/customers/{customer}/sources", create_customer_source),
    Endpoint("GET", "/v1/customers/{customer}/sources", list_customer_sources),
)
