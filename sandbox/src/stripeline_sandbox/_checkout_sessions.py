"""Checkout Sessions: create (with a URL), complete through a test endpoint, expire.

A session is ``open`` until the customer pays on the hosted page — here
``POST /_sandbox/checkout/sessions/{id}/complete`` with an optional
``payment_method`` (default ``pm_card_visa``) — or until it expires
(``POST /v1/checkout/sessions/{id}/expire``, or ``expires_at`` passing in
sandbox time). Payment mode creates and confirms a PaymentIntent as the
hosted page would (3-D Secure counts as completed on the page; a declining
card answers 402 and leaves the session open), then emits
``checkout.session.completed``; with a bank account (``pm_usBankAccount_…``)
the session completes ``unpaid`` and, when the debit settles, emits
``checkout.session.async_payment_succeeded`` (now ``paid``) or
``…async_payment_failed``. Subscription mode subscribes the customer
(made if needed) to the line items' recurring prices with the card as its
default, first invoice paid (or a trial from ``subscription_data``). Setup
mode can be created (it returns a URL) but not completed yet.
"""

from __future__ import annotations

from typing import Any

from stripeline_sandbox._errors import invalid
from stripeline_sandbox._ids import random_part
from stripeline_sandbox._lists import list_object
from stripeline_sandbox._objects import apply_metadata, includable
from stripeline_sandbox._routes import Call, Endpoint, Request, as_bool, as_int, optional_str
from stripeline_sandbox._state import Account, Obj

NOUN = "checkout.session"
#: Stripe's default: a session expires 24 hours after it is created.
DEFAULT_EXPIRY_SECONDS = 24 * 3600
MODES = ("payment", "setup", "subscription")
#: ``custom`` is the older name of ``elements``.
UI_MODES = ("hosted", "embedded", "elements", "custom")
#: Where pages live when the sandbox's own address is unknown (Stripe's host).
HOSTED_CHECKOUT = "https://checkout.stripe.com/c/pay"


def _line_items(call: Call, given: Any) -> list[Obj]:
    if not given:
        return []
    entries = given if isinstance(given, list) else list(given.values())
    items: list[Obj] = []
    for index, entry in enumerate(entries):
        param = f"line_items[{index}]"
        if not isinstance(entry, dict):
            raise invalid("Invalid array", param="line_items")
        quantity = as_int(entry.get("quantity", 1), f"{param}[quantity]", minimum=1)
        price_id = optional_str(entry.get("price"))
        if price_id is not None:
            price = call.get("price", price_id, param=f"{param}[price]")
            unit_amount = int(price.get("unit_amount") or 0)
            currency = str(price["currency"])
            description = str(price.get("nickname") or price_id)
            recurring = price.get("recurring") is not None
        else:
            data = entry.get("price_data")
            if not isinstance(data, dict):
                raise invalid(
                    "You must specify either `price` or `price_data`.", param=f"{param}[price]"
                )
            unit_amount = as_int(
                data.get("unit_amount"), f"{param}[price_data][unit_amount]", minimum=0
            )
            currency = str(data.get("currency") or "").lower()
            if not currency:
                raise invalid(
                    "Missing required param: currency.", param=f"{param}[price_data][currency]"
                )
            product = data.get("product_data")
            description = (
                str(product.get("name")) if isinstance(product, dict) and product else "Item"
            )
            recurring = isinstance(data.get("recurring"), dict)
        items.append(
            {
                "id": f"li_{random_part()}",
                "object": "item",
                "amount_discount": 0,
                "amount_subtotal": unit_amount * quantity,
                "amount_tax": 0,
                "amount_total": unit_amount * quantity,
                "currency": currency,
                "description": description,
                "price": price_id,
                "quantity": quantity,
                "_recurring": recurring,
            }
        )
    return items


def create_checkout_session(request: Request) -> Obj:
    params = request.params
    mode = str(params.get("mode") or "payment")
    if mode not in MODES:
        raise invalid(f"Invalid mode: must be one of {', '.join(MODES)}", param="mode")
    customer = optional_str(params.get("customer"))
    if customer is not None:
        request.get("customer", customer, param="customer")
    items = _line_items(request, params.get("line_items"))
    if mode != "setup" and not items:
        raise invalid(
            f"`line_items` is required in `{mode}` mode.",
            param="line_items",
            code="parameter_missing",
        )
    if mode == "subscription" and not all(item["_recurring"] and item["price"] for item in items):
        raise invalid(
            "In `subscription` mode every line item needs a recurring `price`.",
            param="line_items",
        )
    if mode == "payment" and any(item["_recurring"] for item in items):
        raise invalid(
            "You must be in `subscription` mode to use recurring prices.", param="line_items"
        )
    currencies = {item["currency"] for item in items} or {
        str(params.get("currency") or "usd").lower()
    }
    if len(currencies) > 1:
        raise invalid("All line items must have the same currency.", param="line_items")
    currency = currencies.pop()
    total = sum(int(item["amount_total"]) for item in items)
    now = request.now()
    expires_at = as_int(params.get("expires_at", now + DEFAULT_EXPIRY_SECONDS), "expires_at")
    if not now + 1800 <= expires_at <= now + DEFAULT_EXPIRY_SECONDS:
        raise invalid(
            "The `expires_at` timestamp must be between 30 minutes and 24 hours from now.",
            param="expires_at",
        )
    session_id = f"cs_test_{random_part(58)}"
    base = request.world.public_url
    url = f"{base}/_sandbox/checkout/{session_id}" if base else f"{HOSTED_CHECKOUT}/{session_id}"
    ui_mode = str(params.get("ui_mode") or "hosted")
    if ui_mode not in UI_MODES:
        raise invalid(f"Invalid ui_mode: must be one of {', '.join(UI_MODES)}", param="ui_mode")
    return_url = optional_str(params.get("return_url"))
    redirect = str(params.get("redirect_on_completion") or "always")
    if ui_mode == "hosted" and return_url is not None:
        raise invalid(
            "`return_url` can only be used with `ui_mode` embedded, custom or elements; "
            "use `success_url` with a hosted page.",
            param="return_url",
        )
    if ui_mode != "hosted" and return_url is None and redirect != "never":
        raise invalid(
            f"`return_url` is required when `ui_mode` is {ui_mode} and "
            "`redirect_on_completion` is not `never`.",
            param="return_url",
            code="parameter_missing",
        )
    adaptive = params.get("adaptive_pricing")
    adaptive_enabled = isinstance(adaptive, dict) and as_bool(
        adaptive.get("enabled", "false"), "adaptive_pricing[enabled]"
    )
    session: Obj = {
        "id": session_id,
        "object": NOUN,
        "adaptive_pricing": {"enabled": adaptive_enabled},
        "after_expiration": None,
        "allow_promotion_codes": None,
        "amount_subtotal": total,
        "amount_total": total,
        "automatic_tax": {"enabled": False, "liability": None, "provider": None, "status": None},
        "billing_address_collection": optional_str(params.get("billing_address_collection")),
        "cancel_url": optional_str(params.get("cancel_url")),
        "client_reference_id": optional_str(params.get("client_reference_id")),
        "client_secret": None if ui_mode == "hosted" else f"{session_id}_secret_{random_part()}",
        "collected_information": None,
        "consent": None,
        "consent_collection": None,
        "created": now,
        "currency": currency,
        "currency_conversion": None,
        "custom_fields": [],
        "custom_text": {
            "after_submit": None,
            "shipping_address": None,
            "submit": None,
            "terms_of_service_acceptance": None,
        },
        "customer": customer,
        "customer_account": None,
        "customer_creation": None if customer else "if_required",
        "customer_details": None,
        "customer_email": optional_str(params.get("customer_email")),
        "discounts": [],
        "expires_at": expires_at,
        "integration_identifier": None,
        "invoice": None,
        "invoice_creation": (
            {
                "enabled": False,
                "invoice_data": {
                    "account_tax_ids": None,
                    "custom_fields": None,
                    "description": None,
                    "footer": None,
                    "issuer": None,
                    "metadata": {},
                    "rendering_options": None,
                },
            }
            if mode == "payment"
            else None
        ),
        "livemode": False,
        "locale": optional_str(params.get("locale")),
        "metadata": apply_metadata({}, params.get("metadata")),
        "mode": mode,
        "origin_context": None,
        "payment_intent": None,
        "payment_link": None,
        "payment_method_collection": "if_required" if mode == "subscription" else None,
        "payment_method_configuration_details": None,
        "payment_method_options": {},
        "payment_method_types": list(params.get("payment_method_types") or ["card"]),
        "payment_status": "no_payment_required" if mode == "setup" else "unpaid",
        "permissions": None,
        "phone_number_collection": {"enabled": False},
        "recovered_from": None,
        "redirect_on_completion": None if ui_mode == "hosted" else redirect,
        "return_url": return_url,
        "saved_payment_method_options": None,
        "setup_intent": None,
        "shipping_address_collection": None,
        "shipping_cost": None,
        "shipping_options": [],
        "status": "open",
        "submit_type": optional_str(params.get("submit_type")),
        "subscription": None,
        "success_url": optional_str(params.get("success_url")),
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": ui_mode,
        "url": url if ui_mode == "hosted" else None,
        "wallet_options": None,
    }
    request.account.add(session)
    hidden = request.account.hidden(session_id)
    hidden["line_items"] = [{k: v for k, v in item.items() if k != "_recurring"} for item in items]
    intent_data = params.get("payment_intent_data")
    hidden["payment_intent_data"] = intent_data if isinstance(intent_data, dict) else {}
    subscription_data = params.get("subscription_data")
    hidden["subscription_data"] = subscription_data if isinstance(subscription_data, dict) else {}
    return session


def _expire_if_due(call: Call, session: Obj) -> None:
    """Sessions past ``expires_at`` (sandbox time) expire when next touched."""
    if session["status"] == "open" and call.now() >= int(session["expires_at"]):
        _expire(call, session)


def _expire(call: Call, session: Obj) -> None:
    session["status"] = "expired"
    session["url"] = None
    call.emit("checkout.session.expired", session)


def _session(request: Request) -> Obj:
    session = request.get(NOUN, request.path_params["id"], "checkout session")
    _expire_if_due(request, session)
    return session


def retrieve_checkout_session(request: Request) -> Obj:
    return _session(request)


@includable(NOUN, "line_items")
def _included_line_items(account: Account, session: Obj) -> tuple[list[Obj], str]:
    """``expand[]=line_items`` on a Checkout Session: its line items."""
    items: list[Obj] = list(account.hidden(session["id"]).get("line_items", []))
    return items, f"/v1/checkout/sessions/{session['id']}/line_items"


def list_line_items(request: Request) -> Obj:
    session = _session(request)
    items: list[Obj] = list(request.account.hidden(session["id"]).get("line_items", []))
    page = list_object(request, [], f"/v1/checkout/sessions/{session['id']}/line_items")
    page["data"] = items
    return page


def list_checkout_sessions(request: Request) -> Obj:
    params = request.params
    sessions = request.account.all(NOUN)
    for session in sessions:
        _expire_if_due(request, session)

    def keep(session: Obj) -> bool:
        return all(
            params.get(name) in (None, session[name])
            for name in ("payment_intent", "customer", "status", "subscription")
        )

    return list_object(request, sessions, "/v1/checkout/sessions", keep)


def expire_checkout_session(request: Request) -> Obj:
    session = _session(request)
    if session["status"] != "open":
        raise invalid(
            f'Only Checkout Sessions with a status in ["open"] can be expired. This Checkout Session has a status of "{session["status"]}".',
        )
    _expire(request, session)
    return session


def update_checkout_session(request: Request) -> Obj:
    session = _session(request)
    session["metadata"] = apply_metadata(session["metadata"], request.params.get("metadata"))
    return session


def hosted_checkout_page(request: Request) -> Obj:
    """What the hosted page shows: the session, its line items and how to finish it."""
    session = _session(request)
    return {
        "object": "sandbox.checkout_page",
        "session": session,
        "line_items": request.account.hidden(session["id"]).get("line_items", []),
        "complete": f"/_sandbox/checkout/sessions/{session['id']}/complete",
        "expire": f"/v1/checkout/sessions/{session['id']}/expire",
    }


def complete_checkout_session(request: Request) -> Obj:
    """Pay on the hosted page: ``payment_method`` (default ``pm_card_visa``), ``email``,
    ``name``; with ``redirect=true`` the answer is the page's 302 to ``success_url``
    (``return_url`` for an embedded session) with ``{CHECKOUT_SESSION_ID}`` filled in."""
    redirect = as_bool(request.params.get("redirect", False), "redirect")
    session = _complete(request)
    target = session["success_url"] or session.get("return_url")
    if redirect and target:
        request.redirect = str(target).replace("{CHECKOUT_SESSION_ID}", session["id"])
    return session


def _complete(request: Request) -> Obj:
    from stripeline_sandbox._payment_intents import confirm, create_payment_intent_op

    session = _session(request)
    if session["status"] != "open":
        raise invalid(
            f"This Checkout Session is {session['status']}; only an open session can be completed.",
            code="checkout_session_unexpected_state",
        )
    if session["mode"] == "subscription":
        return _complete_subscription(request, session)
    if session["mode"] != "payment":
        raise invalid(
            f"Completing a Checkout Session in {session['mode']} mode is not emulated yet.",
            param="mode",
        )
    params = request.params
    hidden = request.account.hidden(session["id"])
    intent_data: dict[str, Any] = hidden.get("payment_intent_data") or {}
    payment_intent_id = session["payment_intent"]
    if payment_intent_id is None:
        create_params: dict[str, Any] = {
            "amount": session["amount_total"],
            "currency": session["currency"],
            "metadata": intent_data.get("metadata") or {},
            "payment_method_types": session["payment_method_types"],
        }
        for name in ("customer",):
            if session[name]:
                create_params[name] = session[name]
        for name in ("capture_method", "description", "setup_future_usage"):
            if intent_data.get(name):
                create_params[name] = intent_data[name]
        payment_intent = create_payment_intent_op(request, create_params)
        session["payment_intent"] = payment_intent["id"]
    else:
        payment_intent = request.get("payment_intent", payment_intent_id)
    # The hosted page runs 3-D Secure with the customer: it counts as done.
    request.account.hidden(payment_intent["id"])["authenticated"] = True
    confirm_params = {"payment_method": str(params.get("payment_method") or "pm_card_visa")}
    try:
        confirm(request, payment_intent, confirm_params)
    finally:
        request.account.hidden(payment_intent["id"]).pop("authenticated", None)
    processing = payment_intent["status"] == "processing"
    if payment_intent["status"] not in ("succeeded", "requires_capture") and not processing:
        raise invalid(f"The payment is {payment_intent['status']}.", param="payment_method")
    email = optional_str(params.get("email")) or session["customer_email"]
    if email is None and session["customer"]:
        email = request.get("customer", session["customer"]).get("email")
    if processing:
        # A bank debit: complete but unpaid until it settles (async_payment_*).
        request.account.hidden(payment_intent["id"])["checkout_session"] = session["id"]
    _finish(request, session, email, "unpaid" if processing else "paid")
    return session


def async_payment_outcome(call: Call, payment_intent: Obj) -> None:
    """A session's bank debit settled: ``checkout.session.async_payment_succeeded``
    (``payment_status: paid``) or ``…_failed``."""
    session_id = call.account.hidden(payment_intent["id"]).pop("checkout_session", None)
    session = call.account.find(NOUN, session_id) if session_id else None
    if session is None:
        return
    if payment_intent["status"] == "succeeded":
        session["payment_status"] = "paid"
        call.emit("checkout.session.async_payment_succeeded", session)
    else:
        call.emit("checkout.session.async_payment_failed", session)


def _finish(request: Request, session: Obj, email: str | None, payment_status: str) -> None:
    session["status"] = "complete"
    session["payment_status"] = payment_status
    session["url"] = None
    session["customer_details"] = {
        "address": None,
        "business_name": None,
        "email": email,
        "individual_name": None,
        "name": optional_str(request.params.get("name")),
        "phone": None,
        "tax_exempt": "none",
        "tax_ids": [],
    }
    request.emit("checkout.session.completed", session)


def _complete_subscription(request: Request, session: Obj) -> Obj:
    """Subscribe as the hosted page would: a customer (made if the session has
    none), the card attached as the default, the subscription's first invoice
    paid at once (a declining card answers 402 and leaves the session open)."""
    from stripeline_sandbox._customers import create_customer_op
    from stripeline_sandbox._subscriptions import create_subscription_op

    params = request.params
    hidden = request.account.hidden(session["id"])
    email = optional_str(params.get("email")) or session["customer_email"]
    customer_id = session["customer"] or hidden.get("customer")
    if customer_id is None:
        customer = create_customer_op(request, {"email": email or ""})
        customer_id = hidden["customer"] = customer["id"]
    elif email is None:
        email = request.get("customer", customer_id).get("email")
    data: dict[str, Any] = hidden.get("subscription_data") or {}
    create_params: dict[str, Any] = {
        "customer": customer_id,
        "items": [
            {"price": item["price"], "quantity": item["quantity"]}
            for item in hidden.get("line_items", [])
        ],
        "default_payment_method": str(params.get("payment_method") or "pm_card_visa"),
        "payment_behavior": "error_if_incomplete",
        "metadata": data.get("metadata") or {},
    }
    if data.get("trial_period_days") not in (None, ""):
        create_params["trial_period_days"] = data["trial_period_days"]
    subscription = create_subscription_op(request, create_params)
    session["customer"] = customer_id
    session["subscription"] = subscription["id"]
    session["invoice"] = subscription.get("latest_invoice")
    _finish(
        request,
        session,
        email,
        "no_payment_required" if subscription["status"] == "trialing" else "paid",
    )
    return session


#: This module's endpoints; ``_app.build_router`` puts every module's table together.
ROUTES: tuple[Endpoint, ...] = (
    Endpoint("POST", "/v1/checkout/sessions", create_checkout_session),
    Endpoint("GET", "/v1/checkout/sessions/{id}", retrieve_checkout_session),
    Endpoint("GET", "/v1/checkout/sessions/{id}/line_items", list_line_items),
    Endpoint("GET", "/v1/checkout/sessions", list_checkout_sessions),
    Endpoint("POST", "/v1/checkout/sessions/{id}/expire", expire_checkout_session),
    Endpoint("POST", "/v1/checkout/sessions/{id}", update_checkout_session),
    Endpoint("GET", "/_sandbox/checkout/{id}", hosted_checkout_page, control=True),
    Endpoint(
        "POST", "/_sandbox/checkout/sessions/{id}/complete", complete_checkout_session, control=True
    ),
)
