"""Suite "secrets": no key, webhook secret or password in anything stripeline says.

The suite makes fresh secrets for the run: a test secret key (``sk_test_``
and 32 random characters; the sandbox accepts any well-formed key as an
account of its own), a webhook secret and a Connect webhook secret
(``whsec_`` and 32), and a database password. With them configured it runs
``stripeline serve`` (with the sandbox as the API, debug logging, mirror
re-fetches and catch-up on), then again with the console log format and a
separate ``stripeline worker`` (on PostgreSQL when
``STRIPELINE_TEST_POSTGRES_URL`` is set), and sends:

- valid events, some whose handler fails, some whose handler calls the API
  and fails (an unknown object, and errors the sandbox is told to answer),
  some whose mirror re-fetch fails the same way;
- invalid ones: wrong, stale, garbled and missing signatures, bodies over
  the limit, wrong methods and paths, to both webhook endpoints;
- hostile ones carrying the secrets themselves: the key in an
  ``Authorization`` header and in a body, the webhook secret in the
  ``Stripe-Signature`` header (as a misconfigured client or proxy might);
- ``GET /metrics``, ``/healthz`` and ``/readyz``.

It then runs the CLI: ``doctor``, ``events list``, ``events show`` (and
``--json``), ``events retry`` and ``replay``, ``events refetches``,
``verify`` and ``sync events`` against the sandbox (one of each while the
sandbox answers errors), and misconfigured runs that must fail: a key with
a typo, a key with junk after it, a webhook secret without its prefix, a
mode that contradicts the key, an unreachable database whose URL holds the
password, for ``serve``, ``worker``, ``migrate`` and ``doctor``.

Everything is captured: every line the processes wrote (stdout and stderr),
every answer (status line, headers and body) and every CLI output. The
criterion, for each secret: none of its 8-character runs (but the public
prefix ``sk_test_`` or ``whsec_``, which ``doctor`` shows on purpose), nor its
last 6 characters (a masked ``sk_test_****abcdef``), appears anywhere. The
logs the other suites of the same ``proof/run.py`` run left behind are
searched for the fixed secrets they use.

    python proof/secret_leaks.py [--short]
"""

from __future__ import annotations

import os
import secrets as random_secrets
import socket
import string
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import _common as common

from stripeline.core.signature import sign

ALPHABET = string.ascii_letters + string.digits
#: The misconfigurations the short form also gives ``worker`` and ``migrate``
#: (the full form gives them all four commands).
SHORT_ALL_COMMANDS = ("a key with a typo", "an unreachable database with a password")
#: The shortest run of a secret's characters that counts as a leak.
RUN = 8
#: A masked secret that shows this many of its last characters counts too.
SUFFIX = 6


def random_part(n: int) -> str:
    return "".join(random_secrets.choice(ALPHABET) for _ in range(n))


@dataclass(frozen=True)
class Secret:
    name: str
    value: str
    public_prefix: str = ""

    def needles(self) -> set[str]:
        """The runs of the secret that must appear nowhere."""
        runs = {
            self.value[i : i + RUN]
            for i in range(len(self.value) - RUN + 1)
            if i + RUN > len(self.public_prefix)
        }
        return runs | {self.value[-SUFFIX:]}

    def found_in(self, text: str) -> list[str]:
        """Where the secret first shows in ``text`` (none or one), its context masked."""
        hits = [(text.find(n), n) for n in self.needles()]
        found = sorted((at, n) for at, n in hits if at >= 0)
        if not found:
            return []
        start, needle = found[0]
        context = text[max(0, start - 40) : start + len(needle) + 40]
        for _, n in found:
            context = context.replace(n, "*" * len(n))
        return [context.replace("\n", " ")]


@dataclass
class Captured:
    """Everything stripeline said, by where it said it."""

    texts: list[tuple[str, str]]

    def add(self, source: str, text: str | bytes) -> None:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        self.texts.append((source, text))

    @property
    def size(self) -> int:
        return sum(len(t) for _, t in self.texts)


# -- talking to the server ----------------------------------------------------


def raw(port: int, request: bytes, timeout: float = 20) -> bytes:
    """Send ``request`` as is; the whole answer, headers included."""
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(request)
            while chunk := sock.recv(65536):
                data += chunk
        except OSError as exc:
            data += f"\n[{type(exc).__name__}]".encode()
    return data


def post(
    port: int,
    body: bytes,
    headers: dict[str, str],
    path: str = "/webhooks/stripe",
    method: str = "POST",
) -> bytes:
    head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    head.append(f"Content-Length: {len(body)}")
    return raw(port, ("\r\n".join(head) + "\r\n\r\n").encode() + body)


def event(event_id: str, customer: str, proof: str, n: int) -> bytes:
    body = {
        "id": event_id,
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": int(time.time()) - 100 + n,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": "customer.updated",
        "data": {
            "object": {
                "id": customer,
                "object": "customer",
                "email": f"secrets{n}@example.com",
                "metadata": {"proof": proof},
            }
        },
    }
    encoded: bytes = common._bench.encode(body)
    return encoded


def traffic(
    port: int, run: str, customers: list[str], whsec: str, connect_whsec: str, key: str
) -> list[tuple[str, bytes]]:
    """Valid, invalid and hostile requests; each answer, named."""
    out: list[tuple[str, bytes]] = []
    now = int(time.time())

    def signed(body: bytes, secret: str = whsec, at: int = now) -> str:
        return sign(body, secret, timestamp=at)

    n = 0
    for proof in ["ok", "fail", "api"]:
        for customer in [*customers, f"cus_unknown{run}"]:
            n += 1
            body = event(f"evt_{proof}_{run}_{n:03d}", customer, proof, n)
            out.append(
                (
                    f"valid event ({proof})",
                    post(
                        port,
                        body,
                        {"Stripe-Signature": signed(body), "Content-Type": "application/json"},
                    ),
                )
            )
    body = event(f"evt_bad_{run}", customers[0], "ok", 0)
    wrong = "whsec_" + random_part(32)
    cases: list[tuple[str, bytes, dict[str, str], str, str]] = [
        ("wrong secret", body, {"Stripe-Signature": signed(body, wrong)}, "/webhooks/stripe", "POST"),
        ("stale", body, {"Stripe-Signature": signed(body, at=now - 10_000)}, "/webhooks/stripe", "POST"),
        ("no signature", body, {}, "/webhooks/stripe", "POST"),
        ("garbled signature", body, {"Stripe-Signature": "t=abc,v1=zz"}, "/webhooks/stripe", "POST"),
        ("the webhook secret as the signature", body, {"Stripe-Signature": f"t={now},v1={whsec}"}, "/webhooks/stripe", "POST"),
        ("the webhook secret as a header", body, {"Stripe-Signature": whsec}, "/webhooks/stripe", "POST"),
        ("the key in Authorization", body, {"Authorization": f"Bearer {key}", "Stripe-Signature": signed(body, wrong)}, "/webhooks/stripe", "POST"),
        ("the key in the body, unsigned", body.replace(b"secrets0@", key.encode() + b"@"), {"Stripe-Signature": "t=1,v1=00"}, "/webhooks/stripe", "POST"),
        ("the key in the body, not JSON", b"key=" + key.encode(), {"Stripe-Signature": signed(b"key=" + key.encode())}, "/webhooks/stripe", "POST"),
        ("connect: wrong secret", body, {"Stripe-Signature": signed(body, wrong)}, "/webhooks/stripe/connect", "POST"),
        ("connect: the secret as the signature", body, {"Stripe-Signature": f"t={now},v1={connect_whsec}"}, "/webhooks/stripe/connect", "POST"),
        ("over the limit", b"x" * (3 * 1024 * 1024), {"Stripe-Signature": signed(body)}, "/webhooks/stripe", "POST"),
        ("wrong method", body, {"Stripe-Signature": signed(body)}, "/webhooks/stripe", "PUT"),
        ("wrong path", body, {"Stripe-Signature": signed(body), "Authorization": f"Bearer {key}"}, "/webhooks/strip", "POST"),
    ]  # fmt: skip
    for name, case_body, headers, path, method in cases:
        out.append((name, post(port, case_body, headers, path, method)))
    for path in ["/healthz", "/readyz", "/metrics", f"/metrics?key={key}", "/nowhere"]:
        out.append(
            (
                f"GET {path.split('?')[0]}",
                raw(
                    port,
                    f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode(),
                ),
            )
        )
    return out


def settled(url: str, timeout: float) -> bool:
    """Every event processed, dead or ignored (none waiting for a retry)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = common.query(
            url,
            "SELECT count(*) FROM stripeline_events "
            "WHERE status IN ('pending', 'processing', 'failed')",
        )[0][0]
        if left == 0:
            return True
        time.sleep(0.3)
    return False


# -- the CLI ------------------------------------------------------------------


def cli(captured: Captured, name: str, args: list[str], env: dict[str, str]) -> int:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "STRIPELINE_"))}
    base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(common.HERE), base.get("PYTHONPATH")]))
    try:
        done = subprocess.run(  # noqa: S603 - our own interpreter and arguments
            [sys.executable, "-c", "from stripeline.cli import main; main()", *args],
            env=base | env,
            capture_output=True,
            check=False,
            timeout=60,
        )
    except subprocess.TimeoutExpired as exc:
        captured.add(
            f"`stripeline {' '.join(args)}` ({name}), timed out",
            (exc.stdout or b"") + (exc.stderr or b""),
        )
        return -1
    captured.add(
        f"`stripeline {' '.join(args)}` ({name}), exit {done.returncode}", done.stdout + done.stderr
    )
    return done.returncode


# -- the run ------------------------------------------------------------------


@contextmanager
def serving(
    url: str,
    work: Path,
    env: dict[str, str],
    api: str,
    key: str,
    separate_worker: bool,
) -> Iterator[tuple[common.Server, subprocess.Popen[bytes] | None, Path | None]]:
    server = common.start_serve(
        url,
        work,
        worker=not separate_worker,
        app="proof_app:secrets_app",
        api_key=key,
        api_base=api,
        extra_env=env,
    )
    worker = None
    worker_log = None
    try:
        if separate_worker:
            worker_log = work / f"secrets-worker-{server.port}.log"
            base = {
                k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "STRIPELINE_"))
            }
            base |= {
                "STRIPE_SECRET_KEY": key,
                "STRIPELINE_DATABASE_URL": url,
                "STRIPELINE_STRIPE_API_BASE": api,
                "PYTHONPATH": str(common.HERE),
            }
            with open(worker_log, "wb") as out:
                worker = subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        "from stripeline.cli import main; main()",
                        "worker",
                        "--app",
                        "proof_app:secrets_app",
                    ],
                    env=base | env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
        yield server, worker, worker_log
    finally:
        server.stop()
        if worker is not None:
            worker.terminate()
            worker.wait(30)


def run(short: bool, work: Path) -> common.SuiteResult:
    import stripe

    from stripeline_sandbox import Sandbox

    started = time.monotonic()
    run_id = random_part(6).lower()
    key = Secret("the secret key", "sk_test_" + random_part(32), "sk_test_")
    whsec = Secret("the webhook secret", "whsec_" + random_part(32), "whsec_")
    connect = Secret("the Connect webhook secret", "whsec_" + random_part(32), "whsec_")
    password = Secret("the database password", random_part(24))
    watched = [key, whsec, connect, password]
    captured = Captured([])
    passes = [("sqlite", "json", False)]
    if not short:
        passes.append(("postgresql" if common.postgres_url() else "sqlite", "console", True))
    statuses: dict[str, int] = {}
    exits: dict[str, int] = {}
    settled_ok = True
    with Sandbox(secret_key=key.value) as sandbox:
        client = stripe.StripeClient(key.value, base_addresses={"api": sandbox.url})
        customers = [
            client.v1.customers.create({"email": f"s{i}@example.com"}).id for i in range(2)
        ]
        env = {
            "STRIPE_WEBHOOK_SECRET": whsec.value,
            "STRIPE_CONNECT_WEBHOOK_SECRET": connect.value,
            "STRIPELINE_LOG_LEVEL": "debug",
            "STRIPELINE_MIRROR_POLICIES": "customer=refetch",
            "STRIPELINE_MIRROR_COALESCE_SECONDS": "0",
            "STRIPELINE_CATCH_UP_INTERVAL": "1",
            "STRIPELINE_RETRY_SCHEDULE": "0,1",
            "STRIPELINE_MAX_ATTEMPTS": "2",
        }
        for n, (backend, fmt, separate) in enumerate(passes):
            with common.scratch_database(backend) as url:
                good = {
                    **env,
                    "STRIPE_SECRET_KEY": key.value,
                    "STRIPELINE_DATABASE_URL": url,
                    "STRIPELINE_STRIPE_API_BASE": sandbox.url,
                }
                # The API answers errors for a while: re-fetches, the
                # handler's own calls and catch-up fail, and are logged.
                sandbox.inject_fault("api_error", count=8 if short else 20, key=key.value)
                pass_env = env | {"STRIPELINE_LOG_FORMAT": fmt}
                with serving(url, work, pass_env, sandbox.url, key.value, separate) as (
                    server,
                    _,
                    worker_log,
                ):
                    for name, answer in traffic(
                        server.port,
                        f"{run_id}{n}",
                        customers,
                        whsec.value,
                        connect.value,
                        key.value,
                    ):
                        status = (
                            answer.split(b" ", 2)[1].decode()
                            if answer.startswith(b"HTTP/")
                            else "none"
                        )
                        statuses[f"{name}: {status}"] = statuses.get(f"{name}: {status}", 0) + 1
                        captured.add(f"answer to {name}", answer)
                    settled_ok &= settled(url, 60)
                    time.sleep(1.5)  # a catch-up round or two
                    # The CLI while the server runs.
                    ids = [
                        r[0]
                        for r in common.query(url, "SELECT id FROM stripeline_events ORDER BY id")
                    ]
                    dead = [
                        r[0]
                        for r in common.query(
                            url, "SELECT id FROM stripeline_events WHERE status = 'dead'"
                        )
                    ]
                    runs: list[tuple[str, list[str]]] = [
                        ("doctor", ["doctor"]),
                        ("events list", ["events", "list"]),
                        ("events list --json", ["events", "list", "--json"]),
                        ("events list dead", ["events", "list", "--status", "dead"]),
                        ("events show", ["events", "show", ids[0]]),
                        ("events show --json", ["events", "show", ids[-1], "--json"]),
                        ("events show unknown", ["events", "show", "evt_nowhere"]),
                        ("events refetches", ["events", "refetches"]),
                        ("events refetches --json", ["events", "refetches", "--json"]),
                        ("verify", ["verify", "customers"]),
                        ("sync events", ["sync", "events"]),
                    ]
                    if dead:
                        runs += [
                            ("events show dead", ["events", "show", dead[0]]),
                            ("events retry", ["events", "retry", dead[0]]),
                        ]
                    runs.append(("events replay", ["events", "replay", ids[0]]))
                    for name, args in runs:
                        exits[name] = cli(
                            captured, name, args, good | {"STRIPELINE_LOG_FORMAT": fmt}
                        )
                    sandbox.inject_fault("api_error", count=50, key=key.value)
                    exits["verify while the API fails"] = cli(
                        captured, "verify while the API fails", ["verify", "customers"], good
                    )
                    exits["sync while the API fails"] = cli(
                        captured, "sync while the API fails", ["sync", "events"], good
                    )
                    sandbox.clear_faults(key=key.value)
                    settled_ok &= settled(url, 60)
                captured.add(f"serve log ({backend}, {fmt})", server.log.read_bytes())
                if worker_log is not None:
                    captured.add(f"worker log ({backend}, {fmt})", worker_log.read_bytes())
                if n == 0:
                    bad_url = f"postgresql://stripeline:{password.value}@127.0.0.1:1/nowhere"
                    typo = key.value.replace("sk_test_", "sk_tset_")
                    misconfigured: list[tuple[str, dict[str, str]]] = [
                        ("a key with a typo", good | {"STRIPE_SECRET_KEY": typo}),
                        ("a key with junk after it", good | {"STRIPE_SECRET_KEY": key.value + " x"}),
                        ("a key without its prefix", good | {"STRIPE_SECRET_KEY": key.value.removeprefix("sk_test_")}),
                        ("a webhook secret without its prefix", good | {"STRIPE_WEBHOOK_SECRET": whsec.value.removeprefix("whsec_")}),
                        ("two webhook secrets, one malformed", good | {"STRIPE_WEBHOOK_SECRET": f"{whsec.value},{connect.value}x!"}),
                        ("live mode with a test key", good | {"STRIPELINE_MODE": "live"}),
                        ("an unreachable database with a password", good | {"STRIPELINE_DATABASE_URL": bad_url}),
                        ("a malformed database URL with a password", good | {"STRIPELINE_DATABASE_URL": f"postgres:/stripeline:{password.value}@@/"}),
                    ]  # fmt: skip
                    for what, bad in misconfigured:
                        commands = [["serve", "--port", str(common.free_port())], ["doctor"]]
                        if not short or what in SHORT_ALL_COMMANDS:
                            commands += [["worker"], ["migrate"]]
                        for command in commands:
                            name = f"{command[0]} with {what}"
                            exits[name] = cli(captured, name, command, bad)
    others = other_suites_logs(work)
    figures = [
        ("server runs", ", ".join(f"{b} ({f} logs{', separate worker' if s else ''})" for b, f, s in passes)),
        ("answers captured", f"{sum(statuses.values())}: " + "; ".join(f"{k} × {v}" for k, v in sorted(statuses.items()))),
        ("CLI runs captured", f"{len(exits)}; exit codes " + ", ".join(f"{c}: {sum(1 for v in exits.values() if v == c)}" for c in sorted(set(exits.values())))),
        ("text searched", f"{len(captured.texts)} captures, {captured.size:,} characters; "
         f"{sum(t.count(chr(10)) for s, t in captured.texts if 'log' in s):,} log lines"),
        ("other suites' logs searched", f"{len(others)} files" + (f" ({', '.join(sorted({p.parent.name for p, _ in others}))})" if others else "")),
    ]  # fmt: skip
    criteria = []
    for secret in watched:
        where = [(source, hit) for source, text in captured.texts for hit in secret.found_in(text)]
        figures.append(
            (
                f"{secret.name}: found in",
                f"{len(where)} captures" + "".join(f"; in {s}: …{h}…" for s, h in where[:5]),
            )
        )
        criteria.append(
            common.Criterion(
                f"{secret.name} appears nowhere (no {RUN}-character run, no masked last {SUFFIX})",
                not where,
                f"in {len(where)} captures"
                + (f", first {where[0][0]}" if where else "")
                + f" ({len(captured.texts)} captures)",
            )
        )
    fixed = [
        Secret("proof's webhook secret", common.SECRET, "whsec_"),
        Secret("proof's fake key", common.FAKE_KEY, "sk_test_"),
    ]
    leaked = [
        (p.name, s.name)
        for p, text in others
        for s in fixed
        if s.value in text or any(n in text for n in long_needles(s))
    ]
    criteria.append(
        common.Criterion(
            "the other suites' logs hold none of their secrets",
            not leaked,
            f"{len(leaked)} found in {len(others)} files"
            if others
            else "no other suite's logs in this run",
        )
    )
    misconfigured_ok = all(v not in (0, -1) for k, v in exits.items() if " with " in k)
    criteria.append(
        common.Criterion(
            "every misconfigured run refused (exit ≠ 0, no hang) and every event settled",
            misconfigured_ok and settled_ok,
            ", ".join(f"{k}: {v}" for k, v in exits.items() if " with " in k and v in (0, -1))
            or "all refused" + ("" if settled_ok else "; events left unsettled"),
        )
    )
    notes = [
        "The secrets are made for the run (random), so that a match cannot be chance; the "
        "public prefixes sk_test_ and whsec_ are not secret (doctor shows a key's on purpose).",
        "Not searched: the database itself (the inbox stores each event's payload as received).",
    ]
    return common.SuiteResult(
        "secrets", "Secrets", figures, criteria, notes, time.monotonic() - started
    )


def long_needles(secret: Secret) -> set[str]:
    """12-character runs of a fixed secret that are not one character repeated."""
    value = secret.value
    return {
        value[i : i + 12]
        for i in range(len(value) - 11)
        if i + 12 > len(secret.public_prefix) and len(set(value[i : i + 12])) > 1
    }


def other_suites_logs(work: Path) -> list[tuple[Path, str]]:
    """The files the other suites of this run left in their work directories."""
    found: list[tuple[Path, str]] = []
    parent = work.parent
    if not parent.name.startswith("stripeline-proof-"):
        return found
    for path in sorted(parent.rglob("*")):
        if path.is_file() and work not in path.parents and path.suffix in (".log", ".txt"):
            found.append((path, path.read_text(errors="replace")))
    return found


def main() -> None:
    common.suite_main(run, __doc__ or "", "the same (it takes under a minute)")


if __name__ == "__main__":
    main()
