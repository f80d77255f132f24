"""Acceptance: the FastAPI example (examples/fastapi_shop) served the documented
way — ``stripeline migrate``, then ``uvicorn shop.main:app`` — in a real server
process, driven over real HTTP against the sandbox.

With its lifespan: a subscription and a payment go through, their webhooks
are stored and processed, the handler's own row is committed and access is
read from the mirror, and what the webhooks missed the catch-up loop finds;
SIGTERM stops the server within its grace time. With
the lifespan deliberately off (``--lifespan off``, as a mounted app's
lifespan is by default): the webhook route answers 503 at once naming the
fix, nothing is stored, and SIGTERM still stops the server at once.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from shop.billing import PaidOrder
from stripeline.db.engine import make_engine
from stripeline.db.models import Event
from stripeline.gateway import StripeClient
from stripeline.mirror import Mirror
from stripeline_sandbox import Sandbox
from tests.factories import encode, event, signed

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "fastapi_shop"
GRACE = 3  # uvicorn --timeout-graceful-shutdown


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], object], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.05)


class Shop:
    """``uvicorn shop.main:app`` in its own process, configured by the environment."""

    def __init__(self, tmp_path: Path, environment: dict[str, str], *, lifespan: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = (tmp_path / f"uvicorn-{lifespan}.log").open("w+")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "shop.main:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--lifespan",
                lifespan,
                "--timeout-graceful-shutdown",
                str(GRACE),
            ],
            cwd=tmp_path,
            env=environment,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.http = httpx.Client(base_url=self.base, timeout=10)
        wait_for(self._up, 30)

    def _up(self) -> bool:
        assert self.process.poll() is None, self.output()
        try:
            return self.http.get("/stripe/healthz").status_code == 200
        except httpx.TransportError:
            return False

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def terminate(self) -> float:
        """SIGTERM; how long the server took to exit."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(GRACE + 30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
        return time.monotonic() - started

    def close(self) -> None:
        self.http.close()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture
def environment(
    stripe_sandbox: Sandbox, stripe_key: str, database_url: str, tmp_path: Path
) -> dict[str, str]:
    """The documented configuration (environment variables), then ``stripeline migrate``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "STRIPELINE_"))}
    env.update(
        STRIPE_SECRET_KEY=stripe_key,
        STRIPE_WEBHOOK_SECRET=stripe_sandbox.webhook_secret,
        STRIPELINE_STRIPE_API_BASE=stripe_sandbox.url,
        STRIPELINE_DATABASE_URL=database_url,
        STRIPELINE_WORKER_POLL_SECONDS="0.1",
        STRIPELINE_CATCH_UP_INTERVAL="1",
        PYTHONPATH=os.pathsep.join([str(EXAMPLE), str(ROOT / "src")]),
    )
    migrate = subprocess.run(
        [sys.executable, "-m", "stripeline", "migrate"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert migrate.returncode == 0, migrate.stderr
    return env


@pytest.fixture
def shop(tmp_path: Path, environment: dict[str, str]) -> Iterator[Shop]:
    served = Shop(tmp_path, environment, lifespan="on")
    yield served
    served.close()


@pytest.fixture
def shop_without_lifespan(tmp_path: Path, environment: dict[str, str]) -> Iterator[Shop]:
    served = Shop(tmp_path, environment, lifespan="off")
    yield served
    served.close()


def assert_shut_down_cleanly(shop: Shop) -> None:
    """uvicorn shut down (lifespan included), then re-raised SIGTERM to exit
    as the signal asks (uvicorn ≥ 0.29): -SIGTERM, or 0 on an older one."""
    assert shop.process.returncode in (0, -signal.SIGTERM), shop.output()
    assert "Finished server process" in shop.output()


def inbox(database_url: str) -> dict[str, tuple[str, str]]:
    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            return {e.id: (e.type, e.status) for e in session.scalars(select(Event))}
    finally:
        engine.dispose()


def sources(database_url: str) -> dict[str, str]:
    """Event type -> how it came in (``webhook``, ``catch-up``)."""
    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            return {e.type: e.source for e in session.scalars(select(Event))}
    finally:
        engine.dispose()


def paid_orders(database_url: str) -> dict[str, int]:
    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            return {o.payment_intent: o.amount for o in session.scalars(select(PaidOrder))}
    finally:
        engine.dispose()


@pytest.mark.slow
def test_the_example_served_by_uvicorn_takes_a_subscription_and_a_payment(
    shop: Shop,
    stripe_sandbox: Sandbox,
    stripe_key: str,
    stripe_client: StripeClient,
    database_url: str,
) -> None:
    assert shop.http.get("/stripe/readyz").json()["status"] == "ready"
    # Before the endpoint exists: no webhook for it; the catch-up loop finds it.
    missed = stripe_client.v1.customers.create({"email": "early@example.com"})
    wait_for(lambda: sources(database_url).get("customer.created") == "catch-up")
    engine = make_engine(database_url)
    try:
        wait_for(lambda: Mirror(engine).customer(missed.id) is not None)  # and processed
    finally:
        engine.dispose()
    stripe_sandbox.listen(f"{shop.base}/stripe/webhooks/stripe", key=stripe_key)
    assert shop.http.get("/access/ada").json() == {"access": False}

    signup = shop.http.post("/subscribe", json={"user": "ada", "email": "ada@example.com"})
    assert signup.status_code == 200, signup.text
    wait_for(lambda: shop.http.get("/access/ada").json()["access"])  # read from the mirror
    events = inbox(database_url)
    assert ("customer.subscription.created", "processed") in events.values()

    paid = shop.http.post("/pay", json={"amount": 4200}).json()
    assert paid["status"] == "succeeded"
    wait_for(lambda: shop.http.get(f"/orders/{paid['payment_intent']}").is_success)
    # The handler's rows: this payment's, and the subscription's first invoice's.
    assert paid_orders(database_url)[paid["payment_intent"]] == 4200
    assert sorted(paid_orders(database_url).values()) == [900, 4200]
    wait_for(lambda: {s for _, s in inbox(database_url).values()} == {"processed"})
    assert ("payment_intent.succeeded", "processed") in inbox(database_url).values()

    # SIGTERM with a webhook request half sent: out within the grace time.
    with socket.create_connection(("127.0.0.1", shop.port)) as slow:
        slow.sendall(
            b"POST /stripe/webhooks/stripe HTTP/1.1\r\nHost: shop\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        time.sleep(0.2)
        took = shop.terminate()
    assert took < GRACE + 2, shop.output()
    assert_shut_down_cleanly(shop)
    assert "worker_stopped" in shop.output()


@pytest.mark.slow
def test_the_example_without_its_lifespan_answers_503_at_once_naming_the_fix(
    shop_without_lifespan: Shop, stripe_sandbox: Sandbox, database_url: str
) -> None:
    shop = shop_without_lifespan
    payload = encode(event())
    started = time.monotonic()
    answer = shop.http.post(
        "/stripe/webhooks/stripe",
        content=payload,
        headers=signed(payload, stripe_sandbox.webhook_secret),
    )
    assert time.monotonic() - started < 2
    assert answer.status_code == 503
    assert answer.json()["error"] == "not_started"
    assert "FastAPI(lifespan=stripeline_app.lifespan)" in answer.json()["message"]
    ready = shop.http.get("/stripe/readyz")
    assert ready.status_code == 503 and "lifespan" in ready.json()["checks"]["started"]
    assert inbox(database_url) == {}
    assert "stripeline_not_started" in shop.output()

    took = shop.terminate()
    assert took < GRACE + 2, shop.output()
    assert_shut_down_cleanly(shop)
