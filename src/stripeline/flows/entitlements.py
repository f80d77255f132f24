"""Entitlements: may this user use this feature now? Answered from the mirror.

::

    entitlements = Entitlements(app, features={"prod_pro": {"pro"}, "price_api": {"pro", "api"}})
    entitlements.register("prod_team", "pro", "seats")
    if entitlements.has_access("user-42", "pro"):       # an app user (customer link)…
        ...
    entitlements.access_until("cus_123", "api")           # …or a Stripe customer id

Access is read from the mirror's state of the customer's subscriptions (and
their items, and their latest invoice), never from which event arrived first:
``checkout.session.completed``, ``invoice.paid`` and ``customer.subscription.*``
may come in any order and any number of times, the mirror converges to
Stripe's state and so does the answer. One indexed query per answer, no API
call.

Features come from a local mapping of price or product ids to feature names
(``features=`` and ``register``) or from Stripe's Entitlements API: the
mirror keeps each customer's newest active-entitlement summary
(``customer.entitlements.active_entitlement_summary.updated``), whose
entitlements are named by their feature's ``lookup_key``. With
``source="auto"`` (the default) a feature the mapping names is answered by
the mapping and any other one by Stripe's summary.

Which subscription states grant access is the ``GracePolicy`` (see
docs/entitlements.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, cast

from sqlalchemy import Connection, Row, Select, Table, and_, bindparam, literal, select

from stripeline.db import models
from stripeline.db.engine import read
from stripeline.mirror._store import summary_id
from stripeline.mirror.tables import GENERIC

if TYPE_CHECKING:
    from stripeline.app import Stripeline

__all__ = ["OPEN_ENDED", "Entitlements", "GracePolicy", "Source", "grant_end"]

#: ``access_until`` of access with no known end: a subscription without a
#: period end, or a feature Stripe's entitlement summary lists (it ends when
#: Stripe sends a summary without it).
OPEN_ENDED = datetime.max.replace(tzinfo=UTC)

#: Where features come from: the local mapping, Stripe's entitlement
#: summaries, or the mapping for the features it names and Stripe for the rest.
Source = Literal["auto", "mapping", "stripe"]
_SOURCES = ("auto", "mapping", "stripe")

#: The subscription statuses that may grant access (under the grace policy).
#: ``unpaid``, ``canceled``, ``incomplete``, ``incomplete_expired`` and
#: ``paused`` never do.
LIVE_STATUSES = ("active", "trialing", "past_due")


@dataclass(frozen=True, slots=True)
class GracePolicy:
    """Which subscription states keep access, and how long.

    * ``active``: until the current period ends, plus ``renewal`` (Stripe
      renews at the period end; the mirror sees the new period a moment later).
    * ``trialing``: until the trial ends, plus ``renewal`` (the trial's first
      invoice is drafted, then charged, about an hour later).
    * ``past_due`` (with ``past_due=True``): while Stripe retries the payment,
      at most ``past_due_max`` after the unpaid invoice was created (else after
      the current period started). With ``follow_retries``, access ends as soon
      as the latest invoice is open with no retry planned
      (``next_payment_attempt`` null: the retries are exhausted).
    * a scheduled cancellation (``cancel_at_period_end`` or ``cancel_at``):
      access ends exactly then, whatever the above says.
    * never: ``unpaid``, ``canceled``, ``incomplete``, ``incomplete_expired``,
      ``paused``, or a subscription whose collection is paused
      (``pause_collection`` set).

    Raises:
        ValueError: a negative duration.
    """

    #: How long an active or trialing subscription keeps access past its
    #: period or trial end while the renewal is under way.
    renewal: timedelta = timedelta(days=1)
    #: Whether ``past_due`` keeps access at all.
    past_due: bool = True
    #: The longest a ``past_due`` subscription keeps access, counted from the
    #: unpaid invoice's creation (Stripe's default retries span two weeks).
    past_due_max: timedelta = timedelta(days=14)
    #: End ``past_due`` access once Stripe plans no further retry.
    follow_retries: bool = True

    def __post_init__(self) -> None:
        if self.renewal < timedelta(0) or self.past_due_max < timedelta(0):
            raise ValueError("grace durations cannot be negative")


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("naive datetime: pass an aware one (e.g. datetime.now(UTC))")
    return value.astimezone(UTC)


def _time(value: Any) -> datetime | None:
    """A Unix time from the JSON (an int), or None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _plus(moment: datetime | None, grace: timedelta) -> datetime:
    if moment is None:
        return OPEN_ENDED
    try:
        return moment + grace
    except OverflowError:
        return OPEN_ENDED


def grant_end(state: Mapping[str, Any], policy: GracePolicy) -> datetime | None:
    """When one subscription's access ends under ``policy`` (None: it grants none).

    ``state`` holds the subscription's typed columns (``status``,
    ``current_period_start``, ``current_period_end``, ``cancel_at_period_end``,
    ``cancel_at``, ``trial_end`` as aware datetimes), ``pause`` (its
    ``pause_collection``) and its latest invoice's ``invoice_created``,
    ``invoice_status`` and ``next_payment_attempt`` (None when not mirrored).
    A pure function: access is granted at ``t`` when ``t < grant_end(…)``.
    """
    if state.get("pause") is not None:
        return None
    status = state.get("status")
    period_end: datetime | None = state.get("current_period_end")
    if status == "active":
        end = _plus(period_end, policy.renewal)
    elif status == "trialing":
        end = _plus(state.get("trial_end") or period_end, policy.renewal)
    elif status == "past_due":
        if not policy.past_due:
            return None
        if (
            policy.follow_retries
            and state.get("invoice_status") == "open"
            and state.get("next_payment_attempt") is None
        ):
            return None
        since: datetime | None = state.get("invoice_created") or state.get("current_period_start")
        if since is None:
            return None
        end = _plus(since, policy.past_due_max)
    else:
        return None
    stop: datetime | None = state.get("cancel_at")
    if stop is None and state.get("cancel_at_period_end"):
        stop = period_end
    return end if stop is None else min(end, stop)


# -- the queries --------------------------------------------------------------------

_subs = cast(Table, models.Subscription.__table__)
_items = cast(Table, models.SubscriptionItem.__table__)
_invoices = cast(Table, models.Invoice.__table__)
_links = cast(Table, models.CustomerLink.__table__)
_objects = GENERIC.table


def _customer_of_user() -> Any:
    return (
        select(_links.c.customer_id)
        .where(_links.c.account == bindparam("account"), _links.c.app_user_id == bindparam("who"))
        .scalar_subquery()
    )


def _grants_query(by_user: bool) -> Select[Any]:
    """The customer's live subscriptions × their items, with the latest invoice."""
    customer = _customer_of_user() if by_user else bindparam("who")
    return (
        select(
            _subs.c.id,
            _subs.c.status,
            _subs.c.current_period_start,
            _subs.c.current_period_end,
            _subs.c.cancel_at_period_end,
            _subs.c.cancel_at,
            _subs.c.trial_end,
            _subs.c.data["pause_collection"].label("pause"),
            _items.c.price,
            _items.c.product,
            _invoices.c.created.label("invoice_created"),
            _invoices.c.status.label("invoice_status"),
            _invoices.c.data["next_payment_attempt"].label("next_payment_attempt"),
        )
        .select_from(
            _subs.join(
                _items,
                and_(
                    _items.c.account == _subs.c.account,
                    _items.c.subscription == _subs.c.id,
                    _items.c.deleted.is_(False),
                ),
            ).outerjoin(
                _invoices,
                and_(
                    _invoices.c.account == _subs.c.account,
                    _invoices.c.id == _subs.c.latest_invoice,
                ),
            )
        )
        .where(
            _subs.c.account == bindparam("account"),
            _subs.c.customer == customer,
            _subs.c.status.in_(LIVE_STATUSES),
            _subs.c.deleted.is_(False),
        )
    )


def _summary_query(by_user: bool) -> Select[Any]:
    """The customer's mirrored entitlement summary (the generic table's key)."""
    key = (
        literal(summary_id("")) + _customer_of_user()
        if by_user
        else literal(summary_id("")) + bindparam("who")
    )
    return select(_objects.c.data).where(
        _objects.c.account == bindparam("account"),
        _objects.c.id == key,
        _objects.c.deleted.is_(False),
    )


_GRANTS = {False: _grants_query(False), True: _grants_query(True)}
_SUMMARY = {False: _summary_query(False), True: _summary_query(True)}


def _summary_features(data: Mapping[str, Any] | None) -> frozenset[str]:
    """The features a summary lists: each entitlement's ``lookup_key`` (and its
    feature's id, so that either names it)."""
    if not isinstance(data, Mapping):
        return frozenset()
    listed = data.get("entitlements")
    entries = listed.get("data") if isinstance(listed, Mapping) else listed
    found: set[str] = set()
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, Mapping):
            continue
        lookup_key = entry.get("lookup_key")
        if isinstance(lookup_key, str) and lookup_key:
            found.add(lookup_key)
        feature = entry.get("feature")
        feature_id = feature.get("id") if isinstance(feature, Mapping) else feature
        if isinstance(feature_id, str) and feature_id:
            found.add(feature_id)
    return frozenset(found)


def _features_map(mapping: Mapping[str, Iterable[str]] | None) -> dict[str, frozenset[str]]:
    found: dict[str, frozenset[str]] = {}
    for key, names in (mapping or {}).items():
        if isinstance(names, str):
            names = (names,)
        found[_checked_id(key)] = found.get(key, frozenset()) | _checked_features(names)
    return found


def _checked_id(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"a price or product id is a non-empty string, not {value!r}")
    return value


def _checked_features(names: Iterable[str]) -> frozenset[str]:
    checked = frozenset(names)
    if not checked or not all(isinstance(n, str) and n for n in checked):
        raise ValueError("features are non-empty strings (at least one)")
    return checked


class Entitlements:
    """Feature access from the mirror (``app.entitlements``).

    ``features``: price or product id → the feature names it grants (a
    subscription item grants those of its price and of its product).
    ``grace``: which subscription states keep access (``GracePolicy()``).
    ``source``: ``"mapping"``, ``"stripe"`` (Stripe's entitlement summaries) or
    ``"auto"``: the mapping for the features it names, Stripe for the others.
    ``account``: the connected account read (None: the platform's own).

    ``user_or_customer``: a Stripe customer id (``cus_…``), or else an
    application user id, read through the customer links
    (``Mirror.link_customer``, ``app.customers``).

    Raises:
        ValueError: an empty id or feature name, or an unknown ``source``.
    """

    def __init__(
        self,
        app: Stripeline,
        features: Mapping[str, Iterable[str]] | None = None,
        *,
        grace: GracePolicy | None = None,
        source: Source = "auto",
        account: str | None = None,
    ) -> None:
        if source not in _SOURCES:
            raise ValueError(f"source must be one of {', '.join(_SOURCES)}, not {source!r}")
        self.app = app
        self.grace = grace if grace is not None else GracePolicy()
        self.source: Source = source
        self.account = account or ""
        self._mapping = _features_map(features)
        self._named = frozenset().union(*self._mapping.values())

    # -- the mapping ------------------------------------------------------------------

    @property
    def mapping(self) -> dict[str, frozenset[str]]:
        """A copy of the local mapping: price or product id → features."""
        return dict(self._mapping)

    def register(self, product_or_price: str, *features: str) -> None:
        """Add ``features`` to what ``product_or_price`` grants.

        Raises:
            ValueError: an empty id, or no feature, or an empty feature name.
        """
        key = _checked_id(product_or_price)
        added = _checked_features(features)
        mapping = dict(self._mapping)  # copied, so a reader in another thread sees one or the other
        mapping[key] = mapping.get(key, frozenset()) | added
        self._mapping = mapping
        self._named = self._named | added

    # -- answers ----------------------------------------------------------------------

    def has_access(
        self,
        user_or_customer: str,
        feature: str,
        *,
        at: datetime | None = None,
        account: str | None = None,
    ) -> bool:
        """Whether ``user_or_customer`` may use ``feature`` at ``at`` (default: now).

        Raises:
            ValueError: an empty id or feature, or a naive ``at``.
        """
        until = self.access_until(user_or_customer, feature, at=at, account=account)
        return until is not None

    def access_until(
        self,
        user_or_customer: str,
        feature: str,
        *,
        at: datetime | None = None,
        account: str | None = None,
    ) -> datetime | None:
        """When access to ``feature`` ends, as the mirror stands (None: no access
        at ``at``). The latest end over the customer's subscriptions that grant
        it; ``OPEN_ENDED`` when no end is known (Stripe's summary lists it). An
        active subscription renews before its end: the answer then moves on.

        Raises:
            ValueError: an empty id or feature, or a naive ``at``.
        """
        who = _checked_id(user_or_customer)
        if not isinstance(feature, str) or not feature:
            raise ValueError("a feature is a non-empty string")
        moment = datetime.now(UTC) if at is None else _aware(at)
        params = self._params(who, account)
        if self._from_mapping(feature):
            return self._mapping_until(params, feature, moment)
        if feature in self._read_summary(params):
            return OPEN_ENDED
        return None

    def features(
        self,
        user_or_customer: str,
        *,
        at: datetime | None = None,
        account: str | None = None,
    ) -> set[str]:
        """Every feature ``user_or_customer`` may use at ``at`` (default: now).

        Raises:
            ValueError: an empty id or a naive ``at``.
        """
        who = _checked_id(user_or_customer)
        moment = datetime.now(UTC) if at is None else _aware(at)
        params = self._params(who, account)
        found: set[str] = set()
        if self.source != "stripe":
            mapping = self._mapping
            for row in self._read_grants(params):
                end = grant_end(self._state(row), self.grace)
                if end is not None and moment < end:
                    found |= mapping.get(row.price or "", frozenset())
                    found |= mapping.get(row.product or "", frozenset())
        if self.source != "mapping":
            summary = self._read_summary(params)
            found |= summary if self.source == "stripe" else summary - self._named
        return found

    # -- internals ----------------------------------------------------------------------

    def _params(self, who: str, account: str | None) -> dict[str, Any]:
        return {
            "who": who,
            "account": self.account if account is None else account,
            "by_user": not who.startswith("cus_"),
        }

    def _from_mapping(self, feature: str) -> bool:
        if self.source == "auto":
            return feature in self._named
        return self.source == "mapping"

    def _read_grants(self, params: dict[str, Any]) -> list[Row[Any]]:
        query = _GRANTS[params["by_user"]]
        values = {"who": params["who"], "account": params["account"]}

        def run(conn: Connection) -> list[Row[Any]]:
            return list(conn.execute(query, values).all())

        return read(self._bind(), run)

    def _read_summary(self, params: dict[str, Any]) -> frozenset[str]:
        query = _SUMMARY[params["by_user"]]
        values = {"who": params["who"], "account": params["account"]}
        data = read(self._bind(), lambda conn: conn.execute(query, values).scalar())
        return _summary_features(data)

    def _bind(self) -> Any:
        return self.app.engine

    @staticmethod
    def _state(row: Row[Any]) -> dict[str, Any]:
        state = dict(row._mapping)
        state["next_payment_attempt"] = _time(state["next_payment_attempt"])
        return state

    def _mapping_until(
        self, params: dict[str, Any], feature: str, moment: datetime
    ) -> datetime | None:
        mapping = self._mapping
        latest: datetime | None = None
        for row in self._read_grants(params):
            granted = mapping.get(row.price or "", frozenset()) | mapping.get(
                row.product or "", frozenset()
            )
            if feature not in granted:
                continue
            end = grant_end(self._state(row), self.grace)
            if end is not None and moment < end and (latest is None or end > latest):
                latest = end
        return latest

    # -- async twins ----------------------------------------------------------------------

    async def has_access_async(
        self,
        user_or_customer: str,
        feature: str,
        *,
        at: datetime | None = None,
        account: str | None = None,
    ) -> bool:
        """Async twin of ``has_access`` (run in a worker thread).

        Raises:
            ValueError: an empty id or feature, or a naive ``at``.
        """
        return await asyncio.to_thread(
            self.has_access, user_or_customer, feature, at=at, account=account
        )

    async def access_until_async(
        self,
        user_or_customer: str,
        feature: str,
        *,
        at: datetime | None = None,
        account: str | None = None,
    ) -> datetime | None:
        """Async twin of ``access_until`` (run in a worker thread).

        Raises:
            ValueError: an empty id or feature, or a naive ``at``.
        """
        return await asyncio.to_thread(
            self.access_until, user_or_customer, feature, at=at, account=account
        )

    async def features_async(
        self,
        user_or_customer: str,
        *,
        at: datetime | None = None,
        account: str | None = None,
    ) -> set[str]:
        """Async twin of ``features`` (run in a worker thread).

        Raises:
            ValueError: an empty id or a naive ``at``.
        """
        return await asyncio.to_thread(self.features, user_or_customer, at=at, account=account)
