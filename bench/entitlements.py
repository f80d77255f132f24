"""Entitlements benchmark: ``has_access`` over 100,000 subscriptions, in-process.

Fills the mirror with SUBSCRIPTIONS subscriptions (two per customer, one
item each, statuses in turn active, trialing, past_due with an open invoice,
canceled; through ``apply_states``, as the worker writes them) and a customer
link per customer, then times ``Entitlements.has_access`` for random
customers (by customer id and by app user id). Targets: p50 < 0.2 ms and
p99 < 1 ms. Baselines in the same run: a bare indexed lookup of one
customer's subscriptions, and ``has_access``'s own statement, each on the
driver (no SQLAlchemy). Prints the query plans. Talks to nothing but the
local database.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from typing import Any

import _common as common

SUBSCRIPTIONS = 100_000
LOOKUPS = 20_000
STATUSES = ("active", "trialing", "past_due", "canceled")
NOW = int(time.time())


def fill(url: str, subscriptions: int) -> None:
    from sqlalchemy import insert, text

    from stripeline.db import make_engine
    from stripeline.db.engine import connect
    from stripeline.inbox import utcnow
    from stripeline.mirror._store import apply_states, state_from_fetch
    from stripeline.mirror.links import links as _links

    engine = make_engine(url)
    now = utcnow()

    def state(obj: dict[str, Any]) -> Any:
        return state_from_fetch(
            obj,
            object_type=obj["object"],
            object_id=obj["id"],
            account=None,
            livemode=False,
            fetched_at=NOW,
        )

    batch: list[Any] = []
    links: list[dict[str, Any]] = []
    for n in range(subscriptions):
        c = n // 2
        customer = f"cus_bench{c:07d}"
        status = STATUSES[n % len(STATUSES)]
        invoice_id = f"in_bench{n:07d}"
        sub = {
            "id": f"sub_bench{n:07d}",
            "object": "subscription",
            "customer": customer,
            "status": status,
            "cancel_at_period_end": False,
            "cancel_at": None,
            "trial_end": NOW + 7 * 86400 if status == "trialing" else None,
            "pause_collection": None,
            "latest_invoice": invoice_id,
            "currency": "usd",
            "created": NOW - 86400,
            "items": {
                "object": "list",
                "data": [
                    {
                        "id": f"si_bench{n:07d}",
                        "object": "subscription_item",
                        "current_period_start": NOW - 86400,
                        "current_period_end": NOW + 29 * 86400,
                        "price": {
                            "id": f"price_bench{n % 3}",
                            "object": "price",
                            "product": f"prod_bench{n % 3}",
                            "unit_amount": 900,
                        },
                        "quantity": 1,
                    }
                ],
                "has_more": False,
            },
            "metadata": {"n": str(n)},
        }
        batch.append(state(sub))
        batch.append(
            state(
                {
                    "id": invoice_id,
                    "object": "invoice",
                    "customer": customer,
                    "subscription": sub["id"],
                    "status": "open" if status == "past_due" else "paid",
                    "created": NOW - 3600,
                    "next_payment_attempt": NOW + 86400 if status == "past_due" else None,
                    "lines": {"object": "list", "data": [], "has_more": False},
                }
            )
        )
        if n % 2 == 0:
            links.append(
                {
                    "account": "",
                    "app_user_id": f"user-{c}",
                    "customer_id": customer,
                    "created_at": now,
                }
            )
        if len(batch) >= 4000:
            with connect(engine) as conn:
                apply_states(conn, batch, now=now)
            batch = []
            if engine.dialect.name == "postgresql" and n % 20_000 == 19_999:
                # As autovacuum would: without statistics the load's own
                # lookups (held markers) get slow plans as the tables grow.
                with connect(engine) as conn:
                    conn.execute(text("ANALYZE"))
    with connect(engine) as conn:
        if batch:
            apply_states(conn, batch, now=now)
        for start in range(0, len(links), 5000):
            conn.execute(insert(_links), links[start : start + 5000])
    if engine.dialect.name == "postgresql":
        # What autovacuum does after such a load: without statistics the planner
        # may read the links through the (account, customer_id) index instead
        # of their primary key (a scan of the account's links).
        with connect(engine) as conn:
            conn.execute(text("ANALYZE"))
    engine.dispose()


def time_calls(fn: Callable[[str], Any], keys: list[str]) -> list[float]:
    samples = []
    for key in keys:
        t0 = time.perf_counter()
        fn(key)
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


#: ``has_access``'s statement (by customer), written by hand for the driver.
STATEMENT = (
    "SELECT s.id, s.status, s.current_period_start, s.current_period_end,"
    " s.cancel_at_period_end, s.cancel_at, s.trial_end, {pause},"
    " (SELECT {agg} FROM stripeline_subscription_items i WHERE i.account = s.account"
    "  AND i.subscription = s.id AND i.deleted = {f}),"
    " (SELECT inv.created FROM stripeline_invoices inv"
    "  WHERE inv.account = s.account AND inv.id = s.latest_invoice),"
    " (SELECT inv.status FROM stripeline_invoices inv"
    "  WHERE inv.account = s.account AND inv.id = s.latest_invoice),"
    " (SELECT {next_attempt} FROM stripeline_invoices inv"
    "  WHERE inv.account = s.account AND inv.id = s.latest_invoice)"
    " FROM stripeline_subscriptions s"
    " WHERE s.account = {p} AND s.customer = {p}"
    " AND s.status IN ('active', 'trialing', 'past_due') AND s.deleted = {f}"
)
SINGLE = (
    "SELECT status, current_period_end FROM stripeline_subscriptions "
    "WHERE account = {p} AND customer = {p} AND status IN ('active', 'trialing', 'past_due') "
    "AND deleted = {f}"
)


def bare(url: str) -> tuple[Any, dict[str, Callable[[str], Any]], Callable[[str], list[str]]]:
    """The driver's connection, the baseline lookups, and the statement's plan."""
    if url.startswith("sqlite"):
        import sqlite3

        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        single = SINGLE.format(p="?", f="0")
        statement = STATEMENT.format(
            p="?",
            f="0",
            pause="json_extract(s.data, '$.pause_collection')",
            agg="group_concat(i.price || ' ' || i.product, ',')",
            next_attempt="json_extract(inv.data, '$.next_payment_attempt')",
        )
        return (
            conn,
            {
                "bare SQL: subscriptions of a customer": lambda c: conn.execute(
                    single, ("", c)
                ).fetchall(),
                "bare SQL: has_access's statement": lambda c: conn.execute(
                    statement, ("", c)
                ).fetchall(),
            },
            lambda c: [
                str(r) for r in conn.execute("EXPLAIN QUERY PLAN " + statement, ("", c)).fetchall()
            ],
        )
    import psycopg

    pg = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
    single = SINGLE.format(p="%s", f="false")
    statement = STATEMENT.format(
        p="%s",
        f="false",
        pause="s.data -> 'pause_collection'",
        agg="string_agg(i.price || ' ' || i.product, ',')",
        next_attempt="inv.data -> 'next_payment_attempt'",
    )
    return (
        pg,
        {
            "bare SQL: subscriptions of a customer": lambda c: pg.execute(
                single, ("", c), prepare=True
            ).fetchall(),
            "bare SQL: has_access's statement": lambda c: pg.execute(
                statement, ("", c), prepare=True
            ).fetchall(),
        },
        lambda c: [
            str(r[0]) for r in pg.execute("EXPLAIN ANALYZE " + statement, ("", c)).fetchall()
        ],
    )


def run(backend: str, postgres_url: str, subscriptions: int, lookups: int) -> list[dict[str, Any]]:
    from stripeline.app import Stripeline
    from stripeline.db import make_engine
    from stripeline.flows.entitlements import Entitlements
    from stripeline.settings import Settings

    results = []
    with common.scratch_database(backend, postgres_url) as url:
        common.migrated(url)
        started = time.perf_counter()
        fill(url, subscriptions)
        print(
            f"{backend}: filled {subscriptions} subscriptions in {time.perf_counter() - started:.0f} s"
        )
        customers = subscriptions // 2
        rng = random.Random(7)
        picks = [rng.randrange(customers) for _ in range(lookups)]
        sample = [f"cus_bench{c:07d}" for c in picks]
        users = [f"user-{c}" for c in picks]
        engine = make_engine(url)
        app = Stripeline(Settings(database_url=url), engine=engine)  # type: ignore[arg-type]
        entitlements = Entitlements(
            app, {"prod_bench0": {"pro"}, "price_bench1": {"pro"}, "prod_bench2": {"team"}}
        )
        try:
            # customer 0: active (prod 0) and trialing (price 1): both grant "pro"
            assert entitlements.has_access("cus_bench0000000", "pro")
            assert entitlements.has_access("user-0", "pro")
            assert not entitlements.has_access(
                "cus_bench0000001", "pro"
            )  # past_due (prod 2), canceled
            assert entitlements.has_access("cus_bench0000001", "team")
            time_calls(lambda c: entitlements.has_access(c, "pro"), sample[:1000])  # warm up
            for name, fn, keys in (
                ("has_access(customer id)", lambda c: entitlements.has_access(c, "pro"), sample),
                ("has_access(app user id)", lambda u: entitlements.has_access(u, "pro"), users),
                (
                    "access_until(customer id)",
                    lambda c: entitlements.access_until(c, "pro"),
                    sample,
                ),
                ("features(customer id)", entitlements.features, sample),
            ):
                results.append(_row(backend, name, time_calls(fn, keys)))
        finally:
            engine.dispose()
        conn, queries, plan = bare(url)
        try:
            print(f"{backend} plan of has_access's statement:")
            for line in plan(sample[0]):
                print("   ", line)
            for name, query in queries.items():
                assert query(sample[0]), name
                time_calls(query, sample[:1000])
                results.append(_row(backend, name + " (baseline)", time_calls(query, sample)))
        finally:
            conn.close()
    return results


def _row(backend: str, name: str, ms: list[float]) -> dict[str, Any]:
    return {
        "backend": backend,
        "call": name,
        "p50_ms": round(common.median(ms), 4),
        "p99_ms": round(common.percentile(ms, 99), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 subscriptions, fewer lookups")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--postgres-url", default=common.DEFAULT_POSTGRES_URL)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    subscriptions, lookups = (10_000, 3_000) if args.quick else (SUBSCRIPTIONS, LOOKUPS)
    common.print_machine(common.machine(args.postgres_url))
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    rows = [r for b in backends for r in run(b, args.postgres_url, subscriptions, lookups)]
    print(f"\nEntitlements ({subscriptions} subscriptions, {lookups} lookups)")
    print(f"{'backend':9} {'call':42} {'p50 ms':>8} {'p99 ms':>8}  target p50<0.2, p99<1")
    for r in rows:
        met = ""
        if "baseline" not in r["call"]:
            met = "met" if r["p50_ms"] < 0.2 and r["p99_ms"] < 1 else "NO"
        print(f"{r['backend']:9} {r['call']:42} {r['p50_ms']:>8} {r['p99_ms']:>8}  {met}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
