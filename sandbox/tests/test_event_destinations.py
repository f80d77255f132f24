"""Event Destinations and thin events, through the official SDK."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import stripe

from stripeline_sandbox import Sandbox


class Inbox:
    """Keeps what arrives at a URL, with its Stripe-Signature header."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, str]] = []
        self._lock = threading.Lock()
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with inbox._lock:
                    inbox.received.append((body, self.headers.get("Stripe-Signature") or ""))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}
        )
        self.thread.start()

    def wait(self, count: int, timeout: float = 5.0) -> list[tuple[bytes, str]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.01)
        raise AssertionError(f"received {len(self.received)} of {count}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    box = Inbox()
    yield box
    box.close()


def _destination(client: stripe.StripeClient, url: str, events: list[str], payload: str) -> Any:
    return client.v2.core.event_destinations.create(
        {
            "name": f"{payload} destination",
            "type": "webhook_endpoint",
            "event_payload": payload,  # type: ignore[typeddict-item]
            "enabled_events": events,
            "webhook_endpoint": {"url": url},
            "include": ["webhook_endpoint.signing_secret"],
        }
    )


def test_thin_destination_gets_signed_v1_thin_events(
    sandbox: Sandbox, client: stripe.StripeClient, inbox: Inbox
) -> None:
    destination = _destination(
        client, inbox.url, ["v1.customer.created", "v1.customer.updated"], "thin"
    )
    secret = destination.webhook_endpoint.signing_secret
    assert secret and secret.startswith("whsec_")
    assert destination.event_payload == "thin"
    # Shown once: a retrieve does not show the secret.
    again = client.v2.core.event_destinations.retrieve(destination.id)
    assert again.webhook_endpoint is None or again.webhook_endpoint.signing_secret is None

    customer = client.v1.customers.create({"email": "thin@example.com"})
    client.v1.customers.update(customer.id, {"name": "Thin"})
    received = inbox.wait(2)
    notes: list[Any] = [
        client.parse_event_notification(body, sig, secret) for body, sig in received
    ]
    assert sorted(n.type for n in notes) == ["v1.customer.created", "v1.customer.updated"]
    for (body, _), note in zip(received, notes, strict=True):
        parsed = json.loads(body)
        assert parsed["object"] == "v2.core.event"
        assert "data" not in parsed
        assert note.related_object.id == customer.id
        assert note.related_object.url == f"/v1/customers/{customer.id}"
        # The snapshot event it stands for is a real v1 event of the same change.
        snapshot = client.v1.events.retrieve(parsed["snapshot_event"])
        assert "v1." + snapshot.type == note.type
        assert snapshot.data.object["id"] == customer.id
        # The related object and the full event can be fetched as the SDK does.
        fetched = note.fetch_related_object()
        assert fetched.id == customer.id and fetched.name == "Thin"
        full = note.fetch_event()
        assert full.id == note.id and full.type == note.type
    # Another secret does not verify.
    with pytest.raises(stripe.SignatureVerificationError):
        client.parse_event_notification(received[0][0], received[0][1], "whsec_other")


def test_snapshot_destination_and_v2_list(
    sandbox: Sandbox, key: str, client: stripe.StripeClient, inbox: Inbox
) -> None:
    snapshot_id, snapshot_secret = sandbox.add_event_destination(
        inbox.url, ["customer.created"], payload="snapshot", key=key
    )
    customer = client.v1.customers.create({"email": "snap@example.com"})
    ((body, sig),) = inbox.wait(1)
    event = stripe.Webhook.construct_event(body.decode(), sig, snapshot_secret)
    assert event.type == "customer.created" and event.data.object["id"] == customer.id
    # No thin destination wants it: no thin event was made.
    assert list(client.v2.core.events.list({"object_id": customer.id}).data) == []

    client.v2.core.event_destinations.disable(snapshot_id)
    client.v1.customers.update(customer.id, {"name": "x"})
    sandbox.wait_for_deliveries()
    assert len(inbox.received) == 1
    listed = client.v2.core.event_destinations.list()
    assert [d.id for d in listed.data] == [snapshot_id]
    assert listed.data[0].status == "disabled"


def test_health_event_goes_to_thin_destinations_only(
    sandbox: Sandbox, key: str, client: stripe.StripeClient, inbox: Inbox
) -> None:
    health = "v2.core.health.event_generation_failure.resolved"
    _, secret = sandbox.add_event_destination(inbox.url, [health], key=key)
    sandbox.listen(inbox.url + "/v1", key=key)  # a v1 endpoint wanting every event
    event_id = sandbox.emit_thin_event(health, data={"impact": {"event_type": "x"}}, key=key)
    ((body, sig),) = inbox.wait(1)
    note = client.parse_event_notification(body, sig, secret)
    assert note.id == event_id and note.type == health
    full = client.v2.core.events.retrieve(event_id)
    assert full.type == health
    sandbox.wait_for_deliveries()
    assert len(inbox.received) == 1


def test_thin_event_fetch_answers_injected_faults(
    sandbox: Sandbox, key: str, client: stripe.StripeClient, inbox: Inbox
) -> None:
    sandbox.add_event_destination(inbox.url, ["v1.customer.created"], key=key)
    customer = client.v1.customers.create({"email": "f@example.com"})
    ((body, _),) = inbox.wait(1)
    event_id = json.loads(body)["id"]
    sandbox.inject_fault("rate_limit", path="^/v2/core/events/", key=key, should_retry=False)
    with pytest.raises(stripe.RateLimitError):
        client.v2.core.events.retrieve(event_id, options={"max_network_retries": 0})
    fetched: Any = client.v2.core.events.retrieve(event_id)
    assert fetched.related_object.id == customer.id


def test_a_connected_accounts_changes_reach_the_platforms_destination_with_context(
    sandbox: Sandbox, key: str, client: stripe.StripeClient, inbox: Inbox
) -> None:
    """A destination with ``@accounts`` gets the connected accounts' thin events,
    ``context`` naming the account; a ``@self`` one does not. The object and the
    full event are read on behalf of the account (``Stripe-Account``, ``Stripe-Context``),
    and the request log shows it."""
    created = client.v2.core.event_destinations.create(
        {
            "name": "connect",
            "type": "webhook_endpoint",
            "event_payload": "thin",
            "events_from": ["@accounts"],
            "enabled_events": ["v1.customer.created"],
            "webhook_endpoint": {"url": inbox.url},
        }
    )
    assert created.events_from == ["@accounts"]
    sandbox.add_event_destination("http://127.0.0.1:9/self", ["*"], key=key)  # @self only
    connected = client.v1.accounts.create({"type": "express"}).id
    customer = client.v1.customers.create({"email": "c@example.com"}, {"stripe_account": connected})
    client.v1.customers.create({"email": "platform@example.com"})  # the platform's own: not sent
    (body, _), *rest = inbox.wait(1)
    assert sandbox.wait_for_deliveries(5) and not rest
    note = json.loads(body)
    assert note["type"] == "v1.customer.created" and note["context"] == connected
    assert note["related_object"]["id"] == customer.id
    assert note["snapshot_event"].startswith("evt_")
    read = client.v1.customers.retrieve(customer.id, options={"stripe_account": connected})
    assert read.email == "c@example.com"
    full = client.v2.core.events.retrieve(note["id"], options={"stripe_context": connected})
    assert full.id == note["id"]
    log = sandbox.request_log(key)
    assert ("GET", f"/v1/customers/{customer.id}", connected) in log
    assert ("GET", f"/v2/core/events/{note['id']}", connected) in log
    with pytest.raises(stripe.InvalidRequestError):
        client.v2.core.event_destinations.create(
            {
                "name": "bad",
                "type": "webhook_endpoint",
                "event_payload": "thin",
                "events_from": ["@everyone"],
                "enabled_events": ["*"],
                "webhook_endpoint": {"url": inbox.url},
            }
        )


@pytest.mark.parametrize("mode", ["pushed", "pulled", "none"])
def test_where_a_thin_event_shows_its_snapshot_event(
    sandbox: Sandbox, key: str, client: stripe.StripeClient, inbox: Inbox, mode: str
) -> None:
    sandbox.set_thin_events(snapshot_event=mode, key=key)
    sandbox.add_event_destination(inbox.url, ["v1.product.created"], key=key)
    client.v1.products.create({"name": "Shown"})
    ((body, _),) = inbox.wait(1)
    note = json.loads(body)
    full = client.v2.core.events.retrieve(note["id"])
    pushed, pulled = note.get("snapshot_event"), full.to_dict().get("snapshot_event")
    assert (pushed is not None, pulled is not None) == {
        "pushed": (True, True),
        "pulled": (False, True),
        "none": (False, False),
    }[mode]
    with pytest.raises(ValueError, match="snapshot_event"):
        sandbox.set_thin_events(snapshot_event="sometimes", key=key)
