"""Test data: Stripe-shaped events and signed webhook requests."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, text

from stripeline import inbox
from stripeline.core.envelope import parse_envelope
from stripeline.core.signature import sign
from stripeline.db.engine import connect, null_pool_engine

SECRET = "whsec_test_webhook_secret_0001"
_ids = itertools.count(1)


def event(
    type: str = "customer.updated",
    *,
    id: str | None = None,
    obj: dict[str, Any] | None = None,
    created: int | None = None,
    livemode: bool = False,
    account: str | None = None,
    previous_attributes: dict[str, Any] | None = None,
    padding: int = 0,
) -> dict[str, Any]:
    """A current-API-shaped event envelope around ``obj``."""
    n = next(_ids)
    obj = obj or {"id": f"cus_{n:08d}", "object": "customer", "email": f"u{n}@example.com"}
    if padding:
        obj = {**obj, "metadata": {"padding": "x" * padding}}
    data: dict[str, Any] = {"object": obj}
    if previous_attributes is not None:
        data["previous_attributes"] = previous_attributes
    body: dict[str, Any] = {
        "id": id or f"evt_test_{n:010d}",
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": created if created is not None else int(time.time()),
        "data": data,
        "livemode": livemode,
        "pending_webhooks": 1,
        "request": {"id": f"req_{n}", "idempotency_key": None},
        "type": type,
    }
    if account:
        body["account"] = account
    return body


def encode(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def signed(payload: bytes, secret: str = SECRET, *, timestamp: int | None = None) -> dict[str, str]:
    """Headers for a webhook POST of ``payload``."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {"Stripe-Signature": sign(payload, secret, ts), "Content-Type": "application/json"}


def store_events(
    target: Engine | Connection,
    bodies: Iterable[Mapping[str, Any] | bytes],
    *,
    at: datetime | None = None,
    source: str = "webhook",
    signed_at: int | None = None,
    status: str = "pending",
) -> list[bool]:
    """Put events in the inbox with ``inbox.store``; what it returns (per
    event, True when new).

    A body is an event dict (stored as ``encode`` makes it) or the payload's
    bytes as they are. All are received ``at``; None: each at ``inbox.utcnow()``
    as it comes, so they stand in the inbox in the order given. An engine: in
    a transaction of its own; a connection: in the caller's.
    """
    items = []
    for body in bodies:
        payload = body if isinstance(body, bytes) else encode(body)
        items.append(
            inbox.IncomingEvent(
                envelope=parse_envelope(payload)[0],
                payload=payload,
                source=source,
                received_at=inbox.utcnow() if at is None else at,
                signed_at=signed_at,
                status=status,
            )
        )
    if isinstance(target, Connection):
        return inbox.store(target, items)
    with connect(target) as conn:
        return inbox.store(conn, items)


def other_backends(database_url: str, *, within: float = 5.0) -> int:
    """Connections to this test's PostgreSQL database other than the one
    asking, once the closed ones are gone: a backend whose client closed the
    connection leaves ``pg_stat_activity`` a moment later, an open one never."""
    checker = null_pool_engine(database_url)
    deadline = time.monotonic() + within
    try:
        # Autocommit: each look is a transaction of its own, with fresh statistics.
        with checker.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            while True:
                found = int(
                    conn.execute(
                        text(
                            "SELECT count(*) FROM pg_stat_activity"
                            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                        )
                    ).scalar_one()
                )
                if found == 0 or time.monotonic() > deadline:
                    return found
                time.sleep(0.02)
    finally:
        checker.dispose()
