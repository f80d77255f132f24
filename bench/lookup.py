"""Mirror lookup benchmark: a customer's subscriptions, in-process.

Fills the mirror with CUSTOMERS customers of three subscriptions each
(through ``apply_states``, as the worker writes them), then times
``Mirror.subscriptions(customer)`` and ``Mirror.active_subscriptions`` for
random customers. Target: under 1 ms median. Baseline in the same run: the
same query as one bare SQL statement on the driver (no SQLAlchemy, no
records). Talks to nothing but the local database.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from typing import Any

import _common as common

CUSTOMERS = 5_000
LOOKUPS = 2_000


def fill(url: str, customers: int) -> None:
    from stripeline.db import make_engine
    from stripeline.db.engine import connect
    from stripeline.inbox import utcnow
    from stripeline.mirror._store import apply_states, state_from_fetch

    engine = make_engine(url)
    now = utcnow()
    states = []
    for c in range(customers):
        customer = f"cus_bench{c:06d}"
        for s in range(3):
            sub = {
                "id": f"sub_bench{c:06d}{s}",
                "object": "subscription",
                "customer": customer,
                "status": ("active", "canceled", "trialing")[s],
                "cancel_at_period_end": False,
                "currency": "usd",
                "items": {
                    "object": "list",
                    "data": [
                        {
                            "id": f"si_bench{c:06d}{s}",
                            "object": "subscription_item",
                            "current_period_start": 1_760_000_000,
                            "current_period_end": 1_762_592_000,
                            "price": {"id": "price_bench", "object": "price", "unit_amount": 900},
                            "quantity": 1,
                        }
                    ],
                    "has_more": False,
                },
                "metadata": {"n": str(c)},
            }
            states.append(
                state_from_fetch(
                    sub,
                    object_type="subscription",
                    object_id=sub["id"],
                    account=None,
                    livemode=False,
                    fetched_at=1_770_000_000,
                )
            )
    for start in range(0, len(states), 1000):
        with connect(engine) as conn:
            apply_states(conn, states[start : start + 1000], now=now)
    engine.dispose()


def time_calls(fn: Any, customers: list[str]) -> list[float]:
    samples = []
    for customer in customers:
        t0 = time.perf_counter()
        fn(customer)
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


def bare(url: str) -> Any:
    sql = (
        "SELECT * FROM stripeline_subscriptions "
        "WHERE account = {p} AND customer = {p} AND deleted = {f} "
        "ORDER BY created DESC, id DESC LIMIT 100"
    )
    if url.startswith("sqlite"):
        import sqlite3

        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        query = sql.format(p="?", f="0")
        return conn, lambda c: conn.execute(query, ("", c)).fetchall()
    import psycopg

    pg = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
    query = sql.format(p="%s", f="false")
    return pg, lambda c: pg.execute(query, ("", c), prepare=True).fetchall()


def run(backend: str, postgres_url: str, customers: int, lookups: int) -> list[dict[str, Any]]:
    from stripeline.db import make_engine
    from stripeline.mirror import Mirror

    results = []
    with common.scratch_database(backend, postgres_url) as url:
        common.migrated(url)
        fill(url, customers)
        rng = random.Random(7)
        sample = [f"cus_bench{rng.randrange(customers):06d}" for _ in range(lookups)]
        engine = make_engine(url)
        mirror = Mirror(engine)
        try:
            found = mirror.subscriptions(sample[0])
            assert len(found) == 3, found
            time_calls(mirror.subscriptions, sample[:200])  # warm up
            for name, fn in (
                ("Mirror.subscriptions", mirror.subscriptions),
                ("Mirror.active_subscriptions", mirror.active_subscriptions),
            ):
                ms = time_calls(fn, sample)
                results.append(_row(backend, name, ms))
        finally:
            engine.dispose()
        conn, query = bare(url)
        try:
            assert len(query(sample[0])) == 3
            time_calls(query, sample[:200])
            results.append(_row(backend, "bare SQL (baseline)", time_calls(query, sample)))
        finally:
            conn.close()
    return results


def _row(backend: str, name: str, ms: list[float]) -> dict[str, Any]:
    return {
        "backend": backend,
        "call": name,
        "median_ms": round(common.median(ms), 3),
        "p99_ms": round(common.percentile(ms, 99), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer customers and lookups")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--postgres-url", default=common.DEFAULT_POSTGRES_URL)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    customers, lookups = (500, 300) if args.quick else (CUSTOMERS, LOOKUPS)
    common.print_machine(common.machine(args.postgres_url))
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    rows = [r for b in backends for r in run(b, args.postgres_url, customers, lookups)]
    print(f"\nMirror lookup ({customers} customers x 3 subscriptions, {lookups} lookups)")
    print(f"{'backend':10} {'call':30} {'median ms':>10} {'p99 ms':>8}  target <1 ms median")
    for r in rows:
        met = "" if "baseline" in r["call"] else ("met" if r["median_ms"] < 1 else "NO")
        print(f"{r['backend']:10} {r['call']:30} {r['median_ms']:>10} {r['p99_ms']:>8}  {met}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
