"""Every outcome of POST /webhooks/stripe, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.testclient import TestClient
from structlog.testing import capture_logs

from stripeline import ops
from stripeline.app import Stripeline
from stripeline.db.engine import connect, make_engine
from stripeline.db.models import Delivery, Event
from stripeline.settings import Settings
from stripeline.web import create_app
from stripeline.worker import Worker
from tests.factories import SECRET, encode, event, signed

Client = Callable[..., TestClient]


@pytest.fixture
def make_app(database_url: str) -> Iterator[Callable[..., Stripeline]]:
    apps: list[Stripeline] = []

    def build(**overrides: Any) -> Stripeline:
        settings = Settings(
            **{"stripe_webhook_secret": SECRET, "database_url": database_url, **overrides}
        )
        app = Stripeline(settings, engine=make_engine(database_url, sqlite_busy_timeout_ms=300))
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.dispose()


@pytest.fixture
def stripeline_app(make_app: Callable[..., Stripeline]) -> Stripeline:
    return make_app()


@pytest.fixture
def client(stripeline_app: Stripeline) -> Iterator[TestClient]:
    with TestClient(create_app(stripeline_app)) as c:
        yield c


def rows(app: Stripeline) -> list[Event]:
    with Session(app.engine, expire_on_commit=False) as session:
        return list(session.scalars(select(Event)))


def post(client: TestClient, payload: bytes, headers: dict[str, str]) -> Any:
    return client.post("/webhooks/stripe", content=payload, headers=headers)


def test_valid_event_is_stored_whole_then_200(
    client: TestClient, stripeline_app: Stripeline
) -> None:
    body = event("invoice.paid", account="acct_123")
    payload = encode(body)
    response = post(client, payload, signed(payload))
    assert response.status_code == 200
    assert response.json() == {
        "received": True,
        "id": body["id"],
        "duplicate": False,
        "status": "pending",
    }
    (row,) = rows(stripeline_app)
    stored = row
    assert stored.id == body["id"]
    assert stored.type == "invoice.paid"
    assert stored.account == "acct_123"
    assert stored.livemode is False
    assert stored.api_version == "2026-10-28.endive"
    assert stored.created == body["created"]
    assert stored.payload == payload
    assert stored.status == "pending"
    assert stored.deliveries == 1
    assert stored.source == "webhook"
    assert abs(stored.received_at.timestamp() - time.time()) < 60


def test_same_event_again_is_one_row_with_two_deliveries(
    client: TestClient, stripeline_app: Stripeline
) -> None:
    payload = encode(event())
    first = post(client, payload, signed(payload))
    second = post(client, payload, signed(payload, timestamp=int(time.time()) + 1))
    assert first.status_code == second.status_code == 200
    assert second.json()["duplicate"] is True
    (row,) = rows(stripeline_app)
    assert row.deliveries == 2
    with connect(stripeline_app.engine, readonly=True) as conn:
        assert conn.execute(select(func.count()).select_from(Delivery)).scalar_one() == 1
        detail = ops.get_event(conn, row.id)
        assert detail is not None
        assert [d["source"] for d in detail.deliveries] == ["webhook", "webhook"]
        assert detail.deliveries[0]["signed_at"] < detail.deliveries[1]["signed_at"]


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing_header"),
        ({"Stripe-Signature": "t=notanumber,v1=abc"}, "malformed_header"),
        ({"Stripe-Signature": "nonsense"}, "malformed_header"),
        ({"Stripe-Signature": f"t={int(time.time())},v1={'0' * 64}"}, "no_matching_signature"),
    ],
)
def test_bad_signature_headers_are_400_and_store_nothing(
    client: TestClient, stripeline_app: Stripeline, headers: dict[str, str], reason: str
) -> None:
    payload = encode(event())
    with capture_logs() as logs:
        response = post(client, payload, headers)
    assert response.status_code == 400
    assert response.json()["reason"] == reason
    assert rows(stripeline_app) == []
    rejected = [entry for entry in logs if entry.get("action") == "webhook_rejected"]
    assert rejected and rejected[0]["reason"] == reason
    assert all(payload.decode() not in json.dumps(entry, default=str) for entry in logs)


def test_wrong_secret_is_400(client: TestClient, stripeline_app: Stripeline) -> None:
    payload = encode(event())
    response = post(client, payload, signed(payload, "whsec_someone_elses_secret"))
    assert response.status_code == 400
    assert response.json()["reason"] == "no_matching_signature"
    assert rows(stripeline_app) == []


@pytest.mark.parametrize(
    ("offset", "reason"), [(-330, "timestamp_too_old"), (330, "timestamp_in_future")]
)
def test_stale_or_future_timestamp_is_400(
    client: TestClient, stripeline_app: Stripeline, offset: int, reason: str
) -> None:
    payload = encode(event())
    response = post(client, payload, signed(payload, timestamp=int(time.time()) + offset))
    assert response.status_code == 400
    assert response.json()["reason"] == reason
    assert rows(stripeline_app) == []


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"this is not json", "invalid_json"),
        (b"\xff\xfe\x00", "invalid_json"),
        (b"[1, 2, 3]", "not_an_event"),
        (b'{"id": "cus_1", "object": "customer"}', "not_an_event"),
        (b'{"id": "evt_1", "object": "event", "type": "x"}', "not_an_event"),
    ],
)
def test_signed_but_not_an_event_is_400(
    client: TestClient, stripeline_app: Stripeline, payload: bytes, reason: str
) -> None:
    response = post(client, payload, signed(payload))
    assert response.status_code == 400
    assert response.json()["reason"] == reason
    assert rows(stripeline_app) == []


def test_body_over_the_limit_is_413(make_app: Callable[..., Stripeline]) -> None:
    app = make_app(body_limit=4096)
    with TestClient(create_app(app)) as c:
        payload = encode(event(padding=5000))
        assert post(c, payload, signed(payload)).status_code == 413

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted while read
            yield payload[:3000]
            yield payload[3000:]

        response = c.post("/webhooks/stripe", content=chunks(), headers=signed(payload))
        assert response.status_code == 413
        small = encode(event())
        assert post(c, small, signed(small)).status_code == 200
    assert len(rows(app)) == 1


def test_event_of_the_other_mode_is_stored_ignored_and_never_processed(
    client: TestClient, stripeline_app: Stripeline
) -> None:
    seen: list[str] = []
    stripeline_app.on("*")(lambda e: seen.append(e.id))
    payload = encode(event(livemode=True))
    with capture_logs() as logs:
        response = post(client, payload, signed(payload))
    assert response.status_code == 200
    assert response.json()["status"] == "ignored"
    (row,) = rows(stripeline_app)
    assert row.status == "ignored"
    assert Worker(stripeline_app, listen=False).drain() == 0
    assert seen == []
    assert any(e["action"] == "event_ignored" and e["log_level"] == "warning" for e in logs)


def test_unhandled_type_is_stored_and_processed_as_no_op(
    client: TestClient, stripeline_app: Stripeline
) -> None:
    payload = encode(event("some.future_event_type", obj={"id": "x_1", "object": "thing"}))
    assert post(client, payload, signed(payload)).status_code == 200
    assert Worker(stripeline_app, listen=False).drain() == 1
    (row,) = rows(stripeline_app)
    assert row.status == "processed"


def test_connect_endpoint_uses_its_own_secrets(make_app: Callable[..., Stripeline]) -> None:
    connect_secret = "whsec_connect_secret_0001"
    app = make_app(stripe_connect_webhook_secret=connect_secret)
    with TestClient(create_app(app)) as c:
        payload = encode(event(account="acct_connected"))
        wrong = c.post("/webhooks/stripe/connect", content=payload, headers=signed(payload))
        assert wrong.status_code == 400
        right = c.post(
            "/webhooks/stripe/connect", content=payload, headers=signed(payload, connect_secret)
        )
        assert right.status_code == 200
    (row,) = rows(app)
    assert row.source == "connect"
    assert row.account == "acct_connected"


def test_connect_endpoint_without_secret_is_404(client: TestClient) -> None:
    payload = encode(event())
    response = client.post("/webhooks/stripe/connect", content=payload, headers=signed(payload))
    assert response.status_code == 404


def test_health_ready_and_metrics(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.json()
    payload = encode(event())
    post(client, payload, signed(payload))
    post(client, b"{}", {})
    text = client.get("/metrics").text
    assert 'stripeline_webhooks_total{endpoint="account",outcome="stored"} 1.0' in text
    assert 'stripeline_webhooks_total{endpoint="account",outcome="bad_signature"} 1.0' in text
    assert 'stripeline_queue_depth{status="pending"} 1.0' in text
    assert "stripeline_webhook_ingest_seconds_bucket" in text
    assert "stripeline_oldest_pending_age_seconds" in text
