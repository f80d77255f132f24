"""The HTTP layer: stdlib ``ThreadingHTTPServer`` speaking Stripe's protocol.

Why the stdlib: the SDK's calls are synchronous and one account's writes are
serialised anyway, so a thread per keep-alive connection is simplest and
fast (no event loop to start, ~0.1 ms per call), and it lets faults drop a
connection or hold an answer exactly. Every request goes: authenticate →
route → rate limit → fault (before commit) → idempotency → handler under the
account lock → save for idempotency → fault (after commit) → queue the events it emitted
for delivery (held, or handed to the delivery thread) → answer: once a
client has the answer, ``flush_deliveries`` or ``wait_idle`` sees its events.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from stripeline_sandbox._connect import connected_account
from stripeline_sandbox._errors import StripeError
from stripeline_sandbox._faults import Fault, over_rate_limit, rate_limited, take_fault
from stripeline_sandbox._form import decode, multipart
from stripeline_sandbox._ids import new_request_id
from stripeline_sandbox._objects import copy, expand
from stripeline_sandbox._payment_intents import settle_due
from stripeline_sandbox._plans import legacy_params
from stripeline_sandbox._routes import Request, Router
from stripeline_sandbox._state import API_VERSION, Account, SavedResponse, World
from stripeline_sandbox._versions import default_version, renderer

#: Stripe prunes idempotency keys after at least 24 hours.
IDEMPOTENCY_WINDOW_SECONDS = 24 * 3600
MAX_IDEMPOTENCY_KEY_LENGTH = 255
#: Idle keep-alive connections are closed after this many seconds.
IDLE_TIMEOUT = 60.0
#: The shape stripeline's settings accept for a test key, so that a key the
#: sandbox takes is one the application takes too.
_KEY = re.compile(r"^sk_test_[A-Za-z0-9_]{8,}$")
_PUBLISHABLE = re.compile(r"^pk_test_[A-Za-z0-9_]{8,}$")
#: Stripe's answer to a publishable key on an endpoint that needs the secret key.
PUBLISHABLE_REFUSED = (
    "This API call cannot be made with a publishable API key. Please use a secret API key. "
    "You can find a list of your API keys at https://dashboard.stripe.com/account/apikeys."
)


class SandboxHTTPServer(ThreadingHTTPServer):
    """Tracks its connections so ``close`` can end them and join their threads."""

    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], world: World, router: Router) -> None:
        self.world = world
        self.router = router
        self.stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(connection)

    def close_connections(self) -> None:
        self.stopping.set()
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _authenticate(header: str | None, form_key: Any = None) -> str:
    """The key of the request: the ``Authorization`` header, or (as Stripe.js
    sends it) a ``key`` form parameter holding a publishable key."""
    if not header and isinstance(form_key, str) and _PUBLISHABLE.match(form_key):
        return form_key
    if not header:
        raise StripeError(
            401,
            "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
        )
    scheme, _, value = header.partition(" ")
    key = value.strip()
    if scheme.lower() == "basic":
        try:
            key = base64.b64decode(key).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            key = ""
    elif scheme.lower() != "bearer":
        key = ""
    if not (_KEY.match(key) or _PUBLISHABLE.match(key)):
        shown = f"{key[:8]}****{key[-4:]}" if len(key) > 12 else key
        raise StripeError(
            401,
            f"Invalid API Key provided: {shown} (the sandbox takes sk_test_ followed by "
            "8 or more letters, digits or underscores)",
        )
    return key


def _context_account(context: str | None) -> str | None:
    """The connected account a ``Stripe-Context`` header names (API v2: its
    last segment, as in ``org_…/acct_…``), or None."""
    if not context:
        return None
    last = context.strip().rsplit("/", 1)[-1]
    return last if last.startswith("acct_") else None


def _fingerprint(method: str, path: str, params: dict[str, Any]) -> str:
    text = json.dumps([method, path, params], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: SandboxHTTPServer
    timeout = IDLE_TIMEOUT

    def setup(self) -> None:
        super().setup()
        # One write per answer and no Nagle delay: keep-alive round trips stay sub-ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the sandbox logs nothing per request."""

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        lines = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}"]
        headers = {
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
            "Stripe-Version": API_VERSION,
            "Server": "stripeline-sandbox",
            **headers,
        }
        lines.extend(f"{name}: {value}" for name, value in headers.items())
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        self.wfile.flush()

    def _send_error(self, error: StripeError, request_id: str, extra: dict[str, str]) -> None:
        body = json.dumps(error.body(request_id), indent=2).encode()
        self._send(error.status, body, {"Request-Id": request_id, **extra, **error.headers})

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _fail(self, fault: Fault, request_id: str) -> None:
        if fault.kind == "timeout":
            self.server.stopping.wait(fault.delay)
            self._drop()
        elif fault.kind == "disconnect":
            self._drop()
        else:
            self._send_error(fault.error(), request_id, {})

    def _handle(self) -> None:
        request_id = new_request_id()
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        method = self.command
        extra: dict[str, str] = {}
        try:
            params = decode(url.query)
            content_type = self.headers.get("Content-Type") or ""
            if raw and content_type.startswith("multipart/form-data"):
                params.update(multipart(content_type, raw))
            elif raw and content_type.startswith("application/json"):  # API v2
                try:
                    body = json.loads(raw)
                except ValueError:
                    raise StripeError(400, "Invalid JSON body.") from None
                if isinstance(body, dict):
                    params.update(body)
            elif raw:
                params.update(decode(raw.decode("utf-8")))
            key = _authenticate(self.headers.get("Authorization"), params.get("key"))
            publishable = key.startswith("pk_")
            if publishable:
                params.pop("key", None)
                found_account = self.server.world.account_for_publishable(key)
                if found_account is None:
                    raise StripeError(401, f"Invalid API Key provided: {key[:8]}****{key[-4:]}")
                account = found_account
            else:
                account = self.server.world.account(key)
                on_behalf = self.headers.get("Stripe-Account") or _context_account(
                    self.headers.get("Stripe-Context")
                )
                if on_behalf == account.id:
                    # The key's own account, named as Stripe lets any account name
                    # itself (dj-stripe does on every call): as if not named.
                    on_behalf = None
                if not path.startswith("/_sandbox/"):
                    with account.lock:
                        account.request_log.append((method, path, on_behalf or None))
                if on_behalf:
                    account = connected_account(self.server.world, account, on_behalf)
            found = self.server.router.match(method, path)
            if found is None:
                raise StripeError(
                    404,
                    f"Unrecognized request URL ({method}: {path}). Please see https://docs.stripe.com/api.",
                )
            route, path_params = found
            if publishable and not route.publishable:
                raise StripeError(401, PUBLISHABLE_REFUSED)
            fault: Fault | None = None
            idempotency_key: str | None = None
            if not route.control:
                with account.lock:
                    account.requests[f"{method} {route.pattern}"] += 1
                if over_rate_limit(account):
                    raise rate_limited()
                fault = take_fault(account, method, path)
                if fault is not None and not fault.after_commit:
                    self._fail(fault, request_id)
                    return
                if method == "POST":
                    idempotency_key = self.headers.get("Idempotency-Key")
                    if idempotency_key is not None:
                        extra["Idempotency-Key"] = idempotency_key
                        if len(idempotency_key) > MAX_IDEMPOTENCY_KEY_LENGTH:
                            raise StripeError(
                                400,
                                f"Keys for idempotent requests can only be {MAX_IDEMPOTENCY_KEY_LENGTH} characters long.",
                                param="Idempotency-Key",
                            )
            params = legacy_params(method, path, params)
            request = Request(
                self.server.world, account, request_id, idempotency_key,
                method=method, path=path, params=params, path_params=path_params,
                publishable=publishable,
                api_version=self.headers.get("Stripe-Version") or default_version(account),
            )  # fmt: skip
            status, body, headers, replayed = self._execute(route.handler, request)
        except StripeError as error:
            self._send_error(error, request_id, extra)
            return
        if replayed is not None:
            self._send(
                status, body, {"Request-Id": replayed, **extra, "Idempotent-Replayed": "true"}
            )
            return
        if fault is not None:
            self.server.world.deliverer.enqueue(account, request.events)
            self._fail(fault, request_id)
            return
        # Queued (held, or handed to the delivery thread) before the answer:
        # once a client has the answer, the call's events are on their way.
        if request.events:
            self.server.world.deliverer.enqueue(account, request.events)
        self._send(status, body, {"Request-Id": request_id, **extra, **headers})

    def _execute(
        self, handler: Any, request: Request
    ) -> tuple[int, bytes, dict[str, str], str | None]:
        """Run ``handler`` under the account lock.

        Returns (status, body, headers, the replayed request id or None).
        Errors raised once the handler ran are answers like any other (and
        saved for the Idempotency-Key when Stripe saves them).

        Raises:
            StripeError: ``idempotency_error`` for a key reused with other parameters.
        """
        account: Account = request.account
        key = request.idempotency_key
        with account.lock:
            fingerprint = ""
            if key is not None:
                fingerprint = _fingerprint(request.method, request.path, request.params)
                saved = account.idempotency.get(key)
                if saved is not None and saved.created + IDEMPOTENCY_WINDOW_SECONDS < request.now():
                    saved = None
                if saved is not None:
                    if saved.fingerprint != fingerprint:
                        raise StripeError(
                            400,
                            f"Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{key}' if you meant to execute a different request.",
                            type="idempotency_error",
                        )
                    return saved.status, saved.body, {}, saved.request_id
            headers: dict[str, str] = {}
            if request.api_version:
                headers["Stripe-Version"] = request.api_version
            save = True
            try:
                # Bank debits whose settlement time has passed settle first.
                settle_due(request)
                result = handler(request)
                status = 200
                expand_paths = request.params.get("expand") or []
                render = renderer(account, request.api_version)
                if render is not None:
                    result = render(copy(result))
                if expand_paths:
                    result = expand(account, copy(result), list(expand_paths), render)
                body = json.dumps(result, indent=2).encode()
                if request.redirect is not None:
                    status, headers["Location"] = 302, request.redirect
            except StripeError as error:
                status, save = error.status, error.save_idempotent
                headers = {**headers, **error.headers}
                body = json.dumps(error.body(request.request_id), indent=2).encode()
            except Exception as exc:  # a handler bug, answered as Stripe answers its own
                internal = StripeError(500, f"Sandbox internal error: {exc!r}", type="api_error")
                status = 500
                body = json.dumps(internal.body(request.request_id), indent=2).encode()
            if key is not None and save:
                account.idempotency[key] = SavedResponse(
                    fingerprint, status, body, request.request_id, request.now()
                )
        return status, body, headers, None
