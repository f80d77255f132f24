"""The ASGI app: ``POST /webhooks/stripe`` (and ``/webhooks/stripe/connect``),
``GET /healthz``, ``GET /readyz``, ``GET /metrics``, and the operator console
under ``/console`` when it is configured (docs/console.md).

The webhook route, in order: bound the body, verify the signature on the raw
bytes, parse the envelope, store the event (group commit), answer. Nothing is
processed in the request: the worker does that.

The writer (and the worker, and catch-up) run between the app's lifespan
startup and shutdown. A framework that mounts the app (FastAPI, Starlette)
does not run a mounted app's lifespan: ``mountable(app)`` (``app.asgi()``) is
the app to mount and ``running(asgi)`` (``app.lifespan``) the lifespan to give
the outer app. Until a lifespan has started it, the webhook route answers 503
at once, naming that fix, and ``/readyz`` is not ready: never a request that
waits for a writer nobody started.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from json.encoder import encode_basestring
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from stripeline.app import Stripeline
from stripeline.db.engine import is_postgres
from stripeline.errors import DatabaseUnavailable, EnvelopeError
from stripeline.log import configure_logging_if_unset, get_logger
from stripeline.web.intake import WebhookAnswer, WebhookIntake, readiness
from stripeline.web.writer import IngestWriter
from stripeline.worker import Worker

log = get_logger("stripeline.web")


class _TooLarge(Exception):
    pass


class _TooSlow(Exception):
    pass


class _BodyDeadlines:
    """The webhook bodies being read on one event loop, each with its
    deadline, and one timer for all of them: a request whose body is not
    whole by its deadline is cancelled (its read answers 408) by the next
    sweep, every quarter of the body timeout (at most every second). An
    ``asyncio.timeout`` per request armed and cancelled a timer each time
    (and asked for the running loop, hence the process id, three times): the
    body read took 9.6-11.8 µs on uvloop with it, 3.4-3.7 without."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.reading: dict[asyncio.Task[Any], float] = {}
        #: Tasks the sweep cancelled, not yet told (``end``).
        self.expired: set[asyncio.Task[Any]] = set()
        self.timer: asyncio.TimerHandle | None = None
        self.tick = 1.0

    def begin(self, task: asyncio.Task[Any], seconds: float) -> None:
        self.reading[task] = self.loop.time() + seconds
        self.tick = min(self.tick, max(seconds / 4, 0.01))
        if self.timer is None:
            self.timer = self.loop.call_later(self.tick, self._sweep)

    def end(self, task: asyncio.Task[Any]) -> None:
        """The read of ``task`` is over (whether the sweep cancelled it or not)."""
        self.reading.pop(task, None)
        self.expired.discard(task)

    def _sweep(self) -> None:
        self.timer = None
        now = self.loop.time()
        for task, deadline in list(self.reading.items()):
            if deadline <= now:
                del self.reading[task]
                self.expired.add(task)
                task.cancel()
        if self.reading:
            self.timer = self.loop.call_later(self.tick, self._sweep)


#: Per event loop (a test client runs one per client).
_deadlines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _BodyDeadlines] = (
    weakref.WeakKeyDictionary()
)
#: The last loop's, in front of ``_deadlines``: a server runs one loop, and
#: the dictionary's look-up builds a weak reference each time (~0.15 µs per
#: webhook). A read on another loop finds that loop's in the dictionary and
#: takes this place. Its strong reference to the last loop (``.loop``) keeps
#: nothing the dictionary would let go: each of its values holds its key
#: strongly, so an entry outlives its loop's closing (a server has one loop;
#: a test process keeps one entry per test client).
_last_deadlines: _BodyDeadlines | None = None


async def _read_body(receive: Receive, declared: bytes | None, limit: int, seconds: float) -> bytes:
    """The whole body, at most ``limit`` bytes, received within ``seconds``
    (``declared``: the Content-Length header, if any)."""
    global _last_deadlines
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    task = asyncio.current_task()
    if task is None:  # pragma: no cover - an ASGI server runs each request in a task
        raise RuntimeError("stripeline's webhook route runs in an asyncio task")
    loop = task.get_loop()
    deadlines = _last_deadlines  # read once: another thread's loop may replace it
    if deadlines is None or deadlines.loop is not loop:
        deadlines = _deadlines.get(loop)
        if deadlines is None:
            deadlines = _deadlines[loop] = _BodyDeadlines(loop)
        _last_deadlines = deadlines
    deadlines.begin(task, seconds)
    # As ``asyncio.timeout`` does: a cancellation from elsewhere meanwhile
    # (the server shutting down) wins over the deadline's.
    cancelling = task.cancelling()
    body = bytearray()
    try:
        while True:
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                if not body and not message.get("more_body", False):
                    # The whole body in one message (the usual case): as it is.
                    if len(chunk) > limit:
                        raise _TooLarge
                    return bytes(chunk)
                body += chunk
                if len(body) > limit:
                    raise _TooLarge
                if not message.get("more_body", False):
                    return bytes(body)
            elif message["type"] == "http.disconnect":
                raise ClientDisconnect
    except asyncio.CancelledError:
        # Only asked here: the ``finally`` ends the read (once, on every path).
        if task in deadlines.expired and task.uncancel() <= cancelling:  # the deadline's alone
            raise _TooSlow from None
        raise
    finally:
        deadlines.end(task)


#: The webhook paths (the router's own, as matched below the app's root path).
_WEBHOOK_PATHS = {"/webhooks/stripe": "account", "/webhooks/stripe/connect": "connect"}
_JSON_TYPE = (b"content-type", b"application/json")


def _stored_body(event_id: str, duplicate: bool, status: str) -> bytes:
    """The 200's body for a stored event, as ``JSONResponse`` would write
    ``{"received": true, "id": …, "duplicate": …, "status": …}``
    (``encode_basestring``: what ``json.dumps(…, ensure_ascii=False)`` writes
    for a string, without building an encoder per call)."""
    return b"".join(
        (
            b'{"received":true,"id":',
            encode_basestring(event_id).encode(),
            b',"duplicate":true,"status":' if duplicate else b',"duplicate":false,"status":',
            encode_basestring(status).encode(),
            b"}",
        )
    )


def _route_path(scope: Scope) -> str:
    """The path below the app's root path (as Starlette's router reads it)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] == "/":
        return path[len(root) :]
    return path


class _Webhooks:
    """Answer ``POST`` to the webhook paths before Starlette's router: the
    route is the hot path of the app, and the router, ``Request`` and
    ``JSONResponse`` were about half of its CPU per event."""

    def __init__(self, app: ASGIApp, route: Any) -> None:
        self.app = app
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = _WEBHOOK_PATHS.get(_route_path(scope))
            if endpoint is not None:
                await self.route(endpoint, scope, receive, send)
                return
        await self.app(scope, receive, send)


def _start_catch_up(app: Stripeline, stop: threading.Event) -> threading.Thread | None:
    from stripeline.gateway import Reader, make_client
    from stripeline.sync import run_catch_up_forever

    settings = app.settings
    if settings.stripe_secret_key is None or settings.catch_up_interval <= 0:
        return None
    thread = threading.Thread(
        target=run_catch_up_forever,
        args=(
            app.engine,
            Reader(
                make_client(settings),
                reads_per_second=settings.reads_per_second,
                limiter=app.api_limiter,
            ),
        ),
        kwargs={
            "mode": settings.effective_mode,
            "stop": stop,
            "interval": settings.catch_up_interval,
        },
        name="stripeline-catch-up",
        daemon=True,
    )
    thread.start()
    return thread


#: What the webhook route and ``/readyz`` say while no lifespan has started the app.
NOT_STARTED = (
    "stripeline is not started: its lifespan has not run, so nothing would store this "
    "event. A mounted app's lifespan is not run by FastAPI or Starlette: mount "
    "stripeline_app.asgi() and pass FastAPI(lifespan=stripeline_app.lifespan) "
    "(or enter stripeline_app.lifespan(app) inside your own lifespan); "
    "see docs/integrations/fastapi.md"
)


class _Runtime:
    """What runs between lifespan startup and shutdown: the writer, and the
    worker and catch-up threads when asked for. Started by the first lifespan
    that enters, stopped by the last one that leaves (the app's own and an
    outer app's ``running()`` may both run it)."""

    def __init__(
        self,
        app: Stripeline,
        *,
        run_worker: bool,
        worker_options: dict[str, Any] | None,
        catch_up: bool,
    ) -> None:
        self.app = app
        self.run_worker = run_worker
        self.worker_options = worker_options or {}
        self.catch_up = catch_up
        self.worker: Worker | None = None
        #: The group-commit writer while running (a new one each start: its
        #: threads start once); None while stopped.
        self.writer: IngestWriter | None = None
        self.users = 0
        self.warned = False
        self._worker_thread: threading.Thread | None = None
        self._stop_catch_up = threading.Event()
        self._catch_up_thread: threading.Thread | None = None

    def current_writer(self) -> IngestWriter | None:
        """The writer now, None while stopped (read afresh at each call)."""
        return self.writer

    def wake_worker(self) -> None:
        worker = self.worker
        if worker is not None:
            worker.wake()

    def start(self) -> None:
        self.users += 1
        if self.users > 1:
            return
        settings = self.app.settings
        configure_logging_if_unset(settings.log_format, settings.log_level)
        engine = self.app.engine
        self.writer = IngestWriter(
            engine, threads=2 if is_postgres(engine) else 1, on_commit=self.wake_worker
        )
        self.writer.start()
        if self.run_worker:
            self.worker = Worker(self.app, **self.worker_options)
            self._worker_thread = threading.Thread(
                target=self.worker.run, name="stripeline-worker", daemon=True
            )
            self._worker_thread.start()
        self._stop_catch_up = threading.Event()
        if self.catch_up:
            self._catch_up_thread = _start_catch_up(self.app, self._stop_catch_up)

    def stop(self) -> None:
        self.users -= 1
        if self.users > 0:
            return
        self._stop_catch_up.set()
        if self._catch_up_thread is not None:
            self._catch_up_thread.join(10)
            self._catch_up_thread = None
        writer, self.writer = self.writer, None  # from now on the route refuses at once
        if writer is not None:
            writer.stop()
        if self.worker is not None and self._worker_thread is not None:
            self.worker.stop()
            self._worker_thread.join(30)
        self.worker = None
        self._worker_thread = None

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        self.start()
        try:
            yield
        finally:
            self.stop()


def create_app(
    app: Stripeline,
    *,
    run_worker: bool = False,
    worker_options: dict[str, Any] | None = None,
    catch_up: bool = False,
) -> Starlette:
    """Build the ASGI application for ``app``.

    With ``run_worker=True`` a worker thread processes the inbox in the same
    process (``stripeline serve``); otherwise run ``stripeline worker``. With
    ``catch_up=True`` (and a Stripe key), a background thread lists the
    Events API every ``catch_up_interval`` seconds and inserts what the
    webhooks missed; it never stops the app from starting or serving when
    Stripe is unreachable.

    The app's lifespan starts all of that. To mount stripeline inside
    another ASGI app, use ``mountable`` and ``running`` (``app.asgi()`` and
    ``app.lifespan``): a mounted app's lifespan does not run.
    """
    settings = app.settings
    metrics = app.metrics
    runtime = _Runtime(app, run_worker=run_worker, worker_options=worker_options, catch_up=catch_up)

    def not_started(endpoint: str) -> Response:
        """Refuse at once what no writer would store (no lifespan ran)."""
        metrics.webhooks.labels(endpoint, "not_started").inc()
        if not runtime.warned:
            runtime.warned = True
            log.error("stripeline_not_started", action="webhook_rejected", message=NOT_STARTED)
        return JSONResponse(
            {"error": "not_started", "message": NOT_STARTED},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    intake = WebhookIntake(app)

    def answer(result: WebhookAnswer) -> Response:
        return JSONResponse(result.body, status_code=result.status, headers=dict(result.headers))

    async def receive(endpoint: str, scope: Scope, receive: Receive, send: Send) -> None:
        """The webhook route, as a plain ASGI callable (no router, no
        ``Request``): the refusals answer exactly as before (``answer``);
        a stored event's 200 is written from bytes built once."""
        started = time.perf_counter()
        if runtime.current_writer() is None:  # before reading a body nothing would store
            return await not_started(endpoint)(scope, receive, send)
        peer = scope.get("client")
        client = peer[0] if peer else None
        refused = intake.not_configured(endpoint)
        if refused is not None:
            return await answer(refused)(scope, receive, send)
        signature: str | None = None
        declared: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"stripe-signature" and signature is None:
                signature = value.decode("latin-1")
            elif name == b"content-length" and declared is None:
                declared = value
        try:
            body = await _read_body(receive, declared, settings.body_limit, settings.body_timeout)
        except _TooSlow:
            return await answer(intake.too_slow(endpoint, client=client))(scope, receive, send)
        except ClientDisconnect:
            # The client went away before its body was whole (or broke the
            # chunked framing): nothing to store, nobody left to read the answer.
            refusal = intake.disconnected(endpoint, client=client)
            return await answer(refusal)(scope, receive, send)
        except _TooLarge:
            return await answer(intake.too_large(endpoint, client=client))(scope, receive, send)
        accepted = intake.accept(endpoint, body, signature, client=client)
        if isinstance(accepted, WebhookAnswer):
            return await answer(accepted)(scope, receive, send)
        writer = runtime.current_writer()  # again: the lifespan may have ended meanwhile
        if writer is None:
            return await not_started(endpoint)(scope, receive, send)
        try:
            new = await writer.submit(accepted)
        except EnvelopeError as exc:  # a value the database refused (the group was not harmed)
            refusal = intake.refuse(endpoint, "bad_payload", exc.reason, exc.message, client=client)
            return await answer(refusal)(scope, receive, send)
        except DatabaseUnavailable as exc:
            return await answer(intake.unavailable(endpoint, exc))(scope, receive, send)
        intake.stored(endpoint, accepted, new, started=started)  # counted and logged
        content = _stored_body(accepted.envelope.id, not new, accepted.status)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", str(len(content)).encode()),
                    _JSON_TYPE,
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        ready, checks = await run_in_threadpool(readiness, app)
        started = "ok" if runtime.writer is not None else NOT_STARTED
        checks = {"started": started, **checks}
        ready = ready and runtime.writer is not None
        return JSONResponse(
            {"status": "ready" if ready else "not_ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    async def metrics_endpoint(request: Request) -> Response:
        data = await run_in_threadpool(generate_latest, metrics.registry)
        return Response(data, media_type=CONTENT_TYPE_LATEST)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with runtime.lifespan():
            yield

    async def refuse_method(request: Request) -> Response:  # pragma: no cover - replaced below
        raise AssertionError("POST to a webhook path is answered by _Webhooks")

    routes: list[BaseRoute] = [
        # POST is answered by ``_Webhooks`` before the router; these routes
        # answer the other methods as before (405 with ``Allow: POST``).
        Route("/webhooks/stripe", refuse_method, methods=["POST"]),
        Route("/webhooks/stripe/connect", refuse_method, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
    if settings.event_grid_secrets:
        from stripeline.sync.eventgrid import PATH, EventGridConsumer

        consumer = EventGridConsumer(app.engine, settings)
        routes.append(Route(PATH, consumer.respond, methods=["POST", "OPTIONS"]))
    console = _console(app)
    if console is not None:
        routes.append(Mount("/console", app=console))
    asgi = Starlette(
        routes=routes, lifespan=lifespan, middleware=[Middleware(_Webhooks, route=receive)]
    )
    asgi.state.stripeline_runtime = runtime
    return asgi


def _console(app: Stripeline) -> ASGIApp | None:
    """The operator console, when configured (docs/console.md); None: off."""
    if not app.settings.console_enabled:
        return None
    from stripeline.web.console import create_console  # Jinja2 and argon2 only when on

    return create_console(app)


def mountable(app: Stripeline, built: Starlette | None, *, run_worker: bool) -> Starlette:
    """The ASGI app to mount for ``app``: ``built`` (the one made before) or a
    new one. ``Stripeline.asgi`` keeps it, so that the app mounted and the one
    ``running`` starts are one; asking again with another ``run_worker`` is
    an error rather than a second writer."""
    if built is None:
        # Catch-up too, as under ``serve``: with a Stripe key, what the
        # webhooks missed is listed every STRIPELINE_CATCH_UP_INTERVAL seconds.
        return create_app(app, run_worker=run_worker, catch_up=True)
    if _runtime_of(built).run_worker != run_worker:
        raise ValueError(
            f"this app's asgi() was already made with run_worker={not run_worker}: "
            "one Stripeline app has one ASGI app; ask for it the same way everywhere"
        )
    return built


def running(asgi: Starlette) -> AbstractAsyncContextManager[None]:
    """Start what ``asgi`` (made by ``create_app``) needs — the writer, and the
    worker and catch-up when it has them — for an ``async with`` block: what an outer app's
    lifespan enters (``Stripeline.lifespan``). Entering it while the app's own
    lifespan runs (or twice) starts nothing more; the last to leave stops it."""
    return _runtime_of(asgi).lifespan()


def _runtime_of(asgi: Starlette) -> _Runtime:
    runtime = getattr(asgi.state, "stripeline_runtime", None)
    if not isinstance(runtime, _Runtime):
        raise TypeError(f"{asgi!r} was not made by stripeline.web.create_app")
    return runtime
