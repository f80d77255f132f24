"""The ASGI app: ``POST /webhooks/stripe`` (and ``/webhooks/stripe/connect``),
``GET /healthz``, ``GET /readyz`` and ``GET /metrics``.

The webhook route, in order: bound the body, verify the signature on the raw
bytes, parse the envelope, store the event (group commit), answer. Nothing is
processed in the request: the worker does that.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from stripeline.app import Stripeline
from stripeline.db.engine import is_postgres
from stripeline.errors import DatabaseUnavailable, EnvelopeError
from stripeline.web.intake import WebhookAnswer, WebhookIntake, readiness
from stripeline.web.writer import IngestWriter
from stripeline.worker import Worker


class _TooLarge(Exception):
    pass


class _TooSlow(Exception):
    pass


async def _read_body(request: Request, limit: int, seconds: float) -> bytes:
    """The whole body, at most ``limit`` bytes, received within ``seconds``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    body = bytearray()
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise _TooLarge
    except TimeoutError:
        raise _TooSlow from None
    return bytes(body)


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
    """
    settings = app.settings
    metrics = app.metrics
    state: dict[str, Any] = {}

    def wake_worker() -> None:
        worker = state.get("worker")
        if worker is not None:
            worker.wake()

    writer = IngestWriter(
        app.engine, threads=2 if is_postgres(app.engine) else 1, on_commit=wake_worker
    )

    intake = WebhookIntake(app)

    def answer(result: WebhookAnswer) -> Response:
        return JSONResponse(result.body, status_code=result.status, headers=dict(result.headers))

    async def receive(request: Request, endpoint: str) -> Response:
        started = time.perf_counter()
        client = request.client.host if request.client else None
        refused = intake.not_configured(endpoint)
        if refused is not None:
            return answer(refused)
        try:
            body = await _read_body(request, settings.body_limit, settings.body_timeout)
        except _TooSlow:
            return answer(intake.too_slow(endpoint, client=client))
        except ClientDisconnect:
            # The client went away before its body was whole (or broke the
            # chunked framing): nothing to store, nobody left to read the answer.
            return answer(intake.disconnected(endpoint, client=client))
        except _TooLarge:
            return answer(intake.too_large(endpoint, client=client))
        accepted = intake.accept(
            endpoint, body, request.headers.get("stripe-signature"), client=client
        )
        if isinstance(accepted, WebhookAnswer):
            return answer(accepted)
        try:
            new = await writer.submit(accepted)
        except EnvelopeError as exc:  # a value the database refused (the group was not harmed)
            return answer(
                intake.refuse(endpoint, "bad_payload", exc.reason, exc.message, client=client)
            )
        except DatabaseUnavailable as exc:
            return answer(intake.unavailable(endpoint, exc))
        return answer(intake.stored(endpoint, accepted, new, started=started))

    async def webhook(request: Request) -> Response:
        return await receive(request, "account")

    async def webhook_connect(request: Request) -> Response:
        return await receive(request, "connect")

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        ready, checks = await run_in_threadpool(readiness, app)
        return JSONResponse(
            {"status": "ready" if ready else "not_ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    async def metrics_endpoint(request: Request) -> Response:
        data = await run_in_threadpool(generate_latest, metrics.registry)
        return Response(data, media_type=CONTENT_TYPE_LATEST)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        writer.start()
        thread: threading.Thread | None = None
        if run_worker:
            worker = Worker(app, **(worker_options or {}))
            state["worker"] = worker
            thread = threading.Thread(target=worker.run, name="stripeline-worker", daemon=True)
            thread.start()
        stop_catch_up = threading.Event()
        catch_up_thread = _start_catch_up(app, stop_catch_up) if catch_up else None
        try:
            yield
        finally:
            stop_catch_up.set()
            if catch_up_thread is not None:
                catch_up_thread.join(10)
            writer.stop()
            if thread is not None:
                state["worker"].stop()
                thread.join(30)

    return Starlette(
        routes=[
            Route("/webhooks/stripe", webhook, methods=["POST"]),
            Route("/webhooks/stripe/connect", webhook_connect, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
