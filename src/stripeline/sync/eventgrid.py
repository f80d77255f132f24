"""Azure Event Grid deliveries into the inbox: the HTTP push endpoint.

An Event Destination of type ``azure_event_grid`` publishes Stripe's events
(thin or snapshot) to a partner topic in your Azure subscription; an event
subscription on that topic pushes them to a webhook: this endpoint
(``POST /webhooks/eventgrid`` of ``stripeline serve``, or
``EventGridConsumer.asgi`` mounted in your own ASGI app, or
``EventGridConsumer.handle`` called from an Azure Function or any framework).
Each event's ``data`` is the Stripe event; it goes into the same inbox as
the webhook routes, with the same deduplication (one row per event id; a
thin v1 event under its ``snapshot_event`` id).

Both delivery schemas are read:

- the **Event Grid schema**: a JSON array of ``{id, topic, subject,
  eventType, eventTime, data, dataVersion}``; the subscription's validation
  handshake arrives as one ``Microsoft.EventGrid.SubscriptionValidationEvent``
  and is answered ``{"validationResponse": <its validationCode>}``;
- **CloudEvents 1.0** (structured mode): one event
  (``application/cloudevents+json``) or a batch (a JSON array,
  ``application/cloudevents-batch+json``), ``data`` a JSON object or
  ``data_base64``; the abuse-protection handshake is an ``OPTIONS`` request
  with ``WebHook-Request-Origin``, answered with ``WebHook-Allowed-Origin``.

Event Grid deliveries carry no Stripe signature. Every request, handshakes
included, must carry one of the shared secrets configured
(``STRIPE_EVENT_GRID_SECRET``, comma-separated for rotation), either in the
endpoint URL's query (``?code=…``: Event Grid sends the URL as given, for
the handshakes too) or in a ``Stripeline-Event-Grid-Secret`` header (a
delivery property of the subscription, marked secret); it is compared in
constant time. Microsoft Entra ID (bearer token) authentication of the
webhook is not supported. A request that fails is answered 401 and stores
nothing; a batch with an event that is not a Stripe event is answered 400
once its Stripe events are stored (Event Grid then dead-letters the batch:
delivered again, the stored ones count as duplicates).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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

__all__ = [
    "PATH",
    "SECRET_HEADER",
    "SOURCE",
    "VALIDATION_EVENT",
    "EventGridAnswer",
    "EventGridConsumer",
    "unwrap",
]

log = get_logger("stripeline.eventgrid")

#: The inbox ``source`` of events that came through Event Grid.
SOURCE = "eventgrid"
#: Where ``stripeline serve`` answers Event Grid.
PATH = "/webhooks/eventgrid"
#: The header that may carry the shared secret (else the ``code`` query parameter).
SECRET_HEADER = "Stripeline-Event-Grid-Secret"  # noqa: S105 - a header name
#: The query parameter that may carry the shared secret.
SECRET_PARAMETER = "code"  # noqa: S105 - a parameter name
#: The Event Grid schema's subscription validation event.
VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"
#: Most events one request may carry (Event Grid batches at most 5,000).
MAX_EVENTS = 5_000


@dataclass(frozen=True, slots=True)
class EventGridAnswer:
    """What to answer one request: status, headers, JSON body (None: empty)."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None


def _refusal(status: int, reason: str, message: str) -> EventGridAnswer:
    return EventGridAnswer(status, {}, {"error": reason, "message": message})


def _cloud_event_data(event: Mapping[str, Any]) -> Any:
    if "data_base64" in event:
        raw = event["data_base64"]
        if not isinstance(raw, str):
            raise EnvelopeError("not_an_event", "data_base64 is not a string")
        try:
            return json.loads(base64.b64decode(raw, validate=True))
        except (binascii.Error, ValueError):
            raise EnvelopeError("invalid_json", "data_base64 is not base64 JSON") from None
    return event.get("data")


def unwrap(event: Mapping[str, Any]) -> bytes:
    """The Stripe event inside one Event Grid event (either schema), as JSON bytes.

    Raises:
        EnvelopeError: ``not_an_event`` when it is neither an Event Grid
            schema event nor a CloudEvent 1.0 with an object as ``data``;
            ``invalid_json`` for a ``data_base64`` that is not base64 JSON.
    """
    if "specversion" in event:
        if event.get("specversion") != "1.0":
            raise EnvelopeError("not_an_event", "not a CloudEvent 1.0")
        data = _cloud_event_data(event)
    elif "eventType" in event:
        data = event.get("data")
    else:
        raise EnvelopeError("not_an_event", "not an Event Grid event: no eventType nor specversion")
    if not isinstance(data, Mapping):
        raise EnvelopeError("not_an_event", "not an Event Grid event: data is not an object")
    return json.dumps(data, separators=(",", ":")).encode()


class EventGridConsumer:
    """Stores Event Grid-delivered Stripe events in the inbox of ``engine``."""

    def __init__(
        self, engine: Engine, settings: Settings, *, secrets: Sequence[str] | None = None
    ) -> None:
        """``secrets``: the shared secrets a request may carry; by default
        ``settings.event_grid_secrets`` (``STRIPE_EVENT_GRID_SECRET``).

        Raises:
            ValueError: no secret (the endpoint would trust anyone).
        """
        self.engine = engine
        self.settings = settings
        if secrets is None:
            secrets = [s.get_secret_value() for s in settings.event_grid_secrets]
        self._secrets = tuple(s.encode() for s in secrets if s)
        if not self._secrets:
            raise ValueError("an Event Grid endpoint needs a secret (STRIPE_EVENT_GRID_SECRET)")

    def authenticated(self, query: Mapping[str, str], headers: Mapping[str, str]) -> bool:
        """Whether the request carries one of the secrets (constant-time compares)."""
        offered = [
            query.get(SECRET_PARAMETER),
            headers.get(SECRET_HEADER) or headers.get(SECRET_HEADER.lower()),
        ]
        found = False
        for candidate in offered:
            if not candidate:
                continue
            given = candidate.encode()
            for secret in self._secrets:
                found |= hmac.compare_digest(given, secret)
        return found

    def handle(
        self,
        method: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes,
    ) -> EventGridAnswer:
        """Answer one request (``headers`` with lower-case names, or as sent)."""
        if not self.authenticated(query, headers):
            log.warning("eventgrid_unauthenticated", action="eventgrid_refused")
            return _refusal(401, "unauthenticated", "no valid Event Grid secret")
        if method.upper() == "OPTIONS":
            # CloudEvents' abuse protection (the webhook validation handshake).
            origin = headers.get("webhook-request-origin") or headers.get("WebHook-Request-Origin")
            if not origin:
                return _refusal(400, "not_a_handshake", "WebHook-Request-Origin missing")
            return EventGridAnswer(
                200, {"WebHook-Allowed-Origin": origin, "WebHook-Allowed-Rate": "*"}
            )
        if method.upper() != "POST":
            return _refusal(405, "method_not_allowed", "POST or OPTIONS")
        try:
            parsed = json.loads(body)
        except ValueError:
            return _refusal(400, "invalid_json", "body is not valid JSON")
        batch = parsed if isinstance(parsed, list) else [parsed]
        if not batch or len(batch) > MAX_EVENTS or not all(isinstance(e, dict) for e in batch):
            return _refusal(400, "not_an_event", "expected Event Grid events")
        if len(batch) == 1 and batch[0].get("eventType") == VALIDATION_EVENT:
            data = batch[0].get("data")
            code = data.get("validationCode") if isinstance(data, dict) else None
            if not isinstance(code, str) or not code:
                return _refusal(400, "not_a_handshake", "validationCode missing")
            log.info("eventgrid_subscription_validated", action="eventgrid_validated")
            return EventGridAnswer(200, {}, {"validationResponse": code})
        items: list[inbox.IncomingEvent] = []
        refused: list[str] = []
        for event in batch:
            try:
                items.append(self.accept(event))
            except EnvelopeError as exc:
                refused.append(exc.reason)
                log.warning(
                    "eventgrid_event_refused",
                    action="eventgrid_event_refused",
                    reason=exc.reason,
                    error=exc.message[:300],
                    eventgrid_id=str(event.get("id"))[:255],
                )
        if items:
            with connect(self.engine) as conn:
                inbox.store(conn, items)
        if refused:
            return _refusal(
                400, refused[0], f"{len(refused)} of {len(batch)} events are not Stripe events"
            )
        return EventGridAnswer(200)

    def accept(self, event: Mapping[str, Any]) -> inbox.IncomingEvent:
        """The inbox event for one Event Grid event.

        Raises:
            EnvelopeError: see ``unwrap`` and ``core.envelope.parse_envelope``.
        """
        payload = unwrap(event)
        envelope, _ = parse_envelope(payload)
        received_at = inbox.utcnow()
        return inbox.IncomingEvent(
            envelope=envelope,
            payload=payload,
            source=SOURCE,
            received_at=received_at,
            status="pending" if envelope.livemode == self.settings.livemode else "ignored",
            due_at=thin_due_at(self.settings, envelope, received_at),
        )

    async def respond(self, request: Any) -> Any:
        """A Starlette endpoint answering Event Grid: ``Route(PATH,
        consumer.respond, methods=["POST", "OPTIONS"])`` (bodies over
        ``settings.body_limit`` are refused with 413, nothing stored)."""
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import JSONResponse, Response

        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.settings.body_limit:
                return JSONResponse(
                    {"error": "too_large", "message": "body over the limit"}, status_code=413
                )
        answer = await run_in_threadpool(
            self.handle, request.method, dict(request.query_params), dict(request.headers), body
        )
        if answer.body is None:
            return Response(status_code=answer.status, headers=dict(answer.headers))
        return JSONResponse(answer.body, status_code=answer.status, headers=dict(answer.headers))

    async def asgi(self, scope: Any, receive: Any, send: Any) -> None:
        """The same as an ASGI app, for ``Mount`` or another framework's mount."""
        from starlette.requests import Request

        response = await self.respond(Request(scope, receive))
        await response(scope, receive, send)
