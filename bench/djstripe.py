"""End to end against dj-stripe: first POST to last event applied, same load, same run.

The load is bench/ingest.py's: ~3 KB signed Stripe-shaped events (the same
mix of payment_intent, customer, invoice and charge events), 16 keep-alive
HTTP/1.1 connections over loopback, every request signed before the clock
starts. Per backend and round, two servers on a fresh scratch database each:

* ``dj-stripe``: a minimal Django project with dj-stripe's webhook view
  (``djstripe.urls``, one ``WebhookEndpoint`` holding the endpoint secret,
  validation ``verify_signature``, the production setting its docs give),
  served by uvicorn (ASGI, one process like ``stripeline serve``; Django runs
  each request's sync view in a thread of its own). dj-stripe processes each
  event inside its request: it stores the delivery, verifies the signature,
  stores the event, then, for these four types, *retrieves the object from
  the Stripe API* (and every related object it does not hold yet: the
  customer, the payment method …) and upserts it. The API here is
  stripeline's offline sandbox on 127.0.0.1 (the stripe SDK's ``api_base``
  pointed at it), seeded before the clock with the objects the events name;
  two requests it refuses and Stripe serves are made as it takes them (see
  ``SETTINGS``). Its end-to-end time is the last answer's: an event is
  applied when its 2xx is sent, or failed with a 500 (counted, with the
  exception its delivery row keeps or the server logged).
* ``stripeline+worker``: ``stripeline serve`` with its in-process worker
  (bench/ingest.py's server), the same event bodies; end to end is from the
  first POST until the worker has processed the last event.

dj-stripe, Django and uvicorn are installed into a scratch venv under the
temp directory (kept between runs, keyed by the version; ``--fresh-venv``
builds it again). When that fails the dj-stripe rows are skipped with the
reason and stripeline still runs. All traffic is to 127.0.0.1.

    python bench/djstripe.py                       # 2,000 events, SQLite and PostgreSQL
    python bench/djstripe.py --backend sqlite --events 200 --warmup 50 --objects 10
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import _common as common
import ingest

DJSTRIPE_VERSION = "2.11.0"
REQUIREMENTS = (
    f"dj-stripe=={DJSTRIPE_VERSION}",
    "django>=5.2,<6",
    "uvicorn[standard]>=0.30,<1",
    "psycopg[binary,pool]>=3.2,<4",
)
#: Each key is an account in the sandbox; this one is the bench's (dj-stripe
#: takes letters and digits only after ``sk_test_``, 24 or more).
SANDBOX_KEY = "sk_test_BenchStripelineDjstripe0000"


# -- the scratch venv ---------------------------------------------------------


def venv_python(fresh: bool, timeout: float) -> tuple[Path | None, str]:
    """The scratch venv's python with dj-stripe installed, or None and why not."""
    home = Path(tempfile.gettempdir()) / f"stripeline-bench-djstripe-{DJSTRIPE_VERSION}"
    python = home / "bin" / "python"
    probe = [str(python), "-c", "import djstripe, django, uvicorn, psycopg, psycopg_pool"]
    if fresh:
        shutil.rmtree(home, ignore_errors=True)
    if python.exists() and subprocess.run(probe, capture_output=True, check=False).returncode == 0:
        return python, "reused"
    shutil.rmtree(home, ignore_errors=True)
    print(f"dj-stripe: installing {', '.join(REQUIREMENTS)} into a scratch venv …", flush=True)
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", str(home)], check=True, capture_output=True, timeout=120
        )
        done = subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                *REQUIREMENTS,
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        shutil.rmtree(home, ignore_errors=True)
        return None, f"could not create the venv ({type(exc).__name__}: {exc})"
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.splitlines() if ln.startswith("ERROR")]
        shutil.rmtree(home, ignore_errors=True)
        return None, "pip install failed: " + (lines[-1] if lines else f"exit {done.returncode}")
    if subprocess.run(probe, capture_output=True, check=False).returncode != 0:
        return None, "installed, but djstripe does not import"
    return python, "installed"


# -- the offline Stripe API ---------------------------------------------------


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def start_sandbox() -> ingest.Server:
    """``stripeline-sandbox`` in a process of its own (not in this one: its
    threads would take the load generator's GIL)."""
    port = ingest.free_port()
    cmd = [sys.executable, "-m", "stripeline_sandbox", "--port", str(port)]
    cmd += ["--secret-key", SANDBOX_KEY]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    wait_port(port, proc)
    return ingest.Server("sandbox", proc, port)


def seed(api: str, per_kind: int) -> dict[str, list[tuple[str, str]]]:
    """Objects the events will name, as ``kind -> [(id, customer id)]``: a
    customer, a confirmed PaymentIntent and its captured Charge (which names a
    balance transaction, retrieved by dj-stripe too), and a draft Invoice,
    ``per_kind`` of each."""
    import stripe

    client = stripe.StripeClient(SANDBOX_KEY, base_addresses={"api": api})
    objects: dict[str, list[tuple[str, str]]] = {
        "customer": [],
        "payment_intent": [],
        "charge": [],
        "invoice": [],
    }
    for i in range(per_kind):
        customer = client.v1.customers.create(
            {"email": f"bench{i}@example.com", "name": f"Jenny Rosen {i}"}
        )
        intent = client.v1.payment_intents.create(
            {
                "amount": 1000 + i,
                "currency": "eur",
                "customer": customer.id,
                "payment_method": "pm_card_visa",
                "confirm": True,
            }
        )
        invoice = client.v1.invoices.create({"customer": customer.id})
        objects["customer"].append((customer.id, customer.id))
        objects["payment_intent"].append((intent.id, customer.id))
        objects["charge"].append((str(intent.latest_charge), customer.id))
        objects["invoice"].append((str(invoice.id), customer.id))
    return objects


def bodies(
    count: int, *, run: str, start: int, objects: dict[str, list[tuple[str, str]]]
) -> list[bytes]:
    """bench/ingest.py's events (``common.make_event``: size, mix, types),
    each naming one of the seeded objects of its kind and its customer."""
    out = []
    for n in range(start, start + count):
        event = common.make_event(n, run=run)
        obj = event["data"]["object"]
        seeded = objects[obj["object"]]
        obj["id"], obj["customer"] = seeded[(n // 4) % len(seeded)]
        out.append(common.encode(event))
    return out


def requests(port: int, path: str, payloads: list[bytes]) -> list[bytes]:
    """Signed HTTP requests, as ingest.prepare builds them, to ``path``."""
    from stripeline.core.signature import sign

    now = int(time.time())
    out = []
    for body in payloads:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nStripe-Signature: {sign(body, common.SECRET, now)}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        out.append(head + body)
    return out


def rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    if url.startswith("sqlite"):
        import sqlite3

        lite = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            return list(lite.execute(sql).fetchall())
        finally:
            lite.close()
    import psycopg

    with psycopg.connect(url) as conn:
        return list(conn.execute(sql).fetchall())


def api_calls(port: int) -> int:
    """The Stripe API requests the dj-stripe process has made so far."""
    request = (
        f"GET /bench/api-calls HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request.encode())
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return int(json.loads(answer.split(b"\r\n\r\n", 1)[1])["calls"])


# -- the Django project -------------------------------------------------------

SETTINGS = """
import json
import os

SECRET_KEY = "bench-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "djstripe"]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]
ROOT_URLCONF = "benchproj.urls"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASES = {"default": json.loads(os.environ["BENCH_DJANGO_DATABASE"])}

STRIPE_LIVE_MODE = False
STRIPE_TEST_SECRET_KEY = os.environ["BENCH_STRIPE_KEY"]
# The stripe SDK's api_base: the offline sandbox on 127.0.0.1.
STRIPE_API_HOST = os.environ["BENCH_STRIPE_API"]
DJSTRIPE_WEBHOOK_VALIDATION = "verify_signature"
DJSTRIPE_FOREIGN_KEY_TO_FIELD = "id"
DJSTRIPE_USE_NATIVE_JSONFIELD = True
# W002: STRIPE_API_HOST set with DEBUG off (on purpose: the sandbox).
SILENCED_SYSTEM_CHECKS = ["djstripe.W002"]
# A request that fails is logged with its traceback (the bench shows the last lines).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"django.request": {"handlers": ["stderr"], "level": "ERROR"}},
}

# dj-stripe's requests go to the sandbox as they are, counted.
import stripe


class _SandboxClient(stripe.RequestsClient):
    calls = 0  # API requests made, read by the bench at /bench/api-calls

    def request(self, method, url, headers, post_data=None):
        _SandboxClient.calls += 1
        return super().request(method, url, headers, post_data)


stripe.default_http_client = _SandboxClient()
"""

URLS = """
from django.http import JsonResponse
from django.urls import include, path


def healthz(request):
    return JsonResponse({"status": "ok"})


def api_calls(request):
    from benchproj.settings import _SandboxClient

    return JsonResponse({"calls": _SandboxClient.calls})


urlpatterns = [
    path("healthz", healthz),
    path("bench/api-calls", api_calls),
    path("stripe/", include("djstripe.urls", namespace="djstripe")),
]
"""

ASGI = """
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchproj.settings")
application = get_asgi_application()
"""

#: Migrate, then the endpoint as dj-stripe keeps it (its secret verifies deliveries).
SETUP = """
import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchproj.settings")
django.setup()
from django.core.management import call_command

call_command("migrate", verbosity=0)
from djstripe.models import WebhookEndpoint

endpoint = WebhookEndpoint.objects.create(
    id="we_bench",
    livemode=False,
    url="http://127.0.0.1/stripe/webhook/",
    enabled_events=["*"],
    secret=os.environ["BENCH_WEBHOOK_SECRET"],
    status="enabled",
    api_version="",
    djstripe_validation_method="verify_signature",
)
print(endpoint.djstripe_uuid)
"""


def write_project(directory: Path) -> None:
    package = directory / "benchproj"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for name, text in (("settings", SETTINGS), ("urls", URLS), ("asgi", ASGI)):
        (package / f"{name}.py").write_text(textwrap.dedent(text).lstrip())
    (directory / "setup_bench.py").write_text(textwrap.dedent(SETUP).lstrip())


def django_database(url: str) -> dict[str, Any]:
    """Django's DATABASES entry for a scratch database: SQLite in WAL with
    ``synchronous=FULL`` (as stripeline's), PostgreSQL with its defaults
    (``synchronous_commit=on``). Under ASGI Django runs each request's sync
    view in a thread of its own, so persistent connections are off (Django's
    default; its docs say so for ASGI) and PostgreSQL takes Django's pool."""
    if url.startswith("sqlite"):
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": url.removeprefix("sqlite:///"),
            "CONN_MAX_AGE": 0,
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
        }
    parts = urlsplit(url)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parts.path.lstrip("/"),
        "USER": parts.username or "",
        "PASSWORD": parts.password or "",
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
        "CONN_MAX_AGE": 0,
        "OPTIONS": {"pool": {"min_size": 4, "max_size": ingest.CONNECTIONS}},
    }


def start_djstripe(python: Path, directory: Path, url: str, api: str) -> tuple[ingest.Server, str]:
    """Migrate, add the endpoint, serve under uvicorn; return the server and the webhook path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE", "DJANGO"))} | {
        "BENCH_DJANGO_DATABASE": json.dumps(django_database(url)),
        "BENCH_STRIPE_KEY": SANDBOX_KEY,
        "BENCH_STRIPE_API": api,
        "BENCH_WEBHOOK_SECRET": common.SECRET,
        "DJANGO_SETTINGS_MODULE": "benchproj.settings",
        "PYTHONPATH": str(directory),
    }
    done = subprocess.run(
        [str(python), "setup_bench.py"],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError("dj-stripe setup failed:\n" + done.stderr[-2000:])
    path = f"/stripe/webhook/{done.stdout.strip().splitlines()[-1]}/"
    port = ingest.free_port()
    cmd = [str(python), "-m", "uvicorn", "benchproj.asgi:application"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    cmd += ["--no-access-log"]
    with open(directory / "server.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=directory, env=env, stdout=log, stderr=log)
    common.wait_ready(port, proc)
    return ingest.Server("dj-stripe", proc, port), path


# -- phases -------------------------------------------------------------------


@dataclass
class Phase:
    backend: str
    app: str
    round: int
    result: ingest.LoadResult
    processed: int
    failed: int
    end_to_end_s: float
    peak_rss_mb: float
    reasons: list[str] = field(default_factory=list)
    api_calls: int = 0
    #: CPU seconds of the server process from the first POST to the last event
    #: applied, and of the sandbox meanwhile (dj-stripe's API calls).
    server_cpu_e2e: float = 0.0
    sandbox_cpu: float = 0.0
    #: dj-stripe's rows afterwards: events stored, objects mirrored.
    mirrored: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        r = self.result
        return {
            "backend": self.backend,
            "app": self.app,
            "round": self.round,
            "events_per_s": round(r.rate, 1),
            "p50_ms": round(common.percentile(r.latencies_ms, 50), 2),
            "p99_ms": round(common.percentile(r.latencies_ms, 99), 2),
            "ok": r.ok,
            "non_2xx": r.errors,
            "statuses": {str(k): v for k, v in sorted(r.statuses.items())},
            "processed": self.processed,
            "processing_errors": self.failed,
            "end_to_end_s": round(self.end_to_end_s, 2),
            "end_to_end_events_per_s": round(self.processed / self.end_to_end_s, 1)
            if self.end_to_end_s
            else 0.0,
            "seconds": round(r.seconds, 2),
            "server_cpu_ms_per_event": round(1000 * r.server_cpu / max(r.ok, 1), 3),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "processing_error_reasons": self.reasons,
            "stripe_api_calls_per_event": round(self.api_calls / max(r.ok + r.errors, 1), 2),
            "server_cpu_e2e_ms_per_event": round(
                1000 * self.server_cpu_e2e / max(self.processed, 1), 3
            ),
            "sandbox_cpu_ms_per_event": round(1000 * self.sandbox_cpu / max(r.ok + r.errors, 1), 3),
            "djstripe_rows": self.mirrored,
        }


def measure_djstripe(
    backend: str,
    round_no: int,
    args: argparse.Namespace,
    python: Path,
    sandbox: ingest.Server,
    objects: dict[str, list[tuple[str, str]]],
) -> Phase:
    api = f"http://127.0.0.1:{sandbox.port}"
    run = f"dj{round_no}{int(time.time()) % 100000:05d}"
    directory = Path(tempfile.mkdtemp(prefix="stripeline-bench-djproj-"))
    try:
        with common.scratch_database(backend, args.postgres_url) as url:
            write_project(directory)
            server, path = start_djstripe(python, directory, url, api)
            try:
                warm = bodies(args.warmup, run=run, start=0, objects=objects)
                ingest.run_load(server, requests(server.port, path, warm), args.max_seconds)
                calls = api_calls(server.port)
                payloads = bodies(args.events, run=run, start=args.warmup, objects=objects)
                sandbox_cpu = sandbox.cpu_seconds()
                result = ingest.run_load(
                    server, requests(server.port, path, payloads), args.max_seconds
                )
                sandbox_cpu = sandbox.cpu_seconds() - sandbox_cpu
                calls = api_calls(server.port) - calls
                rss = server.peak_rss_mb()
            finally:
                server.stop()
            # Processed in the request: applied when answered. A failure is a
            # 500 whose delivery row keeps the exception.
            table = "djstripe_webhookeventtrigger"
            processed = ingest.count_rows(url, f"{table} WHERE processed") - args.warmup
            failed = ingest.count_rows(url, f"{table} WHERE exception <> ''")
            # What it mirrored (each object re-fetched from the API and upserted).
            mirrored = {
                kind: ingest.count_rows(url, f"djstripe_{kind}")
                for kind in (
                    "event",
                    "customer",
                    "paymentintent",
                    "charge",
                    "balancetransaction",
                    "invoice",
                )
            }
            # Grouped without the request ids that Stripe's errors name.
            reasons = Counter(
                re.sub(r"Request req_\w+: ", "", str(text))
                for (text,) in rows(url, f"SELECT exception FROM {table} WHERE exception <> ''")  # noqa: S608
            ).most_common(5)
        # Failures outside dj-stripe's own handling (no delivery row says why):
        # the last line of each traceback the server logged.
        log = (directory / "server.log").read_text(errors="replace").splitlines()
        logged = Counter(
            line for line in log if re.match(r"^[\w.]+(Error|Exception|Warning)\b", line)
        ).most_common(5)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    phase = Phase(backend, "dj-stripe", round_no, result, processed, failed, result.seconds, rss)
    phase.reasons = [f"{count} × {text}" for text, count in reasons]
    phase.reasons += [f"{count} × (server log) {text}" for text, count in logged]
    phase.api_calls = calls
    phase.mirrored = mirrored
    phase.server_cpu_e2e = result.server_cpu
    phase.sandbox_cpu = sandbox_cpu
    return phase


def measure_stripeline(
    backend: str,
    round_no: int,
    args: argparse.Namespace,
    objects: dict[str, list[tuple[str, str]]],
) -> Phase:
    run = f"sl{round_no}{int(time.time()) % 100000:05d}"
    path = "/webhooks/stripe"
    with common.scratch_database(backend, args.postgres_url) as url:
        common.migrated(url)
        server = ingest.start_stripeline(url, worker=True)
        try:
            warm = bodies(args.warmup, run=run, start=0, objects=objects)
            ingest.run_load(server, requests(server.port, path, warm), args.max_seconds)
            # Let the worker finish the warm-up before the clock starts.
            waited = time.perf_counter()
            while ingest.processed_rows(url) < args.warmup:
                if time.perf_counter() - waited > args.max_seconds:
                    break
                time.sleep(0.05)
            payloads = bodies(args.events, run=run, start=args.warmup, objects=objects)
            cpu = server.cpu_seconds()
            result = ingest.run_load(
                server, requests(server.port, path, payloads), args.max_seconds
            )
            # End to end, as bench/ingest.py: from the first POST until the
            # worker applied the last event.
            waited = time.perf_counter()
            while ingest.processed_rows(url) < args.warmup + result.ok:
                if time.perf_counter() - waited > args.max_seconds:
                    break
                time.sleep(0.05)
            end_to_end = result.seconds + time.perf_counter() - waited
            cpu = server.cpu_seconds() - cpu
            rss = server.peak_rss_mb()
        finally:
            server.stop()
        processed = ingest.processed_rows(url) - args.warmup
        failed = ingest.count_rows(url, "stripeline_events WHERE status IN ('failed', 'dead')")
    phase = Phase(
        backend, "stripeline+worker", round_no, result, processed, failed, end_to_end, rss
    )
    phase.server_cpu_e2e = cpu
    return phase


def show(phase: Phase) -> None:
    s = phase.summary()
    print(
        f"  {s['backend']:10} {s['app']:18} round {s['round']}: {s['events_per_s']:8.1f} ev/s  "
        f"p50 {s['p50_ms']:7.2f} ms  p99 {s['p99_ms']:8.2f} ms  2xx {s['ok']} other "
        f"{s['non_2xx']} {s['statuses']}  processed {s['processed']} failed "
        f"{s['processing_errors']}  end to end {s['end_to_end_s']} s  "
        f"server cpu {s['server_cpu_e2e_ms_per_event']} ms/ev  peak RSS {s['peak_rss_mb']} MB"
        + (
            f"  Stripe API calls {s['stripe_api_calls_per_event']}/ev, sandbox cpu "
            f"{s['sandbox_cpu_ms_per_event']} ms/ev"
            if phase.api_calls
            else ""
        ),
        flush=True,
    )
    if phase.mirrored:
        print(f"    dj-stripe rows: {phase.mirrored}", flush=True)
    for reason in phase.reasons:
        print(f"    !! {reason}", flush=True)


def report(phases: list[Phase]) -> list[dict[str, Any]]:
    print(
        "\nEnd to end (16 keep-alive connections, ~3 KB signed events; first POST to last applied)"
    )
    print(
        f"{'backend':10} {'app':18} {'round':>5} {'events/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'2xx':>6} {'other':>6} {'failed':>6} {'e2e s':>7} {'e2e ev/s':>9}"
    )
    rows = []
    for phase in phases:
        s = phase.summary()
        rows.append(s)
        print(
            f"{s['backend']:10} {s['app']:18} {s['round']:5} {s['events_per_s']:9.0f} "
            f"{s['p50_ms']:8.2f} {s['p99_ms']:8.2f} {s['ok']:6} {s['non_2xx']:6} "
            f"{s['processing_errors']:6} {s['end_to_end_s']:7.2f} "
            f"{s['end_to_end_events_per_s']:9.0f}"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000, help="measured events per run")
    parser.add_argument("--warmup", type=int, default=200, help="warm-up events per run")
    parser.add_argument("--rounds", type=int, default=1, help="dj-stripe/stripeline pairs")
    parser.add_argument("--objects", type=int, default=50, help="seeded objects of each kind")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="cap per load phase")
    parser.add_argument(
        "--backend", choices=["sqlite", "postgres", "both"], default="both", help="databases"
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("STRIPELINE_TEST_POSTGRES_URL", common.DEFAULT_POSTGRES_URL),
        help="a PostgreSQL server to create scratch databases on",
    )
    parser.add_argument("--fresh-venv", action="store_true", help="reinstall dj-stripe")
    parser.add_argument("--pip-timeout", type=float, default=600.0, help="cap on the install")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]

    info = common.machine(args.postgres_url if "postgres" in backends else None)
    common.print_machine(info)
    python, how = venv_python(args.fresh_venv, args.pip_timeout)
    if python is None:
        print(f"dj-stripe: SKIPPED, {how}; stripeline alone follows", flush=True)
    else:
        print(f"dj-stripe {DJSTRIPE_VERSION}: scratch venv {how}", flush=True)
    print(
        f"end to end: {args.events} events per run (+{args.warmup} warm-up), "
        f"{ingest.CONNECTIONS} connections, {args.rounds} round(s), "
        f"{args.objects} seeded objects of each kind",
        flush=True,
    )
    sandbox = start_sandbox()
    phases: list[Phase] = []
    try:
        objects = seed(f"http://127.0.0.1:{sandbox.port}", args.objects)
        for backend in backends:
            for round_no in range(1, args.rounds + 1):
                order = ["dj-stripe", "stripeline"]
                if round_no % 2 == 0:
                    order.reverse()
                for app in order:
                    if app == "stripeline":
                        phase = measure_stripeline(backend, round_no, args, objects)
                    elif python is not None:
                        phase = measure_djstripe(backend, round_no, args, python, sandbox, objects)
                    else:
                        continue
                    show(phase)
                    phases.append(phase)
    finally:
        sandbox.stop()
    rows = report(phases)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {
                    "machine": info,
                    "djstripe": {"version": DJSTRIPE_VERSION, "venv": how},
                    "results": rows,
                },
                fh,
                indent=2,
            )


if __name__ == "__main__":
    main()
