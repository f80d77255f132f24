"""The shop against the sandbox: payments and a subscription made through its
views, webhooks delivered to its blueprint, processed by its worker thread."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

import stripeline
from flask_shop.tests.conftest import Shop
from stripeline.db.engine import connect
from stripeline.db.models import Event
from stripeline.testing import sign_event


def eventually(check: Callable[[], Any], timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, "not within the timeout"
        time.sleep(0.05)
    return result


def status_of(app: stripeline.Stripeline, event_id: str) -> str | None:
    with connect(app.engine, readonly=True) as conn:
        return conn.scalar(select(Event.status).where(Event.id == event_id))


def test_a_payment_is_recorded_by_its_handler(
    shop: Shop, stripeline_app: stripeline.Stripeline
) -> None:
    paid = shop.client.post("/pay", json={"user_id": "ada", "amount": 2500}).get_json()
    assert paid["status"] == "succeeded"

    def recorded() -> list[dict[str, Any]]:
        return list(shop.client.get("/purchases/ada").get_json()["purchases"])

    (purchase,) = eventually(recorded)
    assert (purchase["id"], purchase["kind"], purchase["amount"]) == (
        paid["payment_intent"],
        "payment",
        2500,
    )
    # The row was committed with its event's processed mark.
    assert status_of(stripeline_app, purchase["event_id"]) == "processed"


def test_a_subscription_grants_access_read_from_the_mirror(
    shop: Shop, stripeline_app: stripeline.Stripeline
) -> None:
    assert shop.client.get("/access/grace").get_json()["access"] is False
    subscribed = shop.client.post(
        "/subscribe", json={"user_id": "grace", "email": "grace@example.com"}
    ).get_json()
    assert subscribed["status"] == "active"
    access = eventually(lambda: shop.client.get("/access/grace").get_json()["access"])
    assert access is True
    assert shop.client.get("/access/grace").get_json()["subscriptions"] == [
        {"id": subscribed["subscription"], "status": "active"}
    ]
    invoices = eventually(
        lambda: [
            p
            for p in shop.client.get("/purchases/grace").get_json()["purchases"]
            if p["kind"] == "invoice"
        ]
    )
    assert [p["amount"] for p in invoices] == [900]
    assert status_of(stripeline_app, invoices[0]["event_id"]) == "processed"


def test_the_webhook_route_verifies_before_it_stores(
    shop: Shop, stripeline_app: stripeline.Stripeline
) -> None:
    event = {"id": "evt_forged", "object": "event", "type": "invoice.paid"}
    payload, headers = sign_event(event, "whsec_not_the_sandboxes")
    answer = shop.client.post("/stripe/webhooks/stripe", data=payload, headers=headers)
    assert answer.status_code == 400
    assert answer.get_json()["error"] == "bad_signature"
    assert status_of(stripeline_app, "evt_forged") is None
    assert shop.client.get("/stripe/readyz").get_json()["status"] == "ready"
