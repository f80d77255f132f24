"""Mirror benchmarks against the offline sandbox (127.0.0.1 only).

1. API reads per 1,000 events under the ``refetch`` policy, for a realistic
   mix of API activity (customers, subscriptions, payments, refunds; a few
   hot objects, many cold ones), events processed as they come, window by
   window. Target: at most one read per object per coalescing window.
2. Backfill objects/s: ``backfill`` of 10,000 objects (customers and
   products) at the default read limits (20 reads/s test mode, 80 live).

Usage: ``python bench/mirror.py [--postgres URL] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import stripe
from pydantic import SecretStr
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.engine import make_url

from stripeline.app import Stripeline
from stripeline.db import connect, make_engine, migrate
from stripeline.db.engine import normalize_url
from stripeline.db.models import Event
from stripeline.gateway import Reader, StripeFetcher
from stripeline.log import configure_logging
from stripeline.settings import Settings
from stripeline.sync import backfill, catch_up
from stripeline.worker import Worker
from stripeline_sandbox import Sandbox

WINDOW = 2.0  # the default coalescing window (STRIPELINE_MIRROR_COALESCE_SECONDS)


@contextmanager
def database(kind: str, postgres_url: str | None) -> Iterator[str]:
    """A fresh migrated database URL (SQLite file, or a scratch PostgreSQL database)."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'bench.db'}"
            engine = make_engine(url)
            migrate(engine)
            engine.dispose()
            yield url
        return
    assert postgres_url
    base = make_url(normalize_url(postgres_url))
    name = f"stripeline_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = base.set(database=name).render_as_string(hide_password=False)
    try:
        engine = make_engine(url)
        migrate(engine)
        engine.dispose()
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _client(sandbox: Sandbox, key: str, http: stripe.HTTPClient) -> stripe.StripeClient:
    return stripe.StripeClient(
        key, base_addresses={"api": sandbox.url}, http_client=http, max_network_retries=2
    )


def _events(engine: Engine) -> int:
    with connect(engine, readonly=True) as conn:
        return len(conn.execute(select(Event.id)).all())


def _pending_objects(engine: Engine) -> int:
    """Distinct objects the pending events are about (one window's worth)."""
    with connect(engine, readonly=True) as conn:
        rows = conn.execute(
            select(Event.object_id).where(Event.status == "pending").distinct()
        ).all()
    return len(rows)


def refetch_reads(sandbox: Sandbox, url: str, *, events_wanted: int = 1000) -> dict[str, Any]:
    """Drive a realistic mix of API calls in slices of about one coalescing
    window each; after each slice, catch up (events into the inbox) and let a
    ``refetch`` worker process them. Count the fetcher's reads."""
    rng = random.Random(7)
    key = sandbox.new_key()
    http = stripe.RequestsClient(timeout=10)
    client = _client(sandbox, key, http)
    customers = [
        client.v1.customers.create(
            {"email": f"u{n}@example.com", "payment_method": "pm_card_visa"}
        ).id
        for n in range(40)
    ]
    product = client.v1.products.create({"name": "Plan"})
    price = client.v1.prices.create(
        {
            "product": product.id,
            "unit_amount": 1200,
            "currency": "usd",
            "recurring": {"interval": "month"},
        }
    )
    subscriptions = [
        client.v1.subscriptions.create(
            {"customer": c, "items": [{"price": price.id}], "trial_period_days": 14}
        ).id
        for c in customers[:25]
    ]
    engine = make_engine(url)
    catch_up(engine, Reader(client, reads_per_second=1000), mode="test")
    with connect(engine) as conn:  # the set-up's events do not count
        conn.execute(text("UPDATE stripeline_events SET status = 'processed'"))
    settings = Settings(
        stripe_secret_key=SecretStr(key),
        stripe_api_base=sandbox.url,
        database_url=url,
        mirror_policy="refetch",
        mirror_coalesce_seconds=WINDOW,
    )
    fetcher = StripeFetcher(_client(sandbox, key, http), reads_per_second=1000)
    app = Stripeline(settings, engine=engine, fetcher=fetcher)
    worker = Worker(app, listen=False)
    start_events = _events(engine)
    touched_per_window: list[int] = []
    intents: list[str] = []
    while _events(engine) - start_events < events_wanted:
        slice_end = time.monotonic() + WINDOW * 0.25
        while time.monotonic() < slice_end:
            roll = rng.random()
            if roll < 0.35:  # hot subscriptions: quantity/metadata changes
                sub = subscriptions[min(int(rng.expovariate(0.5)), len(subscriptions) - 1)]
                client.v1.subscriptions.update(sub, {"metadata": {"n": str(rng.random())}})
            elif roll < 0.6:  # customers edited now and then
                cus = rng.choice(customers)
                client.v1.customers.update(cus, {"metadata": {"n": str(rng.random())}})
            elif roll < 0.9:  # one-off payments: a PaymentIntent and its charge
                intent = client.v1.payment_intents.create(
                    {
                        "amount": rng.randint(500, 5000),
                        "currency": "usd",
                        "payment_method": "pm_card_visa",
                        "confirm": True,
                    }
                )
                intents.append(intent.id)
            elif intents:  # refunds of earlier payments
                client.v1.refunds.create(
                    {"payment_intent": intents.pop(rng.randrange(len(intents))), "amount": 100}
                )
        catch_up(engine, Reader(client, reads_per_second=1000), mode="test")
        touched_per_window.append(_pending_objects(engine))
        worker.drain()
        time.sleep(WINDOW + 0.1)  # the window ends: the coalesced reads are due
        worker.drain()
    events = _events(engine) - start_events
    engine.dispose()
    http.close()  # type: ignore[no-untyped-call]
    object_windows = sum(touched_per_window)
    return {
        "events": events,
        "reads": fetcher.reads,
        "reads_per_1000_events": round(fetcher.reads * 1000 / events, 1),
        "objects_touched_per_window_summed": object_windows,
        "reads_per_object_per_window": round(fetcher.reads / object_windows, 2),
        "windows": len(touched_per_window),
        "window_seconds": WINDOW,
    }


def backfill_rate(sandbox: Sandbox, url: str, reads_per_second: float) -> dict[str, Any]:
    key = sandbox.new_key()
    sandbox.bulk_create("customers", 6000, key=key, email="c{i}@example.com")
    sandbox.bulk_create("products", 4000, key=key, name="P{i}")
    sandbox.set_rate_limit(25 if reads_per_second <= 20 else 100, key=key)
    http = stripe.RequestsClient(timeout=10)
    reader = Reader(_client(sandbox, key, http), reads_per_second=reads_per_second)
    engine = make_engine(url)
    types = ["customer", "product", "price", "subscription", "invoice", "charge"]
    result = backfill(engine, reader, types)
    engine.dispose()
    http.close()  # type: ignore[no-untyped-call]
    return {
        "reads_per_second_limit": reads_per_second,
        "objects": result.objects,
        "seconds": round(result.seconds, 2),
        "objects_per_second": round(result.objects / result.seconds),
        "reads": result.reads,
        "sandbox_429": sandbox.rate_limited_count(key),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", metavar="URL", help="also run on this PostgreSQL server")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    configure_logging("console", "warning")
    kinds = ["sqlite"] + (["postgres"] if args.postgres else [])
    results: dict[str, Any] = {}
    with Sandbox() as sandbox:
        for kind in kinds:
            with database(kind, args.postgres) as url:
                results[f"refetch_{kind}"] = refetch_reads(sandbox, url)
            for rate in (20.0, 80.0):
                with database(kind, args.postgres) as url:
                    results[f"backfill_{kind}_{int(rate)}rps"] = backfill_rate(sandbox, url, rate)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for name, values in results.items():
        print(name, json.dumps(values))


if __name__ == "__main__":
    main()
