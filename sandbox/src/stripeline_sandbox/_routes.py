"""Routes and the request context handlers receive.

Each resource module lists its endpoints in a ``ROUTES`` table of
``Endpoint(method, pattern, handler)``; ``_app.build_router`` puts the tables
of ``_app.RESOURCES`` into one ``Router`` per sandbox. A handler takes a
``Request`` and returns the JSON object to answer with (status 200), or
raises ``StripeError``. Work other resources also need (creating a
customer, confirming a PaymentIntent) is an operation taking a ``Call`` and
its parameters, which the handler and those resources call; nothing calls a
handler but the server. A new resource is a new module with its table, added
to that tuple.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from stripeline_sandbox._errors import StripeError, missing_param, no_such
from stripeline_sandbox._ids import new_request_id
from stripeline_sandbox._state import Account, Obj, World

Handler = Callable[["Request"], Obj]


@dataclass
class Call:
    """The context of one unit of work: the account it acts on, the request id and
    idempotency key its events carry, and the events it emitted (delivered once it
    ends). An API call is a ``Request``; work the sandbox does by itself (settling
    due debits, bulk creation) is a plain ``Call`` with a fresh request id. The
    operations behind the routes take a ``Call`` and their parameters, so one
    resource's work inside another's call (an invoice creating its PaymentIntent)
    is a function call on the same ``Call``."""

    world: World
    account: Account
    request_id: str = field(default_factory=new_request_id)
    idempotency_key: str | None = None
    events: list[Obj] = field(default_factory=list)
    #: Customers whose entitlements are not computed again in this call for now
    #: (a subscription being created reports itself first, see ``_entitlements``).
    quiet_entitlements: set[str] = field(default_factory=set)

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

    def emit(self, type: str, obj: Obj, previous: Obj | None = None) -> Obj:
        """Record the Event for a state change (delivered once the call ends),
        then any event it leads to (a customer's entitlement summary)."""
        from stripeline_sandbox._entitlements import after_event
        from stripeline_sandbox._events import create_event

        event = create_event(self, type, obj, previous)
        self.events.append(event)
        after_event(self, type, obj)
        return event


@dataclass(kw_only=True)
class Request(Call):
    """One API call: a ``Call`` with the HTTP method, path and form parameters."""

    method: str
    path: str
    params: dict[str, Any]
    path_params: dict[str, str]
    #: Made with the account's publishable key (Stripe.js): only endpoints
    #: marked ``publishable`` take it, and they check the ``client_secret``.
    publishable: bool = False
    #: The ``Stripe-Version`` the answer is rendered in (None: the current one).
    api_version: str | None = None
    #: Set by a hosted-page control: answer 302 with this ``Location`` (and the body).
    redirect: str | None = None

    def param(self, name: str) -> Any:
        """A required parameter.

        Raises:
            StripeError: 400 ``parameter_missing``.
        """
        return required(self.params, name)


def required(params: Mapping[str, Any], name: str) -> Any:
    """The required parameter ``name`` of ``params``.

    Raises:
        StripeError: 400 ``parameter_missing``.
    """
    value = params.get(name)
    if value is None or value == "":
        raise missing_param(name)
    return value


@dataclass(frozen=True)
class Endpoint:
    """One line of a module's route table: ``{name}`` in ``pattern`` is a path parameter."""

    method: str
    pattern: str
    handler: Handler
    #: Sandbox controls skip faults, rate limits and idempotency.
    control: bool = False
    #: Stripe.js calls it with the publishable key (the handler checks the
    #: ``client_secret`` where Stripe asks for one).
    publishable: bool = False


@dataclass(frozen=True)
class Route:
    method: str
    pattern: str
    handler: Handler
    regex: re.Pattern[str]
    #: Sandbox controls skip faults, rate limits and idempotency.
    control: bool
    publishable: bool = False


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
        entry = Route(
            method, pattern, endpoint.handler, regex, endpoint.control, endpoint.publishable
        )
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


def check_client_secret(request: Request, obj: Obj, noun: str) -> None:
    """Stripe.js's rule: with the publishable key, the object's ``client_secret``
    must be given and match; with the secret key, a given one must match.

    Raises:
        StripeError: 400 ``parameter_missing`` or ``invalid_request_error`` on ``client_secret``.
    """
    given = request.params.get("client_secret")
    if given is None or given == "":
        if request.publishable:
            raise StripeError(
                400,
                f"The client_secret parameter is required when using a publishable key "
                f"to access this {noun}.",
                param="client_secret",
                code="parameter_missing",
            )
        return
    if given != obj.get("client_secret"):
        raise StripeError(
            400,
            f"The client_secret provided does not match the client_secret associated "
            f"with the {noun}.",
            param="client_secret",
        )


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
