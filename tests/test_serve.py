"""`stripeline serve` as a newcomer runs it: SQLite, no key, the sandbox in-process."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import stripe

from stripeline.cli import main

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stripeline", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.slow
def test_serve_with_no_key_runs_the_sandbox_and_processes_its_events(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "STRIPELINE_"))}
    env["PYTHONPATH"] = str(ROOT / "src")
    unmigrated = run(["serve", "--port", str(free_port())], env, tmp_path)
    assert unmigrated.returncode == 2
    assert "stripeline migrate" in unmigrated.stderr
    assert run(["migrate"], env, tmp_path).returncode == 0
    port, sandbox_port = free_port(), free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stripeline",
            "serve",
            "--port",
            str(port),
            "--sandbox-port",
            str(sandbox_port),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        banner = ""
        deadline = time.monotonic() + 30
        while "stripeline serving" not in banner and time.monotonic() < deadline:
            banner += server.stdout.readline()
        assert f"sandbox at http://127.0.0.1:{sandbox_port}" in banner
        key = re.search(r"sk_test_[A-Za-z0-9]+", banner)
        assert key, banner
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        assert httpx.get(f"{base}/readyz").json()["status"] == "ready"
        client = stripe.StripeClient(
            key.group(0), base_addresses={"api": f"http://127.0.0.1:{sandbox_port}"}
        )
        customer = client.v1.customers.create({"email": "newcomer@example.com"})
        listed: list[dict[str, object]] = []
        for _ in range(100):
            result = run(["events", "list", "--json"], env, tmp_path)
            listed = json.loads(result.stdout or "[]")
            if listed and listed[0]["status"] == "processed":
                break
            time.sleep(0.1)
        assert [(e["type"], e["status"]) for e in listed] == [("customer.created", "processed")]
        mirrored = run(["events", "show", str(listed[0]["id"]), "--json"], env, tmp_path)
        assert customer.id in mirrored.stdout
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(20)
        assert server.stdout is not None
        server.stdout.close()


def test_serve_failing_before_it_serves_closes_its_sandbox(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``stripeline serve | head -1`` once ``head`` has gone: its standard
    output a pipe nobody reads, ``serve`` fails on the sandbox's banner, after
    the sandbox started and before the server runs. The sandbox is closed all
    the same (in-process, as an embedding program or a test runs ``main``):
    its state file written by its close, its port refusing connections, none
    of its threads left running."""
    monkeypatch.setenv("STRIPELINE_DATABASE_URL", sqlite_url)
    state = tmp_path / "sandbox.json"
    sandbox_port = free_port()
    read_end, write_end = os.pipe()
    os.close(read_end)
    before = set(threading.enumerate())
    # Unbuffered: each write fails at once, nothing is left to fail on close.
    broken = io.TextIOWrapper(open(write_end, "wb", buffering=0), write_through=True)
    with broken, monkeypatch.context() as patch:
        patch.setattr(sys, "stdout", broken)
        with pytest.raises(SystemExit) as done:
            main(
                [
                    "serve",
                    "--port",
                    str(free_port()),
                    "--sandbox-port",
                    str(sandbox_port),
                    "--sandbox-state",
                    str(state),
                ],
                prog_name="stripeline",
            )
    assert done.value.code == 1  # click's answer to a broken pipe (EPIPE)
    assert json.loads(state.read_text())["secret_key"].startswith("sk_test_")
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", sandbox_port), timeout=5),
    ):
        pass
    assert [t.name for t in set(threading.enumerate()) - before if t.is_alive()] == []


@pytest.mark.parametrize(("setting", "expected"), [("0.0007", 0.0007), ("0", None)])
def test_serve_sets_the_thread_switch_interval(
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    setting: str,
    expected: float | None,
) -> None:
    """``STRIPELINE_THREAD_SWITCH_INTERVAL`` is the interval ``serve`` runs
    with (0: Python's own, left as it was). Run in-process up to its first
    output, which fails (standard output a pipe nobody reads)."""
    monkeypatch.setenv("STRIPELINE_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("STRIPELINE_THREAD_SWITCH_INTERVAL", setting)
    read_end, write_end = os.pipe()
    os.close(read_end)
    before = sys.getswitchinterval()
    broken = io.TextIOWrapper(open(write_end, "wb", buffering=0), write_through=True)
    try:
        with broken, monkeypatch.context() as patch:
            patch.setattr(sys, "stdout", broken)
            with pytest.raises(SystemExit):
                main(
                    [
                        "serve",
                        "--port",
                        str(free_port()),
                        "--sandbox-port",
                        str(free_port()),
                        "--sandbox-state",
                        str(tmp_path / "sandbox.json"),
                    ],
                    prog_name="stripeline",
                )
        assert sys.getswitchinterval() == pytest.approx(expected or before)
    finally:
        sys.setswitchinterval(before)
