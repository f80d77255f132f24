"""Event Destinations (``/v2/core/event_destinations``) and thin events (``/v2/core/events``).

A destination of type ``webhook_endpoint`` receives either snapshot events
(the v1 ``event`` objects, as a ``/v1/webhook_endpoints`` endpoint does) or
thin events: ``v2.core.event`` notifications without the object, naming it in
``related_object`` (``{id, type, url}``) for the receiver to fetch. Each
destination signs with its own secret, shown once in the create response when
``include=["webhook_endpoint.signing_secret"]`` is asked for.

Every v1 event the sandbox emits has a thin twin, ``v1.<type>``, stored when
a thin destination wants it: its ``snapshot_event`` is the v1 event's id, and
it is retrievable at ``/v2/core/events/{id}``. ``emit_thin_event`` makes an
event with no v1 twin (``v2.core.health.*``). API v2 bodies are JSON and
timestamps are RFC 3339 strings.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from stripeline_sandbox._errors import StripeError, invalid, no_such
from stripeline_sandbox._ids import new_id, new_webhook_secret
from stripeline_sandbox._routes import Endpoint, Request, as_int
from stripeline_sandbox._state import API_VERSION, Account, Obj

DESTINATION = "v2.core.event_destination"
THIN_EVENT = "v2.core.event"
MAX_DESTINATIONS = 16
#: ``events_from`` values: the account's own events, its connected accounts'.
EVENTS_FROM = ("@self", "@accounts")
#: Where v1 thin events show ``snapshot_event`` (``Sandbox.set_thin_events``).
SNAPSHOT_EVENT_MODES = ("pushed", "pulled", "none")
#: Hidden record of an account's thin event settings.
THIN_SETTINGS = "__thin_events__"
#: Collection paths of v1 objects whose path is not ``/v1/<object>s``.
_PATHS = {
    "checkout.session": "/v1/checkout/sessions",
    "billing_portal.session": "/v1/billing_portal/sessions",
    "test_helpers.test_clock": "/v1/test_helpers/test_clocks",
    "subscription_item": "/v1/subscription_items",
}


def iso(seconds: int | float) -> str:
    """An RFC 3339 timestamp, as API v2 writes them."""
    moment = datetime.fromtimestamp(float(seconds), UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def object_url(object_type: str, object_id: str) -> str:
    """The v1 path that reads an object of ``object_type``."""
    base = _PATHS.get(object_type) or f"/v1/{object_type.replace('.', '/')}s"
    return f"{base}/{object_id}"


def snapshot_mode(account: Account) -> str:
    """Where ``account``'s v1 thin events show ``snapshot_event`` (a connected
    account follows its platform)."""
    owner = account.platform or account
    return str(owner.hidden(THIN_SETTINGS).get("snapshot_event", "pushed"))


def _events_from(value: Any) -> list[str]:
    values = [str(v) for v in (value if isinstance(value, list) else [value])]
    if not values or any(v not in EVENTS_FROM for v in values):
        raise invalid(
            f"events_from must be a list of {', '.join(EVENTS_FROM)}", param="events_from"
        )
    return values


def _wants(destination: Obj, event_type: str, *, connected: bool = False) -> bool:
    if destination.get("status") != "enabled":
        return False
    source = "@accounts" if connected else "@self"
    if source not in (destination.get("events_from") or ["@self"]):
        return False
    enabled = destination.get("enabled_events") or []
    return "*" in enabled or event_type in enabled


def _shown(account: Account, destination: Obj, include: list[str]) -> Obj:
    shown: Obj = {k: v for k, v in destination.items() if k != "webhook_endpoint"}
    endpoint: Obj = {"signing_secret": None, "url": None}
    if "webhook_endpoint.url" in include:
        endpoint["url"] = destination["webhook_endpoint"]["url"]
    if "webhook_endpoint.signing_secret" in include:
        endpoint["signing_secret"] = account.hidden(destination["id"])["secret"]
    shown["webhook_endpoint"] = endpoint
    return shown


def add_destination(
    account: Account,
    now: int,
    url: str,
    enabled_events: list[str],
    *,
    payload: str = "thin",
    name: str = "destination",
    secret: str | None = None,
    description: str = "",
    metadata: dict[str, str] | None = None,
    events_from: list[str] | None = None,
) -> Obj:
    """Register a webhook destination; the API and ``Sandbox.add_event_destination`` use this."""
    if payload not in ("thin", "snapshot"):
        raise invalid("event_payload must be thin or snapshot", param="event_payload")
    sources = _events_from(events_from if events_from is not None else ["@self"])
    if len(account.all(DESTINATION)) >= MAX_DESTINATIONS:
        raise invalid(f"You have reached the maximum of {MAX_DESTINATIONS} event destinations.")
    if not url.startswith(("http://", "https://")):
        raise invalid("Invalid URL: must be an http or https URL.", param="webhook_endpoint.url")
    destination: Obj = {
        "id": new_id("ed_test"),
        "object": DESTINATION,
        "amazon_eventbridge": None,
        "azure_event_grid": None,
        "created": iso(now),
        "description": description,
        "enabled_events": list(enabled_events),
        "event_payload": payload,
        "events_from": sources,
        "livemode": False,
        "metadata": dict(metadata or {}),
        "name": name,
        "snapshot_api_version": API_VERSION if payload == "snapshot" else None,
        "status": "enabled",
        "status_details": None,
        "type": "webhook_endpoint",
        "updated": iso(now),
        "webhook_endpoint": {"url": url},
    }
    account.add(destination)
    account.hidden(destination["id"])["secret"] = secret or new_webhook_secret()
    return destination


def _destination(request: Request) -> Obj:
    found = request.account.find(DESTINATION, request.path_params["id"])
    if found is None:
        raise no_such("event destination", request.path_params["id"])
    return found


def _include(params: dict[str, Any]) -> list[str]:
    include = params.get("include") or []
    return [str(i) for i in (include if isinstance(include, list) else [include])]


def create_destination(request: Request) -> Obj:
    params = request.params
    kind = str(request.param("type"))
    if kind != "webhook_endpoint":
        raise invalid(
            f"The sandbox delivers to webhook_endpoint destinations only, not {kind}.",
            param="type",
        )
    events = params.get("enabled_events")
    if not events:
        raise invalid("Missing required param: enabled_events.", param="enabled_events")
    endpoint = params.get("webhook_endpoint") or {}
    destination = add_destination(
        request.account,
        request.now(),
        str(endpoint.get("url") or ""),
        [str(e) for e in (events if isinstance(events, list) else [events])],
        payload=str(request.param("event_payload")),
        name=str(request.param("name")),
        description=str(params.get("description") or ""),
        metadata=params.get("metadata") or {},
        events_from=params.get("events_from"),
    )
    return _shown(request.account, destination, _include(params))


def retrieve_destination(request: Request) -> Obj:
    return _shown(request.account, _destination(request), _include(request.params))


def update_destination(request: Request) -> Obj:
    destination = _destination(request)
    params = request.params
    if "enabled_events" in params:
        destination["enabled_events"] = [str(e) for e in params["enabled_events"]]
    if "name" in params:
        destination["name"] = str(params["name"])
    if "description" in params:
        destination["description"] = str(params["description"] or "")
    if "events_from" in params:
        destination["events_from"] = _events_from(params["events_from"])
    endpoint = params.get("webhook_endpoint")
    if isinstance(endpoint, dict) and endpoint.get("url"):
        destination["webhook_endpoint"]["url"] = str(endpoint["url"])
    destination["updated"] = iso(request.now())
    return _shown(request.account, destination, _include(params))


def _set_status(request: Request, status: str) -> Obj:
    destination = _destination(request)
    destination["status"] = status
    destination["updated"] = iso(request.now())
    return _shown(request.account, destination, [])


def disable_destination(request: Request) -> Obj:
    return _set_status(request, "disabled")


def enable_destination(request: Request) -> Obj:
    return _set_status(request, "enabled")


def delete_destination(request: Request) -> Obj:
    destination = _destination(request)
    request.account.remove(destination["id"])
    return {"id": destination["id"], "object": DESTINATION, "deleted": True}


def list_destinations(request: Request) -> Obj:
    data = [_shown(request.account, d, []) for d in request.account.all(DESTINATION)]
    return {"data": data, "next_page_url": None, "previous_page_url": None}


# -- thin events -------------------------------------------------------------


def thin_event(
    account: Account,
    now: int,
    event_type: str,
    *,
    related: Obj | None = None,
    snapshot_event: str | None = None,
    context: str | None = None,
    reason: Obj | None = None,
    data: Obj | None = None,
) -> Obj:
    """Store a ``v2.core.event`` and return it (what ``/v2/core/events/{id}`` shows)."""
    event: Obj = {
        "id": new_id("evt_test"),
        "object": THIN_EVENT,
        "type": event_type,
        "context": context,
        "created": iso(now),
        "livemode": False,
        "reason": reason,
    }
    if related is not None:
        event["related_object"] = related
    if snapshot_event is not None:
        event["snapshot_event"] = snapshot_event
    if data is not None:
        event["data"] = data
    account.add(event)
    account.hidden(event["id"])["sort"] = now
    return event


def notification(event: Obj, mode: str = "pushed") -> Obj:
    """What a thin destination is sent: the event without ``data`` (fetch it);
    ``snapshot_event`` only in the ``pushed`` mode (``snapshot_mode``)."""
    hidden = ("data", "changes") if mode == "pushed" else ("data", "changes", "snapshot_event")
    return {k: v for k, v in event.items() if k not in hidden}


def thin_twin(account: Account, v1_event: Obj) -> Obj:
    """The ``v1.<type>`` thin event of a v1 event (made once, kept)."""
    hidden = account.hidden(v1_event["id"])
    twin_id = hidden.get("thin")
    if twin_id is not None and twin_id in account.objects:
        return account.objects[twin_id]
    obj = v1_event["data"]["object"]
    request = v1_event.get("request") or {}
    reason = (
        {"type": "request", "request": dict(request)} if request.get("id") is not None else None
    )
    changes: Obj | None = None
    if v1_event["data"].get("previous_attributes"):
        changes = {"before": v1_event["data"]["previous_attributes"]}
    twin = thin_event(
        account,
        int(v1_event["created"]),
        "v1." + str(v1_event["type"]),
        related={
            "id": obj["id"],
            "type": obj["object"],
            "url": object_url(str(obj["object"]), str(obj["id"])),
        },
        snapshot_event=str(v1_event["id"]),
        context=v1_event.get("account"),
        reason=reason,
    )
    if changes is not None:
        twin["changes"] = changes
    hidden["thin"] = twin["id"]
    return twin


def destination_targets(
    account: Account, event: Obj, destinations: list[Obj] | None = None
) -> list[tuple[str, str]]:
    """(destination id, event id) for each destination that wants ``event``
    of ``account`` (snapshot destinations get the event, thin ones its thin
    twin). ``destinations``: the platform's, for a connected account's event
    (those with ``@accounts`` in ``events_from`` want it); by default the
    account's own (``@self``). Caller holds ``account``'s lock."""
    connected = destinations is not None
    candidates = destinations if destinations is not None else account.all(DESTINATION)[::-1]
    targets: list[tuple[str, str]] = []
    for destination in candidates:
        kind = destination["event_payload"]
        if event.get("object") == THIN_EVENT:
            if kind == "thin" and _wants(destination, event["type"], connected=connected):
                targets.append((destination["id"], event["id"]))
        elif kind == "snapshot":
            if _wants(destination, event["type"], connected=connected):
                targets.append((destination["id"], event["id"]))
        elif _wants(destination, "v1." + str(event["type"]), connected=connected):
            targets.append((destination["id"], thin_twin(account, event)["id"]))
    return targets


def target(account: Account, target_id: str) -> tuple[str, str] | None:
    """The (url, secret) of an enabled destination, or None. Caller holds the lock."""
    destination = account.find(DESTINATION, target_id)
    if destination is None or destination.get("status") != "enabled":
        return None
    return str(destination["webhook_endpoint"]["url"]), str(account.hidden(target_id)["secret"])


def _shown_event(account: Account, event: Obj) -> Obj:
    if snapshot_mode(account) == "none" and "snapshot_event" in event:
        return {k: v for k, v in event.items() if k != "snapshot_event"}
    return event


def retrieve_thin_event(request: Request) -> Obj:
    event = request.account.find(THIN_EVENT, request.path_params["id"])
    if event is None:
        raise no_such("event", request.path_params["id"])
    return _shown_event(request.account, event)


def list_thin_events(request: Request) -> Obj:
    params = request.params
    limit = as_int(params.get("limit", 20), "limit", minimum=1)
    object_id = params.get("object_id")
    types = params.get("types")
    wanted = (
        None if not types else {str(t) for t in (types if isinstance(types, list) else [types])}
    )
    rows = [
        e
        for e in request.account.all(THIN_EVENT)
        if (object_id is None or (e.get("related_object") or {}).get("id") == object_id)
        and (wanted is None or e["type"] in wanted)
    ]
    data = [_shown_event(request.account, e) for e in rows[:limit]]
    return {"data": data, "next_page_url": None, "previous_page_url": None}


def emit_health_event(request: Request) -> Obj:
    """``POST /_sandbox/thin_events``: emit a thin event with no v1 twin
    (``type``, e.g. ``v2.core.health.event_generation_failure.resolved``)."""
    event_type = str(request.param("type"))
    if event_type.startswith("v1."):
        raise StripeError(400, "v1 thin events come from v1 changes", param="type")
    data = request.params.get("data")
    event = thin_event(
        request.account,
        request.now(),
        event_type,
        context=request.params.get("context") or None,
        data=data if isinstance(data, dict) else {},
    )
    request.events.append(event)
    return event


#: This module's endpoints; ``_app.build_router`` puts every module's table together.
ROUTES: tuple[Endpoint, ...] = (
    Endpoint("POST", "/v2/core/event_destinations", create_destination),
    Endpoint("GET", "/v2/core/event_destinations", list_destinations),
    Endpoint("GET", "/v2/core/event_destinations/{id}", retrieve_destination),
    Endpoint("POST", "/v2/core/event_destinations/{id}", update_destination),
    Endpoint("DELETE", "/v2/core/event_destinations/{id}", delete_destination),
    Endpoint("POST", "/v2/core/event_destinations/{id}/disable", disable_destination),
    Endpoint("POST", "/v2/core/event_destinations/{id}/enable", enable_destination),
    Endpoint("GET", "/v2/core/events", list_thin_events),
    Endpoint("GET", "/v2/core/events/{id}", retrieve_thin_event),
    Endpoint("POST", "/_sandbox/thin_events", emit_health_event, control=True),
)
