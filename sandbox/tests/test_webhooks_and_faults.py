"""Webhook delivery modes and retries; injected faults; rate limits."""

from __future__ import annotations

import time

import pytest
import requests
import stripe

from stripeline_sandbox import Sandbox

from .conftest import Receiver


def test_endpoint_created_through_the_api_signs_with_its_own_secret(
    sandbox: Sandbox, client: stripe.StripeClient
) -> None:
    receiver = Receiver("")
    try:
        endpoint = client.v1.webhook_endpoints.create(
            {"url": receiver.url, "enabled_events": ["customer.created"]}
        )
        assert endpoint.secret is not None and endpoint.secret.startswith("whsec_")
        receiver.secret = endpoint.secret
        client.v1.customers.create()
        client.v1.customers.update(client.v1.customers.list().data[0].id, {"name": "x"})
        receiver.wait_for_type("customer.created")
        assert sandbox.wait_for_deliveries()
        assert receiver.types() == ["customer.created"]  # enabled_events filters
        assert "secret" not in client.v1.webhook_endpoints.retrieve(endpoint.id).to_dict()
        assert client.v1.webhook_endpoints.delete(endpoint.id).deleted is True
    finally:
        receiver.close()


def test_failed_deliveries_are_retried(
    sandbox: Sandbox, client: stripe.StripeClient, receiver: Receiver, key: str
) -> None:
    receiver.failures = [500, 503]
    client.v1.customers.create()
    event = receiver.wait_for_type("customer.created")[0]
    # The receiver answers before the sandbox records the attempt: wait for it.
    assert sandbox.wait_for_deliveries()
    attempts = [a for a in sandbox.delivery_attempts(key) if a.event_id == event["id"]]
    assert [a.status for a in attempts] == [500, 503, 200]
    assert client.v1.events.retrieve(event["id"]).pending_webhooks == 0


def test_duplicated_delivery(
    sandbox: Sandbox, key: str, client: stripe.StripeClient, receiver: Receiver
) -> None:
    sandbox.set_delivery(duplicate=2, key=key)
    client.v1.customers.create()
    events = receiver.wait_for_type("customer.created", 2)
    assert events[0]["id"] == events[1]["id"]


def test_held_deliveries_flush_out_of_order(
    sandbox: Sandbox, key: str, client: stripe.StripeClient, receiver: Receiver
) -> None:
    sandbox.set_delivery(hold=True, key=key)
    customer = client.v1.customers.create()
    client.v1.customers.update(customer.id, {"name": "a"})
    client.v1.customers.delete(customer.id)
    time.sleep(0.05)
    assert receiver.types() == []
    assert sandbox.flush_deliveries("reverse", key=key) == 3
    events = receiver.wait_for(lambda es: len(es) == 3)
    assert [e["type"] for e in events] == [
        "customer.deleted",
        "customer.updated",
        "customer.created",
    ]


def test_a_calls_events_are_queued_before_it_is_answered(
    sandbox: Sandbox, key: str, client: stripe.StripeClient, receiver: Receiver
) -> None:
    """Hold, call, flush at once (no sleep): the call's event is always among
    those flushed, because the sandbox queues it before it answers."""
    sandbox.set_delivery(hold=True, key=key)
    ids = []
    for n in range(100):
        customer = client.v1.customers.create({"name": f"c{n}"})
        assert sandbox.flush_deliveries(key=key) == 1, n
        ids.append(customer.id)
    events = receiver.wait_for(lambda es: len(es) >= 100)
    assert [e["data"]["object"]["id"] for e in events if e["type"] == "customer.created"] == ids


def test_delayed_delivery(
    sandbox: Sandbox, key: str, client: stripe.StripeClient, receiver: Receiver
) -> None:
    sandbox.set_delivery(delay=0.2, key=key)
    started = time.monotonic()
    client.v1.customers.create()
    receiver.wait_for_type("customer.created")
    assert time.monotonic() - started >= 0.2


@pytest.mark.parametrize(
    ("kind", "status", "error_type"),
    [
        ("api_error", 500, stripe.APIError),
        ("rate_limit", 429, stripe.RateLimitError),
        ("lock_timeout", 429, stripe.RateLimitError),
    ],
)
def test_status_faults(
    sandbox: Sandbox,
    key: str,
    client: stripe.StripeClient,
    kind: str,
    status: int,
    error_type: type[Exception],
) -> None:
    sandbox.inject_fault(kind, path=r"^/v1/customers$", method="POST", key=key)
    with pytest.raises(error_type) as caught:
        client.v1.customers.create()
    assert getattr(caught.value, "http_status", None) == status
    assert client.v1.customers.list().data == []  # nothing was committed
    client.v1.customers.create()  # the fault was used up


def test_sdk_retries_through_a_should_retry_fault(
    sandbox: Sandbox, key: str, http_client: stripe.RequestsClient
) -> None:
    client = stripe.StripeClient(
        key, base_addresses={"api": sandbox.url}, http_client=http_client, max_network_retries=2
    )
    sandbox.inject_fault("lock_timeout", count=1, key=key)
    assert client.v1.customers.create().id.startswith("cus_")


def test_disconnect_after_commit_then_idempotent_retry(
    sandbox: Sandbox, key: str, http_client: stripe.RequestsClient, receiver: Receiver
) -> None:
    client = stripe.StripeClient(
        key, base_addresses={"api": sandbox.url}, http_client=http_client, max_network_retries=1
    )
    sandbox.inject_fault("disconnect", path="/v1/customers", key=key)
    customer = client.v1.customers.create({"email": "once@example.com"})
    # The first attempt was committed; the SDK's retry reused its key and got the replay.
    assert customer.last_response is not None
    assert customer.last_response.headers.get("Idempotent-Replayed") == "true"
    assert len(client.v1.customers.list().data) == 1
    receiver.wait_for_type("customer.created")


def test_timeout_after_commit(sandbox: Sandbox, key: str) -> None:
    http = stripe.RequestsClient(timeout=0.3)
    try:
        client = stripe.StripeClient(key, base_addresses={"api": sandbox.url}, http_client=http)
        sandbox.inject_fault("timeout", delay=1.0, key=key)
        with pytest.raises(stripe.APIConnectionError):
            client.v1.customers.create()
        assert len(client.v1.customers.list().data) == 1
    finally:
        http.close()  # type: ignore[no-untyped-call]


def test_rate_limit_per_key(sandbox: Sandbox, key: str, client: stripe.StripeClient) -> None:
    sandbox.set_rate_limit(3, key=key)
    for _ in range(3):
        client.v1.customers.list()
    with pytest.raises(stripe.RateLimitError) as caught:
        client.v1.customers.list()
    assert caught.value.error is not None and caught.value.error.code == "rate_limit"
    sandbox.set_rate_limit(0, key=key)


def test_fault_control_over_http(sandbox: Sandbox, key: str, client: stripe.StripeClient) -> None:
    with requests.Session() as session:
        response = session.post(
            f"{sandbox.url}/_sandbox/faults",
            data={"kind": "api_error", "count": 2},
            headers={"Authorization": f"Bearer {key}"},
            timeout=5,
        )
        assert response.status_code == 200
    for _ in range(2):
        with pytest.raises(stripe.APIError):
            client.v1.customers.list()
    client.v1.customers.list()
