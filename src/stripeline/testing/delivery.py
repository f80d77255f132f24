"""Delivering signed events to a webhook route: ``deliver`` and its ``Delivery`` answers."""

from __future__ import annotations

import json
import random
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from stripeline.testing.events import sign_event

__all__ = ["DEFAULT_WEBHOOK_PATH", "ORDERS", "Delivery", "Order", "deliver"]

DEFAULT_WEBHOOK_PATH = "/webhooks/stripe"

Order = Literal["in_order", "shuffled", "duplicated", "reversed"]
ORDERS: tuple[str, ...] = ("in_order", "shuffled", "duplicated", "reversed")


@dataclass(frozen=True)
class Delivery:
    """One webhook POST made by ``deliver`` and how it was answered."""

    event_id: str | None
    status: int
    body: Any


def _arrange(
    events: Sequence[Mapping[str, Any] | bytes], order: str, seed: int | None, copies: int
) -> list[Mapping[str, Any] | bytes]:
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, not {order!r}")
    arranged = list(events)
    if order == "reversed":
        arranged.reverse()
    elif order == "shuffled":
        random.Random(seed).shuffle(arranged)  # noqa: S311 - test ordering, not security
    elif order == "duplicated":
        arranged = arranged * max(2, copies)
    return arranged


def _event_id(event: Mapping[str, Any] | bytes) -> str | None:
    try:
        found = (json.loads(event) if isinstance(event, bytes) else event).get("id")
    except (ValueError, AttributeError):
        return None
    return found if isinstance(found, str) else None


def _answer(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode("utf-8", "replace")


def _post_url(url: str, payload: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"not an http(s) URL: {url!r}")
    request = urllib.request.Request(url, data=payload, headers=headers, method="POST")  # noqa: S310 - checked above
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - checked above
            return int(response.status), _answer(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return int(error.code), _answer(error.read())


def deliver(
    target: Any,
    events: Iterable[Mapping[str, Any] | bytes],
    *,
    order: Order = "in_order",
    secret: str | None = None,
    seed: int | None = None,
    copies: int = 2,
    path: str = DEFAULT_WEBHOOK_PATH,
    timestamp: int | None = None,
) -> list[Delivery]:
    """POST each event, signed, to an app's webhook route; return the answers.

    ``target`` is a ``Stripeline`` app (served for the call with
    ``create_app``; ``secret`` defaults to its first webhook secret), an ASGI
    app, a client with ``.post`` (``starlette.testclient.TestClient``,
    ``httpx.Client``) or the URL of the route. ``order``: ``in_order``,
    ``reversed``, ``shuffled`` (with ``seed``), or ``duplicated`` (the whole
    list ``copies`` times). Every POST is signed afresh, as Stripe signs retries.

    Raises:
        ValueError: no ``secret`` for a target that does not know one, or an unknown order.
    """
    from stripeline.app import Stripeline

    items = _arrange(list(events), order, seed, copies)
    if isinstance(target, Stripeline):
        from starlette.testclient import TestClient

        from stripeline.web import create_app

        if secret is None:
            known = target.webhook_secrets()
            if not known:
                raise ValueError("the app has no webhook secret: pass secret=")
            secret = known[0]
        with TestClient(create_app(target)) as client:
            return _deliver_all(client, items, secret, path, timestamp)
    if secret is None:
        raise ValueError("pass secret= (the webhook secret the target verifies with)")
    if isinstance(target, str) or hasattr(target, "post"):
        return _deliver_all(target, items, secret, path, timestamp)
    if callable(target):
        from starlette.testclient import TestClient

        with TestClient(target) as client:
            return _deliver_all(client, items, secret, path, timestamp)
    raise TypeError(f"cannot deliver to {type(target).__name__}")


def _deliver_all(
    target: Any,
    items: list[Mapping[str, Any] | bytes],
    secret: str,
    path: str,
    timestamp: int | None,
) -> list[Delivery]:
    results: list[Delivery] = []
    for item in items:
        payload, headers = sign_event(item, secret, timestamp=timestamp)
        if isinstance(target, str):
            status, body = _post_url(target, payload, headers)
        else:
            response = target.post(path, content=payload, headers=headers)
            status, body = int(response.status_code), _answer(response.content)
        results.append(Delivery(_event_id(item), status, body))
    return results
