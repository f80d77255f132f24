"""Amazon EventBridge deliveries into the inbox: an SQS queue consumer and
an AWS Lambda handler.

An Event Destination of type ``amazon_eventbridge`` puts Stripe's events
(thin or snapshot) on a partner event bus; a rule sends them on to a target.
Two targets are supported, both unwrapping the EventBridge envelope
(``{"source": "aws.partner/stripe.com/…", "detail": <the Stripe event>}``)
into the same inbox as the webhook routes, with the same deduplication (one
row per event id; a thin v1 event under its ``snapshot_event`` id):

- an SQS queue: ``EventBridgeConsumer.consume(sqs, queue_url)`` receives a
  batch, stores it in one transaction, and deletes from the queue only what
  was committed (a crash in between redelivers: stored once anyway). A
  message that is not a Stripe event from a trusted source is left on the
  queue for its redrive policy (a dead-letter queue);
- a Lambda function: ``EventBridgeConsumer.lambda_handler`` takes an SQS
  batch (``Records``, answering ``batchItemFailures``) or an EventBridge
  event given directly.

EventBridge deliveries carry no Stripe signature: they are trusted through
AWS alone (IAM on the bus, the rule and the queue) and through their
``source``, which must be Stripe's partner source, and one of ``sources``
(your destination's, ``aws.partner/stripe.com/ed_…``) when given.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from stripeline import inbox
from stripeline.core.envelope import parse_envelope
from stripeline.db.engine import connect
from stripeline.errors import EnvelopeError
from stripeline.log import get_logger
from stripeline.sync.thin import thin_due_at

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from stripeline.settings import Settings

__all__ = ["SOURCE", "STRIPE_PARTNER_PREFIX", "EventBridgeConsumer", "unwrap"]

log = get_logger("stripeline.eventbridge")

#: The inbox ``source`` of events that came through EventBridge.
SOURCE = "eventbridge"
#: Every Stripe partner event source starts with this.
STRIPE_PARTNER_PREFIX = "aws.partner/stripe.com/"
#: SQS's largest batch.
MAX_MESSAGES = 10


def unwrap(message: Mapping[str, Any] | str | bytes, *, sources: Collection[str] = ()) -> bytes:
    """The Stripe event inside an EventBridge envelope, as JSON bytes.

    Raises:
        EnvelopeError: ``invalid_json`` for a message that is not JSON,
            ``not_an_event`` when it is not an EventBridge envelope with a
            ``detail`` object, ``untrusted_source`` when its ``source`` is not
            Stripe's partner source (or not one of ``sources``, when given).
    """
    if isinstance(message, Mapping):
        body: Any = message
    else:
        try:
            body = json.loads(message)
        except ValueError:
            raise EnvelopeError("invalid_json", "message is not valid JSON") from None
    if not isinstance(body, Mapping) or not isinstance(body.get("detail"), Mapping):
        raise EnvelopeError("not_an_event", "not an EventBridge event: detail missing")
    source = body.get("source")
    if not isinstance(source, str) or not source.startswith(STRIPE_PARTNER_PREFIX):
        raise EnvelopeError("untrusted_source", "not from Stripe's EventBridge partner source")
    if sources and source not in sources:
        raise EnvelopeError("untrusted_source", "from a Stripe event source not configured")
    return json.dumps(body["detail"], separators=(",", ":")).encode()


class EventBridgeConsumer:
    """Stores EventBridge-delivered Stripe events in the inbox of ``engine``."""

    def __init__(self, engine: Engine, settings: Settings, *, sources: Sequence[str] = ()) -> None:
        """``sources``: the partner event sources to trust
        (``aws.partner/stripe.com/ed_…``); empty: any Stripe partner source."""
        self.engine = engine
        self.settings = settings
        self.sources = tuple(sources)

    def accept(self, message: Mapping[str, Any] | str | bytes) -> inbox.IncomingEvent:
        """The event to store for one message.

        Raises:
            EnvelopeError: see ``unwrap`` and ``core.envelope.parse_envelope``.
        """
        payload = unwrap(message, sources=self.sources)
        envelope, _ = parse_envelope(payload)
        received_at = inbox.utcnow()
        livemode = self.settings.livemode
        return inbox.IncomingEvent(
            envelope=envelope,
            payload=payload,
            source=SOURCE,
            received_at=received_at,
            status="pending" if envelope.livemode == livemode else "ignored",
            due_at=thin_due_at(self.settings, envelope, received_at),
        )

    def store(self, items: Sequence[inbox.IncomingEvent]) -> list[bool]:
        """Store ``items`` in one transaction; per item, True when it is new."""
        with connect(self.engine) as conn:
            return inbox.store(conn, list(items))

    def _refused(self, exc: EnvelopeError, message_id: str | None) -> None:
        log.warning(
            "eventbridge_message_refused",
            action="eventbridge_message_refused",
            reason=exc.reason,
            error=exc.message[:300],
            message_id=message_id,
        )

    def consume(
        self,
        sqs: Any,
        queue_url: str,
        *,
        max_messages: int = MAX_MESSAGES,
        wait_seconds: int = 0,
    ) -> int:
        """Receive one batch from the SQS queue (``sqs``: a boto3 SQS client),
        store it, then delete what was stored; return how many were stored.

        Raises:
            sqlalchemy.exc.SQLAlchemyError: the batch could not be stored (it
                stays on the queue and comes back after its visibility timeout).
        """
        answer = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=max(1, min(max_messages, MAX_MESSAGES)),
            WaitTimeSeconds=wait_seconds,
        )
        messages = answer.get("Messages") or []
        items: list[inbox.IncomingEvent] = []
        handles: list[dict[str, str]] = []
        for message in messages:
            try:
                items.append(self.accept(message.get("Body") or ""))
            except EnvelopeError as exc:
                self._refused(exc, message.get("MessageId"))
                continue  # left for the queue's redrive policy
            handles.append(
                {"Id": str(len(handles)), "ReceiptHandle": str(message["ReceiptHandle"])}
            )
        if not items:
            return 0
        self.store(items)
        sqs.delete_message_batch(QueueUrl=queue_url, Entries=handles)
        return len(items)

    def lambda_handler(self, event: Mapping[str, Any], context: object = None) -> dict[str, Any]:
        """The handler of a Lambda function fed by SQS (``Records``; enable
        ``ReportBatchItemFailures``) or by the EventBridge rule directly.

        Raises:
            EnvelopeError: a direct EventBridge event that is not a Stripe
                event from a trusted source (Lambda retries, then drops or
                sends it to the function's dead-letter target).
        """
        records = event.get("Records")
        if records is None:
            self.store([self.accept(event)])
            return {}
        items: list[inbox.IncomingEvent] = []
        failures: list[dict[str, str]] = []
        for record in records:
            try:
                items.append(self.accept(record.get("body") or ""))
            except EnvelopeError as exc:
                self._refused(exc, record.get("messageId"))
                failures.append({"itemIdentifier": str(record.get("messageId"))})
        if items:
            self.store(items)
        return {"batchItemFailures": failures}
