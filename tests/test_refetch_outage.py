"""Reads never hold the inbox back: a round of re-fetches ends at the first
read that fails for a reason that may pass, and after its time budget.

Against the sandbox (faults injected at its HTTP boundary), through the
official SDK: with Stripe answering 500 to every read, a round of eight due
reads makes one request, not eight (each would wait for its own retries and
timeouts while the worker's events waited); the seven not made are put back
with their attempt not counted, due when the failed one is retried; once
Stripe answers again every object is read and mirrored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import stripe
from sqlalchemy import Engine, select

from stripeline.db import connect
from stripeline.gateway import StripeFetcher
from stripeline.mirror import refetch
from stripeline.mirror._store import get_object
from stripeline_sandbox import Sandbox

SCHEDULE = [60, 120]


@pytest.fixture
def fetcher(stripe_sandbox: Sandbox, stripe_key: str) -> Iterator[StripeFetcher]:
    http = stripe.RequestsClient(timeout=10)
    client = stripe.StripeClient(
        stripe_key,
        base_addresses={"api": stripe_sandbox.url},
        http_client=http,
        max_network_retries=0,
    )
    yield StripeFetcher(client, reads_per_second=1000)
    http.close()  # type: ignore[no-untyped-call]


class Ticking:
    """A clock for ``process_due``'s ``now``: a millisecond on at each call."""

    def __init__(self, start: datetime) -> None:
        self.at = start

    def __call__(self) -> datetime:
        self.at += timedelta(milliseconds=1)
        return self.at


def queue(engine: Engine, ids: list[str], now: datetime) -> None:
    with connect(engine) as conn:
        refetch.request(
            conn, [refetch.Wanted("", i, "customer", False) for i in ids], now=now, window=0
        )


def read_round(
    engine: Engine,
    fetcher: StripeFetcher,
    now: Callable[[], datetime],
    budget: float = refetch.ROUND_BUDGET_SECONDS,
) -> int:
    """One round of ``process_due`` as the worker runs it (worker w1)."""
    return refetch.process_due(
        engine, fetcher, worker="w1", lease_seconds=30, schedule=SCHEDULE, max_attempts=5,
        window=0, now=now, budget=budget,
    )  # fmt: skip


def rows(engine: Engine) -> dict[str, tuple[int, datetime, str | None]]:
    table = refetch.refetches
    with connect(engine, readonly=True) as conn:
        found = conn.execute(
            select(table.c.id, table.c.attempts, table.c.due_at, table.c.lease_owner)
        ).all()
    return {i: (attempts, due_at, owner) for i, attempts, due_at, owner in found}


def reads_of(sandbox: Sandbox, key: str, since: int) -> int:
    return sum(
        1
        for method, path, _ in sandbox.request_log(key)[since:]
        if method == "GET" and path.startswith("/v1/customers/")
    )


def test_a_failing_read_ends_the_round_and_the_rest_wait_uncounted(
    stripe_sandbox: Sandbox,
    stripe_key: str,
    stripe_client: stripe.StripeClient,
    fetcher: StripeFetcher,
    engine: Engine,
) -> None:
    ids = [stripe_client.v1.customers.create({"name": f"c{n}"}).id for n in range(8)]
    t0 = datetime.now(UTC)
    queue(engine, ids, t0)
    stripe_sandbox.inject_fault(
        "api_error", path="^/v1/customers/", method="GET", count=100, key=stripe_key
    )
    since = len(stripe_sandbox.request_log(stripe_key))

    clock = Ticking(t0)
    made = read_round(engine, fetcher, clock)

    assert made == 1 and reads_of(stripe_sandbox, stripe_key, since) == 1
    held = rows(engine)
    failed = [i for i, (attempts, _, _) in held.items() if attempts == 1]
    assert len(failed) == 1 and len(held) == 8
    retry_at = held[failed[0]][1]
    # Retried on the schedule (with its jitter), not at once.
    assert retry_at > clock.at + timedelta(seconds=SCHEDULE[0] / 2)
    # The others: not leased, no attempt counted, due with the failed one.
    for i in set(ids) - set(failed):
        assert held[i] == (0, retry_at, None)
    # Nothing is due before then: Stripe is not asked again meanwhile.
    assert read_round(engine, fetcher, Ticking(t0 + timedelta(seconds=30))) == 0

    stripe_sandbox.clear_faults(key=stripe_key)
    later = retry_at + timedelta(seconds=1)
    made = read_round(engine, fetcher, Ticking(later), budget=60)
    assert made == 8 and rows(engine) == {}
    with connect(engine, readonly=True) as conn:
        assert all(get_object(conn, i) is not None for i in ids)


def test_a_round_past_its_budget_puts_the_rest_back_due_at_once(
    stripe_sandbox: Sandbox,
    stripe_key: str,
    stripe_client: stripe.StripeClient,
    fetcher: StripeFetcher,
    engine: Engine,
) -> None:
    ids = [stripe_client.v1.customers.create({"name": f"b{n}"}).id for n in range(5)]
    t0 = datetime.now(UTC)
    queue(engine, ids, t0)
    since = len(stripe_sandbox.request_log(stripe_key))
    rounds = []
    clock = Ticking(t0)
    # A budget of 0: one read per round (the first read of a round always starts).
    while rows(engine):
        made = read_round(engine, fetcher, clock, budget=0)
        rounds.append(made)
        left = rows(engine)
        # Those put back are due at once, unleased, their attempt not counted.
        assert all(
            attempts == 0 and t0 < due_at <= clock.at and owner is None
            for attempts, due_at, owner in left.values()
        ), left
        assert len(rounds) <= 5
    assert rounds == [1, 1, 1, 1, 1]
    assert reads_of(stripe_sandbox, stripe_key, since) == 5
