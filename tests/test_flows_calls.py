"""The ledger of outgoing calls (``stripeline.flows.calls``) against the
sandbox through the official SDK, on SQLite and PostgreSQL: a call recorded
before it is sent, the same key on every retry, one object whatever is lost."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import stripe
from pydantic import SecretStr
from sqlalchemy import update

from stripeline.app import Stripeline
from stripeline.db import connect, models
from stripeline.errors import (
    CallConflict,
    ModeMismatch,
    StripeAuthenticationError,
    StripeCardError,
    StripeConnectionError,
    StripeServerError,
)
from stripeline.flows.calls import WINDOW, idempotency_key, params_hash
from stripeline.inbox import utcnow
from stripeline.settings import Settings
from stripeline_sandbox import Sandbox


@pytest.fixture
def app(stripe_sandbox: Sandbox, stripe_key: str, database_url: str) -> Iterator[Stripeline]:
    settings = Settings(
        stripe_secret_key=SecretStr(stripe_key),
        stripe_api_base=stripe_sandbox.url,
        database_url=database_url,
        max_network_retries=0,
    )
    app = Stripeline(settings)
    yield app
    app.dispose()


def create_customer(app: Stripeline, user: str, **params: Any) -> dict[str, Any]:
    params = {"email": f"{user}@example.com", "metadata": {"user": user}, **params}
    return app.calls.run(
        "customer:create",
        user,
        params,
        lambda client, key: client.v1.customers.create(params, {"idempotency_key": key}),  # type: ignore[arg-type]
        find=lambda client: next(
            iter(client.v1.customers.search({"query": f"metadata['user']:'{user}'"}).data), None
        ),
    )


def customers(client: stripe.StripeClient) -> list[str]:
    return [c.id for c in client.v1.customers.list({"limit": 100}).auto_paging_iter()]


def test_a_call_is_recorded_and_made_once(
    app: Stripeline, stripe_client: stripe.StripeClient
) -> None:
    made = create_customer(app, "u1")
    again = create_customer(app, "u1")
    assert made["id"] == again["id"] and made["object"] == "customer"
    assert customers(stripe_client) == [made["id"]]
    record = app.calls.record("customer:create", "u1")
    assert record is not None
    assert (record.status, record.object_id, record.attempts) == ("done", made["id"], 1)
    params = {"email": "u1@example.com", "metadata": {"user": "u1"}}
    assert record.idempotency_key == idempotency_key("customer:create:u1", params_hash(params))
    # What Stripe answered is in the mirror at once, before any webhook.
    mirrored = app.mirror.customer(made["id"])
    assert mirrored is not None and mirrored.email == "u1@example.com"


def test_other_parameters_for_the_same_call_are_refused_before_any_call(
    app: Stripeline, stripe_client: stripe.StripeClient
) -> None:
    create_customer(app, "u2")
    with pytest.raises(CallConflict, match="customer:create:u2 was already called") as info:
        create_customer(app, "u2", name="Other")
    assert info.value.key == "customer:create:u2"
    assert len(customers(stripe_client)) == 1


def test_an_answer_lost_after_stripe_committed_is_not_a_second_object(
    app: Stripeline, stripe_sandbox: Sandbox, stripe_key: str, stripe_client: stripe.StripeClient
) -> None:
    stripe_sandbox.inject_fault("disconnect", path="/v1/customers", method="POST", key=stripe_key)
    with pytest.raises(StripeConnectionError):
        create_customer(app, "u3")
    pending = app.calls.record("customer:create", "u3")
    assert pending is not None and (pending.status, pending.attempts) == ("pending", 1)
    # A new process: nothing in memory, only the ledger.
    restarted = Stripeline(app.settings)
    try:
        made = create_customer(restarted, "u3")
    finally:
        restarted.dispose()
    assert customers(stripe_client) == [made["id"]]
    record = app.calls.record("customer:create", "u3")
    assert record is not None and (record.status, record.attempts) == ("done", 2)


def test_past_the_window_the_object_is_looked_up_not_made_again(
    app: Stripeline, stripe_sandbox: Sandbox, stripe_key: str, stripe_client: stripe.StripeClient
) -> None:
    stripe_sandbox.inject_fault("disconnect", path="/v1/customers", method="POST", key=stripe_key)
    with pytest.raises(StripeConnectionError):
        create_customer(app, "u4")
    calls = models.Call
    with connect(app.engine) as conn:
        conn.execute(update(calls).values(sent_at=utcnow() - WINDOW - timedelta(hours=2)))
    made = create_customer(app, "u4")
    assert customers(stripe_client) == [made["id"]]
    record = app.calls.record("customer:create", "u4")
    assert record is not None and (record.status, record.generation) == ("done", 1)


def test_past_the_window_and_not_found_it_is_sent_with_a_new_key(
    app: Stripeline, stripe_sandbox: Sandbox, stripe_key: str, stripe_client: stripe.StripeClient
) -> None:
    # Refused before Stripe did anything: nothing to find.
    stripe_sandbox.inject_fault("api_error", path="/v1/customers", method="POST", key=stripe_key)
    with pytest.raises(StripeServerError):
        create_customer(app, "u5")
    calls = models.Call
    with connect(app.engine) as conn:
        conn.execute(update(calls).values(sent_at=utcnow() - WINDOW - timedelta(hours=2)))
    made = create_customer(app, "u5")
    assert customers(stripe_client) == [made["id"]]
    record = app.calls.record("customer:create", "u5")
    assert record is not None and (record.generation, record.status) == (2, "done")
    assert record.idempotency_key.endswith(":2")


def test_a_refusal_for_good_is_recorded_and_raised_again_without_a_call(
    app: Stripeline, stripe_sandbox: Sandbox, stripe_key: str, stripe_client: stripe.StripeClient
) -> None:
    customer = stripe_client.v1.customers.create({"email": "card@example.com"})
    params = {
        "amount": 1000,
        "currency": "usd",
        "customer": customer.id,
        "payment_method": "pm_card_chargeDeclinedInsufficientFunds",
        "confirm": True,
        "payment_method_types": ["card"],
    }

    def pay() -> dict[str, Any]:
        return app.calls.run(
            "payment_intent:create",
            "order_1",
            params,
            lambda client, key: client.v1.payment_intents.create(params, {"idempotency_key": key}),  # type: ignore[arg-type]
        )

    with pytest.raises(StripeCardError) as first:
        pay()
    before = stripe_sandbox.request_counts(stripe_key)
    with pytest.raises(StripeCardError) as second:
        pay()
    assert stripe_sandbox.request_counts(stripe_key) == before
    assert second.value.decline_code == first.value.decline_code == "insufficient_funds"
    assert second.value.request_id == first.value.request_id
    record = app.calls.record("payment_intent:create", "order_1")
    assert record is not None and (record.status, record.error_type) == (
        "failed",
        "StripeCardError",
    )


def test_a_refused_key_is_an_alarm_and_leaves_the_call_pending(
    app: Stripeline, stripe_sandbox: Sandbox, database_url: str
) -> None:
    settings = app.settings.model_copy(
        update={"stripe_secret_key": SecretStr("rk_test_restricted_0001")}
    )
    wrong = Stripeline(settings)
    try:
        from structlog.testing import capture_logs

        with capture_logs() as logs, pytest.raises(StripeAuthenticationError):
            create_customer(wrong, "u6")
        record = wrong.calls.record("customer:create", "u6")
        assert record is not None and record.status == "pending"
        alarm = [line for line in logs if line.get("action") == "stripe_key_refused"]
        assert alarm and "restricted_0001" not in str(alarm)
        counted = wrong.metrics.registry.get_sample_value(
            "stripeline_stripe_calls_total",
            {"action": "customer:create", "outcome": "key_refused"},
        )
        assert counted == 1.0
    finally:
        wrong.dispose()


def test_an_object_of_the_other_mode_is_refused_before_any_call(
    app: Stripeline, stripe_client: stripe.StripeClient, database_url: str
) -> None:
    made = create_customer(app, "u7")
    app.calls.check_mode(made["id"])  # same mode: fine
    live = Stripeline(
        Settings(
            stripe_secret_key=SecretStr("sk_live_0123456789abcdef"),
            stripe_webhook_secret=SecretStr("whsec_live_0001"),
            database_url=database_url,
        )
    )
    try:
        with pytest.raises(ModeMismatch, match=f"{made['id']} is a test-mode object"):
            live.calls.check_mode(made["id"])
        live.calls.check_mode("cus_unknown_here", None)  # not known: Stripe will say
    finally:
        live.dispose()


def test_a_key_too_long_is_refused() -> None:
    app = Stripeline(Settings(database_url="sqlite://"))
    with pytest.raises(ValueError, match="at most 200"):
        app.calls.run("customer:create", "x" * 300, {}, lambda client, key: None)
    with pytest.raises(ValueError, match="an action and a reference"):
        app.calls.run("customer:create", "", {}, lambda client, key: None)


def test_calls_on_one_lock_are_admitted_one_at_a_time(
    app: Stripeline, stripe_client: stripe.StripeClient
) -> None:
    """20 threads each ask for one of at most 5 seats: ``admit`` counts the
    calls recorded before it under the lock, so exactly 5 are made."""
    from concurrent.futures import ThreadPoolExecutor

    from sqlalchemy import Connection, func, select

    from stripeline.flows.calls import calls

    class Full(Exception):
        pass

    def admit(conn: Connection) -> None:
        taken = conn.execute(
            select(func.count())
            .select_from(calls)
            .where(calls.c.key.like("customer:create:seat-%"), calls.c.status != "failed")
        ).scalar_one()
        if taken >= 5:
            raise Full

    def take(n: int) -> str:
        params = {"metadata": {"seat": str(n)}}
        try:
            made = app.calls.run(
                "customer:create",
                f"seat-{n}",
                params,
                lambda client, key: client.v1.customers.create(params, {"idempotency_key": key}),  # type: ignore[arg-type]
                admit=admit,
                lock="seats",
            )
        except Full:
            return "full"
        return str(made["id"])

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(take, range(20)))
    assert answers.count("full") == 15
    assert sorted(customers(stripe_client)) == sorted(a for a in answers if a != "full")


def test_a_replayed_answer_never_overwrites_a_newer_state(
    app: Stripeline, stripe_sandbox: Sandbox, stripe_key: str, stripe_client: stripe.StripeClient
) -> None:
    """The answer lost, the object changed since (a webhook brought the newer
    state): the retry's answer is Stripe's replay of the first one, the state
    of that time, and must not roll the mirror back."""
    import time as clock
    from datetime import UTC, datetime

    from stripeline.mirror._store import apply_states, state_from_event

    stripe_sandbox.inject_fault("disconnect", path="/v1/customers", method="POST", key=stripe_key)
    with pytest.raises(StripeConnectionError):
        create_customer(app, "u8")
    (made,) = customers(stripe_client)
    newer = stripe_client.v1.customers.update(made, {"email": "newer@example.com"})
    with connect(app.engine) as conn:
        apply_states(
            conn,
            [
                state_from_event(
                    newer.to_dict(for_json=True),
                    account=None,
                    livemode=False,
                    created=int(clock.time()) + 1,
                    event_type="customer.updated",
                    event_id="evt_newer",
                )
            ],
            now=datetime.now(UTC),
        )
    replayed = create_customer(app, "u8")
    assert replayed["id"] == made and replayed["email"] == "u8@example.com"  # the first answer
    held = app.mirror.customer(made)
    assert held is not None and held.email == "newer@example.com"
