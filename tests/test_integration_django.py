"""The example Django shop, run the documented way (docs/integrations/django.md).

``manage.py migrate``, ``manage.py runserver --noreload`` (a real server
process on 127.0.0.1), the offline sandbox delivering a subscription's
webhooks to it, ``manage.py stripeline worker`` processing them: the events
are stored by the Django view, processed by the worker, the handler's ORM
write is committed, and the shop answers access from the mirror.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe

from tests.test_serve import free_port

SHOP = Path(__file__).resolve().parent.parent / "examples" / "django_shop"


def manage(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=SHOP,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "manage.py", *args],
        cwd=SHOP,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(process: subprocess.Popen[str]) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    assert process.stderr is not None
    err = process.stderr.read()
    process.stderr.close()
    return err


def wait_for(check: Any, what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")


@pytest.mark.slow
def test_the_django_shop_receives_processes_and_answers_from_the_mirror(
    database_url: str,
) -> None:
    from stripeline_sandbox import Sandbox

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    sandbox = Sandbox(port=free_port(), webhook_url=f"{base}/stripe/webhooks/stripe").start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE", "DJANGO"))}
    env.update(
        SHOP_DATABASE_URL=database_url,
        STRIPE_SECRET_KEY=sandbox.secret_key,
        STRIPE_WEBHOOK_SECRET=sandbox.webhook_secret,
        STRIPELINE_STRIPE_API_BASE=sandbox.url,
    )
    server: subprocess.Popen[str] | None = None
    worker: subprocess.Popen[str] | None = None
    try:
        migrated = manage(["migrate", "--noinput"], env)
        assert migrated.returncode == 0, migrated.stderr
        server = start(["runserver", f"127.0.0.1:{port}", "--noreload"], env)

        def healthy() -> bool:
            try:
                return httpx.get(f"{base}/stripe/healthz").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(healthy, "the server answers /stripe/healthz")
        assert httpx.get(f"{base}/stripe/readyz").json()["status"] == "ready"

        client = stripe.StripeClient(sandbox.secret_key, base_addresses={"api": sandbox.url})
        customer = client.v1.customers.create({"email": "django@example.com"})
        product = client.v1.products.create({"name": "Shop plan"})
        price = client.v1.prices.create(
            {
                "product": product.id,
                "currency": "usd",
                "unit_amount": 900,
                "recurring": {"interval": "month"},
            }
        )
        subscription = client.v1.subscriptions.create(
            {
                "customer": customer.id,
                "items": [{"price": price.id}],
                "default_payment_method": "pm_card_visa",
            }
        )
        assert subscription.status == "active"
        assert sandbox.wait_for_deliveries(timeout=30)

        def stored() -> list[dict[str, Any]]:
            listed = manage(["stripeline", "events", "list", "--json"], env)
            assert listed.returncode == 0, listed.stderr
            events = json.loads(listed.stdout or "[]")
            types = {e["type"] for e in events}
            return events if "customer.subscription.created" in types else []

        events = wait_for(stored, "the subscription's events stored by the Django view")
        assert {e["status"] for e in events} == {"pending"}  # no worker yet
        before = httpx.get(f"{base}/access/{customer.id}").json()
        assert before["access"] is False and before["recorded"] is None

        worker = start(["stripeline", "worker"], env)

        def answered() -> dict[str, Any] | None:
            body: dict[str, Any] = httpx.get(f"{base}/access/{customer.id}").json()
            return body if body["access"] and body["recorded"] else None

        body = wait_for(answered, "access answered from the mirror and the handler's row")
        assert body["subscription"] == {"id": subscription.id, "status": "active"}
        assert body["recorded"] == {"status": "active", "active": True}

        def processed() -> bool:
            listed = manage(["stripeline", "events", "list", "--json"], env)
            return {e["status"] for e in json.loads(listed.stdout)} == {"processed"}

        wait_for(processed, "every event processed")
    finally:
        if worker is not None:
            worker_err = stop(worker)
            assert "Traceback" not in worker_err, worker_err[-4000:]
        if server is not None:
            server_err = stop(server)
            assert "Traceback" not in server_err, server_err[-4000:]
        sandbox.close()
