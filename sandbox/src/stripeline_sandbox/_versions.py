"""Older API versions: answers rendered in the shapes of the request's ``Stripe-Version``.

Objects are stored in the current version's shape (``API_VERSION``); a request
pinned to an older version (``Stripe-Version: 2022-08-01``, which the SDK
sends when ``stripe.api_version`` is set) gets each object rendered back
across the breaking changes listed in ``CHANGES``, before ``expand[]`` runs,
and every object an expansion brings in is rendered too: so
``expand[]=latest_invoice.payment_intent`` works in 2022-08-01 and is refused
in the current version, as on Stripe. The current fields stay in older
renderings (an older client ignores what it does not know).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stripeline_sandbox._errors import invalid
from stripeline_sandbox._objects import copy
from stripeline_sandbox._prices import plan_of
from stripeline_sandbox._routes import Endpoint, Request, optional_str
from stripeline_sandbox._state import API_VERSION, Account, Obj

#: Hidden record of the account's default API version (kept in a state file).
_DEFAULT = "__api_version__"
_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(\.[a-z]+)?$")


@dataclass(frozen=True)
class Change:
    """One breaking change: objects of ``kind`` gained the current shape in ``version``."""

    version: str
    kind: str
    summary: str
    render: Callable[[Account, Obj], None]


def _payment_intent_of_invoice(account: Account, invoice: Obj) -> str | None:
    found = account.internal.get(invoice["id"], {}).get("payment_intent")
    if found:
        return str(found)
    for payment in (invoice.get("payments") or {}).get("data") or []:
        intent = (payment.get("payment") or {}).get("payment_intent")
        if intent:
            return str(intent)
    return None


def _invoice_before_basil(account: Account, invoice: Obj) -> None:
    intent_id = _payment_intent_of_invoice(account, invoice)
    intent = account.find("payment_intent", intent_id) if intent_id else None
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    invoice["payment_intent"] = intent_id
    invoice["charge"] = intent["latest_charge"] if intent else None
    invoice["paid"] = invoice.get("status") == "paid"
    invoice["paid_out_of_band"] = invoice["paid"] and intent is None
    invoice["subscription"] = details.get("subscription")
    invoice["subscription_details"] = (
        {"metadata": copy(details.get("metadata") or {})} if details else None
    )
    invoice["quote"] = None


def _line_before_basil(account: Account, line: Obj) -> None:
    price_id = ((line.get("pricing") or {}).get("price_details") or {}).get("price")
    price = account.find("price", price_id) if price_id else None
    parent = line.get("parent") or {}
    item = parent.get("subscription_item_details")
    invoice_item = parent.get("invoice_item_details")
    details = item or invoice_item or {}
    line["price"] = copy(price) if price else None
    line["plan"] = plan_of(price) if price and price.get("recurring") else None
    line["proration"] = bool(details.get("proration"))
    line["subscription"] = details.get("subscription") or line.get("subscription")
    line["subscription_item"] = (item or {}).get("subscription_item")
    line["invoice_item"] = details.get("invoice_item")
    line["type"] = "subscription" if item else "invoiceitem"


def _subscription_before_basil(account: Account, subscription: Obj) -> None:
    items = (subscription.get("items") or {}).get("data") or []
    if items:
        subscription["current_period_start"] = items[0].get("current_period_start")
        subscription["current_period_end"] = items[0].get("current_period_end")


def _invoice_link_before_basil(account: Account, obj: Obj) -> None:
    intent_id = obj["id"] if obj["object"] == "payment_intent" else obj.get("payment_intent")
    invoice = account.internal.get(str(intent_id), {}).get("invoice") if intent_id else None
    obj["invoice"] = invoice


def _charges_before_2022_11_15(account: Account, payment_intent: Obj) -> None:
    charges = [
        copy(charge)
        for charge in account.all("charge")
        if charge.get("payment_intent") == payment_intent["id"]
    ]
    payment_intent["charges"] = {
        "object": "list",
        "data": charges,
        "has_more": False,
        "total_count": len(charges),
        "url": f"/v1/charges?payment_intent={payment_intent['id']}",
    }


#: What is rendered, newest change first (docs/sandbox.md has the same table).
CHANGES: tuple[Change, ...] = (
    Change(
        "2025-03-31",
        "invoice",
        "`payment_intent`, `charge`, `paid`, `paid_out_of_band`, `subscription`, "
        "`subscription_details` (now `payments` and `parent`)",
        _invoice_before_basil,
    ),
    Change(
        "2025-03-31",
        "line_item",
        "`price`, `plan`, `proration`, `subscription_item`, `invoice_item`, `type` "
        "(now `pricing` and `parent`)",
        _line_before_basil,
    ),
    Change(
        "2025-03-31",
        "subscription",
        "`current_period_start`/`current_period_end` (now on each item)",
        _subscription_before_basil,
    ),
    Change("2025-03-31", "payment_intent", "`invoice`", _invoice_link_before_basil),
    Change("2025-03-31", "charge", "`invoice`", _invoice_link_before_basil),
    Change(
        "2022-11-15",
        "payment_intent",
        "`charges` (a list of its charges; now `latest_charge`)",
        _charges_before_2022_11_15,
    ),
)


def is_older(version: str | None) -> bool:
    """Whether ``version`` asks for shapes older than the current ones."""
    return bool(version) and str(version)[:10] < API_VERSION[:10]


def renderer(account: Account, version: str | None) -> Callable[[Any], Any] | None:
    """A function rendering a (copied) value in ``version``, or None for the current one."""
    if not is_older(version):
        return None
    day = str(version)[:10]
    changes = [change for change in CHANGES if day < change.version]
    if not changes:
        return None

    def render(value: Any) -> Any:
        if isinstance(value, list):
            return [render(item) for item in value]
        if not isinstance(value, dict) or value.get("object") == "event":
            # An event keeps the shapes of its creation (endpoints render it on delivery).
            return value
        for key, child in value.items():
            if isinstance(child, (dict, list)):
                value[key] = render(child)
        kind = value.get("object")
        if isinstance(kind, str) and "id" in value:
            for change in changes:
                if change.kind == kind:
                    change.render(account, value)
        return value

    return render


def default_version(account: Account) -> str | None:
    """The account's default API version (requests without ``Stripe-Version`` and
    webhook endpoints without ``api_version`` use it); None: the current one."""
    found = account.internal.get(_DEFAULT, {}).get("version")
    return str(found) if found else None


def set_default_version(account: Account, version: str | None) -> None:
    """Set (or, with None or "", reset) the account's default API version.

    Raises:
        StripeError: 400 for a malformed version or one newer than the sandbox's.
    """
    if not version:
        account.internal.pop(_DEFAULT, None)
        return
    if not _VERSION.match(version) or version[:10] > API_VERSION[:10]:
        raise invalid(
            f"Invalid API version {version!r}: a date such as 2022-08-01, at most {API_VERSION}.",
            param="version",
        )
    account.internal[_DEFAULT] = {"version": version}


def _shown(account: Account) -> Obj:
    return {"object": "sandbox.api_version", "default": default_version(account) or API_VERSION}


def get_api_version(request: Request) -> Obj:
    return _shown(request.account)


def post_api_version(request: Request) -> Obj:
    """``version``: the account's default API version (empty: the current one)."""
    set_default_version(request.account, optional_str(request.params.get("version")))
    return _shown(request.account)


#: This module's endpoints; ``_app.build_router`` puts every module's table together.
ROUTES: tuple[Endpoint, ...] = (
    Endpoint("GET", "/_sandbox/api_version", get_api_version, control=True),
    Endpoint("POST", "/_sandbox/api_version", post_api_version, control=True),
)
