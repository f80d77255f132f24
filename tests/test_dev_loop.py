"""The dev loop a newcomer walks: the README's example runs as written, and
`make run`'s server (SQLite, the sandbox kept in a state file) remembers its
sandbox across a restart, with the printed exports letting another shell's
`stripeline verify` talk to the same sandbox."""

from __future__ import annotations

import importlib
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import stripe
import uvicorn
from sqlalchemy import select, text

from stripeline.db.engine import connect
from stripeline.web import WebhookIntake
from stripeline.worker import Worker
from stripeline_sandbox import Sandbox
from tests.factories import SECRET, encode, event, signed
from tests.test_serve import ROOT, free_port, run


def readme_example() -> str:
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"```python\n(# billing\.py.*?)```", readme, re.DOTALL)
    assert found, "README.md lost its billing.py example"
    return found.group(1)


@pytest.fixture
def billing_module(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    (tmp_path / "billing.py").write_text(readme_example())
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("STRIPELINE_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", SECRET)
    yield "billing"
    module = sys.modules.pop("billing", None)
    if module is not None:
        module.app.dispose()


def test_the_readme_example_runs_as_written(
    billing_module: str, caplog: pytest.LogCaptureFixture
) -> None:
    billing = importlib.import_module(billing_module)
    invoice = {
        "id": "in_readme_1",
        "object": "invoice",
        "customer": "cus_readme",
        "amount_paid": 1200,
        "status": "paid",
    }
    body = encode(event("invoice.paid", obj=invoice))
    intake = WebhookIntake(billing.app)
    answer = intake.receive("account", body, signed(body)["Stripe-Signature"])
    assert answer.status == 200, answer.body
    again = intake.receive("account", body, signed(body)["Stripe-Signature"])
    assert again.body["duplicate"] is True
    with caplog.at_level(logging.WARNING, logger="billing"):
        assert Worker(billing.app).drain() == 1
    with connect(billing.app.engine, readonly=True) as conn:
        rows = conn.execute(select(billing.paid)).all()
        status = conn.execute(text("SELECT status FROM stripeline_events")).scalar_one()
    assert [tuple(r) for r in rows] == [("in_readme_1", "cus_readme", 1200)]
    assert status == "processed"
    assert [r.getMessage() for r in caplog.records if r.name == "billing"] == [
        "receipt for in_readme_1 sent to cus_readme"
    ]


def readme_fastapi_example() -> str:
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"```python\n(# shop\.py.*?)```", readme, re.DOTALL)
    assert found, "README.md lost its FastAPI example (shop.py)"
    return found.group(1)


def test_the_readme_fastapi_example_runs_as_written(
    tmp_path: Path,
    sqlite_url: str,
    stripe_sandbox: Sandbox,
    stripe_key: str,
    stripe_client: stripe.StripeClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The README's ten lines in a FastAPI app, served by uvicorn with its
    lifespan, against the sandbox: a payment taken through the flows is
    fulfilled once from the webhook, and paying again charges nothing."""
    (tmp_path / "readme_shop.py").write_text(readme_fastapi_example())
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("STRIPELINE_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("STRIPE_SECRET_KEY", stripe_key)
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", stripe_sandbox.webhook_secret)
    monkeypatch.setenv("STRIPELINE_STRIPE_API_BASE", stripe_sandbox.url)
    shop = importlib.import_module("readme_shop")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(shop.api, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the shop did not start"
            time.sleep(0.01)
        stripe_sandbox.listen(f"{base}/stripe/webhooks/stripe", key=stripe_key)
        query = {"user_id": "ada", "payment_method": "pm_card_visa"}
        paid = httpx.post(f"{base}/orders/order_42/pay", params=query, timeout=10)
        assert paid.json() == {"status": "succeeded", "client_secret": None}
        deadline = time.monotonic() + 15
        while shop.SHIPPED != ["order_42"]:
            assert time.monotonic() < deadline, f"not fulfilled: {shop.SHIPPED}"
            time.sleep(0.05)
        again = httpx.post(f"{base}/orders/order_42/pay", params=query, timeout=10)
        assert again.json()["status"] == "succeeded"
        time.sleep(0.5)  # room for a second fulfilment, were there one
        assert shop.SHIPPED == ["order_42"]
        (intent,) = stripe_client.v1.payment_intents.list().data
        customer = shop.billing.mirror.customer_for_user("ada")
        assert (intent.amount, intent.customer) == (2000, customer.id)
        assert len(stripe_client.v1.charges.list().data) == 1
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        sys.modules.pop("readme_shop", None)
        shop.billing.dispose()


def _serve(
    tmp_path: Path, env: dict[str, str], port: int, sandbox_port: int
) -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stripeline",
            "serve",
            "--port",
            str(port),
            "--sandbox-port",
            str(sandbox_port),
            "--sandbox-state",
            ".stripeline/sandbox.json",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert server.stdout is not None
    banner = ""
    deadline = time.monotonic() + 60
    while "stripeline serving" not in banner and time.monotonic() < deadline:
        banner += server.stdout.readline()
    for _ in range(200):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    return server, banner


def _stop(server: subprocess.Popen[str]) -> None:
    server.send_signal(signal.SIGINT)
    server.wait(30)
    if server.stdout is not None:
        server.stdout.close()


def _exports(banner: str) -> dict[str, str]:
    return dict(re.findall(r"export (\w+)=(\S+)", banner))


def _processed(env: dict[str, str], cwd: Path, count: int) -> None:
    for _ in range(200):
        result = run(["events", "list", "--status", "pending", "--json"], env, cwd)
        listed = run(["events", "list", "--json"], env, cwd)
        if result.stdout.strip() in ("", "[]") and listed.stdout.count('"processed"') >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"events not processed: {listed.stdout}")


@pytest.mark.slow
def test_make_runs_sandbox_survives_a_restart_and_verify_from_another_shell_agrees(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "STRIPELINE_"))}
    env["PYTHONPATH"] = str(ROOT / "src")
    assert run(["migrate"], env, tmp_path).returncode == 0
    port, sandbox_port = free_port(), free_port()

    server, banner = _serve(tmp_path, env, port, sandbox_port)
    try:
        exports = _exports(banner)
        assert set(exports) == {"STRIPE_SECRET_KEY", "STRIPELINE_STRIPE_API_BASE"}, banner
        assert "state kept in .stripeline/sandbox.json" in banner
        client = stripe.StripeClient(
            exports["STRIPE_SECRET_KEY"],
            base_addresses={"api": exports["STRIPELINE_STRIPE_API_BASE"]},
            max_network_retries=0,
        )
        made = {client.v1.customers.create({"email": f"u{i}@example.com"}).id for i in range(3)}
        _processed(env, tmp_path, 3)
    finally:
        _stop(server)

    server, banner = _serve(tmp_path, env, port, sandbox_port)
    try:
        assert "state read from .stripeline/sandbox.json" in banner
        assert _exports(banner) == exports
        listed = {c.id for c in client.v1.customers.list().data}
        assert listed == made
        client.v1.customers.create({"email": "after-restart@example.com"})
        _processed(env, tmp_path, 4)
        # Another shell, with the printed exports: the same sandbox, no drift.
        without = run(["verify", "customer"], env, tmp_path)
        assert without.returncode == 2
        assert "STRIPELINE_STRIPE_API_BASE" in without.stderr
        verified = run(["verify", "customer"], {**env, **exports}, tmp_path)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "the mirror agrees with Stripe" in verified.stdout
    finally:
        _stop(server)
