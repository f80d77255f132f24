"""Sandbox benchmark: start time and a create-customer round trip through the SDK.

* start (warm): ``Sandbox().start()`` in this process, modules already
  imported, until its first answer (``GET /_sandbox/clock``); best and median
  of ``--starts`` runs. Target: under 0.5 s.
* start (cold): a fresh interpreter that imports ``stripeline_sandbox``,
  starts it and gets its first answer, timed inside the child (interpreter
  start-up excluded), median of ``--cold`` runs.
* round trip: ``client.v1.customers.create`` through the official SDK
  (``RequestsClient``, keep-alive) against the in-process sandbox; after
  ``--warmup`` calls, median, p90 and p99 of ``--calls`` calls. Target: median
  under 5 ms.

Loopback only; bounded by the counts above.

    python bench/sandbox.py            # default counts
    python bench/sandbox.py --quick
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import urllib.request

import stripe

from stripeline_sandbox import Sandbox

START_TARGET_S = 0.5
ROUND_TRIP_TARGET_MS = 5.0

_COLD = """
import json, time, urllib.request
t0 = time.perf_counter()
from stripeline_sandbox import Sandbox
sb = Sandbox().start()
req = urllib.request.Request(sb.url + "/_sandbox/clock", headers={"Authorization": "Bearer " + sb.secret_key})
urllib.request.urlopen(req, timeout=5).read()
t1 = time.perf_counter()
sb.close()
print(json.dumps({"seconds": t1 - t0}))
"""


def first_answer(sandbox: Sandbox) -> None:
    request = urllib.request.Request(  # noqa: S310 - the local sandbox
        sandbox.url + "/_sandbox/clock", headers={"Authorization": f"Bearer {sandbox.secret_key}"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - local sandbox
        response.read()


def warm_starts(count: int) -> list[float]:
    timings = []
    for _ in range(count):
        started = time.perf_counter()
        sandbox = Sandbox().start()
        first_answer(sandbox)
        timings.append(time.perf_counter() - started)
        sandbox.close()
    return timings


def cold_starts(count: int) -> list[float]:
    timings = []
    for _ in range(count):
        out = subprocess.run(
            [sys.executable, "-c", _COLD], capture_output=True, text=True, timeout=60, check=True
        )
        timings.append(float(json.loads(out.stdout.strip().splitlines()[-1])["seconds"]))
    return timings


def round_trips(calls: int, warmup: int) -> list[float]:
    with Sandbox() as sandbox:
        http_client = stripe.RequestsClient(timeout=5)
        client = stripe.StripeClient(
            sandbox.secret_key,
            base_addresses={"api": sandbox.url},
            http_client=http_client,
            max_network_retries=0,
        )
        try:
            for n in range(warmup):
                client.v1.customers.create({"email": f"warm{n}@example.com"})
            timings = []
            for n in range(calls):
                started = time.perf_counter()
                client.v1.customers.create({"email": f"c{n}@example.com"})
                timings.append(time.perf_counter() - started)
        finally:
            http_client.close()  # type: ignore[no-untyped-call]
    return timings


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=20)
    parser.add_argument("--cold", type=int, default=5)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="5 starts, 2 cold, 300 calls")
    args = parser.parse_args()
    if args.quick:
        args.starts, args.cold, args.calls, args.warmup = 5, 2, 300, 50

    warm = warm_starts(args.starts)
    cold = cold_starts(args.cold)
    trips = [t * 1000 for t in round_trips(args.calls, args.warmup)]
    results = {
        "start_warm_s": {"best": min(warm), "median": statistics.median(warm)},
        "start_cold_s": {"median": statistics.median(cold), "worst": max(cold)},
        "create_customer_ms": {
            "median": statistics.median(trips),
            "p90": quantile(trips, 0.90),
            "p99": quantile(trips, 0.99),
            "calls": len(trips),
        },
    }
    print(f"python {sys.version.split()[0]}, stripe {stripe.VERSION}")
    print(
        f"start, warm (in process): best {min(warm) * 1000:.1f} ms, "
        f"median {statistics.median(warm) * 1000:.1f} ms  (target < {START_TARGET_S * 1000:.0f} ms)"
    )
    print(
        f"start, cold (fresh interpreter, imports included): median "
        f"{statistics.median(cold) * 1000:.0f} ms, worst {max(cold) * 1000:.0f} ms"
    )
    print(
        f"create customer via SDK: median {statistics.median(trips):.2f} ms, "
        f"p90 {quantile(trips, 0.9):.2f} ms, p99 {quantile(trips, 0.99):.2f} ms "
        f"over {len(trips)} calls  (target median < {ROUND_TRIP_TARGET_MS} ms)"
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
