"""Disputes from first notice to outcome, with deadlines nobody misses.

::

    disputes = Disputes(app)                 # app.disputes

    @disputes.on_due
    def page_support(alarm: DueAlarm) -> None:
        notify(f"{alarm.case.id}: evidence due in {alarm.lead_days} day(s)")

    @disputes.on_closed
    def book(case: DisputeCase) -> None:
        ledger.record(case.id, case.outcome, case.funds.net)

    for case in disputes.due(within=timedelta(days=7)):
        ...
    disputes.submit(case.id, disputes.build_evidence(case.id, product_description="A book"))

What it follows: every dispute is in the mirror (``stripeline_disputes``, kept
by every ``charge.dispute.*`` event); a ``DisputeCase`` joins it to its charge,
PaymentIntent, customer, the application's order (metadata
``stripeline_order_id`` on the dispute, the PaymentIntent or the charge) and
any early fraud warning on the same charge, and reads the outcome and the
funds withdrawn and reinstated (with fees) from its balance transactions.

Deadlines: ``check_deadlines`` (run by the worker every
``DEADLINE_CHECK_SECONDS``, and at its start) fires an alarm for each open
dispute whose ``evidence_details.due_by`` is within a lead time (7, 3 and 1
days by default): a ``dispute_due`` log line and the ``on_due`` hooks. Each
alarm is taken in the once table (``dispute-due:<id>:<hours>h``) in the
transaction that runs the hooks: once per dispute and lead time, whatever the
number of workers. An alarm missed while nothing ran fires when a worker comes
back; when several lead times passed meanwhile, only the nearest fires (the
others are marked as passed, not fired). A hook that raises rolls its alarm
back: it fires again at the next check (hooks are at least once, like
handlers).

Writes go through ``app.calls`` (``dispute:submit``, ``dispute:save``,
``dispute:close``, ``file:create``): the same call again is answered from the
ledger without reaching Stripe. Evidence after ``due_by`` is refused before
any call (``DisputeDeadlinePassed``).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast

import structlog
from sqlalchemy import Connection, Engine, Table, select
from sqlalchemy.exc import SQLAlchemyError

from stripeline.app import ReceivedEvent, once_keys, take_once
from stripeline.db import models
from stripeline.db.engine import connect, read
from stripeline.errors import DisputeDeadlinePassed, DisputeNotFound, DisputeNotOpen
from stripeline.flows._twin import in_thread
from stripeline.flows.calls import params_hash
from stripeline.inbox import utcnow
from stripeline.mirror._store import get_object
from stripeline.mirror.mapping import dispute_columns
from stripeline.mirror.reader import Mirror

if TYPE_CHECKING:
    from stripeline.app import Stripeline

__all__ = [
    "CLOSED_STATUSES",
    "DEADLINE_CHECK_SECONDS",
    "DEFAULT_LEAD_DAYS",
    "EVIDENCE_FIELDS",
    "FILE_FIELDS",
    "OPEN_STATUSES",
    "ORDER_METADATA_KEY",
    "REVIEW_STATUSES",
    "DisputeCase",
    "Disputes",
    "DueAlarm",
    "Funds",
]

log = structlog.get_logger("stripeline.disputes")

#: Statuses in which evidence can still be given.
OPEN_STATUSES = ("needs_response", "warning_needs_response")
#: Statuses after evidence was submitted, waiting for the network's decision.
REVIEW_STATUSES = ("under_review", "warning_under_review")
#: The outcomes: a dispute in one of these is over.
CLOSED_STATUSES = ("won", "lost", "warning_closed", "prevented")
#: Alarm lead times before ``due_by``, in days.
DEFAULT_LEAD_DAYS = (7, 3, 1)
#: How often the worker checks the deadlines (seconds).
DEADLINE_CHECK_SECONDS = 60.0
#: The metadata key naming the application's order (on the dispute, the
#: PaymentIntent or the charge).
ORDER_METADATA_KEY = "stripeline_order_id"
#: Stripe's dispute evidence fields (``Dispute.evidence``).
EVIDENCE_FIELDS = (
    "access_activity_log", "billing_address", "cancellation_policy",
    "cancellation_policy_disclosure", "cancellation_rebuttal", "customer_communication",
    "customer_email_address", "customer_name", "customer_purchase_ip", "customer_signature",
    "duplicate_charge_documentation", "duplicate_charge_explanation", "duplicate_charge_id",
    "product_description", "receipt", "refund_policy", "refund_policy_disclosure",
    "refund_refusal_explanation", "service_date", "service_documentation", "shipping_address",
    "shipping_carrier", "shipping_date", "shipping_documentation", "shipping_tracking_number",
    "uncategorized_file", "uncategorized_text",
)  # fmt: skip
#: Evidence fields that take a file id (``File`` with ``purpose=dispute_evidence``).
FILE_FIELDS = (
    "cancellation_policy", "customer_communication", "customer_signature",
    "duplicate_charge_documentation", "receipt", "refund_policy", "service_documentation",
    "shipping_documentation", "uncategorized_file",
)  # fmt: skip
EFW_TYPE = "radar.early_fraud_warning"

disputes_table = cast(Table, models.Dispute.__table__)
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Funds:
    """Money the dispute moved, in the smallest currency unit (all positive):
    what was withdrawn and its fee, what was reinstated and its fee."""

    withdrawn: int = 0
    withdrawn_fee: int = 0
    reinstated: int = 0
    reinstated_fee: int = 0

    @property
    def net(self) -> int:
        """The balance change over the dispute (negative: a loss, fees included)."""
        return self.reinstated - self.reinstated_fee - self.withdrawn - self.withdrawn_fee


@dataclass(frozen=True)
class DisputeCase:
    """A dispute joined to what it is about, read from the mirror."""

    id: str
    account: str
    livemode: bool
    status: str
    reason: str | None
    amount: int | None
    currency: str | None
    #: ``evidence_details.due_by`` (None: no response is allowed).
    due_by: datetime | None
    has_evidence: bool
    submission_count: int
    charge: str | None
    payment_intent: str | None
    customer: str | None
    #: The application's order (metadata ``stripeline_order_id``).
    order_id: str | None
    #: Early fraud warnings on the same charge.
    early_fraud_warnings: tuple[str, ...]
    funds: Funds
    created: datetime | None
    #: The dispute exactly as Stripe last described it.
    data: dict[str, Any] = field(repr=False)

    @property
    def is_open(self) -> bool:
        """Evidence can still be given (``needs_response`` or ``warning_needs_response``)."""
        return self.status in OPEN_STATUSES

    @property
    def outcome(self) -> str | None:
        """``won``, ``lost``, ``warning_closed`` or ``prevented``; None while not closed."""
        return self.status if self.status in CLOSED_STATUSES else None

    @property
    def evidence(self) -> dict[str, Any]:
        """The evidence given so far (fields set only)."""
        given = self.data.get("evidence") or {}
        return {k: v for k, v in given.items() if v not in (None, "", {})}

    def due_in(self, now: datetime | None = None) -> timedelta | None:
        """Time left until ``due_by`` (negative when passed), None without a deadline."""
        if self.due_by is None:
            return None
        return self.due_by - (now or utcnow())


@dataclass(frozen=True)
class DueAlarm:
    """A deadline alarm (``on_due``): ``case``'s evidence is due within ``lead``."""

    case: DisputeCase
    lead: timedelta
    #: When the check that fired it ran.
    now: datetime
    #: Longer lead times that passed without firing (nothing checked then).
    passed: tuple[timedelta, ...] = ()
    #: The transaction the alarm is recorded in: what a hook writes through
    #: it commits with the alarm, or not at all (on SQLite, a write on another
    #: connection would wait for this one's lock).
    connection: Connection | None = field(default=None, repr=False, compare=False)

    @property
    def lead_days(self) -> float:
        days = self.lead / timedelta(days=1)
        return int(days) if days == int(days) else days

    @property
    def late(self) -> bool:
        """Fired more than a check's interval after its time (a worker was down)."""
        if self.case.due_by is None:
            return False
        return self.now - (self.case.due_by - self.lead) > timedelta(
            seconds=2 * DEADLINE_CHECK_SECONDS
        )


class _Shared:
    """What every ``Disputes(app)`` of one application shares: the hooks, the
    lead times, and whether the event handlers are registered."""

    def __init__(self) -> None:
        self.on_due: list[Callable[[DueAlarm], Any]] = []
        self.on_closed: list[Callable[[DisputeCase], Any]] = []
        self.on_early_fraud_warning: list[Callable[[dict[str, Any]], Any]] = []
        self.evidence_providers: list[Callable[[DisputeCase], Mapping[str, Any] | None]] = []
        self.lead_times: tuple[timedelta, ...] = tuple(timedelta(days=d) for d in DEFAULT_LEAD_DAYS)
        self.registered = False


_SHARED: weakref.WeakKeyDictionary[Stripeline, _Shared] = weakref.WeakKeyDictionary()
_SHARED_LOCK = threading.Lock()


def _shared(app: Stripeline) -> _Shared:
    with _SHARED_LOCK:
        state = _SHARED.get(app)
        if state is None:
            state = _SHARED[app] = _Shared()
        return state


def _lead_key(dispute_id: str, lead: timedelta) -> str:
    hours = lead / timedelta(hours=1)
    return f"dispute-due:{dispute_id}:{int(hours) if hours == int(hours) else hours}h"


def _funds_of(dispute: Mapping[str, Any]) -> Funds:
    """The funds withdrawn and reinstated, from the dispute's balance transactions."""
    withdrawn = withdrawn_fee = reinstated = reinstated_fee = 0
    for txn in dispute.get("balance_transactions") or ():
        if not isinstance(txn, Mapping):
            continue
        amount = int(txn.get("amount") or 0)
        fee = int(txn.get("fee") or 0)
        if amount < 0:
            withdrawn += -amount
            withdrawn_fee += fee
        else:
            reinstated += amount
            reinstated_fee += fee
    return Funds(withdrawn, withdrawn_fee, reinstated, reinstated_fee)


def _id(value: Any) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, Mapping) and isinstance(value.get("id"), str):
        return cast(str, value["id"])
    return None


def _metadata(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    meta = (obj or {}).get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _case_from(conn: Connection, data: Mapping[str, Any], *, account: str = "") -> DisputeCase:
    """The ``DisputeCase`` of dispute ``data``, its links read on ``conn``."""
    data = dict(data)
    columns = dispute_columns(data)
    charge_id = columns["charge"]
    intent_id = columns["payment_intent"]
    charge = (
        get_object(conn, charge_id, account=account, object_type="charge") if charge_id else None
    )
    if intent_id is None and charge is not None:
        intent_id = _id(charge.get("payment_intent"))
    intent = (
        get_object(conn, intent_id, account=account, object_type="payment_intent")
        if intent_id
        else None
    )
    customer = _id((charge or {}).get("customer")) or _id((intent or {}).get("customer"))
    order = next(
        (
            str(_metadata(obj)[ORDER_METADATA_KEY])
            for obj in (data, intent, charge)
            if _metadata(obj).get(ORDER_METADATA_KEY)
        ),
        None,
    )
    warnings: tuple[str, ...] = ()
    if charge_id:
        efw = Mirror(conn, account=account).objects(EFW_TYPE, limit=1000)
        warnings = tuple(w["id"] for w in efw if _id(w.get("charge")) == charge_id)
    details = data.get("evidence_details") or {}
    return DisputeCase(
        id=str(data["id"]),
        account=account,
        livemode=bool(data.get("livemode")),
        status=str(data.get("status") or ""),
        reason=columns["reason"],
        amount=columns["amount"],
        currency=columns["currency"],
        due_by=columns["due_by"],
        has_evidence=bool(details.get("has_evidence")),
        submission_count=int(details.get("submission_count") or 0),
        charge=charge_id,
        payment_intent=intent_id,
        customer=customer,
        order_id=order,
        early_fraud_warnings=warnings,
        funds=_funds_of(data),
        created=columns["created"],
        data=data,
    )


class Disputes:
    """Disputes of ``app`` (``app.disputes``); see the module.

    Every ``Disputes(app)`` of one application shares its hooks and lead
    times; the first one registers the event handlers (``charge.dispute.*``,
    ``radar.early_fraud_warning.*``) on ``app``. ``clock`` gives "now" (UTC):
    the deadline checks and the refusal after ``due_by`` follow it.
    """

    def __init__(self, app: Stripeline, *, clock: Callable[[], datetime] | None = None) -> None:
        self._app = app
        self._clock = clock or utcnow
        self._shared = _shared(app)
        with _SHARED_LOCK:
            if not self._shared.registered:
                self._shared.registered = True
                app.on("charge.dispute.*")(_on_dispute_event(self._shared))
                app.on(f"{EFW_TYPE}.*")(_on_early_fraud_warning(self._shared))

    # -- configuration -------------------------------------------------------

    @property
    def lead_times(self) -> tuple[timedelta, ...]:
        """When before ``due_by`` alarms fire (7, 3 and 1 days by default), longest first."""
        return self._shared.lead_times

    @lead_times.setter
    def lead_times(self, leads: Iterable[timedelta | int | float]) -> None:
        values = sorted(
            {lead if isinstance(lead, timedelta) else timedelta(days=lead) for lead in leads},
            reverse=True,
        )
        if not values or any(lead <= timedelta(0) for lead in values):
            raise ValueError("lead times are one or more positive durations (days or timedelta)")
        self._shared.lead_times = tuple(values)

    def on_due(self, fn: F) -> F:
        """Register ``fn(alarm: DueAlarm)``, called once per dispute and lead time
        (in the transaction that records the alarm: keep it short)."""
        self._shared.on_due.append(fn)
        return fn

    def on_closed(self, fn: F) -> F:
        """Register ``fn(case: DisputeCase)``, called once when a dispute closes
        (in the ``charge.dispute.closed`` event's handler, its transaction)."""
        self._shared.on_closed.append(fn)
        return fn

    def on_early_fraud_warning(self, fn: F) -> F:
        """Register ``fn(warning: dict)``, called once per early fraud warning
        (the ``radar.early_fraud_warning`` object, in its event's handler)."""
        self._shared.on_early_fraud_warning.append(fn)
        return fn

    def evidence_provider(self, fn: F) -> F:
        """Register ``fn(case: DisputeCase) -> dict`` giving the evidence only the
        application knows (its refund policy, the customer's messages, the
        shipping carrier…), by Stripe's field names; ``build_evidence`` lays
        it over its draft (arguments win over it)."""
        self._shared.evidence_providers.append(fn)
        return fn

    # -- reading ---------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        return self._app.engine

    def now(self) -> datetime:
        """What this object takes as now (its ``clock``)."""
        return self._clock()

    def case(self, dispute_id: str, *, account: str | None = None) -> DisputeCase | None:
        """The dispute ``dispute_id`` with its links, or None if the mirror lacks it."""

        def fetch(conn: Connection) -> DisputeCase | None:
            data = get_object(conn, dispute_id, account=account, object_type="dispute")
            return None if data is None else _case_from(conn, data, account=account or "")

        return read(self.engine, fetch)

    def cases(
        self,
        *,
        status: str | Sequence[str] | None = None,
        account: str | None = None,
        limit: int = 100,
    ) -> list[DisputeCase]:
        """Disputes, newest first (``status``: one or several)."""
        mirrored = self._app.mirror.for_account(account).disputes(status=status, limit=limit)
        return self._cases([d.data for d in mirrored], account or "")

    def due(
        self,
        within: timedelta = timedelta(days=7),
        *,
        now: datetime | None = None,
        account: str | None = None,
        limit: int = 100,
    ) -> list[DisputeCase]:
        """Open disputes whose evidence is due before ``now + within``, soonest
        first (those already past due and still open included)."""
        now = now or self._clock()
        mirrored = self._app.mirror.for_account(account).disputes(
            due_before=now + within, status=OPEN_STATUSES, limit=limit
        )
        return self._cases([d.data for d in mirrored], account or "")

    def _cases(self, datas: list[dict[str, Any]], account: str) -> list[DisputeCase]:
        return read(self.engine, lambda conn: [_case_from(conn, d, account=account) for d in datas])

    def alarms(self, dispute_id: str) -> list[tuple[str, datetime]]:
        """The deadline alarms taken for ``dispute_id`` (key, when), oldest first."""
        query = (
            select(once_keys.c.key, once_keys.c.created_at)
            .where(once_keys.c.key.like(f"dispute-due:{dispute_id}:%"))
            .order_by(once_keys.c.created_at, once_keys.c.key)
        )
        rows = read(self.engine, lambda conn: conn.execute(query).all())
        return [(row.key, row.created_at) for row in rows]

    # -- deadlines ---------------------------------------------------------------

    def check_deadlines(self, *, now: datetime | None = None) -> list[DueAlarm]:
        """Fire the alarms due at ``now`` (the clock's by default); return those fired.

        Each alarm is taken in the once table in its own transaction, with its
        log line and hooks: once per dispute and lead time across workers; a
        hook that raises rolls the alarm back (it fires at the next check) and
        the error is logged, the other alarms go on.
        """
        now = now or self._clock()
        leads = self.lead_times
        horizon = now + max(leads)
        query = (
            select(disputes_table.c.account, disputes_table.c.data)
            .where(
                disputes_table.c.deleted.is_(False),
                disputes_table.c.status.in_(OPEN_STATUSES),
                disputes_table.c.due_by.is_not(None),
                disputes_table.c.due_by > now,
                disputes_table.c.due_by <= horizon,
            )
            .order_by(disputes_table.c.due_by, disputes_table.c.id)
        )
        rows = read(self.engine, lambda conn: conn.execute(query).all())
        fired: list[DueAlarm] = []
        for row in rows:
            due_by = dispute_columns(row.data)["due_by"]
            passed = sorted(lead for lead in leads if due_by - lead <= now)
            if not passed:
                continue
            try:
                alarm = self._fire(row.account, dict(row.data), passed, now)
            except SQLAlchemyError:
                raise  # the database, not the hook: the worker waits it out
            except Exception as exc:
                log.error(
                    "dispute_due_hook_failed",
                    action="dispute_due_hook_failed",
                    dispute=row.data.get("id"),
                    error=f"{type(exc).__name__}: {exc}"[:300],
                )
                continue
            if alarm is not None:
                fired.append(alarm)
        return fired

    def _fire(
        self, account: str, data: dict[str, Any], passed: list[timedelta], now: datetime
    ) -> DueAlarm | None:
        nearest, *longer = passed
        dispute_id = str(data["id"])
        with connect(self.engine) as conn:
            if not take_once(conn, _lead_key(dispute_id, nearest), event_id=None, now=now):
                return None
            skipped = tuple(
                lead
                for lead in longer
                if take_once(conn, _lead_key(dispute_id, lead), event_id=None, now=now)
            )
            case = _case_from(conn, data, account=account)
            alarm = DueAlarm(case=case, lead=nearest, now=now, passed=skipped, connection=conn)
            due_by = case.due_by or now  # the query selected a due_by
            log.warning(
                "dispute_due",
                action="dispute_due",
                dispute=dispute_id,
                account=account or None,
                lead_days=alarm.lead_days,
                due_by=due_by.isoformat(),
                hours_left=round((due_by - now) / timedelta(hours=1), 1),
                status=case.status,
                reason=case.reason,
                amount=case.amount,
                currency=case.currency,
                charge=case.charge,
                order=case.order_id,
                late=alarm.late,
                passed_unfired=[int(lead / timedelta(hours=1)) for lead in skipped] or None,
            )
            for hook in list(self._shared.on_due):
                hook(alarm)
        return alarm

    # -- writing -----------------------------------------------------------------

    def submit(
        self,
        dispute_id: str,
        evidence: Mapping[str, Any],
        *,
        submit: bool = True,
        account: str | None = None,
    ) -> DisputeCase:
        """Save ``evidence`` on the dispute and, with ``submit`` (the default),
        submit it for review; return the dispute as Stripe answered.

        The same evidence again is answered from the ledger without a call.

        Raises:
            DisputeNotFound: the mirror does not hold the dispute.
            DisputeNotOpen: it no longer takes evidence (submitted or closed).
            DisputeDeadlinePassed: ``due_by`` has passed (nothing is sent).
            ValueError: an evidence field Stripe does not know.
            CallConflict, StripeAPIError: see ``Calls.run``.
        """
        unknown = sorted(set(evidence) - set(EVIDENCE_FIELDS))
        if unknown:
            raise ValueError(f"unknown evidence field(s): {', '.join(unknown)}")
        params: dict[str, Any] = {"evidence": dict(evidence), "submit": submit}
        action = "dispute:submit" if submit else "dispute:save"
        reference = f"{dispute_id}:{params_hash(params)[:16]}"
        self._app.calls.check_mode(dispute_id, account=account)
        answered = self._recorded(action, reference, account)
        if answered is None:
            self._require_open(dispute_id, account)

        def find(client: Any) -> Any:
            found = client.v1.disputes.retrieve(dispute_id)
            count = (found.get("evidence_details") or {}).get("submission_count") or 0
            return found if submit and count > 0 else None

        result = self._app.calls.run(
            action,
            reference,
            params,
            lambda client, key: client.v1.disputes.update(
                dispute_id,
                params,  # type: ignore[arg-type]
                {"idempotency_key": key},
            ),
            find=find,
            account=account,
        )
        log.info(
            "dispute_evidence_submitted" if submit else "dispute_evidence_saved",
            action="dispute_evidence_submitted" if submit else "dispute_evidence_saved",
            dispute=dispute_id,
            fields=sorted(params["evidence"]),
            status=result.get("status"),
        )
        return self._case_of(result, account)

    def accept(self, dispute_id: str, *, account: str | None = None) -> DisputeCase:
        """Accept the dispute (close it as lost: not worth fighting); idempotent.

        Raises:
            DisputeNotFound: the mirror does not hold the dispute.
            DisputeNotOpen: it is closed already.
            StripeAPIError: see ``Calls.run``.
        """
        self._app.calls.check_mode(dispute_id, account=account)
        if self._recorded("dispute:close", dispute_id, account) is None:
            case = self._known(dispute_id, account)
            if case.status not in OPEN_STATUSES + REVIEW_STATUSES:
                raise DisputeNotOpen(
                    f"dispute {dispute_id} is {case.status}: nothing to accept "
                    "(nothing was sent to Stripe)",
                    dispute_id=dispute_id,
                    status=case.status,
                )
        result = self._app.calls.run(
            "dispute:close",
            dispute_id,
            {},
            lambda client, key: client.v1.disputes.close(
                dispute_id, None, {"idempotency_key": key}
            ),
            find=lambda client: _closed(client.v1.disputes.retrieve(dispute_id)),
            account=account,
        )
        log.info("dispute_accepted", action="dispute_accepted", dispute=dispute_id)
        return self._case_of(result, account)

    def _recorded(self, action: str, reference: str, account: str | None) -> Any:
        record = self._app.calls.record(action, reference, account=account)
        return record if record is not None and record.status == "done" else None

    def _known(self, dispute_id: str, account: str | None) -> DisputeCase:
        case = self.case(dispute_id, account=account)
        if case is None:
            raise DisputeNotFound(
                f"dispute {dispute_id} is not in the mirror (not received yet? "
                "`stripeline sync backfill dispute`)",
                dispute_id=dispute_id,
            )
        return case

    def _require_open(self, dispute_id: str, account: str | None) -> DisputeCase:
        case = self._known(dispute_id, account)
        if not case.is_open:
            raise DisputeNotOpen(
                f"dispute {dispute_id} is {case.status}: it takes no more evidence "
                "(nothing was sent to Stripe)",
                dispute_id=dispute_id,
                status=case.status,
            )
        now = self._clock()
        if case.due_by is None or now >= case.due_by:
            when = "no response is allowed" if case.due_by is None else f"due by {case.due_by}"
            raise DisputeDeadlinePassed(
                f"evidence for dispute {dispute_id} was {when}; it is too late "
                "(nothing was sent to Stripe)",
                dispute_id=dispute_id,
                due_by=case.due_by,
            )
        return case

    def _case_of(self, data: Mapping[str, Any], account: str | None) -> DisputeCase:
        return read(self.engine, lambda conn: _case_from(conn, data, account=account or ""))

    # -- evidence ----------------------------------------------------------------

    def build_evidence(
        self, dispute_id: str, *, account: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        """A draft of evidence from local data: the customer's name and email,
        the billing and shipping addresses, the receipt URL, the order's
        description, the refunds made; then what the ``evidence_provider``
        hooks give, then ``extra`` (what only the application knows:
        ``refund_policy_disclosure``, ``shipping_tracking_number``, uploaded
        file ids…). Nothing is sent.

        Raises:
            DisputeNotFound: the mirror does not hold the dispute.
            ValueError: an ``extra`` or provided field Stripe does not know.
        """
        unknown = sorted(set(extra) - set(EVIDENCE_FIELDS))
        if unknown:
            raise ValueError(f"unknown evidence field(s): {', '.join(unknown)}")
        case = self._known(dispute_id, account)
        mirror = self._app.mirror.for_account(account)
        charge = mirror.get(case.charge) if case.charge else None
        intent = mirror.get(case.payment_intent) if case.payment_intent else None
        customer = mirror.get(case.customer) if case.customer else None
        billing = (charge or {}).get("billing_details") or {}
        shipping = (charge or {}).get("shipping") or (intent or {}).get("shipping") or {}
        draft: dict[str, Any] = {}
        name = (customer or {}).get("name") or billing.get("name") or shipping.get("name")
        email = (customer or {}).get("email") or billing.get("email")
        if name:
            draft["customer_name"] = name
        if email:
            draft["customer_email_address"] = email
        if _address(billing.get("address")):
            draft["billing_address"] = _address(billing.get("address"))
        if _address(shipping.get("address")):
            draft["shipping_address"] = _address(shipping.get("address"))
        if shipping.get("carrier"):
            draft["shipping_carrier"] = shipping["carrier"]
        if shipping.get("tracking_number"):
            draft["shipping_tracking_number"] = shipping["tracking_number"]
        description = (intent or {}).get("description") or (charge or {}).get("description")
        if description:
            draft["product_description"] = description
        notes = []
        if case.order_id:
            notes.append(f"Order {case.order_id}.")
        if (charge or {}).get("receipt_url"):
            notes.append(f"Receipt: {charge['receipt_url']}")  # type: ignore[index]
        refunded = int((charge or {}).get("amount_refunded") or 0)
        if charge is not None:
            notes.append(
                f"Refunded {refunded} of {charge.get('amount')} {case.currency}."
                if refunded
                else "No refund was made on this charge."
            )
        if notes:
            draft["uncategorized_text"] = "\n".join(notes)
        for provider in list(self._shared.evidence_providers):
            given = dict(provider(case) or {})
            unknown = sorted(set(given) - set(EVIDENCE_FIELDS))
            if unknown:
                raise ValueError(
                    f"evidence provider {getattr(provider, '__qualname__', provider)!r} gave "
                    f"unknown evidence field(s): {', '.join(unknown)}"
                )
            draft.update({k: v for k, v in given.items() if v is not None})
        draft.update({k: v for k, v in extra.items() if v is not None})
        return draft

    def upload_evidence_file(
        self,
        content: bytes,
        filename: str,
        *,
        account: str | None = None,
    ) -> str:
        """Upload ``content`` to Stripe's Files API (``purpose=dispute_evidence``)
        once per content; return the file id to put in a file evidence field.

        Raises:
            StripeAPIError: see ``Calls.run``.
        """
        digest = hashlib.sha256(content).hexdigest()
        params = {"purpose": "dispute_evidence", "filename": filename, "sha256": digest}

        def send(client: Any, key: str) -> Any:
            body = io.BytesIO(content)
            body.name = filename  # the SDK sends it as the part's filename
            return client.v1.files.create(
                {"purpose": "dispute_evidence", "file": body}, {"idempotency_key": key}
            )

        made = self._app.calls.run(
            "file:create", f"dispute_evidence:{digest[:32]}", params, send, account=account
        )
        return str(made["id"])

    # -- async twins ---------------------------------------------------------------

    case_async = in_thread(case)

    cases_async = in_thread(cases)

    due_async = in_thread(due)

    check_deadlines_async = in_thread(check_deadlines)

    submit_async = in_thread(submit)

    accept_async = in_thread(accept)

    async def build_evidence_async(
        self, dispute_id: str, *, account: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        """Async twin of ``build_evidence``.

        Raises:
            DisputeNotFound, ValueError: see ``build_evidence``.
        """
        return await asyncio.to_thread(
            lambda: self.build_evidence(dispute_id, account=account, **extra)
        )

    upload_evidence_file_async = in_thread(upload_evidence_file)


def _closed(found: Any) -> Any:
    return found if found is not None and found.get("status") in CLOSED_STATUSES else None


def _address(address: Any) -> str | None:
    if not isinstance(address, Mapping):
        return None
    parts = [
        address.get("line1"),
        address.get("line2"),
        " ".join(p for p in (address.get("postal_code"), address.get("city")) if p),
        address.get("state"),
        address.get("country"),
    ]
    text = ", ".join(str(p) for p in parts if p)
    return text or None


def _on_dispute_event(shared: _Shared) -> Callable[[ReceivedEvent], None]:
    def follow_dispute(event: ReceivedEvent) -> None:
        obj = event.object
        dispute_id = obj.get("id")
        if not isinstance(dispute_id, str):
            return
        columns = dispute_columns(obj)
        log.info(
            "dispute_event",
            action="dispute_event",
            dispute=dispute_id,
            event_type=event.type,
            status=columns["status"],
            due_by=columns["due_by"].isoformat() if columns["due_by"] else None,
        )
        if event.type != "charge.dispute.closed" or not event.once(f"dispute-closed:{dispute_id}"):
            return
        # The event's own state is the closed one; the mirror may hold a later
        # one already (more balance transactions), or still an earlier one.
        held = event.mirror.get(dispute_id, "dispute")
        newest = obj
        if (
            held is not None
            and held.get("status") in CLOSED_STATUSES
            and len(held.get("balance_transactions") or ())
            > len(obj.get("balance_transactions") or ())
        ):
            newest = held
        case = _case_from(event.connection, newest, account=event.account or "")
        log.info(
            "dispute_closed",
            action="dispute_closed",
            dispute=dispute_id,
            outcome=case.outcome,
            withdrawn=case.funds.withdrawn,
            withdrawn_fee=case.funds.withdrawn_fee,
            reinstated=case.funds.reinstated,
            reinstated_fee=case.funds.reinstated_fee,
            currency=case.currency,
        )
        for hook in list(shared.on_closed):
            hook(case)

    return follow_dispute


def _on_early_fraud_warning(shared: _Shared) -> Callable[[ReceivedEvent], None]:
    def follow_early_fraud_warning(event: ReceivedEvent) -> None:
        obj = event.object
        warning_id = obj.get("id")
        if not isinstance(warning_id, str):
            return
        log.warning(
            "early_fraud_warning",
            action="early_fraud_warning",
            warning=warning_id,
            event_type=event.type,
            charge=_id(obj.get("charge")),
            payment_intent=_id(obj.get("payment_intent")),
            fraud_type=obj.get("fraud_type"),
            actionable=obj.get("actionable"),
        )
        if shared.on_early_fraud_warning and event.once(f"early-fraud-warning:{warning_id}"):
            for hook in list(shared.on_early_fraud_warning):
                hook(dict(obj))

    return follow_early_fraud_warning
