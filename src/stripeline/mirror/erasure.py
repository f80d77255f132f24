"""Personal data in Stripe objects, scrubbing it, and keeping erased customers erased.

``forget`` (``stripeline.flows.privacy``) records an erasure in
``stripeline_erasures`` before it touches anything. From then on:

* every state written to the mirror about that customer's objects (from an
  event, a re-fetch, a backfill or a call's answer) is scrubbed on its way in
  (``guard_states``, called by ``_store.apply_states``);
* an event about them has its object, its ``previous_attributes`` and its raw
  payload in the inbox scrubbed when the worker processes it, before the
  handlers see it (``guard_events``, called by ``policy.apply_events``).

What is personal (``PERSONAL_KEYS``): email addresses, names, phone numbers,
postal addresses, shipping, billing details, card fingerprints and last
four digits, IP addresses and user agents, tax id values, a customer's
description. Those keys are blanked wherever they appear in the person's
objects (a dict keeps its keys, every value None). Any other string that
contains one of the person's values (an email in a description or in
metadata) has it cut out. Ids, amounts, currencies, dates and statuses are
kept: the financial record stays.

A customer belongs to an object directly (``customer``, or the customer
itself) or through what the mirror holds: a refund or a dispute through its
charge or PaymentIntent, a detached payment method through its own row.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, Table, select, update

from stripeline.db import models

if TYPE_CHECKING:
    from stripeline.mirror._store import State
    from stripeline.mirror.policy import EventObject

erasures = cast(Table, models.Erasure.__table__)
events_table = cast(Table, models.Event.__table__)

#: Keys whose value is personal data, blanked wherever they appear in an
#: erased person's objects.
PERSONAL_KEYS = frozenset(
    {
        # contact
        "email",
        "name",
        "phone",
        "address",
        "shipping",
        "billing_details",
        "receipt_email",
        # invoices and Checkout
        "customer_email",
        "customer_name",
        "customer_address",
        "customer_phone",
        "customer_shipping",
        "customer_details",
        "customer_tax_ids",
        "collected_information",
        # cards and bank accounts
        "fingerprint",
        "last4",
        "dynamic_last4",
        "iin",
        "address_city",
        "address_country",
        "address_line1",
        "address_line2",
        "address_state",
        "address_zip",
        "account_holder_name",
        # mandates, dispute evidence
        "ip_address",
        "user_agent",
        "customer_email_address",
        "customer_purchase_ip",
        "customer_signature",
        "billing_address",
        "shipping_address",
    }
)

#: Keys whose string values are collected as the person's values (cut out of
#: any other string of their objects). Short or structured ones (country,
#: postal code, last4) are only blanked by key.
VALUE_KEYS = frozenset(
    {
        "email",
        "name",
        "phone",
        "receipt_email",
        "customer_email",
        "customer_name",
        "customer_phone",
        "customer_email_address",
        "line1",
        "line2",
        "address_line1",
        "address_line2",
        "account_holder_name",
    }
)

#: The shortest value cut out of other strings (a two-letter name would cut
#: words apart).
MIN_VALUE_LENGTH = 4

#: A Stripe id (``cus_…``, ``pi_…``): never scrubbed.
_ID = re.compile(r"^[a-z][a-z0-9]*_[A-Za-z0-9_]+$")

#: Ids of payment objects that may hold the customer of an object that names none.
_OWNER_TABLES = {
    "payment_method": cast(Table, models.PaymentMethod.__table__),
    "charge": cast(Table, models.Charge.__table__),
    "payment_intent": cast(Table, models.PaymentIntent.__table__),
}


# -- what is personal, and scrubbing it ------------------------------------------


def blank(value: Any) -> Any:
    """``value`` with nothing personal left: a dict keeps its keys (every
    value blanked), a list is empty, anything else is None."""
    if isinstance(value, dict):
        return {key: blank(item) for key, item in value.items()}
    if isinstance(value, list):
        return []
    return None


def personal_values(*objects: Any) -> set[str]:
    """The person's values found in ``objects`` (emails, names, phones, street
    lines), to cut out of any other string."""
    found: set[str] = set()

    def walk(value: Any, key: str | None, owner: Any) -> None:
        if isinstance(value, dict):
            for k, item in value.items():
                walk(item, k, value)
        elif isinstance(value, list):
            for item in value:
                walk(item, key, owner)
        elif isinstance(value, str) and len(value.strip()) >= MIN_VALUE_LENGTH:
            if key in VALUE_KEYS or (
                key == "description"
                and isinstance(owner, dict)
                and owner.get("object") == "customer"
            ):
                if not _ID.match(value):
                    found.add(value.strip())

    for obj in objects:
        walk(obj, None, None)
    return found


def pattern_for(values: Iterable[str]) -> re.Pattern[str] | None:
    """One case-insensitive pattern matching any of ``values`` (None: none)."""
    wanted = sorted({v for v in values if len(v) >= MIN_VALUE_LENGTH}, key=len, reverse=True)
    if not wanted:
        return None
    return re.compile("|".join(re.escape(v) for v in wanted), re.IGNORECASE)


def scrub(value: Any, values: Iterable[str] = ()) -> Any:
    """A copy of ``value`` (an object, an event) without personal data: the
    ``PERSONAL_KEYS`` blanked at any depth, a customer's ``description`` and a
    tax id's ``value`` too, and ``values`` (with those found in ``value``
    itself) cut out of every other string. Ids and numbers are kept."""
    pattern = pattern_for(set(values) | personal_values(value))
    return _scrub(value, pattern)


def _scrub(value: Any, pattern: re.Pattern[str] | None) -> Any:
    if isinstance(value, dict):
        kind = value.get("object")
        out: dict[str, Any] = {}
        for key, item in value.items():
            if (
                key in PERSONAL_KEYS
                or (key == "description" and kind == "customer")
                or (key == "value" and kind == "tax_id")
            ):
                out[key] = blank(item)
            elif key in ("id", "object") and isinstance(item, str):
                out[key] = item
            else:
                out[key] = _scrub(item, pattern)
        return out
    if isinstance(value, list):
        return [_scrub(item, pattern) for item in value]
    if isinstance(value, str) and pattern is not None and not _ID.match(value):
        return pattern.sub("", value)
    return value


def scrub_text(text: str | None, values: Iterable[str]) -> str | None:
    """``text`` (an error message, a traceback) with ``values`` cut out."""
    pattern = pattern_for(values)
    if text is None or pattern is None:
        return text
    return pattern.sub("[erased]", text)


# -- whose an object is ----------------------------------------------------------


def _ref(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return cast(str, value["id"])
    return None


def direct_owner(obj: Mapping[str, Any]) -> str | None:
    """The customer an object names: the customer itself, or its ``customer``."""
    if obj.get("object") == "customer":
        return _ref(obj.get("id"))
    return _ref(obj.get("customer"))


def _lookups(obj: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(object type, id) of mirrored objects whose customer this one's is."""
    found: list[tuple[str, str]] = []
    if obj.get("object") == "payment_method" and isinstance(obj.get("id"), str):
        found.append(("payment_method", obj["id"]))
    for key in ("charge", "payment_intent"):
        ref = _ref(obj.get(key))
        if ref is not None:
            found.append((key, ref))
    return found


def erased_owners(
    conn: Connection, objects: Sequence[tuple[str, Mapping[str, Any]]]
) -> list[str | None]:
    """For each (account, object): the erased customer it belongs to, or None.

    One query on ``stripeline_erasures`` (an index lookup); objects that name
    no customer first look theirs up in the mirror (one query per table).
    When no erasure was ever recorded, one read of a single row says so and
    nothing else is queried. It is asked of the database in the caller's
    transaction every time, never remembered: an erasure another process
    records is seen by the next batch, exactly as the lookups would see it."""
    if not objects or not any_erasure(conn):
        return [None] * len(objects)
    owners: list[str | None] = []
    indirect: dict[tuple[str, str], set[str]] = {}
    for account, obj in objects:
        owner = direct_owner(obj)
        owners.append(owner)
        if owner is None:
            for object_type, object_id in _lookups(obj):
                indirect.setdefault((account, object_type), set()).add(object_id)
    held: dict[tuple[str, str], str] = {}
    for (account, object_type), ids in indirect.items():
        table = _OWNER_TABLES[object_type]
        rows = conn.execute(
            select(table.c.id, table.c.customer).where(
                table.c.account == account,
                table.c.id.in_(sorted(ids)),
                table.c.customer.is_not(None),
            )
        )
        held.update({(account, row.id): row.customer for row in rows})
    candidates: list[str | None] = []
    for (account, obj), owner in zip(objects, owners, strict=True):
        if owner is None:
            for _, object_id in _lookups(obj):
                owner = held.get((account, object_id))
                if owner is not None:
                    break
        candidates.append(owner)
    wanted = {(account, c) for (account, _), c in zip(objects, candidates, strict=True) if c}
    if not wanted:
        return [None] * len(objects)
    erased = set(_erased(conn, wanted))
    return [
        c if c is not None and (account, c) in erased else None
        for (account, _), c in zip(objects, candidates, strict=True)
    ]


def any_erasure(conn: Connection) -> bool:
    """Whether ``stripeline_erasures`` holds any row (one primary-key read)."""
    return conn.exec_driver_sql("SELECT 1 FROM stripeline_erasures LIMIT 1").first() is not None


def _erased(conn: Connection, wanted: set[tuple[str, str]]) -> list[tuple[str, str]]:
    by_account: dict[str, list[str]] = {}
    for account, customer in wanted:
        by_account.setdefault(account, []).append(customer)
    found: list[tuple[str, str]] = []
    for account, customers in by_account.items():
        rows = conn.execute(
            select(erasures.c.customer_id)
            .where(erasures.c.account == account, erasures.c.customer_id.in_(sorted(customers)))
            .distinct()
        )
        found.extend((account, row.customer_id) for row in rows)
    return found


# -- the guards ------------------------------------------------------------------


def guard_states(conn: Connection, states: Sequence[State]) -> list[State]:
    """``states`` with those of erased customers' objects scrubbed. States
    from events were scrubbed with their event (``guard_events``): only the
    others (re-fetches, backfill, calls' answers) are looked at."""
    looked = [i for i, state in enumerate(states) if state.event_id is None]
    if not looked:
        return list(states)
    owners = erased_owners(conn, [(states[i].account, states[i].data) for i in looked])
    out = list(states)
    for i, owner in zip(looked, owners, strict=True):
        if owner is not None:
            out[i] = replace(states[i], data=scrub(states[i].data))
    return out


def guard_events(conn: Connection, events: Sequence[EventObject]) -> int:
    """Scrub, in place, the bodies of ``events`` about erased customers'
    objects (their object and ``previous_attributes``: handlers and the
    mirror then see no personal data), and their raw payloads in the inbox;
    return how many were scrubbed."""
    pairs: list[tuple[str, Mapping[str, Any]]] = []
    about: list[EventObject] = []
    for event in events:
        data = event.body.get("data") if isinstance(event.body, dict) else None
        obj = data.get("object") if isinstance(data, dict) else None
        if isinstance(obj, dict):
            pairs.append((event.account or "", obj))
            about.append(event)
    if not pairs:
        return 0
    scrubbed = 0
    for event, owner in zip(about, erased_owners(conn, pairs), strict=True):
        if owner is None:
            continue
        clean = scrub(event.body)
        if clean == event.body:
            continue
        event.body.clear()
        event.body.update(clean)
        conn.execute(
            update(events_table)
            .where(events_table.c.id == event.id)
            .values(payload=json.dumps(clean, separators=(",", ":")).encode())
        )
        scrubbed += 1
    return scrubbed
