"""Issue 10's acceptance, with a real crash: a process calls
``payments.start``, the sandbox commits and holds the answer, the process is
killed (SIGKILL: no cleanup, no ``finally``), and a new process calls
``start`` again: one PaymentIntent, one charge, one fulfilment. On SQLite and
PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
import stripe
from sqlalchemy import select

from stripeline.app import Stripeline
from stripeline.db.engine import read
from stripeline.flows.calls import calls
from stripeline.flows.payments import Fulfilment, Succeeded
from stripeline.testing import StripelineEnv
from stripeline_sandbox import Sandbox
from tests.test_flows_payments import charges, payment_intents, settings_for

CHILD = """
import stripeline

app = stripeline.Stripeline()
print("sending", flush=True)
app.payments.start("order_kill", 2000, "usd", payment_method="pm_card_visa")
print("answered", flush=True)
"""


@pytest.fixture
def app(stripe_sandbox: Sandbox, stripe_key: str, database_url: str) -> Iterator[Stripeline]:
    app = Stripeline(settings_for(stripe_sandbox, stripe_key, database_url))
    yield app
    app.dispose()


def wait_for(check: Callable[[], object], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.05)


@pytest.mark.slow  # a Python process started per case (its imports take seconds)
@pytest.mark.parametrize("lost", ["create", "confirm"])
def test_a_process_killed_after_stripe_committed_then_a_new_one_is_one_payment(
    stripe_sandbox: Sandbox,
    stripe_key: str,
    stripe_client: stripe.StripeClient,
    database_url: str,
    app: Stripeline,
    lost: str,
) -> None:
    fulfilled: list[Fulfilment] = []
    app.fulfil(fulfilled.append)
    env = StripelineEnv(stripe_sandbox, stripe_key, stripe_client, app)
    try:
        # The sandbox commits, then holds its answer far longer than the test runs.
        path = "/v1/payment_intents$" if lost == "create" else "/confirm$"
        stripe_sandbox.inject_fault(
            "timeout", path=path, method="POST", key=stripe_key, after_commit=True, delay=60
        )
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD],
            env={
                **os.environ,
                "STRIPE_SECRET_KEY": stripe_key,
                "STRIPE_WEBHOOK_SECRET": stripe_sandbox.webhook_secret,
                "STRIPELINE_STRIPE_API_BASE": stripe_sandbox.url,
                "STRIPELINE_DATABASE_URL": database_url,
                "STRIPELINE_MAX_NETWORK_RETRIES": "0",
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            if lost == "create":
                wait_for(lambda: payment_intents(stripe_client))
            else:
                wait_for(
                    lambda: [p for p in payment_intents(stripe_client) if p.status == "succeeded"]
                )
            # Stripe has it; the process has not heard back: its call is in flight.
            pending = read(
                app.engine,
                lambda c: c.execute(select(calls.c.key, calls.c.status)).all(),
            )
            assert child.poll() is None, child.communicate()
        finally:
            child.send_signal(signal.SIGKILL)
            out, err = child.communicate(timeout=10)
        assert child.returncode == -signal.SIGKILL
        assert "sending" in out and "answered" not in out, err
        in_flight = (
            "payment_intent:create:order_kill" if lost == "create" else "payment_intent:confirm"
        )
        assert any(key.startswith(in_flight) and status != "done" for key, status in pending)

        # A new process (nothing in memory, only the database) starts it again.
        restarted = Stripeline(app.settings)
        try:
            outcome = restarted.payments.start(
                "order_kill", 2000, "usd", payment_method="pm_card_visa"
            )
        finally:
            restarted.dispose()
        assert isinstance(outcome, Succeeded) and outcome.amount_received == 2000
        (made,) = payment_intents(stripe_client)
        assert made.id == outcome.payment_intent_id
        assert len(charges(stripe_client)) == 1
        env.settle()
        env.deliver([e.data for e in env.events()], order="shuffled", seed=11, copies=2)
        env.settle()
    finally:
        stripe_sandbox.clear_faults(stripe_key)
        env.close()
    assert [(f.order_id, f.payment_intent_id, f.amount) for f in fulfilled] == [
        ("order_kill", made.id, 2000)
    ]
