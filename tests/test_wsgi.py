"""``stripeline.web.wsgi``: the webhook routes as a plain WSGI app.

Requests go through the WSGI interface for real (werkzeug's test client, or a
hand-built environ where a test needs a server's own input stream: chunked,
cut short, broken); the answers, stored rows, metrics and log lines are the
ASGI route's, compared side by side where it matters.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select
from starlette.testclient import TestClient
from structlog.testing import capture_logs
from werkzeug.serving import make_server
from werkzeug.test import Client

from stripeline.app import ReceivedEvent, Stripeline
from stripeline.db.engine import connect, make_engine
from stripeline.db.models import Event
from stripeline.settings import Settings
from stripeline.web import create_app
from stripeline.web.wsgi import StripelineWSGI, WorkerThread, make_wsgi_app
from tests.factories import SECRET, encode, event, signed

LIMIT = 4096


@pytest.fixture
def make_app(database_url: str) -> Iterator[Callable[..., Stripeline]]:
    apps: list[Stripeline] = []

    def build(**overrides: Any) -> Stripeline:
        settings = Settings(
            **{
                "stripe_webhook_secret": SECRET,
                "database_url": database_url,
                "body_limit": LIMIT,
                **overrides,
            }
        )
        app = Stripeline(settings, engine=make_engine(database_url))
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.dispose()


@pytest.fixture
def app(make_app: Callable[..., Stripeline]) -> Stripeline:
    return make_app()


@pytest.fixture
def wsgi(app: Stripeline) -> Iterator[StripelineWSGI]:
    served = make_wsgi_app(app)
    yield served
    assert served.stop()


def stored(app: Stripeline) -> list[tuple[str, int, str]]:
    with connect(app.engine, readonly=True) as conn:
        rows = conn.execute(select(Event.id, Event.deliveries, Event.status).order_by(Event.id))
        return [(row.id, row.deliveries, row.status) for row in rows]


def counted(app: Stripeline, outcome: str, endpoint: str = "account") -> float:
    value = app.metrics.registry.get_sample_value(
        "stripeline_webhooks_total", {"endpoint": endpoint, "outcome": outcome}
    )
    return value or 0.0


class Input(io.RawIOBase):
    """A server's ``wsgi.input``: ``size`` bytes (endless: None), counting what is read."""

    def __init__(self, size: int | None, *, fail_after: int | None = None) -> None:
        self.size, self.fail_after, self.consumed = size, fail_after, 0

    def read(self, n: int = -1) -> bytes:
        if self.fail_after is not None and self.consumed >= self.fail_after:
            raise OSError("connection reset by peer")
        left = n if self.size is None else min(n, self.size - self.consumed)
        left = max(0, left)
        self.consumed += left
        return b" " * left


def local(app: StripelineWSGI) -> Callable[..., Any]:
    """``app`` as a server on 127.0.0.1 calls it (werkzeug's test client sets no REMOTE_ADDR)."""

    def from_localhost(environ: dict[str, Any], start_response: Any) -> Any:
        return app({**environ, "REMOTE_ADDR": "127.0.0.1"}, start_response)

    return from_localhost


def running(thread: WorkerThread) -> bool:
    return thread.running


def call(wsgi: StripelineWSGI, environ: dict[str, Any]) -> tuple[str, dict[str, str], bytes]:
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        answer["status"], answer["headers"] = status, dict(headers)

    body = b"".join(wsgi(environ, start_response))
    return answer["status"], answer["headers"], body


def environ(
    stream: Any, *, length: int | None = None, terminated: bool = False, signature: str = "x"
) -> dict[str, Any]:
    env: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/webhooks/stripe",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_STRIPE_SIGNATURE": signature,
        "wsgi.input": stream,
    }
    if length is not None:
        env["CONTENT_LENGTH"] = str(length)
    if terminated:
        env["wsgi.input_terminated"] = True
    return env


def test_a_signed_event_is_stored_and_a_duplicate_counted(
    app: Stripeline, wsgi: StripelineWSGI
) -> None:
    client = Client(local(wsgi))
    body = encode(event(id="evt_wsgi_1"))
    first = client.post("/webhooks/stripe", data=body, headers=signed(body))
    again = client.post("/webhooks/stripe", data=body, headers=signed(body))
    assert first.status_code == 200 and first.mimetype == "application/json"
    assert first.get_json() == {
        "received": True,
        "id": "evt_wsgi_1",
        "duplicate": False,
        "status": "pending",
    }
    assert again.get_json()["duplicate"] is True
    assert stored(app) == [("evt_wsgi_1", 2, "pending")]
    assert (counted(app, "stored"), counted(app, "duplicate")) == (1.0, 1.0)
    assert wsgi.worker is None  # no worker unless asked: `stripeline worker` processes


def test_refusals_are_the_asgi_routes_answers_counts_and_log_lines(
    make_app: Callable[..., Stripeline],
) -> None:
    """The same requests to both routes: the same status, body, count and log line."""
    body = encode(event())
    requests = [
        ("bad signature", body, signed(body, "whsec_someone_else")),
        ("no signature", body, {}),
        ("not an event", b"[1]", signed(b"[1]")),
        ("too large", encode(event(padding=LIMIT)), {}),
    ]
    seen: dict[str, list[Any]] = {}
    for route in ("asgi", "wsgi"):
        app = make_app()
        with capture_logs() as logs:
            if route == "asgi":
                with TestClient(create_app(app)) as asgi_client:
                    answers = [
                        asgi_client.post("/webhooks/stripe", content=data, headers=headers)
                        for _, data, headers in requests
                    ]
                    results = [(a.status_code, a.json()) for a in answers]
            else:
                wsgi_client = Client(local(make_wsgi_app(app)))
                responses = [
                    wsgi_client.post("/webhooks/stripe", data=data, headers=headers)
                    for _, data, headers in requests
                ]
                results = [(r.status_code, r.get_json()) for r in responses]
        rejected = [
            {k: v for k, v in entry.items() if k in ("event", "outcome", "reason", "client")}
            for entry in logs
            if entry.get("event") == "webhook_rejected"
        ]
        outcomes = ["bad_signature", "bad_payload", "too_large"]
        seen[route] = [results, rejected, [counted(app, o) for o in outcomes], stored(app)]
    asgi, wsgi = seen["asgi"], seen["wsgi"]
    assert [status for status, _ in wsgi[0]] == [400, 400, 400, 413]
    assert wsgi[2] == [2.0, 1.0, 1.0]
    assert wsgi[3] == []
    assert [r["client"] for r in wsgi[1]] == ["127.0.0.1"] * 4
    for name in ("results", "logs"):
        index = 0 if name == "results" else 1
        asgi_part = [{**r, "client": None} if isinstance(r, dict) else r for r in asgi[index]]
        wsgi_part = [{**r, "client": None} if isinstance(r, dict) else r for r in wsgi[index]]
        assert wsgi_part == asgi_part, name
    assert wsgi[2:] == asgi[2:]


def test_a_content_length_over_the_limit_is_413_before_a_byte_is_read(
    app: Stripeline, wsgi: StripelineWSGI
) -> None:
    stream = Input(None)
    status, _, body = call(wsgi, environ(stream, length=LIMIT + 1))
    assert status == "413 Request Entity Too Large"
    assert json.loads(body)["error"] == "too_large"
    assert stream.consumed == 0
    assert counted(app, "too_large") == 1.0


def test_a_body_of_unknown_length_is_read_to_at_most_the_limit_plus_one(
    app: Stripeline, wsgi: StripelineWSGI
) -> None:
    endless = Input(None)  # a chunked body that never ends
    status, _, _ = call(wsgi, environ(endless, terminated=True))
    assert status.startswith("413")
    assert endless.consumed == LIMIT + 1
    # Within the limit, a chunked body is read whole and stored.
    payload = encode(event(id="evt_chunked"))
    env = environ(
        io.BytesIO(payload), terminated=True, signature=signed(payload)["Stripe-Signature"]
    )
    status, _, body = call(wsgi, env)
    assert (status, json.loads(body)["id"]) == ("200 OK", "evt_chunked")
    assert stored(app) == [("evt_chunked", 1, "pending")]


def test_no_length_and_no_end_of_input_means_no_body(app: Stripeline, wsgi: StripelineWSGI) -> None:
    """PEP 3333: without CONTENT_LENGTH or ``wsgi.input_terminated`` nothing is read
    (reading could block on the next request of a keep-alive connection)."""
    stream = Input(None)
    for length in (None, "abc", "\u00b2"):  # absent, not a number, a digit int() refuses
        env = environ(stream)
        if length is not None:
            env["CONTENT_LENGTH"] = length
        status, _, body = call(wsgi, env)
        assert status.startswith("400") and json.loads(body)["error"] == "bad_signature"
    assert stream.consumed == 0


def test_a_body_cut_short_or_broken_is_disconnected(app: Stripeline, wsgi: StripelineWSGI) -> None:
    cut = Input(100)  # the client went away after 100 of its 500 bytes
    status, _, body = call(wsgi, environ(cut, length=500))
    assert status.startswith("400") and json.loads(body)["error"] == "disconnected"
    assert cut.consumed == 100
    reset = Input(None, fail_after=0)  # the server's reader raised: the connection reset
    status, _, body = call(wsgi, environ(reset, length=200))
    assert status.startswith("400") and json.loads(body)["error"] == "disconnected"
    assert counted(app, "disconnected") == 2.0
    assert stored(app) == []


def test_wrong_method_or_path_is_answered_as_the_asgi_app_does(
    app: Stripeline, wsgi: StripelineWSGI
) -> None:
    client = Client(local(wsgi))
    requests = [
        ("GET", "/webhooks/stripe"),
        ("PUT", "/webhooks/stripe/connect"),
        ("POST", "/healthz"),
        ("DELETE", "/metrics"),
        ("GET", "/"),
        ("POST", "/webhooks/other"),
        ("GET", "/stripe/healthz"),
    ]
    with TestClient(create_app(app)) as asgi:
        for method, path in requests:
            ours = client.open(path, method=method)
            theirs = asgi.request(method, path)
            assert ours.status_code == theirs.status_code, (method, path)
            assert ours.get_data() == theirs.content, (method, path)
            assert ours.headers["Content-Type"] == theirs.headers["content-type"]
            allow = {m.strip() for m in ours.headers.get("Allow", "").split(",") if m}
            assert allow == {m.strip() for m in theirs.headers.get("allow", "").split(",") if m}
    assert client.get("/webhooks/stripe").status_code == 405
    assert client.get("/nothing").status_code == 404


def test_health_ready_and_metrics(app: Stripeline, wsgi: StripelineWSGI) -> None:
    client = Client(local(wsgi))
    assert client.get("/healthz").get_json() == {"status": "ok"}
    head = client.head("/healthz")
    assert head.status_code == 200 and head.get_data() == b""
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json() == {
        "status": "ready",
        "checks": {"database": "ok", "migrations": "ok", "writes": "ok"},
    }
    body = encode(event())
    client.post("/webhooks/stripe", data=body, headers=signed(body))
    client.post("/webhooks/stripe", data=body, headers=signed(body))
    client.post("/webhooks/stripe", data=b"{}", headers={})
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    text = metrics.get_data(as_text=True)
    for line in (
        'stripeline_webhooks_total{endpoint="account",outcome="stored"} 1.0',
        'stripeline_webhooks_total{endpoint="account",outcome="duplicate"} 1.0',
        'stripeline_webhooks_total{endpoint="account",outcome="bad_signature"} 1.0',
        'stripeline_queue_depth{status="pending"} 1.0',
    ):
        assert line in text
    assert client.head("/metrics").get_data() == b""


def test_readyz_is_503_when_the_database_is_gone() -> None:
    url = "postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1"
    settings = Settings(stripe_webhook_secret=SecretStr(SECRET), database_url=url)
    app = Stripeline(settings, engine=make_engine(url))
    try:
        client = Client(local(make_wsgi_app(app)))
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.get_json()["status"] == "not_ready"
        body = encode(event())
        down = client.post("/webhooks/stripe", data=body, headers=signed(body))
        assert (down.status_code, down.headers["Retry-After"]) == (503, "5")
    finally:
        app.dispose()


def test_connect_endpoint(make_app: Callable[..., Stripeline]) -> None:
    body = encode(event(id="evt_connect", account="acct_1"))
    without = Client(make_wsgi_app(make_app()))
    answer = without.post("/webhooks/stripe/connect", data=body, headers=signed(body))
    assert (answer.status_code, answer.get_json()["error"]) == (404, "not_configured")
    app = make_app(stripe_connect_webhook_secret="whsec_connect_0001")
    client = Client(local(make_wsgi_app(app)))
    headers = signed(body, "whsec_connect_0001")
    assert client.post("/webhooks/stripe/connect", data=body, headers=headers).status_code == 200
    assert counted(app, "stored", "connect") == 1.0


def test_an_unknown_endpoint_name_is_a_programming_error(
    app: Stripeline, wsgi: StripelineWSGI
) -> None:
    """``webhook(environ, endpoint)`` is public (a framework view calls it);
    a name that is not an endpoint is refused before anything is read."""
    body = io.BytesIO(b"{}")
    environ = {"wsgi.input": body, "CONTENT_LENGTH": "2"}
    with pytest.raises(ValueError, match="unknown webhook endpoint 'platform'"):
        wsgi.webhook(environ, "platform")
    assert body.tell() == 0


def test_the_worker_thread_starts_on_the_first_request_and_is_woken_by_each_commit(
    app: Stripeline,
) -> None:
    handled: list[str] = []

    @app.on("customer.updated")
    def record(event: ReceivedEvent) -> None:
        handled.append(event.id)

    # Polling every 30 s: only the wake on commit makes it quick.
    wsgi = make_wsgi_app(app, run_worker=True, worker_options={"poll_seconds": 30})
    thread = wsgi.worker
    assert thread is not None
    assert not running(thread)  # nothing at construction
    client = Client(local(wsgi))
    assert client.get("/healthz").status_code == 200
    assert running(thread)
    thread_worker = thread.worker
    assert thread_worker is not None and f":{os.getpid()}:" in thread_worker.id
    time.sleep(0.2)  # the worker is idle, waiting for 30 s unless woken
    body = encode(event(id="evt_woken"))
    started = time.monotonic()
    assert client.post("/webhooks/stripe", data=body, headers=signed(body)).status_code == 200
    while stored(app) != [("evt_woken", 1, "processed")]:
        assert time.monotonic() - started < 20, stored(app)  # the poll would take 30
        time.sleep(0.01)
    assert handled == ["evt_woken"]
    assert wsgi.stop(timeout=10)
    assert not running(thread)


#: gunicorn --preload in miniature, in a fresh interpreter (no thread exists at
#: the fork, as in gunicorn's master): the app is built before the fork, each
#: child serves a request and reports the process its worker thread runs in.
PRELOAD = """
import json, os, sys
from pydantic import SecretStr
from werkzeug.test import Client
from stripeline.app import Stripeline
from stripeline.settings import Settings
from stripeline.web.wsgi import make_wsgi_app
from tests.factories import SECRET, encode, event, signed

url = sys.argv[1]
app = Stripeline(Settings(stripe_webhook_secret=SecretStr(SECRET), database_url=url))
wsgi = make_wsgi_app(app, run_worker=True)
app.engine.connect().close()  # the master's pool holds a connection at the fork
children = []
for n in range(2):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            body = encode(event(id=f"evt_child_{n}"))
            answer = Client(wsgi).post("/webhooks/stripe", data=body, headers=signed(body))
            worker = wsgi.worker.worker
            report = [answer.status_code, wsgi.worker.running, worker.id.split(":")[1]]
            report.append(wsgi.stop(timeout=10))
            os.write(write, json.dumps(report).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    children.append((pid, read))
results = {}
for pid, read in children:
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as pipe:
        results[str(pid)] = [os.waitstatus_to_exitcode(status), json.loads(pipe.read() or b"null")]
results["master_worker_running"] = wsgi.worker.running
print(json.dumps(results))
"""


def test_under_preload_each_forked_child_starts_its_own_worker(sqlite_url: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PRELOAD, sqlite_url],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert results.pop("master_worker_running") is False  # never a thread before the fork
    assert len(results) == 2
    for pid, (code, report) in results.items():
        assert code == 0, out.stderr
        assert report == [200, True, pid, True]  # stored; its own worker; stopped
    engine = make_engine(sqlite_url)
    with connect(engine, readonly=True) as conn:
        assert set(conn.scalars(select(Event.id))) == {"evt_child_0", "evt_child_1"}
    engine.dispose()


def test_worker_thread_stop_is_bounded_and_idempotent(app: Stripeline) -> None:
    worker = WorkerThread(app, stop_timeout=5)
    assert worker.stop()  # never started
    assert worker.start() and not worker.start()
    assert running(worker)
    assert worker.stop() and not running(worker)
    assert worker.stop()


def test_a_chunked_request_over_real_http(app: Stripeline, wsgi: StripelineWSGI) -> None:
    """werkzeug's server de-chunks and says so (``wsgi.input_terminated``)."""
    server = make_server("127.0.0.1", 0, wsgi, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        payload = encode(event(id="evt_http_chunked"))
        signature = signed(payload)["Stripe-Signature"]

        def send(body: bytes) -> int:
            conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
            try:
                pieces = (body[i : i + 1000] for i in range(0, len(body), 1000))
                headers = {"Stripe-Signature": signature, "Transfer-Encoding": "chunked"}
                conn.request("POST", "/webhooks/stripe", pieces, headers, encode_chunked=True)
                response = conn.getresponse()
                response.read()
                return response.status
            finally:
                conn.close()

        assert send(payload) == 200
        assert send(b"x" * (LIMIT * 3)) == 413
    finally:
        server.shutdown()
        thread.join(10)
    assert stored(app) == [("evt_http_chunked", 1, "pending")]
