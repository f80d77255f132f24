"""Suite "duplicates and order": realistic events, each delivered three times,
shuffled, by concurrent senders, into a real ``stripeline serve`` and worker.

The events come from the sandbox driven through the official ``stripe`` SDK
(customers, updates, payment intents (some declined), refunds, subscriptions
with their invoices, charges and payment intents, metadata changes and
cancellations): the suite reads them back from ``/v1/events``, as Stripe
would have sent them, with no endpoint registered. Each is then signed afresh
for every attempt and delivered three times, in a shuffled order, by several
threads at once; a non-2xx answer is retried, as Stripe does. The server runs
``proof_app.py``'s handler (a row in ``proof_effects`` per run, and a
``once()``-guarded line in a file per event).

On SQLite: ``stripeline serve`` with its in-process worker. On PostgreSQL
(when ``STRIPELINE_TEST_POSTGRES_URL`` is set, in a fresh database the suite
creates and drops): ``serve`` plus two ``stripeline worker`` processes.

Criteria, once the inbox is drained: every event stored once with its three
deliveries and processed with exactly one attempt; exactly one handler row per
event; the guarded outside effect exactly once per event; and the mirror equal
to the sandbox's final state (``stripeline verify`` finds no drift).

    python proof/duplicates.py [--short]
"""

from __future__ import annotations

import collections
import json
import os
import queue
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import _common as common
import httpx

from stripeline.core.signature import sign

SENDERS = 8
COPIES = 3
TYPES = ["customers", "payment_intents", "charges", "invoices", "subscriptions"]


# -- the world ----------------------------------------------------------------


def drive(client: Any, customers: int, seed: int) -> None:
    """Customers with payments, refunds and subscriptions, through the SDK."""
    import stripe

    rng = random.Random(seed)  # noqa: S311 - a scenario, not a secret
    product = client.v1.products.create({"name": "Proof plan"})
    prices = [
        client.v1.prices.create(
            {
                "product": product.id,
                "unit_amount": amount,
                "currency": "usd",
                "recurring": {"interval": "month"},
            }
        )
        for amount in (900, 2900)
    ]
    for n in range(customers):
        customer = client.v1.customers.create(
            {"email": f"proof{n}@example.com", "metadata": {"n": str(n)}}
        )
        client.v1.customers.update(customer.id, {"name": f"Customer {n}"})
        for _ in range(rng.randint(1, 2)):
            card = rng.choice(["pm_card_visa"] * 4 + ["pm_card_chargeDeclined"])
            try:
                intent = client.v1.payment_intents.create(
                    {
                        "amount": rng.randint(500, 50_000),
                        "currency": "usd",
                        "customer": customer.id,
                        "payment_method": card,
                        "confirm": True,
                    }
                )
            except stripe.CardError:
                continue
            if rng.random() < 0.3:
                client.v1.refunds.create({"payment_intent": intent.id})
        subscription = client.v1.subscriptions.create(
            {
                "customer": customer.id,
                "items": [{"price": rng.choice(prices).id}],
                "default_payment_method": "pm_card_visa",
            }
        )
        if rng.random() < 0.5:
            client.v1.subscriptions.update(subscription.id, {"metadata": {"tier": "gold"}})
        if rng.random() < 0.3:
            client.v1.subscriptions.cancel(subscription.id)
        if rng.random() < 0.3:
            client.v1.customers.update(customer.id, {"metadata": {"vip": "yes"}})


def read_events(api: str, key: str) -> list[bytes]:
    """Every event of the account, oldest first, as JSON bodies."""
    events: list[dict[str, Any]] = []
    after: str | None = None
    with httpx.Client(base_url=api, auth=(key, ""), timeout=30) as http:
        while True:
            params: dict[str, Any] = {"limit": 100}
            if after:
                params["starting_after"] = after
            page = http.get("/v1/events", params=params).raise_for_status().json()
            events += page["data"]
            if not page["has_more"]:
                break
            after = page["data"][-1]["id"]
    events.reverse()
    return [json.dumps(e, separators=(",", ":")).encode() for e in events]


# -- delivery -----------------------------------------------------------------


class Sender:
    def __init__(self, port: int) -> None:
        self.port = port
        self.statuses: collections.Counter[int] = collections.Counter()
        self.retries = 0
        self.given_up: list[str] = []
        self.lock = threading.Lock()

    def work(self, jobs: queue.Queue[tuple[str, bytes] | None]) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30) as http:
            while (job := jobs.get()) is not None:
                event_id, body = job
                for attempt in range(30):
                    header = sign(body, common.SECRET, timestamp=int(time.time()))
                    try:
                        status = http.post(
                            "/webhooks/stripe",
                            content=body,
                            headers={"Stripe-Signature": header},
                        ).status_code
                    except httpx.HTTPError:
                        status = 0
                    with self.lock:
                        self.statuses[status] += 1
                        if not 200 <= status < 300:
                            self.retries += 1
                    if 200 <= status < 300:
                        break
                    time.sleep(min(0.2 * 2**attempt, 5))
                else:
                    with self.lock:
                        self.given_up.append(event_id)


def deliver(port: int, bodies: list[bytes], seed: int) -> Sender:
    deliveries = [(json.loads(b)["id"], b) for b in bodies for _ in range(COPIES)]
    random.Random(seed).shuffle(deliveries)  # noqa: S311 - an order, not a secret
    jobs: queue.Queue[tuple[str, bytes] | None] = queue.Queue()
    for item in deliveries:
        jobs.put(item)
    for _ in range(SENDERS):
        jobs.put(None)
    sender = Sender(port)
    threads = [threading.Thread(target=sender.work, args=(jobs,)) for _ in range(SENDERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sender


def refetches_pending(url: str, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        left = int(common.query(url, "SELECT count(*) FROM stripeline_refetches")[0][0])
        if left == 0 or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def drained(url: str, count: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = common.query(
            url, "SELECT count(*) FROM stripeline_events WHERE status = 'processed'"
        )
        if rows[0][0] >= count:
            return True
        time.sleep(0.5)
    return False


# -- one backend --------------------------------------------------------------


def run_backend(
    backend: str, bodies: list[bytes], api: str, key: str, work: Path, seed: int
) -> tuple[list[tuple[str, str]], list[common.Criterion]]:
    ids = [json.loads(b)["id"] for b in bodies]
    effects_file = work / f"effects-{backend}.txt"
    effects_file.write_text("")
    # At info level the logs show every deadlock retried (counted below).
    extra = {"PROOF_EFFECTS_FILE": str(effects_file), "STRIPELINE_LOG_LEVEL": "info"}
    workers: list[subprocess.Popen[bytes]] = []
    with common.scratch_database(backend) as url:
        common.execute(url, "CREATE TABLE proof_effects (event_id VARCHAR(255) NOT NULL)")
        server = common.start_serve(
            url, work, app="proof_app:app", api_key=key, api_base=api, extra_env=extra
        )
        try:
            if backend == "postgresql":
                env = {
                    k: v
                    for k, v in os.environ.items()
                    if not k.startswith(("STRIPE_", "STRIPELINE_"))
                }
                env |= extra | {
                    "STRIPE_SECRET_KEY": key,
                    "STRIPE_WEBHOOK_SECRET": common.SECRET,
                    "STRIPELINE_DATABASE_URL": url,
                    "STRIPELINE_STRIPE_API_BASE": api,
                    "STRIPELINE_LOG_FORMAT": "json",
                    "PYTHONPATH": str(common.HERE),
                }
                for n in range(2):
                    log = open(work / f"worker-{n}.log", "wb")
                    workers.append(
                        subprocess.Popen(
                            [
                                sys.executable,
                                "-c",
                                "from stripeline.cli import main; main()",
                                "worker",
                                "--app",
                                "proof_app:app",
                            ],
                            env=env,
                            stdout=log,
                            stderr=subprocess.STDOUT,
                        )
                    )
            start = time.monotonic()
            sender = deliver(server.port, bodies, seed)
            send_seconds = time.monotonic() - start
            all_done = drained(url, len(ids), timeout=600)
            drain_seconds = time.monotonic() - start
            # Ties (two states of one object in one second) are settled by a
            # re-fetch from the API: wait for those too.
            refetches_left = refetches_pending(url, timeout=120)
        finally:
            server.stop()
            for proc in workers:
                proc.terminate()
                proc.wait(30)
        verify = common.stripeline_cli(
            ["verify", *TYPES, "--json"],
            {
                "STRIPE_SECRET_KEY": key,
                "STRIPE_WEBHOOK_SECRET": common.SECRET,
                "STRIPELINE_DATABASE_URL": url,
                "STRIPELINE_STRIPE_API_BASE": api,
                "STRIPELINE_LOG_LEVEL": "warning",
            },
        )
        rows = common.query(url, "SELECT id, status, attempts, deliveries FROM stripeline_events")
        attempt_counts = dict(
            common.query(
                url, "SELECT event_id, count(*) FROM stripeline_attempts GROUP BY event_id"
            )
        )
        effect_counts = dict(
            common.query(url, "SELECT event_id, count(*) FROM proof_effects GROUP BY event_id")
        )
    outside = collections.Counter(effects_file.read_text().split())
    logs = "".join(
        p.read_text(errors="replace")
        for p in [server.log, *(work / f"worker-{n}.log" for n in range(len(workers)))]
    )
    worker_deadlocks = logs.count('"action": "deadlock_retried"')
    ingest_errors = logs.count('"action": "ingest_database_error"')
    tracebacks = logs.count("Traceback (most recent call last)")
    stored = {r[0]: r for r in rows}
    missing = [i for i in ids if i not in stored]
    extra_rows = [i for i in stored if i not in set(ids)]
    not_processed = [r[0] for r in rows if r[1] != "processed"]
    not_once = [i for i in ids if attempt_counts.get(i, 0) != 1 or stored.get(i, (0, 0, 0))[2] != 1]
    deliveries = collections.Counter(r[3] for r in rows)
    effects_wrong = [i for i in ids if effect_counts.get(i, 0) != 1]
    outside_wrong = [i for i in ids if outside.get(i, 0) != 1]
    try:
        report = json.loads(verify.stdout)
    except ValueError:
        report = None
    canceled = {
        json.loads(b)["data"]["object"]["id"]
        for b in bodies
        if json.loads(b)["type"] == "customer.subscription.deleted"
    }
    drift, judged, eventless, known = classify_drift(report, canceled)
    label = (
        "SQLite (serve, in-process worker)"
        if backend == "sqlite"
        else ("PostgreSQL (serve + 2 workers)")
    )
    ok_answers = sum(n for s, n in sender.statuses.items() if 200 <= s < 300)
    not_ok = sum(sender.statuses.values()) - ok_answers
    figures = [
        (
            f"{label}: deliveries",
            f"{ok_answers:,} answered 2xx of {sum(sender.statuses.values()):,} sent ({SENDERS} senders, {send_seconds:.1f} s); statuses {dict(sorted(sender.statuses.items()))}; {len(sender.given_up)} given up",
        ),
        (
            f"{label}: inbox",
            f"{len(rows):,} events stored of {len(ids):,}; {len(missing)} missing, {len(extra_rows)} extra; deliveries per event {dict(sorted(deliveries.items()))}; drained in {drain_seconds:.1f} s",
        ),
        (
            f"{label}: processing",
            f"{len(ids) - len(not_processed):,} processed, {len(not_once)} not with exactly one attempt",
        ),
        (
            f"{label}: handler rows",
            f"{sum(effect_counts.values()):,} for {len(ids):,} events; {len(effects_wrong)} events without exactly one",
        ),
        (
            f"{label}: once() outside effects",
            f"{sum(outside.values()):,} for {len(ids):,} events; {len(outside_wrong)} events without exactly one",
        ),
        (
            f"{label}: logged",
            f"{worker_deadlocks} worker deadlocks retried, {ingest_errors} ingest database "
            f"errors, {tracebacks} tracebacks",
        ),
        (
            f"{label}: stripeline verify {' '.join(TYPES)}",
            f"exit {verify.returncode}; {drift}; re-fetches left {refetches_left}",
        ),
    ]
    criteria = [
        common.Criterion(
            f"{label}: every event stored once, with its {COPIES} deliveries",
            all_done
            and not missing
            and not extra_rows
            and set(deliveries) == {COPIES}
            and not sender.given_up,
            f"{len(rows)} of {len(ids)}, deliveries {dict(deliveries)}",
        ),
        common.Criterion(
            f"{label}: every delivery answered 2xx at once (no 5xx while the database is up)",
            not_ok == 0,
            f"{not_ok} not 2xx ({ingest_errors} ingest database errors logged)",
        ),
        common.Criterion(
            f"{label}: each event processed exactly once",
            not not_processed and not not_once,
            f"{len(not_processed)} not processed, {len(not_once)} not exactly one attempt",
        ),
        common.Criterion(
            f"{label}: handler effect committed once per event",
            not effects_wrong,
            f"{len(effects_wrong)} wrong",
        ),
        common.Criterion(
            f"{label}: once()-guarded outside effect once per event",
            not outside_wrong,
            f"{len(outside_wrong)} events with it more than once; "
            f"{worker_deadlocks} worker deadlocks retried",
        ),
        common.Criterion(
            f"{label}: no worker deadlock (whatever the order of the events)",
            worker_deadlocks == 0,
            f"{worker_deadlocks} worker deadlocks retried",
        ),
        common.Criterion(
            f"{label}: mirror equal to the final state (verify: no drift but the explained)",
            report is not None and judged == 0 and refetches_left == 0,
            f"{judged} drifted objects judged; {eventless} in fields no event carries; "
            f"{known} canceled subscriptions (judged below); {refetches_left} re-fetches left",
        ),
        common.Criterion(
            f"{label}: verify agrees with the mirror on canceled subscriptions",
            known == 0,
            f"{known} of {len(canceled)} canceled subscriptions reported missing",
        ),
    ]
    return figures, criteria


#: Fields no event carries: Stripe changes them without an event about the
#: object (a customer's ``next_invoice_sequence`` moves when an invoice is
#: numbered, with no ``customer.updated``), so no mirror fed by events holds
#: them; ``verify --repair`` or a re-fetch does.
EVENTLESS_FIELDS = {"customer": {"next_invoice_sequence"}}


def classify_drift(report: Any, canceled: set[str]) -> tuple[str, int, int, int]:
    """The drift counted by type, kind and fields; and how many drifted objects
    are judged, explained by fields no event carries, or a known open bug."""
    if not isinstance(report, dict):
        return "no JSON report", 1, 0, 0
    checked = ", ".join(f"{t['object_type']} {t['checked']}" for t in report["types"])
    drift: collections.Counter[str] = collections.Counter()
    judged = eventless = known = 0
    for t in report["types"]:
        for d in t["drift"]:
            fields = f" ({', '.join(d['fields'])})" if d["fields"] else ""
            drift[f"{d['object_type']} {d['kind']}{fields}"] += 1
            if d["kind"] == "differs" and set(d["fields"]) <= EVENTLESS_FIELDS.get(
                d["object_type"], set()
            ):
                eventless += 1
            elif d["kind"] == "missing" and d["id"] in canceled:
                known += 1
            else:
                judged += 1
    found = "; ".join(f"{k}: {n}" for k, n in sorted(drift.items())) or "no drift"
    return f"checked {checked}; {found}", judged, eventless, known


# -- the suite ----------------------------------------------------------------


def run(short: bool, work: Path) -> common.SuiteResult:
    import stripe

    from stripeline_sandbox import Sandbox

    started = time.monotonic()
    target = 300 if short else 2_000
    seed = 11
    backends = ["sqlite"] + (["postgresql"] if common.postgres_url() else [])
    figures: list[tuple[str, str]] = []
    criteria: list[common.Criterion] = []
    notes: list[str] = []
    with Sandbox() as sandbox:
        client = stripe.StripeClient(sandbox.secret_key, base_addresses={"api": sandbox.url})
        customers = 0
        bodies: list[bytes] = []
        build_start = time.monotonic()
        while len(bodies) < target:
            batch = max(5, (target - len(bodies)) // 14 + 1)
            drive(client, batch, seed + customers)
            customers += batch
            bodies = read_events(sandbox.url, sandbox.secret_key)
        build_seconds = time.monotonic() - build_start
        kinds = collections.Counter(json.loads(b)["type"] for b in bodies)
        figures.append(
            (
                "events",
                f"{len(bodies):,} from {customers} customers through the SDK in "
                f"{build_seconds:.0f} s, each delivered {COPIES} times "
                f"({len(bodies) * COPIES:,} deliveries), {len(kinds)} types",
            )
        )
        figures.append(("event types", ", ".join(f"{t} {n}" for t, n in sorted(kinds.items()))))
        for backend in backends:
            f, c = run_backend(backend, bodies, sandbox.url, sandbox.secret_key, work, seed)
            figures += f
            criteria += c
    if "postgresql" not in backends:
        notes.append("PostgreSQL not run: STRIPELINE_TEST_POSTGRES_URL is not set.")
    return common.SuiteResult(
        "duplicates",
        "Duplicates and order",
        figures,
        criteria,
        notes,
        time.monotonic() - started,
    )


def main() -> None:
    common.suite_main(run, __doc__ or "", "about 300 events instead of 2,000")


if __name__ == "__main__":
    main()
