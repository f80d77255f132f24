"""Fixtures: one sandbox per session, a fresh account (key) and SDK client per test,
and a webhook receiver that verifies signatures with the official SDK's verifier."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import stripe

from stripeline_sandbox import Sandbox

RETRY_DELAYS = (0.05, 0.1, 0.2)


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(webhook_retry_delays=RETRY_DELAYS, webhook_timeout=2.0) as sb:
        yield sb


@pytest.fixture
def key(sandbox: Sandbox) -> str:
    """A fresh account: tests never see each other's objects."""
    return sandbox.new_key()


@pytest.fixture
def http_client() -> Iterator[stripe.RequestsClient]:
    client = stripe.RequestsClient(timeout=5)
    yield client
    client.close()  # type: ignore[no-untyped-call]


@pytest.fixture
def client(sandbox: Sandbox, key: str, http_client: stripe.RequestsClient) -> stripe.StripeClient:
    return stripe.StripeClient(key, base_addresses={"api": sandbox.url}, http_client=http_client)


def control(sandbox: Sandbox, key: str, method: str, path: str, **params: Any) -> Any:
    """Call a sandbox-only endpoint over plain HTTP (what a user's test would do)."""
    import urllib.parse
    import urllib.request

    data = urllib.parse.urlencode(params).encode() if method == "POST" else None
    request = urllib.request.Request(  # noqa: S310 - the local sandbox
        sandbox.url + path, data=data, method=method, headers={"Authorization": f"Bearer {key}"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - local sandbox
        return json.loads(response.read())


class Receiver:
    """A webhook endpoint that verifies every delivery and keeps the events."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.events: list[dict[str, Any]] = []
        self.rejected = 0
        #: Status codes to answer with, in turn, before answering 200.
        self.failures: list[int] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = 200
                try:
                    stripe.WebhookSignature.verify_header(
                        body.decode("utf-8"),
                        self.headers.get("Stripe-Signature") or "",
                        receiver.secret,
                        tolerance=300,
                    )
                except stripe.SignatureVerificationError:
                    status = 400
                with receiver._lock:
                    if status == 400:
                        receiver.rejected += 1
                    elif receiver.failures:
                        status = receiver.failures.pop(0)
                    else:
                        receiver.events.append(json.loads(body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhooks"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}
        )
        self.thread.start()

    def types(self) -> list[str]:
        with self._lock:
            return [e["type"] for e in self.events]

    def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                events = list(self.events)
            if predicate(events):
                return events
            time.sleep(0.01)
        raise AssertionError(f"timed out; received {[e['type'] for e in events]}")

    def wait_for_type(self, event_type: str, count: int = 1) -> list[dict[str, Any]]:
        events = self.wait_for(lambda es: sum(e["type"] == event_type for e in es) >= count)
        return [e for e in events if e["type"] == event_type]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def receiver(sandbox: Sandbox, key: str) -> Iterator[Receiver]:
    """Receives this test's account's events, verified against the sandbox's secret."""
    rec = Receiver(sandbox.webhook_secret)
    sandbox.listen(rec.url, key=key)
    yield rec
    rec.close()
