"""Customers through the SDK, with their events and webhooks."""

from __future__ import annotations

import pytest
import stripe

from .conftest import Receiver


def test_customer_crud_emits_events(client: stripe.StripeClient, receiver: Receiver) -> None:
    customer = client.v1.customers.create({"email": "ada@example.com", "name": "Ada"})
    assert customer.object == "customer" and customer.id.startswith("cus_")
    assert client.v1.customers.retrieve(customer.id).email == "ada@example.com"
    updated = client.v1.customers.update(
        customer.id, {"name": "Ada L.", "metadata": {"user": "42"}}
    )
    assert updated.name == "Ada L."
    deleted = client.v1.customers.delete(customer.id)
    assert deleted.deleted is True
    assert client.v1.customers.retrieve(customer.id).to_dict().get("deleted") is True
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.update(customer.id, {"name": "x"})

    events = receiver.wait_for(lambda es: len(es) == 3)
    assert [e["type"] for e in events] == [
        "customer.created",
        "customer.updated",
        "customer.deleted",
    ]
    update = events[1]
    assert update["data"]["previous_attributes"] == {"name": "Ada", "metadata": {"user": ""}}
    assert update["data"]["object"]["name"] == "Ada L."
    assert update["request"]["id"].startswith("req_") and update["request"]["idempotency_key"]
    assert update["livemode"] is False and update["api_version"] == stripe.api_version
    listed = client.v1.events.list({"type": "customer.updated"})
    assert [e.id for e in listed.data] == [update["id"]]
    assert client.v1.events.retrieve(update["id"]).type == "customer.updated"
    assert len(client.v1.events.list({"types": ["customer.created", "customer.deleted"]}).data) == 2
    assert len(client.v1.events.list({"type": "customer.*"}).data) == 3


def test_list_by_email_and_search(client: stripe.StripeClient) -> None:
    ada = client.v1.customers.create({"email": "ada@example.com", "metadata": {"user_id": "7"}})
    client.v1.customers.create({"email": "bob@example.com", "metadata": {"user_id": "8"}})
    assert [c.id for c in client.v1.customers.list({"email": "ada@example.com"}).data] == [ada.id]
    found = client.v1.customers.search({"query": "email:'ada@example.com'"})
    assert [c.id for c in found.data] == [ada.id]
    found = client.v1.customers.search({"query": "metadata['user_id']:'7'"})
    assert [c.id for c in found.data] == [ada.id]
    found = client.v1.customers.search(
        {"query": "email~'example.com' AND -metadata['user_id']:'8'"}
    )
    assert [c.id for c in found.data] == [ada.id]
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.search({"query": "nonsense"})
