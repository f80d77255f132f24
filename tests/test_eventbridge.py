"""EventBridge-delivered events through an emulated SQS queue (moto's server
mode: real HTTP, no AWS account) and a Lambda handler, into the inbox once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import stripe
from pydantic import SecretStr
from sqlalchemy import select

from stripeline.app import Stripeline
from stripeline.db import connect
from stripeline.db.models import Event
from stripeline.errors import EnvelopeError
from stripeline.mirror._store import get_object
from stripeline.settings import Settings
from stripeline.sync.eventbridge import EventBridgeConsumer, unwrap
from stripeline.worker import Worker
from stripeline_sandbox import Sandbox

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

SOURCE = "aws.partner/stripe.com/ed_test_61Rk"


@pytest.fixture(scope="module")
def sqs_endpoint() -> Iterator[str]:
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def sqs(sqs_endpoint: str) -> Any:
    return boto3.client(
        "sqs",
        endpoint_url=sqs_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _envelope(detail: dict[str, Any], source: str = SOURCE) -> str:
    """What an EventBridge rule puts on its SQS target."""
    return json.dumps(
        {
            "version": "0",
            "id": "a1b2c3d4-0000-0000-0000-000000000000",
            "detail-type": detail["type"],
            "source": source,
            "account": "123456789012",
            "time": "2026-11-27T10:00:00Z",
            "region": "us-east-1",
            "resources": [],
            "detail": detail,
        }
    )


def _thin_event(
    sandbox: Sandbox, key: str, client: stripe.StripeClient
) -> tuple[str, dict[str, Any]]:
    """A real thin event of the sandbox (a destination wanted it): (customer id, event)."""
    sandbox.add_event_destination("http://127.0.0.1:9/none", ["v1.customer.created"], key=key)
    customer = client.v1.customers.create({"email": "eb@example.com"})
    (event,) = client.v2.core.events.list({"object_id": customer.id}).data
    notification = {k: v for k, v in event.to_dict().items() if k not in ("data", "changes")}
    return customer.id, notification


def test_a_message_delivered_twice_lands_once_and_is_processed(
    stripe_sandbox: Sandbox,
    stripe_key: str,
    stripe_client: stripe.StripeClient,
    database_url: str,
    sqs: Any,
) -> None:
    settings = Settings(
        stripe_secret_key=SecretStr(stripe_key),
        stripe_api_base=stripe_sandbox.url,
        database_url=database_url,
        mirror_coalesce_seconds=0,
    )
    app = Stripeline(settings)
    seen: list[str] = []
    app.on("customer.created")(lambda event: seen.append(event.data["data"]["object"]["email"]))
    customer_id, notification = _thin_event(stripe_sandbox, stripe_key, stripe_client)
    queue_url = sqs.create_queue(QueueName=f"stripe-{stripe_key[-8:]}")["QueueUrl"]
    body = _envelope(notification)
    sqs.send_message(QueueUrl=queue_url, MessageBody=body)
    sqs.send_message(QueueUrl=queue_url, MessageBody=body)  # EventBridge is at-least-once
    sqs.send_message(QueueUrl=queue_url, MessageBody=_envelope(notification, "aws.events"))

    consumer = EventBridgeConsumer(app.engine, settings, sources=[SOURCE])
    stored = 0
    for _ in range(5):
        stored += consumer.consume(sqs, queue_url)
    assert stored == 2
    # The same event through a Lambda function (SQS-triggered): still one row.
    answer = consumer.lambda_handler(
        {"Records": [{"messageId": "m1", "body": body}, {"messageId": "m2", "body": "{}"}]}
    )
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m2"}]}
    with connect(app.engine, readonly=True) as conn:
        rows = list(conn.execute(select(Event.id, Event.source, Event.deliveries)))
    assert rows == [(notification["snapshot_event"], "eventbridge", 3)]
    # The untrusted message stays on the queue (for its dead-letter queue).
    left = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
    )
    assert left["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "1"

    Worker(app, listen=False).drain()
    assert seen == ["eb@example.com"]
    with connect(app.engine, readonly=True) as conn:
        assert get_object(conn, customer_id)["email"] == "eb@example.com"  # type: ignore[index]
    app.dispose()


def test_unwrap_trusts_only_stripe_partner_sources() -> None:
    detail = {"id": "evt_1", "object": "event"}
    assert json.loads(unwrap(_envelope_dict(detail, SOURCE))) == detail
    with pytest.raises(EnvelopeError) as refused:
        unwrap(_envelope_dict(detail, "aws.partner/other.com/x"))
    assert refused.value.reason == "untrusted_source"
    with pytest.raises(EnvelopeError):
        unwrap(_envelope_dict(detail, "aws.partner/stripe.com/ed_other"), sources=[SOURCE])
    with pytest.raises(EnvelopeError):
        unwrap(b"not json")


def _envelope_dict(detail: dict[str, Any], source: str) -> dict[str, Any]:
    return {"source": source, "detail-type": "x", "detail": detail}
