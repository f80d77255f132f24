"""What the console's tests share: an app with the console on, users, events."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from functools import cache
from typing import Any

from stripeline import inbox
from stripeline.app import Stripeline
from stripeline.db.engine import connect, make_engine
from stripeline.settings import Settings
from stripeline.web.console import hash_password
from tests.factories import SECRET, store_events

CONSOLE_SECRET = "console-secret-for-tests-0123456789abcdef"
ADMIN = ("ada", "correct horse battery staple")
READER = ("rita", "read only but curious enough")


@cache
def users_setting() -> str:
    """Both users, hashed once per session (argon2 is slow on purpose)."""
    return (
        f"{ADMIN[0]}:admin:{hash_password(ADMIN[1])}\n{READER[0]}:read:{hash_password(READER[1])}"
    )


def console_app(database_url: str, **overrides: Any) -> Stripeline:
    given: dict[str, Any] = {
        "stripe_webhook_secret": SECRET,
        "database_url": database_url,
        "console_secret": CONSOLE_SECRET,
        "console_users": users_setting(),
        **overrides,
    }
    settings = Settings(**given)
    return Stripeline(settings, engine=make_engine(database_url))


def store(app: Stripeline, bodies: Iterable[dict[str, Any]], *, at: datetime | None = None) -> None:
    """Put events in the inbox as the webhook route does."""
    now = at or inbox.utcnow()
    store_events(app.engine, bodies, at=now, signed_at=int(now.timestamp()))


def status_of(app: Stripeline, event_id: str) -> str:
    with connect(app.engine, readonly=True) as conn:
        row = conn.execute(
            inbox.events.select()
            .with_only_columns(inbox.events.c.status)
            .where(inbox.events.c.id == event_id)
        ).first()
    assert row is not None
    return str(row[0])


def customer_events(customer_id: str = "cus_console01") -> list[dict[str, Any]]:
    """A customer, their subscription and a paid invoice, as Stripe sends them."""
    from tests.factories import event

    now = int(inbox.utcnow().timestamp())
    return [
        event(
            "customer.created",
            obj={
                "id": customer_id,
                "object": "customer",
                "email": "grace@example.com",
                "name": "Grace Hopper",
                "currency": "eur",
                "balance": 0,
                "created": now - 86400,
            },
        ),
        event(
            "customer.subscription.created",
            obj={
                "id": "sub_console01",
                "object": "subscription",
                "customer": customer_id,
                "status": "active",
                "currency": "eur",
                "created": now - 86400,
                "current_period_start": now - 3600,
                "current_period_end": now + 30 * 86400,
                "cancel_at_period_end": False,
                "latest_invoice": "in_console01",
                "items": {"object": "list", "data": [], "has_more": False},
            },
        ),
        event(
            "invoice.paid",
            obj={
                "id": "in_console01",
                "object": "invoice",
                "customer": customer_id,
                "status": "paid",
                "currency": "eur",
                "amount_due": 1900,
                "amount_paid": 1900,
                "amount_remaining": 0,
                "number": "GH-0001",
                "created": now - 3600,
                "lines": {"object": "list", "data": [], "has_more": False, "total_count": 0},
            },
        ),
    ]
