"""Azure Event Grid deliveries through the HTTP push endpoint, offline: the
validation handshakes of both schemas, the shared secret, Stripe events from
the sandbox wrapped as Event Grid and CloudEvents events, into the inbox once."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import stripe
from pydantic import SecretStr, ValidationError
from sqlalchemy import select
from structlog.testing import capture_logs

from stripeline.app import Stripeline
from stripeline.db import connect
from stripeline.db.models import Event
from stripeline.errors import EnvelopeError
from stripeline.mirror._store import get_object
from stripeline.settings import Settings
from stripeline.sync.eventgrid import PATH, SECRET_HEADER, EventGridConsumer, unwrap
from stripeline.testing.env import _ServedApp
from stripeline.web import create_app
from stripeline.worker import Worker
from stripeline_sandbox import Sandbox

SECRET = "eg-secret-0123456789abcdef"
OLD_SECRET = "eg-secret-older-0123456789"
TOPIC = "/subscriptions/0000/resourceGroups/shop/providers/Microsoft.EventGrid/partnerTopics/stripe"


class Endpoint:
    """``create_app`` served with an Event Grid secret; ``url`` is its Event Grid route."""

    def __init__(self, sandbox: Sandbox, key: str, database_url: str) -> None:
        settings = Settings(
            stripe_secret_key=SecretStr(key),
            stripe_webhook_secret=SecretStr(sandbox.webhook_secret),
            stripe_event_grid_secret=SecretStr(f"{SECRET},{OLD_SECRET}"),
            stripe_api_base=sandbox.url,
            database_url=database_url,
            mirror_coalesce_seconds=0.0,
        )
        self.app = Stripeline(settings)
        # The session's sandbox clock may have been advanced by earlier tests
        # (its events are stamped ahead of our clock): read on its clock, as
        # reads from Stripe are on Stripe's (the same as ours).
        fetcher = self.app.fetcher
        assert fetcher is not None
        fetcher.reader.clock = lambda: float(sandbox.clock.now())  # type: ignore[attr-defined]
        self._served = _ServedApp(create_app(self.app))
        self.url = f"{self._served.url}{PATH}"

    def post(self, body: Any, *, code: str | None = SECRET, **headers: str) -> httpx.Response:
        params = {"code": code} if code is not None else {}
        return httpx.post(self.url, params=params, json=body, headers=headers)

    def rows(self) -> list[Any]:
        with connect(self.app.engine, readonly=True) as conn:
            return list(conn.execute(select(Event.id, Event.type, Event.source, Event.deliveries)))

    def close(self) -> None:
        self._served.close()
        self.app.dispose()


@pytest.fixture
def endpoint(stripe_sandbox: Sandbox, stripe_key: str, database_url: str) -> Iterator[Endpoint]:
    served = Endpoint(stripe_sandbox, stripe_key, database_url)
    yield served
    served.close()


def _raw(sandbox: Sandbox, key: str, path: str) -> dict[str, Any]:
    """A Stripe object exactly as the API shows it."""
    answer = httpx.get(f"{sandbox.url}{path}", headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200
    return dict(answer.json())


def _grid(data: dict[str, Any], event_id: str = "11111111-2222-3333-4444-555555555555") -> Any:
    """An Event Grid schema event, as a partner topic's subscription pushes it."""
    return {
        "id": event_id,
        "topic": TOPIC,
        "subject": str(data.get("type")),
        "eventType": str(data.get("type")),
        "eventTime": "2026-11-27T10:00:00Z",
        "data": data,
        "dataVersion": "1",
        "metadataVersion": "1",
    }


def _cloud(data: dict[str, Any], *, base64_data: bool = False) -> dict[str, Any]:
    """A CloudEvents 1.0 event (structured mode)."""
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        "source": TOPIC,
        "type": str(data.get("type")),
        "time": "2026-11-27T10:00:00Z",
        "datacontenttype": "application/json",
    }
    if base64_data:
        event["data_base64"] = base64.b64encode(json.dumps(data).encode()).decode()
    else:
        event["data"] = data
    return event


def test_the_subscription_validation_handshakes(endpoint: Endpoint) -> None:
    validation = [
        {
            "id": "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66",
            "topic": TOPIC,
            "subject": "",
            "data": {
                "validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6",
                "validationUrl": "https://rp-eastus2.eventgrid.azure.net/…",
            },
            "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "eventTime": "2026-11-27T10:00:00Z",
            "metadataVersion": "1",
            "dataVersion": "1",
        }
    ]
    answer = endpoint.post(validation, **{"aeg-event-type": "SubscriptionValidation"})
    assert answer.status_code == 200
    assert answer.json() == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
    # CloudEvents' abuse protection: an OPTIONS request naming its origin.
    options = httpx.options(
        endpoint.url,
        params={"code": SECRET},
        headers={"WebHook-Request-Origin": "eventgrid.azure.net"},
    )
    assert options.status_code == 200
    assert options.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"
    # Without the secret, or with a wrong one: nothing answered but 401.
    assert endpoint.post(validation, code=None).status_code == 401
    assert endpoint.post(validation, code=SECRET[:-1] + "X").status_code == 401
    assert httpx.options(endpoint.url, headers={"WebHook-Request-Origin": "x"}).status_code == 401
    assert endpoint.rows() == []


def test_stripe_events_land_in_the_inbox_once_and_are_processed(
    endpoint: Endpoint, stripe_sandbox: Sandbox, stripe_key: str, stripe_client: stripe.StripeClient
) -> None:
    """A snapshot event in the Event Grid schema (delivered twice, the second
    time authenticated by the old secret in a header), and the thin event of a
    change in CloudEvents (base64 data): one inbox row per change, processed
    into the mirror."""
    customer = stripe_client.v1.customers.create({"email": "grid@example.com"})
    stripe_client.v1.customers.update(customer.id, {"name": "Grid"})
    created_id, updated_id = stripe_sandbox.event_ids(key=stripe_key)[-2:]
    snapshot = _raw(stripe_sandbox, stripe_key, f"/v1/events/{created_id}")
    assert endpoint.post([_grid(snapshot)]).status_code == 200
    again = endpoint.post([_grid(snapshot)], code=None, **{SECRET_HEADER: OLD_SECRET})
    assert again.status_code == 200
    # The thin event of the update, as a thin destination would publish it.
    stripe_sandbox.add_event_destination(
        "http://127.0.0.1:9/none", ["v1.customer.updated"], key=stripe_key
    )
    stripe_client.v1.customers.update(customer.id, {"metadata": {"via": "grid"}})
    (thin,) = [
        e
        for e in _raw(stripe_sandbox, stripe_key, f"/v2/core/events?object_id={customer.id}")[
            "data"
        ]
        if e["type"] == "v1.customer.updated"
    ]
    note = {k: v for k, v in thin.items() if k not in ("data", "changes")}
    answer = httpx.post(
        endpoint.url,
        params={"code": SECRET},
        content=json.dumps(_cloud(note, base64_data=True)),
        headers={"Content-Type": "application/cloudevents+json; charset=utf-8"},
    )
    assert answer.status_code == 200
    latest = stripe_sandbox.event_ids(key=stripe_key)[-1]
    rows = {r.id: r for r in endpoint.rows()}
    assert set(rows) == {created_id, latest} and updated_id not in rows
    assert rows[created_id].deliveries == 2 and rows[created_id].source == "eventgrid"
    assert rows[latest].type == "customer.updated"
    assert Worker(endpoint.app, listen=False).drain(timeout=10)
    with connect(endpoint.app.engine, readonly=True) as conn:
        held = get_object(conn, customer.id)
    assert held is not None and held["metadata"] == {"via": "grid"} and held["name"] == "Grid"


def test_a_batch_with_an_event_that_is_not_stripes_stores_the_others_and_says_400(
    endpoint: Endpoint, stripe_sandbox: Sandbox, stripe_key: str, stripe_client: stripe.StripeClient
) -> None:
    stripe_client.v1.products.create({"name": "Batch"})
    event_id = stripe_sandbox.event_ids(key=stripe_key)[-1]
    good = _cloud(_raw(stripe_sandbox, stripe_key, f"/v1/events/{event_id}"))
    bad = _cloud({"hello": "world"})
    with capture_logs() as logs:
        answer = httpx.post(
            endpoint.url,
            params={"code": SECRET},
            content=json.dumps([good, bad]),
            headers={"Content-Type": "application/cloudevents-batch+json"},
        )
    assert answer.status_code == 400 and answer.json()["error"] == "not_an_event"
    assert [r.id for r in endpoint.rows()] == [event_id]
    assert [e["reason"] for e in logs if e.get("action") == "eventgrid_event_refused"] == [
        "not_an_event"
    ]
    # Not JSON, not events, an empty batch, too large, a wrong method: refused, nothing stored.
    assert httpx.post(endpoint.url, params={"code": SECRET}, content=b"{").status_code == 400
    assert endpoint.post([1, 2]).status_code == 400
    assert endpoint.post([]).status_code == 400
    huge = {"x": "y" * (endpoint.app.settings.body_limit + 1)}
    assert endpoint.post(huge).status_code == 413
    assert httpx.get(endpoint.url, params={"code": SECRET}).status_code == 405
    assert [r.id for r in endpoint.rows()] == [event_id]


def test_unwrap_and_the_consumer_refuse_what_is_not_an_event(sqlite_url: str) -> None:
    with pytest.raises(EnvelopeError, match="no eventType nor specversion"):
        unwrap({"data": {}})
    with pytest.raises(EnvelopeError, match=r"CloudEvent 1\.0"):
        unwrap({"specversion": "0.3", "data": {}})
    with pytest.raises(EnvelopeError, match="data is not an object"):
        unwrap({"eventType": "x", "data": "text"})
    with pytest.raises(EnvelopeError, match="base64 JSON"):
        unwrap({"specversion": "1.0", "data_base64": "not base64!"})
    with pytest.raises(EnvelopeError, match="not a string"):
        unwrap({"specversion": "1.0", "data_base64": 12})
    settings = Settings(database_url=sqlite_url)
    app = Stripeline(settings)
    try:
        with pytest.raises(ValueError, match="needs a secret"):
            EventGridConsumer(app.engine, settings)
        consumer = EventGridConsumer(app.engine, settings, secrets=[SECRET])
        handshake = consumer.handle("OPTIONS", {"code": SECRET}, {}, b"")
        assert handshake.status == 400  # an OPTIONS without WebHook-Request-Origin
        no_code = [{"eventType": "Microsoft.EventGrid.SubscriptionValidationEvent", "data": {}}]
        answer = consumer.handle("POST", {"code": SECRET}, {}, json.dumps(no_code).encode())
        assert answer.status == 400 and answer.body == {
            "error": "not_a_handshake",
            "message": "validationCode missing",
        }
    finally:
        app.dispose()
    with pytest.raises(ValidationError, match="too short"):
        Settings(database_url=sqlite_url, stripe_event_grid_secret=SecretStr("short"))
