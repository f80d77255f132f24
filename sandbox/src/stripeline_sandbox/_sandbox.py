"""``Sandbox``: the emulator started in-process (tests) or standalone (CLI)."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from stripeline_sandbox import _persist
from stripeline_sandbox._app import PAYMENT_OUTCOME_HANDLERS, build_router
from stripeline_sandbox._clock import SandboxClock
from stripeline_sandbox._connect import relink
from stripeline_sandbox._delivery import (
    DEFAULT_DELIVERY_TIMEOUT,
    DEFAULT_RETRY_DELAYS,
    Attempt,
    Deliverer,
    DeliveryMode,
)
from stripeline_sandbox._faults import DEFAULT_TIMEOUT_DELAY, KINDS, Fault
from stripeline_sandbox._ids import new_secret_key, new_webhook_secret
from stripeline_sandbox._payment_intents import settle_all_due
from stripeline_sandbox._server import SandboxHTTPServer
from stripeline_sandbox._state import Account, World
from stripeline_sandbox._webhook_endpoints import add_endpoint

DEFAULT_HOST = "127.0.0.1"


class Sandbox:
    """A stateful Stripe emulator over HTTP, with signed webhooks.

    ``with Sandbox() as sb:`` binds ``host`` (127.0.0.1 unless told) on
    ``port`` (a free one by default) and serves in a background thread; point
    the SDK at it with ``stripe.StripeClient(sb.secret_key,
    base_addresses={"api": sb.url})``. Any ``sk_test_…`` key works and each
    key is a separate account; ``secret_key`` is a fresh one. Endpoints added
    with ``listen`` (or ``webhook_url``) sign with ``webhook_secret``, like
    ``stripe listen``; endpoints created through the API get their own.

    Methods that act on an account take ``key`` (default ``secret_key``).
    """

    def __init__(
        self,
        *,
        host: str = DEFAULT_HOST,
        port: int = 0,
        secret_key: str | None = None,
        webhook_secret: str | None = None,
        webhook_url: str | None = None,
        webhook_events: Sequence[str] = ("*",),
        webhook_retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        webhook_timeout: float = DEFAULT_DELIVERY_TIMEOUT,
        clock: SandboxClock | None = None,
        state_file: str | os.PathLike[str] | None = None,
    ) -> None:
        self.host = host
        saved = _persist.read(Path(state_file)) if state_file is not None else None
        if saved is not None:
            secret_key = secret_key or str(saved["secret_key"])
            webhook_secret = webhook_secret or str(saved["webhook_secret"])
            clock = clock or SandboxClock(float(saved.get("clock_offset") or 0.0))
        self.secret_key = secret_key or new_secret_key()
        self.webhook_secret = webhook_secret or new_webhook_secret()
        self.clock = clock or SandboxClock()
        self._deliverer = Deliverer(tuple(webhook_retry_delays), webhook_timeout)
        self.world = World(self.clock, self._deliverer, PAYMENT_OUTCOME_HANDLERS)
        if saved is not None:
            _persist.restore(self.world, saved)
            relink(self.world)
        #: Where the state is kept across restarts (``state_file``), or None.
        self.state_file = Path(state_file) if state_file is not None else None
        self._keeper = (
            _persist.Keeper(
                self.state_file,
                self.world,
                secret_key=self.secret_key,
                webhook_secret=self.webhook_secret,
            )
            if self.state_file is not None
            else None
        )
        #: True when the state was read from ``state_file`` (a restart).
        self.restored = saved is not None
        self._server = SandboxHTTPServer((host, port), self.world, build_router())
        self.port = int(self._server.server_address[1])
        self._thread: threading.Thread | None = None
        # Hosted pages (Checkout, billing portal) answer at the sandbox's own address.
        self.set_public_url(self.url)
        if webhook_url:
            self.listen(webhook_url, webhook_events)

    @property
    def publishable_key(self) -> str:
        """The ``pk_test_…`` key paired with ``secret_key`` (what Stripe.js is
        given): it confirms and retrieves intents with their ``client_secret``
        and creates PaymentMethods, and is refused elsewhere, as on Stripe."""
        return self.publishable_key_for(self.secret_key)

    def publishable_key_for(self, key: str) -> str:
        """The ``pk_test_…`` key paired with the secret ``key`` (its account)."""
        return self.world.account(key).publishable_key

    @property
    def url(self) -> str:
        """The base address for the SDK (``base_addresses={"api": url}``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> Sandbox:
        """Serve in a background thread (``__enter__`` calls this)."""
        if self._thread is None:
            self._deliverer.start()
            if self._keeper is not None:
                self._keeper.start()
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="sandbox-http",
                daemon=True,
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until ``close`` (the standalone command)."""
        self._deliverer.start()
        if self._keeper is not None:
            self._keeper.start()
        self._server.serve_forever(poll_interval=0.2)

    def close(self) -> None:
        """Stop serving, end open connections, stop delivering; join every thread."""
        self._deliverer.stop()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.close_connections()
        self._server.server_close()
        if self._keeper is not None:
            self._keeper.stop()

    def save_state(self) -> None:
        """Write the state to ``state_file`` now (it is also written within a
        second of each change, and on ``close``).

        Raises:
            ValueError: the sandbox was made without a ``state_file``.
        """
        if self._keeper is None:
            raise ValueError("this sandbox keeps no state file (Sandbox(state_file=...))")
        self._keeper.save(force=True)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- accounts --------------------------------------------------------------

    def new_key(self) -> str:
        """A fresh ``sk_test_…`` key: a new, empty account."""
        key = new_secret_key()
        self.world.account(key)
        return key

    def account(self, key: str | None = None) -> Account:
        return self.world.account(key or self.secret_key)

    def set_public_url(self, url: str) -> None:
        """Make hosted-page URLs (Checkout, billing portal) start with ``url``
        (the sandbox's own address unless told otherwise, e.g. behind a proxy)."""
        self.world.public_url = url.rstrip("/")

    # -- events --------------------------------------------------------------

    def event_ids(self, *, key: str | None = None) -> list[str]:
        """The ids of every event of the account, oldest first."""
        account = self.account(key)
        with account.lock:
            return [str(event["id"]) for event in reversed(account.all("event"))]

    def event_types(self, ids: Sequence[str], *, key: str | None = None) -> list[str]:
        """The types of the account's events ``ids``, in that order (unknown ids left out)."""
        account = self.account(key)
        with account.lock:
            found = (account.find("event", event_id) for event_id in ids)
            return [str(event["type"]) for event in found if event is not None]

    # -- webhooks ------------------------------------------------------------

    def listen(self, url: str, events: Sequence[str] = ("*",), *, key: str | None = None) -> str:
        """Send ``events`` to ``url`` signed with ``webhook_secret``; return the endpoint id.

        An endpoint already listening at ``url`` with that secret (a sandbox
        restarted from its ``state_file``) is kept, with ``events``.
        """
        account = self.account(key)
        with account.lock:
            for endpoint in account.all("webhook_endpoint"):
                if (
                    endpoint["url"] == url
                    and account.hidden(endpoint["id"]).get("secret") == self.webhook_secret
                ):
                    endpoint["enabled_events"] = list(events)
                    return str(endpoint["id"])
            endpoint = add_endpoint(
                account, self.clock.now(), url, list(events), secret=self.webhook_secret
            )
        return str(endpoint["id"])

    def add_event_destination(
        self,
        url: str,
        events: Sequence[str],
        *,
        payload: str = "thin",
        secret: str | None = None,
        events_from: Sequence[str] = ("@self",),
        key: str | None = None,
    ) -> tuple[str, str]:
        """An Event Destination (webhook type) sending ``events`` to ``url``
        as ``payload`` (``thin`` or ``snapshot``) events; returns (id, signing secret).

        ``events_from``: ``@self`` (the account's own events) and/or
        ``@accounts`` (its connected accounts' events, thin ones with their
        ``context``).

        Raises:
            ValueError: a payload other than thin or snapshot, a bad URL or
                ``events_from``.
        """
        from stripeline_sandbox._errors import StripeError
        from stripeline_sandbox._event_destinations import add_destination

        account = self.account(key)
        with account.lock:
            try:
                destination = add_destination(
                    account,
                    self.clock.now(),
                    url,
                    list(events),
                    payload=payload,
                    secret=secret,
                    events_from=list(events_from),
                )
            except StripeError as error:
                raise ValueError(error.message) from None
            return str(destination["id"]), str(account.hidden(destination["id"])["secret"])

    def set_thin_events(self, *, snapshot_event: str = "pushed", key: str | None = None) -> None:
        """Where the account's v1 thin events show their snapshot event's id
        (``snapshot_event``): ``pushed`` (what a destination is sent and
        ``/v2/core/events/{id}``, the default), ``pulled`` (only
        ``/v2/core/events/{id}``) or ``none`` (nowhere).

        Raises:
            ValueError: another value.
        """
        from stripeline_sandbox._event_destinations import SNAPSHOT_EVENT_MODES, THIN_SETTINGS

        if snapshot_event not in SNAPSHOT_EVENT_MODES:
            raise ValueError(f"snapshot_event must be one of {SNAPSHOT_EVENT_MODES}")
        account = self.account(key)
        with account.lock:
            account.hidden(THIN_SETTINGS)["snapshot_event"] = snapshot_event

    def emit_thin_event(
        self,
        event_type: str,
        *,
        data: dict[str, object] | None = None,
        context: str | None = None,
        key: str | None = None,
    ) -> str:
        """Emit a thin event with no v1 twin (``v2.core.health.*``) to the thin
        destinations that want it; return its id."""
        from stripeline_sandbox._event_destinations import thin_event

        account = self.account(key)
        with account.lock:
            event = thin_event(
                account, self.clock.now(), event_type, context=context, data=dict(data or {})
            )
        self._deliverer.enqueue(account, [event])
        return str(event["id"])

    def set_delivery(
        self,
        *,
        duplicate: int = 1,
        delay: float = 0.0,
        hold: bool = False,
        key: str | None = None,
    ) -> None:
        """Deliver each event ``duplicate`` times, ``delay`` seconds late, or
        hold deliveries until ``flush_deliveries``."""
        self.account(key).delivery = DeliveryMode(duplicate=duplicate, delay=delay, hold=hold)

    def flush_deliveries(
        self, order: str = "fifo", *, seed: int | None = None, key: str | None = None
    ) -> int:
        """Release held deliveries in ``order`` (fifo, reverse, shuffle); return how many."""
        return self._deliverer.flush(self.account(key), order, seed)

    def wait_for_deliveries(self, timeout: float = 5.0) -> bool:
        """Wait until no delivery is queued or in flight (held ones excepted)."""
        return self._deliverer.wait_idle(timeout)

    def delivery_attempts(self, key: str | None = None) -> list[Attempt]:
        account = self.account(key)
        with account.lock:
            return list(account.attempts)

    # -- faults --------------------------------------------------------------

    def inject_fault(
        self,
        kind: str,
        *,
        count: int = 1,
        path: str | None = None,
        method: str | None = None,
        after_commit: bool | None = None,
        status: int | None = None,
        should_retry: bool | None = None,
        delay: float = DEFAULT_TIMEOUT_DELAY,
        key: str | None = None,
    ) -> None:
        """Make the next ``count`` requests (matching ``path`` regex and ``method``) fail.

        ``kind`` is one of ``api_error``, ``rate_limit``, ``lock_timeout``,
        ``timeout``, ``disconnect`` (see ``stripeline_sandbox._faults``).

        Raises:
            ValueError: an unknown ``kind`` or a ``count`` below 1.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {KINDS}")
        fault = Fault(
            kind=kind,
            count=count,
            path=path,
            method=method,
            after_commit=(
                kind in ("timeout", "disconnect") if after_commit is None else after_commit
            ),
            status=status,
            should_retry=should_retry,
            delay=delay,
        )
        account = self.account(key)
        with account.lock:
            account.faults.append(fault)

    def clear_faults(self, key: str | None = None) -> None:
        account = self.account(key)
        with account.lock:
            account.faults.clear()

    def set_rate_limit(self, per_second: float, *, key: str | None = None) -> None:
        """Answer 429 ``rate_limit`` beyond ``per_second`` requests (0 = unlimited)."""
        self.account(key).rate_limit = per_second

    def rate_limited_count(self, key: str | None = None) -> int:
        """How many requests of the account were answered 429 by the rate limit."""
        account = self.account(key)
        with account.lock:
            return account.rate_limited

    def request_counts(self, key: str | None = None) -> dict[str, int]:
        """API requests of the account by ``"METHOD /route/{pattern}"``
        (``"GET /v1/invoices/{id}/lines"``); sandbox controls are not counted."""
        account = self.account(key)
        with account.lock:
            return dict(account.requests)

    def request_log(self, key: str | None = None) -> list[tuple[str, str, str | None]]:
        """The newest API requests made with the key (at most 10,000), oldest
        first: (method, path, the connected account they acted for through
        ``Stripe-Account`` or ``Stripe-Context``, else None). Sandbox
        controls are not logged."""
        account = self.account(key)
        with account.lock:
            return list(account.request_log)

    def bulk_create(
        self, resource: str, count: int, *, key: str | None = None, **params: object
    ) -> list[str]:
        """Create ``count`` objects at once without HTTP (big fixtures, benchmarks):
        ``resource`` is a ``POST /v1/<resource>`` collection (``customers``,
        ``products``), ``params`` its parameters; ``{i}`` in a string value is
        replaced by the object's number. Events are recorded, not delivered.

        Raises:
            ValueError: a resource that cannot be created in bulk.
        """
        from stripeline_sandbox._controls import bulk_create

        return bulk_create(self.world, self.account(key), resource, count, params)

    # -- billing -------------------------------------------------------------

    def set_billing(
        self,
        *,
        retry_days: Sequence[int] | None = None,
        after_retries: str | None = None,
        upcoming_days: int | None = None,
        finalize_delay: int | None = None,
        key: str | None = None,
    ) -> dict[str, object]:
        """Change the account's billing settings (``POST /_sandbox/billing``);
        what is not given stays. Returns the settings now in force.

        ``retry_days``: days between payment retries (empty: no retries);
        ``after_retries``: ``cancel``, ``unpaid`` or ``past_due``;
        ``upcoming_days``: ``invoice.upcoming`` this many days before a renewal
        (0: never); ``finalize_delay``: seconds a renewal's draft waits.

        Raises:
            ValueError: a value the control refuses.
        """
        from stripeline_sandbox._billing_settings import (
            show_billing_settings,
            update_billing_settings,
        )
        from stripeline_sandbox._errors import StripeError

        account = self.account(key)
        with account.lock:
            try:
                found = update_billing_settings(
                    account,
                    retry_days=None if retry_days is None else list(retry_days),
                    after_retries=after_retries,
                    upcoming_days=upcoming_days,
                    finalize_delay=finalize_delay,
                )
            except StripeError as error:
                raise ValueError(error.message) from None
            return dict(show_billing_settings(found))

    def set_api_version(self, version: str | None, *, key: str | None = None) -> None:
        """Set the account's default API version (``POST /_sandbox/api_version``):
        requests without ``Stripe-Version`` and webhook endpoints without
        ``api_version`` get its shapes; None resets it to the current one.

        Raises:
            ValueError: a malformed version, or one newer than the sandbox's.
        """
        from stripeline_sandbox._errors import StripeError
        from stripeline_sandbox._versions import set_default_version

        account = self.account(key)
        with account.lock:
            try:
                set_default_version(account, version)
            except StripeError as error:
                raise ValueError(error.message) from None

    # -- time ----------------------------------------------------------------

    def advance_clock(self, seconds: float) -> int:
        """Move sandbox time forward; return the new Unix time. Bank debits due
        by then settle at once (their webhooks are sent)."""
        now = self.clock.advance(seconds)
        settle_all_due(self.world, self.world.accounts())
        return now
