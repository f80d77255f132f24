"""The connection cap and the header timeout around uvicorn's HTTP protocols.

A real uvicorn server on 127.0.0.1 in a thread of this process, with each of
uvicorn's two HTTP/1.1 implementations inside the guard (``serve`` uses
httptools when it is installed, h11 otherwise). The whole of ``serve`` under a
flood is in tests/test_slow_clients.py.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from structlog.testing import capture_logs

from stripeline.web._guard import MIN_CONNECTIONS, ConnectionGuard, connection_cap

CAP = 4
HEADER_TIMEOUT = 1.0


class Served:
    def __init__(self, port: int, guard: ConnectionGuard, release: asyncio.Event) -> None:
        self.port = port
        self.guard = guard
        self.release = release
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connect(self, data: bytes = b"") -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        if data:
            s.sendall(data)
        return s

    def let_go(self) -> None:
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self.release.set)


def read_all(s: socket.socket) -> bytes:
    """What the server sent until it closed (a reset, after a client sent more, ends it too)."""
    answer = b""
    try:
        while chunk := s.recv(4096):
            answer += chunk
    except ConnectionResetError:
        pass
    return answer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(params=["h11", "httptools"])
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    inner: type[asyncio.Protocol]
    if request.param == "h11":
        from uvicorn.protocols.http.h11_impl import H11Protocol

        inner = H11Protocol
    else:
        pytest.importorskip("httptools")
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        inner = HttpToolsProtocol
    guard = ConnectionGuard(
        max_connections=CAP, header_timeout=HEADER_TIMEOUT, log_interval=0.2, inner=inner
    )
    release = asyncio.Event()

    async def hello(_: Request) -> Response:
        return PlainTextResponse("ok")

    async def hold(_: Request) -> Response:
        await release.wait()
        return PlainTextResponse("held")

    app = Starlette(routes=[Route("/", hello), Route("/hold", hold)])
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            http=guard.protocol(),
            lifespan="off",
            log_level="warning",
            timeout_keep_alive=3,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started
    result = Served(port, guard, release)
    result.loop = server_loop(server)
    try:
        yield result
    finally:
        if result.loop is not None:
            result.loop.call_soon_threadsafe(release.set)
        server.should_exit = True
        thread.join(10)


def server_loop(server: uvicorn.Server) -> asyncio.AbstractEventLoop:
    listening = server.servers[0]
    return listening.get_loop()


def test_a_client_that_never_finishes_its_headers_is_408_after_the_timeout(
    served: Served,
) -> None:
    silent = served.connect()
    started = time.monotonic()
    dripping = served.connect(b"POST / HTTP/1.1\r\nHost: x\r\n")
    for _ in range(3):  # still sending, a line at a time, past the timeout
        time.sleep(HEADER_TIMEOUT / 3)
        try:
            dripping.sendall(b"X-Slow: 1\r\n")
        except OSError:
            break
    answer = read_all(silent)
    # Half-closed and read a while before the close: a client still sending gets its 408 too.
    assert read_all(dripping) == answer
    took = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b'"error": "timeout"' in answer
    assert HEADER_TIMEOUT * 0.8 < took < HEADER_TIMEOUT + 1.5
    assert not served.guard.open
    silent.close()
    dripping.close()


def test_the_header_timeout_holds_on_a_keep_alive_connection_too(served: Served) -> None:
    s = served.connect(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    first = s.recv(4096)
    assert first.startswith(b"HTTP/1.1 200") and first.endswith(b"ok")
    time.sleep(HEADER_TIMEOUT * 0.6)  # idle, which is not slow: the keep-alive timeout is 3 s
    started = time.monotonic()
    s.sendall(b"GET / HTTP/1.1\r\n")
    answer = read_all(s)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert HEADER_TIMEOUT * 0.8 < time.monotonic() - started < HEADER_TIMEOUT + 1.5
    s.close()


def test_at_the_cap_the_oldest_connection_without_a_request_makes_room(served: Served) -> None:
    with capture_logs() as logs:
        slow = [served.connect(b"GET / HTTP/1.1\r\n") for _ in range(CAP)]
        time.sleep(0.05)
        started = time.monotonic()
        response = httpx.get(served.base, headers={"Connection": "close"}, timeout=5)
        assert response.status_code == 200
        assert time.monotonic() - started < HEADER_TIMEOUT * 0.9  # not after the timeout
        oldest = read_all(slow[0])
        assert oldest.startswith(b"HTTP/1.1 408")
        time.sleep(0.5)  # the counts are logged at most every 0.2 s
    limited = [e for e in logs if e.get("action") == "connections_limited"]
    assert limited[0]["closed_to_make_room"] == 1
    assert limited[0]["max_connections"] == CAP
    for s in slow:
        s.close()


def test_at_the_cap_with_every_request_in_progress_a_new_one_is_503(served: Served) -> None:
    with capture_logs() as logs:
        held = [served.connect(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n") for _ in range(CAP)]
        time.sleep(0.2)
        refused = served.connect(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = read_all(refused)
        assert answer.startswith(b"HTTP/1.1 503"), answer
        assert b"retry-after: 5\r\n" in answer
        refused.close()
        time.sleep(HEADER_TIMEOUT * 1.5)  # a request in progress is not cut by the header timeout
        served.let_go()
        for s in held:
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
            s.close()
        time.sleep(0.4)
    limited = [e for e in logs if e.get("action") == "connections_limited"]
    assert sum(e["refused_over_limit"] for e in limited) == 1
    assert sum(e["header_timeouts"] for e in limited) == 0
    assert httpx.get(served.base, timeout=5).status_code == 200


def test_the_cap_stays_below_the_open_file_limit() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        cap, limit = connection_cap(None)
        assert limit >= soft
        assert cap == max(limit - 128, MIN_CONNECTIONS)
        with capture_logs() as logs:
            assert connection_cap(limit * 2) == (cap, limit)
            assert connection_cap(MIN_CONNECTIONS) == (MIN_CONNECTIONS, limit)
        assert [e["action"] for e in logs] == ["max_connections_lowered"]
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_counts_not_logged_yet_are_logged_at_shutdown() -> None:
    """The counts are logged at most every ``log_interval``: what came in since
    the last line waits on a timer, which never runs once the server's event
    loop stops; ``serve`` flushes them on its way out."""
    guard = ConnectionGuard(max_connections=CAP, header_timeout=HEADER_TIMEOUT, log_interval=60)
    loop = asyncio.new_event_loop()
    try:
        with capture_logs() as logs:
            guard.note("refused", loop)  # logged at once: the first line
            guard.note("refused", loop)
            guard.note("evicted", loop)  # these two wait for the next line
            assert len([e for e in logs if e.get("action") == "connections_limited"]) == 1
            guard.flush()
            guard.flush()  # nothing more to say: no empty line
        limited = [e for e in logs if e.get("action") == "connections_limited"]
        assert [(e["refused_over_limit"], e["closed_to_make_room"]) for e in limited] == [
            (1, 0),
            (1, 1),
        ]
    finally:
        loop.close()
