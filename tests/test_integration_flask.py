"""Acceptance: the Flask example shop under gunicorn, the documented way.

``gunicorn --workers 2 --preload 'flask_shop:create_app()'`` on 127.0.0.1 and a
free port; a subscription made through the shop's own view against the
sandbox, whose webhooks go to the shop over real HTTP; each event stored by the
blueprint, processed by the extension's worker thread in a gunicorn worker
process (never in the master: ``--preload`` builds the app there, before the
fork), the handler's row committed with its event, access read from the
mirror; and at SIGTERM every worker thread stopped.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from flask_shop.models import Purchase, init_db
from stripeline.db.engine import connect, make_engine
from stripeline.db.models import Event
from stripeline.gateway import StripeClient
from stripeline_sandbox import Sandbox

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def worker_pids(output: str, action: str) -> list[str]:
    """The pids of the worker threads' ``action`` lines (JSON logs: the
    extension logs in STRIPELINE_LOG_FORMAT; worker ids are host:pid:random)."""
    pids = []
    for line in output.splitlines():
        if line.startswith("{"):
            logged = json.loads(line)
            if logged.get("action") == action:
                pids.append(str(logged["worker"]).rsplit(":", 2)[1])
    return pids


pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - the shop on 127.0.0.1
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


def eventually(check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.1)
    return result


def test_the_shop_under_gunicorn_takes_a_subscription_through_webhooks(
    stripe_sandbox: Sandbox,
    stripe_key: str,
    stripe_client: StripeClient,
    database_url: str,
    tmp_path: Path,
) -> None:
    engine = make_engine(database_url)  # migrated by the fixture: `stripeline migrate`
    init_db(engine)  # `flask --app flask_shop init-db`
    product = stripe_client.v1.products.create({"name": "Membership"})
    price = stripe_client.v1.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount": 1200,
            "recurring": {"interval": "month"},
        }
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    environment = {
        **os.environ,
        "STRIPE_SECRET_KEY": stripe_key,
        "STRIPE_WEBHOOK_SECRET": stripe_sandbox.webhook_secret,
        "STRIPELINE_STRIPE_API_BASE": stripe_sandbox.url,
        "STRIPELINE_DATABASE_URL": database_url,
        "SHOP_PLAN_PRICE": price.id,
        "PYTHONUNBUFFERED": "1",
    }
    log_path = tmp_path / "gunicorn.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [
                *(sys.executable, "-m", "gunicorn"),
                *("--workers", "2", "--preload", "--bind", f"127.0.0.1:{port}"),
                *("--graceful-timeout", "20", "--timeout", "60"),
                "flask_shop:create_app()",
            ],
            cwd=EXAMPLES,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        def healthy() -> bool:
            assert server.poll() is None, log_path.read_text()
            try:
                return http("GET", f"{base}/stripe/healthz")[0] == 200
            except OSError:
                return False

        eventually(healthy, "gunicorn answers", timeout=120)
        assert http("GET", f"{base}/stripe/readyz")[0] == 200
        before = set(stripe_sandbox.event_ids(key=stripe_key))  # never delivered: no endpoint
        stripe_sandbox.listen(f"{base}/stripe/webhooks/stripe", ["*"], key=stripe_key)

        status, subscribed = http(
            "POST", f"{base}/subscribe", {"user_id": "ada", "email": "ada@example.com"}
        )
        assert status == 200, subscribed
        assert subscribed["status"] == "active"

        def access() -> bool:
            return bool(http("GET", f"{base}/access/ada")[1]["access"])

        eventually(access, "access granted from the mirror")
        assert http("GET", f"{base}/access/ada")[1]["subscriptions"] == [
            {"id": subscribed["subscription"], "status": "active"}
        ]

        def all_processed() -> list[tuple[str, str]] | None:
            wanted = set(stripe_sandbox.event_ids(key=stripe_key)) - before
            with connect(engine, readonly=True) as conn:
                rows = conn.execute(select(Event.id, Event.type, Event.status)).all()
            stored = {row.id for row in rows}
            done = [(row.type, row.status) for row in rows if row.status == "processed"]
            return done if wanted <= stored and len(done) == len(rows) else None

        processed = eventually(all_processed, "every event stored and processed")
        assert ("customer.subscription.created", "processed") in processed
        with connect(engine, readonly=True) as conn:
            (invoice_row,) = conn.execute(
                select(Purchase.kind, Purchase.amount, Purchase.event_id)
            ).all()
            assert (invoice_row.kind, invoice_row.amount) == ("invoice", 1200)
            paid = conn.execute(
                select(Event.type, Event.status).where(Event.id == invoice_row.event_id)
            ).one()
        assert tuple(paid) == ("invoice.paid", "processed")
        _, purchases = http("GET", f"{base}/purchases/ada")
        assert [p["kind"] for p in purchases["purchases"]] == ["invoice"]
        metrics = urllib.request.urlopen(f"{base}/stripe/metrics", timeout=30).read()  # noqa: S310
        assert b"stripeline_webhooks_total" in metrics
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(60)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait(10)
        engine.dispose()
    output = log_path.read_text()
    started = worker_pids(output, "worker_started")
    stopped = worker_pids(output, "worker_stopped")
    assert started, output
    assert str(server.pid) not in started  # never in the master: --preload forks after import
    assert sorted(stopped) == sorted(started), output  # each stopped at its process's exit
    assert len(set(started)) == len(started)  # one worker thread per serving process
