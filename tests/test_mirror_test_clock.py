"""Reads of objects on a Stripe test clock never freeze the mirror.

The events of an object on a test clock carry the clock's time, which is
frozen between advances and may be far behind ours (a clock started in the
past). A state the application wrote to the mirror from an API answer (the
flows do after every write) or a re-fetch is a read; stamped with our clock it
would outrank every later event of the object, and the mirror would keep the
read's state for good. Here Stripe's history of such objects is emitted step
by step, with reads of the state of the moment and deliveries in any order,
with duplicates, in between; once everything is delivered and the worker has
drained, the mirror holds Stripe's final state.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from stripeline.app import Stripeline
from stripeline.db.engine import connect
from stripeline.flows.calls import write_to_mirror
from stripeline.mirror.fetch import MemoryFetcher
from stripeline.settings import Settings
from stripeline.worker import Worker
from tests.factories import encode
from tests.test_mirror_convergence import deliver, mirror_of

#: A test clock started in the past: its events are years behind our clock.
BASE = 1_700_000_000
CLOCK = "clock_1"
CUSTOMER = "cus_on_clock"
SUBSCRIPTION_STATUSES = ["trialing", "active", "past_due", "unpaid", "active"]
INTENT_STATUSES = ["requires_payment_method", "requires_action", "processing", "succeeded"]

History = list[tuple[str, int, dict[str, Any]]]


@st.composite
def clock_history(draw: st.DrawFn, kind: str) -> History:
    """(event type, created, object) of one object on the clock, in Stripe's order.

    A subscription says it is on the clock (``test_clock``); a payment intent
    does not, its customer does."""
    steps = draw(st.integers(2, 5))
    t = BASE + draw(st.integers(0, 3))
    history: History = []
    for version in range(steps):
        if version:
            t += draw(st.sampled_from([0, 0, 1, 86_400]))  # frozen, or advanced a day
        if kind == "subscription":
            obj: dict[str, Any] = {
                "id": "sub_on_clock",
                "object": "subscription",
                "customer": CUSTOMER,
                "test_clock": CLOCK,
                "created": BASE,
                "status": draw(st.sampled_from(SUBSCRIPTION_STATUSES)),
                "v": version,
            }
            event_type = (
                "customer.subscription.created" if version == 0 else "customer.subscription.updated"
            )
        else:
            obj = {
                "id": "pi_on_clock",
                "object": "payment_intent",
                "customer": CUSTOMER,
                "created": BASE,
                "status": INTENT_STATUSES[min(version, len(INTENT_STATUSES) - 1)],
                "v": version,
            }
            event_type = "payment_intent.created" if version == 0 else "payment_intent.updated"
        history.append((event_type, t, obj))
    return history


#: One step of the script: emit Stripe's next event, deliver some emitted
#: events (indexes into those emitted so far, duplicates allowed), or read
#: an object's current state into the mirror as a flow does.
Step = tuple[str, Any]


@st.composite
def script(draw: st.DrawFn) -> tuple[list[History], list[Step]]:
    kinds = draw(
        st.sampled_from([["subscription"], ["payment_intent"], ["subscription", "payment_intent"]])
    )
    histories = [draw(clock_history(kind)) for kind in kinds]
    emits = [(n, i) for n, history in enumerate(histories) for i in range(len(history))]
    # Stripe emits each object's events in order; objects interleave.
    order = draw(st.permutations(emits))
    order = sorted(order, key=lambda e: (e[1], order.index(e)))
    steps: list[Step] = []
    for emitted, event in enumerate(order, start=1):
        steps.append(("emit", event))
        for _ in range(draw(st.integers(0, 2))):
            if draw(st.booleans()):
                steps.append(("read", draw(st.integers(0, len(histories) - 1))))
            else:
                picks = draw(st.lists(st.integers(0, emitted - 1), max_size=4))
                steps.append(("deliver", picks))
    return histories, steps


def bodies_of(history: History, account: str, tag: str) -> list[bytes]:
    return [
        encode(
            {
                "id": f"evt_{tag}_{index}",
                "object": "event",
                "type": event_type,
                "created": created,
                "livemode": False,
                "account": account,
                "api_version": "2026-10-28.endive",
                "data": {"object": obj},
            }
        )
        for index, (event_type, created, obj) in enumerate(history)
    ]


def run_script(engine: Engine, policy: str, histories: list[History], steps: list[Step]) -> None:
    account = f"acct_{uuid.uuid4().hex[:12]}"
    fetcher = MemoryFetcher()
    app = Stripeline(
        Settings(database_url=str(engine.url), mirror_policy=policy, mirror_coalesce_seconds=0),  # type: ignore[arg-type]  # pydantic validates it
        engine=engine,
        fetcher=fetcher,
    )
    worker = Worker(app, listen=False)
    # The customer is on the clock, and the mirror knows it from its event.
    customer = {"id": CUSTOMER, "object": "customer", "test_clock": CLOCK, "created": BASE}
    fetcher.truth[(account, CUSTOMER)] = customer
    deliver(app, bodies_of([("customer.created", BASE, customer)], account, f"{account}_cus"))
    worker.drain()
    bodies = [bodies_of(h, account, f"{account}_{n}") for n, h in enumerate(histories)]
    emitted: list[bytes] = []
    current: dict[int, dict[str, Any]] = {}
    for action, arg in steps:
        if action == "emit":
            n, i = arg
            emitted.append(bodies[n][i])
            current[n] = histories[n][i][2]
            fetcher.truth[(account, current[n]["id"])] = current[n]
        elif action == "deliver":
            deliver(app, [emitted[i] for i in arg])
            worker.drain()
        elif arg in current:
            with connect(app.engine) as conn:
                write_to_mirror(
                    conn, dict(current[arg]), account=account, livemode=False, now=datetime.now(UTC)
                )
    deliver(app, emitted)
    worker.drain()
    mirror = mirror_of(engine, account)
    for history in histories:
        final = history[-1][2]
        held = mirror[final["id"]]
        assert held == final, f"the mirror holds v{held.get('v')}, Stripe's state is v{final['v']}"


@pytest.mark.parametrize("policy", ["payload", "refetch"])
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=script())
def test_reads_and_a_past_test_clock_in_any_order_end_at_stripes_state(
    engine: Engine, policy: str, case: Any
) -> None:
    histories, steps = case
    run_script(engine, policy, histories, steps)


def test_a_read_after_the_last_event_then_its_late_delivery(engine: Engine) -> None:
    """The scenario the property found first, spelled out: a subscription on
    a clock a year behind ours is written to the mirror by a flow, then the
    clock moves it on (past_due, then active): both events must apply."""
    sub = {
        "id": "sub_on_clock",
        "object": "subscription",
        "customer": CUSTOMER,
        "test_clock": CLOCK,
        "created": BASE,
        "status": "active",
        "v": 0,
    }
    history: History = [
        ("customer.subscription.created", BASE, sub),
        ("customer.subscription.updated", BASE + 86_400, {**sub, "status": "past_due", "v": 1}),
        ("customer.subscription.updated", BASE + 86_400, {**sub, "status": "active", "v": 2}),
    ]
    steps: list[Step] = [
        ("emit", (0, 0)),
        ("read", 0),
        ("emit", (0, 1)),
        ("deliver", [1]),
        ("emit", (0, 2)),
        ("deliver", [2, 0]),
    ]
    run_script(engine, "payload", [history], steps)
