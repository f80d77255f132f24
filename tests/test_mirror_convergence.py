"""The mirror converges: any delivery order, any duplicates, same mirror.

Histories of several objects (created, updated — several times inside one
second — and sometimes deleted) are delivered in an arbitrary order with
arbitrary duplicates, in arbitrary batches, through the real inbox and
worker; the resulting mirror must equal the one built from the in-order
delivery, under both policies, on SQLite and PostgreSQL. Stripe's truth for
re-fetches is the final state of each object (``MemoryFetcher``).
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from stripeline.app import Stripeline
from stripeline.db.engine import connect
from stripeline.mirror import refetch
from stripeline.mirror.fetch import MemoryFetcher
from stripeline.mirror.tables import all_tables
from stripeline.settings import Settings
from stripeline.worker import Worker
from tests.factories import encode, store_events

BASE = 1_700_000_000
INVOICE_FLOW = [
    ("invoice.created", "draft"),
    ("invoice.finalized", "open"),
    ("invoice.paid", "paid"),
]


@st.composite
def object_history(draw: st.DrawFn, n: int) -> list[tuple[str, int, dict[str, Any]]]:
    """(event type, created, object) for one object, in Stripe's order."""
    kind = draw(st.sampled_from(["customer", "invoice"]))
    object_id = f"{'cus' if kind == 'customer' else 'in'}_{n}"
    steps = draw(st.integers(1, 5))
    t = BASE + draw(st.integers(0, 3))
    history = []
    status_index = 0
    for version in range(steps):
        if version:
            t += draw(st.sampled_from([0, 0, 1, 2]))  # often the same second
        obj: dict[str, Any] = {"id": object_id, "object": kind, "v": version}
        if kind == "customer":
            event_type = "customer.created" if version == 0 else "customer.updated"
        else:
            moved = bool(version) and status_index < 2 and draw(st.booleans())
            status_index += moved
            event_type, status = INVOICE_FLOW[status_index]
            if version and not moved:
                event_type = "invoice.updated"
            obj["status"] = status
        history.append((event_type, t, obj))
    if kind == "customer" and draw(st.booleans()):
        t += draw(st.sampled_from([0, 1]))
        history.append(("customer.deleted", t, {**history[-1][2], "v": steps, "deleted": True}))
    return history


@st.composite
def scenario(
    draw: st.DrawFn,
) -> tuple[list[list[tuple[str, int, dict[str, Any]]]], list[int], list[int]]:
    histories = [draw(object_history(n)) for n in range(draw(st.integers(1, 3)))]
    total = sum(len(h) for h in histories)
    order = draw(st.permutations(list(range(total))))
    extra = draw(st.lists(st.integers(0, total - 1), max_size=total))
    delivery = list(order)
    for index in extra:  # duplicates, anywhere
        delivery.insert(draw(st.integers(0, len(delivery))), index)
    cuts = draw(st.lists(st.integers(1, len(delivery)), max_size=4))
    return histories, delivery, sorted(set(cuts))


def events_of(histories: list[list[tuple[str, int, dict[str, Any]]]], tag: str) -> list[bytes]:
    counter = itertools.count()
    bodies = []
    for history in histories:
        for event_type, created, obj in history:
            bodies.append(
                encode(
                    {
                        "id": f"evt_{tag}_{next(counter)}",
                        "object": "event",
                        "type": event_type,
                        "created": created,
                        "livemode": False,
                        "account": tag,
                        "api_version": "2026-10-28.endive",
                        "data": {"object": obj},
                    }
                )
            )
    return bodies


def deliver(app: Stripeline, payloads: list[bytes]) -> None:
    if not payloads:
        return
    store_events(app.engine, payloads)


def mirror_of(engine: Engine, account: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    with connect(engine, readonly=True) as conn:
        for mirror_table in all_tables():
            table = mirror_table.table
            rows = conn.execute(
                select(table.c.id, table.c.data, table.c.deleted).where(table.c.account == account)
            )
            for object_id, data, deleted in rows:
                # A deleted object is deleted, whichever of Stripe's shapes says so.
                found[object_id] = "deleted" if deleted else data
    return found


def run(
    engine: Engine, policy: str, histories: list[Any], delivery: list[int], cuts: list[int]
) -> tuple[dict[str, Any], int]:
    account = f"acct_{uuid.uuid4().hex[:12]}"
    fetcher = MemoryFetcher()
    for history in histories:
        event_type, _, final = history[-1]
        if not event_type.endswith(".deleted"):
            fetcher.truth[(account, final["id"])] = final
    app = Stripeline(
        Settings(database_url=str(engine.url), mirror_policy=policy, mirror_coalesce_seconds=0),  # type: ignore[arg-type]  # pydantic validates it
        engine=engine,
        fetcher=fetcher,
    )
    payloads = events_of(histories, account)
    worker = Worker(app, listen=False)
    start = 0
    for cut in [*cuts, len(delivery)]:
        deliver(app, [payloads[i] for i in delivery[start:cut]])
        worker.drain()
        start = cut
    worker.drain()
    with connect(engine, readonly=True) as conn:
        left = conn.execute(
            select(refetch.refetches.c.id).where(refetch.refetches.c.account == account)
        ).all()
    assert left == [], "re-fetches left undone"
    return mirror_of(engine, account), fetcher.reads


@pytest.mark.parametrize("policy", ["payload", "refetch"])
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=scenario())
def test_any_order_and_duplicates_give_the_in_order_mirror(
    engine: Engine, policy: str, case: Any
) -> None:
    histories, delivery, cuts = case
    in_order = list(range(sum(len(h) for h in histories)))
    expected, _ = run(engine, policy, histories, in_order, [])
    actual, _ = run(engine, policy, histories, delivery, cuts)
    assert actual == expected
    # …and it is Stripe's final state of every object.
    for history in histories:
        event_type, _, final = history[-1]
        want = "deleted" if event_type.endswith(".deleted") else final
        assert actual[final["id"]] == want


def test_payload_policy_reads_nothing_without_ties(engine: Engine) -> None:
    history = [
        [
            ("customer.created", BASE, {"id": "cus_a", "object": "customer", "v": 0}),
            ("customer.updated", BASE + 1, {"id": "cus_a", "object": "customer", "v": 1}),
            ("customer.updated", BASE + 2, {"id": "cus_a", "object": "customer", "v": 2}),
        ]
    ]
    mirror, reads = run(engine, "payload", history, [2, 0, 1, 2], [])
    assert mirror == {"cus_a": {"id": "cus_a", "object": "customer", "v": 2}}
    assert reads == 0


def test_a_tie_is_settled_by_one_read(engine: Engine) -> None:
    history = [
        [
            ("customer.updated", BASE, {"id": "cus_t", "object": "customer", "v": 1}),
            ("customer.updated", BASE, {"id": "cus_t", "object": "customer", "v": 2}),
        ]
    ]
    mirror, reads = run(engine, "payload", history, [1, 0], [])
    assert mirror == {"cus_t": {"id": "cus_t", "object": "customer", "v": 2}}
    assert reads == 1


def test_status_precedence_orders_a_same_second_pair_without_reading(
    engine: Engine,
) -> None:
    history = [
        [
            ("invoice.finalized", BASE, {"id": "in_p", "object": "invoice", "status": "open"}),
            ("invoice.paid", BASE, {"id": "in_p", "object": "invoice", "status": "paid"}),
        ]
    ]
    mirror, reads = run(engine, "payload", history, [1, 0], [])
    assert mirror["in_p"]["status"] == "paid"
    assert reads == 0
