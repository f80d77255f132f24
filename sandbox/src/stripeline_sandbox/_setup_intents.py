"""SetupIntents: save a card for later, with 3-D Secure where the card asks for it."""

from __future__ import annotations

from stripeline_sandbox._errors import invalid
from stripeline_sandbox._ids import new_id, random_part
from stripeline_sandbox._lists import list_object
from stripeline_sandbox._objects import apply_metadata, copy
from stripeline_sandbox._payment_methods import (
    attach,
    card_error,
    card_of,
    payment_method_from,
    resolve,
)
from stripeline_sandbox._routes import (
    Call,
    Endpoint,
    Request,
    as_bool,
    check_client_secret,
    optional_str,
)
from stripeline_sandbox._state import Obj

NOUN = "setup_intent"


def create_setup_intent(request: Request) -> Obj:
    params = request.params
    customer = optional_str(params.get("customer"))
    if customer:
        request.get("customer", customer, param="customer")
    payment_method = (
        resolve(request, str(params["payment_method"])) if params.get("payment_method") else None
    )
    setup_id = new_id("seti")
    setup_intent: Obj = {
        "id": setup_id,
        "object": "setup_intent",
        "application": None,
        "automatic_payment_methods": None,
        "cancellation_reason": None,
        "client_secret": f"{setup_id}_secret_{random_part(32)}",
        "created": request.now(),
        "customer": customer,
        "description": optional_str(params.get("description")),
        "excluded_payment_method_types": None,
        "flow_directions": None,
        "last_setup_error": None,
        "latest_attempt": None,
        "livemode": False,
        "mandate": None,
        "metadata": apply_metadata({}, params.get("metadata")),
        "next_action": None,
        "on_behalf_of": None,
        "payment_method": payment_method["id"] if payment_method else None,
        "payment_method_configuration_details": None,
        "payment_method_options": {
            "card": {
                "mandate_options": None,
                "network": None,
                "request_three_d_secure": "automatic",
            }
        },
        "payment_method_types": list(params.get("payment_method_types") or ["card"]),
        "single_use_mandate": None,
        "status": "requires_confirmation" if payment_method else "requires_payment_method",
        "usage": str(params.get("usage") or "off_session"),
    }
    request.account.add(setup_intent)
    request.emit("setup_intent.created", setup_intent)
    if as_bool(params.get("confirm", "false"), "confirm"):
        _confirm(request, setup_intent)
    return setup_intent


def _succeed(call: Call, setup_intent: Obj, payment_method: Obj) -> None:
    setup_intent["status"] = "succeeded"
    setup_intent["next_action"] = None
    call.account.hidden(payment_method["id"])["set_up"] = True
    if setup_intent["customer"]:
        customer = call.get("customer", setup_intent["customer"])
        attach(call, payment_method, customer)
    call.emit("setup_intent.succeeded", setup_intent)


def _confirm(request: Request, setup_intent: Obj) -> None:
    payment_method = payment_method_from(request, request.params)
    if payment_method is None:
        if not setup_intent["payment_method"]:
            raise invalid(
                "You cannot confirm this SetupIntent because it's missing a payment method.",
                code="setup_intent_unexpected_state",
            )
        payment_method = resolve(request, str(setup_intent["payment_method"]))
    setup_intent["payment_method"] = payment_method["id"]
    setup_intent["last_setup_error"] = None
    card = card_of(request, payment_method)
    if card.declines_on_attach:
        error = card_error(card, setup_intent=None)
        setup_intent["status"] = "requires_payment_method"
        setup_intent["payment_method"] = None
        setup_intent["last_setup_error"] = {
            "code": error.code,
            "decline_code": error.decline_code,
            "message": error.message,
            "payment_method": copy(payment_method),
            "type": "card_error",
        }
        request.emit("setup_intent.setup_failed", setup_intent)
        error.extra["setup_intent"] = copy(setup_intent)
        raise error
    if card.three_d_secure in ("always", "unless_setup"):
        setup_intent["status"] = "requires_action"
        setup_intent["next_action"] = {
            "type": "use_stripe_sdk",
            "use_stripe_sdk": {
                "type": "three_d_secure_redirect",
                "stripe_js": f"https://hooks.stripe.com/3d_secure_2/hosted/{setup_intent['id']}",
            },
        }
        request.emit("setup_intent.requires_action", setup_intent)
        return
    _succeed(request, setup_intent, payment_method)


def confirm_setup_intent(request: Request) -> Obj:
    setup_intent = request.get(NOUN, request.path_params["id"])
    check_client_secret(request, setup_intent, "SetupIntent")
    if setup_intent["status"] not in (
        "requires_payment_method",
        "requires_confirmation",
        "requires_action",
    ):
        raise invalid(
            f"This SetupIntent has a status of {setup_intent['status']} and cannot be confirmed.",
            code="setup_intent_unexpected_state",
        )
    _confirm(request, setup_intent)
    return setup_intent


def authenticate_setup_intent(request: Request) -> Obj:
    setup_intent = request.get(NOUN, request.path_params["id"])
    if setup_intent["status"] != "requires_action":
        raise invalid(
            "This SetupIntent does not require authentication.",
            code="setup_intent_unexpected_state",
        )
    payment_method = request.get("payment_method", setup_intent["payment_method"], "PaymentMethod")
    if request.params.get("outcome", "succeeded") == "failed":
        setup_intent["status"] = "requires_payment_method"
        setup_intent["next_action"] = None
        setup_intent["payment_method"] = None
        setup_intent["last_setup_error"] = {
            "code": "setup_intent_authentication_failure",
            "message": "The latest attempt to set up the payment method has failed because authentication failed.",
            "payment_method": copy(payment_method),
            "type": "invalid_request_error",
        }
        request.emit("setup_intent.setup_failed", setup_intent)
        return setup_intent
    _succeed(request, setup_intent, payment_method)
    return setup_intent


def cancel_setup_intent(request: Request) -> Obj:
    setup_intent = request.get(NOUN, request.path_params["id"])
    if setup_intent["status"] in ("succeeded", "canceled"):
        raise invalid(
            f"This SetupIntent has a status of {setup_intent['status']} and cannot be canceled.",
            code="setup_intent_unexpected_state",
        )
    setup_intent["status"] = "canceled"
    setup_intent["next_action"] = None
    setup_intent["cancellation_reason"] = optional_str(request.params.get("cancellation_reason"))
    request.emit("setup_intent.canceled", setup_intent)
    return setup_intent


def update_setup_intent(request: Request) -> Obj:
    setup_intent = request.get(NOUN, request.path_params["id"])
    setup_intent["metadata"] = apply_metadata(
        setup_intent["metadata"], request.params.get("metadata")
    )
    if "description" in request.params:
        setup_intent["description"] = optional_str(request.params["description"])
    return setup_intent


def retrieve_setup_intent(request: Request) -> Obj:
    setup_intent = request.get(NOUN, request.path_params["id"])
    check_client_secret(request, setup_intent, "SetupIntent")
    return setup_intent


def list_setup_intents(request: Request) -> Obj:
    customer = request.params.get("customer")
    return list_object(
        request,
        request.account.all(NOUN),
        "/v1/setup_intents",
        lambda s: customer in (None, s["customer"]),
    )


#: This module's endpoints; ``_app.build_router`` puts every module's table together.
ROUTES: tuple[Endpoint, ...] = (
    Endpoint("POST", "/v1/setup_intents", create_setup_intent),
    Endpoint("POST", "/v1/setup_intents/{id}/confirm", confirm_setup_intent, publishable=True),
    Endpoint(
        "POST", "/_sandbox/setup_intents/{id}/authenticate", authenticate_setup_intent, control=True
    ),
    Endpoint("POST", "/v1/setup_intents/{id}/cancel", cancel_setup_intent),
    Endpoint("POST", "/v1/setup_intents/{id}", update_setup_intent),
    Endpoint("GET", "/v1/setup_intents/{id}", retrieve_setup_intent, publishable=True),
    Endpoint("GET", "/v1/setup_intents", list_setup_intents),
)
