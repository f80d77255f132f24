"""``Sandbox(state_file=…)``: the key, the webhook secret, the clock and every
object outlive the process, so a restarted sandbox answers as before."""

from __future__ import annotations

import json
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import stripe

from stripeline_sandbox import Sandbox, StateFileError


def client(sb: Sandbox) -> stripe.StripeClient:
    return stripe.StripeClient(
        sb.secret_key,
        base_addresses={"api": sb.url},
        http_client=stripe.RequestsClient(timeout=5),
        max_network_retries=0,
    )


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "state" / "sandbox.json"


def test_a_restarted_sandbox_has_the_same_key_secret_clock_and_objects(state: Path) -> None:
    with Sandbox(state_file=state, webhook_url="http://127.0.0.1:9/hook") as first:
        assert not first.restored
        c = client(first)
        customer = c.v1.customers.create({"email": "kept@example.com"})
        # A card's hidden test behaviour and an idempotent answer are kept too.
        pm = c.v1.payment_methods.create(
            {"type": "card", "card": {"token": "tok_chargeCustomerFail"}}
        )
        c.v1.payment_methods.attach(pm.id, {"customer": customer.id})
        saved_intent = c.v1.payment_intents.create(
            {"amount": 500, "currency": "usd", "customer": customer.id},
            {"idempotency_key": "order-1"},
        )
        first.clock.advance(3600)
        key, secret, now = first.secret_key, first.webhook_secret, first.clock.now()
        endpoints = c.v1.webhook_endpoints.list().data
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert json.loads(state.read_text())["secret_key"] == key

    with Sandbox(state_file=state, webhook_url="http://127.0.0.1:9/hook") as second:
        assert second.restored
        assert (second.secret_key, second.webhook_secret) == (key, secret)
        assert second.clock.now() >= now
        c = client(second)
        assert c.v1.customers.retrieve(customer.id).email == "kept@example.com"
        # The endpoint `listen` made is the same one, not a second.
        assert [e.id for e in c.v1.webhook_endpoints.list().data] == [e.id for e in endpoints]
        replayed = c.v1.payment_intents.create(
            {"amount": 500, "currency": "usd", "customer": customer.id},
            {"idempotency_key": "order-1"},
        )
        assert replayed.id == saved_intent.id
        with pytest.raises(stripe.CardError) as declined:
            c.v1.payment_intents.create(
                {
                    "amount": 500,
                    "currency": "usd",
                    "customer": customer.id,
                    "payment_method": pm.id,
                    "confirm": True,
                }
            )
        assert declined.value.code == "card_declined"


def test_changes_are_written_within_a_second_without_a_close(state: Path) -> None:
    sb = Sandbox(state_file=state).start()
    try:
        customer = client(sb).v1.customers.create({"email": "soon@example.com"})
        for _ in range(50):
            if state.exists() and customer.id in state.read_text():
                break
            time.sleep(0.1)
        assert customer.id in state.read_text()
    finally:
        sb.close()


def test_a_damaged_or_foreign_state_file_is_refused_with_the_way_out(state: Path) -> None:
    state.parent.mkdir(parents=True)
    state.write_text("{not json")
    with pytest.raises(StateFileError, match="not JSON"):
        Sandbox(state_file=state)
    state.write_text(json.dumps({"format": 99}))
    with pytest.raises(StateFileError, match="move it away"):
        Sandbox(state_file=state)


def test_save_state_needs_a_state_file() -> None:
    sb = Sandbox()
    try:
        with pytest.raises(ValueError, match="state_file"):
            sb.save_state()
    finally:
        sb.close()


def test_a_short_key_is_refused_with_the_shape_expected() -> None:
    with Sandbox() as sb:
        short = stripe.StripeClient(
            "sk_test_django1",
            base_addresses={"api": sb.url},
            http_client=stripe.RequestsClient(timeout=5),
            max_network_retries=0,
        )
        with pytest.raises(stripe.AuthenticationError, match="8 or more letters"):
            short.v1.customers.list()
