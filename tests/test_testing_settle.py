"""``settle()`` is green only when every event was processed: a handler that
raised makes it raise ``EventFailed`` (event id, type, handler, traceback),
unless the test says it expects failures."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from stripeline.app import ReceivedEvent, Stripeline
from stripeline.db import migrate
from stripeline.testing import (
    EventFailed,
    StripelineEnv,
    deliver,
    drain,
    failures,
    make_event,
)


class Boom(RuntimeError):
    pass


def test_a_handler_that_raises_fails_settle(stripeline_env: StripelineEnv) -> None:
    @stripeline_env.app.on("customer.created")
    def welcome_customer(event: ReceivedEvent) -> None:
        raise Boom(f"no mail server for {event.object['id']}")

    customer = stripeline_env.client.v1.customers.create({"email": "x@example.com"})
    with pytest.raises(EventFailed) as caught:
        stripeline_env.settle()
    (failure,) = caught.value.failures
    (stored,) = stripeline_env.events("customer.created")
    assert (failure.id, failure.type, failure.status) == (stored.id, "customer.created", "failed")
    assert failure.handler is not None and failure.handler.endswith("welcome_customer")
    message = str(caught.value)
    assert stored.id in message and "customer.created" in message
    assert "welcome_customer" in message
    assert f"Boom: no mail server for {customer.id}" in message
    assert "Traceback (most recent call last)" in message
    assert "allow_failures=True" in message


def test_allow_failures_accepts_them_once_and_for_all(stripeline_env: StripelineEnv) -> None:
    calls: list[str] = []

    @stripeline_env.app.on("customer.created")
    def flaky(event: ReceivedEvent) -> None:
        calls.append(event.id)
        raise Boom("expected")

    stripeline_env.client.v1.customers.create({"email": "y@example.com"})
    stripeline_env.settle(allow_failures=True)
    (stored,) = stripeline_env.events()
    assert stored.status == "failed" and calls == [stored.id]
    stripeline_env.settle()  # the accepted failure does not fail later calls
    # …but a new one does.
    stripeline_env.client.v1.customers.create({"email": "z@example.com"})
    with pytest.raises(EventFailed) as caught:
        stripeline_env.settle()
    assert [f.id for f in caught.value.failures] != [stored.id]
    assert len(caught.value.failures) == 1


def test_a_dead_event_fails_settle(stripeline_env: StripelineEnv) -> None:
    app = stripeline_env.app
    app.use_settings(app.settings.model_copy(update={"max_attempts": 1}))

    @app.on("invoice.paid")
    def fulfil(event: ReceivedEvent) -> None:
        raise Boom("dead on the first try")

    event = make_event("invoice.paid")
    assert [r.status for r in stripeline_env.deliver([event])] == [200]
    with pytest.raises(EventFailed) as caught:
        stripeline_env.settle()
    (failure,) = caught.value.failures
    assert (failure.id, failure.status, failure.attempts) == (event["id"], "dead", 1)
    assert failure.handler is not None and failure.handler.endswith("fulfil")


def test_a_handler_failing_in_a_helper_is_named(stripeline_env: StripelineEnv) -> None:

    def helper() -> None:
        raise Boom("deep")

    @stripeline_env.app.on("customer.created")
    def outer(event: ReceivedEvent) -> None:
        helper()

    stripeline_env.deliver([make_event("customer.created")])
    with pytest.raises(EventFailed) as caught:
        stripeline_env.settle()
    (failure,) = caught.value.failures
    assert failure.handler is not None and failure.handler.endswith("outer")
    assert "in helper" in (failure.traceback or "")


def test_advance_clock_passes_allow_failures_on(stripeline_env: StripelineEnv) -> None:
    @stripeline_env.app.on("customer.created")
    def broken(event: ReceivedEvent) -> None:
        raise Boom("x")

    stripeline_env.client.v1.customers.create({"email": "c@example.com"})
    with pytest.raises(EventFailed):
        stripeline_env.advance_clock(1)
    stripeline_env.advance_clock(1, allow_failures=True)
    assert [e.status for e in stripeline_env.events()] == ["failed"]


def tie(stripeline_env: StripelineEnv) -> str:
    """Two updates of one customer in one second, with different data: a tie
    only a read settles. Returns the customer's id."""
    customer = stripeline_env.client.v1.customers.create({"name": "Stripe's truth"})
    stripeline_env.settle()
    second = stripeline_env.sandbox.clock.now() + 3600
    events = [
        make_event("customer.updated", {**customer.to_dict(), "name": name}, created=second)
        for name in ("first", "second")
    ]
    assert [r.status for r in stripeline_env.deliver(events)] == [200, 200]
    return customer.id


def test_settle_waits_for_a_coalesced_re_fetch(stripeline_env: StripelineEnv) -> None:
    app = stripeline_env.app
    app.use_settings(app.settings.model_copy(update={"mirror_coalesce_seconds": 0.5}))
    customer_id = tie(stripeline_env)
    started = time.monotonic()
    stripeline_env.settle()
    assert time.monotonic() - started >= 0.5
    mirrored = stripeline_env.mirror(customer_id)
    assert mirrored is not None and mirrored["name"] == "Stripe's truth"


def test_a_failing_re_fetch_fails_settle(stripeline_env: StripelineEnv) -> None:
    customer_id = tie(stripeline_env)
    stripeline_env.sandbox.inject_fault(
        "api_error",
        count=10,
        path=f"^/v1/customers/{customer_id}$",
        method="GET",
        key=stripeline_env.key,
    )
    with pytest.raises(EventFailed) as caught:
        stripeline_env.settle()
    (failure,) = caught.value.failures
    assert (failure.id, failure.type, failure.status) == (customer_id, "refetch", "failing")
    assert f"re-fetch of {customer_id} failing" in str(caught.value)


def test_drain_without_the_sandbox(tmp_path: Path) -> None:
    """The documented example: the route and the worker in the test's thread."""
    app = Stripeline(
        database_url=f"sqlite:///{tmp_path / 't.db'}",
        stripe_webhook_secret="whsec_test_0123456789abcdef",
    )
    migrate(app.engine)
    seen: list[int] = []

    @app.on("invoice.paid")
    def fulfil(event: ReceivedEvent) -> None:
        if event.object["amount_paid"] < 0:
            raise Boom("refused")
        seen.append(event.object["amount_paid"])

    try:
        (result,) = deliver(app, [make_event("invoice.paid", {"amount_paid": 500})])
        assert result.status == 200 and seen == []
        assert drain(app) == 1 and seen == [500]
        bad = make_event("invoice.paid", {"amount_paid": -1})
        deliver(app, [bad])
        with pytest.raises(EventFailed) as caught:
            drain(app)
        assert [(f.id, f.status) for f in caught.value.failures] == [(bad["id"], "failed")]
        assert [f.id for f in failures(app)] == [bad["id"]]
        assert drain(app, allow_failures=True) == 0
    finally:
        app.dispose()


def test_hold_then_flush_every_time(stripeline_env: StripelineEnv) -> None:
    """Hold deliveries, make a call, flush at once: the call's event is always
    released (the sandbox queues it before it answers), 100 times out of 100."""
    sandbox, key = stripeline_env.sandbox, stripeline_env.key
    sandbox.set_delivery(hold=True, key=key)
    for n in range(100):
        customer = stripeline_env.client.v1.customers.create({"name": f"held {n}"})
        assert sandbox.flush_deliveries(key=key) == 1, n
        assert stripeline_env.settle() == 1, n
        mirrored = stripeline_env.mirror(customer.id)
        assert mirrored is not None and mirrored["name"] == f"held {n}"
