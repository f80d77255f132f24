"""Drift check (``stripeline verify``) against the sandbox: drift planted by
editing the database is found, named and repaired."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import stripe
from click.testing import CliRunner
from sqlalchemy import Engine, delete, select, update

from stripeline.db import connect
from stripeline.gateway import Reader
from stripeline.mirror._store import apply_states, get_object, state_from_fetch
from stripeline.mirror.tables import table_for
from stripeline.sync import backfill, check_drift
from stripeline.sync.drift import differing_fields
from stripeline_sandbox import Sandbox


@pytest.fixture
def http_client() -> Iterator[stripe.RequestsClient]:
    client = stripe.RequestsClient(timeout=10)
    yield client
    client.close()  # type: ignore[no-untyped-call]


@pytest.fixture
def reader(stripe_sandbox: Sandbox, stripe_key: str, http_client: stripe.HTTPClient) -> Reader:
    client = stripe.StripeClient(
        stripe_key, base_addresses={"api": stripe_sandbox.url}, http_client=http_client
    )
    return Reader(client, reads_per_second=1000)


def world(client: stripe.StripeClient) -> dict[str, str]:
    customers = [client.v1.customers.create({"email": f"u{n}@example.com"}).id for n in range(3)]
    product = client.v1.products.create({"name": "Pro"})
    price = client.v1.prices.create(
        {
            "product": product.id,
            "unit_amount": 900,
            "currency": "usd",
            "recurring": {"interval": "month"},
        }
    )
    subscription = client.v1.subscriptions.create(
        {
            "customer": customers[0],
            "items": [{"price": price.id}],
            "trial_period_days": 7,
        }
    )
    return {"customer": customers[1], "subscription": subscription.id}


def plant(engine: Engine, ids: dict[str, str], *, age: int = 100) -> None:
    """Missing row, stale status, extra row: as a bug or a hand would leave them."""
    customers = table_for("customer").table
    subscriptions = table_for("subscription").table
    with connect(engine) as conn:
        conn.execute(delete(customers).where(customers.c.id == ids["customer"]))
        data, marker = conn.execute(
            select(subscriptions.c.data, subscriptions.c.marker).where(
                subscriptions.c.id == ids["subscription"]
            )
        ).one()
        assert data["status"] == "trialing"
        conn.execute(
            update(subscriptions)
            .where(subscriptions.c.id == ids["subscription"])
            .values(data={**data, "status": "past_due"}, marker=marker - age)
        )
        ghost = {"id": "cus_ghost000000000001", "object": "customer", "email": "ghost@example.com"}
        state = state_from_fetch(
            ghost,
            object_type="customer",
            object_id=ghost["id"],
            account=None,
            livemode=False,
            fetched_at=int(time.time()) - age,
        )
        apply_states(conn, [state], now=datetime.now(UTC))


def kinds(report: Any) -> set[tuple[str, str, tuple[str, ...]]]:
    return {(d.kind, d.id, d.fields) for d in report.drift}


def test_differing_fields_names_top_level_fields() -> None:
    assert differing_fields({"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 3}, "d": None}) == ("b",)
    assert differing_fields({"a": 1}, {"a": 1}) == ()


def test_verify_finds_planted_drift_and_repair_removes_it(
    stripe_client: stripe.StripeClient, reader: Reader, engine: Engine
) -> None:
    ids = world(stripe_client)
    assert backfill(engine, reader, ["customer", "product", "price", "subscription"]).complete
    clean = check_drift(engine, reader, ["customer", "product", "price", "subscription"])
    assert clean.clean, clean.to_json()
    plant(engine, ids)

    found = check_drift(engine, reader, ["customer", "subscription"])

    assert kinds(found) == {
        ("missing", ids["customer"], ()),
        ("differs", ids["subscription"], ("status",)),
        ("extra", "cus_ghost000000000001", ()),
    }
    assert not any(d.repaired for d in found.drift)

    repaired = check_drift(engine, reader, ["customer", "subscription"], repair=True)

    assert kinds(repaired) == kinds(found)
    assert all(d.repaired for d in repaired.drift)
    assert check_drift(engine, reader, ["customer", "subscription"]).clean
    with connect(engine, readonly=True) as conn:
        ghost = get_object(conn, "cus_ghost000000000001")
        subscription = get_object(conn, ids["subscription"])
    assert ghost is not None and ghost.get("deleted") is True
    assert subscription is not None and subscription["status"] == "trialing"


def test_verify_sample_retrieves_mirrored_objects(
    stripe_client: stripe.StripeClient, reader: Reader, sqlite_url: str
) -> None:
    from stripeline.db import make_engine

    engine = make_engine(sqlite_url)
    ids = world(stripe_client)
    backfill(engine, reader, ["customer", "subscription"])
    plant(engine, ids)
    before = reader.reads

    found = check_drift(engine, reader, ["customer", "subscription"], sample=50, seed=1)

    # Sampling retrieves what the mirror holds: it cannot see the missing row.
    assert kinds(found) == {
        ("differs", ids["subscription"], ("status",)),
        ("extra", "cus_ghost000000000001", ()),
    }
    assert reader.reads - before == 4  # 3 customers (one is the ghost) + 1 subscription
    fixed = check_drift(engine, reader, ["customer", "subscription"], sample=50, repair=True)
    assert all(d.repaired for d in fixed.drift)
    assert check_drift(engine, reader, ["customer", "subscription"], sample=50).clean
    engine.dispose()


def test_verify_cli_exit_codes_json_and_same_second_repair(
    stripe_sandbox: Sandbox,
    stripe_key: str,
    stripe_client: stripe.StripeClient,
    reader: Reader,
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stripeline.cli import main
    from stripeline.db import make_engine

    engine = make_engine(sqlite_url)
    ids = world(stripe_client)
    backfill(engine, reader, ["customer", "subscription"])
    # Age 0: the planted state has the marker of the backfill's read, so the
    # repair cannot order Stripe's state against it and must read again later.
    plant(engine, ids, age=0)
    engine.dispose()
    monkeypatch.setenv("STRIPE_SECRET_KEY", stripe_key)
    monkeypatch.setenv("STRIPELINE_STRIPE_API_BASE", stripe_sandbox.url)
    monkeypatch.setenv("STRIPELINE_DATABASE_URL", sqlite_url)
    runner = CliRunner()

    table = runner.invoke(main, ["verify", "customers", "subscriptions"])
    assert table.exit_code == 1, table.output
    assert "missing" in table.stdout and "status" in table.stdout and "--repair" in table.stdout

    fixed = runner.invoke(main, ["verify", "customer", "subscription", "--repair", "--json"])
    assert fixed.exit_code == 1, fixed.output
    body = json.loads(fixed.stdout)
    assert body["drift"] == 3 and body["unrepaired"] == 0

    clean = runner.invoke(main, ["verify", "customer", "subscription"])
    assert clean.exit_code == 0, clean.output
    assert "agrees with Stripe" in clean.stdout


def test_a_canceled_subscription_is_mirrored_ended_not_deleted(
    stripe_client: stripe.StripeClient, reader: Reader, engine: Engine
) -> None:
    """``customer.subscription.deleted`` carries a canceled subscription that
    Stripe still lists (``status=all``): mirrored from its events, it is kept
    as canceled, not marked deleted, and verify finds nothing missing."""
    from stripeline.mirror import Mirror
    from stripeline.mirror._store import state_from_event

    ids = world(stripe_client)
    canceled = stripe_client.v1.subscriptions.cancel(ids["subscription"])
    assert canceled.status == "canceled"
    assert backfill(engine, reader, ["customer", "product", "price"]).complete
    ended = state_from_event(
        canceled.to_dict(for_json=True),
        account=None,
        livemode=False,
        created=int(time.time()),
        event_type="customer.subscription.deleted",
        event_id="evt_canceled",
    )
    assert not ended.deleted and ended.rank == 12  # a change to the final status
    with connect(engine) as conn:
        apply_states(conn, [ended], now=datetime.now(UTC))

    held = Mirror(engine).subscription(ids["subscription"])
    assert held is not None and (held.status, held.deleted) == ("canceled", False)
    report = check_drift(engine, reader, ["subscription"])
    assert not [d for d in report.drift if d.kind == "missing"], report.to_json()
    # A deleted customer is still deleted.
    gone = state_from_event(
        {"id": ids["customer"], "object": "customer"},
        account=None,
        livemode=False,
        created=int(time.time()),
        event_type="customer.deleted",
        event_id="evt_gone",
    )
    assert gone.deleted
