"""Connect basics: connected accounts, account and login links, the
``Stripe-Account`` header, destination charges and transfers.

A connected account (``POST /v1/accounts``, ``type`` standard | express |
custom) is an ``account`` object of the platform and an ``Account`` of the
world of its own, keyed by its ``acct_…`` id: a request with the platform's
secret key and ``Stripe-Account: acct_…`` acts on the connected account's
objects (its events carry ``account``). Onboarding is finished by
``POST /_sandbox/accounts/{id}/onboard`` (what the account link's page would
do): ``details_submitted``, ``charges_enabled``, ``payouts_enabled`` turn true,
with ``account.updated``. A charge or PaymentIntent with
``transfer_data[destination]`` (and ``application_fee_amount``) creates a
transfer of the amount less the fee to that account (``transfer.created``).
"""

from __future__ import annotations

from typing import Any

from stripeline_sandbox._balance_transactions import record
from stripeline_sandbox._errors import StripeError, invalid, no_such
from stripeline_sandbox._ids import new_id, random_part
from stripeline_sandbox._lists import list_object
from stripeline_sandbox._objects import apply_metadata, copy, previous_attributes
from stripeline_sandbox._routes import Call, Endpoint, Request, as_int, optional_str, required
from stripeline_sandbox._state import Account, Obj, World

NOUN = "account"
TYPES = ("standard", "express", "custom")
#: Hidden record, in a connected account, of the platform that made it.
PLATFORM = "__platform__"
#: Account links expire after this many seconds (Stripe: a few minutes).
LINK_LIFETIME = 300


def connected_account(world: World, platform: Account, account_id: str) -> Account:
    """The ``Account`` a ``Stripe-Account: account_id`` request of ``platform`` acts on.

    Raises:
        StripeError: 403 ``account_invalid`` when ``platform`` has no such account.
    """
    with platform.lock:
        found = platform.find(NOUN, account_id)
    if found is None or found.get("deleted"):
        raise StripeError(
            403,
            f"The provided key does not have access to account '{account_id}' (or that "
            "account does not exist). Application access may have been revoked.",
            code="account_invalid",
        )
    connected = world.account(account_id)
    connected.platform = platform
    connected.internal[PLATFORM] = {"key": platform.key}
    return connected


def relink(world: World) -> None:
    """Tie restored connected accounts to their platforms again (a state file keeps
    the link as hidden state; ``Account.platform`` is not saved)."""
    for account in world.accounts():
        key = account.internal.get(PLATFORM, {}).get("key")
        if key:
            account.platform = world.account(str(key))


def _account(call: Call, params: dict[str, Any], account_type: str) -> Obj:
    now = call.now()
    account_id = f"acct_{random_part(16)}"
    custom = account_type == "custom"
    email = optional_str(params.get("email"))
    capabilities = params.get("capabilities")
    requested = capabilities if isinstance(capabilities, dict) else {}
    return {
        "id": account_id,
        "object": NOUN,
        "business_profile": {
            "annual_revenue": {"amount": None, "currency": None, "fiscal_year_end": None},
            "estimated_worker_count": None,
            "mcc": None,
            "minority_owned_business_designation": None,
            "name": None,
            "product_description": None,
            "support_address": {name: None for name in _ADDRESS},
            "support_email": None,
            "support_phone": None,
            "support_url": None,
            "url": None,
        },
        "business_type": optional_str(params.get("business_type")),
        "capabilities": {
            name: "inactive" for name in (requested or ("card_payments", "transfers"))
        },
        "charges_enabled": False,
        "controller": {
            "is_controller": True,
            "type": "application",
            "requirement_collection": "application" if custom else "stripe",
        },
        "country": str(params.get("country") or "US"),
        "created": now,
        "default_currency": "usd",
        "details_submitted": False,
        "email": email,
        "external_accounts": {
            "object": "list",
            "data": [],
            "has_more": False,
            "total_count": 0,
            "url": f"/v1/accounts/{account_id}/external_accounts",
        },
        "future_requirements": _requirements([], None),
        "metadata": apply_metadata({}, params.get("metadata")),
        "payouts_enabled": False,
        "requirements": _requirements(
            ["external_account", "tos_acceptance.date"], "requirements.past_due"
        ),
        "settings": _settings(),
        "tos_acceptance": {"date": None, "ip": None, "user_agent": None},
        "type": account_type,
    }


_ADDRESS = ("city", "country", "line1", "line2", "postal_code", "state")


def _requirements(due: list[str], disabled_reason: str | None) -> Obj:
    return {
        "alternatives": [],
        "current_deadline": None,
        "currently_due": list(due),
        "disabled_reason": disabled_reason,
        "errors": [],
        "eventually_due": list(due),
        "past_due": list(due),
        "pending_verification": [],
    }


def _settings() -> Obj:
    descriptors = {
        "statement_descriptor_prefix_kana": None,
        "statement_descriptor_prefix_kanji": None,
    }
    return {
        "bacs_debit_payments": {"display_name": None, "service_user_number": None},
        "branding": {"icon": None, "logo": None, "primary_color": None, "secondary_color": None},
        "card_issuing": {"tos_acceptance": {"date": None, "ip": None}},
        "card_payments": {
            "decline_on": {"avs_failure": False, "cvc_failure": False},
            "statement_descriptor_prefix": None,
            **descriptors,
        },
        "dashboard": {"display_name": None, "timezone": "Etc/UTC"},
        "invoices": {"default_account_tax_ids": None, "hosted_payment_method_save": None},
        "payments": {
            "statement_descriptor": None,
            "statement_descriptor_kana": None,
            "statement_descriptor_kanji": None,
            **descriptors,
        },
        "payouts": {
            "debit_negative_balances": True,
            "schedule": {"delay_days": 2, "interval": "daily"},
            "statement_descriptor": None,
        },
        "sepa_debit_payments": {},
    }


def _emit_account(call: Call, type: str, account: Obj, previous: Obj | None = None) -> None:
    event = call.emit(type, account, previous)
    event["account"] = account["id"]


def create_account(request: Request) -> Obj:
    params = request.params
    account_type = str(params.get("type") or "")
    if not account_type:
        controller = params.get("controller")
        account_type = "custom" if isinstance(controller, dict) else "standard"
    if account_type not in TYPES:
        raise invalid(f"Invalid type: must be one of {', '.join(TYPES)}", param="type")
    if request.account.platform is not None:
        raise invalid("A connected account cannot create connected accounts.")
    account = _account(request, params, account_type)
    request.account.add(account)
    connected_account(request.world, request.account, account["id"])
    return account


def _get(request: Request) -> Obj:
    return request.get(NOUN, request.path_params["id"])


def retrieve_account(request: Request) -> Obj:
    return _get(request)


def retrieve_own_account(request: Request) -> Obj:
    """``GET /v1/account``: the caller's account (the connected one with ``Stripe-Account``)."""
    platform = request.account.platform
    if platform is not None:
        with platform.lock:
            found = platform.find(NOUN, request.account.key)
        if found is not None:
            shown: Obj = copy(found)
            return shown
    return {
        "id": request.account.id,
        "object": NOUN,
        "business_profile": {"name": "Stripeline Sandbox"},
        "charges_enabled": True,
        "country": "US",
        "default_currency": "usd",
        "details_submitted": True,
        "email": None,
        "payouts_enabled": True,
        "type": "standard",
    }


def update_account(request: Request) -> Obj:
    account = _get(request)
    params = request.params
    before = copy(account)
    account["metadata"] = apply_metadata(account["metadata"], params.get("metadata"))
    if "email" in params:
        account["email"] = optional_str(params["email"])
    if "business_type" in params:
        account["business_type"] = optional_str(params["business_type"])
    profile = params.get("business_profile")
    if isinstance(profile, dict):
        for name in account["business_profile"]:
            if name in profile:
                account["business_profile"][name] = optional_str(profile[name])
    tos = params.get("tos_acceptance")
    if isinstance(tos, dict):
        for name in ("ip", "user_agent"):
            if name in tos:
                account["tos_acceptance"][name] = optional_str(tos[name])
        if "date" in tos:
            account["tos_acceptance"]["date"] = as_int(tos["date"], "tos_acceptance[date]")
    changed = previous_attributes(before, account)
    if changed:
        _emit_account(request, "account.updated", account, changed)
    return account


def delete_account(request: Request) -> Obj:
    account = _get(request)
    account["deleted"] = True
    return {"id": account["id"], "object": NOUN, "deleted": True}


def list_accounts(request: Request) -> Obj:
    return list_object(request, request.account.all(NOUN), "/v1/accounts")


def onboard_account(request: Request) -> Obj:
    """Finish onboarding as the account link's page would (``account.updated``)."""
    account = _get(request)
    before = copy(account)
    account["details_submitted"] = True
    account["charges_enabled"] = True
    account["payouts_enabled"] = True
    account["capabilities"] = {name: "active" for name in account["capabilities"]}
    account["tos_acceptance"]["date"] = account["tos_acceptance"]["date"] or request.now()
    account["requirements"] = _requirements([], None)
    changed = previous_attributes(before, account)
    if changed:
        _emit_account(request, "account.updated", account, changed)
    return account


def _page_url(request: Request, path: str) -> str:
    base = request.world.public_url or "https://connect.stripe.com"
    return f"{base}{path}"


def create_account_link(request: Request) -> Obj:
    params = request.params
    account_id = str(required(params, "account"))
    request.get(NOUN, account_id, param="account")
    link_type = str(required(params, "type"))
    if link_type not in ("account_onboarding", "account_update"):
        raise invalid(
            "Invalid type: must be one of account_onboarding, account_update", param="type"
        )
    now = request.now()
    token = random_part(24)
    request.account.hidden(account_id).setdefault("links", {})[token] = {
        "return_url": optional_str(params.get("return_url")),
        "refresh_url": optional_str(params.get("refresh_url")),
    }
    return {
        "object": "account_link",
        "created": now,
        "expires_at": now + LINK_LIFETIME,
        "url": _page_url(request, f"/_sandbox/connect/{account_id}/{token}"),
    }


def account_link_page(request: Request) -> Obj:
    """What the onboarding page shows: the account, where it returns, how to finish."""
    account = _get(request)
    if request.path_params["token"] == "dashboard":  # noqa: S105 - a page name
        return {"object": "sandbox.express_dashboard", "account": account}
    links = request.account.hidden(account["id"]).get("links") or {}
    link = links.get(request.path_params["token"])
    if link is None:
        raise no_such("account link", request.path_params["token"])
    return {
        "object": "sandbox.account_link_page",
        "account": account,
        "return_url": link["return_url"],
        "refresh_url": link["refresh_url"],
        "onboard": f"/_sandbox/accounts/{account['id']}/onboard",
    }


def create_login_link(request: Request) -> Obj:
    account = request.get(NOUN, request.path_params["account"], param="account")
    if account["type"] != "express":
        raise invalid("Login links can only be created for Express accounts.", param="account")
    return {
        "object": "login_link",
        "created": request.now(),
        "url": _page_url(request, f"/_sandbox/connect/{account['id']}/dashboard"),
    }


# -- money movement -----------------------------------------------------------


def destination_of(call: Call, params: dict[str, Any]) -> tuple[str, int | None] | None:
    """``transfer_data[destination]`` and ``application_fee_amount`` of a charge or
    PaymentIntent, checked; None when it is not a destination charge.

    Raises:
        StripeError: 400 for an unknown destination or a fee above the amount.
    """
    data = params.get("transfer_data")
    fee_given = params.get("application_fee_amount")
    fee = (
        as_int(fee_given, "application_fee_amount", minimum=0)
        if fee_given not in (None, "")
        else None
    )
    if not isinstance(data, dict) or not data.get("destination"):
        if fee is not None:
            raise invalid(
                "Can only apply an application_fee_amount when the request is made on behalf "
                "of another account (using an OAuth key, the Stripe-Account header, or the "
                "destination parameter).",
                param="application_fee_amount",
            )
        return None
    destination = str(data["destination"])
    found = call.account.find(NOUN, destination)
    if found is None or found.get("deleted"):
        raise invalid(f"No such destination: '{destination}'", param="transfer_data[destination]")
    amount = params.get("amount")
    if fee is not None and amount is not None and fee > as_int(amount, "amount"):
        raise invalid(
            "The application fee amount cannot be greater than the amount.",
            param="application_fee_amount",
        )
    return destination, fee


def pay_destination(call: Call, charge: Obj, destination: tuple[str, int | None]) -> Obj:
    """A destination charge's transfer: the amount less the fee, to the account."""
    account_id, fee = destination
    amount = int(charge["amount"]) - (fee or 0)
    charge["transfer_data"] = {"amount": None, "destination": account_id}
    charge["application_fee_amount"] = fee
    charge["application_fee"] = new_id("fee") if fee else None
    charge["on_behalf_of"] = charge.get("on_behalf_of")
    transfer = _new_transfer(
        call, amount, str(charge["currency"]), account_id,
        source_transaction=charge["id"], transfer_group=charge.get("transfer_group"),
    )  # fmt: skip
    charge["transfer"] = transfer["id"]
    return transfer


def _new_transfer(
    call: Call,
    amount: int,
    currency: str,
    destination: str,
    *,
    source_transaction: str | None = None,
    transfer_group: str | None = None,
    description: str | None = None,
    metadata: Any = None,
) -> Obj:
    transfer_id = new_id("tr")
    transfer: Obj = {
        "id": transfer_id,
        "object": "transfer",
        "amount": amount,
        "amount_reversed": 0,
        "balance_transaction": record(
            call,
            amount=-amount,
            currency=currency,
            type="transfer",
            reporting_category="transfer",
            source=transfer_id,
            description=description,
        ),
        "created": call.now(),
        "currency": currency,
        "description": description,
        "destination": destination,
        "destination_payment": new_id("py"),
        "livemode": False,
        "metadata": apply_metadata({}, metadata),
        "reversals": {
            "object": "list",
            "data": [],
            "has_more": False,
            "total_count": 0,
            "url": f"/v1/transfers/{transfer_id}/reversals",
        },
        "reversed": False,
        "source_transaction": source_transaction,
        "source_type": "card",
        "transfer_group": transfer_group,
    }
    call.account.add(transfer)
    call.emit("transfer.created", transfer)
    return transfer


def create_transfer(request: Request) -> Obj:
    params = request.params
    amount = as_int(required(params, "amount"), "amount", minimum=1)
    currency = str(required(params, "currency")).lower()
    destination = str(required(params, "destination"))
    found = request.account.find(NOUN, destination)
    if found is None or found.get("deleted"):
        raise invalid(f"No such destination: '{destination}'", param="destination")
    source = optional_str(params.get("source_transaction"))
    if source is not None:
        request.get("charge", source, param="source_transaction")
    return _new_transfer(
        request, amount, currency, destination,
        source_transaction=source,
        transfer_group=optional_str(params.get("transfer_group")),
        description=optional_str(params.get("description")),
        metadata=params.get("metadata"),
    )  # fmt: skip


def retrieve_transfer(request: Request) -> Obj:
    return request.get("transfer", request.path_params["id"])


def list_transfers(request: Request) -> Obj:
    destination = request.params.get("destination")
    group = request.params.get("transfer_group")
    return list_object(
        request,
        request.account.all("transfer"),
        "/v1/transfers",
        lambda t: destination in (None, t["destination"]) and group in (None, t["transfer_group"]),
    )


#: This module's endpoints; ``_app.build_router`` puts every module's table together.
ROUTES: tuple[Endpoint, ...] = (
    Endpoint("POST", "/v1/accounts", create_account),
    Endpoint("GET", "/v1/accounts", list_accounts),
    Endpoint("GET", "/v1/account", retrieve_own_account),
    Endpoint("POST", "/v1/account_links", create_account_link),
    Endpoint("POST", "/v1/accounts/{account}/login_links", create_login_link),
    Endpoint("GET", "/v1/accounts/{id}", retrieve_account),
    Endpoint("POST", "/v1/accounts/{id}", update_account),
    Endpoint("DELETE", "/v1/accounts/{id}", delete_account),
    Endpoint("POST", "/_sandbox/accounts/{id}/onboard", onboard_account, control=True),
    Endpoint("GET", "/_sandbox/connect/{id}/{token}", account_link_page, control=True),
    Endpoint("POST", "/v1/transfers", create_transfer),
    Endpoint("GET", "/v1/transfers/{id}", retrieve_transfer),
    Endpoint("GET", "/v1/transfers", list_transfers),
)
