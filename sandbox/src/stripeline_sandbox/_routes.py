"""Routes and the request context handlers receive.

Each resource module lists its endpoints in a ``ROUTES`` table of
``Endpoint(method, pattern, handler)``; ``_app.build_router`` puts the tables
of ``_app.RESOURCES`` into one ``Router`` per sandbox. A handler takes a
``Request`` and returns the JSON object to answer with (status 200), or
raises ``StripeError``. A new resource is a new module with its table, added
to that tuple.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from stripeline_sandbox._errors import StripeError, missing_param, no_such
from stripeline_sandbox._ids import new_request_id
from stripeline_sandbox._state import Account, Obj, World

Handler = Callable[["Request"], Obj]


@dataclass
class Request:
    """One API call: who made it, with what, and what it emitted."""

    world: World
    account: Account
    method: str
    path: str
    params: dict[str, Any]
    path_params: dict[str, str]
    request_id: str
    idempotency_key: str | None
    events: list[Obj] = field(default_factory=list)

    @classmethod
    def internal(
        cls, world: World, account: Account, params: dict[str, Any] | None = None, *, path: str = ""
    ) -> Request:
        """The context of work the sandbox does by itself (settling due debits,
        bulk creation): no HTTP request, a fresh request id, no idempotency key."""
        return cls(world, account, "POST", path, dict(params or {}), {}, new_request_id(), None)

    def with_params(
        self, params: dict[str, Any], path_params: dict[str, str] | None = None
    ) -> Request:
        """This call's context with other parameters, for one resource's work done
        inside another's call (an invoice creating its PaymentIntent): the same
        account, request id and idempotency key, and its events join this call's."""
        return dataclasses.replace(self, params=params, path_params=path_params or {})

    def now(self) -> int:
        return self.world.clock.now()

    def get(self, kind: str, object_id: str, noun: str | None = None, param: str = "id") -> Obj:
        """The live object ``object_id`` of ``kind``.

        Raises:
            StripeError: 404 ``resource_missing``.
        """
        obj = self.account.find(kind, object_id)
        if obj is None or obj.get("deleted"):
            raise no_such(noun or kind, object_id, param)
        return obj

    def param(self, name: str) -> Any:
        """A required parameter.

        Raises:
            StripeError: 400 ``parameter_missing``.
        """
        value = self.params.get(name)
        if value is None or value == "":
            raise missing_param(name)
        return value

    def emit(self, type: str, obj: Obj, previous: Obj | None = None) -> Obj:
        """Record the Event for a state change (delivered once the call ends)."""
        from stripeline_sandbox._events import create_event

        event = create_event(self, type, obj, previous)
        self.events.append(event)
        return event


@dataclass(frozen=True)
class Endpoint:
    """One line of a module's route table: ``{name}`` in ``pattern`` is a path parameter."""

    method: str
    pattern: str
    handler: Handler
    #: Sandbox controls skip faults, rate limits and idempotency.
    control: bool = False


@dataclass(frozen=True)
class Route:
    method: str
    pattern: str
    handler: Handler
    regex: re.Pattern[str]
    #: Sandbox controls skip faults, rate limits and idempotency.
    control: bool


class Router:
    """Matches ``method path`` to a route: exact patterns first, then the others in order."""

    def __init__(self, endpoints: Iterable[Endpoint] = ()) -> None:
        self._static: dict[tuple[str, str], Route] = {}
        self._dynamic: list[Route] = []
        for endpoint in endpoints:
            self.add(endpoint)

    def add(self, endpoint: Endpoint) -> None:
        method, pattern = endpoint.method, endpoint.pattern
        regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "$")
        entry = Route(method, pattern, endpoint.handler, regex, endpoint.control)
        if "{" in pattern:
            self._dynamic.append(entry)
        else:
            self._static[(method, pattern)] = entry

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        found = self._static.get((method, path))
        if found is not None:
            return found, {}
        for entry in self._dynamic:
            if entry.method == method:
                m = entry.regex.match(path)
                if m:
                    return entry, m.groupdict()
        return None


def as_int(value: Any, param: str, *, minimum: int | None = None) -> int:
    """Coerce a form value to an integer.

    Raises:
        StripeError: 400 ``parameter_invalid_integer``.
    """
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise StripeError(
            400, f"Invalid integer: {value}", param=param, code="parameter_invalid_integer"
        ) from None
    if minimum is not None and number < minimum:
        raise StripeError(
            400,
            f"This value must be greater than or equal to {minimum}.",
            param=param,
            code="parameter_invalid_integer",
        )
    return number


def as_bool(value: Any, param: str) -> bool:
    """Coerce a form value (``true``/``false``) to a boolean.

    Raises:
        StripeError: 400 for anything else.
    """
    if isinstance(value, bool):
        return value
    if value in ("true", "True", "1"):
        return True
    if value in ("false", "False", "0"):
        return False
    raise StripeError(400, f"Invalid boolean: {value}", param=param)


def optional_str(value: Any) -> str | None:
    """Stripe unsets a string field when it is sent empty."""
    if value is None or value == "":
        return None
    return str(value)
