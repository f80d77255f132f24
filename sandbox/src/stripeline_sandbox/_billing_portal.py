"""Billing portal sessions: create returns a URL to the hosted portal.

The portal itself (updating cards, cancelling subscriptions) is not emulated:
the session is the URL and its settings. Each account gets one default
portal configuration (``bpc_…``) the first time a session needs it.
"""

from __future__ import annotations

from typing import Any

from stripeline_sandbox._errors import invalid
from stripeline_sandbox._ids import new_id, random_part
from stripeline_sandbox._routes import Call, Endpoint, Request, optional_str
from stripeline_sandbox._state import Obj

NOUN = "billing_portal.session"
HOSTED_PORTAL = "https://billing.stripe.com/p/session"
_FLOWS = (
    "payment_method_update",
    "subscription_cancel",
    "subscription_update",
    "subscription_update_confirm",
)


def _default_configuration(call: Call) -> str:
    hidden = call.account.hidden("billing_portal")
    configuration = hidden.get("default_configuration")
    if configuration is None:
        configuration = hidden["default_configuration"] = new_id("bpc")
    return str(configuration)


def _flow(request: Request) -> Obj | None:
    given = request.params.get("flow_data")
    if not isinstance(given, dict):
        return None
    flow_type = str(given.get("type") or "")
    if flow_type not in _FLOWS:
        raise invalid(
            f"Invalid flow_data[type]: must be one of {', '.join(_FLOWS)}", param="flow_data[type]"
        )
    after_given = given.get("after_completion")
    after: dict[str, Any] = after_given if isinstance(after_given, dict) else {}
    redirect_given = after.get("redirect")
    redirect = redirect_given if isinstance(redirect_given, dict) else None
    cancel = given.get("subscription_cancel")
    update = given.get("subscription_update")
    confirm = given.get("subscription_update_confirm")
    return {
        "after_completion": {
            "hosted_confirmation": None,
            "redirect": {"return_url": str(redirect.get("return_url"))} if redirect else None,
            "type": str(after.get("type") or "portal_homepage"),
        },
        "subscription_cancel": (
            {"retention": None, "subscription": str(cancel.get("subscription"))}
            if isinstance(cancel, dict)
            else None
        ),
        "subscription_update": (
            {"subscription": str(update.get("subscription"))} if isinstance(update, dict) else None
        ),
        "subscription_update_confirm": (
            {
                "discounts": None,
                "items": [],
                "subscription": str(confirm.get("subscription")),
            }
            if isinstance(confirm, dict)
            else None
        ),
        "type": flow_type,
    }


def create_portal_session(request: Request) -> Obj:
    customer = request.get("customer", str(request.param("customer")), param="customer")
    session_id = new_id("bps")
    secret = f"test_{random_part(40)}"
    base = request.world.public_url
    url = f"{base}/_sandbox/billing_portal/{session_id}" if base else f"{HOSTED_PORTAL}/{secret}"
    session: Obj = {
        "id": session_id,
        "object": NOUN,
        "configuration": optional_str(request.params.get("configuration"))
        or _default_configuration(request),
        "created": request.now(),
        "customer": customer["id"],
        "customer_account": None,
        "flow": _flow(request),
        "livemode": False,
        "locale": optional_str(request.params.get("locale")),
        "on_behalf_of": optional_str(request.params.get("on_behalf_of")),
        "return_url": optional_str(request.params.get("return_url")),
        "url": url,
    }
    request.account.add(session)
    request.emit("billing_portal.session.created", session)
    return session


def hosted_portal_page(request: Request) -> Obj:
    """What the hosted portal shows: the session and its customer."""
    session = request.get(NOUN, request.path_params["id"], "billing portal session")
    return {
        "object": "sandbox.billing_portal_page",
        "session": session,
        "customer": request.get("customer", session["customer"]),
        # The page's way back to the application.
        "return_url": session["return_url"],
    }


#: This module's endpoints; ``_app.build_router`` puts every module's table together.
ROUTES: tuple[Endpoint, ...] = (
    Endpoint("POST", "/v1/billing_portal/sessions", create_portal_session),
    Endpoint("GET", "/_sandbox/billing_portal/{id}", hosted_portal_page, control=True),
)
