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
(``entitlements.active_entitlement_summary.updated``), whose
entitlements are named by their feature's ``lookup_key``. With
``source="auto"`` (the default) a feature the mapping names is answered by
the mapping and any other one by Stripe's summary.

Which subscription states grant access is the ``GracePolicy`` (see
docs/entitlements.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import Engine

from stripeline.flows._twin import in_thread
from stripeline.mirror._store import summary_id

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
# ``has_access`` is on the request path of every page that checks a feature: its
# statement is written once per backend and run on the pooled driver connection
# (no statement building, no result processing), one round trip. The plan starts
# from the customer's index (``ix_stripeline_subscriptions_customer``); the items
# and the latest invoice are correlated lookups by index and primary key, so
# that no planner, with or without statistics, can start anywhere else.

#: Between an item's price and product, and between items (no Stripe id holds them).
_UNIT, _RECORD = "\x1f", "\x1e"

_GRANTS_SQL = (
    "SELECT s.status, s.current_period_start, s.current_period_end,"
    " s.cancel_at_period_end, s.cancel_at, s.trial_end, {pause},"
    " (SELECT {items} FROM stripeline_subscription_items i"
    " WHERE i.account = s.account AND i.subscription = s.id AND i.deleted = {false}),"
    " (SELECT inv.created FROM stripeline_invoices inv"
    " WHERE inv.account = s.account AND inv.id = s.latest_invoice),"
    " (SELECT inv.status FROM stripeline_invoices inv"
    " WHERE inv.account = s.account AND inv.id = s.latest_invoice),"
    " (SELECT {next_attempt} FROM stripeline_invoices inv"
    " WHERE inv.account = s.account AND inv.id = s.latest_invoice)"
    " FROM {source}"
    " s.account = {account} AND s.status IN ('active', 'trialing', 'past_due')"
    " AND s.deleted = {false}"
)
#: Where the subscriptions come from: a customer's, or an app user's (its link).
_BY_CUSTOMER = "stripeline_subscriptions s WHERE s.customer = {who} AND"
_BY_USER = (
    "stripeline_customer_links l JOIN stripeline_subscriptions s"
    " ON s.account = l.account AND s.customer = l.customer_id"
    " WHERE l.account = {account} AND l.app_user_id = {who} AND"
)
_SUMMARY_SQL = (
    "SELECT o.data FROM stripeline_objects o"
    " WHERE o.account = {account} AND o.id = {summary} AND o.deleted = {false}"
)
_USER_SQL = (
    "(SELECT l.customer_id FROM stripeline_customer_links l"
    " WHERE l.account = {account} AND l.app_user_id = {who})"
)
_DIALECTS = {
    "sqlite": {
        "pause": "json_extract(s.data, '$.pause_collection')",
        "items": "group_concat(coalesce(i.price, '') || char(31) || coalesce(i.product, ''),"
        " char(30))",
        "next_attempt": "json_extract(inv.data, '$.next_payment_attempt')",
        "false": "0",
        "account": "?",
        "who": "?",
        "concat": "'{prefix}' || {value}",
    },
    "postgresql": {
        "pause": "s.data -> 'pause_collection'",
        "items": "string_agg(coalesce(i.price, '') || chr(31) || coalesce(i.product, ''), chr(30))",
        "next_attempt": "inv.data -> 'next_payment_attempt'",
        "false": "false",
        "account": "%(account)s",
        "who": "%(who)s",
        "concat": "'{prefix}' || {value}",
    },
}


@dataclass(frozen=True, slots=True)
class _Statement:
    sql: str
    #: The parameters' names in their order (positional drivers).
    order: tuple[str, ...]
    named: bool

    def params(self, who: str, account: str) -> Any:
        values = {"who": who, "account": account}
        return values if self.named else tuple(values[name] for name in self.order)


def _statements(dialect: str) -> dict[tuple[str, bool], _Statement]:
    """The grants and summary statements, by customer and by app user, for a backend.

    Raises:
        NotImplementedError: a backend other than SQLite and PostgreSQL.
    """
    if dialect not in _DIALECTS:
        raise NotImplementedError(f"entitlements read SQLite or PostgreSQL, not {dialect}")
    words = _DIALECTS[dialect]
    named = dialect == "postgresql"
    user = _USER_SQL.format(account=words["account"], who=words["who"])
    found: dict[tuple[str, bool], _Statement] = {}
    for by_user in (False, True):
        source = (_BY_USER if by_user else _BY_CUSTOMER).format(
            account=words["account"], who=words["who"]
        )
        order = ("account", "who", "account") if by_user else ("who", "account")
        grants = _GRANTS_SQL.format(
            pause=words["pause"],
            items=words["items"],
            next_attempt=words["next_attempt"],
            false=words["false"],
            account=words["account"],
            source=source,
        )
        found[("grants", by_user)] = _Statement(grants, order, named)
        customer = user if by_user else words["who"]
        key = words["concat"].format(prefix=summary_id(""), value=customer)
        summary = _SUMMARY_SQL.format(account=words["account"], summary=key, false=words["false"])
        summary_order = ("account", "account", "who") if by_user else ("account", "who")
        found[("summary", by_user)] = _Statement(summary, summary_order, named)
    return found


_BY_DIALECT = {name: _statements(name) for name in _DIALECTS}


def _utc(value: Any) -> datetime | None:
    """A UTC column as the driver returns it: aware (PostgreSQL) or ISO text (SQLite)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _json(value: Any) -> Any:
    """A JSON value as the driver returns it (SQLite: objects as text)."""
    if isinstance(value, str | bytes):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


@dataclass(frozen=True, slots=True)
class _Grant:
    """One live subscription of the customer, as ``grant_end`` reads it."""

    state: dict[str, Any]
    items: tuple[tuple[str, str], ...]

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> _Grant:
        (status, start, end, at_period_end, cancel_at, trial_end, pause, items) = row[:8]
        invoice_created, invoice_status, next_attempt = row[8:11]
        state = {
            "status": status,
            "current_period_start": _utc(start),
            "current_period_end": _utc(end),
            "cancel_at_period_end": bool(at_period_end),
            "cancel_at": _utc(cancel_at),
            "trial_end": _utc(trial_end),
            "pause": _json(pause),
            "invoice_created": _utc(invoice_created),
            "invoice_status": invoice_status,
            "next_payment_attempt": _time(_json(next_attempt)),
        }
        pairs = []
        for record in (items or "").split(_RECORD):
            price, _, product = record.partition(_UNIT)
            if price or product:
                pairs.append((price, product))
        return cls(state, tuple(pairs))


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
            for grant in self._read_grants(params):
                end = grant_end(grant.state, self.grace)
                if end is not None and moment < end:
                    for price, product in grant.items:
                        found |= mapping.get(price, frozenset()) | mapping.get(product, frozenset())
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

    def _read_grants(self, params: dict[str, Any]) -> list[_Grant]:
        rows = self._run("grants", params)
        return [_Grant.from_row(row) for row in rows]

    def _read_summary(self, params: dict[str, Any]) -> frozenset[str]:
        rows = self._run("summary", params)
        return _summary_features(_json(rows[0][0]) if rows else None)

    def _run(self, kind: str, params: dict[str, Any]) -> list[Sequence[Any]]:
        """Run one statement on a pooled driver connection; once more on a new
        connection if the pooled one had died (as ``db.engine.read`` does).

        Raises:
            NotImplementedError: the engine is neither SQLite nor PostgreSQL.
        """
        engine: Engine = self.app.engine
        statements = _BY_DIALECT.get(engine.dialect.name)
        if statements is None:
            raise NotImplementedError(
                f"entitlements read SQLite or PostgreSQL, not {engine.dialect.name}"
            )
        statement = statements[(kind, params["by_user"])]
        values = statement.params(params["who"], params["account"])
        dbapi_error = engine.dialect.loaded_dbapi.Error
        for attempt in (1, 2):
            raw = engine.raw_connection()
            driver = raw.driver_connection
            # PostgreSQL: autocommit, so that a read costs no BEGIN and ROLLBACK
            # round trips. SQLite's connections are autocommit already.
            autocommit = (
                getattr(driver, "autocommit", None) if engine.dialect.name == "postgresql" else None
            )
            try:
                if autocommit is False:
                    driver.autocommit = True  # type: ignore[union-attr]
                cursor = raw.cursor()
                try:
                    cursor.execute(statement.sql, values)
                    return list(cursor.fetchall())
                finally:
                    cursor.close()
            except dbapi_error as exc:
                if attempt == 2 or not engine.dialect.is_disconnect(exc, driver, None):
                    raise
                raw.invalidate(exc)
            finally:
                if autocommit is False and raw.dbapi_connection is not None:
                    driver.autocommit = False  # type: ignore[union-attr]
                raw.close()
        raise AssertionError("unreachable")  # pragma: no cover

    def _mapping_until(
        self, params: dict[str, Any], feature: str, moment: datetime
    ) -> datetime | None:
        mapping = self._mapping
        latest: datetime | None = None
        for grant in self._read_grants(params):
            if not any(
                feature in mapping.get(price, ()) or feature in mapping.get(product, ())
                for price, product in grant.items
            ):
                continue
            end = grant_end(grant.state, self.grace)
            if end is not None and moment < end and (latest is None or end > latest):
                latest = end
        return latest

    # -- async twins ----------------------------------------------------------------------

    has_access_async = in_thread(has_access)

    access_until_async = in_thread(access_until)

    features_async = in_thread(features)
