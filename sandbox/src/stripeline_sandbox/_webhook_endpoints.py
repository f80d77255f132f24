"""``/v1/webhook_endpoints``: where the sandbox sends events."""

from __future__ import annotations

from typing import Any

from stripeline_sandbox._errors import invalid
from stripeline_sandbox._ids import new_id, new_webhook_secret
from stripeline_sandbox._lists import list_object
from stripeline_sandbox._objects import apply_metadata, copy
from stripeline_sandbox._routes import Endpoint, Request, as_bool, optional_str
from stripeline_sandbox._state import Account, Obj

MAX_ENDPOINTS = 16


def _events(value: Any) -> list[str]:
    if not value:
        raise invalid("Missing required param: enabled_events.", param="enabled_events")
    events = value if isinstance(value, list) else [value]
    return [str(e) for e in events]


def _url(value: Any) -> str:
    url = str(value or "")
    if not url.startswith(("http://", "https://")):
        raise invalid("Invalid URL: must be an http or https URL.", param="url")
    return url


def add_endpoint(
    account: Account,
    now: int,
    url: str,
    enabled_events: list[str],
    *,
    secret: str | None = None,
    api_version: str | None = None,
    description: str | None = None,
    metadata: dict[str, str] | None = None,
) -> Obj:
    """Register an endpoint; the API and ``Sandbox.listen`` both use this."""
    if len(account.all("webhook_endpoint")) >= MAX_ENDPOINTS:
        raise invalid(f"You have reached the maximum of {MAX_ENDPOINTS} test webhook endpoints.")
    endpoint: Obj = {
        "id": new_id("we"),
        "object": "webhook_endpoint",
        "api_version": api_version,
        "application": None,
        "created": now,
        "description": description,
        "enabled_events": enabled_events,
        "livemode": False,
        "metadata": metadata or {},
        "status": "enabled",
        "url": url,
    }
    account.add(endpoint)
    account.hidden(endpoint["id"])["secret"] = secret or new_webhook_secret()
    return endpoint


def create_webhook_endpoint(request: Request) -> Obj:
    params = request.params
    endpoint = add_endpoint(
        request.account,
        request.now(),
        _url(request.param("url")),
        _events(params.get("enabled_events")),
        api_version=optional_str(params.get("api_version")),
        description=optional_str(params.get("description")),
        metadata=apply_metadata({}, params.get("metadata")),
    )
    if as_bool(params.get("connect", False), "connect"):
        # Events of the platform's connected accounts come here too.
        request.account.hidden(endpoint["id"])["connect"] = True
    # The secret is only ever shown in the create response.
    shown: Obj = copy(endpoint)
    shown["secret"] = request.account.hidden(endpoint["id"])["secret"]
    return shown


def retrieve_webhook_endpoint(request: Request) -> Obj:
    return request.get("webhook_endpoint", request.path_params["id"])


def update_webhook_endpoint(request: Request) -> Obj:
    endpoint = request.get("webhook_endpoint", request.path_params["id"])
    params = request.params
    if "url" in params:
        endpoint["url"] = _url(params["url"])
    if "enabled_events" in params:
        endpoint["enabled_events"] = _events(params["enabled_events"])
    if "description" in params:
        endpoint["description"] = optional_str(params["description"])
    if "disabled" in params:
        endpoint["status"] = "disabled" if as_bool(params["disabled"], "disabled") else "enabled"
    endpoint["metadata"] = apply_metadata(endpoint["metadata"], params.get("metadata"))
    return endpoint


def delete_webhook_endpoint(request: Request) -> Obj:
    endpoint = request.get("webhook_endpoint", request.path_params["id"])
    request.account.remove(endpoint["id"])
    return {"id": endpoint["id"], "object": "webhook_endpoint", "deleted": True}


def list_webhook_endpoints(request: Request) -> Obj:
    return list_object(request, request.account.all("webhook_endpoint"), "/v1/webhook_endpoints")


#: This module's endpoints; ``_app.build_router`` puts every module's table together.
ROUTES: tuple[Endpoint, ...] = (
    Endpoint("POST", "/v1/webhook_endpoints", create_webhook_endpoint),
    Endpoint("GET", "/v1/webhook_endpoints/{id}", retrieve_webhook_endpoint),
    Endpoint("POST", "/v1/webhook_endpoints/{id}", update_webhook_endpoint),
    Endpoint("DELETE", "/v1/webhook_endpoints/{id}", delete_webhook_endpoint),
    Endpoint("GET", "/v1/webhook_endpoints", list_webhook_endpoints),
)
