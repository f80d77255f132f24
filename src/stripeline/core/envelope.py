"""The Stripe event envelope: what we need of an event to store and route it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from stripeline.errors import EnvelopeError


@dataclass(frozen=True, slots=True)
class Envelope:
    """The routing fields of a (snapshot, API v1) Stripe event."""

    id: str
    type: str
    created: int
    livemode: bool
    api_version: str | None
    account: str | None
    object_id: str | None
    object_type: str | None


def _require(cond: bool, what: str) -> None:
    if not cond:
        raise EnvelopeError("not_an_event", f"not a Stripe event: {what}")


def parse_envelope(payload: bytes | str | dict[str, Any]) -> tuple[Envelope, dict[str, Any]]:
    """Parse and check an event body; return its envelope and the parsed dict.

    Raises:
        EnvelopeError: ``invalid_json`` when the body is not JSON, ``not_an_event``
            when it is JSON but not a Stripe event (a thin ``v2.core.event``
            included: those carry no object to store).
    """
    if isinstance(payload, dict):
        body: Any = payload
    else:
        try:
            body = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            raise EnvelopeError("invalid_json", "body is not valid JSON") from None
    _require(isinstance(body, dict), "body is not a JSON object")
    _require(body.get("object") == "event", "object is not 'event'")
    event_id = body.get("id")
    _require(isinstance(event_id, str) and 0 < len(event_id) <= 255, "id missing")
    event_type = body.get("type")
    _require(isinstance(event_type, str) and 0 < len(event_type) <= 255, "type missing")
    created = body.get("created")
    _require(isinstance(created, int) and not isinstance(created, bool), "created missing")
    livemode = body.get("livemode")
    _require(isinstance(livemode, bool), "livemode missing")
    data = body.get("data")
    _require(isinstance(data, dict) and isinstance(data.get("object"), dict), "data.object missing")
    api_version = body.get("api_version")
    _require(api_version is None or isinstance(api_version, str), "api_version is not a string")
    account = body.get("account")
    _require(account is None or isinstance(account, str), "account is not a string")
    obj = data["object"]
    object_id = obj.get("id") if isinstance(obj.get("id"), str) else None
    object_type = obj.get("object") if isinstance(obj.get("object"), str) else None
    return (
        Envelope(
            id=event_id,
            type=event_type,
            created=created,
            livemode=livemode,
            api_version=api_version,
            account=account,
            object_id=object_id,
            object_type=object_type,
        ),
        body,
    )


__all__ = ["Envelope", "parse_envelope"]
