"""Suite "database outage": the database goes away in the middle of a load,
and comes back, while senders deliver signed events the way Stripe does (any
answer but a 2xx, or none, is sent again after a pause).

PostgreSQL: the suite runs a cluster of its own (``initdb`` into a temporary
directory with the machine's PostgreSQL binaries, on a free port of
127.0.0.1; as root, as the ``postgres`` user through ``runuser``), serves it
with ``stripeline serve --no-worker`` and one ``stripeline worker``, and stops
it as a crash would (``pg_ctl stop -m immediate``) for 20 seconds (5 in the
short form) mid-load, then starts it again.

SQLite (``stripeline serve`` with its in-process worker): the database's
directory and files made immutable (``chattr +i``: as root, a read-only mode
does not stop writes, and a process that has the file open keeps writing
whatever its mode), then writable again; and, on a database in a small tmpfs,
a full disk (a file that takes every free byte), then the space freed. Each
fault needs root (``mount``, ``chattr``); without it the scenario is skipped,
with the reason in the report.

Criteria, for each fault: every answer while the database is away is a 503
with ``Retry-After`` (or a 2xx for an event committed before); no event
answered 2xx is missing; nothing half-written (stored bodies byte for byte as
sent, SQLite's ``integrity_check``, one handler row per event); the web
process and the worker recover without a restart (the same processes answer
2xx and drain the inbox afterwards); and, the senders retrying, every event
stored and processed exactly once.

    python proof/outage.py [--short]
"""

from __future__ import annotations

import collections
import contextlib
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import _common as common

LEASE_SECONDS = 10
CONNECTIONS = 16


class Skip(Exception):
    """A scenario this machine cannot run: the reason goes to the report."""


# -- a PostgreSQL cluster of the suite's own ----------------------------------


def postgres_bindir() -> Path:
    candidates: list[str] = []
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        found = subprocess.run(
            ["pg_config", "--bindir"],  # noqa: S607 - pg_config from PATH
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        ).stdout.strip()
        if found:
            candidates.append(found)
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for directory in candidates:
        if (Path(directory) / "initdb").exists() and (Path(directory) / "pg_ctl").exists():
            return Path(directory)
    raise Skip("no PostgreSQL server binaries (initdb, pg_ctl) on this machine")


class Cluster:
    """A throwaway PostgreSQL cluster: started, stopped, started, removed."""

    def __init__(self, work: Path) -> None:
        self.bindir = postgres_bindir()
        self.as_user: list[str] = []
        owner: tuple[int, int] | None = None
        if os.geteuid() == 0:
            import pwd

            try:
                entry = pwd.getpwnam("postgres")
            except KeyError:
                raise Skip("running as root (initdb refuses) and no postgres user") from None
            if shutil.which("runuser") is None:
                raise Skip("running as root (initdb refuses) and no runuser")
            self.as_user = ["runuser", "-u", "postgres", "--"]
            owner = (entry.pw_uid, entry.pw_gid)
        # Outside the suite's directory, which only its owner may enter.
        self.root = Path(tempfile.mkdtemp(prefix="stripeline-proof-pg-"))
        if owner:
            os.chown(self.root, *owner)
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = common.free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.work = work

    def _run(self, *args: str, timeout: float = 120) -> None:
        done = subprocess.run(  # noqa: S603 - the machine's PostgreSQL binaries
            [*self.as_user, str(self.bindir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            cwd=self.root,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {(done.stderr or done.stdout).strip()[-500:]}")

    def create(self) -> None:
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
            "--no-sync",
        )  # fmt: skip
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                "unix_socket_directories = ''\nmax_connections = 60\nshared_buffers = 32MB\n"
            )
        self.start()

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self) -> None:
        """As a crash would: no checkpoint, every connection cut."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(Exception):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        with contextlib.suppress(OSError):
            shutil.copy(self.log, self.work / "postgres.log")
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def own_postgres(work: Path) -> Iterator[tuple[Cluster, str]]:
    """The cluster, and a migrated database in it."""
    cluster = Cluster(work)
    try:
        cluster.create()
        name = f"stripeline_proof_{uuid.uuid4().hex[:8]}"
        with common._pg_admin(cluster.url) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        url = cluster.url.rsplit("/", 1)[0] + "/" + name
        common.migrated(url)
        yield cluster, url
    finally:
        cluster.remove()


# -- SQLite faults ------------------------------------------------------------


def _root_only(what: str) -> None:
    if os.geteuid() != 0:
        raise Skip(f"not root: {what}")


def _check(args: list[str]) -> None:
    done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=30)  # noqa: S603
    if done.returncode != 0:
        raise Skip(f"`{' '.join(args[:2])}` refused: {(done.stderr or done.stdout).strip()[:200]}")


class Immutable:
    """The SQLite database's directory, file and WAL made immutable, then not.

    ``-shm`` is left alone: it is memory-mapped, and a write to an immutable
    mapping ends the process with SIGBUS, which is not the fault under test.
    """

    def __init__(self, directory: Path) -> None:
        _root_only(
            "chattr +i needs CAP_LINUX_IMMUTABLE, and a read-only mode stops neither "
            "root nor a process that has the file open"
        )
        if shutil.which("chattr") is None:
            raise Skip("no chattr on this machine")
        probe = directory / "probe"
        probe.write_text("")
        _check(["chattr", "+i", str(probe)])
        _check(["chattr", "-i", str(probe)])
        probe.unlink()
        self.directory = directory

    def paths(self) -> list[str]:
        files = [p for p in self.directory.iterdir() if not p.name.endswith("-shm")]
        return [str(p) for p in files] + [str(self.directory)]

    def apply(self) -> None:
        subprocess.run(["chattr", "+i", *self.paths()], check=True, timeout=30)  # noqa: S603, S607

    def undo(self) -> None:
        subprocess.run(["chattr", "-i", *self.paths()], check=False, timeout=30)  # noqa: S603, S607


class DiskFull:
    """A small tmpfs for the database; ``apply`` fills every free byte of it
    with a file, ``undo`` removes that file."""

    def __init__(self, mountpoint: Path, size_mb: int) -> None:
        _root_only("mounting a small filesystem needs root")
        if shutil.which("mount") is None:
            raise Skip("no mount on this machine")
        mountpoint.mkdir()
        _check(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", str(mountpoint)]
        )
        self.mountpoint = mountpoint
        self.filler = mountpoint / "filler"
        self.filled = 0

    def apply(self) -> None:
        chunk = b"\0" * (1 << 20)
        with open(self.filler, "wb", buffering=0) as fh:
            for size in (1 << 20, 4096, 512):
                chunk = b"\0" * size
                while True:
                    try:
                        self.filled += fh.write(chunk) or 0
                    except OSError:
                        break

    def undo(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.filler.unlink()

    def remove(self) -> None:
        self.undo()
        # On some machines the kernel keeps the mount busy for a while after
        # every process here let go of it (no descriptor, mapping or working
        # directory of any process names it): a lazy unmount then detaches it,
        # quietly; only a failure of that one is shown.
        plain = subprocess.run(  # noqa: S603
            ["umount", str(self.mountpoint)],  # noqa: S607
            check=False,
            capture_output=True,
        )
        if plain.returncode != 0:
            subprocess.run(["umount", "-l", str(self.mountpoint)], check=False)  # noqa: S603, S607


# -- one scenario -------------------------------------------------------------


@dataclass
class Timeline:
    fault_start: float = 0.0  # the fault is being applied
    fault_on: float = 0.0  # applied: the database is away
    undo_start: float = 0.0  # being removed (a server starting, a file deleted)
    fault_off: float = 0.0  # removed: the database is back
    readyz_during: str = ""


def readyz(port: int) -> str:
    import httpx

    try:
        r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
        checks = r.json().get("checks", {})
        bad = {k: v for k, v in checks.items() if v != "ok"}
        return f"{r.status_code} {bad}" if bad else str(r.status_code)
    except (httpx.HTTPError, ValueError) as exc:
        return f"no answer ({type(exc).__name__})"


def scenario(
    label: str,
    url: str,
    work: Path,
    events: list[tuple[str, bytes]],
    *,
    workers: int,
    apply: Callable[[], None],
    undo: Callable[[], None],
    before: float,
    during: float,
    rate: float,
) -> tuple[list[tuple[str, str]], list[common.Criterion]]:
    """Serve ``url`` under a paced load; ``apply`` the fault after ``before``
    seconds, ``undo`` it ``during`` seconds later; judge what happened."""
    work.mkdir()
    once_file = work / "once.txt"
    extra = {
        "PROOF_EFFECTS_FILE": str(work / "effects.txt"),
        "PROOF_ONCE_PIDS_FILE": str(once_file),
        "STRIPELINE_LEASE_SECONDS": str(LEASE_SECONDS),
        "STRIPELINE_RETRY_SCHEDULE": "1,2,5",
        "STRIPELINE_MAX_ATTEMPTS": "100",
        "STRIPELINE_LOG_LEVEL": "info",
    }
    env = common.stripeline_env(url, extra)
    common.execute(url, "CREATE TABLE proof_effects (event_id VARCHAR(255) NOT NULL)")
    port = common.free_port()
    args = ["serve", "--host", "127.0.0.1", "--port", str(port), "--app", "proof_app:app"]
    if workers:
        args.append("--no-worker")
    procs = [
        common.spawn(["worker", "--app", "proof_app:app"], env, work / f"worker-{n}.log")
        for n in range(workers)
    ]
    web = common.spawn(args, env, work / "serve.log")
    procs.append(web)
    sent = dict(events)
    timeline = Timeline()
    fault_error: list[str] = []
    try:
        common.wait_ready(port, web, timeout=120)
        load = common.Load(port, events, connections=CONNECTIONS, rate=rate)

        def fault() -> None:
            time.sleep(before)
            timeline.fault_start = time.monotonic()
            try:
                apply()
                timeline.fault_on = time.monotonic()
                time.sleep(min(2.0, during / 2))
                timeline.readyz_during = readyz(port)
                time.sleep(max(0.0, during - (time.monotonic() - timeline.fault_on)))
            except Exception as exc:
                fault_error.append(f"{type(exc).__name__}: {exc}")
            finally:
                timeline.undo_start = time.monotonic()
                undo()
                timeline.fault_off = time.monotonic()

        breaker = threading.Thread(target=fault, name="proof-outage", daemon=True)
        load.start()
        breaker.start()
        load.join()
        breaker.join()
        drained = common.wait_processed(url, len(events))
        drain_seconds = time.monotonic() - timeline.fault_off
        alive = [p.poll() is None for p in procs]
        readyz_after = readyz(port)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    ledger = common.Ledger.read(url, sent)
    logs = "".join(p.read_text(errors="replace") for p in work.glob("*.log"))
    tracebacks = logs.count("Traceback (most recent call last)")
    acked = set(load.acked)
    lost = sorted(acked - set(ledger.stored))
    not_processed = [i for i in sent if ledger.stored.get(i, ("",))[0] != "processed"]
    not_once = [i for i in sent if ledger.processed_attempts.get(i, 0) != 1]
    rows_wrong = [i for i in sent if ledger.handler_rows.get(i, 0) != 1]
    once_count = collections.Counter(p[0] for p in common.read_lines(once_file))
    once_again = sum(1 for n in once_count.values() if n > 1)
    during_answers = load.statuses(timeline.fault_on, timeline.fault_off)
    odd = {s: n for s, n in during_answers.items() if s != 503 and not 200 <= s < 300}
    unavailable = during_answers.get(503, 0)
    after = [a.at for a in load.answers if a.at >= timeline.fault_off and 200 <= a.status < 300]
    first_ok = (min(after) - timeline.fault_off) if after else float("nan")
    no_retry_after = load.server_errors_without_retry_after()
    deliveries = collections.Counter(d for _, _, d in ledger.stored.values())
    claims = collections.Counter(a for _, a, _ in ledger.stored.values())
    figures = [
        (
            f"{label}: load",
            f"{len(events):,} events at {rate:g}/s over {CONNECTIONS} connections; "
            f"answers {load.statuses()}; {len(acked):,} answered 2xx, "
            f"{len(load.given_up)} given up; {len(load.answers) - len(events):,} retries",
        ),
        (
            f"{label}: the fault",
            f"applied in {timeline.fault_on - timeline.fault_start:.1f} s, held "
            f"{timeline.undo_start - timeline.fault_on:.1f} s, undone in "
            f"{timeline.fault_off - timeline.undo_start:.1f} s; answers meanwhile "
            f"{during_answers}; /readyz meanwhile {timeline.readyz_during}"
            + (f"; error: {fault_error[0]}" if fault_error else ""),
        ),
        (
            f"{label}: recovery",
            f"first 2xx {first_ok:.1f} s after the database was back; inbox drained "
            f"{drain_seconds:.1f} s after; /readyz after {readyz_after}; the same "
            f"{len(procs)} process(es) alive throughout: {all(alive)}",
        ),
        (
            f"{label}: stored",
            f"{len(ledger.stored):,} events, {len(lost)} answered 2xx and missing, "
            f"{len(ledger.payload_wrong)} with other bytes than sent; deliveries per event "
            f"{dict(sorted(deliveries.items()))}; claims per event "
            f"{dict(sorted(claims.items()))}; integrity {ledger.integrity}",
        ),
        (
            f"{label}: processed",
            f"{len(sent) - len(not_processed):,} processed, {len(not_once)} without exactly "
            f"one processed attempt; handler rows {sum(ledger.handler_rows.values()):,}, "
            f"{len(rows_wrong)} events without exactly one; the once() effect repeated for "
            f"{once_again} events (a commit that failed after it: at least once); "
            f"{tracebacks} tracebacks logged",
        ),
    ]
    criteria = [
        common.Criterion(
            f"{label}: 503 with Retry-After while the database is away",
            unavailable > 0 and not odd and no_retry_after == 0 and not fault_error,
            f"{unavailable} × 503; other answers {odd or 'none'}; "
            f"{no_retry_after} 5xx without Retry-After",
        ),
        common.Criterion(
            f"{label}: no 2xx for an event not stored; nothing half-written",
            not lost and not ledger.payload_wrong and ledger.integrity == "ok",
            f"{len(lost)} missing, {len(ledger.payload_wrong)} altered, "
            f"integrity {ledger.integrity}",
        ),
        common.Criterion(
            f"{label}: web and worker recover without a restart",
            all(alive) and bool(after) and drained,
            f"alive {all(alive)}; first 2xx after {first_ok:.1f} s; drained {drained}",
        ),
        common.Criterion(
            f"{label}: nothing lost once the client retries; each event processed once",
            len(acked) == len(events) and not not_processed and not not_once and not rows_wrong,
            f"{len(acked):,} of {len(events):,} answered 2xx; {len(not_processed)} not "
            f"processed; {len(not_once)} not once; {len(rows_wrong)} handler rows wrong",
        ),
    ]
    return figures, criteria


# -- the suite ----------------------------------------------------------------


def run(short: bool, work: Path) -> common.SuiteResult:
    started = time.monotonic()
    before, during, after, rate = (3.0, 5.0, 4.0, 100.0) if short else (8.0, 20.0, 12.0, 150.0)
    count = int((before + during + after) * rate)
    figures: list[tuple[str, str]] = [
        (
            "events",
            f"{count:,} distinct signed events of about 3 KB per scenario, paced at "
            f"{rate:g}/s; the fault {before:g} s into the load, held {during:g} s",
        )
    ]
    criteria: list[common.Criterion] = []
    notes: list[str] = []

    def attempt(
        name: str, body: Callable[[], tuple[list[tuple[str, str]], list[common.Criterion]]]
    ) -> None:
        try:
            f, c = body()
        except Skip as skip:
            notes.append(f"{name}: skipped, {skip}.")
            print(f"  skipped: {name}: {skip}", flush=True)
            return
        for figure, value in f:  # a long run shows each scenario as it ends
            print(f"  {figure}: {value}", flush=True)
        figures.extend(f)
        criteria.extend(c)

    def postgres() -> tuple[list[tuple[str, str]], list[common.Criterion]]:
        with own_postgres(work) as (cluster, url):
            return scenario(
                "PostgreSQL stopped (serve + worker)",
                url,
                work / "postgresql",
                common.signed_bodies(count, run="opg"),
                workers=1,
                apply=cluster.stop,
                undo=cluster.start,
                before=before,
                during=during,
                rate=rate,
            )

    def read_only() -> tuple[list[tuple[str, str]], list[common.Criterion]]:
        directory = work / "sqlite-ro-db"
        directory.mkdir()
        fault = Immutable(directory)
        url = f"sqlite:///{directory}/proof.db"
        common.migrated(url)
        try:
            return scenario(
                "SQLite read-only (serve)",
                url,
                work / "sqlite-ro",
                common.signed_bodies(count, run="oro"),
                workers=0,
                apply=fault.apply,
                undo=fault.undo,
                before=before,
                during=during,
                rate=rate,
            )
        finally:
            fault.undo()

    def disk_full() -> tuple[list[tuple[str, str]], list[common.Criterion]]:
        fault = DiskFull(work / "sqlite-full-db", 64 if short else 160)
        try:
            url = f"sqlite:///{fault.mountpoint}/proof.db"
            common.migrated(url)
            return scenario(
                "SQLite disk full (serve)",
                url,
                work / "sqlite-full",
                common.signed_bodies(count, run="ofu"),
                workers=0,
                apply=fault.apply,
                undo=fault.undo,
                before=before,
                during=during,
                rate=rate,
            )
        finally:
            fault.remove()

    attempt("PostgreSQL outage", postgres)
    attempt("SQLite read-only", read_only)
    attempt("SQLite disk full", disk_full)
    notes.append(
        f"Settings: STRIPELINE_LEASE_SECONDS={LEASE_SECONDS} (events whose worker's "
        "transaction failed with the database are claimed again when their lease runs "
        "out), STRIPELINE_RETRY_SCHEDULE=1,2,5."
    )
    return common.SuiteResult(
        "outage", "Database outage", figures, criteria, notes, time.monotonic() - started
    )


def main() -> None:
    common.suite_main(run, __doc__ or "", "the fault held 5 s instead of 20, a smaller load")


if __name__ == "__main__":
    main()
