"""stripeline mounted in FastAPI, in process: ``Stripeline.asgi()``,
``Stripeline.lifespan``, the 503 when no lifespan started it, and the
``stripeline.contrib.fastapi`` dependencies (the real server: test_integration_fastapi.py)."""

from __future__ import annotations

import ast
import asyncio
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

import stripeline
from stripeline.app import ReceivedEvent, Stripeline
from stripeline.contrib.fastapi import dependency, mirror_dependency
from stripeline.db.engine import make_engine
from stripeline.db.models import Event
from stripeline.settings import Settings
from stripeline.web import create_app
from tests.factories import SECRET, encode, event, signed

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def billing(database_url: str) -> Iterator[Stripeline]:
    app = Stripeline(
        Settings(
            stripe_webhook_secret=SecretStr(SECRET),
            database_url=database_url,
            worker_poll_seconds=0.05,
        ),
        engine=make_engine(database_url, sqlite_busy_timeout_ms=300),
    )
    yield app
    app.dispose()


def stored(app: Stripeline) -> dict[str, str]:
    with Session(app.engine) as session:
        return {row.id: row.status for row in session.scalars(select(Event))}


def post_event(client: TestClient | httpx.Client, path: str, body: dict[str, Any]) -> Any:
    payload = encode(body)
    return client.post(path, content=payload, headers=signed(payload))


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.02)


def test_asgi_is_one_app_per_stripeline_app(billing: Stripeline, database_url: str) -> None:
    mounted = billing.asgi()
    assert billing.asgi() is mounted
    assert billing.asgi(run_worker=True) is mounted
    with pytest.raises(ValueError, match="run_worker=True"):
        billing.asgi(run_worker=False)
    other = Stripeline(Settings(stripe_webhook_secret=SecretStr(SECRET), database_url=database_url))
    try:
        assert other.asgi(run_worker=False) is not mounted
    finally:
        other.dispose()


@pytest.mark.parametrize("how", ["asgi", "create_app"])
def test_mounted_without_its_lifespan_answers_503_at_once_naming_the_fix(
    billing: Stripeline, how: str
) -> None:
    """The bug: Starlette does not run a mounted app's lifespan. The writer is
    not started, so the route must not wait for it: 503 at once, saying why."""
    outer = FastAPI()
    outer.mount(
        "/stripe", billing.asgi() if how == "asgi" else create_app(billing, run_worker=True)
    )
    with TestClient(outer) as client:
        started = time.monotonic()
        response = post_event(client, "/stripe/webhooks/stripe", event())
        assert time.monotonic() - started < 2
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        body = response.json()
        assert body["error"] == "not_started"
        assert "FastAPI(lifespan=stripeline_app.lifespan)" in body["message"]
        ready = client.get("/stripe/readyz")
        assert ready.status_code == 503
        assert "lifespan" in ready.json()["checks"]["started"]
        assert client.get("/stripe/healthz").status_code == 200
        metrics = client.get("/stripe/metrics").text
        assert 'stripeline_webhooks_total{endpoint="account",outcome="not_started"} 1.0' in metrics
    assert stored(billing) == {}


def test_the_outer_lifespan_starts_the_writer_and_the_worker(billing: Stripeline) -> None:
    seen: list[str] = []

    @billing.on("customer.updated")
    def note(event: ReceivedEvent) -> None:
        seen.append(event.id)

    outer = FastAPI(lifespan=billing.lifespan)
    outer.mount("/stripe", billing.asgi())
    body = event()
    with TestClient(outer) as client:
        response = post_event(client, "/stripe/webhooks/stripe", body)
        assert response.status_code == 200, response.json()
        assert client.get("/stripe/readyz").status_code == 200
        wait_for(lambda: stored(billing) == {body["id"]: "processed"})
        assert seen == [body["id"]]
    # Stopped with the outer app: the route refuses again rather than hang…
    assert post_event(TestClient(billing.asgi()), "/webhooks/stripe", event()).status_code == 503
    # …and starts again with the next lifespan (here its own).
    with TestClient(billing.asgi()) as own:
        assert post_event(own, "/webhooks/stripe", event()).status_code == 200


def test_the_lifespan_nests_in_the_applications_own(billing: Stripeline) -> None:
    steps: list[str] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        steps.append("own startup")
        async with billing.lifespan(app):
            steps.append("stripeline started")
            yield
        steps.append("own shutdown")

    outer = FastAPI(lifespan=lifespan)
    outer.mount("/stripe", billing.asgi())
    with TestClient(outer) as client:
        assert post_event(client, "/stripe/webhooks/stripe", event()).status_code == 200
    assert steps == ["own startup", "stripeline started", "own shutdown"]


def test_entered_twice_it_runs_once_until_the_last_leaves(billing: Stripeline) -> None:
    asyncio.run(entered_twice(billing))


async def entered_twice(billing: Stripeline) -> None:
    transport = httpx.ASGITransport(app=billing.asgi())  # no lifespan of its own
    async with httpx.AsyncClient(transport=transport, base_url="http://stripe") as client:

        async def status() -> int:
            payload = encode(event())
            answer = await client.post("/webhooks/stripe", content=payload, headers=signed(payload))
            return answer.status_code

        assert await status() == 503
        async with billing.lifespan(None):
            async with billing.lifespan(None):
                assert await status() == 200
                assert threading.active_count() >= 2
            assert await status() == 200  # the outer one still holds it
        assert await asyncio.wait_for(status(), 2) == 503


def test_dependencies_give_every_request_the_same_mirror(billing: Stripeline) -> None:
    builds: list[Stripeline] = []

    def build(app: Stripeline) -> str:
        builds.append(app)
        return "flow"

    flow = Depends(dependency(billing, build))
    mirrors = Depends(mirror_dependency(billing))
    outer = FastAPI(lifespan=billing.lifespan)
    outer.mount("/stripe", billing.asgi())

    @outer.get("/link/{user}/{customer}")
    def link(
        user: str,
        customer: str,
        mirror: stripeline.Mirror = mirrors,
        name: str = flow,
    ) -> dict[str, Any]:
        mirror.link_customer(user, customer)
        link = mirror.customer_link(user)
        return {"mirror": id(mirror), "customer": link and link.customer_id, "flow": name}

    with TestClient(outer) as client:
        first = client.get("/link/ada/cus_1").json()
        second = client.get("/link/grace/cus_2").json()
    assert first["mirror"] == second["mirror"]
    assert (first["customer"], second["customer"]) == ("cus_1", "cus_2")
    assert first["flow"] == "flow" and builds == [billing]
    assert stripeline.Mirror(billing.engine).users_for_customer("cus_2") == ["grace"]


def test_contrib_fastapi_does_not_import_fastapi() -> None:
    import subprocess
    import sys

    code = "import sys, stripeline.contrib.fastapi; print('fastapi' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_app_imports_web_only_inside_its_methods() -> None:
    """docs/architecture.md's one exception to the layering: ``app`` may import
    ``web`` (a top-level import would be a cycle), and only inside a method."""
    tree = ast.parse((ROOT / "src" / "stripeline" / "app.py").read_text(encoding="utf-8"))
    top_level = {
        node.module
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module is not None
    }
    inside = {
        (function.name, node.module)
        for function in ast.walk(tree)
        if isinstance(function, ast.FunctionDef)
        for node in ast.walk(function)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("stripeline.web")
    }
    assert not any(module.startswith("stripeline.web") for module in top_level)
    assert inside == {("asgi", "stripeline.web.asgi"), ("lifespan", "stripeline.web.asgi")}


def test_processing_needs_no_request(billing: Stripeline) -> None:
    """What the worker commits is in the database: the inbox row and its status."""
    outer = FastAPI(lifespan=billing.lifespan)
    outer.mount("/stripe", billing.asgi())
    bodies = [event() for _ in range(5)]
    with TestClient(outer) as client:
        for body in bodies:
            assert post_event(client, "/stripe/webhooks/stripe", body).status_code == 200
        wait_for(lambda: set(stored(billing).values()) == {"processed"})
    with Session(billing.engine) as session:
        assert session.scalar(select(func.count()).select_from(Event)) == 5


def test_the_guide_quotes_the_example_as_it_is() -> None:
    """docs/integrations/fastapi.md shows the example's own lines: each block
    headed by a path is a contiguous excerpt of that file."""
    guide = (ROOT / "docs" / "integrations" / "fastapi.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n# (examples/\S+)\n(.*?)```", guide, re.DOTALL)
    assert len(blocks) >= 4
    for path, excerpt in blocks:
        assert excerpt in (ROOT / path).read_text(encoding="utf-8"), path


def test_a_request_whose_lifespan_ends_while_its_body_arrives_is_refused_not_held(
    billing: Stripeline,
) -> None:
    """The writer stops (shutdown) after the route looked but before it stores:
    the request is answered 503 at once, not left waiting on a stopped writer."""
    asyncio.run(lifespan_ends_mid_request(billing))
    assert stored(billing) == {}


async def lifespan_ends_mid_request(billing: Stripeline) -> None:
    payload = encode(event())
    headers = [(k.lower().encode(), v.encode()) for k, v in signed(payload).items()]
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/webhooks/stripe",
        "raw_path": b"/webhooks/stripe",
        "root_path": "",
        "query_string": b"",
        "headers": [*headers, (b"content-length", str(len(payload)).encode())],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
    }
    lifespan = billing.lifespan(None)
    await lifespan.__aenter__()
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await lifespan.__aexit__(None, None, None)  # shutdown, while the body arrives
        return {"type": "http.request", "body": payload, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await asyncio.wait_for(billing.asgi()(scope, receive, send), 5)
    assert sent[0]["status"] == 503
    assert b"not_started" in sent[1]["body"]
