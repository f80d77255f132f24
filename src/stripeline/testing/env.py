"""The test environment: a sandbox account, an SDK client and a served
``Stripeline`` app receiving the account's webhooks (``StripelineEnv``), and
``advance_clock``.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from stripeline.testing.delivery import DEFAULT_WEBHOOK_PATH, Delivery, Order, _answer, deliver

if TYPE_CHECKING:
    from stripeline.app import Stripeline
    from stripeline.gateway import StripeClient
    from stripeline_sandbox import Sandbox

__all__ = [
    "DEFAULT_SETTLE_TIMEOUT",
    "EventFailed",
    "FailedEvent",
    "SandboxControlError",
    "StoredEvent",
    "StripelineEnv",
    "advance_clock",
    "drain",
    "failures",
]

DEFAULT_SETTLE_TIMEOUT = 10.0


@dataclass(frozen=True)
class StoredEvent:
    """An event in the app's inbox."""

    id: str
    type: str
    status: str
    attempts: int
    deliveries: int
    data: dict[str, Any]


@dataclass(frozen=True)
class FailedEvent:
    """An event whose processing failed (``failed``: a retry is scheduled;
    ``dead``: no more retries), or a re-fetch of an object that fails
    (``type`` is ``refetch``, ``id`` the object's id)."""

    id: str
    type: str
    status: str
    attempts: int
    handler: str | None
    error: str | None
    traceback: str | None

    def describe(self) -> str:
        if self.type == "refetch":
            head = f"re-fetch of {self.id} {self.status}: {self.error}"
        else:
            where = f"handler {self.handler}" if self.handler else "no handler (mirror or worker)"
            head = (
                f"event {self.id} ({self.type}) {self.status} after {self.attempts} "
                f"attempt(s), in {where}: {self.error}"
            )
        return head + (f"\n{self.traceback.rstrip()}" if self.traceback else "")


class EventFailed(AssertionError):
    """``settle()`` or ``drain`` found events that failed (or died) or re-fetches that fail:
    ``failures`` lists them, the message names each event's id, type and
    handler with the traceback of its last attempt. ``settle(allow_failures=True)``
    is for tests that expect failures."""

    def __init__(self, failures: Sequence[FailedEvent]) -> None:
        self.failures = list(failures)
        text = "\n\n".join(f.describe() for f in self.failures)
        super().__init__(
            f"{len(self.failures)} failure(s) while processing "
            f"(pass allow_failures=True if the test expects them):\n{text}"
        )


_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line \d+, in (?P<name>\S+)\s*$', re.MULTILINE)


def _failing(refetches: Any) -> Any:
    """Re-fetch rows whose last read failed (retry scheduled) or was given up."""
    from sqlalchemy import and_, or_

    return or_(
        refetches.c.gave_up_at.is_not(None),
        and_(refetches.c.last_error.is_not(None), refetches.c.attempts > 0),
    )


def _handler_in(traceback: str | None, handlers: Sequence[Any]) -> str | None:
    """The registered handler whose frame is innermost in ``traceback``."""
    if not traceback:
        return None
    frames = [(m["file"], m["name"]) for m in _FRAME.finditer(traceback)]
    for file, name in reversed(frames):
        for handler in handlers:
            code = getattr(handler, "__code__", None)
            if code is not None and (code.co_filename, code.co_name) == (file, name):
                module = getattr(handler, "__module__", None)
                qualname = getattr(handler, "__qualname__", name)
                return f"{module}.{qualname}" if module else qualname
    return None


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
        client: StripeClient,
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
        #: Failed events and objects a ``settle(allow_failures=True)`` accepted.
        self._accepted: set[str] = set()
        self.endpoint_id = sandbox.listen(self.webhook_url, webhook_events, key=key)

    @property
    def webhook_secret(self) -> str:
        return self.sandbox.webhook_secret

    def close(self) -> None:
        self._served.close()

    # -- waiting for webhooks ------------------------------------------------

    def _sandbox_event_ids(self) -> list[str]:
        return self.sandbox.event_ids(key=self.key)

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
                types = self.sandbox.event_types(missing, key=self.key)
                raise TimeoutError(f"{len(missing)} event(s) not received in {timeout} s: {types}")
            time.sleep(0.005)

    def settle(
        self, timeout: float = DEFAULT_SETTLE_TIMEOUT, *, allow_failures: bool = False
    ) -> int:
        """Wait for the account's webhooks, then process the inbox and the
        mirror's re-fetches until nothing is left to do (handlers that call
        Stripe make more events: those are waited for too; a re-fetch not yet
        due is waited for), so the mirror is current; return how many events
        were processed (attempts: an event tried twice counts twice).

        Raises:
            EventFailed: an event failed (a retry is pending) or is dead, or a
                re-fetch fails; not with ``allow_failures=True`` (those
                failures are then accepted: later calls do not raise for them).
            TimeoutError: webhooks did not arrive or processing did not finish.
        """
        from stripeline.worker import Worker

        deadline = time.monotonic() + timeout
        attempts = 0
        while True:
            self.wait_for_webhooks(max(0.1, deadline - time.monotonic()))
            worker = Worker(self.app)
            drained = worker.drain(timeout=max(0.1, deadline - time.monotonic()))
            attempts += worker.claimed
            if drained:
                continue
            failures = [f for f in self.failures() if f.id not in self._accepted]
            if failures:
                if not allow_failures:
                    raise EventFailed(failures)
                self._accepted.update(f.id for f in failures)
            wait = self._next_refetch()
            if wait is None:
                return attempts
            left = deadline - time.monotonic()
            if wait > left:
                raise TimeoutError(
                    f"the mirror's re-fetches were not done in {timeout} s "
                    "(STRIPELINE_MIRROR_COALESCE_SECONDS longer than the timeout?)"
                )
            time.sleep(max(0.005, wait))

    def failures(self) -> list[FailedEvent]:
        """What ``settle()`` raises for (see ``failures``)."""
        return failures(self.app)

    def _next_refetch(self) -> float | None:
        """Seconds until the next re-fetch that is not failing is due (None: none)."""
        from sqlalchemy import func, select

        from stripeline.db.engine import connect
        from stripeline.mirror.refetch import refetches

        with connect(self.app.engine, readonly=True) as conn:
            due: datetime | None = conn.execute(
                select(func.min(refetches.c.due_at)).where(~_failing(refetches))
            ).scalar_one_or_none()
        if due is None:
            return None
        return max(0.0, (due - datetime.now(UTC)).total_seconds())

    def advance_clock(
        self,
        seconds: float = 0,
        *,
        to: int | None = None,
        test_clock: str | None = None,
        timeout: float = DEFAULT_SETTLE_TIMEOUT,
        allow_failures: bool = False,
    ) -> int:
        """See ``advance_clock``."""
        return advance_clock(
            self,
            seconds,
            to=to,
            test_clock=test_clock,
            timeout=timeout,
            allow_failures=allow_failures,
        )

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


def failures(app: Stripeline) -> list[FailedEvent]:
    """Events ``failed`` or ``dead`` in ``app``'s inbox, and re-fetches that
    fail or were given up, oldest first (what ``settle()`` and ``drain``
    raise ``EventFailed`` for)."""
    from sqlalchemy import select

    from stripeline.db.engine import connect
    from stripeline.db.models import Event
    from stripeline.mirror.refetch import refetches

    found: list[FailedEvent] = []
    with connect(app.engine, readonly=True) as conn:
        rows = conn.execute(
            select(
                Event.id,
                Event.type,
                Event.status,
                Event.attempts,
                Event.last_error,
                Event.last_traceback,
            )
            .where(Event.status.in_(("failed", "dead")))
            .order_by(Event.created, Event.received_at)
        ).all()
        reads = conn.execute(
            select(
                refetches.c.id,
                refetches.c.attempts,
                refetches.c.last_error,
                refetches.c.gave_up_at,
            )
            .where(_failing(refetches))
            .order_by(refetches.c.first_requested_at)
        ).all()
    for row in rows:
        handler = _handler_in(row.last_traceback, app.handlers_for(row.type))
        found.append(
            FailedEvent(
                row.id,
                row.type,
                row.status,
                row.attempts,
                handler,
                row.last_error,
                row.last_traceback,
            )
        )
    for read in reads:
        status = "given up" if read.gave_up_at is not None else "failing"
        found.append(
            FailedEvent(read.id, "refetch", status, read.attempts, None, read.last_error, None)
        )
    return found


def drain(app: Stripeline, *, timeout: float = 30.0, allow_failures: bool = False) -> int:
    """Process ``app``'s inbox in this thread, without the sandbox or a server:
    the worker's ``drain`` (events due, then the re-fetches due, until nothing
    is due); return how many events and re-fetches it processed.

    Raises:
        EventFailed: an event is ``failed`` or ``dead``, or a re-fetch fails
            (not with ``allow_failures=True``).
        TimeoutError: work was still due after ``timeout`` s.
    """
    from stripeline.worker import Worker

    done = Worker(app, listen=False).drain(timeout=timeout)
    if not allow_failures:
        found = failures(app)
        if found:
            raise EventFailed(found)
    return done


def advance_clock(
    env: StripelineEnv,
    seconds: float = 0,
    *,
    to: int | None = None,
    test_clock: str | None = None,
    timeout: float = DEFAULT_SETTLE_TIMEOUT,
    allow_failures: bool = False,
) -> int:
    """Move time forward and return once the resulting webhooks are delivered
    and processed (``settle``, with ``allow_failures``); return the new time.

    Without ``test_clock`` the sandbox's own clock moves (by ``seconds``, or
    ``to`` a Unix time). With ``test_clock`` that test clock is advanced
    through the API (``frozen_time`` = its time + ``seconds``, or ``to``) and
    waited for until it is ``ready``.

    Raises:
        ValueError: time would go backwards.
        EventFailed: see ``StripelineEnv.settle``.
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
    env.settle(timeout, allow_failures=allow_failures)
    return new_time
