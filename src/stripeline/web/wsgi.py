"""The webhook routes as a plain WSGI app, for any WSGI server or framework.

::

    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    from stripeline.web.wsgi import make_wsgi_app

    application = DispatcherMiddleware(my_wsgi_app, {"/stripe": make_wsgi_app(billing)})

Routes (as the ASGI app's): ``POST /webhooks/stripe``, ``POST
/webhooks/stripe/connect``, ``GET /healthz``, ``GET /readyz`` and ``GET
/metrics``; a wrong method is 405 with ``Allow``, anything else 404, both
answered in plain text as Starlette answers them.

A webhook request is answered by ``web.intake`` (``WebhookIntake.receive``):
the same outcomes, metrics and log lines as under ``stripeline serve``, the
event committed in its own transaction before the 2xx. The body is read
bounded by ``settings.body_limit``: a ``CONTENT_LENGTH`` over the limit is
refused (413) before a byte is read; a body of unknown length (chunked, the
server says so with ``wsgi.input_terminated``) is read to at most limit + 1
bytes. A request that has neither a length nor a terminated input has no body
(PEP 3333): it is never read. How long a client may take to send its body is
the server's to bound (gunicorn's ``--timeout``); the 408 ``too_slow`` answer
is the ASGI server's alone.

The inbox is processed by ``stripeline worker`` (a separate process: the
recommended way in production) or, with ``run_worker=True``, by a
``WorkerThread``: a daemon thread started on the first request in the process
that serves it (never before a fork: gunicorn ``--preload`` imports the app in
its master), woken as each event commits, stopped at exit.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from typing import Any

from prometheus_client import make_wsgi_app as _prometheus_wsgi_app

from stripeline.app import Stripeline
from stripeline.log import configure_logging_if_unset, get_logger
from stripeline.web.intake import ENDPOINTS, WebhookAnswer, WebhookIntake, readiness
from stripeline.worker import Worker

__all__ = [
    "DEFAULT_STOP_TIMEOUT",
    "StripelineWSGI",
    "WorkerThread",
    "make_wsgi_app",
]

log = get_logger("stripeline.web")

#: Seconds ``WorkerThread.stop`` waits for the worker's current batch at exit:
#: keep it under the server's grace time (gunicorn ``--graceful-timeout``, 30 s).
DEFAULT_STOP_TIMEOUT = 10.0

#: Bytes read from ``wsgi.input`` at a time.
_CHUNK = 64 * 1024

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

#: path -> (endpoint name, or the name of another route; its methods).
_ROUTES: dict[str, tuple[str, tuple[str, ...]]] = {
    "/webhooks/stripe": ("account", ("POST",)),
    "/webhooks/stripe/connect": ("connect", ("POST",)),
    "/healthz": ("healthz", ("GET", "HEAD")),
    "/readyz": ("readyz", ("GET", "HEAD")),
    "/metrics": ("metrics", ("GET", "HEAD")),
}


class WorkerThread:
    """``stripeline.worker.Worker`` in a daemon thread of the process that serves.

    ``start()`` is idempotent within a process and starts a new worker in a
    forked child (a thread does not survive ``fork``): call it on the first
    request, never at import time, and every gunicorn worker process gets its
    own. ``wake()`` has it look at the inbox now (the intake's ``on_commit``);
    ``stop()`` (registered with ``atexit`` by ``start()``) stops it within
    ``stop_timeout`` seconds.
    """

    def __init__(
        self,
        app: Stripeline,
        *,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
        worker_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.app = app
        self.stop_timeout = stop_timeout
        self._options = dict(worker_options or {})
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._worker: Worker | None = None
        self._thread: threading.Thread | None = None
        _forget_after_fork(self)

    @property
    def running(self) -> bool:
        """Whether this process's worker thread runs."""
        thread = self._thread
        return self._pid == os.getpid() and thread is not None and thread.is_alive()

    @property
    def worker(self) -> Worker | None:
        """This process's ``Worker`` (None before ``start()``)."""
        return self._worker if self._pid == os.getpid() else None

    def start(self) -> bool:
        """Start this process's worker thread unless it runs; True if started."""
        pid = os.getpid()
        if self._pid == pid:
            return False
        with self._lock:
            if self._pid == pid:
                return False
            worker = Worker(self.app, **self._options)
            thread = threading.Thread(target=worker.run, name="stripeline-worker", daemon=True)
            self._worker, self._thread = worker, thread
            thread.start()
            self._pid = pid
        atexit.register(self.stop)
        return True

    def wake(self) -> None:
        """Have the worker look for work now (an event was just committed)."""
        worker = self.worker
        if worker is not None:
            worker.wake()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop this process's worker thread; True once it has ended (or never ran)."""
        worker, thread = self.worker, self._thread
        if worker is None or thread is None:
            return True
        worker.stop()
        thread.join(self.stop_timeout if timeout is None else timeout)
        if thread.is_alive():
            log.warning(
                "worker_stop_timeout",
                action="worker_stop_timeout",
                worker=worker.id,
                seconds=self.stop_timeout if timeout is None else timeout,
            )
            return False
        atexit.unregister(self.stop)
        return True

    def _forked(self) -> None:
        """In a forked child: nothing of the parent's thread is ours."""
        self._lock = threading.Lock()
        self._pid, self._worker, self._thread = None, None, None


def _forget_after_fork(owner: WorkerThread | StripelineWSGI) -> None:
    """Call ``owner._forked()`` in every forked child (a lock held by another
    thread at the fork would never be released there)."""
    ref = weakref.ref(owner)

    def forked() -> None:
        alive = ref()
        if alive is not None:
            alive._forked()

    os.register_at_fork(after_in_child=forked)


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


def _declared_length(environ: Environ) -> int | None:
    declared = str(environ.get("CONTENT_LENGTH") or "").strip()
    return int(declared) if declared.isascii() and declared.isdigit() else None


def _read_body(environ: Environ, limit: int) -> bytes:
    """The request's body, never more than ``limit`` + 1 bytes read."""
    declared = _declared_length(environ)
    terminated = bool(environ.get("wsgi.input_terminated"))
    if declared is not None and declared > limit:
        raise _TooLarge
    if declared is None and not terminated:
        return b""  # PEP 3333: no length, no end of input: no body to read
    wanted = limit + 1 if declared is None else declared
    stream = environ["wsgi.input"]
    body = bytearray()
    try:
        while len(body) < wanted:
            chunk = stream.read(min(_CHUNK, wanted - len(body)))
            if not chunk:
                break
            body += chunk
    except Exception as exc:  # the server's reader: a broken framing, a closed socket
        raise _Disconnected from exc
    if len(body) > limit:
        raise _TooLarge
    if declared is not None and len(body) < declared:
        raise _Disconnected
    return bytes(body)


def _plain(status: int, text: str, headers: Mapping[str, str] | None = None) -> _Response:
    return _Response(status, text.encode(), "text/plain; charset=utf-8", dict(headers or {}))


class _Response:
    def __init__(
        self, status: int, body: bytes, content_type: str, headers: Mapping[str, str]
    ) -> None:
        self.status, self.body, self.content_type, self.headers = (
            status,
            body,
            content_type,
            headers,
        )

    def __call__(self, environ: Environ, start_response: StartResponse) -> list[bytes]:
        headers = [
            ("Content-Type", self.content_type),
            ("Content-Length", str(len(self.body))),
            *self.headers.items(),
        ]
        phrase = HTTPStatus(self.status).phrase
        start_response(f"{self.status} {phrase}", headers)
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [self.body]


def _json(answer: WebhookAnswer) -> _Response:
    return _Response(answer.status, answer.content(), "application/json", answer.headers)


def _json_body(status: int, body: dict[str, Any]) -> _Response:
    content = json.dumps(body, separators=(",", ":")).encode()
    return _Response(status, content, "application/json", {})


class StripelineWSGI:
    """The WSGI app ``make_wsgi_app`` returns; also what framework integrations
    (``stripeline.contrib.flask``) answer their views with."""

    def __init__(
        self,
        app: Stripeline,
        *,
        run_worker: bool = False,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
        worker_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.app = app
        self.worker = (
            WorkerThread(app, stop_timeout=stop_timeout, worker_options=worker_options)
            if run_worker
            else None
        )
        self.intake = WebhookIntake(app, on_commit=self._wake)
        self._metrics: WSGIApp | None = None
        self._created_in = os.getpid()
        self._serving_in: int | None = None
        self._lock = threading.Lock()
        _forget_after_fork(self)

    # -- the process that serves ----------------------------------------------

    def start(self) -> None:
        """What runs once in each process that serves, on its first request:
        a forked child drops the parent's pooled database connections (they
        are the parent's sockets: ``Engine.dispose(close=False)``) and starts
        its worker thread (``run_worker``). Idempotent; cheap after the first."""
        pid = os.getpid()
        if self._serving_in == pid:
            return
        with self._lock:
            if self._serving_in == pid:
                return
            if pid != self._created_in:
                self.app.engine.dispose(close=False)
            settings = self.app.settings
            configure_logging_if_unset(settings.log_format, settings.log_level)
            if self.worker is not None:
                self.worker.start()
            self._serving_in = pid

    def stop(self, timeout: float | None = None) -> bool:
        """Stop this process's worker thread, if any; True once it has ended."""
        return True if self.worker is None else self.worker.stop(timeout)

    def _forked(self) -> None:
        self._lock = threading.Lock()

    def _wake(self) -> None:
        if self.worker is not None:
            self.worker.wake()

    # -- the answers ---------------------------------------------------------

    def webhook(self, environ: Environ, endpoint: str = "account") -> WebhookAnswer:
        """Answer a webhook request to ``endpoint`` (``account`` | ``connect``):
        read its body bounded, verify, store, answer (``WebhookIntake``)."""
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown webhook endpoint {endpoint!r}")
        self.start()
        started = time.perf_counter()
        intake = self.intake
        client = environ.get("REMOTE_ADDR") or None
        refused = intake.not_configured(endpoint)
        if refused is not None:
            return refused
        try:
            body = _read_body(environ, self.app.settings.body_limit)
        except _TooLarge:
            return intake.too_large(endpoint, client=client)
        except _Disconnected:
            return intake.disconnected(endpoint, client=client)
        signature = environ.get("HTTP_STRIPE_SIGNATURE")
        return intake.receive(endpoint, body, signature, client=client, started=started)

    def readiness(self) -> tuple[int, dict[str, Any]]:
        """``/readyz``: (200 or 503, the JSON body)."""
        self.start()
        ready, checks = readiness(self.app)
        return (200 if ready else 503), {
            "status": "ready" if ready else "not_ready",
            "checks": checks,
        }

    def metrics(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """``/metrics``: prometheus_client's WSGI app on the application's registry."""
        self.start()
        if self._metrics is None:
            self._metrics = _prometheus_wsgi_app(self.app.metrics.registry)
        if environ.get("REQUEST_METHOD") == "HEAD":
            list(self._metrics({**environ, "REQUEST_METHOD": "GET"}, start_response))
            return []
        return self._metrics(environ, start_response)

    # -- WSGI ------------------------------------------------------------------

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        route = _ROUTES.get(path)
        if route is None:
            return _plain(404, "Not Found")(environ, start_response)
        name, methods = route
        if method not in methods:
            allow = ", ".join(methods)
            return _plain(405, "Method Not Allowed", {"Allow": allow})(environ, start_response)
        if name in ENDPOINTS:
            return _json(self.webhook(environ, name))(environ, start_response)
        if name == "healthz":
            self.start()
            return _json_body(200, {"status": "ok"})(environ, start_response)
        if name == "readyz":
            return _json_body(*self.readiness())(environ, start_response)
        return self.metrics(environ, start_response)


def make_wsgi_app(
    app: Stripeline,
    *,
    run_worker: bool = False,
    stop_timeout: float = DEFAULT_STOP_TIMEOUT,
    worker_options: Mapping[str, Any] | None = None,
) -> StripelineWSGI:
    """A WSGI app answering ``app``'s webhook, health, readiness and metrics routes.

    Mount it where you like (``DispatcherMiddleware``, or serve it alone).
    With ``run_worker=True`` a ``WorkerThread`` processes the inbox in each
    process that serves, started on its first request; otherwise run
    ``stripeline worker`` (recommended in production). ``worker_options`` are
    ``Worker``'s keyword arguments.
    """
    return StripelineWSGI(
        app, run_worker=run_worker, stop_timeout=stop_timeout, worker_options=worker_options
    )
