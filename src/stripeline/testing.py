"""stripeline's pytest plugin: the offline sandbox, signed events and delivery helpers.

Installed with stripeline (entry point ``pytest11``), it only adds fixtures:
nothing starts until a test asks for one. See ``docs/testing.md``.

Fixtures:

* ``stripe_sandbox`` (session): a running ``stripeline.sandbox.Sandbox``.
* ``stripe_key``: a fresh ``sk_test_…`` key, i.e. an empty account, per test.
* ``stripe_client``: a ``stripe.StripeClient`` for that key, pointed at the sandbox.
* ``stripeline_app``: a ``Stripeline`` app on a fresh, migrated SQLite file,
  configured with the sandbox's key and webhook secret, carrying the handlers
  of ``stripeline_base_app`` (the ini option ``stripeline_app = "pkg.mod:app"``,
  or override that fixture).
* ``stripeline_env``: that app served on 127.0.0.1 and registered as the
  account's webhook endpoint, with ``settle()``, ``advance_clock()``,
  ``deliver()``, ``events()`` and ``mirror()``.
* ``stripe_event``: ``make_event``, the signed-event factory's first half.

Functions: ``make_event``, ``object_shape``, ``sign_event``, ``deliver``,
``advance_clock``.
"""

from __future__ import annotations

import copy as _copy
import importlib
import itertools
import json
import random
import secrets
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import pytest

if TYPE_CHECKING:
    import stripe

    from stripeline.app import Stripeline
    from stripeline.sandbox import Sandbox

__all__ = [
    "DEFAULT_WEBHOOK_PATH",
    "Delivery",
    "Order",
    "SandboxControlError",
    "StoredEvent",
    "StripelineEnv",
    "advance_clock",
    "deliver",
    "make_event",
    "object_shape",
    "resource_for",
    "sign_event",
]

DEFAULT_WEBHOOK_PATH = "/webhooks/stripe"
#: Webhook retries in tests: fast, so a failing endpoint settles in well under a second.
TEST_RETRY_DELAYS = (0.05, 0.1, 0.2)
DEFAULT_SETTLE_TIMEOUT = 10.0

Order = Literal["in_order", "shuffled", "duplicated", "reversed"]
ORDERS: tuple[str, ...] = ("in_order", "shuffled", "duplicated", "reversed")

# -- object shapes and events ---------------------------------------------------

#: Event type prefixes whose object is not the prefix itself.
_EVENT_RESOURCES = {
    "charge.dispute": "dispute",
    "charge.refund": "refund",
    "customer.subscription": "subscription",
    "customer.discount": "discount",
    "customer.tax_id": "tax_id",
    "customer_cash_balance_transaction": "customer_cash_balance_transaction",
    "invoice_payment": "invoice_payment",
}

_serial = itertools.count(1)


@lru_cache(maxsize=1)
def _shapes() -> dict[str, dict[str, Any]]:
    text = resources.files("stripeline").joinpath("testing_data/objects.json").read_text("utf-8")
    return cast(dict[str, dict[str, Any]], json.loads(text)["resources"])


def object_shape(resource: str) -> dict[str, Any]:
    """A copy of the current-API example object of ``resource`` (``"invoice"``,
    ``"checkout.session"``…), as shipped in ``stripeline/testing_data``.

    Raises:
        KeyError: no example object of that name ships with stripeline.
    """
    shapes = _shapes()
    if resource not in shapes:
        raise KeyError(f"no example object {resource!r}; known: {', '.join(sorted(shapes))}")
    return _copy.deepcopy(shapes[resource])


def resource_for(event_type: str) -> str | None:
    """The object type an event type is about (``charge.dispute.closed`` → ``dispute``)."""
    prefix = event_type.rsplit(".", 1)[0] if "." in event_type else event_type
    while True:
        if prefix in _EVENT_RESOURCES:
            return _EVENT_RESOURCES[prefix]
        if prefix in _shapes():
            return prefix
        if "." not in prefix:
            return None
        prefix = prefix.rsplit(".", 1)[0]


def _fresh_id(example_id: str) -> str:
    head, sep, _ = example_id.rpartition("_")
    prefix = head if sep else "obj"
    return f"{prefix}_test{next(_serial):06d}{secrets.token_hex(6)}"


def make_event(
    type: str,
    object: Mapping[str, Any] | None = None,
    *,
    previous_attributes: Mapping[str, Any] | None = None,
    id: str | None = None,
    created: int | None = None,
    livemode: bool = False,
    account: str | None = None,
    api_version: str | None = None,
) -> dict[str, Any]:
    """An Event of ``type`` as Stripe sends it, around a current-API object.

    The object starts from the example of the event's resource (a fresh id,
    ``livemode`` and ``created`` set) and ``object``'s keys replace its
    top-level fields; an unknown resource gets just ``id`` and ``object``.
    ``previous_attributes`` goes to ``data.previous_attributes``.
    """
    from stripeline.sandbox import API_VERSION

    now = int(time.time()) if created is None else created
    resource = resource_for(type)
    try:
        body = object_shape(resource) if resource else {}
    except KeyError:
        body = {}
    if body:
        body["id"] = _fresh_id(str(body.get("id") or "obj"))
        if "livemode" in body:
            body["livemode"] = livemode
        if "created" in body:
            body["created"] = now
    else:
        body = {"id": _fresh_id("obj"), "object": resource or type.rsplit(".", 1)[0]}
    body.update(_copy.deepcopy(dict(object or {})))
    data: dict[str, Any] = {"object": body}
    if previous_attributes is not None:
        data["previous_attributes"] = _copy.deepcopy(dict(previous_attributes))
    event: dict[str, Any] = {
        "id": id or f"evt_test{next(_serial):06d}{secrets.token_hex(8)}",
        "object": "event",
        "api_version": api_version or API_VERSION,
        "created": now,
        "data": data,
        "livemode": livemode,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": type,
    }
    if account is not None:
        event["account"] = account
    return event


def _payload(event: Mapping[str, Any] | bytes) -> bytes:
    if isinstance(event, bytes):
        return event
    return json.dumps(event, indent=2).encode()


def sign_event(
    event: Mapping[str, Any] | bytes, secret: str, *, timestamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a webhook POST of ``event``, signed as Stripe signs."""
    from stripeline.core.signature import sign

    payload = _payload(event)
    signed_at = int(time.time()) if timestamp is None else timestamp
    return payload, {
        "Content-Type": "application/json; charset=utf-8",
        "Stripe-Signature": sign(payload, secret, signed_at),
    }


# -- delivery -------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """One webhook POST made by ``deliver`` and how it was answered."""

    event_id: str | None
    status: int
    body: Any


def _arrange(
    events: Sequence[Mapping[str, Any] | bytes], order: str, seed: int | None, copies: int
) -> list[Mapping[str, Any] | bytes]:
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, not {order!r}")
    arranged = list(events)
    if order == "reversed":
        arranged.reverse()
    elif order == "shuffled":
        random.Random(seed).shuffle(arranged)  # noqa: S311 - test ordering, not security
    elif order == "duplicated":
        arranged = arranged * max(2, copies)
    return arranged


def _event_id(event: Mapping[str, Any] | bytes) -> str | None:
    try:
        found = (json.loads(event) if isinstance(event, bytes) else event).get("id")
    except (ValueError, AttributeError):
        return None
    return found if isinstance(found, str) else None


def _answer(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode("utf-8", "replace")


def _post_url(url: str, payload: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"not an http(s) URL: {url!r}")
    request = urllib.request.Request(url, data=payload, headers=headers, method="POST")  # noqa: S310 - checked above
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - checked above
            return int(response.status), _answer(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return int(error.code), _answer(error.read())


def deliver(
    target: Any,
    events: Iterable[Mapping[str, Any] | bytes],
    *,
    order: Order = "in_order",
    secret: str | None = None,
    seed: int | None = None,
    copies: int = 2,
    path: str = DEFAULT_WEBHOOK_PATH,
    timestamp: int | None = None,
) -> list[Delivery]:
    """POST each event, signed, to an app's webhook route; return the answers.

    ``target`` is a ``Stripeline`` app (served for the call with
    ``create_app``; ``secret`` defaults to its first webhook secret), an ASGI
    app, a client with ``.post`` (``starlette.testclient.TestClient``,
    ``httpx.Client``) or the URL of the route. ``order``: ``in_order``,
    ``reversed``, ``shuffled`` (with ``seed``), or ``duplicated`` (the whole
    list ``copies`` times). Every POST is signed afresh, as Stripe signs retries.

    Raises:
        ValueError: no ``secret`` for a target that does not know one, or an unknown order.
    """
    from stripeline.app import Stripeline

    items = _arrange(list(events), order, seed, copies)
    if isinstance(target, Stripeline):
        from starlette.testclient import TestClient

        from stripeline.web import create_app

        if secret is None:
            known = target.webhook_secrets()
            if not known:
                raise ValueError("the app has no webhook secret: pass secret=")
            secret = known[0]
        with TestClient(create_app(target)) as client:
            return _deliver_all(client, items, secret, path, timestamp)
    if secret is None:
        raise ValueError("pass secret= (the webhook secret the target verifies with)")
    if isinstance(target, str) or hasattr(target, "post"):
        return _deliver_all(target, items, secret, path, timestamp)
    if callable(target):
        from starlette.testclient import TestClient

        with TestClient(target) as client:
            return _deliver_all(client, items, secret, path, timestamp)
    raise TypeError(f"cannot deliver to {type(target).__name__}")


def _deliver_all(
    target: Any,
    items: list[Mapping[str, Any] | bytes],
    secret: str,
    path: str,
    timestamp: int | None,
) -> list[Delivery]:
    results: list[Delivery] = []
    for item in items:
        payload, headers = sign_event(item, secret, timestamp=timestamp)
        if isinstance(target, str):
            status, body = _post_url(target, payload, headers)
        else:
            response = target.post(path, content=payload, headers=headers)
            status, body = int(response.status_code), _answer(response.content)
        results.append(Delivery(_event_id(item), status, body))
    return results


# -- the environment: sandbox + served app --------------------------------------


@dataclass(frozen=True)
class StoredEvent:
    """An event in the app's inbox."""

    id: str
    type: str
    status: str
    attempts: int
    deliveries: int
    data: dict[str, Any]


class _ServedApp:
    """An ASGI app under uvicorn on 127.0.0.1 in a background thread."""

    def __init__(self, asgi_app: Any) -> None:
        import uvicorn

        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port = int(self._socket.getsockname()[1])
        config = uvicorn.Config(
            asgi_app,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=2,
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self.server.run,
            kwargs={"sockets": [self._socket]},
            name="stripeline-test-server",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("the test web server did not start")
            time.sleep(0.005)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.should_exit = True
        self._thread.join(10)
        self._socket.close()


class SandboxControlError(Exception):
    """A sandbox-only endpoint answered with an error (``status``, Stripe's ``error`` hash)."""

    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        self.status = status
        self.error: dict[str, Any] = (
            body.get("error", {}) if isinstance(body, dict) else {"message": str(body)}
        )
        super().__init__(f"{method} {path}: {status} {self.error.get('message', '')}")

    def __repr__(self) -> str:
        return f"SandboxControlError(status={self.status}, code={self.error.get('code')!r})"


class StripelineEnv:
    """A sandbox account, an SDK client and a ``Stripeline`` app that receives
    the account's webhooks on a real HTTP server (``stripeline_env``)."""

    def __init__(
        self,
        sandbox: Sandbox,
        key: str,
        client: stripe.StripeClient,
        app: Stripeline,
        *,
        webhook_events: Sequence[str] = ("*",),
    ) -> None:
        from stripeline.web import create_app

        self.sandbox = sandbox
        self.key = key
        self.client = client
        self.app = app
        self._served = _ServedApp(create_app(app))
        self.webhook_url = self._served.url + DEFAULT_WEBHOOK_PATH
        #: Events from before the endpoint existed are not expected to arrive.
        self._ignored = set(self._sandbox_event_ids())
        self.endpoint_id = sandbox.listen(self.webhook_url, webhook_events, key=key)

    @property
    def webhook_secret(self) -> str:
        return self.sandbox.webhook_secret

    def close(self) -> None:
        self._served.close()

    # -- waiting for webhooks ------------------------------------------------

    def _sandbox_event_ids(self) -> list[str]:
        account = self.sandbox.account(self.key)
        with account.lock:
            return [str(e["id"]) for e in reversed(account.all("event"))]

    def _stored_ids(self, ids: Sequence[str]) -> set[str]:
        from sqlalchemy import select

        from stripeline.db.engine import connect
        from stripeline.db.models import Event

        found: set[str] = set()
        with connect(self.app.engine, readonly=True) as conn:
            for start in range(0, len(ids), 500):
                chunk = list(ids[start : start + 500])
                found.update(conn.scalars(select(Event.id).where(Event.id.in_(chunk))).all())
        return found

    def wait_for_webhooks(self, timeout: float = DEFAULT_SETTLE_TIMEOUT) -> None:
        """Wait until every event of the account so far is in the app's inbox.

        Raises:
            TimeoutError: some never arrived (held deliveries need ``flush_deliveries``).
        """
        deadline = time.monotonic() + timeout
        while True:
            expected = [i for i in self._sandbox_event_ids() if i not in self._ignored]
            stored = self._stored_ids(expected)
            missing = [i for i in expected if i not in stored]
            if not missing:
                return
            if time.monotonic() > deadline:
                account = self.sandbox.account(self.key)
                with account.lock:
                    types = [account.objects[i]["type"] for i in missing if i in account.objects]
                raise TimeoutError(f"{len(missing)} event(s) not received in {timeout} s: {types}")
            time.sleep(0.005)

    def settle(self, timeout: float = DEFAULT_SETTLE_TIMEOUT) -> int:
        """Wait for the account's webhooks, then process the inbox until nothing is
        due (handlers that call Stripe make more events: those are waited for
        too); return how many events were processed.

        Raises:
            TimeoutError: webhooks did not arrive or processing did not finish.
        """
        from stripeline.worker import Worker

        deadline = time.monotonic() + timeout
        total = 0
        while True:
            self.wait_for_webhooks(max(0.1, deadline - time.monotonic()))
            done = Worker(self.app).drain(timeout=max(0.1, deadline - time.monotonic()))
            total += done
            if done == 0:
                return total

    def advance_clock(
        self,
        seconds: float = 0,
        *,
        to: int | None = None,
        test_clock: str | None = None,
        timeout: float = DEFAULT_SETTLE_TIMEOUT,
    ) -> int:
        """See ``advance_clock``."""
        return advance_clock(self, seconds, to=to, test_clock=test_clock, timeout=timeout)

    # -- sending events ourselves --------------------------------------------

    def deliver(
        self,
        events: Iterable[Mapping[str, Any] | bytes],
        *,
        order: Order = "in_order",
        seed: int | None = None,
        copies: int = 2,
    ) -> list[Delivery]:
        """POST ``events`` to the served app, signed with the sandbox's webhook secret."""
        return deliver(
            self.webhook_url,
            events,
            order=order,
            secret=self.webhook_secret,
            seed=seed,
            copies=copies,
        )

    # -- what the app holds --------------------------------------------------

    def events(self, type: str | None = None, *, status: str | None = None) -> list[StoredEvent]:
        """The app's inbox, oldest Stripe ``created`` first, optionally filtered."""
        from sqlalchemy import select

        from stripeline.db.engine import connect
        from stripeline.db.models import Event

        query = select(Event).order_by(Event.created, Event.received_at)
        if type is not None:
            query = query.where(Event.type == type)
        if status is not None:
            query = query.where(Event.status == status)
        with connect(self.app.engine, readonly=True) as conn:
            rows = conn.execute(query).all()
        return [
            StoredEvent(
                id=row.id,
                type=row.type,
                status=row.status,
                attempts=row.attempts,
                deliveries=row.deliveries,
                data=json.loads(row.payload),
            )
            for row in rows
        ]

    def mirror(self, object_id: str) -> dict[str, Any] | None:
        """The mirror's copy of a Stripe object (None if it never arrived)."""
        from stripeline.db.engine import connect
        from stripeline.mirror._store import get_object

        with connect(self.app.engine, readonly=True) as conn:
            return get_object(conn, object_id)

    # -- sandbox-only controls -----------------------------------------------

    def control(self, method: str, path: str, **params: Any) -> Any:
        """Call a sandbox-only ``/_sandbox/…`` endpoint as this account; return its JSON.

        Raises:
            SandboxControlError: the endpoint answered 4xx/5xx (e.g. 402 for a declined card).
        """
        data = urllib.parse.urlencode(params).encode() if method == "POST" else None
        request = urllib.request.Request(  # noqa: S310 - the in-process sandbox
            self.sandbox.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.key}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            with error:
                body = _answer(error.read())
            raise SandboxControlError(method, path, int(error.code), body) from None


def advance_clock(
    env: StripelineEnv,
    seconds: float = 0,
    *,
    to: int | None = None,
    test_clock: str | None = None,
    timeout: float = DEFAULT_SETTLE_TIMEOUT,
) -> int:
    """Move time forward and return once the resulting webhooks are delivered
    and processed; return the new time.

    Without ``test_clock`` the sandbox's own clock moves (by ``seconds``, or
    ``to`` a Unix time). With ``test_clock`` that test clock is advanced
    through the API (``frozen_time`` = its time + ``seconds``, or ``to``) and
    waited for until it is ``ready``.

    Raises:
        ValueError: time would go backwards.
        TimeoutError: the clock or the webhooks did not settle in ``timeout`` s.
    """
    if test_clock is None:
        now = env.sandbox.clock.now()
        target = to if to is not None else now + int(seconds)
        if target < now:
            raise ValueError("time only moves forward")
        new_time = env.sandbox.advance_clock(target - now)
    else:
        clocks = env.client.v1.test_helpers.test_clocks
        current = clocks.retrieve(test_clock)
        target = to if to is not None else int(current.frozen_time) + int(seconds)
        if target < int(current.frozen_time):
            raise ValueError("time only moves forward")
        clocks.advance(test_clock, {"frozen_time": target})
        deadline = time.monotonic() + timeout
        while clocks.retrieve(test_clock).status != "ready":
            if time.monotonic() > deadline:
                raise TimeoutError(f"test clock {test_clock} not ready after {timeout} s")
            time.sleep(0.01)
        new_time = target
    env.settle(timeout)
    return new_time


# -- fixtures -------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "stripeline_app",
        "module:attribute of the Stripeline app whose handlers stripeline_app carries",
        default="",
    )


def _load_app(reference: str) -> Stripeline:
    from stripeline.app import Stripeline

    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise pytest.UsageError(f"stripeline_app must be 'module:attribute', not {reference!r}")
    found = getattr(importlib.import_module(module_name), attribute)
    if not isinstance(found, Stripeline):
        raise pytest.UsageError(f"{reference} is a {type(found).__name__}, not a Stripeline app")
    return found


@pytest.fixture(scope="session")
def stripe_sandbox() -> Iterator[Sandbox]:
    """The offline Stripe, one per test session (each test has its own account)."""
    from stripeline.sandbox import Sandbox
    from stripeline.sandbox._checkout_sessions import set_public_url

    with Sandbox(webhook_retry_delays=TEST_RETRY_DELAYS, webhook_timeout=5.0) as sandbox:
        set_public_url(sandbox.world, sandbox.url)
        yield sandbox


@pytest.fixture
def stripe_key(stripe_sandbox: Sandbox) -> str:
    """A fresh ``sk_test_…`` key: an empty sandbox account for this test."""
    return stripe_sandbox.new_key()


@pytest.fixture
def stripe_client(stripe_sandbox: Sandbox, stripe_key: str) -> Iterator[stripe.StripeClient]:
    """The official SDK's client for this test's account (2 network retries)."""
    import stripe

    http_client = stripe.RequestsClient(timeout=10)
    yield stripe.StripeClient(
        stripe_key,
        base_addresses={"api": stripe_sandbox.url},
        http_client=http_client,
        max_network_retries=2,
    )
    http_client.close()  # type: ignore[no-untyped-call]


@pytest.fixture
def stripeline_base_app(pytestconfig: pytest.Config) -> Stripeline | None:
    """The app whose handlers tests run: ini ``stripeline_app``, or override this."""
    reference = str(pytestconfig.getini("stripeline_app") or "")
    return _load_app(reference) if reference else None


@pytest.fixture(scope="session")
def _stripeline_template_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from stripeline.db import make_engine, migrate

    path = tmp_path_factory.mktemp("stripeline") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()
    return path


@pytest.fixture
def stripeline_app(
    stripe_sandbox: Sandbox,
    stripe_key: str,
    stripeline_base_app: Stripeline | None,
    _stripeline_template_database: Path,
    tmp_path: Path,
) -> Iterator[Stripeline]:
    """A ``Stripeline`` app on a fresh migrated SQLite file, set up for the sandbox."""
    from pydantic import SecretStr

    from stripeline.app import Stripeline
    from stripeline.settings import Settings

    path = tmp_path / "stripeline.db"
    path.write_bytes(_stripeline_template_database.read_bytes())
    settings = Settings(
        stripe_secret_key=SecretStr(stripe_key),
        stripe_webhook_secret=SecretStr(stripe_sandbox.webhook_secret),
        stripe_api_base=stripe_sandbox.url,
        database_url=f"sqlite:///{path}",
    )
    app = Stripeline(settings)
    if stripeline_base_app is not None:
        app.include(stripeline_base_app)
    yield app
    app.dispose()


@pytest.fixture
def stripeline_env(
    stripe_sandbox: Sandbox,
    stripe_key: str,
    stripe_client: stripe.StripeClient,
    stripeline_app: Stripeline,
) -> Iterator[StripelineEnv]:
    """The sandbox account, its client and ``stripeline_app`` receiving its webhooks."""
    env = StripelineEnv(stripe_sandbox, stripe_key, stripe_client, stripeline_app)
    yield env
    env.close()


@pytest.fixture
def stripe_event() -> Callable[..., dict[str, Any]]:
    """``make_event``: ``stripe_event("invoice.paid", {"amount_paid": 500})``."""
    return make_event
