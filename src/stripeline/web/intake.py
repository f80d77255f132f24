"""The webhook route's decisions, whatever serves it.

``stripeline serve`` and ``Stripeline.asgi()`` answer webhooks from an event
loop with a group-commit writer (``web.asgi``); a WSGI app, Flask or Django
answers them from a request thread. Both take every decision here, so a
request gets the same answer, the same metric and the same log line
whichever way it came in:

1. ``refuse_*`` / ``WebhookIntake.refuse``: a request that will not be stored
   (too large, too slow, bad signature, not an event) is counted, logged and
   answered; nothing is stored.
2. ``WebhookIntake.accept``: verify the signature on the raw bytes, then read
   the envelope; the result is the event to store, or the refusal.
3. storing: ``WebhookIntake.store`` stores one event in its own transaction
   (synchronous servers); the ASGI route hands it to its writer instead.
4. ``WebhookIntake.stored`` / ``WebhookIntake.unavailable``: the answer once
   the event is committed (2xx) or could not be (503 with ``Retry-After``).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from stripeline import inbox
from stripeline.app import Stripeline
from stripeline.core.envelope import parse_envelope
from stripeline.core.signature import verify
from stripeline.db.engine import connect, current_revision, head_revision, sqlite_file
from stripeline.errors import DatabaseUnavailable, EnvelopeError, SignatureError
from stripeline.log import get_logger
from stripeline.sync.thin import thin_due_at
from stripeline.web.writer import _refused, log_ingest_failure

__all__ = ["ENDPOINTS", "WebhookAnswer", "WebhookIntake", "readiness"]

log = get_logger("stripeline.web")

#: Webhook endpoint name → the ``source`` recorded on the event's delivery.
ENDPOINTS = {"account": "webhook", "connect": "connect"}

#: Seconds a client should wait before sending a 503-answered event again.
RETRY_AFTER = "5"


@dataclass(frozen=True)
class WebhookAnswer:
    """What to answer a webhook request: status, JSON body and headers."""

    status: int
    body: dict[str, Any]
    #: The outcome counted in ``stripeline_webhooks_total`` (stored, duplicate,
    #: ignored, bad_signature, bad_payload, too_large, …).
    outcome: str
    headers: Mapping[str, str] = field(default_factory=dict)

    def content(self) -> bytes:
        """The body as JSON bytes (``application/json``)."""
        return json.dumps(self.body, separators=(",", ":")).encode()


class WebhookIntake:
    """Verify, read and (for synchronous servers) store webhooks for ``app``."""

    def __init__(self, app: Stripeline, *, on_commit: Callable[[], None] | None = None) -> None:
        self.app = app
        self.settings = app.settings
        self.metrics = app.metrics
        self._on_commit = on_commit
        #: ``stripeline_webhooks_total``'s series by (endpoint, outcome): found
        #: once, not through ``labels()`` (a lock and a lookup) per request.
        self._counters: dict[tuple[str, str], Any] = {}

    def count(self, endpoint: str, outcome: str) -> None:
        """Count one request in ``stripeline_webhooks_total``."""
        counter = self._counters.get((endpoint, outcome))
        if counter is None:
            counter = self.metrics.webhooks.labels(endpoint, outcome)
            self._counters[(endpoint, outcome)] = counter
        counter.inc()

    # -- refusals ------------------------------------------------------------

    def refuse(
        self,
        endpoint: str,
        outcome: str,
        reason: str,
        message: str,
        *,
        client: str | None = None,
        status: int = 400,
        error: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> WebhookAnswer:
        """Refuse a webhook request: counted, logged, answered; nothing stored."""
        self.count(endpoint, outcome)
        log.warning(
            "webhook_rejected",
            action="webhook_rejected",
            endpoint=endpoint,
            outcome=outcome,
            reason=reason,
            client=client,
        )
        return WebhookAnswer(
            status,
            {"error": error or outcome, "reason": reason, "message": message},
            outcome,
            dict(headers or {}),
        )

    def not_configured(self, endpoint: str) -> WebhookAnswer | None:
        """404 for the Connect endpoint when no Connect secret is set, else None."""
        if endpoint == "connect" and not self.app.webhook_secrets(endpoint):
            return WebhookAnswer(
                404,
                {"error": "not_configured", "message": "STRIPE_CONNECT_WEBHOOK_SECRET is not set"},
                "not_configured",
            )
        return None

    def too_large(self, endpoint: str, *, client: str | None = None) -> WebhookAnswer:
        limit = self.settings.body_limit
        return self.refuse(
            endpoint,
            "too_large",
            "too_large",
            f"body over {limit} bytes",
            client=client,
            status=413,
        )

    def too_slow(self, endpoint: str, *, client: str | None = None) -> WebhookAnswer:
        return self.refuse(
            endpoint,
            "too_slow",
            "body_timeout",
            f"body not received within {self.settings.body_timeout:g} s",
            client=client,
            status=408,
            error="timeout",
            headers={"Connection": "close"},
        )

    def disconnected(self, endpoint: str, *, client: str | None = None) -> WebhookAnswer:
        """The client went away (or broke the framing) before its body was whole."""
        return self.refuse(
            endpoint, "disconnected", "disconnected", "body not received whole", client=client
        )

    # -- the event -----------------------------------------------------------

    def accept(
        self,
        endpoint: str,
        body: bytes,
        signature: str | None,
        *,
        client: str | None = None,
    ) -> inbox.IncomingEvent | WebhookAnswer:
        """Verify ``body`` against ``signature`` (the ``Stripe-Signature``
        header), then read it: the event to store, or the refusal to answer."""
        try:
            signed_at = verify(
                body,
                signature,
                self._secrets(endpoint),
                now=time.time(),
                tolerance=self.settings.webhook_tolerance,
            )
        except SignatureError as exc:
            return self.refuse(endpoint, "bad_signature", exc.reason, exc.message, client=client)
        try:
            envelope, _ = parse_envelope(body)
        except EnvelopeError as exc:
            return self.refuse(endpoint, "bad_payload", exc.reason, exc.message, client=client)
        status = "pending" if envelope.livemode == self.settings.livemode else "ignored"
        received_at = inbox.utcnow()
        return inbox.IncomingEvent(
            envelope=envelope,
            payload=body,
            source=ENDPOINTS[endpoint],
            received_at=received_at,
            status=status,
            signed_at=signed_at,
            due_at=thin_due_at(self.settings, envelope, received_at),
        )

    def _secrets(self, endpoint: str) -> list[str]:
        """The endpoint's secrets, then the Event Destinations' (``STRIPE_THIN_WEBHOOK_SECRET``)."""
        secrets = self.app.webhook_secrets(endpoint)
        thin = [s.get_secret_value() for s in self.settings.thin_webhook_secrets]
        return secrets + [s for s in thin if s not in secrets] if thin else secrets

    def store(self, item: inbox.IncomingEvent) -> bool:
        """Store one event in its own committed transaction; True if it is new.

        Raises ``EnvelopeError`` when the database refuses a value of the
        event (it would refuse it again), ``DatabaseUnavailable`` otherwise.
        """
        try:
            with connect(self.app.engine) as conn:
                (new,) = inbox.store(conn, [item])
        except Exception as exc:
            log_ingest_failure(exc, [item.envelope.id])
            if _refused(exc):
                raise EnvelopeError(
                    "not_an_event", "the database cannot store a field of this event"
                ) from exc
            raise DatabaseUnavailable() from exc
        if new and item.status == "pending" and self._on_commit is not None:
            self._on_commit()
        return new

    def stored(
        self, endpoint: str, item: inbox.IncomingEvent, new: bool, *, started: float
    ) -> WebhookAnswer:
        """The 2xx for a committed event (``started``: ``time.perf_counter()``
        when the request began)."""
        envelope = item.envelope
        outcome = "ignored" if item.status == "ignored" else ("stored" if new else "duplicate")
        self.count(endpoint, outcome)
        self.metrics.ingest_seconds.observe(time.perf_counter() - started)
        if item.status == "ignored" and new:
            log.warning(
                "event_mode_mismatch",
                action="event_ignored",
                event_id=envelope.id,
                event_type=envelope.type,
                event_livemode=envelope.livemode,
                mode=self.settings.effective_mode,
            )
        return WebhookAnswer(
            200,
            {"received": True, "id": envelope.id, "duplicate": not new, "status": item.status},
            outcome,
        )

    def unavailable(self, endpoint: str, exc: DatabaseUnavailable) -> WebhookAnswer:
        """503 with ``Retry-After``: not stored, so the sender must send it again."""
        self.count(endpoint, "unavailable")
        return WebhookAnswer(
            503,
            {"error": "unavailable", "message": exc.message},
            "unavailable",
            {"Retry-After": RETRY_AFTER},
        )

    def receive(
        self,
        endpoint: str,
        body: bytes,
        signature: str | None,
        *,
        client: str | None = None,
        started: float | None = None,
    ) -> WebhookAnswer:
        """The whole route for a synchronous server, once the body is read
        (bounded by ``settings.body_limit``: see ``too_large``)."""
        started = time.perf_counter() if started is None else started
        refused = self.not_configured(endpoint)
        if refused is not None:
            return refused
        if len(body) > self.settings.body_limit:
            return self.too_large(endpoint, client=client)
        accepted = self.accept(endpoint, body, signature, client=client)
        if isinstance(accepted, WebhookAnswer):
            return accepted
        try:
            new = self.store(accepted)
        except EnvelopeError as exc:
            return self.refuse(endpoint, "bad_payload", exc.reason, exc.message, client=client)
        except DatabaseUnavailable as exc:
            return self.unavailable(endpoint, exc)
        return self.stored(endpoint, accepted, new, started=started)


@lru_cache(maxsize=1)
def _head() -> str | None:
    """The newest migration (read from the scripts once per process)."""
    return head_revision()


def readiness(app: Stripeline) -> tuple[bool, dict[str, Any]]:
    """``/readyz``'s checks: the database answers, its schema is current, and
    it takes writes (a full disk or a read-only database answers reads while
    every write fails). Returns (ready, checks)."""
    checks: dict[str, Any] = {}
    try:
        with connect(app.engine, readonly=True) as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except SQLAlchemyError as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
        return False, checks
    current = current_revision(app.engine)
    checks["migrations"] = (
        "ok"
        if current == _head()
        else f"not current (at {current}, need {_head()}): run stripeline migrate"
    )
    try:
        with app.engine.connect() as conn, conn.begin() as transaction:
            inbox.probe_write(conn)
            transaction.rollback()
        checks["writes"] = _disk_room(app) or "ok"
    except SQLAlchemyError as exc:
        orig = getattr(exc, "orig", None) or exc
        reason = str(orig).strip().splitlines()[0][:200] if str(orig).strip() else ""
        checks["writes"] = f"refused: {type(orig).__name__}: {reason}".rstrip(": ")
    ready = all(v == "ok" for v in checks.values()) and len(checks) == 3
    return ready, checks


#: Free bytes a SQLite database's volume needs, at the least, to be ready.
MIN_FREE_BYTES = 8 * 1024 * 1024


def _disk_room(app: Stripeline) -> str | None:
    """SQLite: why the database's volume is too full to take writes, or None.

    The write probe rolls back before SQLite needs a new page, so on a full
    disk it passes while every commit fails: the free space is read instead.
    At least ``MIN_FREE_BYTES``, and room for four bodies of the largest
    size accepted (``STRIPELINE_BODY_LIMIT``) and their WAL frames."""
    path = sqlite_file(app.engine)
    if path is None:
        return None
    try:
        free = shutil.disk_usage(os.path.dirname(path)).free
    except OSError as exc:
        return f"refused: the database's volume cannot be read: {exc.strerror or exc}"
    need = max(MIN_FREE_BYTES, 4 * app.settings.body_limit)
    if free >= need:
        return None
    return (
        f"refused: the database's volume has {free // 1024} KiB free, "
        f"less than the {need // 1024} KiB needed to take writes"
    )
