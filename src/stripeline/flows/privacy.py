"""GDPR: erase a person (``forget``) and hand over what is held about them (``export``).

``forget(app, user_id)`` finds the user's Stripe customer (the customer link),
then:

1. records the erasure in ``stripeline_erasures`` (``stripe_action`` is
   ``pending`` until the end): from that moment every webhook, re-fetch or
   call answer about the customer's objects is scrubbed on its way into the
   mirror and the inbox (``stripeline.mirror.erasure``), so a late
   ``customer.deleted`` or ``charge.updated`` cannot bring the data back;
2. at Stripe, deletes the customer (``customer:delete`` through
   ``app.calls``), or, while the mirror holds open or draft invoices or a
   dispute not closed for it, anonymises it instead (email, name, phone,
   address, shipping, description and metadata emptied) and says why;
3. scrubs personal data from every mirror row of the customer's objects
   (the customer, its payment methods, PaymentIntents, charges, refunds,
   invoices and their lines, subscriptions, Checkout Sessions, disputes, the
   generic table's objects naming it), from the raw payloads of the inbox's
   events about them (and their errors and attempts' errors), and from the
   answers the call ledger recorded; ids, amounts, currencies, dates and
   statuses are kept;
4. removes the customer links and completes the erasure record.

Every step can run again: a second ``forget`` (or one after a crash half-way)
finds the erasure record by the customer, or by the user id once the link is
gone, skips what Stripe already did and scrubs again. A customer anonymised
because of an open invoice is deleted by a ``forget`` made once it is settled.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

import structlog
from sqlalchemy import Connection, Table, or_, select, text, update

from stripeline.db import models
from stripeline.db.engine import connect, read
from stripeline.errors import ErasureRefused, StripeInvalidRequestError
from stripeline.inbox import utcnow
from stripeline.mirror._store import lock_objects, object_key
from stripeline.mirror.erasure import (
    direct_owner,
    pattern_for,
    personal_values,
    scrub,
    scrub_text,
)
from stripeline.mirror.links import links, users_for_customer
from stripeline.mirror.tables import TYPED, table_for

if TYPE_CHECKING:
    from stripeline.app import Stripeline
    from stripeline.gateway import StripeClient

__all__ = [
    "CLOSED_DISPUTE_STATUSES",
    "OPEN_INVOICE_STATUSES",
    "ErasureReport",
    "export",
    "export_async",
    "forget",
    "forget_async",
    "forget_customer",
    "forget_customer_async",
]

log = structlog.get_logger("stripeline.privacy")

#: Invoice statuses that keep a customer from being deleted.
OPEN_INVOICE_STATUSES = ("draft", "open")
#: Dispute statuses that no longer keep a customer from being deleted.
CLOSED_DISPUTE_STATUSES = ("won", "lost", "warning_closed", "prevented")
#: What an anonymised customer is updated with (Stripe unsets a field sent empty).
ANONYMISED: dict[str, Any] = {
    "email": "",
    "name": "",
    "phone": "",
    "address": "",
    "shipping": "",
    "description": "",
    "metadata": "",
}

erasures = cast(Table, models.Erasure.__table__)
events = cast(Table, models.Event.__table__)
attempts = cast(Table, models.Attempt.__table__)
calls = cast(Table, models.Call.__table__)
generic = cast(Table, models.StripeObject.__table__)
lines = cast(Table, models.InvoiceLine.__table__)

_T = {
    name: cast(Table, model.__table__)
    for name, model in {
        "customer": models.Customer,
        "payment_method": models.PaymentMethod,
        "payment_intent": models.PaymentIntent,
        "charge": models.Charge,
        "refund": models.Refund,
        "invoice": models.Invoice,
        "subscription": models.Subscription,
        "checkout.session": models.CheckoutSession,
        "dispute": models.Dispute,
    }.items()
}
#: Export sections, in order: (key, object type).
_SECTIONS = (
    ("payment_methods", "payment_method"),
    ("payment_intents", "payment_intent"),
    ("charges", "charge"),
    ("refunds", "refund"),
    ("invoices", "invoice"),
    ("subscriptions", "subscription"),
    ("checkout_sessions", "checkout.session"),
    ("disputes", "dispute"),
)


@dataclass(frozen=True)
class ErasureReport:
    """What ``forget`` did (the ``stripeline_erasures`` row, added up over runs)."""

    account: str
    app_user_id: str | None
    customer_id: str | None
    #: ``deleted`` | ``anonymised`` | ``not_found`` (no such customer, here or
    #: at Stripe) | ``not_called`` (no Stripe key configured).
    stripe_action: str
    #: Why the customer was anonymised rather than deleted (None when deleted).
    reason: str | None
    #: Mirror rows and recorded call answers that held personal data, scrubbed.
    mirror_rows: int
    #: Raw event payloads in the inbox that held personal data, scrubbed.
    event_payloads: int
    erased_at: datetime
    #: True when an earlier ``forget`` had already begun erasing this customer.
    repeated: bool = False


@dataclass
class _Held:
    """The mirror rows of one person, by object type (``data`` of each)."""

    customer: dict[str, Any] | None = None
    rows: dict[str, list[Any]] = field(default_factory=dict)
    generic: list[Any] = field(default_factory=list)
    lines: list[Any] = field(default_factory=list)

    def ids(self) -> set[str]:
        found = {row.id for rows in self.rows.values() for row in rows}
        found.update(row.id for row in self.generic)
        return found

    def objects(self) -> list[dict[str, Any]]:
        found = [dict(row.data) for rows in self.rows.values() for row in rows]
        found.extend(dict(row.data) for row in self.generic)
        found.extend(dict(row.data) for row in self.lines)
        return found


# -- forget ------------------------------------------------------------------------


def forget(app: Stripeline, user_id: str, *, account: str | None = None) -> ErasureReport:
    """Erase the application user ``user_id``'s personal data: at Stripe
    (their customer deleted, or anonymised where open invoices or disputes
    forbid deletion) and here (mirror, inbox payloads, call answers); record
    the erasure. Idempotent, and safe to run again after a crash.

    Raises:
        ErasureRefused: the user's Stripe customer also serves other users of
            the application (``forget_customer`` erases it for all of them).
        ModeMismatch: the customer is an object of the other mode.
        StripeAPIError: Stripe refused the deletion or could not be reached
            (nothing is lost: run ``forget`` again).
    """
    account_key = account or ""
    customer_id = _linked(app, account_key, user_id)
    if customer_id is not None:
        others = [
            u for u in users_for_customer(app.engine, account_key, customer_id) if u != user_id
        ]
        if others:
            raise ErasureRefused(
                f"{customer_id} also serves {len(others)} other user(s) of the application; "
                "forget them too, or erase the customer for all with forget_customer()"
            )
    else:
        customer_id = _erased_before(app, account_key, user_id)
    return _erase(app, account_key, user_id, customer_id)


def forget_customer(
    app: Stripeline, customer_id: str, *, account: str | None = None
) -> ErasureReport:
    """``forget`` by Stripe customer id: the customer is erased, and every
    application user linked to it is unlinked.

    Raises:
        ModeMismatch: the customer is an object of the other mode.
        StripeAPIError: Stripe refused the deletion or could not be reached.
    """
    account_key = account or ""
    users = users_for_customer(app.engine, account_key, customer_id)
    return _erase(app, account_key, users[0] if len(users) == 1 else None, customer_id)


async def forget_async(
    app: Stripeline, user_id: str, *, account: str | None = None
) -> ErasureReport:
    """``forget`` in a worker thread. Raises what ``forget`` raises."""
    return await asyncio.to_thread(forget, app, user_id, account=account)


async def forget_customer_async(
    app: Stripeline, customer_id: str, *, account: str | None = None
) -> ErasureReport:
    """``forget_customer`` in a worker thread. Raises what it raises."""
    return await asyncio.to_thread(forget_customer, app, customer_id, account=account)


def _linked(app: Stripeline, account: str, user_id: str) -> str | None:
    query = select(links.c.customer_id).where(
        links.c.account == account, links.c.app_user_id == user_id
    )
    return read(app.engine, lambda conn: conn.execute(query).scalar_one_or_none())


def _erased_before(app: Stripeline, account: str, user_id: str) -> str | None:
    """The customer an earlier erasure of ``user_id`` found (its link is gone)."""
    query = (
        select(erasures.c.customer_id)
        .where(
            erasures.c.account == account,
            erasures.c.app_user_id == user_id,
            erasures.c.customer_id.is_not(None),
        )
        .order_by(erasures.c.id.desc())
        .limit(1)
    )
    return read(app.engine, lambda conn: conn.execute(query).scalar_one_or_none())


def _erase(
    app: Stripeline, account: str, user_id: str | None, customer_id: str | None
) -> ErasureReport:
    if customer_id is not None and app.settings.stripe_secret_key is not None:
        # Before anything is recorded: a customer of the other mode is not ours to erase.
        app.calls.check_mode(customer_id, account=account or None)
    row, repeated = _begin(app, account, user_id, customer_id)
    action: str = row.stripe_action
    reason: str | None = row.reason
    if customer_id is None:
        action, reason = "not_found", None
    elif action not in ("deleted", "not_found"):
        action, reason = _at_stripe(app, account, customer_id)
        _set(app, row.id, stripe_action=action, reason=reason)
    mirror_rows = event_payloads = 0
    if customer_id is not None:
        mirror_rows, event_payloads = _scrub(app, account, customer_id)
        with connect(app.engine) as conn:
            conn.execute(
                links.delete().where(links.c.account == account, links.c.customer_id == customer_id)
            )
    now = utcnow()
    values = {
        "stripe_action": action,
        "reason": reason,
        "mirror_rows": row.mirror_rows + mirror_rows,
        "event_payloads": row.event_payloads + event_payloads,
        "erased_at": now,
    }
    _set(app, row.id, **values)
    log.info(
        "customer_erased",
        action="customer_erased",
        customer=customer_id,
        stripe_action=action,
        mirror_rows=mirror_rows,
        event_payloads=event_payloads,
        repeated=repeated,
    )
    return ErasureReport(
        account=account,
        app_user_id=user_id if user_id is not None else row.app_user_id,
        customer_id=customer_id,
        stripe_action=action,
        reason=reason,
        mirror_rows=values["mirror_rows"],
        event_payloads=values["event_payloads"],
        erased_at=now,
        repeated=repeated,
    )


def _begin(
    app: Stripeline, account: str, user_id: str | None, customer_id: str | None
) -> tuple[Any, bool]:
    """The erasure's row: the one an earlier run left, or a new ``pending`` one
    (committed before anything else is done: the guards act from then on)."""
    if customer_id is not None:
        this = erasures.c.customer_id == customer_id
    else:
        this = (erasures.c.customer_id.is_(None)) & (erasures.c.app_user_id == user_id)
    query = (
        select(erasures).where(erasures.c.account == account, this).order_by(erasures.c.id).limit(1)
    )
    with connect(app.engine) as conn:
        if customer_id is not None:
            # One erasure of a customer at a time (PostgreSQL; SQLite has one writer).
            lock_objects(conn, [object_key(account, f"erasure:{customer_id}")])
        row = conn.execute(query).first()
        if row is not None:
            return row, True
        conn.execute(
            erasures.insert().values(
                account=account,
                app_user_id=user_id,
                customer_id=customer_id,
                stripe_action="pending",
                reason=None,
                mirror_rows=0,
                event_payloads=0,
                erased_at=utcnow(),
            )
        )
        return conn.execute(query).one(), False


def _set(app: Stripeline, erasure_id: int, **values: Any) -> None:
    with connect(app.engine) as conn:
        conn.execute(update(erasures).where(erasures.c.id == erasure_id).values(**values))


# -- at Stripe -----------------------------------------------------------------------


def _options(account: str) -> dict[str, Any]:
    return {"stripe_account": account} if account else {}


def _at_stripe(app: Stripeline, account: str, customer_id: str) -> tuple[str, str | None]:
    """Delete the customer at Stripe, or anonymise it; (action, reason)."""
    if app.settings.stripe_secret_key is None:
        return "not_called", "no Stripe key is configured: nothing was sent to Stripe"
    reason = read(app.engine, lambda conn: _blockers(conn, account, customer_id))
    try:
        if reason is not None:

            def anonymise(client: StripeClient, key: str) -> Any:
                options: Any = {"idempotency_key": key, **_options(account)}
                return client.v1.customers.update(customer_id, cast(Any, ANONYMISED), options)

            app.calls.run(
                "customer:anonymise", customer_id, ANONYMISED, anonymise, account=account or None
            )
            return "anonymised", reason

        def delete(client: StripeClient, key: str) -> Any:
            # DELETE is idempotent at Stripe: no idempotency key to send.
            options: Any = _options(account)
            return client.v1.customers.delete(customer_id, options=options)

        sent_before = app.calls.record("customer:delete", customer_id, account=account or None)
        try:
            app.calls.run("customer:delete", customer_id, {}, delete, account=account or None)
        except StripeInvalidRequestError as exc:
            if _missing(exc) and sent_before is not None and sent_before.attempts > 0:
                # Our own earlier deletion went through; its answer was lost.
                return "deleted", None
            raise
        return "deleted", None
    except StripeInvalidRequestError as exc:
        if _missing(exc):
            return "not_found", None
        raise


def _missing(exc: StripeInvalidRequestError) -> bool:
    return exc.code == "resource_missing" or exc.http_status == 404


def _blockers(conn: Connection, account: str, customer_id: str) -> str | None:
    """Why Stripe's customer should be anonymised rather than deleted (None:
    nothing keeps it), from what the mirror holds."""
    invoices = _T["invoice"]
    open_invoices = conn.execute(
        select(invoices.c.id, invoices.c.status)
        .where(
            invoices.c.account == account,
            invoices.c.customer == customer_id,
            invoices.c.status.in_(OPEN_INVOICE_STATUSES),
            invoices.c.deleted.is_(False),
        )
        .order_by(invoices.c.id)
    ).all()
    charges, intents, disputes = _T["charge"], _T["payment_intent"], _T["dispute"]
    charge_ids = select(charges.c.id).where(
        charges.c.account == account, charges.c.customer == customer_id
    )
    intent_ids = select(intents.c.id).where(
        intents.c.account == account, intents.c.customer == customer_id
    )
    open_disputes = conn.execute(
        select(disputes.c.id, disputes.c.status)
        .where(
            disputes.c.account == account,
            or_(disputes.c.charge.in_(charge_ids), disputes.c.payment_intent.in_(intent_ids)),
            or_(
                disputes.c.status.is_(None),
                disputes.c.status.not_in(CLOSED_DISPUTE_STATUSES),
            ),
        )
        .order_by(disputes.c.id)
    ).all()
    parts = []
    if open_invoices:
        listed = ", ".join(f"{i} ({status})" for i, status in open_invoices)
        parts.append(f"{len(open_invoices)} open or draft invoice(s): {listed}")
    if open_disputes:
        listed = ", ".join(f"{i} ({status})" for i, status in open_disputes)
        parts.append(f"{len(open_disputes)} dispute(s) not closed: {listed}")
    if not parts:
        return None
    return (
        "; ".join(parts)
        + ". The customer was anonymised at Stripe instead of deleted (its invoices and "
        "disputes need it); forget again once they are settled to delete it."
    )


# -- what is held ------------------------------------------------------------------


def _held(conn: Connection, account: str, customer_id: str) -> _Held:
    """Every mirror row of the customer's objects."""
    held = _Held()

    def rows(object_type: str, *conditions: Any) -> list[Any]:
        table = _T[object_type]
        if not conditions:
            return []
        found = conn.execute(
            select(table).where(table.c.account == account, or_(*conditions)).order_by(table.c.id)
        ).all()
        return list(found)

    customers = rows("customer", _T["customer"].c.id == customer_id)
    held.rows["customer"] = customers
    held.customer = dict(customers[0].data) if customers else None
    for object_type in ("payment_intent", "charge", "invoice", "subscription", "checkout.session"):
        held.rows[object_type] = rows(object_type, _T[object_type].c.customer == customer_id)
    charge_ids = {row.id for row in held.rows["charge"]}
    charge_ids.update(row.latest_charge for row in held.rows["payment_intent"] if row.latest_charge)
    intent_ids = {row.id for row in held.rows["payment_intent"]}
    intent_ids.update(row.payment_intent for row in held.rows["charge"] if row.payment_intent)
    method_ids = {
        row.payment_method
        for object_type in ("payment_intent", "charge")
        for row in held.rows[object_type]
        if row.payment_method
    }
    method_ids.update(
        row.default_payment_method
        for row in held.rows["subscription"]
        if row.default_payment_method
    )
    method_ids.update(row.default_payment_method for row in customers if row.default_payment_method)
    methods = _T["payment_method"]
    held.rows["payment_method"] = rows(
        "payment_method",
        methods.c.customer == customer_id,
        *([methods.c.id.in_(sorted(method_ids))] if method_ids else []),
    )
    for object_type in ("refund", "dispute"):
        table = _T[object_type]
        conditions = []
        if charge_ids:
            conditions.append(table.c.charge.in_(sorted(charge_ids)))
        if intent_ids:
            conditions.append(table.c.payment_intent.in_(sorted(intent_ids)))
        held.rows[object_type] = rows(object_type, *conditions)
    # Other object types naming the customer (tax ids, sources, discounts, …).
    held.generic = list(
        conn.execute(
            select(generic)
            .where(
                generic.c.account == account,
                or_(generic.c.data["customer"].as_string() == customer_id),
            )
            .order_by(generic.c.id)
        ).all()
    )
    invoice_ids = sorted(row.id for row in held.rows["invoice"])
    if invoice_ids:
        held.lines = list(
            conn.execute(
                select(lines)
                .where(lines.c.account == account, lines.c.invoice.in_(invoice_ids))
                .order_by(lines.c.invoice, lines.c.position)
            ).all()
        )
    return held


def _event_rows(conn: Connection, account: str, customer_id: str, ids: Iterable[str]) -> list[Any]:
    """The inbox's events about the objects ``ids``, and those not processed
    (pending, failed, dead, of the other mode: few) whose object names the
    customer though the mirror does not hold it."""
    wanted = sorted(set(ids))
    account_is = events.c.account.is_(None) if not account else events.c.account == account
    columns = (events.c.id, events.c.payload, events.c.last_error, events.c.last_traceback)
    found: dict[str, Any] = {}
    for start in range(0, len(wanted), 500):
        about = events.c.object_id.in_(wanted[start : start + 500])
        # The index by object leaves the pending events out (its condition,
        # written as in the index, lets the planner read it); the pending
        # ones come from the (status, received_at, id) index.
        for half in (text(models.NOT_PENDING), events.c.status == "pending"):
            for row in conn.execute(select(*columns).where(account_is, about, half)):
                found[row.id] = row
    for row in conn.execute(select(*columns).where(account_is, events.c.status != "processed")):
        if row.id in found:
            continue
        body = _body(row.payload)
        data = body.get("data") if isinstance(body, dict) else None
        obj = data.get("object") if isinstance(data, dict) else None
        if isinstance(obj, dict) and direct_owner(obj) == customer_id:
            found[row.id] = row
    return list(found.values())


def _body(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except ValueError:
        return None


# -- scrubbing -----------------------------------------------------------------------


def _scrub(app: Stripeline, account: str, customer_id: str) -> tuple[int, int]:
    """Scrub the customer's objects in the mirror, the inbox's events about
    them and the call ledger's answers; (rows, payloads) changed."""
    with connect(app.engine) as conn:
        # Lock the objects first (PostgreSQL): a worker applying an event
        # about one of them finishes before, or starts after, and then sees
        # the erasure (its guard scrubs what it writes).
        held = _held(conn, account, customer_id)
        ids = held.ids() | {customer_id}
        lock_objects(conn, [object_key(account, i) for i in ids])
        held = _held(conn, account, customer_id)
        ids = held.ids() | {customer_id}
        found = _event_rows(conn, account, customer_id, ids)
        bodies = {row.id: _body(row.payload) for row in found}
        values = personal_values(*held.objects(), *(b for b in bodies.values() if b is not None))
        mirror_rows = _scrub_mirror(conn, held, values)
        mirror_rows += _scrub_calls(conn, account, ids, values)
        payloads = _scrub_events(conn, found, bodies, values)
    return mirror_rows, payloads


def _scrub_mirror(conn: Connection, held: _Held, values: set[str]) -> int:
    changed = 0
    now = utcnow()
    everything: list[tuple[Table, str | None, Any]] = [
        (table_for(t).table, t, row) for t, rows in held.rows.items() for row in rows
    ]
    everything.extend((generic, None, row) for row in held.generic)
    for table, object_type, row in everything:
        data = dict(row.data)
        clean = scrub(data, values)
        if clean == data:
            continue
        kind = clean.get("object") if isinstance(clean.get("object"), str) else object_type
        mirror_table = TYPED.get(kind or "") if table is not generic else None
        columns = mirror_table.columns(clean) if mirror_table is not None else {}
        # Only over the state read: a newer one a worker wrote meanwhile was
        # scrubbed by its guard.
        result = conn.execute(
            update(table)
            .where(
                table.c.account == row.account,
                table.c.id == row.id,
                table.c.marker == row.marker,
                table.c.marker_rank == row.marker_rank,
            )
            .values(data=clean, updated_at=now, **columns)
        )
        changed += result.rowcount
    pattern = pattern_for(values)
    for line in held.lines:
        data = dict(line.data)
        clean = scrub(data, values)
        description = (
            pattern.sub("", line.description) if pattern and line.description else line.description
        )
        if clean == data and description == line.description:
            continue
        conn.execute(
            update(lines)
            .where(
                lines.c.account == line.account,
                lines.c.invoice == line.invoice,
                lines.c.id == line.id,
            )
            .values(data=clean, description=description, updated_at=now)
        )
        changed += 1
    return changed


def _scrub_calls(conn: Connection, account: str, ids: set[str], values: set[str]) -> int:
    changed = 0
    wanted = sorted(ids)
    for start in range(0, len(wanted), 500):
        rows = conn.execute(
            select(calls.c.key, calls.c.result).where(
                calls.c.account == account,
                calls.c.object_id.in_(wanted[start : start + 500]),
                calls.c.result.is_not(None),
            )
        ).all()
        for row in rows:
            clean = scrub(row.result, values)
            if clean != row.result:
                conn.execute(
                    update(calls)
                    .where(calls.c.account == account, calls.c.key == row.key)
                    .values(result=clean)
                )
                changed += 1
    return changed


def _scrub_events(
    conn: Connection, found: list[Any], bodies: dict[str, Any], values: set[str]
) -> int:
    changed = 0
    for row in found:
        body = bodies[row.id]
        values_here = dict.fromkeys(("payload", "last_error", "last_traceback"))
        if body is not None:
            clean = scrub(body, values)
            if clean != body:
                values_here["payload"] = json.dumps(clean, separators=(",", ":")).encode()
        values_here["last_error"] = scrub_text(row.last_error, values)
        values_here["last_traceback"] = scrub_text(row.last_traceback, values)
        update_values = {
            key: value
            for key, value in values_here.items()
            if value is not None and value != getattr(row, key)
        }
        if update_values:
            conn.execute(update(events).where(events.c.id == row.id).values(**update_values))
            if "payload" in update_values:
                changed += 1
        for attempt in conn.execute(
            select(attempts.c.id, attempts.c.error, attempts.c.traceback).where(
                attempts.c.event_id == row.id,
                or_(attempts.c.error.is_not(None), attempts.c.traceback.is_not(None)),
            )
        ).all():
            error = scrub_text(attempt.error, values)
            tb = scrub_text(attempt.traceback, values)
            if (error, tb) != (attempt.error, attempt.traceback):
                conn.execute(
                    update(attempts)
                    .where(attempts.c.id == attempt.id)
                    .values(error=error, traceback=tb)
                )
    return changed


# -- export --------------------------------------------------------------------------


def export(app: Stripeline, user_id: str, *, account: str | None = None) -> dict[str, Any]:
    """Everything held about the application user ``user_id``, as plain JSON
    types: the customer link, the Stripe customer and its payment methods,
    PaymentIntents, charges, refunds, invoices (with their lines),
    subscriptions, Checkout Sessions and disputes as the mirror holds them,
    and the erasures made of them. After ``forget``, what is left (the
    financial records without personal data, and the erasure).

    Raises:
        DatabaseUnavailable: the database did not answer.
    """
    account_key = account or ""
    customer_id = _linked(app, account_key, user_id)
    linked = customer_id is not None
    if customer_id is None:
        customer_id = _erased_before(app, account_key, user_id)

    def collect(conn: Connection) -> dict[str, Any]:
        link = conn.execute(
            select(links).where(links.c.account == account_key, links.c.app_user_id == user_id)
        ).first()
        held = _held(conn, account_key, customer_id) if customer_id else _Held()
        line_data: dict[str, list[dict[str, Any]]] = {}
        for line in held.lines:
            line_data.setdefault(line.invoice, []).append(dict(line.data))
        done = conn.execute(
            select(erasures)
            .where(
                erasures.c.account == account_key,
                or_(
                    erasures.c.app_user_id == user_id,
                    *([erasures.c.customer_id == customer_id] if customer_id else []),
                ),
            )
            .order_by(erasures.c.id)
        ).all()
        doc: dict[str, Any] = {
            "user_id": user_id,
            "account": account or None,
            "exported_at": utcnow().isoformat(),
            "customer_id": customer_id,
            "link": None
            if link is None
            else {"customer_id": link.customer_id, "created_at": link.created_at.isoformat()},
            "customer": held.customer,
        }
        for key, object_type in _SECTIONS:
            doc[key] = [dict(row.data) for row in held.rows.get(object_type, [])]
        for invoice in doc["invoices"]:
            if invoice.get("id") in line_data:
                invoice["mirrored_lines"] = line_data[invoice["id"]]
        doc["other_objects"] = [dict(row.data) for row in held.generic]
        doc["erasures"] = [
            {
                "customer_id": row.customer_id,
                "app_user_id": row.app_user_id,
                "stripe_action": row.stripe_action,
                "reason": row.reason,
                "mirror_rows": row.mirror_rows,
                "event_payloads": row.event_payloads,
                "erased_at": row.erased_at.isoformat(),
            }
            for row in done
        ]
        return doc

    doc = read(app.engine, collect)
    doc["linked"] = linked
    # Plain JSON types only (the JSON columns hold them already; this proves it).
    return cast(dict[str, Any], json.loads(json.dumps(doc)))


async def export_async(
    app: Stripeline, user_id: str, *, account: str | None = None
) -> dict[str, Any]:
    """``export`` in a worker thread. Raises what ``export`` raises."""
    return await asyncio.to_thread(export, app, user_id, account=account)
