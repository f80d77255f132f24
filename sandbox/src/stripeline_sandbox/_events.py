"""Events: created by ``Call.emit``, listed and retrieved at ``/v1/events``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stripeline_sandbox._errors import invalid, no_such
from stripeline_sandbox._ids import new_id
from stripeline_sandbox._lists import list_object
from stripeline_sandbox._objects import copy
from stripeline_sandbox._routes import Call, Endpoint, Request
from stripeline_sandbox._state import API_VERSION, Obj

#: Stripe keeps events for 30 days.
EVENT_RETENTION_SECONDS = 30 * 24 * 3600


def create_event(call: Call, type: str, obj: Obj, previous: Obj | None = None) -> Obj:
    """Store the Event for ``obj`` (snapshotted now) and return it."""
    data: Obj = {"object": copy(obj)}
    if previous:
        data["previous_attributes"] = copy(previous)
    event: Obj = {
        "id": new_id("evt"),
        "object": "event",
        "api_version": API_VERSION,
        "created": call.now(),
        "data": data,
        "livemode": False,
        "pending_webhooks": 0,
        "request": {"id": call.request_id, "idempotency_key": call.idempotency_key},
        "type": type,
    }
    if call.account.platform is not None:
        # An event of a connected account (Stripe-Account) names it.
        event["account"] = call.account.key
    call.account.add(event)
    return event


def _visible(call: Call, event: Obj) -> bool:
    return int(event["created"]) >= call.now() - EVENT_RETENTION_SECONDS


def _type_matcher(params: dict[str, Any]) -> Callable[[Obj], bool]:
    patterns: list[str] = []
    if params.get("type"):
        patterns.append(str(params["type"]))
    types = params.get("types")
    if types:
        if params.get("type"):
            raise invalid("You may only specify one of these parameters: type, types.")
        patterns.extend(str(t) for t in (types if isinstance(types, list) else [types]))

    def match(event: Obj) -> bool:
        if not patterns:
            return True
        return any(_matches(p, str(event["type"])) for p in patterns)

    return match


def _matches(pattern: str, event_type: str) -> bool:
    if pattern.endswith("*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


def list_events(request: Request) -> Obj:
    match = _type_matcher(request.params)
    success = request.params.get("delivery_success")

    def keep(event: Obj) -> bool:
        if not (_visible(request, event) and match(event)):
            return False
        if success is not None:
            delivered = bool(event["pending_webhooks"] == 0)
            return delivered is (success == "true")
        return True

    return list_object(request, request.account.all("event"), "/v1/events", keep)


def retrieve_event(request: Request) -> Obj:
    event = request.get("event", request.path_params["id"])
    if not _visible(request, event):
        raise no_such("event", event["id"])
    return event


#: This module's endpoints; ``_app.build_router`` puts every module's table together.
ROUTES: tuple[Endpoint, ...] = (
    Endpoint("GET", "/v1/events", list_events),
    Endpoint("GET", "/v1/events/{id}", retrieve_event),
)
