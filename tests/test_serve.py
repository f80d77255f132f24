"""`stripeline serve` as a newcomer runs it: SQLite, no key, the sandbox in-process."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import stripe

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
