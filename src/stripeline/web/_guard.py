"""Bounds on the connections ``stripeline serve`` holds.

uvicorn accepts every connection and waits for its headers as long as the
client likes; its ``limit_concurrency`` counts open connections but answers
503 only once a request's headers are complete, and never closes a
connection that has not sent them. A flood of slow clients (slowloris) thus
holds one file descriptor each until the process runs out and can accept
nothing, valid webhooks included. This module wraps uvicorn's HTTP protocol:

- at most ``max_connections`` connections are open, a number kept below the
  process's open-file limit (``connection_cap``);
- past the cap, the oldest connection that has no request in progress (still
  sending its headers, or idle between keep-alive requests) is closed to make
  room; when every open connection has a request in progress, the new one is
  answered 503 with ``Retry-After`` and closed;
- a connection that has not finished sending a request's headers within
  ``header_timeout`` seconds of its first byte (or of connecting) is answered
  408 and closed.

The body of a webhook is bounded in time by the route itself
(``web/asgi.py``); the idle time between keep-alive requests by uvicorn's
``timeout_keep_alive``. What was refused, cut or closed is logged as one
warning at most every ``log_interval`` seconds, with the counts.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

from stripeline.log import get_logger

log = get_logger("stripeline.web")

#: File descriptors kept free for what is not a client connection: the
#: database pools, the SQLite files, log files, the in-process sandbox, the
#: listening sockets and the interpreter's own.
FD_RESERVE = 128
#: Below this, ``serve`` is refused: the open-file limit leaves no room for clients.
MIN_CONNECTIONS = 16
#: The soft open-file limit is raised to the hard one, but not past this.
FD_TARGET = 65_536
#: A connection answered 408 or 503 is half-closed and read (and discarded) for
#: up to this long before it is closed, so that the client reads the answer
#: instead of a reset; at most ``MAX_LINGERING`` at a time (within FD_RESERVE).
LINGER_SECONDS = 0.5
MAX_LINGERING = 32


def _raise_fd_limit() -> int:
    """Raise the soft open-file limit toward the hard one; the limit now in force."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not a Unix
        return FD_TARGET
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = FD_TARGET if hard == resource.RLIM_INFINITY else min(hard, FD_TARGET)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # pragma: no cover - not allowed here
            pass
    return FD_TARGET if soft == resource.RLIM_INFINITY else int(soft)


def connection_cap(requested: int | None) -> tuple[int, int]:
    """``(max_connections, fd_limit)``: the cap ``serve`` applies and why.

    The soft open-file limit is raised toward the hard limit first; the cap
    is then what that limit leaves after ``FD_RESERVE``, or ``requested``
    when that is lower. Never below ``MIN_CONNECTIONS``.
    """
    fd_limit = _raise_fd_limit()
    allowed = max(fd_limit - FD_RESERVE, MIN_CONNECTIONS)
    cap = allowed if requested is None else min(requested, allowed)
    if requested is not None and requested > allowed:
        log.warning(
            "max_connections_lowered",
            action="max_connections_lowered",
            requested=requested,
            max_connections=cap,
            fd_limit=fd_limit,
        )
    return cap, fd_limit


def _response(status: int, reason: str, error: str, message: str, extra: str = "") -> bytes:
    body = json.dumps({"error": error, "message": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        f"{extra}"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


class ConnectionGuard:
    """The shared state of one server's connections (see the module's docstring)."""

    def __init__(
        self,
        *,
        max_connections: int,
        header_timeout: float,
        log_interval: float = 10.0,
        inner: type[asyncio.Protocol] | None = None,
    ) -> None:
        if inner is None:
            from uvicorn.protocols.http.auto import AutoHTTPProtocol

            inner = AutoHTTPProtocol
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.log_interval = log_interval
        self.inner = inner
        #: Open connections, oldest first.
        self.open: dict[_GuardedProtocol, None] = {}
        self.lingering = 0
        self._counts: Counter[str] = Counter()
        self._last_log = float("-inf")
        self._flush: asyncio.TimerHandle | None = None
        self._busy_refused = _response(
            503,
            "Service Unavailable",
            "unavailable",
            f"over {max_connections} connections; retry later",
            "retry-after: 5\r\n",
        )
        self._too_slow = _response(
            408,
            "Request Timeout",
            "timeout",
            f"request headers not received within {header_timeout:g} s",
        )

    def protocol(self) -> type[asyncio.Protocol]:
        """The protocol class to give uvicorn (``http=``)."""
        guard = self

        class Guarded(_GuardedProtocol):
            pass

        Guarded.guard = guard
        return Guarded

    def note(self, what: str, loop: asyncio.AbstractEventLoop) -> None:
        """Count one refusal or cut; log the counts at most every ``log_interval`` s."""
        self._counts[what] += 1
        now = time.monotonic()
        if now - self._last_log >= self.log_interval:
            self._log()
        elif self._flush is None:
            self._flush = loop.call_later(self._last_log + self.log_interval - now, self._log)

    def flush(self) -> None:
        """Log the counts not logged yet (at shutdown: a pending timer would
        never run once the event loop stops)."""
        if self._flush is not None:
            self._flush.cancel()
        self._log()

    def _log(self) -> None:
        self._flush = None
        if not self._counts:
            return
        self._last_log = time.monotonic()
        counts, self._counts = self._counts, Counter()
        log.warning(
            "connections_limited",
            action="connections_limited",
            refused_over_limit=counts["refused"],
            closed_to_make_room=counts["evicted"],
            header_timeouts=counts["header_timeout"],
            open_connections=len(self.open),
            max_connections=self.max_connections,
            header_timeout=self.header_timeout,
        )

    def make_room(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Close the oldest connection without a request in progress; False: none."""
        for candidate in self.open:
            if candidate.idle() and not candidate.cutting:
                self.note("evicted", loop)
                candidate.cut(self._too_slow)
                return True
        return False


class _GuardedProtocol(asyncio.Protocol):
    """uvicorn's HTTP protocol, with the cap and the header timeout around it."""

    guard: ConnectionGuard

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.loop = _loop or asyncio.get_event_loop()
        self.inner: Any = self.guard.inner(  # type: ignore[call-arg]
            config=config, server_state=server_state, app_state=app_state, _loop=_loop
        )
        self.transport: asyncio.Transport | None = None
        self.admitted = False
        self.cutting = False
        self.lingering = False
        #: When the request now being received began (None: none is, or its headers are in).
        self.waiting_since: float | None = None
        self.timer: asyncio.TimerHandle | None = None

    def idle(self) -> bool:
        """No request in progress: its headers not all in, or between requests."""
        cycle = getattr(self.inner, "cycle", None)
        return cycle is None or bool(cycle.response_complete)

    def cut(self, response: bytes) -> None:
        """Answer ``response`` and close; the connection no longer counts."""
        guard = self.guard
        guard.open.pop(self, None)
        transport = self.transport
        if transport is None or transport.is_closing() or self.cutting:
            return
        self.cutting = True
        transport.write(response)
        if guard.lingering < MAX_LINGERING and transport.can_write_eof():
            guard.lingering += 1
            self.lingering = True
            transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, transport.close)
        else:
            transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport
        guard = self.guard
        if len(guard.open) >= guard.max_connections and not guard.make_room(self.loop):
            guard.note("refused", self.loop)
            self.cut(guard._busy_refused)
            return
        self.admitted = True
        guard.open[self] = None
        self.waiting_since = self.loop.time()
        self.inner.connection_made(transport)
        self.timer = self.loop.call_later(guard.header_timeout, self._check)

    def data_received(self, data: bytes) -> None:
        if not self.admitted or self.cutting:
            return
        if self.waiting_since is None and self.idle():
            self.waiting_since = self.loop.time()
        self.inner.data_received(data)
        if not self.idle():
            self.waiting_since = None

    def _check(self) -> None:
        self.timer = None
        if self.transport is None or self.transport.is_closing() or self.cutting:
            return
        timeout = self.guard.header_timeout
        delay = timeout
        if self.waiting_since is not None and self.idle():
            waited = self.loop.time() - self.waiting_since
            if waited >= timeout:
                self.guard.note("header_timeout", self.loop)
                self.cut(self.guard._too_slow)
                return
            delay = timeout - waited
        self.timer = self.loop.call_later(delay, self._check)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.lingering:
            self.lingering = False
            self.guard.lingering -= 1
        if self.admitted:
            self.guard.open.pop(self, None)
            self.inner.connection_lost(exc)

    def eof_received(self) -> bool | None:
        if self.admitted and not self.cutting:
            return self.inner.eof_received()  # type: ignore[no-any-return]
        return None

    def pause_writing(self) -> None:
        if self.admitted:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.admitted:
            self.inner.resume_writing()
