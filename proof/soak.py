"""Suite "soak": a long run at half capacity, watching for slow leaks.

For each backend, a fresh ``stripeline serve`` first takes a short burst of
valid, distinct ~3 KB events from 16 connections; its capacity is the number
of events received *and processed* per second (the burst's events over the
time until the worker has processed them all). The suite then sends valid
events at half that rate, at an even pace (open loop: each request has its
due time, whether or not the previous ones were answered), for 30 minutes
(60 s in the short form), and samples the server processes every few seconds:
resident memory (``VmRSS``), open file descriptors and threads from
``/proc``, and the backlog (events ``pending``, ``processing`` or ``failed``)
from ``/metrics``. Each request's latency is kept with the window (one
minute; 10 s in the short form) it was sent in.

On SQLite: ``serve`` with its in-process worker. On PostgreSQL (full form
only, when ``STRIPELINE_TEST_POSTGRES_URL`` is set): ``serve --no-worker`` and
one ``stripeline worker`` process, both sampled.

Warm-up: the first 20 % of the run (caches, pools and the allocator reach
their working size). Criteria, after the warm-up:

- resident memory flat: the median of the last 10 % of the samples at most
  5 % above the median of the samples just after the warm-up (20 % to 30 %);
- open file descriptors flat: the same medians, at most 5 % (or 2
  descriptors, whichever is more) apart;
- p99 stable: no window's p99 above 3 times the median window's p99 (a
  window whose p99 is under 25 ms always passes);
- backlog bounded: never more than 10 seconds' worth of events (at least
  100) after the warm-up, and 0 again within 60 s of the end of the load;
- every request answered 2xx, every event answered 2xx stored and processed.

The short form (CI, a shared machine) relaxes what one minute cannot show:
memory within 20 %, descriptors within 10 % or 4, window p99 within 5 times
the median (under 100 ms always passes).

    python proof/soak.py [--short]
    PROOF_SOAK_SECONDS=300 python proof/soak.py    # another duration
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import _common as common
import httpx

from stripeline.core.signature import sign

CONNECTIONS = 16
WARM_UP = 0.2
#: Objects the events are about: later events update what earlier ones created.
OBJECTS = 5_000
BACKLOG_STATUSES = ("pending", "processing", "failed")


@dataclass(frozen=True)
class Form:
    seconds: float
    burst: float
    sample_every: float
    window: float
    rss_growth: float  # percent
    fd_growth: float  # percent
    fd_slack: int
    p99_factor: float
    p99_floor_ms: float


FULL = Form(1800, 20, 5, 60, 5, 5, 2, 3, 25)
SHORT = Form(60, 6, 2, 10, 20, 10, 4, 5, 100)


# -- load ---------------------------------------------------------------------


class Events:
    """Distinct valid events, signed when sent (the run outlasts the tolerance)."""

    def __init__(self, run: str) -> None:
        self.run = run
        self.n = 0

    def request(self, port: int) -> bytes:
        self.n += 1
        body: bytes = common._bench.encode(
            common._bench.make_event(self.n, run=self.run, objects=OBJECTS)
        )
        head = (
            f"POST /webhooks/stripe HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Content-Type: application/json\r\n"
            f"Stripe-Signature: {sign(body, common.SECRET, timestamp=int(time.time()))}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        return head + body


@dataclass
class Load:
    #: (seconds since the load started, latency in seconds) of each 2xx answer.
    answered: list[tuple[float, float]] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    #: The largest delay between a request's due time and its sending.
    max_lag: float = 0.0
    seconds: float = 0.0
    #: Requests claimed so far (the next one's index in the schedule).
    claimed: int = 0

    @property
    def ok(self) -> int:
        return len(self.answered)


async def _connection(
    port: int, events: Events, load: Load, t0: float, rate: float | None, end: float
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while True:
            index = load.claimed
            load.claimed += 1
            if rate is not None:
                due = t0 + index / rate
                if due >= end:
                    return
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                load.max_lag = max(load.max_lag, time.monotonic() - due)
            elif time.monotonic() >= end:
                return
            request = events.request(port)
            sent = time.monotonic()
            try:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
            except (OSError, asyncio.IncompleteReadError) as exc:
                load.errors.append(f"{type(exc).__name__}")
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                continue
            latency = time.monotonic() - sent
            status = int(head[9:12])
            load.statuses[status] = load.statuses.get(status, 0) + 1
            if 200 <= status < 300:
                load.answered.append((sent - t0, latency))
            if b"connection: close" in head.lower():
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def drive(port: int, events: Events, seconds: float, rate: float | None) -> Load:
    """Events for ``seconds``: as fast as 16 connections go, or ``rate`` per second."""

    async def main() -> Load:
        load = Load()
        t0 = time.monotonic()
        end = t0 + seconds
        await asyncio.gather(
            *(_connection(port, events, load, t0, rate, end) for _ in range(CONNECTIONS))
        )
        load.seconds = time.monotonic() - t0
        return load

    return asyncio.run(main())


# -- sampling -----------------------------------------------------------------


@dataclass
class Sample:
    at: float  # seconds since the load started
    rss_kib: dict[str, int]
    fds: dict[str, int]
    threads: dict[str, int]
    backlog: int | None


def proc_figures(pid: int) -> tuple[int, int, int]:
    """(VmRSS in KiB, open file descriptors, threads) of a live process."""
    rss = threads = 0
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd")), threads


def backlog(http: httpx.Client) -> int | None:
    """Events not yet processed, as ``/metrics`` reports them."""
    try:
        text = http.get("/metrics").text
    except httpx.HTTPError:
        return None
    total = 0
    for line in text.splitlines():
        if line.startswith("stripeline_queue_depth{"):
            status = line.split('status="', 1)[1].split('"', 1)[0]
            if status in BACKLOG_STATUSES:
                total += int(float(line.rsplit(" ", 1)[1]))
    return total


class Sampler(threading.Thread):
    def __init__(self, port: int, pids: dict[str, int], every: float) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.port = port
        self.pids = pids
        self.every = every
        self.samples: list[Sample] = []
        self.stop = threading.Event()
        self.t0 = time.monotonic()

    def one(self, http: httpx.Client) -> None:
        rss: dict[str, int] = {}
        fds: dict[str, int] = {}
        threads: dict[str, int] = {}
        for name, pid in self.pids.items():
            with contextlib.suppress(OSError):
                rss[name], fds[name], threads[name] = proc_figures(pid)
        at = time.monotonic() - self.t0
        self.samples.append(Sample(at, rss, fds, threads, backlog(http)))

    def run(self) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30) as http:
            while not self.stop.is_set():
                self.one(http)
                self.stop.wait(self.every)


# -- judging ------------------------------------------------------------------


def flatness(values: list[tuple[float, float]], seconds: float) -> tuple[float, float, float]:
    """(median just after the warm-up, median of the last 10 %, growth in %)
    of ``(at, value)`` samples of a run of ``seconds``."""
    after = [v for at, v in values if WARM_UP * seconds <= at < (WARM_UP + 0.1) * seconds]
    last = [v for at, v in values if 0.9 * seconds <= at <= seconds]
    if not after or not last:
        return float("nan"), float("nan"), float("nan")
    base, end = statistics.median(after), statistics.median(last)
    return base, end, (end - base) / base * 100 if base else float("nan")


def slope_per_hour(values: list[tuple[float, float]], seconds: float) -> float:
    """Least-squares slope of the samples after the warm-up, per hour."""
    points = [(at, v) for at, v in values if at >= WARM_UP * seconds]
    if len(points) < 3:
        return float("nan")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return statistics.linear_regression(xs, ys).slope * 3600


def windows(load: Load, width: float, seconds: float) -> list[tuple[float, int, float]]:
    """(start, requests, p99 in ms) of each full window of the run."""
    out = []
    start = 0.0
    while start + width <= seconds + 1e-6:
        lat = [lat for at, lat in load.answered if start <= at < start + width]
        if lat:
            out.append((start, len(lat), common.percentile(lat, 99) * 1000))
        start += width
    return out


# -- one backend --------------------------------------------------------------


def wait_drained(http: httpx.Client, timeout: float) -> float | None:
    """Seconds until the backlog is 0 (None: not within ``timeout``)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if backlog(http) == 0:
            return time.monotonic() - start
        time.sleep(0.2)
    return None


def start_worker(url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "STRIPELINE_"))}
    env |= {
        "STRIPE_SECRET_KEY": common.FAKE_KEY,
        "STRIPE_WEBHOOK_SECRET": common.SECRET,
        "STRIPELINE_DATABASE_URL": url,
        "STRIPELINE_STRIPE_API_BASE": "http://127.0.0.1:9",
        "STRIPELINE_LOG_LEVEL": "warning",
        "STRIPELINE_LOG_FORMAT": "json",
    }
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-c", "from stripeline.cli import main; main()", "worker"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def run_backend(
    backend: str, form: Form, seconds: float, work: Path
) -> tuple[list[tuple[str, str]], list[common.Criterion]]:
    label = "SQLite (serve, in-process worker)" if backend == "sqlite" else "PostgreSQL"
    worker_proc: subprocess.Popen[bytes] | None = None
    with common.scratch_database(backend) as url:
        server = common.start_serve(url, work, worker=backend == "sqlite")
        try:
            pids = {"serve": server.proc.pid}
            if backend != "sqlite":
                label = "PostgreSQL (serve + 1 worker)"
                worker_proc = start_worker(url, work / "soak-worker.log")
                pids["worker"] = worker_proc.pid
            http = httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=30)
            events = Events(f"soak{backend[:2]}{int(time.time()) % 100_000}")
            # Capacity: a burst, then the time until all of it is processed.
            burst = drive(server.port, events, form.burst, None)
            drained_in = wait_drained(http, 300)
            total = burst.seconds + (drained_in if drained_in is not None else 300)
            capacity = burst.ok / total
            received = burst.ok / burst.seconds
            rate = capacity / 2
            time.sleep(2)
            sampler = Sampler(server.port, pids, form.sample_every)
            sampler.start()
            load = drive(server.port, events, seconds, rate)
            sampler.stop.set()
            sampler.join()
            drain = wait_drained(http, 60)
            end_sample = Sampler(server.port, pids, 0)
            end_sample.one(http)
            http.close()
            alive = server.proc.poll() is None and (
                worker_proc is None or worker_proc.poll() is None
            )
        finally:
            server.stop()
            if worker_proc is not None:
                worker_proc.terminate()
                worker_proc.wait(30)
        stored, processed = common.query(
            url,
            "SELECT count(*), sum(CASE WHEN status = 'processed' THEN 1 ELSE 0 END) "
            "FROM stripeline_events",
        )[0]
    logs = server.log.read_text(errors="replace")
    if worker_proc is not None:
        logs += (work / "soak-worker.log").read_text(errors="replace")
    tracebacks = logs.count("Traceback (most recent call last)")
    samples = sampler.samples
    not_ok = sum(n for s, n in load.statuses.items() if not 200 <= s < 300)
    expected = burst.ok + load.ok
    figures: list[tuple[str, str]] = [
        (
            f"{label}: capacity",
            f"{capacity:.0f} events/s received and processed ({burst.ok:,} events: received in "
            f"{burst.seconds:.1f} s at {received:.0f}/s from {CONNECTIONS} connections, all "
            f"processed {drained_in if drained_in is not None else float('nan'):.1f} s later)",
        ),
        (
            f"{label}: load",
            f"{load.ok:,} events in {load.seconds:.0f} s at {load.ok / load.seconds:.1f}/s "
            f"(target {rate:.1f}/s, half the capacity); statuses {dict(sorted(load.statuses.items()))}; "
            f"{len(load.errors)} connection errors; sender lag at most {load.max_lag * 1000:.0f} ms",
        ),
    ]
    criteria: list[common.Criterion] = []
    for name in pids:
        rss = [(s.at, s.rss_kib[name] / 1024) for s in samples if name in s.rss_kib]
        fds = [(s.at, float(s.fds[name])) for s in samples if name in s.fds]
        threads = [s.threads[name] for s in samples if name in s.threads]
        r_base, r_end, r_growth = flatness(rss, seconds)
        f_base, f_end, _ = flatness(fds, seconds)
        peak = max((v for _, v in rss), default=float("nan"))
        fd_allowed = max(f_base * form.fd_growth / 100, form.fd_slack)
        figures += [
            (
                f"{label}: {name} VmRSS",
                f"{rss[0][1]:.1f} MiB at the start, {r_base:.1f} MiB after the warm-up, "
                f"{r_end:.1f} MiB at the end ({r_growth:+.1f} %), peak {peak:.1f} MiB; "
                f"trend after the warm-up {slope_per_hour(rss, seconds):+.1f} MiB/h",
            ),
            (
                f"{label}: {name} open file descriptors",
                f"{fds[0][1]:.0f} at the start, {f_base:.0f} after the warm-up, {f_end:.0f} at "
                f"the end, {max(v for _, v in fds):.0f} at most; "
                f"{end_sample.samples[0].fds.get(name, '?')} once drained",
            ),
            (
                f"{label}: {name} threads",
                f"{min(threads)} to {max(threads)}",
            ),
        ]
        criteria += [
            common.Criterion(
                f"{label}: {name} memory flat after the warm-up "
                f"(VmRSS growth < {form.rss_growth:g} %)",
                r_growth < form.rss_growth,
                f"{r_base:.1f} → {r_end:.1f} MiB ({r_growth:+.1f} %)",
            ),
            common.Criterion(
                f"{label}: {name} file descriptors flat after the warm-up "
                f"(growth ≤ {form.fd_growth:g} % or {form.fd_slack})",
                f_end - f_base <= fd_allowed,
                f"{f_base:.0f} → {f_end:.0f}",
            ),
        ]
    per_window = windows(load, form.window, seconds)
    p99s = [p for _, _, p in per_window]
    median_p99 = statistics.median(p99s) if p99s else float("nan")
    worst = max(per_window, key=lambda w: w[2]) if per_window else (0.0, 0, float("nan"))
    limit = max(form.p99_factor * median_p99, form.p99_floor_ms)
    all_lat = [lat for _, lat in load.answered]
    backlogs = [(s.at, s.backlog) for s in samples if s.backlog is not None]
    after = [b for at, b in backlogs if at >= WARM_UP * seconds]
    bound = max(100, int(10 * rate))
    figures += [
        (
            f"{label}: latency",
            f"p50 {common.percentile(all_lat, 50) * 1000:.1f} ms, "
            f"p99 {common.percentile(all_lat, 99) * 1000:.1f} ms, "
            f"max {max(all_lat, default=float('nan')) * 1000:.0f} ms over the run",
        ),
        (
            f"{label}: p99 per {form.window:g} s window",
            f"{len(per_window)} windows: median {median_p99:.1f} ms, lowest {min(p99s, default=float('nan')):.1f} ms, "
            f"highest {worst[2]:.1f} ms (from {worst[0]:.0f} s)",
        ),
        (
            f"{label}: backlog",
            f"after the warm-up: median {statistics.median(after) if after else float('nan'):.0f}, "
            f"max {max(after, default=0)} (bound {bound}); {len(backlogs)} samples "
            f"({len(samples) - len(backlogs)} unreadable); drained "
            + (f"{drain:.1f} s after the load" if drain is not None else "not within 60 s"),
        ),
        (
            f"{label}: events",
            f"{stored:,} stored, {processed or 0:,} processed, of {expected:,} answered 2xx; "
            f"{tracebacks} tracebacks in the logs",
        ),
    ]
    criteria += [
        common.Criterion(
            f"{label}: p99 stable (no {form.window:g} s window above "
            f"{form.p99_factor:g}× the median window's, or {form.p99_floor_ms:g} ms)",
            bool(p99s) and worst[2] <= limit,
            f"highest {worst[2]:.1f} ms vs median {median_p99:.1f} ms",
        ),
        common.Criterion(
            f"{label}: backlog bounded (≤ 10 s of events after the warm-up, "
            "drained within 60 s of the end)",
            bool(after) and max(after) <= bound and drain is not None,
            f"max {max(after, default=0)} of {bound}; drained "
            + (f"in {drain:.1f} s" if drain is not None else "no"),
        ),
        common.Criterion(
            f"{label}: every request answered 2xx, every event stored and processed",
            alive
            and not_ok == 0
            and not load.errors
            and stored == expected
            and (processed or 0) == expected,
            f"{not_ok} not 2xx, {len(load.errors)} errors, {stored:,} stored and "
            f"{processed or 0:,} processed of {expected:,}",
        ),
    ]
    return figures, criteria


def run(short: bool, work: Path) -> common.SuiteResult:
    started = time.monotonic()
    form = SHORT if short else FULL
    seconds = float(os.environ.get("PROOF_SOAK_SECONDS") or form.seconds)
    backends = ["sqlite"] + (["postgresql"] if common.postgres_url() and not short else [])
    figures: list[tuple[str, str]] = []
    criteria: list[common.Criterion] = []
    for backend in backends:
        f, c = run_backend(backend, form, seconds, work)
        figures += f
        criteria += c
    notes = [
        f"{seconds:.0f} s per backend; warm-up the first {WARM_UP:.0%}; samples every "
        f"{form.sample_every:g} s; latency from a request's sending to its answer, "
        "per window of its sending.",
        "The load generator, the sampler and the server share the machine's cores; on a shared "
        "machine other work moves the latency too.",
    ]
    if short:
        notes.append(
            "Short form: SQLite only, and the flatness bounds relaxed (memory 20 %, descriptors "
            "10 % or 4, window p99 5× the median or under 100 ms): one minute shows a gross "
            "leak, not a slow one."
        )
    elif "postgresql" not in backends:
        notes.append("PostgreSQL not run: STRIPELINE_TEST_POSTGRES_URL is not set.")
    return common.SuiteResult(
        "soak", "Soak: half capacity", figures, criteria, notes, time.monotonic() - started
    )


def main() -> None:
    common.suite_main(run, __doc__ or "", "60 s instead of 30 minutes")


if __name__ == "__main__":
    main()
