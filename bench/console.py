"""Console benchmark: the event list and an event page with 100,000 events.

Fills the inbox with EVENTS Stripe-shaped events received over a week (one in
a hundred dead, with an error, a traceback and an attempt; the rest
processed, with an attempt each) about 20,000 objects, and the mirror with
those objects as their last event left them (one in 97 belongs to one big
customer, ~200 objects and ~1,000 events), then times, in-process through the
ASGI app (Starlette's TestClient, signed in as an admin), the pages an
operator opens: the event list (newest, by status, by type, by object id, by
customer, a page deep in the cursor), an event page, a mirror object's page,
the overview, the Sync and Disputes pages. Target: under 100 ms median each.
Baseline in the same run: the list's first page as one bare SQL statement on
the driver. Talks to nothing but the local database.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from datetime import timedelta
from typing import Any

import _common as common

EVENTS = 100_000
REQUESTS = 40
OBJECTS = 20_000
#: One object in BIG_EVERY belongs to BIG_CUSTOMER.
BIG_EVERY = 97
BIG_CUSTOMER = "cus_console_big"
ADMIN = ("bench", "bench password long enough")
SECRET = "bench-console-secret-0123456789abcdef"


def fill(url: str, count: int) -> list[str]:
    """Store ``count`` events; the ids of the dead ones."""
    from sqlalchemy import update

    from stripeline import inbox
    from stripeline.core.envelope import parse_envelope
    from stripeline.db import make_engine
    from stripeline.db.engine import connect

    engine = make_engine(url)
    now = inbox.utcnow()
    start = now - timedelta(days=7)
    step = timedelta(days=7) / count
    dead: list[str] = []
    batch = 2_000
    for first in range(0, count, batch):
        items = []
        attempts = []
        for n in range(first, min(first + batch, count)):
            body = common.make_event(n, run="console", target_size=1500, objects=20_000)
            payload = json.dumps(body, separators=(",", ":")).encode()
            received = start + step * n
            items.append(
                inbox.IncomingEvent(
                    envelope=parse_envelope(payload)[0],
                    payload=payload,
                    source="webhook",
                    received_at=received,
                    signed_at=int(received.timestamp()),
                )
            )
            failed = n % 100 == 0
            if failed:
                dead.append(body["id"])
            attempts.append(
                {
                    "event_id": body["id"],
                    "number": 1,
                    "worker": "bench",
                    "started_at": received,
                    "finished_at": received + timedelta(milliseconds=20),
                    "outcome": "dead" if failed else "processed",
                    "error": "RuntimeError: ledger unavailable" if failed else None,
                    "traceback": "Traceback (most recent call last):\n  ...\nRuntimeError: ledger unavailable"
                    if failed
                    else None,
                }
            )
        with connect(engine) as conn:
            inbox.store(conn, items, notify=False)
            inbox.record_attempt(conn, attempts)
    events = inbox.events
    with connect(engine) as conn:
        conn.execute(
            update(events)
            .where(events.c.status == "pending")
            .values(status="processed", attempts=1, next_attempt_at=None, processed_at=now)
        )
        for i in range(0, len(dead), 500):
            conn.execute(
                update(events)
                .where(events.c.id.in_(dead[i : i + 500]))
                .values(
                    status="dead",
                    last_error="RuntimeError: ledger unavailable",
                    last_traceback="Traceback (most recent call last):\n  ...\nRuntimeError: ledger unavailable",
                    processed_at=None,
                )
            )
    if engine.dialect.name == "postgresql":
        # What autovacuum does after a load like this one: the bulk UPDATE
        # above left 100,000 dead index entries (pending rows) behind, which
        # a live inbox, updated a row at a time and vacuumed, does not keep.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE stripeline_events")
            conn.exec_driver_sql("VACUUM ANALYZE stripeline_attempts")
    engine.dispose()
    return dead


def fill_mirror(url: str, count: int) -> None:
    """Mirror each object as its newest event left it (one in ``BIG_EVERY``
    given to ``BIG_CUSTOMER``)."""
    from stripeline import inbox
    from stripeline.db import make_engine
    from stripeline.db.engine import connect
    from stripeline.mirror._store import apply_states, state_from_event

    engine = make_engine(url)
    objects = min(OBJECTS, count)
    states = []
    for k in range(objects):
        n = k + objects * ((count - 1 - k) // objects)  # the newest event about object k
        body = common.make_event(n, run="console", target_size=1500, objects=OBJECTS)
        obj = body["data"]["object"]
        if k % BIG_EVERY == 0:
            obj["customer"] = BIG_CUSTOMER
        states.append(
            state_from_event(
                obj,
                account=None,
                livemode=False,
                created=body["created"],
                event_type=body["type"],
                event_id=body["id"],
            )
        )
    for first in range(0, len(states), 1_000):
        with connect(engine) as conn:
            apply_states(conn, states[first : first + 1_000], now=inbox.utcnow())
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for table in ("customers", "payment_intents", "invoices", "charges"):
                conn.exec_driver_sql(f"VACUUM ANALYZE stripeline_{table}")
    engine.dispose()


def bare(url: str) -> Any:
    sql = (
        "SELECT id, type, status, attempts, deliveries, created, received_at, account, "
        "livemode, source, next_attempt_at, last_error FROM stripeline_events "
        "ORDER BY received_at DESC, id DESC LIMIT 51"
    )
    if url.startswith("sqlite"):
        import sqlite3

        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        return conn, lambda: conn.execute(sql).fetchall()
    import psycopg

    pg = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
    return pg, lambda: pg.execute(sql, prepare=True).fetchall()


def timed(fn: Any, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


def run(backend: str, postgres_url: str, count: int, requests: int) -> list[dict[str, Any]]:
    from starlette.testclient import TestClient

    from stripeline import Settings, Stripeline
    from stripeline.db import make_engine
    from stripeline.web import create_app
    from stripeline.web.console import hash_password

    rows = []
    with common.scratch_database(backend, postgres_url) as url:
        common.migrated(url)
        t0 = time.perf_counter()
        dead = fill(url, count)
        fill_mirror(url, count)
        print(f"{backend}: {count} events stored and mirrored in {time.perf_counter() - t0:.0f} s")
        settings = Settings(
            database_url=url,
            console_secret=SECRET,  # type: ignore[arg-type]
            console_users=f"{ADMIN[0]}:admin:{hash_password(ADMIN[1])}",  # type: ignore[arg-type]
        )
        app = Stripeline(settings, engine=make_engine(url))
        with TestClient(create_app(app), base_url="https://localhost") as http:
            login = http.get("/console/login").text
            token = re.search(r'name="csrf" value="([^"]+)"', login)
            assert token
            http.post(
                "/console/login",
                data={"csrf": token.group(1), "username": ADMIN[0], "password": ADMIN[1]},
            )
            deep = http.get("/console/events").text
            for _ in range(20):  # a cursor 20 pages (1,000 events) deep
                found = re.search(r'href="(/console/events\?[^"]*cursor=[^"]+)"', deep)
                assert found
                deep_url = found.group(1).replace("&amp;", "&")
                deep = http.get(deep_url).text
            rng = random.Random(7)
            about = common.make_event(4321, run="console", objects=OBJECTS)["data"]["object"]
            object_id = about["id"]
            customer = about["customer"]
            pages = [
                ("events list, newest", "/console/events"),
                ("events list, status=dead", "/console/events?status=dead"),
                ("events list, type=invoice.paid", "/console/events?type=invoice.paid"),
                ("events list, type=invoice.*", "/console/events?type=invoice.*"),
                ("events list, object id", f"/console/events?object={object_id}"),
                ("events list, a customer", f"/console/events?customer={customer}"),
                ("events list, big customer", f"/console/events?customer={BIG_CUSTOMER}"),
                ("events list, 20 pages deep", deep_url),
                ("event page (dead)", f"/console/events/{rng.choice(dead)}"),
                ("mirror object page", f"/console/objects/{object_id}"),
                ("overview", "/console/"),
                ("sync page", "/console/sync"),
                ("disputes page", "/console/disputes"),
            ]
            for name, path in pages:
                answer = http.get(path)
                assert answer.status_code == 200, (path, answer.status_code)
                assert "evt_" in answer.text or name in (
                    "overview",
                    "sync page",
                    "disputes page",
                ), name
                timed(lambda p=path: http.get(p), 3)
                rows.append(_row(backend, name, timed(lambda p=path: http.get(p), requests)))
        app.dispose()
        conn, query = bare(url)
        try:
            assert len(query()) == 51
            timed(query, 5)
            rows.append(_row(backend, "bare SQL, first page (baseline)", timed(query, requests)))
        finally:
            conn.close()
    return rows


def _row(backend: str, name: str, ms: list[float]) -> dict[str, Any]:
    return {
        "backend": backend,
        "page": name,
        "median_ms": round(common.median(ms), 2),
        "p99_ms": round(common.percentile(ms, 99), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 events, fewer requests")
    parser.add_argument("--events", type=int, default=EVENTS)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--postgres-url", default=common.DEFAULT_POSTGRES_URL)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    count, requests = (10_000, 10) if args.quick else (args.events, REQUESTS)
    common.print_machine(common.machine(args.postgres_url))
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    rows = [r for b in backends for r in run(b, args.postgres_url, count, requests)]
    print(f"\nConsole pages ({count} events in the inbox, {requests} requests each)")
    print(f"{'backend':10} {'page':34} {'median ms':>10} {'p99 ms':>8}  target <100 ms median")
    for r in rows:
        met = "" if "baseline" in r["page"] else ("met" if r["median_ms"] < 100 else "NO")
        print(f"{r['backend']:10} {r['page']:34} {r['median_ms']:>10} {r['p99_ms']:>8}  {met}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
