"""The shop under test: the plugin's sandbox account and app, with the shop's
handlers, served by uvicorn on 127.0.0.1 and receiving the account's webhooks."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

import stripeline
from shop.app import create_shop
from shop.billing import billing
from stripeline_sandbox import Sandbox


@pytest.fixture
def stripeline_base_app() -> stripeline.Stripeline:
    """The app whose handlers ``stripeline_app`` carries: the shop's."""
    return billing


@pytest.fixture
def shop(
    stripe_sandbox: Sandbox, stripe_key: str, stripeline_app: stripeline.Stripeline
) -> Iterator[httpx.Client]:
    """An HTTP client of the shop, served with its lifespan, as in production."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(create_shop(stripeline_app), log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the shop did not start"
        time.sleep(0.01)
    base = f"http://127.0.0.1:{port}"
    stripe_sandbox.listen(f"{base}/stripe/webhooks/stripe", key=stripe_key)
    try:
        with httpx.Client(base_url=base, timeout=10) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
