"""A webhook body sent slowly (slow POST) is cut after STRIPELINE_BODY_TIMEOUT: 408, nothing stored.

In-process, through the ASGI app itself (the route's lines are under the
coverage gate); the connection-level bounds of ``stripeline serve`` are in
tests/test_slow_clients.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.testclient import TestClient

from stripeline.app import Stripeline
from stripeline.db.engine import make_engine
from stripeline.db.models import Event
from stripeline.settings import Settings
from stripeline.web import asgi as asgi_module
from stripeline.web import create_app
from tests.factories import SECRET, encode, event, signed


@pytest.fixture
def app(database_url: str) -> Iterator[Stripeline]:
    settings = Settings(
        stripe_webhook_secret=SECRET,  # type: ignore[arg-type]
        database_url=database_url,
        body_timeout=0.5,
    )
    app = Stripeline(settings, engine=make_engine(database_url))
    yield app
    app.dispose()


def stored_ids(app: Stripeline) -> set[str]:
    with Session(app.engine) as session:
        return set(session.scalars(select(Event.id)))


async def _post(asgi: Starlette, payload: bytes, pause: float) -> tuple[httpx.Response, float]:
    """POST ``payload`` in two halves with ``pause`` seconds between them."""

    async def body() -> AsyncIterator[bytes]:
        yield payload[: len(payload) // 2]
        await asyncio.sleep(pause)
        yield payload[len(payload) // 2 :]

    transport = httpx.ASGITransport(app=asgi)
    async with httpx.AsyncClient(transport=transport, base_url="http://stripeline") as client:
        started = time.monotonic()
        async with asyncio.timeout(10):  # the unbounded reader waits for the whole pause
            response = await client.post(
                "/webhooks/stripe", content=body(), headers=signed(payload)
            )
        return response, time.monotonic() - started


def test_a_slow_body_is_408_and_nothing_is_stored(app: Stripeline) -> None:
    asgi = create_app(app)
    slow = encode(event())
    paced = encode(event())
    with TestClient(asgi) as c:
        assert c.portal is not None  # the app's event loop, started by the lifespan
        response, took = c.portal.call(_post, asgi, slow, 30.0)
        assert response.status_code == 408
        assert response.json()["error"] == "timeout"
        assert response.headers["connection"] == "close"
        assert 0.4 < took < 5
        # Within the deadline, a body in pieces is read whole and stored.
        response, _ = c.portal.call(_post, asgi, paced, 0.1)
        assert response.status_code == 200
        metrics = c.get("/metrics").text
    assert stored_ids(app) == {response.json()["id"]}
    assert 'stripeline_webhooks_total{endpoint="account",outcome="too_slow"} 1.0' in metrics


async def _together(
    asgi: Starlette, slow: bytes, quick: list[bytes]
) -> list[tuple[httpx.Response, float]]:
    """``slow`` with a 30 s pause and each of ``quick`` with a short one, at once."""
    posts = [_post(asgi, slow, 30.0), *(_post(asgi, body, 0.01) for body in quick)]
    return list(await asyncio.gather(*posts))


def test_each_event_loop_keeps_its_own_deadlines(app: Stripeline) -> None:
    """The deadlines are swept per event loop: a second client (a loop of its
    own, after the first one's has closed) still cuts a slow body, while
    bodies sent in time on the same loop at the same moment are stored."""
    asgi = create_app(app)
    for _ in range(2):
        slow = encode(event())
        quick = [encode(event()) for _ in range(3)]
        with TestClient(asgi) as c:
            assert c.portal is not None

            (cut, took), *rest = c.portal.call(_together, asgi, slow, quick)
        assert cut.status_code == 408
        assert 0.4 < took < 5
        assert [response.status_code for response, _ in rest] == [200, 200, 200]
    stored = stored_ids(app)
    assert len(stored) == 6


def test_a_body_in_pieces_past_the_limit_is_413_and_nothing_is_stored(database_url: str) -> None:
    """Sent in pieces, with no Content-Length to refuse it up front, a body is
    cut as soon as what came exceeds STRIPELINE_BODY_LIMIT."""
    settings = Settings(
        stripe_webhook_secret=SECRET,  # type: ignore[arg-type]
        database_url=database_url,
        body_limit=4096,
    )
    app = Stripeline(settings, engine=make_engine(database_url))
    payload = encode(event(padding=6000))
    assert len(payload) > 4096

    async def post(asgi: Starlette) -> httpx.Response:
        async def pieces() -> AsyncIterator[bytes]:
            for start in range(0, len(payload), 1000):
                yield payload[start : start + 1000]

        transport = httpx.ASGITransport(app=asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://stripeline") as client:
            return await client.post("/webhooks/stripe", content=pieces(), headers=signed(payload))

    try:
        asgi = create_app(app)
        with TestClient(asgi) as c:
            assert c.portal is not None
            response = c.portal.call(post, asgi)
        assert response.status_code == 413
        assert stored_ids(app) == set()
    finally:
        app.dispose()


async def _never() -> dict[str, object]:
    """An ASGI receive whose client never sends a byte."""
    await asyncio.Event().wait()
    return {}


def test_a_cancelled_read_stays_a_cancellation_not_a_408() -> None:
    """The server cancelling a request (shutting down) while its body is read
    is not the body timeout: the cancellation goes on, and the read leaves
    nothing behind in the loop's deadlines."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        task = loop.create_task(asgi_module._read_body(_never, None, 1024, 30.0))
        await asyncio.sleep(0.01)
        deadlines = asgi_module._deadlines[loop]
        assert task in deadlines.reading
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task not in deadlines.reading
        assert not deadlines.expired

    asyncio.run(scenario())


def test_a_deadline_and_a_cancellation_at_once_stay_a_cancellation() -> None:
    """When the sweep cuts a read that the server cancels at the same moment,
    the server's cancellation goes on (as with ``asyncio.timeout``); the
    deadline alone is a 408 (``_TooSlow``)."""

    async def cut(also_cancelled: bool) -> BaseException:
        loop = asyncio.get_running_loop()
        task = loop.create_task(asgi_module._read_body(_never, None, 1024, 30.0))
        await asyncio.sleep(0.01)
        deadlines = asgi_module._deadlines[loop]
        deadlines.reading[task] = loop.time() - 1  # past its deadline
        deadlines._sweep()
        if also_cancelled:
            task.cancel()
        try:
            await task
        except BaseException as exc:
            assert task not in deadlines.reading and not deadlines.expired
            return exc
        raise AssertionError("the read returned")

    assert isinstance(asyncio.run(cut(False)), asgi_module._TooSlow)
    assert isinstance(asyncio.run(cut(True)), asyncio.CancelledError)


def test_two_event_loops_in_turn_each_sweep_their_own_reads() -> None:
    """Reads on two event loops in turn (the last loop's deadlines, kept in
    front of the per-loop dictionary, change hands at each one): each read is
    entered in its own loop's deadlines, found again on the loop's next turn,
    and cut by its own loop's sweep (entered in the other loop's, whose loop
    is not running, it would never be cut)."""

    async def read() -> asgi_module._BodyDeadlines:
        async with asyncio.timeout(5):  # a read swept by no running loop
            reading = asyncio.create_task(asgi_module._read_body(_never, None, 1024, 0.05))
            await asyncio.sleep(0)
            deadlines = asgi_module._deadlines[asyncio.get_running_loop()]
            assert reading in deadlines.reading
            with pytest.raises(asgi_module._TooSlow):
                await reading
        return deadlines

    loops = [asyncio.new_event_loop(), asyncio.new_event_loop()]
    try:
        seen: dict[asyncio.AbstractEventLoop, list[asgi_module._BodyDeadlines]] = {}
        for _ in range(3):
            for loop in loops:
                seen.setdefault(loop, []).append(loop.run_until_complete(read()))
        for loop in loops:
            first, *later = seen[loop]
            assert first.loop is loop and all(d is first for d in later)
    finally:
        for loop in loops:
            loop.close()
