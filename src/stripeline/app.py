"""The application object: settings, database, and the handlers it runs.

::

    import stripeline

    app = stripeline.Stripeline()

    @app.on("invoice.paid")
    def grant_access(event: stripeline.ReceivedEvent) -> None:
        event.session.execute(...)          # commits with the event's processed mark
        event.mirror.link_customer(user_id, event.object["customer"])  # so does this
        if event.once(f"receipt:{event.object['id']}"):
            send_receipt(event.object)      # outside effect: at least once, see docs

Run it with ``stripeline serve --app myproject.billing:app``.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar, cast

from sqlalchemy import Connection, Engine, Table
from sqlalchemy.orm import Session

from stripeline.core.ratelimit import TokenBucket
from stripeline.db.engine import connect, insert_for, make_engine
from stripeline.db.models import OnceKey
from stripeline.inbox import utcnow
from stripeline.metrics import Metrics
from stripeline.mirror.fetch import Fetcher
from stripeline.mirror.reader import Mirror
from stripeline.settings import Settings, load_settings

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from stripeline.flows.calls import Calls
    from stripeline.flows.checkout import Checkout
    from stripeline.flows.customers import Customers
    from stripeline.flows.disputes import Disputes
    from stripeline.flows.entitlements import Entitlements
    from stripeline.flows.payments import FulfilHook, Payments
    from stripeline.flows.subscriptions import Subscriptions

Handler = Callable[["ReceivedEvent"], Awaitable[None] | None]
H = TypeVar("H", bound=Handler)
_Built = TypeVar("_Built")

once_keys = cast(Table, OnceKey.__table__)


def take_once(conn: Connection, key: str, *, event_id: str | None, now: datetime) -> bool:
    """Insert ``key`` into the once table; True if it was not there."""
    if not key or len(key) > 255:
        raise ValueError("a once() key is 1 to 255 characters")
    insert = insert_for(conn)
    stmt = (
        insert(once_keys)
        .values(key=key, event_id=event_id, created_at=now)
        .on_conflict_do_nothing(index_elements=[once_keys.c.key])
        .returning(once_keys.c.key)
    )
    return conn.execute(stmt).first() is not None


@dataclass
class ReceivedEvent:
    """An event handed to a handler, with the transaction it is processed in."""

    id: str
    type: str
    created: int
    livemode: bool
    account: str | None
    api_version: str | None
    #: The whole event as Stripe sent it.
    data: dict[str, Any]
    #: Which processing attempt this is (1 for the first).
    attempt: int
    _connection: Connection = field(repr=False)
    _session: Session | None = field(default=None, repr=False)

    @property
    def object(self) -> dict[str, Any]:
        """``data.object``: the Stripe object the event is about."""
        return cast(dict[str, Any], self.data["data"]["object"])

    @property
    def previous_attributes(self) -> dict[str, Any]:
        """``data.previous_attributes`` (``*.updated`` events), else empty."""
        return cast(dict[str, Any], self.data["data"].get("previous_attributes") or {})

    @property
    def session(self) -> Session:
        """A SQLAlchemy session in the event's transaction: what a handler
        writes through it commits together with the event's ``processed``
        mark, or not at all."""
        if self._session is None:
            self._session = Session(bind=self._connection, join_transaction_mode="create_savepoint")
        return self._session

    @property
    def connection(self) -> Connection:
        """The SQLAlchemy connection of the event's transaction (Core access)."""
        return self._connection

    @property
    def mirror(self) -> Mirror:
        """The mirror in the event's transaction, reading the event's account.

        Reads see what the event has written so far (the object it is about
        included); ``link_customer`` and ``unlink_customer`` commit together
        with the event's ``processed`` mark, or not at all. Use it, not
        ``Mirror(app.engine)``, in a handler: on SQLite a write on another
        connection would wait for the event's own lock (it raises
        ``SecondWriteTransaction`` instead). ``event.mirror.for_account(None)``
        reads the platform's objects.
        """
        return Mirror(self._connection, account=self.account)

    def once(self, key: str) -> bool:
        """True the first time ``key`` is seen, False ever after.

        The key is stored in the event's transaction: it becomes permanent
        exactly when the event is processed. Guard an outside side effect with
        it (``if event.once(f"email:{id}"): send()``) so that duplicates,
        replays and other events for the same change do not repeat it. If the
        handler fails after the side effect, the event is retried and the
        effect happens again: outside effects are at least once (see
        docs/handlers.md).
        """
        return take_once(self._connection, key, event_id=self.id, now=utcnow())

    def _finish(self) -> None:
        if self._session is not None:
            # Joined to the event's transaction: this commit ends the session's
            # part (its SAVEPOINT, if any); the event's transaction commits later.
            self._session.commit()
            self._session.close()
            self._session = None

    def _discard(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


class Stripeline:
    """A stripeline application: settings, database and event handlers."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        engine: Engine | None = None,
        fetcher: Fetcher | None = None,
        **overrides: Any,
    ) -> None:
        self._settings = settings
        self._fetcher = fetcher
        self._limiter: TokenBucket | None = None
        self._overrides = overrides
        self._engine = engine
        #: Held while the engine, the fetcher or the API limiter is first
        #: built (``_once``).
        self._building = threading.RLock()
        self._handlers: dict[str, list[Handler]] = {}
        self._extra_secrets: dict[str, list[str]] = {"account": [], "connect": []}
        self._secrets: dict[str, list[str]] = {}
        #: Called with each event whose handlers run, in their thread: the
        #: handlers run inside the context manager it returns. Integrations
        #: bind their framework's per-thread state there (the Django app binds
        #: the event's connection, so that the ORM writes in its transaction).
        self.handler_scope: Callable[[ReceivedEvent], AbstractContextManager[object]] | None = None
        self._asgi_app: Starlette | None = None

    # -- configuration -----------------------------------------------------

    @property
    def settings(self) -> Settings:
        """The settings, read from the environment the first time they are needed."""
        if self._settings is None:
            self._settings = load_settings(**self._overrides)
        return self._settings

    def use_settings(self, settings: Settings) -> None:
        """Replace the settings (before the app starts serving)."""
        self._settings = settings
        self._secrets.clear()
        self._limiter = None

    def _once(self, name: str, build: Callable[[], _Built]) -> _Built:
        """The member ``name`` (``_engine``, ``_fetcher``, ``_limiter``),
        built by ``build`` the first time it is asked for: once, whichever
        threads ask at the same moment (a second engine, never disposed,
        left its pooled connections open until collected)."""
        value: _Built | None = getattr(self, name)
        if value is None:
            with self._building:
                value = getattr(self, name)
                if value is None:
                    value = build()
                    setattr(self, name, value)
        return value

    @property
    def engine(self) -> Engine:
        """The database engine, built the first time it is needed."""

        def build() -> Engine:
            pool = 8 if not self.settings.is_sqlite else 5
            return make_engine(self.settings.database_url, pool_size=pool)

        return self._once("_engine", build)

    @property
    def fetcher(self) -> Fetcher | None:
        """How the mirror reads objects from the API: through the SDK when a
        key is set (the sandbox's, under ``serve`` without a key), else None."""
        if self._fetcher is not None or self.settings.stripe_secret_key is None:
            return self._fetcher

        def build() -> Fetcher:
            from stripeline.gateway import StripeFetcher, make_client

            return StripeFetcher(
                make_client(self.settings),
                reads_per_second=self.settings.reads_per_second,
                limiter=self.api_limiter,
            )

        return self._once("_fetcher", build)

    @property
    def api_limiter(self) -> TokenBucket:
        """The one token bucket this process's API reads share: re-fetches and
        catch-up together stay within ``STRIPELINE_API_READS_PER_SECOND``."""
        return self._once("_limiter", lambda: TokenBucket(self.settings.reads_per_second, burst=1))

    @property
    def mirror(self) -> Mirror:
        """The mirror, read on the app's engine (platform account)."""
        return Mirror(self.engine)

    @cached_property
    def calls(self) -> Calls:
        """The ledger every write to Stripe goes through (``stripeline.flows.calls``)."""
        from stripeline.flows.calls import Calls

        return Calls(self)

    @cached_property
    def checkout(self) -> Checkout:
        """Stripe's hosted pages: ``start_payment``, ``start_subscription``
        (Checkout Sessions, one per order) and ``portal`` (the billing
        portal's link) (``stripeline.flows.checkout``, docs/checkout.md)."""
        from stripeline.flows.checkout import Checkout

        return Checkout(self)

    @cached_property
    def customers(self) -> Customers:
        """Application users' Stripe customers and their cards: ``ensure``,
        ``update``, ``setup_card``, payment methods; ``forget`` and ``export``
        (``stripeline.flows.customers``, docs/customers.md)."""
        from stripeline.flows.customers import Customers

        return Customers(self)

    @cached_property
    def disputes(self) -> Disputes:
        """Disputes from first notice to outcome: deadlines and their alarms,
        evidence, submit, accept (``stripeline.flows.disputes``, docs/disputes.md)."""
        from stripeline.flows.disputes import Disputes

        return Disputes(self)

    @cached_property
    def entitlements(self) -> Entitlements:
        """Feature access answered from the mirror: ``register``,
        ``has_access``, ``access_until``, ``features``
        (``stripeline.flows.entitlements``, docs/entitlements.md)."""
        from stripeline.flows.entitlements import Entitlements

        return Entitlements(self)

    @cached_property
    def payments(self) -> Payments:
        """Payments for orders through their whole lifecycle: ``start``,
        ``confirm``, ``capture``, ``cancel``, ``refund``, ``status``
        (``stripeline.flows.payments``, docs/payments.md)."""
        from stripeline.flows.payments import Payments

        return Payments(self)

    @cached_property
    def subscriptions(self) -> Subscriptions:
        """Subscriptions: ``start``, ``swap`` with ``preview_swap``, quantities,
        ``cancel``/``resume``, pause collection, ``end_trial_now``,
        ``report_usage``; the dunning hooks (``stripeline.flows.subscriptions``,
        docs/subscriptions.md)."""
        from stripeline.flows.subscriptions import Subscriptions

        return Subscriptions(self)

    def fulfil(self, hook: FulfilHook) -> FulfilHook:
        """``@app.fulfil``: run ``hook`` once per paid order, from the inbox
        (``Payments.fulfil``, docs/payments.md)."""
        return self.payments.fulfil(hook)

    @cached_property
    def metrics(self) -> Metrics:
        return Metrics(self.engine)

    def dispose(self) -> None:
        """Close the database connections."""
        if self._engine is not None:
            self._engine.dispose()

    def webhook_secrets(self, endpoint: str = "account") -> list[str]:
        """The secrets a webhook to ``endpoint`` (account | connect) may be signed with."""
        secrets = self._secrets.get(endpoint)
        if secrets is None:  # computed once: this is on every webhook's path
            configured = (
                self.settings.webhook_secrets
                if endpoint == "account"
                else self.settings.connect_webhook_secrets
            )
            secrets = [s.get_secret_value() for s in configured] + self._extra_secrets[endpoint]
            self._secrets[endpoint] = secrets
        return secrets

    def add_webhook_secret(self, secret: str, endpoint: str = "account") -> None:
        """Accept one more secret (``serve`` registers with the sandbox this way)."""
        if secret not in self._extra_secrets[endpoint]:
            self._extra_secrets[endpoint].append(secret)
            self._secrets.clear()

    # -- handlers ----------------------------------------------------------

    def on(self, *event_types: str) -> Callable[[H], H]:
        """Register a handler for one or more event types.

        ``"invoice.paid"`` matches that type, ``"invoice.*"`` every invoice
        event, ``"*"`` every event. Handlers may be sync or async; they run in
        the order registered, exact types first, then prefixes, then ``*``.
        """
        if not event_types:
            raise ValueError("on() needs at least one event type")

        def register(handler: H) -> H:
            for event_type in event_types:
                self._handlers.setdefault(event_type, []).append(handler)
            return handler

        return register

    def include(self, other: Stripeline) -> None:
        """Register every handler of ``other`` here too, in its order.

        Handlers can live in several modules, each with its own
        ``Stripeline()``, and be gathered into the one that is served.
        """
        for event_type, handlers in other._handlers.items():
            for handler in handlers:
                self.on(event_type)(handler)

    def handlers_for(self, event_type: str) -> list[Handler]:
        """The handlers of ``event_type``, in the order they run. A v1 change
        has two names, its snapshot one (``customer.updated``) and its thin
        one (``v1.customer.updated``): handlers registered under the other
        name run too (after those of this one, each once)."""
        found = self._named(event_type)
        if event_type.startswith("v1."):
            alias: str | None = event_type[3:]
        elif event_type.startswith("v2.") or event_type == "*":
            alias = None
        else:
            alias = "v1." + event_type
        if alias is not None:
            found.extend(h for h in self._named(alias) if not any(h is f for f in found))
        found.extend(self._handlers.get("*", ()))
        return found

    def _named(self, event_type: str) -> list[Handler]:
        """Handlers of ``event_type`` and of its prefixes (``invoice.*``), ``*`` left out."""
        found = list(self._handlers.get(event_type, ()))
        prefix = event_type
        while "." in prefix:
            prefix = prefix.rsplit(".", 1)[0]
            found.extend(self._handlers.get(prefix + ".*", ()))
        return found

    # -- outside handlers --------------------------------------------------

    def once(self, key: str) -> bool:
        """Take ``key`` in its own committed transaction: True the first time."""
        with connect(self.engine) as conn:
            return take_once(conn, key, event_id=None, now=utcnow())

    # -- inside another ASGI app (FastAPI, Starlette) ------------------------

    def asgi(self, *, run_worker: bool = True) -> Starlette:
        """The ASGI app to mount: ``/webhooks/stripe``, ``/webhooks/stripe/connect``,
        ``/healthz``, ``/readyz``, ``/metrics``. The same object on every call.

        A mounted app's lifespan does not run: give the outer app
        ``lifespan=app.lifespan`` (see docs/integrations/fastapi.md). Until
        then the webhook route answers 503 at once, saying so. With
        ``run_worker=False`` no worker runs here (run ``stripeline worker``).

        Raises:
            ValueError: asked before with the other ``run_worker``.
        """
        from stripeline.web.asgi import mountable

        self._asgi_app = mountable(self, self._asgi_app, run_worker=run_worker)
        return self._asgi_app

    def lifespan(self, app: object = None) -> AbstractAsyncContextManager[None]:
        """The lifespan that starts and stops ``asgi()``'s writer, worker and
        catch-up (with a Stripe key, as under ``stripeline serve``):
        ``FastAPI(lifespan=stripeline_app.lifespan)``, or ``async with
        stripeline_app.lifespan(app):`` inside your own lifespan. ``app`` (the
        outer app, passed by the framework) is not used."""
        from stripeline.web.asgi import running

        return running(self._asgi_app if self._asgi_app is not None else self.asgi())
